# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small file primitives every module shares: an atomic writer, a bounded file lock, and the
owner, group and mode of the files a service writes.

One of each for the whole collection (the HAProxy map files, the promotion's state and lock,
the ZODB manifests all need the same guarantees): a reader sees the old file or the new one,
never half of one; two writers of one file take turns.

Data files (Data.fs, blobs, snapshots, exports) belong to the account the services run as: the
modules that write them take ``owner``, ``group`` and ``file_mode`` (``OWNERSHIP_ARGS``), like
``ansible.builtin.file``'s owner/group/mode. ``file_mode`` is not called ``mode`` because
``zodb_snapshot`` has a ``mode`` (its copy mode) already. Folders get the file mode with ``x``
wherever it has ``r`` (0600 -> 0700, 0640 -> 0750); a file that is not writable (a committed
blob) stays not writable.
"""
from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import stat
import tempfile
import time


class LockTimeout(Exception):
    """Another process held the lock for longer than the caller was willing to wait."""


def atomic_write(path, text, mode=0o644, ownership=None, check=None):
    """Replace ``path`` with ``text`` in one rename, keeping an existing file's mode and owner
    (a new file gets ``mode``); the data is fsynced before the rename. With ``ownership`` (an
    Ownership) the file gets its owner, group and file mode instead, before the rename. With
    ``check``, ``check(temporary_path)`` runs before the rename; an exception it raises leaves
    ``path`` as it was."""
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
        if ownership is not None:
            ownership.apply(tmp)
        elif current is not None:
            os.chmod(tmp, current.st_mode & 0o7777)
            try:
                os.chown(tmp, current.st_uid, current.st_gid)
            except PermissionError:
                pass  # not root: the file stays ours, which is what the writer can do
        else:
            os.chmod(tmp, mode)
        if check is not None:
            check(tmp)
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
    """Append one line (a ledger entry) and fsync it. The whole line is one ``write`` on an
    O_APPEND descriptor, so concurrent appenders never interleave inside a line; a short write
    (a full disk) is continued, which is whole only under the caller's lock of the file."""
    data = (line.rstrip('\n') + '\n').encode('utf-8')
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)
    try:
        written = os.write(fd, data)
        while written < len(data):
            written += os.write(fd, data[written:])
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


# ------------------------------------------------------------------ owner, group and mode
OWNERSHIP_ARGS = dict(
    owner=dict(type='str'),
    group=dict(type='str'),
    file_mode=dict(type='raw'),
)


class OwnershipError(ValueError):
    """An owner, group or mode that cannot be applied on this host."""


def _parse_mode(value):
    if isinstance(value, int):
        mode = value
    else:
        try:
            mode = int(str(value), 8)
        except ValueError:
            raise OwnershipError('file_mode is %r; give an octal mode as a quoted string, e.g. '
                                 '"0600" or "0640".' % (value,)) from None
    if not 0 <= mode <= 0o777:
        raise OwnershipError('file_mode is %s; it must be a permission mode from 0000 to 0777.'
                             % oct(mode))
    return mode


def _resolve(name, database, what, variable):
    if name in (None, ''):
        return -1
    name = str(name)
    if name.isdigit():
        return int(name)
    try:
        return getattr(database.getpwnam(name) if database is pwd else database.getgrnam(name),
                       'pw_uid' if database is pwd else 'gr_gid')
    except KeyError:
        raise OwnershipError('The %s %r does not exist on this host: create it, or fix %s.'
                             % (what, name, variable)) from None


class Ownership:
    """The owner, group and modes of a service's files: files ``file_mode`` (0600 for the user
    alone, 0640 with a group by default), folders the same with x where r is."""

    def __init__(self, owner=None, group=None, file_mode=None):
        self.owner, self.group = owner or None, group or None
        self.uid = _resolve(owner, pwd, 'account', 'owner (zopeops_service_user)')
        self.gid = _resolve(group, grp, 'group', 'group (zopeops_service_group)')
        if file_mode in (None, ''):
            file_mode = 0o640 if self.group else 0o600
        self.file_mode = _parse_mode(file_mode)
        self.dir_mode = self.file_mode | ((self.file_mode & 0o444) >> 2)

    @classmethod
    def from_params(cls, params):
        return cls(params.get('owner'), params.get('group'), params.get('file_mode'))

    def _wanted_mode(self, st):
        if stat.S_ISDIR(st.st_mode):
            return self.dir_mode
        if not st.st_mode & stat.S_IWUSR:  # a committed blob: keep it read-only
            return self.file_mode & ~0o222
        return self.file_mode

    def apply(self, path, check=False, st=None):
        """Give one path (not following a symlink) its owner, group and mode; True if that
        changed (or, with ``check``, would change) anything."""
        st = st or os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return False
        changed = False
        if (self.uid != -1 and st.st_uid != self.uid) or (self.gid != -1 and st.st_gid != self.gid):
            if not check:
                os.chown(path, self.uid, self.gid)
            changed = True
        mode = self._wanted_mode(st)
        if stat.S_IMODE(st.st_mode) != mode:
            if not check:
                os.chmod(path, mode)
            changed = True
        return changed

    def apply_tree(self, root, check=False, recurse=True, skip=()):
        """``apply`` to ``root`` and, for a folder (with ``recurse``), everything below it but
        the entries named in ``skip`` directly in ``root``; the number of paths changed (0 when
        ``root`` does not exist)."""
        if not os.path.lexists(root):
            return 0
        changed = int(self.apply(root, check))
        if recurse and os.path.isdir(root) and not os.path.islink(root):
            for folder, dirs, names in os.walk(root):
                if folder == root:
                    dirs[:] = [name for name in dirs if name not in skip]
                    names = [name for name in names if name not in skip]
                for name in dirs + names:
                    changed += self.apply(os.path.join(folder, name), check)
        return changed
