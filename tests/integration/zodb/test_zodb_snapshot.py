"""zodb_snapshot against real FileStorages, also while a real runzeo takes writes."""
from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import time

import pytest

from support.modules import run_module
from zodbdata import fstest, read_root, write_transactions

pytestmark = pytest.mark.integration


def snap(data, blobs, dest, check=False, **extra):
    args = {'path': data, 'blob_dir': blobs, 'dest': str(dest)}
    args.update(extra)
    result = run_module('zodb_snapshot', args, check=check)
    return result


def assert_consistent(dest):
    """The snapshot opens, passes fstest, and holds exactly what its manifest says."""
    manifest = json.loads((dest / 'manifest.json').read_text())
    data = str(dest / 'Data.fs')
    assert os.path.getsize(data) == manifest['size']
    code, output = fstest(data)
    assert code == 0, output
    tid, _n, blobs = read_root(data, str(dest / 'blobs'))
    assert tid.hex() == manifest['tid']
    return manifest, blobs


def test_full_unchanged_incremental_and_check_mode(storage_factory, tmp_path):
    data, blobs = storage_factory(count=30, blobs_every=3)
    dest = tmp_path / 'snapshots' / 'current'
    checked = snap(data, blobs, dest, check=True)
    assert checked['changed'] and checked['mode_used'] == 'full'
    assert not dest.exists()

    first = snap(data, blobs, dest)
    assert first['rc'] == 0, first
    assert first['mode_used'] == 'full' and first['fallback_reason'] is None
    assert first['bytes_copied'] == first['size'] == os.path.getsize(data)
    assert first['blobs_copied'] == 10 and first['blobs_linked'] == 10
    manifest, blob_contents = assert_consistent(dest)
    assert len(blob_contents) == 10 and manifest['blob_count'] == 10
    assert manifest['source_path'] == data

    again = snap(data, blobs, dest)
    assert again['changed'] is False and again['mode_used'] == 'unchanged'

    write_transactions(data, blobs, count=5, start=100, blobs_every=2)
    checked = snap(data, blobs, dest, check=True)
    assert checked['mode_used'] == 'incremental' and checked['changed']
    assert json.loads((dest / 'manifest.json').read_text()) == manifest
    inc = snap(data, blobs, dest, blob_link=False)
    assert inc['mode_used'] == 'incremental', inc
    assert inc['bytes_copied'] == os.path.getsize(data) - first['size']
    assert inc['blobs_copied'] == 3 and inc['blobs_linked'] == 0
    manifest, blob_contents = assert_consistent(dest)
    assert len(blob_contents) == 13 and manifest['size'] == os.path.getsize(data)


@pytest.mark.slow
def test_snapshots_under_concurrent_writes_through_live_zeo(storage_factory, zeo_factory,
                                                            tmp_path):
    data, blobs = storage_factory(count=5, blobs_every=2)
    zeo = zeo_factory(data, blobs)
    db = zeo.db(blob_dir=str(tmp_path / 'client-blobs'))
    stop = threading.Event()
    committed = []
    errors = []

    def writer():
        import transaction
        from ZODB.blob import Blob
        i = 1000
        try:
            while not stop.is_set():
                with db.transaction() as conn:
                    root = conn.root()
                    root['n'] = i
                    root['items'][i] = os.urandom(2000).hex()
                    if i % 4 == 0:
                        blob = Blob()
                        with blob.open('w') as handle:
                            handle.write(os.urandom(3000))
                        root['blob-%d' % i] = blob
                committed.append(i)
                i += 1
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    results = []
    try:
        time.sleep(0.3)
        for number in range(4):
            dest = tmp_path / ('snap-%d' % (number % 2))
            result = snap(data, blobs, dest)
            assert result['rc'] == 0, result
            results.append(result['mode_used'])
            manifest, _blob_contents = assert_consistent(dest)
            assert manifest['tid'] == result['tid']
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
        db.close()
    assert not errors, errors
    assert len(committed) > 10
    assert results[:2] == ['full', 'full'] and set(results[2:]) <= {'incremental', 'unchanged'}
    # a final snapshot after the writer stopped holds the last commit
    final = tmp_path / 'snap-final'
    snap(data, blobs, final)
    _tid, n, _blobs = read_root(str(final / 'Data.fs'), str(final / 'blobs'))
    assert n == committed[-1]


def _last_txn_span(path):
    with open(path, 'rb') as handle:
        handle.seek(-8, 2)
        tlen = struct.unpack('>Q', handle.read(8))[0]
        size = handle.tell()
        return size - 8 - tlen, size


def test_truncated_and_uncommitted_tail_is_left_out(storage_factory, tmp_path):
    data, blobs = storage_factory(count=10, blobs_every=0)
    tpos, end = _last_txn_span(data)
    complete = read_root(data)[0].hex()
    # A tail that stops mid-transaction: the snapshot ends before that transaction.
    torn = str(tmp_path / 'torn.fs')
    shutil.copyfile(data, torn)
    with open(data, 'rb') as src, open(torn, 'ab') as out:
        src.seek(tpos)
        out.write(src.read((end - tpos) // 2))
    result = snap(torn, None, tmp_path / 'snap-torn')
    assert result['rc'] == 0, result
    assert result['size'] == end and result['tid'] == complete
    # the header walk agrees with what a read-only FileStorage open reports
    from ZODB.FileStorage import FileStorage
    read_only = FileStorage(torn, read_only=True)
    try:
        assert (read_only.getSize(), read_only.lastTransaction().hex()) == (end, complete)
    finally:
        read_only.close()
    assert_consistent(tmp_path / 'snap-torn')
    # A last transaction still marked 'c' (being committed): left out as well.
    open_txn = str(tmp_path / 'open.fs')
    shutil.copyfile(data, open_txn)
    with open(open_txn, 'r+b') as handle:
        handle.seek(tpos + 16)
        handle.write(b'c')
    result = snap(open_txn, None, tmp_path / 'snap-open')
    assert result['size'] == tpos
    assert_consistent(tmp_path / 'snap-open')
    assert os.path.getsize(open_txn) == end  # the source was not touched


def test_source_packed_between_refreshes_falls_back_to_full(storage_factory, tmp_path):
    data, blobs = storage_factory(count=30, blobs_every=5, garbage=True)
    dest = tmp_path / 'snap'
    assert snap(data, blobs, dest)['mode_used'] == 'full'
    packed = run_module('zodb_pack', {'path': data, 'blob_dir': blobs})
    assert packed['changed']
    write_transactions(data, blobs, count=3, start=500)
    result = snap(data, blobs, dest)
    assert result['mode_used'] == 'full'
    assert 'packed' in result['fallback_reason']
    assert_consistent(dest)
    forced = snap(data, blobs, dest, mode='full')
    assert forced['mode_used'] == 'full' and forced['fallback_reason'] == 'mode is full'


def test_not_enough_disk_changes_nothing(storage_factory, tmp_path):
    data, blobs = storage_factory(count=10)
    dest = tmp_path / 'snap'
    first = snap(data, blobs, dest)
    manifest_before = (dest / 'manifest.json').read_text()
    write_transactions(data, blobs, count=3, start=300)
    result = snap(data, blobs, dest, mode='full', reserve_bytes=1 << 60)
    assert result.get('failed'), result
    assert 'Not enough free disk space' in result['msg'] and str(dest) in result['msg']
    assert (dest / 'manifest.json').read_text() == manifest_before
    assert os.path.getsize(dest / 'Data.fs') == first['size']
    assert sorted(os.listdir(tmp_path)) == ['snap', 'src']


def test_missing_or_foreign_source_writes_nothing(tmp_path):
    dest = tmp_path / 'snap'
    result = snap(str(tmp_path / 'nope.fs'), None, dest)
    assert result.get('failed') and 'does not exist' in result['msg']
    foreign = tmp_path / 'foreign.fs'
    foreign.write_bytes(b'FS21' + b'\0' * 100)
    result = snap(str(foreign), None, dest)
    assert result.get('failed') and 'not a ZODB FileStorage' in result['msg']
    assert not dest.exists()
    # a non-empty directory that is no snapshot is not replaced
    dest.mkdir()
    (dest / 'precious.txt').write_text('keep me')
    data = str(tmp_path / 'Data.fs')
    write_transactions(data, count=2)
    result = snap(data, None, dest)
    assert result.get('failed') and 'not empty' in result['msg']
    assert (dest / 'precious.txt').read_text() == 'keep me'


def test_sha1_checksum_snapshot_installs_and_switching_refreshes_in_full(storage_factory,
                                                                         tmp_path):
    data, blobs = storage_factory(count=8, blobs_every=4)
    dest = tmp_path / 'snap'
    first = snap(data, blobs, dest, checksum='sha1')
    manifest = json.loads((dest / 'manifest.json').read_text())
    assert manifest['checksum'] == 'sha1' and 'sha1' in manifest['ranges'][0]['spans'][0]
    write_transactions(data, blobs, count=2, start=70)
    assert snap(data, blobs, dest, checksum='sha1')['mode_used'] == 'incremental'
    target = str(tmp_path / 'target' / 'Data.fs')
    installed = run_module('zodb_restore', {'snapshot': str(dest), 'keep_snapshot': True,
                                            'path': target,
                                            'blob_dir': str(tmp_path / 'target' / 'blobs')})
    assert installed['rc'] == 0 and installed['changed'], installed
    switched = snap(data, blobs, dest)
    assert switched['mode_used'] == 'full' and 'checksum' in switched['fallback_reason']
    assert first['tid'] != switched['tid']


def test_default_verify_spans_records_head_and_tail_of_each_range(storage_factory, tmp_path):
    data, blobs = storage_factory(count=20, blobs_every=5)
    dest = tmp_path / 'snap'
    first = snap(data, blobs, dest, span_bytes=512)
    assert first['rc'] == 0, first
    assert first['verify'] == 'spans' and first['bytes_hashed'] == 1024
    manifest, _blobs = assert_consistent(dest)
    assert manifest['format'] == 2 and manifest['verify'] == 'spans'
    assert manifest['span_bytes'] == 512
    (only,) = manifest['ranges']
    assert only['verify'] == 'spans' and (only['start'], only['end']) == (0, first['size'])
    assert [(s['start'], s['end']) for s in only['spans']] == [
        (0, 512), (first['size'] - 512, first['size'])]
    write_transactions(data, blobs, count=5, start=200, blobs_every=2)
    inc = snap(data, blobs, dest, span_bytes=512)
    assert inc['mode_used'] == 'incremental' and inc['bytes_hashed'] == 1024, inc
    manifest, _blobs = assert_consistent(dest)
    assert [(r['start'], r['end'], r['verify']) for r in manifest['ranges']] == [
        (0, first['size'], 'spans'), (first['size'], inc['size'], 'spans')]
    # the default span (1 MiB) covers these small files whole: every byte is hashed
    whole = snap(data, blobs, tmp_path / 'snap-default')
    assert whole['verify'] == 'full' and whole['bytes_hashed'] == whole['size']
    bad = snap(data, blobs, tmp_path / 'snap-bad', span_bytes=0)
    assert bad.get('failed') and 'span_bytes' in bad['msg']


def test_incremental_refresh_across_verify_modes(storage_factory, tmp_path):
    data, blobs = storage_factory(count=20, blobs_every=5)
    dest = tmp_path / 'snap'
    full = snap(data, blobs, dest, verify='full', span_bytes=256)
    assert full['verify'] == 'full' and full['bytes_hashed'] == full['size']
    # spans extend a full snapshot: the old range keeps its full hashes
    write_transactions(data, blobs, count=6, start=300, blobs_every=3)
    spans = snap(data, blobs, dest, span_bytes=256)
    assert spans['mode_used'] == 'incremental' and spans['fallback_reason'] is None, spans
    assert spans['verify'] == 'spans'
    manifest, _blobs = assert_consistent(dest)
    assert [r['verify'] for r in manifest['ranges']] == ['full', 'spans']
    assert manifest['verify'] == 'spans'
    target = tmp_path / 'target'
    restored = run_module('zodb_restore', {'snapshot': str(dest), 'keep_snapshot': True,
                                           'path': str(target / 'Data.fs'),
                                           'blob_dir': str(target / 'blobs')})
    assert restored['rc'] == 0 and restored['changed'], restored
    assert restored['verify'] == 'spans'
    assert restored['bytes_verified'] == full['size'] + 512
    # full cannot vouch for a snapshot hashed only in spans: it takes a full snapshot, says why
    write_transactions(data, blobs, count=6, start=400)
    again = snap(data, blobs, dest, verify='full', span_bytes=256)
    assert again['mode_used'] == 'full', again
    assert 'verify: full' in again['fallback_reason']
    manifest, _blobs = assert_consistent(dest)
    assert manifest['verify'] == 'full' and [r['verify'] for r in manifest['ranges']] == ['full']
    # full onto full refreshes incrementally
    write_transactions(data, blobs, count=2, start=500)
    more = snap(data, blobs, dest, verify='full')
    assert more['mode_used'] == 'incremental' and more['verify'] == 'full', more


def test_format_1_snapshot_refreshes_incrementally_and_installs(storage_factory, tmp_path):
    """A snapshot taken before verify existed (ranges = fully hashed pieces) still works."""
    from ansible_collections.zopeops.stages.plugins.module_utils import zodb_copy as zcopy
    data, blobs = storage_factory(count=10, blobs_every=5)
    dest = tmp_path / 'snap'
    first = snap(data, blobs, dest, verify='full')
    manifest = json.loads((dest / 'manifest.json').read_text())
    manifest.update(format=1, ranges=zcopy.hash_pieces(str(dest / 'Data.fs'), 0, first['size']))
    manifest.pop('verify')
    (dest / 'manifest.json').write_text(json.dumps(manifest))
    write_transactions(data, blobs, count=3, start=100)
    inc = snap(data, blobs, dest, span_bytes=128)
    assert inc['mode_used'] == 'incremental', inc
    manifest, _blobs = assert_consistent(dest)
    assert manifest['format'] == 2 and 'spans' not in manifest['ranges'][0]
    restored = run_module('zodb_restore', {'snapshot': str(dest), 'keep_snapshot': True,
                                           'path': str(tmp_path / 'target' / 'Data.fs'),
                                           'blob_dir': str(tmp_path / 'target' / 'blobs')})
    assert restored['rc'] == 0 and restored['changed'], restored
