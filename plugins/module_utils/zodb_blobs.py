# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Blob directories in ZODB's layout: which blob files a snapshot holds, and copying them.
"""
from __future__ import annotations

import errno
import os

from ansible_collections.zopeops.stages.plugins.module_utils.zodb import ZODBDataError
from ansible_collections.zopeops.stages.plugins.module_utils.zodb_copy import copy_range, fsync_dir
from ansible_collections.zopeops.stages.plugins.module_utils.zodb_format import (
    tid_to_hex, tid_to_int)


BLOB_SUFFIX = '.blob'


LAYOUT_MARKER = '.layout'


def blob_records(path, blob_dir):
    """[(relative path, size)] of the blob files the records of the FileStorage ``path``
    refer to, found in ``blob_dir``; ZODBDataError naming the first one that is missing.

    For a packed copy these are exactly the blobs of the objects it kept.
    """
    from ZODB.FileStorage import FileIterator
    from ZODB.blob import FilesystemHelper, is_blob_record
    helper = FilesystemHelper(blob_dir, blob_layout(blob_dir) or 'bushy')
    found = {}
    iterator = FileIterator(path)
    try:
        for txn in iterator:
            for record in txn:
                if not is_blob_record(record.data):
                    continue
                full = helper.getBlobFilename(record.oid, record.tid)
                try:
                    size = os.stat(full).st_size
                except FileNotFoundError:
                    raise ZODBDataError(
                        'The blob file %s of object 0x%s (tid %s) is missing in the source '
                        'blob directory %s. Was the source packed during the snapshot (online '
                        'through ZEO)? Take the snapshot again.' % (
                            full, tid_to_hex(record.oid), tid_to_hex(record.tid),
                            blob_dir)) from None
                found[os.path.relpath(full, blob_dir)] = size
    finally:
        iterator.close()
    return sorted(found.items())


def blob_layout(blob_dir):
    marker = os.path.join(blob_dir, LAYOUT_MARKER)
    try:
        with open(marker, encoding='utf-8') as handle:
            return handle.read().strip() or 'bushy'
    except FileNotFoundError:
        return None


def blob_tid(filename):
    """The tid (int) in a blob file name ``0x03ea...blob``, or None for other files."""
    if not filename.endswith(BLOB_SUFFIX):
        return None
    try:
        return int(filename[:-len(BLOB_SUFFIX)], 16)
    except ValueError:
        return None


def committed_blobs(blob_dir, max_tid):
    """[(relative path, size)] of blob files whose tid is <= ``max_tid`` (bytes).

    Skips the ``tmp`` directory (uncommitted uploads) and blob files of transactions after the
    snapshot tid (they may belong to a commit still in progress, or to later history).
    """
    limit = tid_to_int(max_tid) if max_tid else -1
    found = []
    if not blob_dir or not os.path.isdir(blob_dir):
        return found
    for root, dirs, files in os.walk(blob_dir):
        if root == blob_dir:
            dirs[:] = [d for d in dirs if d != 'tmp']
        for name in files:
            tid = blob_tid(name)
            if tid is None or tid > limit:
                continue
            full = os.path.join(root, name)
            try:
                size = os.stat(full).st_size
            except FileNotFoundError:  # removed by a pack: not ours to copy
                continue
            found.append((os.path.relpath(full, blob_dir), size))
    found.sort()
    return found


def copy_blobs(src_dir, dst_dir, blobs, link):
    """Copy (or hard-link) the listed blob files from src into dst; skip ones dst already has
    with the same size (blob files never change). Returns (copied, linked, bytes_copied).

    The layout is ZODB's: folders made as ZODB makes them (``os.makedirs``, the umask's mode),
    committed blob files not writable (``ZODB.blob.set_not_writable``; a hard link shares the
    source's inode and mode). Every copied file, and every folder that got a new entry, is
    fsynced before this returns, deepest first, so a crash cannot lose a blob the manifest
    counts.
    """
    from ZODB.blob import set_not_writable
    copied = linked = moved = 0
    if not os.path.isdir(dst_dir):
        os.makedirs(dst_dir)
        fsync_dir(os.path.dirname(os.path.abspath(dst_dir)))
    layout = blob_layout(src_dir)
    marker = os.path.join(dst_dir, LAYOUT_MARKER)
    if layout and not os.path.exists(marker):
        with open(marker, 'w', encoding='utf-8') as handle:
            handle.write(layout)
            handle.flush()
            os.fsync(handle.fileno())
    touched = {os.path.abspath(dst_dir)}
    for rel, size in blobs:
        target = os.path.join(dst_dir, rel)
        try:
            if os.stat(target).st_size == size:
                continue
            os.unlink(target)
        except FileNotFoundError:
            pass
        parent = os.path.dirname(target)
        if os.path.abspath(parent) not in touched:
            made = _makedirs_listing(parent)
            touched.update(made)
            touched.update(os.path.dirname(d) for d in made)
            touched.add(os.path.abspath(parent))
        source = os.path.join(src_dir, rel)
        if link:
            try:
                os.link(source, target)
                linked += 1
                continue
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
        src_fd = os.open(source, os.O_RDONLY)
        try:
            dst_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                copy_range(src_fd, dst_fd, 0, size)
                os.fsync(dst_fd)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        set_not_writable(target)
        copied += 1
        moved += size
    for folder in sorted(touched, key=len, reverse=True):
        fsync_dir(folder, strict=True)
    return copied, linked, moved


def _makedirs_listing(path):
    """``os.makedirs(path)`` that returns the absolute folders it created."""
    missing = []
    probe = os.path.abspath(path)
    while not os.path.isdir(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    if missing:
        os.makedirs(path, exist_ok=True)
    return missing
