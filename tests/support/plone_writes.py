"""Acknowledged writes to a Plone site, with Plone's own REST API (plone.restapi): no view
written for zopeops.

``PloneWriteLoad`` is ``WriteLoad`` (``writeload.py``: the threads, retries, limits and
bookkeeping) with a Plone write: ``POST <site>`` with the JSON ``{"@type": "Document", "id":
"w-<uuid>", "title": ...}`` as the admin (basic auth). Plone sends ``201 Created`` only after
the commit, so a 201 for this id acknowledges the write. A 503 (the write freeze, with
``Retry-After``) and a connection error or timeout are retried with the same id; when Plone
then answers 400 because the id is already in use, the first attempt committed, and the write
is acknowledged once ``GET <site>/<id>`` answers 200 for it. Any other answer fails the id.

Each writer starts only when the site answers 200 (polled, bounded by the load's limits): a
stage whose site is made by its first promotion (Plone's beta: content is authored on dev)
answers 404 before.

``ids_missing_over_http`` and ``write_ids_in_datafs_records`` say which acknowledged ids a stage
does not hold, through its frontend and in its Data.fs.
"""
from __future__ import annotations

import concurrent.futures
import re
import time

import requests

from .writeload import WriteLoad, json_object

JSON = {'Accept': 'application/json', 'Content-Type': 'application/json'}
SITE = '/Plone'
# WriteLoad's ids (the prefix and a uuid4 in hex) as whole strings, not inside a longer token
WRITE_ID = re.compile(rb'(?<![0-9A-Za-z_-])w-[0-9a-f]{32}(?![0-9a-f])')


class PloneWriteLoad(WriteLoad):
    """Writers that add a Document each to the Plone site at ``base_url`` + ``/Plone``.

    ``site_seen_at`` is when a writer first found the site (epoch), None while none has;
    entries of ``acknowledged`` say ``how`` the write was confirmed (``201``, or ``in use,
    then GET 200`` after a retry).
    """

    write_path = SITE

    def __init__(self, base_url, auth, ready_poll=0.25, **options):
        super().__init__(base_url, auth, **options)
        self.ready_poll = ready_poll
        self.site_seen_at = None

    def _ready(self, session):
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                answer = session.get(self.url, timeout=self.timeout, allow_redirects=False)
            except requests.RequestException:
                answer = None  # the read load counts the frontend's failures; wait on
            if answer is not None and answer.status_code == 200:
                with self._lock:
                    self.site_seen_at = self.site_seen_at or time.time()
                return True
            time.sleep(self.ready_poll)
        return False

    def _send(self, session, write_id, attempt):
        answer = session.post(self.url, json={'@type': 'Document', 'id': write_id,
                                              'title': 'Write %s' % write_id},
                              headers=JSON, timeout=self.timeout, allow_redirects=False)
        if answer.status_code == 201:
            if json_object(answer).get('id') == write_id:
                return answer, {'how': '201'}, None
            return answer, None, 'not the JSON of this write: %r' % answer.text[:200]
        if answer.status_code == 400 and attempt > 1 and 'already in use' in answer.text:
            # An earlier attempt committed (its answer was lost, or it came as the freeze
            # began): the write is acknowledged if the serving side has it.
            check = session.get('%s/%s' % (self.url, write_id), headers=JSON,
                                timeout=self.timeout, allow_redirects=False)
            if check.status_code == 200 and json_object(check).get('id') == write_id:
                return answer, {'how': 'in use, then GET 200'}, None
            return answer, None, 'id in use, but GET answered %d' % check.status_code
        return answer, None, answer.text[:200]


def ids_missing_over_http(base_url, auth, ids, threads=4, timeout=60):
    """The ids of ``ids`` for which ``GET <base_url>/Plone/<id>`` does not answer 200 with
    that object (as the admin, through a stage's frontend), sorted."""
    site = base_url.rstrip('/') + SITE

    def missing(write_id):
        with requests.Session() as session:
            session.auth = tuple(auth)
            answer = session.get('%s/%s' % (site, write_id), headers=JSON, timeout=timeout,
                                 allow_redirects=False)
            return answer.status_code != 200 or json_object(answer).get('id') != write_id

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return sorted(write_id for write_id, gone in zip(ids, pool.map(missing, ids)) if gone)


def write_ids_in_datafs_records(path):
    """The write ids (``w-<hex uuid>``) in the current records of the Data.fs at ``path``.

    The raw pickles are searched, never unpickled, so Plone need not be importable: an added
    Document's id is a plain string in its own record and in its container's BTree bucket.
    Only each object's current record counts (``record_iternext``), not its history. The file
    is opened read-only (no lock: it works beside the running ZEO server).
    """
    from ZODB.FileStorage import FileStorage

    storage = FileStorage(str(path), read_only=True)
    try:
        found, cursor = set(), None
        while True:
            _oid, _tid, data, cursor = storage.record_iternext(cursor)
            found.update(match.decode('ascii') for match in WRITE_ID.findall(data))
            if cursor is None:
                return found
    finally:
        storage.close()
