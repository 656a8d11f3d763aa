"""zodb_snapshot with pack: true, a packed copy written in one pass from the live source."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from support.modules import run_module
from zodbdata import churn_blobs, current_objects, fstest, md5, read_root, write_transactions

pytestmark = pytest.mark.integration


def snap(data, blobs, dest, check=False, **extra):
    args = {'path': data, 'blob_dir': blobs, 'dest': str(dest), 'pack': True}
    args.update(extra)
    return run_module('zodb_snapshot', args, check=check)


def blob_files(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _dirs, names in os.walk(folder) for name in names
                  if name.endswith('.blob'))


def test_packed_snapshot_keeps_every_current_object_and_drops_garbage(storage_factory,
                                                                      tmp_path):
    data, blobs = storage_factory(count=40, blobs_every=3, garbage=True)
    dropped = churn_blobs(data, blobs)
    source_md5, source_size = md5(data), os.path.getsize(data)
    source_tid = read_root(data, blobs)[0].hex()
    dest = tmp_path / 'snap'

    checked = snap(data, blobs, dest, check=True)
    assert checked['changed'] and checked['packed'] and checked['mode_used'] == 'full', checked
    assert checked['snapshot_tid'] == source_tid and checked['source_size'] == source_size
    assert not dest.exists()

    result = snap(data, blobs, dest, verify='full')
    assert result['rc'] == 0, result
    assert result['changed'] and result['packed'] and result['pack_time']
    assert result['snapshot_tid'] == source_tid and result['source_size'] == source_size
    assert result['tid'] <= result['snapshot_tid']
    assert result['size'] == result['bytes_copied'] == os.path.getsize(dest / 'Data.fs')
    assert result['size'] < source_size / 2
    assert md5(data) == source_md5  # the source was only read
    assert not os.path.exists(os.path.join(blobs, '.removed'))
    assert not os.path.exists(data + '.pack')

    manifest = json.loads((dest / 'manifest.json').read_text())
    for key in ('tid', 'snapshot_tid', 'transactions', 'size', 'source_size', 'blob_count'):
        assert manifest[key] == result[key], key
    assert manifest['packed']['days'] == 0 and manifest['packed']['source_size'] == source_size
    assert manifest['verify'] == 'full'
    code, output = fstest(str(dest / 'Data.fs'))
    assert code == 0, output

    # every object reachable in the source is in the copy, with the same data and blob
    assert current_objects(str(dest / 'Data.fs'), str(dest / 'blobs')) == \
        current_objects(data, blobs)
    # fewer transactions: those holding only old revisions and garbage are gone
    source_transactions = run_module('zodb_snapshot', {
        'path': data, 'dest': str(tmp_path / 'plain')})['transactions']
    assert 0 < result['transactions'] < source_transactions
    # blobs: the current ones are there, the old revision and the dropped one are not
    kept, source_files = blob_files(dest / 'blobs'), blob_files(blobs)
    assert len(kept) == result['blob_count'] == len(source_files) - 2
    assert set(kept) < set(source_files)
    assert dropped not in read_root(str(dest / 'Data.fs'), str(dest / 'blobs'))[2]

    # a copy then a separate offline pack writes the very same bytes
    copy = tmp_path / 'copy' / 'Data.fs'
    copy.parent.mkdir()
    shutil.copyfile(data, copy)
    shutil.copytree(blobs, tmp_path / 'copy' / 'blobs')
    packed = run_module('zodb_pack', {'path': str(copy), 'blob_dir': str(tmp_path / 'copy' /
                                                                         'blobs')})
    assert packed['changed'], packed
    assert md5(str(copy)) == md5(str(dest / 'Data.fs'))
    assert blob_files(tmp_path / 'copy' / 'blobs') == kept

    # installed as any snapshot
    target = tmp_path / 'target'
    installed = run_module('zodb_restore', {'snapshot': str(dest), 'keep_snapshot': True,
                                            'path': str(target / 'Data.fs'),
                                            'blob_dir': str(target / 'blobs'), 'fstest': True})
    assert installed['rc'] == 0 and installed['changed'], installed
    assert installed['tid'] == result['tid']
    assert read_root(str(target / 'Data.fs'), str(target / 'blobs'))[1:] == \
        read_root(data, blobs)[1:]


def test_packed_snapshot_is_idempotent_and_retaken_after_new_writes(storage_factory, tmp_path):
    data, blobs = storage_factory(count=20, blobs_every=4, garbage=True)
    dest = tmp_path / 'snap'
    first = snap(data, blobs, dest)
    assert first['rc'] == 0 and first['changed'], first
    again = snap(data, blobs, dest)
    assert again['changed'] is False and again['mode_used'] == 'unchanged', again
    for key in ('tid', 'snapshot_tid', 'size', 'transactions', 'blob_count', 'packed'):
        assert again[key] == first[key], key
    assert snap(data, blobs, dest, check=True)['changed'] is False

    write_transactions(data, blobs, count=3, start=900, blobs_every=1)
    retaken = snap(data, blobs, dest)
    assert retaken['changed'] and retaken['mode_used'] == 'full', retaken
    assert 'new transactions' in retaken['fallback_reason']
    assert retaken['snapshot_tid'] > first['snapshot_tid']
    assert retaken['blob_count'] == first['blob_count'] + 3
    # without pack, a packed snapshot is no prefix of the source: taken in full, says why
    plain = run_module('zodb_snapshot', {'path': data, 'blob_dir': blobs, 'dest': str(dest)})
    assert plain['mode_used'] == 'full' and 'packed' in plain['fallback_reason'], plain
    assert plain['packed'] is False and plain['tid'] == plain['snapshot_tid']


def test_pack_days_keeps_the_history_after_the_pack_time(storage_factory, tmp_path):
    data, blobs = storage_factory(count=15, blobs_every=5, garbage=True)
    plain = run_module('zodb_snapshot', {'path': data, 'blob_dir': blobs,
                                         'dest': str(tmp_path / 'plain')})
    kept = snap(data, blobs, tmp_path / 'snap', pack_days=1)
    assert kept['rc'] == 0, kept
    # all of it is younger than a day before the snapshot: every transaction stays
    assert kept['transactions'] == plain['transactions']
    assert kept['tid'] == kept['snapshot_tid'] == plain['tid']
    code, output = fstest(str(tmp_path / 'snap' / 'Data.fs'))
    assert code == 0, output
    assert read_root(str(tmp_path / 'snap' / 'Data.fs'), str(tmp_path / 'snap' / 'blobs')) == \
        read_root(data, blobs)
    bad = snap(data, blobs, tmp_path / 'bad', pack_days=-1)
    assert bad.get('failed') and 'pack_days' in bad['msg']


def test_packed_snapshot_of_a_live_source(storage_factory, zeo_factory, tmp_path):
    """ZEO serves and takes writes; the packed copy is of the committed range only."""
    data, blobs = storage_factory(count=10, blobs_every=2, garbage=True)
    zeo = zeo_factory(data, blobs)
    db = zeo.db(blob_dir=str(tmp_path / 'client-blobs'))
    try:
        result = snap(data, blobs, tmp_path / 'snap')
        assert result['rc'] == 0, result
        with db.transaction() as conn:
            conn.root()['n'] = 'after'
    finally:
        db.close()
        zeo.stop()
    code, output = fstest(str(tmp_path / 'snap' / 'Data.fs'))
    assert code == 0, output
    assert read_root(str(tmp_path / 'snap' / 'Data.fs'), str(tmp_path / 'snap' / 'blobs'))[1] == 9
