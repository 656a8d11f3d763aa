"""Change one partner's branding on a stage, as a web developer would (used by `make demo`).

    <instance>/current/venv/bin/zconsole run <instance>/etc/zope-console.conf \
        scripts/demo-edit-branding.py PARTNER TEXT

zconsole runs this with ``app`` bound to the stage's Zope application (a ZEO client of the
stage's running ZEO server); it rewrites the partner's front page and commits.
"""
import sys

import transaction

# pylint: disable=undefined-variable

partner, text = sys.argv[-2], sys.argv[-1]  # zconsole run CONF SCRIPT PARTNER TEXT
branding = app.partners[partner]  # noqa: F821 (zconsole binds app)  # pylint: disable=undefined-variable
branding.index_html.pt_edit('<html><body><h1>%s</h1></body></html>' % text, 'text/html')
transaction.commit()
print('edited %s: %s' % (partner, text))
