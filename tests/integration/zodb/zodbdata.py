"""Helpers for the zodb_* tests: real Data.fs files written with ZODB, a real runzeo."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

from support.paths import VENV_BIN
from support.ports import free_port
from support.procs import wait_for


def md5(path):
    """The md5 of a whole file, to tell whether a module left it as it was."""
    with open(path, 'rb') as handle:
        return hashlib.md5(handle.read()).hexdigest()


def _zodb():
    import transaction  # noqa: F401
    import ZODB
    import ZODB.FileStorage
    return ZODB


def write_transactions(path, blob_dir=None, count=10, start=0, blobs_every=0, garbage=False,
                       payload=200):
    """Commit ``count`` real transactions to the FileStorage at ``path`` (created if needed).

    Each transaction sets ``root['n']`` and a key of ``root['items']`` (a BTree); every
    ``blobs_every``-th one stores a blob. ``garbage`` also makes unreachable objects.
    Returns the last tid.
    """
    import transaction
    import ZODB
    import ZODB.FileStorage
    from BTrees.OOBTree import OOBTree
    from persistent.mapping import PersistentMapping
    from ZODB.blob import Blob
    storage = ZODB.FileStorage.FileStorage(path, blob_dir=blob_dir)
    db = ZODB.DB(storage)
    try:
        with db.transaction() as conn:
            root = conn.root()
            if 'items' not in root:
                root['items'] = OOBTree()
        for i in range(start, start + count):
            with db.transaction() as conn:
                root = conn.root()
                root['n'] = i
                root['items'][i] = 'x' * payload
                if garbage:
                    root['tmp'] = PersistentMapping({'i': i, 'data': 'g' * payload})
                if blob_dir and blobs_every and i % blobs_every == 0:
                    blob = Blob()
                    with blob.open('w') as handle:
                        handle.write(b'blob-%d-' % i + os.urandom(64))
                    root['blob-%d' % i] = blob
        return storage.lastTransaction()
    finally:
        db.close()


def read_root(path, blob_dir=None):
    """Open a FileStorage read-only and return (last tid, root['n'], blob contents)."""
    import ZODB
    import ZODB.FileStorage
    storage = ZODB.FileStorage.FileStorage(path, read_only=True, blob_dir=blob_dir)
    db = ZODB.DB(storage)
    try:
        conn = db.open()
        root = conn.root()
        blobs = {}
        for key in list(root.keys()):
            if key.startswith('blob-'):
                with root[key].open('r') as handle:
                    blobs[key] = handle.read()
        n = root.get('n')
        conn.close()
        return storage.lastTransaction(), n, blobs
    finally:
        db.close()


def fstest(path):
    proc = subprocess.run([sys.executable, '-m', 'ZODB.scripts.fstest', path],
                          capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout + proc.stderr


class Zeo:
    def __init__(self, processes, base, data_path, blob_dir):
        self.port = free_port()
        self.address = '127.0.0.1:%d' % self.port
        self.conf = os.path.join(base, 'zeo-%d.conf' % self.port)
        self.log = os.path.join(base, 'zeo-%d.log' % self.port)
        with open(self.conf, 'w') as handle:
            handle.write(textwrap.dedent('''\
                <zeo>
                  address 127.0.0.1:%d
                </zeo>
                <filestorage 1>
                  path %s
                  %s
                </filestorage>
                ''') % (self.port, data_path, 'blob-dir %s' % blob_dir if blob_dir else ''))
        self.proc = processes.start([str(VENV_BIN / 'runzeo'), '-C', self.conf],
                                    log_path=self.log)
        self.processes = processes

        def up():
            if self.proc.poll() is not None:
                raise AssertionError('runzeo exited: ' + open(self.log).read())
            import socket
            with socket.socket() as sock:
                return sock.connect_ex(('127.0.0.1', self.port)) == 0
        wait_for(up, timeout=30, what='runzeo on %s' % self.address)

    def db(self, blob_dir=None):
        import ZEO
        return ZEO.DB(("127.0.0.1", self.port), blob_dir=blob_dir, shared_blob_dir=False,
                      wait_timeout=30)

    def stop(self):
        self.processes.stop(self.proc)


def churn_blobs(path, blob_dir):
    """Give the blobs of ``write_transactions(blobs_every=...)`` history and garbage: a new
    revision of the first blob (its old file is history) and the second one dropped from the
    root (its object and file become unreachable). Returns the dropped key."""
    import ZODB
    import ZODB.FileStorage
    storage = ZODB.FileStorage.FileStorage(path, blob_dir=blob_dir)
    db = ZODB.DB(storage)
    try:
        with db.transaction() as conn:
            root = conn.root()
            keys = sorted(k for k in root.keys() if k.startswith('blob-'))
            with root[keys[0]].open('w') as handle:
                handle.write(b'second revision of ' + keys[0].encode())
            del root[keys[1]]
        return keys[1]
    finally:
        db.close()


def current_objects(path, blob_dir=None):
    """{oid: (tid, data, blob bytes or None)} of every object reachable from the root of a
    FileStorage opened read-only: what a packed copy must still serve, byte for byte."""
    import ZODB.FileStorage
    from ZODB.blob import is_blob_record
    from ZODB.serialize import referencesf
    from ZODB.utils import z64
    storage = ZODB.FileStorage.FileStorage(path, read_only=True, blob_dir=blob_dir)
    try:
        found, todo = {}, [z64]
        while todo:
            oid = todo.pop()
            if oid in found:
                continue
            data, tid = storage.load(oid)
            blob = None
            if is_blob_record(data):
                with open(storage.loadBlob(oid, tid), 'rb') as handle:
                    blob = handle.read()
            found[oid] = (tid, data, blob)
            todo.extend(referencesf(data))
        return found
    finally:
        storage.close()
