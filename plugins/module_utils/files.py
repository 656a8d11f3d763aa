# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small file primitives every module shares: an atomic writer and a bounded file lock.

One of each for the whole collection (the HAProxy map files, the promotion's state and lock,
the ZODB manifests all need the same guarantees): a reader sees the old file or the new one,
never half of one; two writers of one file take turns.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time


class LockTimeout(Exception):
    """Another process held the lock for longer than the caller was willing to wait."""


def atomic_write(path, text, mode=0o644):
    """Replace ``path`` with ``text`` in one rename, keeping an existing file's mode and owner
    (a new file gets ``mode``); the data is fsynced before the rename."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        current = os.stat(path)
    except FileNotFoundError:
        current = None
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, 'w') as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if current is not None:
            os.chmod(tmp, current.st_mode & 0o7777)
            try:
                os.chown(tmp, current.st_uid, current.st_gid)
            except PermissionError:
                pass  # not root: the file stays ours, which is what the writer can do
        else:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path):
    """The JSON document in ``path``, or None if there is no such file."""
    try:
        with open(path, encoding='utf-8') as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def append_line(path, line, mode=0o640):
    """Append one line (a ledger entry) and fsync it: an entry either is there whole or not."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        os.write(fd, (line.rstrip('\n') + '\n').encode('utf-8'))
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(lock_path, timeout=30.0, what='the lock', shared=False):
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing) for a short critical
    section; raise LockTimeout naming the file if another holder keeps it past ``timeout``.

    ``shared`` takes a shared lock instead: shared holders run together, an exclusive holder
    waits for all of them (and they for it)."""
    handle = open(lock_path, 'a')
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout('Another process has held %s (%s) for more than %.0fs.'
                                      % (what, lock_path, timeout)) from None
                time.sleep(0.02)
        yield
    finally:
        handle.close()
