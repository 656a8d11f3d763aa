# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every zodb_* module shares: the error they report, the interpreter check, messages.

The data helpers live beside this file, one concern each: ``zodb_format`` (the FileStorage
format: tids, the transaction header walk), ``zodb_copy`` (range copies, hashing, packed
copies, disk space), ``zodb_manifest`` (snapshot manifests and their verification),
``zodb_blobs`` (blob directories), ``zodb_locks`` (the storage's locks), ``zodb_zeo`` (ZEO
servers).

ZODB itself is imported lazily (``import_zodb``) so that a module run by the wrong interpreter
fails with a message saying which one, instead of a traceback.
"""
from __future__ import annotations

import datetime
import errno
import os
import sys
import time

from ansible_collections.zopeops.stages.plugins.module_utils import files


class ZODBDataError(Exception):
    """A refusal or failure the module reports as is: what failed, where, why, what to do."""


def import_zodb(module):
    """Import ZODB (and ZEO) or fail the module naming the interpreter that lacks them."""
    try:
        import ZODB  # noqa: F401  pylint: disable=unused-import
        import ZODB.FileStorage  # noqa: F401
    except ImportError as exc:
        module.fail_json(
            msg='ZODB is not importable by the Python interpreter that runs this module (%s): '
                '%s. Run the module with the release virtualenv\'s python, e.g. set '
                'ansible_python_interpreter: <root>/<instance>/current/venv/bin/python for '
                'this task.' % (sys.executable, exc),
            python=sys.executable)


def ownership_of(module):
    """The module's owner/group/file_mode options as a files.Ownership, or fail naming the
    option before anything is written."""
    try:
        return files.Ownership.from_params(module.params)
    except files.OwnershipError as exc:
        module.fail_json(msg=str(exc))


def storage_paths(path, blob_dir=None):
    """What the data modules write for a FileStorage: the Data.fs, its install record, the
    pairs kept beside them (``.prev-<stamp>``, a pack's ``.old``), the blob folder with its
    kept pairs, and the storage's lock file (``zodb_restore`` creates it when no ZEO server ran
    yet; a root-owned lock file keeps the service's ZEO server from starting). Not the index,
    which the ZEO server writes itself (as the service user, with its unit's umask)."""
    paths = []
    for base, extra in ((path, ('.installed.json', '.old', '.lock')), (blob_dir, ())):
        if not base:
            continue
        base = os.path.abspath(base).rstrip('/')
        folder, name = os.path.split(base)
        try:
            entries = sorted(os.listdir(folder))
        except FileNotFoundError:
            continue
        owned = [name] + [name + suffix for suffix in extra]
        kept = tuple(prefix + '.prev-' for prefix in owned)
        paths.extend(os.path.join(folder, entry) for entry in entries
                     if entry in owned or entry.startswith(kept))
    return paths


def apply_ownership(module, ownership, paths, result, folders=()):
    """Give every path and what is below it (and each of ``folders`` itself, not what is in
    it) the service's owner, group and modes; records ``attributes_changed`` and marks the
    result changed if any path changed."""
    count = sum(ownership.apply_tree(folder, check=module.check_mode, recurse=False)
                for folder in folders)
    # A blob folder's tmp/ is the ZEO server's (or a reader's) own, made while it runs;
    # .removed is the list of removed blobs that every pack writes anew.
    count += sum(ownership.apply_tree(path, check=module.check_mode, skip=('tmp', '.removed'))
                 for path in paths)
    result['attributes_changed'] = count
    if count:
        result['changed'] = True


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def stamp():
    """A sortable timestamp for file names: 20261126T105512Z."""
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')


def elapsed(since):
    return round(time.monotonic() - since, 3)


def os_error_message(exc, doing, state):
    """One sentence for an OSError: what failed, on which path, why, and what to do.

    ``doing`` says what the module was doing; ``state`` says what is true now (what was kept).
    """
    where = exc.filename or 'a file'
    if exc.filename2:
        where = '%s -> %s' % (exc.filename, exc.filename2)
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = ('The filesystem holding %s is full: free space there (old snapshots, kept '
                  'Data.fs.prev-* pairs) or use a bigger filesystem, then run again.' % where)
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = ('Check that the user the task runs as may write %s (ownership, mode, a '
                  'read-only mount), then run again.' % where)
    elif exc.errno == errno.ENOENT:
        advice = 'Check that %s exists (the path options), then run again.' % where
    else:
        advice = 'Fix the cause, then run again.'
    return '%s failed at %s: %s (errno %s). %s %s' % (
        doing, where, reason, errno.errorcode.get(exc.errno, exc.errno), state, advice)
