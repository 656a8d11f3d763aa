# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the ZODB data modules share: tids, the FileStorage layout, locks, range copies, manifests.

The FileStorage format facts used here (ZODB 6, ``FS30``):
  file     = magic b'FS30' + transaction*
  txn      = header (tid 8s, tlen Q, status c, ulen H, dlen H, elen H) + ... + tlen (Q)
             so a transaction spans ``[tpos, tpos + tlen + 8)``; ``status`` is ``'c'`` while
             the transaction is being committed, ``' '`` / ``'p'`` / ``'u'`` afterwards.
FileStorage only appends (except pack), so ``[0, committed_end)`` of a live file never changes.
Walking only the transaction headers finds that end in O(transactions) instead of the
O(records) a full read-only ``FileStorage`` open needs to build its oid index; it applies the
same stop rules as ``ZODB.FileStorage.read_index`` (status ``'c'``, short or torn tail).

ZODB itself is imported lazily (``import_zodb``) so that a module run by the wrong interpreter
fails with a message saying which one, instead of a traceback.
"""
from __future__ import annotations

import binascii
import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.zopeops.stages.plugins.module_utils import files

MAGIC = b'FS30'
TXN_HEADER = struct.Struct('>8sQcHHH')
TXN_HEADER_LEN = TXN_HEADER.size  # 23
# oid, tid, prev (position of the previous revision), tloc, vlen, plen: ZODB's DATA_HDR
DATA_HEADER = struct.Struct('>8s8sQQHQ')
DATA_HEADER_LEN = DATA_HEADER.size  # 42
Z64 = b'\0' * 8
BLOB_SUFFIX = '.blob'
LAYOUT_MARKER = '.layout'
MANIFEST_NAME = 'manifest.json'
# 2: each range entry is a copied range with the spans hashed in it ({'start', 'end', 'verify',
# 'spans': [{'start', 'end', <checksum>}]}); 1: each entry was itself a hashed piece (read still).
MANIFEST_FORMAT = 2
SNAPSHOT_DATA_NAME = 'Data.fs'
SNAPSHOT_BLOB_NAME = 'blobs'
# With verify: full each copied range is hashed in pieces of at most this size: the pieces hash
# in parallel with the copy, and an incremental refresh compares only the last piece.
HASH_PIECE_BYTES = 64 * 1024 * 1024
# verify: spans (the default) hashes only the first and the last span_bytes of each copied range;
# verify: full hashes every byte. See zodb_snapshot's documentation for what each catches.
VERIFY_MODES = ('spans', 'full')
DEFAULT_SPAN_BYTES = 1024 * 1024
COPY_CHUNK_BYTES = 64 * 1024 * 1024


class ZODBDataError(Exception):
    """A refusal or failure the module reports as is: what failed, where, why, what to do."""


# --------------------------------------------------------------------------- interpreter


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


# --------------------------------------------------------------------------- tids


def tid_to_hex(tid):
    """8-byte tid -> 16 lower-case hex digits (``None`` stays ``None``)."""
    if tid is None:
        return None
    if len(tid) != 8:
        raise ValueError('a tid is 8 bytes, got %d' % len(tid))
    return binascii.hexlify(tid).decode('ascii')


def hex_to_tid(text):
    """``'03ea...'`` / ``'0x3ea...'`` -> 8-byte tid; ValueError naming the bad value."""
    value = str(text).strip().lower()
    if value.startswith('0x'):
        value = value[2:]
    if not value or len(value) > 16 or any(c not in '0123456789abcdef' for c in value):
        raise ValueError('%r is not a transaction id (up to 16 hex digits)' % (text,))
    return binascii.unhexlify(value.rjust(16, '0'))


def tid_to_int(tid):
    return struct.unpack('>Q', tid)[0]


def int_to_tid(value):
    return struct.pack('>Q', value)


def tid_to_iso(tid):
    """The UTC time a tid stands for, ISO 8601 (``None`` for z64 / None)."""
    if tid is None or tid == Z64:
        return None
    from persistent.timestamp import TimeStamp  # lazy: needs ZODB's dependencies
    seconds = TimeStamp(tid).timeTime()
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def stamp():
    """A sortable timestamp for file names: 20261126T105512Z."""
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')


# --------------------------------------------------------------------------- FileStorage layout


def read_magic(path):
    with open(path, 'rb') as handle:
        return handle.read(4)


def check_filestorage(path, what='source'):
    """Raise ZODBDataError unless ``path`` is an existing FileStorage (magic FS30)."""
    if not os.path.exists(path):
        raise ZODBDataError('The %s FileStorage %s does not exist. Check the path (the instance '
                            'layout puts it at <instance>/var/filestorage/Data.fs).' % (what, path))
    if not os.path.isfile(path):
        raise ZODBDataError('The %s FileStorage %s is not a regular file.' % (what, path))
    magic = read_magic(path)
    if magic != MAGIC:
        raise ZODBDataError(
            'The %s %s is not a ZODB FileStorage: it starts with %r, not %r. Point the module '
            'at a Data.fs written by ZODB 5 or newer.' % (what, path, magic, MAGIC))


def walk_transactions(fd, start=4, file_size=None):
    """Yield ``(tid, status, tpos, end)`` of each committed transaction from ``start`` on.

    Stops, like ``read_index``, at a transaction still being committed (status ``'c'``), at a
    torn header, at a length that runs past the end of the file or whose trailing copy
    disagrees; ``end`` is the offset just after the transaction's trailing length.
    """
    if file_size is None:
        file_size = os.fstat(fd).st_size
    pos = start
    while pos + TXN_HEADER_LEN <= file_size:
        header = os.pread(fd, TXN_HEADER_LEN, pos)
        if len(header) < TXN_HEADER_LEN:
            return
        tid, tlen, status, ulen, dlen, elen = TXN_HEADER.unpack(header)
        end = pos + tlen + 8
        if status == b'c' or end > file_size or tlen < TXN_HEADER_LEN + ulen + dlen + elen:
            return
        trailer = os.pread(fd, 8, end - 8)
        if len(trailer) < 8 or struct.unpack('>Q', trailer)[0] != tlen:
            return
        if status not in (b' ', b'p', b'u'):
            return
        yield tid, status, pos, end
        pos = end


def committed_end(fd, start=4, file_size=None):
    """Walk transaction headers from ``start``; return (end, last_tid, transactions).

    ``end`` is the offset just after the last fully committed transaction, the ``getSize()`` a
    read-only FileStorage open would report; ``last_tid`` its tid (None if there is none after
    ``start``). See ``walk_transactions`` for where the walk stops.
    """
    pos, last_tid, count = start, None, 0
    for tid, _status, _tpos, end in walk_transactions(fd, start, file_size):
        pos, last_tid, count = end, tid, count + 1
    return pos, last_tid, count


def transactions_after(fd, after_tid, file_size=None):
    """The committed transactions with a tid greater than ``after_tid``, oldest first.

    Returns ``(found_after, [(tid, tpos, end)])``; ``found_after`` says whether the file holds
    a transaction with exactly ``after_tid`` (always true for z64, the empty history).

    Walks back from the end of the file by the trailing lengths, so it costs in proportion
    to the tail, not to the file (what a replay during a write freeze needs). A last
    transaction still marked ``'c'`` is left out. If the tail is torn (a transaction being
    appended right now) it walks forward from the start instead, with ``read_index``'s rules.
    """
    if file_size is None:
        file_size = os.fstat(fd).st_size
    newest_first = []
    pos = file_size
    while pos > 4:
        found = txn_header_before(fd, pos)
        if found is None or found[1] not in (b' ', b'p', b'u', b'c') or (
                found[1] == b'c' and newest_first):
            return _transactions_after_forward(fd, after_tid, file_size)
        tid, status, tpos = found
        if status == b'c':  # being committed: not part of the history yet
            pos = tpos
            continue
        if tid <= after_tid:
            return tid == after_tid, newest_first[::-1]
        newest_first.append((tid, tpos, pos))
        pos = tpos
    return after_tid == Z64, newest_first[::-1]


def _transactions_after_forward(fd, after_tid, file_size):
    found_after = after_tid == Z64
    tail = []
    for tid, _status, tpos, end in walk_transactions(fd, 4, file_size):
        if tid == after_tid:
            found_after = True
        elif tid > after_tid:
            tail.append((tid, tpos, end))
    return found_after, tail


def previous_serial(fd, data_pos):
    """The tid of the revision before the data record at ``data_pos`` (z64 for a new object).

    Read from the record's ``prev`` pointer (``ZODB.FileStorage.format.DataHeader``): no index
    of the file is needed.
    """
    header = os.pread(fd, DATA_HEADER_LEN, data_pos)
    if len(header) < DATA_HEADER_LEN:
        raise ZODBDataError('torn data record at byte %d' % data_pos)
    oid, _tid, prev, _tloc, _vlen, _plen = DATA_HEADER.unpack(header)
    if not prev:
        return Z64
    older = os.pread(fd, 16, prev)
    if len(older) < 16 or older[:8] != oid:
        raise ZODBDataError('the data record at byte %d points to a previous revision at byte '
                            '%d that is not one of the same object' % (data_pos, prev))
    return older[8:16]


def txn_header_before(fd, pos):
    """(tid, status, tpos) of the transaction that ends at ``pos``, or None if none does."""
    if pos < 4 + TXN_HEADER_LEN + 8:
        return None
    trailer = os.pread(fd, 8, pos - 8)
    if len(trailer) < 8:
        return None
    tlen = struct.unpack('>Q', trailer)[0]
    tpos = pos - 8 - tlen
    if tpos < 4:
        return None
    header = os.pread(fd, TXN_HEADER_LEN, tpos)
    if len(header) < TXN_HEADER_LEN:
        return None
    tid, tlen2, status, _u, _d, _e = TXN_HEADER.unpack(header)
    if tlen2 != tlen:
        return None
    return tid, status, tpos


def storage_state(path):
    """Committed end, last tid, file size and transaction count of a FileStorage file."""
    check_filestorage(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        end, tid, count = committed_end(fd, 4, size)
    finally:
        os.close(fd)
    return {'end': end, 'tid': tid, 'file_size': size, 'transactions': count}


def open_read_only(path, blob_dir=None):
    """A read-only FileStorage: never locks, never truncates, never writes an index."""
    from ZODB.FileStorage import FileStorage
    kwargs = {'read_only': True}
    if blob_dir:
        kwargs['blob_dir'] = blob_dir
    return FileStorage(path, **kwargs)


# --------------------------------------------------------------------------- locks and servers


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


def parse_zeo_address(address):
    """``'host:port'`` -> (host, port); ``'/path/zeo.sock'`` -> the path (a unix socket)."""
    text = str(address).strip()
    if text.startswith('/') or text.startswith('.'):
        return text
    host, sep, port = text.rpartition(':')
    if not sep or not port.isdigit():
        raise ZODBDataError('%r is not a ZEO address: use "host:port" or the path of a unix '
                            'socket.' % (address,))
    return (host.strip('[]') or '127.0.0.1', int(port))


def zeo_answers(address, timeout=2.0):
    """True if something accepts connections at the ZEO address."""
    parsed = parse_zeo_address(address)
    if isinstance(parsed, str):
        family, target = socket.AF_UNIX, parsed
    else:
        family, target = (socket.AF_INET6 if ':' in parsed[0] else socket.AF_INET), parsed
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError:
            return False
    return True


def open_zeo(address, storage='1', read_only=False, timeout=30.0, blob_dir=None):
    """A connected ZEO ClientStorage, or ZODBDataError saying which address did not answer."""
    try:
        from ZEO.ClientStorage import ClientStorage
    except ImportError as exc:
        raise ZODBDataError('ZEO is not importable by %s (%s): run the module with the release '
                            'virtualenv\'s python.' % (sys.executable, exc)) from None
    parsed = parse_zeo_address(address)
    kwargs = {'storage': storage, 'read_only': read_only, 'wait_timeout': timeout}
    if blob_dir:
        kwargs['blob_dir'] = blob_dir
    try:
        return ClientStorage(parsed, **kwargs)
    except Exception as exc:  # ZEO raises ClientDisconnected, socket errors, timeouts
        raise ZODBDataError(
            'Could not connect to the ZEO server at %s (storage %r) within %.0fs: %s. Check that '
            'it runs and that the address and storage name match its zeo.conf.'
            % (address, storage, timeout, exc)) from None


# --------------------------------------------------------------------------- copying


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


# --------------------------------------------------------------------------- packed copies
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


# md5 is the default the design names; sha1 costs less CPU where the CPU has SHA extensions
# (2.5x faster than md5 on the sandbox), which matters when the copy competes for CPU.
CHECKSUMS = ('md5', 'sha1', 'sha256')


def checksum_of(manifest):
    algorithm = manifest.get('checksum') or 'md5'
    if algorithm not in CHECKSUMS:
        raise ZODBDataError('unknown checksum %r in the manifest (known: %s)'
                            % (algorithm, ', '.join(CHECKSUMS)))
    return algorithm


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


def range_spans(entry):
    """The hashed spans of a manifest range entry (format 1: the entry is its own span)."""
    if isinstance(entry, dict) and 'spans' in entry:
        return entry['spans']
    return [entry]


def range_verify(entry):
    """``full`` if every byte of the range entry was hashed, else ``spans``."""
    if isinstance(entry, dict) and 'spans' in entry:
        return entry.get('verify') if entry.get('verify') in VERIFY_MODES else 'spans'
    return 'full'


def manifest_verify(manifest):
    """``full`` if every range of the manifest was hashed in full, else ``spans``."""
    ranges = manifest.get('ranges')
    if isinstance(ranges, list) and ranges and all(range_verify(e) == 'full' for e in ranges):
        return 'full'
    return 'spans'


def last_span(manifest):
    """The last hashed span of the manifest: the tail of the snapshot file, or None."""
    if not manifest.get('ranges'):
        return None
    spans = range_spans(manifest['ranges'][-1])
    return spans[-1] if spans else None


def hashed_bytes(manifest):
    """Bytes covered by the manifest's hashed spans (0 for a malformed manifest; what is wrong
    with it is for ``verify_data_against_manifest`` to report)."""
    try:
        return sum(span['end'] - span['start'] for entry in manifest.get('ranges') or []
                   for span in range_spans(entry))
    except (KeyError, TypeError):
        return 0


def range_problems(manifest, size, algorithm):
    """Problems with the manifest's range list itself: gaps, malformed entries, spans that do
    not cover a range's head and tail (or all of it, when it claims ``full``)."""
    covered = 0
    for entry in manifest['ranges']:
        if not isinstance(entry, dict) or not {'start', 'end'} <= set(entry):
            return ['the manifest has a malformed range entry %r' % (entry,)]
        if entry['start'] != covered:
            return ['the manifest ranges leave a gap at byte %d' % covered]
        spans = range_spans(entry)
        if not isinstance(spans, list) or not spans:
            return ['the manifest range [%d, %d) lists no hashed spans'
                    % (entry['start'], entry['end'])]
        at = entry['start']
        for span in spans:
            if not isinstance(span, dict) or not {'start', 'end', algorithm} <= set(span):
                return ['the manifest has a malformed range entry %r' % (entry,)]
            if not at <= span['start'] < span['end'] <= entry['end'] or (
                    range_verify(entry) == 'full' and span['start'] != at):
                return ['the manifest range [%d, %d) has a misplaced span [%d, %d)' % (
                    entry['start'], entry['end'], span['start'], span['end'])]
            at = span['end']
        if spans[0]['start'] != entry['start'] or spans[-1]['end'] != entry['end']:
            return ['the hashed spans of the manifest range [%d, %d) miss its head or tail' % (
                entry['start'], entry['end'])]
        covered = entry['end']
    if covered != size:
        return ['the manifest ranges cover %d bytes, not %d' % (covered, size)]
    return []


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


# --------------------------------------------------------------------------- blobs


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


# --------------------------------------------------------------------------- manifests


def manifest_path(snapshot_dir):
    return os.path.join(snapshot_dir, MANIFEST_NAME)


def read_manifest(snapshot_dir):
    """The snapshot's manifest dict, or None if it has none; ZODBDataError if unreadable."""
    path = manifest_path(snapshot_dir)
    try:
        with open(path, encoding='utf-8') as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ZODBDataError('The snapshot manifest %s cannot be read: %s. Take the snapshot '
                            'again.' % (path, exc)) from None
    missing = [key for key in ('size', 'tid', 'ranges') if key not in manifest]
    if missing or not isinstance(manifest.get('ranges'), list):
        raise ZODBDataError('The snapshot manifest %s lacks %s. Take the snapshot again.'
                            % (path, ', '.join(missing) or 'a list of ranges'))
    try:
        hex_to_tid(manifest['tid'])
        int(manifest['size'])
    except (TypeError, ValueError) as exc:
        raise ZODBDataError('The snapshot manifest %s is damaged (%s). Take the snapshot '
                            'again.' % (path, exc)) from None
    return manifest


def write_json_atomic(path, data):
    tmp = '%s.tmp-%d' % (path, os.getpid())
    with open(tmp, 'w', encoding='utf-8') as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write('\n')
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or '.')


def write_manifest(snapshot_dir, manifest):
    manifest = dict(manifest)
    manifest.setdefault('format', MANIFEST_FORMAT)
    write_json_atomic(manifest_path(snapshot_dir), manifest)
    return manifest


def verify_data_against_manifest(data_path, manifest, hashes=True):
    """Problems (a list of sentences) found comparing a Data.fs with a manifest; [] if none.

    Checks: magic FS30, file size equals the manifest size, the committed end is the whole file
    and its last tid is the manifest tid, and (``hashes``) the checksum of every span the
    manifest records: every byte for ranges taken with ``verify: full``, the head and tail
    spans for ranges taken with ``verify: spans``.
    """
    problems = []
    try:
        algorithm = checksum_of(manifest)
    except ZODBDataError as exc:
        return [str(exc)]
    if not os.path.isfile(data_path):
        return ['%s does not exist' % data_path]
    if read_magic(data_path) != MAGIC:
        return ['%s does not start with the FileStorage magic %r' % (data_path, MAGIC)]
    fd = os.open(data_path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size != manifest['size']:
            problems.append('%s is %d bytes, the manifest says %d' % (
                data_path, size, manifest['size']))
            return problems
        end, tid, _count = committed_end(fd, 4, size)
        if end != size:
            problems.append('%s has committed data only up to byte %d of %d' % (
                data_path, end, size))
        if tid_to_hex(tid) != manifest['tid']:
            problems.append('the last transaction of %s is %s, the manifest says %s' % (
                data_path, tid_to_hex(tid), manifest['tid']))
        malformed = range_problems(manifest, size, algorithm)
        if malformed:
            return problems + malformed
        if hashes and not problems:
            spans = [span for entry in manifest['ranges'] for span in range_spans(entry)]
            with ThreadPoolExecutor(max_workers=2) as pool:
                digests = list(pool.map(
                    lambda s: digest_of_range(fd, s['start'], s['end'], algorithm), spans))
            for span, digest in zip(spans, digests):
                if digest != span[algorithm]:
                    problems.append('bytes [%d, %d) of %s have %s %s, the manifest says %s' % (
                        span['start'], span['end'], data_path, algorithm, digest,
                        span[algorithm]))
    finally:
        os.close(fd)
    return problems


def run_fstest(python, data_path, timeout=3600):
    """Run ``python -m ZODB.scripts.fstest <path>`` (argv list); return (ok, output)."""
    import subprocess
    proc = subprocess.run([python, '-m', 'ZODB.scripts.fstest', data_path],
                          capture_output=True, text=True, timeout=timeout, check=False)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


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
