"""The counted writes of the demo: ``@@zopeops-write`` and ``@@zopeops-writes``.

A promotion must not lose an acknowledged write. To prove it, a load generator POSTs writes
with unique ids through the balancer and keeps the ids that were acknowledged; afterwards
every one of them must be in the stage's ZODB. The entries live in one ``OOBTree`` on the
application root (``_zopeops_writes``, created by the first write; the underscore keeps it
out of URL traversal): a BTree holds tens of thousands of entries in buckets, and two
transactions that add different keys to it are merged by its conflict resolution instead of
failing, so concurrent writers do not collide on one object.

Zope commits the transaction after the view returns and before the answer is sent, so a
200 is sent only for a committed write; a write that failed to commit is answered with an
error and the client retries it with the same id, which is why writing an existing id is a
success that changes nothing.

Both views need ``View management screens`` (Manager), i.e. HTTP basic auth as the admin.
"""
import os
import re
import time

from Acquisition import aq_base
from BTrees.OOBTree import OOBTree

from Products.ZopeOpsDemo.info import _JSONView
from Products.ZopeOpsDemo.info import _root

CONTAINER_ID = '_zopeops_writes'
# An id goes into the ZODB and back out in JSON; keep it a plain token of bounded size.
WRITE_ID = re.compile(r'^[A-Za-z0-9_.:-]{1,128}$')


def writes_container(root, create=False):
    """The OOBTree of writes on the application root, or None (created when ``create``)."""
    app = aq_base(root)
    tree = getattr(app, CONTAINER_ID, None)
    if tree is None and create:
        tree = OOBTree()
        setattr(app, CONTAINER_ID, tree)
    return tree


def served_by():
    return (os.environ.get('ZOPEOPS_INSTANCE', 'unknown'),
            os.environ.get('ZOPEOPS_CLIENT', 'unknown'))


def request_method(request):
    return request.get('REQUEST_METHOD', 'GET').upper()


class WriteView(_JSONView):
    """POST id=<id>: store the entry <id> -> {instance, client, time}; answer
    ``{"id", "instance", "client", "created"}``. An existing id is answered the same way,
    with ``created`` false, and is not written again."""

    def __call__(self):
        if request_method(self.request) != 'POST':
            self.request.response.setHeader('Allow', 'POST')
            return self._json({'error': '@@zopeops-write takes POST id=<id>'}, 405)
        write_id = self.request.form.get('id')
        if not isinstance(write_id, str) or not WRITE_ID.match(write_id):
            return self._json({'error': 'id must be 1 to 128 of A-Z a-z 0-9 _ . : -'}, 400)
        instance, client = served_by()
        tree = writes_container(_root(self.context), create=True)
        created = write_id not in tree
        if created:
            tree[write_id] = {'instance': instance, 'client': client, 'time': time.time()}
        return self._json({'id': write_id, 'instance': instance, 'client': client,
                           'created': created})


class WritesView(_JSONView):
    """GET: ``{"count": n, "ids": [...sorted...], "instance", "client"}``."""

    def __call__(self):
        if request_method(self.request) not in ('GET', 'HEAD'):
            self.request.response.setHeader('Allow', 'GET, HEAD')
            return self._json({'error': '@@zopeops-writes takes GET'}, 405)
        tree = writes_container(_root(self.context))
        ids = list(tree.keys()) if tree is not None else []
        instance, client = served_by()
        return self._json({'count': len(ids), 'ids': ids, 'instance': instance,
                           'client': client})
