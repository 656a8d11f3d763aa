"""Which counted writes (``@@zopeops-write``) a stage holds: in its Data.fs, and over HTTP.

``write_ids_in_datafs`` opens the file read-only (FileStorage ``read_only=True``, which takes
no lock, so it works beside a running ZEO server: it sees every transaction committed when it
was opened) and closes it again. Unpickling the application root needs Zope importable,
which the project's venv has.
"""
from __future__ import annotations

import requests

CONTAINER_ID = '_zopeops_writes'  # Products.ZopeOpsDemo.writes.CONTAINER_ID
WRITES_VIEW = '/@@zopeops-writes'


def write_entries_in_datafs(path):
    """{id: {'instance', 'client', 'time'}} of the writes stored in the Data.fs at ``path``."""
    from ZODB.DB import DB
    from ZODB.FileStorage import FileStorage

    storage = FileStorage(str(path), read_only=True)
    db = DB(storage)
    try:
        connection = db.open()
        try:
            app = connection.root().get('Application')
            tree = getattr(app, CONTAINER_ID, None) if app is not None else None
            return {} if tree is None else {key: dict(value) for key, value in tree.items()}
        finally:
            connection.close()
    finally:
        db.close()  # closes the storage too


def write_ids_in_datafs(path):
    """The set of write ids stored in the Data.fs at ``path``."""
    return set(write_entries_in_datafs(path))


def write_ids_over_http(base_url, auth, timeout=60):
    """The set of write ids that ``base_url``'s ``@@zopeops-writes`` lists (basic auth)."""
    answer = requests.get(base_url.rstrip('/') + WRITES_VIEW, auth=tuple(auth), timeout=timeout)
    answer.raise_for_status()
    payload = answer.json()
    ids = set(payload['ids'])
    if len(ids) != payload['count']:
        raise AssertionError('@@zopeops-writes says count=%d but lists %d distinct ids'
                             % (payload['count'], len(ids)))
    return ids
