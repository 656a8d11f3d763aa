# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The FileStorage format: tids and the transaction header walk.

The format facts used here (ZODB 6, ``FS30``):
  file     = magic b'FS30' + transaction*
  txn      = header (tid 8s, tlen Q, status c, ulen H, dlen H, elen H) + ... + tlen (Q)
             so a transaction spans ``[tpos, tpos + tlen + 8)``; ``status`` is ``'c'`` while
             the transaction is being committed, ``' '`` / ``'p'`` / ``'u'`` afterwards.
FileStorage only appends (except pack), so ``[0, committed_end)`` of a live file never changes.
Walking only the transaction headers finds that end in O(transactions) instead of the
O(records) a full read-only ``FileStorage`` open needs to build its oid index; it applies the
same stop rules as ``ZODB.FileStorage.read_index`` (status ``'c'``, short or torn tail).

The collection's one tid normaliser is ``normalize_tid`` (``readiness`` uses it too).
"""
from __future__ import annotations

import binascii
import datetime
import os
import struct

from ansible_collections.zopeops.stages.plugins.module_utils.zodb import ZODBDataError


MAGIC = b'FS30'


TXN_HEADER = struct.Struct('>8sQcHHH')


TXN_HEADER_LEN = TXN_HEADER.size  # 23


# oid, tid, prev (position of the previous revision), tloc, vlen, plen: ZODB's DATA_HDR
DATA_HEADER = struct.Struct('>8s8sQQHQ')


DATA_HEADER_LEN = DATA_HEADER.size  # 42


Z64 = b'\0' * 8


def tid_to_hex(tid):
    """8-byte tid -> 16 lower-case hex digits (``None`` stays ``None``)."""
    if tid is None:
        return None
    if len(tid) != 8:
        raise ValueError('a tid is 8 bytes, got %d' % len(tid))
    return binascii.hexlify(tid).decode('ascii')


def normalize_tid(tid):
    """'0x03ABC...' / '03abc...' -> 16 lower-case hex digits; ValueError naming the bad value."""
    text = str(tid).strip().lower()
    if text.startswith('0x'):
        text = text[2:]
    if not text or len(text) > 16 or any(c not in '0123456789abcdef' for c in text):
        raise ValueError('%r is not a transaction id (up to 16 hex digits)' % (tid,))
    return text.rjust(16, '0')


def hex_to_tid(text):
    """``'03ea...'`` / ``'0x3ea...'`` -> 8-byte tid; ValueError naming the bad value."""
    return binascii.unhexlify(normalize_tid(text))


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


def run_fstest(python, data_path, timeout=3600):
    """Run ``python -m ZODB.scripts.fstest <path>`` (argv list); return (ok, output)."""
    import subprocess
    proc = subprocess.run([python, '-m', 'ZODB.scripts.fstest', data_path],
                          capture_output=True, text=True, timeout=timeout, check=False)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()
