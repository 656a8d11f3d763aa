"""Create the Plone site of a stage, once: the example's site-initialisation script.

Run inside a Zope client's configuration (zconsole binds ``app``):

    <instance_dir>/current/venv/bin/zconsole run <instance_dir>/etc/zope-console.conf \
        <instance_dir>/current/src/create_site.py [SITE_ID]

Creates, only if the Zope root has no object SITE_ID (default ``Plone``), a classic Plone 6
site (Products.CMFPlone's ``addPloneSite`` with the content types and the Barceloneta theme)
and in it the page ``welcome``. Prints ``created <site>`` or ``exists <site>``; exit code 0
either way, so it is safe to run again.
"""
import sys

import transaction
from plone.app.textfield.value import RichTextValue
from Products.CMFPlone.factory import addPloneSite
from zope.component.hooks import setSite

# pylint: disable=undefined-variable

# zconsole leaves its own argv in sys.argv: the script's arguments follow the script.
ARGS = sys.argv[[arg.endswith('.py') for arg in sys.argv].index(True) + 1:]
SITE_ID = ARGS[0] if ARGS else 'Plone'
TITLE = 'ZopeOps Plone demo'
PROFILES = ['plone.app.contenttypes:default', 'plonetheme.barceloneta:default']
WELCOME = ('welcome', 'Welcome', '<p>A Plone 6 site run by zopeops.stages.</p>')


def create(root, site_id):
    site = addPloneSite(root, site_id, title=TITLE, setup_content=False,
                        default_language='en', extension_ids=PROFILES)
    setSite(site)
    page_id, title, html = WELCOME
    site.invokeFactory('Document', page_id, title=title)
    set_text(site[page_id], html)
    site.portal_workflow.doActionFor(site[page_id], 'publish')
    return site


def set_text(page, html):
    page.text = RichTextValue(html, 'text/html', 'text/x-html-safe')
    page.reindexObject()


if __name__ == '__main__':  # zconsole runs the script as __main__, with the system user
    if SITE_ID in app.objectIds():  # noqa: F821 (zconsole binds app)
        print('exists %s' % SITE_ID)
    else:
        create(app, SITE_ID)  # noqa: F821
        transaction.commit()
        print('created %s' % SITE_ID)
