# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The locks on a FileStorage: ZODB's own ``<path>.lock`` (held by a running ZEO server)
and the collection's ``<path>.pack.lock`` (a pack and the snapshots of one file take turns).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os

from ansible_collections.zopeops.stages.plugins.module_utils import files
from ansible_collections.zopeops.stages.plugins.module_utils.zodb import ZODBDataError


def lock_holder(path):
    """If the FileStorage at ``path`` is locked (a ZEO server or script has it open read-write),
    return what the lock file says (pid, host); else None.

    Tests the lock with a non-blocking ``flock`` on ``<path>.lock``, the lock ``zc.lockfile``
    takes; does not create the lock file and releases the test lock at once.
    """
    lock_path = path + '.lock'
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                try:
                    content = os.pread(fd, 200, 0).decode('utf-8', 'replace').strip()
                except OSError:
                    content = ''
                return content or 'unknown process'
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def refuse_if_locked(path, doing):
    holder = lock_holder(path)
    if holder is not None:
        raise ZODBDataError(
            'Cannot %s %s: the storage is locked by a running process (lock file %s.lock held '
            'by %s), most likely its ZEO server. Stop that ZEO server first, or use the online '
            'variant through zeo_address.' % (doing, path, path, holder))


# zodb_snapshot reads a source under a shared lock on <path>.pack.lock, zodb_pack packs it
# under an exclusive one: a pack waits for the snapshots of its file and they for it, while
# two snapshots of one source run together. A separate file from ZODB's own <path>.lock,
# which a running ZEO server holds for as long as it runs (snapshots must not wait for it).
PACK_LOCK_SUFFIX = '.pack.lock'


DEFAULT_LOCK_TIMEOUT = 60.0


@contextlib.contextmanager
def pack_lock(path, shared, timeout, doing):
    """Hold ``<path>.pack.lock`` (shared for a snapshot, exclusive for a pack) while ``doing``;
    ZODBDataError naming the lock and what to do if it is not free within ``timeout``."""
    lock_path = path + PACK_LOCK_SUFFIX
    try:
        with files.file_lock(lock_path, timeout, 'the pack lock of %s' % path, shared=shared):
            yield lock_path
    except files.LockTimeout:
        raise ZODBDataError(
            'Cannot %s %s: %s is held by %s of the same file for more than %.0fs. Wait until '
            'it is done and run again, or raise lock_timeout.' % (
                doing, path, lock_path,
                'a pack' if shared else 'a snapshot (zodb_snapshot) or another pack',
                timeout)) from None
