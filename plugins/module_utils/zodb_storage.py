# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A storage opened from a ZConfig file (RelStorage's etc/relstorage.conf, or any storage ZODB
can open from its configuration), as the source or the target of zodb_replay.

The file holds a ``<zodb>`` section around the storage's own section (the form Zope's
zope.conf uses, and the one etc/relstorage.conf has), or the storage's section alone. Only
the storage is opened: no DB object, so nothing (not even a root object) is written by
opening it.
"""
from __future__ import annotations

import os

from ansible_collections.zopeops.stages.plugins.module_utils import zodb_format as zfmt
from ansible_collections.zopeops.stages.plugins.module_utils.zodb import ZODBDataError


def open_from_config(path, what):
    """The storage that the ZConfig file ``path`` describes, opened."""
    import ZODB.config
    try:
        with open(path, encoding='utf-8') as handle:
            text = handle.read()
    except OSError as exc:
        raise ZODBDataError('Cannot read the %s storage\'s configuration %s: %s.'
                            % (what, path, exc.strerror or exc)) from None
    try:
        if '<zodb' in text:
            config, _handler = ZODB.config.ZConfig.loadConfigFile(
                ZODB.config.getDbSchema(), _text_file(text, path))
            factory = config.database[0].config.storage
        else:
            factory = None
        if factory is not None:
            return factory.open()
        return ZODB.config.storageFromString(text)
    except Exception as exc:  # ZConfig errors, the database unreachable, a wrong password...
        # libpq's messages name the server, the account and the passfile, never a password
        # (the dsn of the collection's configuration names the passfile, not the password).
        raise ZODBDataError('Cannot open the %s storage of %s: %s: %s%s'
                            % (what, path, type(exc).__name__, _one_line(exc),
                               server_down(exc))) from None


def server_down(exc):
    """What a refused or dropped PostgreSQL connection means for the run (RelStorage): the
    advice to add to the error's message, or ''. A replay's TransactionFailed is looked into."""
    exc = getattr(exc, 'reason', exc)
    text = str(exc)
    if type(exc).__name__ != 'OperationalError' or not any(
            sign in text for sign in ('Connection refused', 'shutting down', 'starting up',
                                      'terminating connection', 'server closed the connection')):
        return ''
    return (' (its PostgreSQL server is stopped or does not accept connections: start it, '
            'then run again)')


def _text_file(text, path):
    import io
    handle = io.StringIO(text)
    handle.name = path  # ZConfig resolves %include relative to it
    return handle


def _one_line(exc):
    return ' '.join(str(exc).split())


def last_tid(storage):
    """The storage's last committed tid as its database says now (not a cached view)."""
    new_instance = getattr(storage, 'new_instance', None)
    if new_instance is None:
        return storage.lastTransaction() or zfmt.Z64
    other = new_instance()
    try:
        return other.lastTransaction() or zfmt.Z64
    finally:
        release = getattr(other, 'release', None) or other.close
        release()


def iterate(storage, start=None, stop=None):
    """storage.iterator(start, stop), closed when the generator is."""
    iterator = storage.iterator(start, stop)
    try:
        # Not ``yield from``: RelStorage's iterators end with StorageStopIteration (an
        # IndexError and a StopIteration), on which ``yield from`` crashed the interpreter
        # (Python 3.11, RelStorage 4.3: a segmentation fault).
        for txn in iterator:  # pylint: disable=use-yield-from
            yield txn
    finally:
        close = getattr(iterator, 'close', None)
        if close:
            close()


class StorageSource:
    """The source of a replay: a storage opened from its configuration (a RelStorage database).

    Its transactions after a tid are found through the storage's own iterator; blobs are read
    through the storage (RelStorage downloads them into its blob cache first)."""

    def __init__(self, config_path):
        self.where = config_path
        self.storage = open_from_config(config_path, 'source')

    def tail(self, after, until):
        """The committed tids in (after, until] (until None: to the end), as (tid, None, None)."""
        if after != zfmt.Z64 and not any(True for _txn in iterate(self.storage, after, after)):
            raise ZODBDataError(
                'The source %s holds no transaction %s (after_tid), so its history does not '
                'continue the target\'s: it was packed, replaced, or is another database. Copy '
                'the database again instead.' % (self.where, zfmt.tid_to_hex(after)))
        start = zfmt.int_to_tid(zfmt.tid_to_int(after) + 1)
        tids = [txn.tid for txn in iterate(self.storage, start, until)]
        if until is not None and until != after:
            if until not in tids:
                raise ZODBDataError(
                    'The source %s holds no committed transaction %s (until_tid) after %s; its '
                    'last committed one is %s. Read until_tid from the source again.'
                    % (self.where, zfmt.tid_to_hex(until), zfmt.tid_to_hex(after),
                       zfmt.tid_to_hex(tids[-1] if tids else after)))
            tids = tids[:tids.index(until) + 1]
        elif until is not None:
            tids = []
        return [(tid, None, None) for tid in tids]

    def tail_bytes(self, tail):  # pylint: disable=unused-argument
        """Unknown before the copy: the writer counts the bytes it copies."""
        return None

    def needs_blobs(self, tail):  # pylint: disable=unused-argument
        """The storage serves its own blobs: nothing to give beforehand."""
        return False

    def transactions(self, tail):
        # A fresh view of the database for loadBlob() and loadBefore() (RelStorage's load
        # connection keeps the snapshot of its last poll until it is rolled back).
        sync = getattr(self.storage, 'sync', None)
        if sync:
            sync()
        return iterate(self.storage, tail[0][0], tail[-1][0])

    def blob_file(self, record):
        path = self.storage.loadBlob(record.oid, record.tid)
        if not os.path.exists(path):
            raise ZODBDataError('the source\'s blob of object %s at %s is missing'
                                % (zfmt.tid_to_hex(record.oid), zfmt.tid_to_hex(record.tid)))
        return path

    def previous_serial(self, record):
        """The object's revision before this record (Z64 for a new object), for a ZEO target."""
        before = self.storage.loadBefore(record.oid, record.tid)
        return before[1] if before else zfmt.Z64

    def close(self):
        self.storage.close()
