"""Unit tests of module_utils/zodb.py: tids, the FileStorage header walk, locks, copies."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import struct
from types import SimpleNamespace

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_format as zfmt
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_copy as zcopy
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_manifest as zman
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_blobs as zblob
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_locks as zlock
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_zeo as zzeo


def txn(tid_int, payload=b'', status=b' '):
    """One FileStorage transaction record with no data records (ext holds the payload)."""
    tid = struct.pack('>Q', tid_int)
    body = payload
    tlen = zfmt.TXN_HEADER_LEN + len(body)
    return zfmt.TXN_HEADER.pack(tid, tlen, status, 0, 0, len(body)) + body + struct.pack('>Q', tlen)


def write_fs(path, records):
    with open(path, 'wb') as handle:
        handle.write(zfmt.MAGIC + b''.join(records))
    return path


def test_tid_hex_round_trip():
    tid = bytes.fromhex('03ea4b2c11223344')
    assert zfmt.tid_to_hex(tid) == '03ea4b2c11223344'
    assert zfmt.hex_to_tid('03ea4b2c11223344') == tid
    assert zfmt.hex_to_tid('0x3EA4B2C11223344') == tid
    assert zfmt.tid_to_hex(None) is None
    for bad in ('', 'xyz', '1' * 17):
        with pytest.raises(ValueError):
            zfmt.hex_to_tid(bad)
    assert zfmt.int_to_tid(zfmt.tid_to_int(tid)) == tid
    assert zfmt.tid_to_iso(zfmt.Z64) is None


def test_tid_to_iso_is_the_commit_time():
    from persistent.timestamp import TimeStamp
    tid = TimeStamp(2026, 11, 26, 10, 55, 30.0).raw()
    assert zfmt.tid_to_iso(tid).startswith('2026-11-26T10:55:30')


def test_committed_end_stops_at_open_or_torn_transactions(tmp_path):
    records = [txn(1, b'a' * 10), txn(2, b'b' * 20), txn(3, b'c' * 5)]
    path = write_fs(str(tmp_path / 'Data.fs'), records)
    full = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert zfmt.committed_end(fd) == (full, struct.pack('>Q', 3), 3)
        second_end = 4 + len(records[0]) + len(records[1])
        assert zfmt.txn_header_before(fd, second_end)[0] == struct.pack('>Q', 2)
        assert zfmt.committed_end(fd, second_end) == (full, struct.pack('>Q', 3), 1)
    finally:
        os.close(fd)
    write_fs(path, records[:2] + [txn(3, b'c' * 5, status=b'c')])
    assert zfmt.storage_state(path)['end'] == second_end
    write_fs(path, records[:2] + [txn(3, b'c' * 5)[:-3]])
    assert zfmt.storage_state(path)['tid'] == struct.pack('>Q', 2)
    write_fs(path, [])
    assert zfmt.storage_state(path) == {'end': 4, 'tid': None, 'file_size': 4, 'transactions': 0}


def test_check_filestorage_names_the_problem(tmp_path):
    with pytest.raises(zu.ZODBDataError, match='does not exist'):
        zfmt.check_filestorage(str(tmp_path / 'missing'))
    (tmp_path / 'x').write_bytes(b'FS21....')
    with pytest.raises(zu.ZODBDataError, match="not a ZODB FileStorage"):
        zfmt.check_filestorage(str(tmp_path / 'x'))


def test_lock_holder(tmp_path):
    path = str(tmp_path / 'Data.fs')
    assert zlock.lock_holder(path) is None          # no lock file: not locked, none created
    assert not os.path.exists(path + '.lock')
    with open(path + '.lock', 'w') as handle:
        handle.write(' 4242 somehost\n')
        handle.flush()
        assert zlock.lock_holder(path) is None      # exists, nobody holds it
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        # a second open file description conflicts with this flock, as a ZEO server's would
        assert zlock.lock_holder(path) == '4242 somehost'
        with pytest.raises(zu.ZODBDataError, match='locked'):
            zlock.refuse_if_locked(path, 'pack')


def test_parse_zeo_address():
    assert zzeo.parse_zeo_address('127.0.0.1:8100') == ('127.0.0.1', 8100)
    assert zzeo.parse_zeo_address(':8100') == ('127.0.0.1', 8100)
    assert zzeo.parse_zeo_address('/run/zeo.sock') == '/run/zeo.sock'
    with pytest.raises(zu.ZODBDataError, match='not a ZEO address'):
        zzeo.parse_zeo_address('localhost')
    assert zzeo.zeo_answers('127.0.0.1:1', timeout=0.5) is False


def test_copy_and_hash_matches_and_appends(tmp_path):
    src = tmp_path / 'src'
    src.write_bytes(os.urandom(300000))
    dst = str(tmp_path / 'dst')
    entry = zcopy.copy_and_hash(str(src), dst, 0, 200000, verify='full')
    assert open(dst, 'rb').read() == src.read_bytes()[:200000]
    assert entry == {'start': 0, 'end': 200000, 'verify': 'full',
                     'spans': zcopy.hash_pieces(str(src), 0, 200000)}
    # an interrupted refresh left junk after 200000: truncate_to drops it before appending
    with open(dst, 'ab') as handle:
        handle.write(b'junk')
    more = zcopy.copy_and_hash(str(src), dst, 200000, 300000, truncate_to=200000,
                               span_bytes=4096)
    assert open(dst, 'rb').read() == src.read_bytes()
    assert (more['start'], more['end'], more['verify']) == (200000, 300000, 'spans')
    assert [(s['start'], s['end']) for s in more['spans']] == [(200000, 204096),
                                                               (295904, 300000)]
    assert more['spans'][1]['md5'] == hashlib.md5(src.read_bytes()[295904:]).hexdigest()


def test_spans_of():
    assert zcopy.spans_of(0, 100, 'spans', 10) == [(0, 10), (90, 100)]
    assert zcopy.spans_of(0, 20, 'spans', 10) == [(0, 20)]        # small: hashed whole
    assert zcopy.spans_of(5, 5, 'spans', 10) == []
    assert zcopy.spans_of(0, 100, 'full', 10) == [(0, 100)]
    big = 3 * zcopy.HASH_PIECE_BYTES
    assert len(zcopy.spans_of(0, big, 'full')) == 3
    assert zcopy.spans_of(0, big, 'spans') == [(0, zcopy.DEFAULT_SPAN_BYTES),
                                               (big - zcopy.DEFAULT_SPAN_BYTES, big)]
    with pytest.raises(zu.ZODBDataError, match='verify'):
        zcopy.spans_of(0, 10, 'some')
    with pytest.raises(zu.ZODBDataError, match='span_bytes'):
        zcopy.spans_of(0, 10, 'spans', 0)


def _snapshot_like(tmp_path, verify, span_bytes=64, count=40):
    """A small FileStorage and its manifest hashed with ``verify`` (one copied range)."""
    src = write_fs(str(tmp_path / 'src.fs'), [txn(i, b'p%03d' % i * 20) for i in range(1, count)])
    folder = tmp_path / ('snap-' + verify)
    folder.mkdir()
    data = str(folder / 'Data.fs')
    size = os.path.getsize(src)
    entry = zcopy.copy_and_hash(src, data, 0, size, verify=verify, span_bytes=span_bytes)
    manifest = zman.write_manifest(str(folder), {
        'size': size, 'tid': zfmt.tid_to_hex(struct.pack('>Q', count - 1)), 'ranges': [entry],
        'checksum': 'md5'})
    return data, manifest


def _flip(path, offset):
    with open(path, 'r+b') as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


def _payload_offset(path, near):
    """An offset inside a transaction's payload (not a header), at or after ``near``."""
    data = open(path, 'rb').read()
    return data.index(b'p0', near) + 1


def test_spans_detect_truncation_head_and_tail_changes(tmp_path):
    data, manifest = _snapshot_like(tmp_path, 'spans')
    size = manifest['size']
    assert [(s['start'], s['end']) for s in manifest['ranges'][0]['spans']] == [
        (0, 64), (size - 64, size)]
    assert zman.manifest_verify(manifest) == 'spans' and zman.hashed_bytes(manifest) == 128
    assert zman.verify_data_against_manifest(data, manifest) == []
    original = open(data, 'rb').read()
    # changed tail (inside the last transaction's payload)
    _flip(data, _payload_offset(data, size - 60))
    problems = zman.verify_data_against_manifest(data, manifest)
    assert any('bytes [%d, %d)' % (size - 64, size) in p and 'md5' in p for p in problems)
    # changed head (inside the first transaction's payload)
    open(data, 'wb').write(original)
    _flip(data, _payload_offset(data, 4))
    problems = zman.verify_data_against_manifest(data, manifest)
    assert any('bytes [0, 64)' in p for p in problems), problems
    # truncated
    open(data, 'wb').write(original[:-10])
    assert 'the manifest says %d' % size in zman.verify_data_against_manifest(data, manifest)[0]


def test_a_flipped_middle_byte_full_detects_and_spans_do_not(tmp_path):
    """The documented limit of verify: spans: damage between the head and tail spans."""
    full_data, full_manifest = _snapshot_like(tmp_path, 'full')
    spans_data, spans_manifest = _snapshot_like(tmp_path, 'spans')
    size = full_manifest['size']
    middle = _payload_offset(full_data, size // 2)
    assert 64 < middle < size - 64
    for path in (full_data, spans_data):
        _flip(path, middle)
    assert any('md5' in p for p in zman.verify_data_against_manifest(full_data, full_manifest))
    assert zman.verify_data_against_manifest(spans_data, spans_manifest) == []  # not detected


def test_format_1_manifests_still_verify(tmp_path):
    data, manifest = _snapshot_like(tmp_path, 'full')
    old = dict(manifest, format=1, ranges=zcopy.hash_pieces(data, 0, manifest['size']))
    assert zman.range_verify(old['ranges'][0]) == 'full' and zman.manifest_verify(old) == 'full'
    assert zman.last_span(old)['end'] == old['size']
    assert zman.verify_data_against_manifest(data, old) == []
    _flip(data, _payload_offset(data, old['size'] // 2))
    assert any('md5' in p for p in zman.verify_data_against_manifest(data, old))


def test_manifest_spans_must_cover_head_and_tail(tmp_path):
    data, manifest = _snapshot_like(tmp_path, 'spans')
    entry = manifest['ranges'][0]
    no_tail = dict(manifest, ranges=[dict(entry, spans=entry['spans'][:1])])
    assert 'miss its head or tail' in zman.verify_data_against_manifest(data, no_tail)[0]
    lying = dict(manifest, ranges=[dict(entry, verify='full')])
    assert 'misplaced span' in zman.verify_data_against_manifest(data, lying)[0]
    outside = dict(manifest, ranges=[dict(entry, spans=entry['spans'] + [
        dict(entry['spans'][-1], start=manifest['size'], end=manifest['size'] + 5)])])
    assert 'misplaced span' in zman.verify_data_against_manifest(data, outside)[0]
    empty = dict(manifest, ranges=[dict(entry, spans=[])])
    assert 'no hashed spans' in zman.verify_data_against_manifest(data, empty)[0]


def test_copy_range_falls_back_to_sendfile(tmp_path, monkeypatch):
    def no_cfr(*_args):
        raise OSError(errno.EXDEV, 'cross-device')
    monkeypatch.setattr(os, 'copy_file_range', no_cfr)
    src = tmp_path / 'src'
    src.write_bytes(b'0123456789' * 1000)
    dst = str(tmp_path / 'dst')
    zcopy.copy_and_hash(str(src), dst, 0, 10000)
    assert open(dst, 'rb').read() == src.read_bytes()


def test_pieces_split_big_ranges():
    assert zcopy.pieces_of(0, 10, piece=4) == [(0, 4), (4, 8), (8, 10)]


def test_require_free_uses_statvfs(tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'statvfs', lambda _p: SimpleNamespace(f_bavail=10, f_frsize=100))
    assert zcopy.require_free(str(tmp_path / 'new' / 'dir'), 900, 0, 'copy') == 1000
    with pytest.raises(zu.ZODBDataError, match='Not enough free disk space') as info:
        zcopy.require_free(str(tmp_path), 900, 200, 'copy the thing')
    assert 'copy the thing' in str(info.value) and 'nothing was changed' in str(info.value)


def test_manifest_read_write_and_verify(tmp_path):
    path = write_fs(str(tmp_path / 'Data.fs'), [txn(7, b'x' * 50)])
    assert zman.read_manifest(str(tmp_path)) is None
    size = os.path.getsize(path)
    manifest = zman.write_manifest(str(tmp_path), {
        'size': size, 'tid': zfmt.tid_to_hex(struct.pack('>Q', 7)),
        'ranges': [zcopy.copy_and_hash(path, str(tmp_path / 'copy.fs'), 0, size)]})
    assert zman.read_manifest(str(tmp_path)) == manifest
    assert manifest['format'] == zman.MANIFEST_FORMAT
    assert zman.verify_data_against_manifest(path, manifest) == []
    wrong = dict(manifest, tid='0000000000000008')
    assert any('last transaction' in p for p in zman.verify_data_against_manifest(path, wrong))
    wrong = dict(manifest, size=size + 1)
    assert any('manifest says' in p for p in zman.verify_data_against_manifest(path, wrong))
    broken = dict(manifest, ranges=[{'start': 0}])
    assert 'malformed' in zman.verify_data_against_manifest(path, broken)[0]
    assert zman.hashed_bytes(broken) == 0 and zman.manifest_verify(broken) == 'full'
    assert zman.hashed_bytes(dict(manifest, ranges=[{'spans': [{'end': 3}]}])) == 0
    (tmp_path / 'manifest.json').write_text(json.dumps(dict(manifest, tid='nothex')))
    with pytest.raises(zu.ZODBDataError, match='damaged'):
        zman.read_manifest(str(tmp_path))
    (tmp_path / 'manifest.json').write_text(json.dumps({'size': 1}))
    with pytest.raises(zu.ZODBDataError, match='lacks'):
        zman.read_manifest(str(tmp_path))
    (tmp_path / 'manifest.json').write_text('{broken')
    with pytest.raises(zu.ZODBDataError, match='cannot be read'):
        zman.read_manifest(str(tmp_path))


def test_committed_blobs_skips_tmp_and_later_tids(tmp_path):
    base = tmp_path / 'blobs'
    (base / '0x00' / '0x01').mkdir(parents=True)
    (base / 'tmp').mkdir()
    (base / '.layout').write_text('bushy')
    (base / '0x00' / '0x01' / '0x03e8.blob').write_bytes(b'old')
    (base / '0x00' / '0x01' / '0x03e9.blob').write_bytes(b'newer')
    (base / 'tmp' / '0x01.blob').write_bytes(b'upload')
    found = zblob.committed_blobs(str(base), struct.pack('>Q', 0x3e8))
    assert found == [(os.path.join('0x00', '0x01', '0x03e8.blob'), 3)]
    out = tmp_path / 'copy'
    assert zblob.copy_blobs(str(base), str(out), found, link=True) == (0, 1, 0)
    assert (out / '.layout').read_text() == 'bushy'
    assert zblob.copy_blobs(str(base), str(out), found, link=False) == (0, 0, 0)  # already there


def test_import_zodb_failure_names_the_interpreter(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith('ZODB'):
            raise ImportError('No module named ZODB')
        return real_import(name, *args, **kwargs)

    failures = []

    class Module:
        def fail_json(self, **kwargs):
            failures.append(kwargs)
            raise SystemExit(1)

    monkeypatch.setattr(builtins, '__import__', fake_import)
    with pytest.raises(SystemExit):
        zu.import_zodb(Module())
    import sys
    assert sys.executable in failures[0]['msg']
    assert 'ansible_python_interpreter' in failures[0]['msg']


def test_ownership_modes_and_refusals(tmp_path):
    from ansible_collections.zopeops.stages.plugins.module_utils.files import (
        Ownership, OwnershipError)
    alone = Ownership()
    assert (alone.uid, alone.gid, alone.file_mode, alone.dir_mode) == (-1, -1, 0o600, 0o700)
    shared = Ownership(group='0')
    assert (shared.gid, shared.file_mode, shared.dir_mode) == (0, 0o640, 0o750)
    assert Ownership(file_mode='0644').dir_mode == 0o755
    assert Ownership(file_mode=0o400).dir_mode == 0o500
    with pytest.raises(OwnershipError, match='file_mode is 0o1777'):
        Ownership(file_mode='1777')
    # A read-only file (a committed blob) stays read-only; check mode changes nothing.
    blob = tmp_path / 'x.blob'
    blob.write_bytes(b'blob')
    blob.chmod(0o444)
    tmp_path.chmod(0o755)
    assert alone.apply(str(blob), check=True) is True and (blob.stat().st_mode & 0o777) == 0o444
    assert alone.apply_tree(str(tmp_path)) == 2
    assert (blob.stat().st_mode & 0o777) == 0o400 and (tmp_path.stat().st_mode & 0o777) == 0o700
    assert alone.apply_tree(str(tmp_path)) == 0
    assert alone.apply_tree(str(tmp_path / 'missing')) == 0
