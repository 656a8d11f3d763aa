"""Products.ZopeOpsPush: zopeops.stages' push page (browser.py), loaded by Zope's
``<five:loadProducts/>`` like any product in the ``Products`` namespace. Its permission
"ZopeOps: Push branding" (configure.zcml) belongs to Manager by default; the role push_page
gives it to the role the inventory names (zopeops_push_role).
"""


def initialize(context):
    """Zope calls this once per process for every product; this one registers no classes."""
