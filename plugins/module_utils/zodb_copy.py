# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copying a FileStorage's committed range: in the kernel, hashed as it goes, or packed in
one pass by ZODB's own packer; and the disk space, fsync and removal helpers a copy needs.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.zopeops.stages.plugins.module_utils.zodb import ZODBDataError
from ansible_collections.zopeops.stages.plugins.module_utils.zodb_format import MAGIC


# With verify: full each copied range is hashed in pieces of at most this size: the pieces hash
# in parallel with the copy, and an incremental refresh compares only the last piece.
HASH_PIECE_BYTES = 64 * 1024 * 1024


# verify: spans (the default) hashes only the first and the last span_bytes of each copied range;
# verify: full hashes every byte. See zodb_snapshot's documentation for what each catches.
VERIFY_MODES = ('spans', 'full')


DEFAULT_SPAN_BYTES = 1024 * 1024


COPY_CHUNK_BYTES = 64 * 1024 * 1024


def copy_range(src_fd, dst_fd, start, end, dst_offset=None):
    """Copy bytes ``[start, end)`` of ``src_fd`` to ``dst_fd`` at ``dst_offset`` (default
    ``start``), in the kernel where it can: copy_file_range, then sendfile, then read/write."""
    if dst_offset is None:
        dst_offset = start
    pos, out = start, dst_offset
    use_cfr = hasattr(os, 'copy_file_range')
    while pos < end:
        count = min(COPY_CHUNK_BYTES, end - pos)
        copied = 0
        if use_cfr:
            try:
                copied = os.copy_file_range(src_fd, dst_fd, count, pos, out)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                     errno.EPERM):
                    raise
                use_cfr = False
        if not use_cfr:
            os.lseek(dst_fd, out, os.SEEK_SET)
            try:
                copied = os.sendfile(dst_fd, src_fd, pos, count)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                data = os.pread(src_fd, min(count, 1 << 20), pos)
                copied = os.write(dst_fd, data) if data else 0
        if copied <= 0:
            raise ZODBDataError('The source ended at byte %d while copying [%d, %d): it shrank '
                                'during the copy (packed?). Do not pack while a snapshot is '
                                'taken; run the snapshot again.' % (pos, start, end))
        pos += copied
        out += copied
    return end - start


#
# A packed copy is written in one pass: ZODB's own FileStoragePacker reads the committed range
# [0, end) of the open source and writes the packed transactions straight into the
# destination, so the data is written once (a copy followed by a pack writes it twice and
# reads it three times). The packer is driven here rather than through FileStorage.pack()
# because pack() needs a writable storage and writes <path>.pack beside the source and
# <blob_dir>/.removed into the source's blob directory; the source must stay untouched.
class _CommittedRange:
    """What ``FileStoragePacker`` asks of its storage, for the range ``[0, end)`` of an open
    file. ``/dev/fd/<n>`` names the already open descriptor, so the packer reads the very file
    that was planned even if the path was replaced since; ``blob_dir`` is None so that the
    packer writes no ``.removed`` list into the source's blob directory."""

    blob_dir = None

    def __init__(self, fd, end):
        import threading
        self._file = type('OpenFile', (), {'name': '/dev/fd/%d' % fd})()
        self._end = end
        self._lock = threading.RLock()
        self._commit_lock = threading.Lock()

    def getSize(self):
        return self._end

    @staticmethod
    def is_blob_record(record):
        from ZODB.blob import is_blob_record
        return is_blob_record(record)


def pack_time_tid(snapshot_tid, days):
    """The pack time for a copy packed to ``days`` before its snapshot tid, as a tid.

    ``days == 0`` packs up to and including the snapshot tid itself (only current revisions
    stay); counted from the snapshot rather than from now, so the same snapshot always packs
    the same way.
    """
    if not days:
        return snapshot_tid
    from persistent.timestamp import TimeStamp
    seconds = TimeStamp(snapshot_tid).timeTime() - days * 86400
    return TimeStamp(*time.gmtime(seconds)[:5] + (seconds % 60,)).raw()


def pack_copy(src_fd, end, dst_path, pack_tid, gc=True):
    """Write the committed range ``[0, end)`` of ``src_fd`` into ``dst_path`` packed to
    ``pack_tid`` (unreachable objects removed with ``gc``), in one pass, and fsync it.

    Returns the size of the packed file, or None when ZODB finds the range already packed
    (nothing written: a plain copy of the range is then the packed copy).
    """
    from ZODB.FileStorage.FileStorage import RedundantPackWarning
    from ZODB.FileStorage.fspack import FileStoragePacker, PackCopier
    from ZODB.serialize import referencesf
    import io
    packer = FileStoragePacker(_CommittedRange(src_fd, end), referencesf, pack_tid, gc)
    packer.pack_blobs = True  # only to look at blob records; the list stays in memory
    packer.blob_removed = io.BytesIO()
    try:
        try:
            packer.gc.findReachable()
        except RedundantPackWarning:
            return None
        with open(dst_path, 'w+b') as out:
            packer._tfile = out
            out.write(MAGIC)
            packer._copier = PackCopier(out, packer.index, packer.tindex)
            ipos, _opos = packer.copyToPacktime()
            # After the pack time every transaction is copied (pack_days > 0); copyOne
            # releases and takes back the commit lock around each one, as pack() holds it.
            packer._commit_lock.acquire()
            try:
                while ipos < end:
                    ipos = packer.copyOne(ipos)
            finally:
                packer._commit_lock.release()
            if ipos != end:
                raise ZODBDataError('the packer stopped at byte %d of the snapshot range '
                                    '[0, %d)' % (ipos, end))
            out.flush()
            os.fsync(out.fileno())
            return out.tell()
    finally:
        packer._tfile = None  # closed above; close() must not touch it
        packer.close()


# md5 is the default the design names; sha1 costs less CPU where the CPU has SHA extensions
# (2.5x faster than md5 on the sandbox), which matters when the copy competes for CPU.
CHECKSUMS = ('md5', 'sha1', 'sha256')


def digest_of_range(fd, start, end, algorithm='md5'):
    digest = hashlib.new(algorithm, usedforsecurity=False)
    pos = start
    while pos < end:
        data = os.pread(fd, min(1 << 20, end - pos), pos)
        if not data:
            raise ZODBDataError('unexpected end of file at %d (wanted up to %d)' % (pos, end))
        digest.update(data)
        pos += len(data)
    return digest.hexdigest()


def pieces_of(start, end, piece=HASH_PIECE_BYTES):
    return [(a, min(a + piece, end)) for a in range(start, end, piece)]


def md5_of_range(fd, start, end):
    return digest_of_range(fd, start, end, 'md5')


def spans_of(start, end, verify='spans', span_bytes=DEFAULT_SPAN_BYTES):
    """The ``(start, end)`` spans to hash in the copied range ``[start, end)``.

    ``full``: pieces of at most HASH_PIECE_BYTES covering the range. ``spans``: the first and
    the last ``span_bytes`` of it; a range of at most two spans is covered whole.
    """
    if end <= start:
        return []
    if verify not in VERIFY_MODES:
        raise ZODBDataError('unknown verify mode %r (known: %s)'
                            % (verify, ', '.join(VERIFY_MODES)))
    if span_bytes <= 0:
        raise ZODBDataError('span_bytes is %d; use a positive number of bytes' % span_bytes)
    if verify == 'full' or end - start <= 2 * span_bytes:
        return pieces_of(start, end)
    return [(start, start + span_bytes), (end - span_bytes, end)]


def hash_spans(source, spans, workers=2, algorithm='md5'):
    """[{'start', 'end', <algorithm>}] for the ``(start, end)`` spans of ``source`` (a path, or
    an open file descriptor that is read with ``pread`` and left open), hashed in threads
    (hashlib releases the GIL, so this overlaps with a copy running in the kernel)."""
    if not spans:
        return []
    fd = os.open(source, os.O_RDONLY) if isinstance(source, str) else source
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(spans)))) as pool:
            digests = list(pool.map(
                lambda span: digest_of_range(fd, span[0], span[1], algorithm), spans))
    finally:
        if fd is not source:
            os.close(fd)
    return [{'start': a, 'end': b, algorithm: d} for (a, b), d in zip(spans, digests)]


def hash_pieces(path, start, end, workers=2, algorithm='md5'):
    """Every byte of ``[start, end)`` hashed in pieces of at most HASH_PIECE_BYTES."""
    return hash_spans(path, pieces_of(start, end), workers, algorithm)


def copy_and_hash(source, dst_path, start, end, truncate_to=None, algorithm='md5',
                  verify='spans', span_bytes=DEFAULT_SPAN_BYTES):
    """Copy ``[start, end)`` of ``source`` (an open file descriptor, left open, or a path) into
    dst at the same offsets while hashing its spans from the same descriptor, so what is
    hashed is what was copied.

    ``dst`` is created if missing; with ``truncate_to`` it is first cut to that size (dropping
    a half-appended tail of an interrupted refresh). The copy is fsynced. Returns the manifest
    range entry ``{'start', 'end', 'verify', 'spans': [{'start', 'end', <algorithm>}]}``, its
    ``verify`` ``full`` when every byte was hashed (also a short range with ``spans``).
    """
    spans = spans_of(start, end, verify, span_bytes)
    src_fd = os.open(source, os.O_RDONLY) if isinstance(source, str) else source
    try:
        dst_fd = os.open(dst_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            if truncate_to is not None:
                os.ftruncate(dst_fd, truncate_to)
            with ThreadPoolExecutor(max_workers=1) as pool:
                hashing = pool.submit(hash_spans, src_fd, spans, 2, algorithm)
                copy_range(src_fd, dst_fd, start, end)
                hashed = hashing.result()
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        if src_fd is not source:
            os.close(src_fd)
    return range_entry(start, end, hashed)


def range_entry(start, end, hashed):
    """The manifest entry of the range ``[start, end)`` whose ``hashed`` spans were recorded."""
    whole = bool(hashed) and all(a['end'] == b['start'] for a, b in zip(hashed, hashed[1:]))
    return {'start': start, 'end': end, 'verify': 'full' if whole else 'spans', 'spans': hashed}


def fsync_dir(path, strict=False):
    """fsync a folder so that the names created in it last; best effort unless ``strict``
    (then an OSError, ENOSPC or EIO from the filesystem, is raised to the caller)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)


def free_bytes(path):
    """Bytes available to this user on the filesystem holding ``path`` (or its parent)."""
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    stat = os.statvfs(probe)
    return stat.f_bavail * stat.f_frsize


def require_free(path, needed, reserve, doing):
    available = free_bytes(path)
    if needed + reserve > available:
        raise ZODBDataError(
            'Not enough free disk space to %s at %s: %d bytes needed (+ %d reserved) but only %d '
            'available. Free some space (old snapshots, Data.fs.old, previous copies) or choose '
            'a destination on a bigger filesystem; nothing was changed.'
            % (doing, path, needed, reserve, available))
    return available


def same_filesystem(path_a, path_b):
    def dev(path):
        probe = path
        while not os.path.exists(probe):
            probe = os.path.dirname(probe) or '.'
        return os.stat(probe).st_dev
    return dev(path_a) == dev(path_b)


def remove_path(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def put_folder_in_place(building, dest):
    """Rename the complete folder ``building`` to ``dest`` (a snapshot built beside it), so
    that ``dest`` holds either its old or its new content; the old one is removed after."""
    dest = os.path.abspath(dest)
    retired = None
    if os.path.exists(dest):
        retired = '%s.old-%d' % (dest, os.getpid())
        os.rename(dest, retired)
    os.rename(building, dest)
    fsync_dir(os.path.dirname(dest), strict=True)
    if retired:
        shutil.rmtree(retired, ignore_errors=True)
