"""Products.ZopeOpsDemo: the example application of zopeops.stages.

Zope 6 finds it because it lives in the ``Products`` namespace: at start-up Zope imports every
module on ``Products.__path__`` and ``<five:loadProducts/>`` (in Zope's default site.zcml)
loads each product's ``configure.zcml``, which registers the views in ``info.py``.
"""


def initialize(context):
    """Zope calls this once per process for every product; this one registers no classes."""
