"""Add or change a published page of the Plone site, as an editor would (used by
``make demo-plone`` and the Plone pipeline test to make content on dev).

    <instance_dir>/current/venv/bin/zconsole run <instance_dir>/etc/zope-console.conf \
        <instance_dir>/current/src/add_page.py PAGE_ID TITLE TEXT [SITE_ID]

Prints ``page <url path>``.
"""
import sys

import transaction
from plone.app.textfield.value import RichTextValue
from zope.component.hooks import setSite

# pylint: disable=undefined-variable

# zconsole leaves its own argv in sys.argv (zconsole run CONF SCRIPT ...): the script's
# arguments follow the script. zconsole runs it as Zope's system user.
args = sys.argv[[arg.endswith('.py') for arg in sys.argv].index(True) + 1:]
if len(args) not in (3, 4):
    sys.exit('usage: zconsole run CONF add_page.py PAGE_ID TITLE TEXT [SITE_ID]')
page_id, title, text = args[:3]
site = app[args[3] if len(args) == 4 else 'Plone']  # noqa: F821 (zconsole binds app)
setSite(site)
if page_id not in site.objectIds():
    site.invokeFactory('Document', page_id, title=title)
    site.portal_workflow.doActionFor(site[page_id], 'publish')
page = site[page_id]
page.title = title
page.text = RichTextValue('<p>%s</p>' % text, 'text/html', 'text/x-html-safe')
page.reindexObject()
transaction.commit()
print('page /%s/%s' % (site.getId(), page_id))
