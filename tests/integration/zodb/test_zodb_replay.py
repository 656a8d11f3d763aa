"""zodb_replay: catch a target up with what its source committed after a snapshot."""
from __future__ import annotations


import pytest

from support.modules import run_module
from zodbdata import fstest, md5, read_root, write_transactions

pytestmark = pytest.mark.integration


@pytest.fixture
def installed(storage_factory, tmp_path):
    """A source, a snapshot of it installed on a target, then more commits on the source."""
    data, blobs = storage_factory('source', count=10, blobs_every=3)
    snapshot = tmp_path / 'snapshot'
    taken = run_module('zodb_snapshot', {'path': data, 'blob_dir': blobs, 'dest': str(snapshot)})
    target_dir = tmp_path / 'target'
    target = str(target_dir / 'filestorage' / 'Data.fs')
    target_blobs = str(target_dir / 'blobstorage')
    done = run_module('zodb_restore', {'snapshot': str(snapshot), 'path': target,
                                       'blob_dir': target_blobs})
    assert done['rc'] == 0, done
    write_transactions(data, blobs, count=6, start=200, blobs_every=2)
    args = {'source': data, 'source_blob_dir': blobs, 'after_manifest': str(snapshot),
            'path': target, 'blob_dir': target_blobs}
    return taken, args


def test_replay_offline_with_blobs_then_idempotent(installed):
    taken, args = installed
    before = md5(args['path'])
    checked = run_module('zodb_replay', args, check=True)
    assert checked['rc'] == 0, checked
    assert checked['changed'] and checked['transactions_replayed'] == 6
    assert md5(args['path']) == before

    result = run_module('zodb_replay', args)
    assert result['rc'] == 0, result
    assert result['transactions_replayed'] == 6 and result['blobs_replayed'] == 3
    assert result['after_tid'] == taken['tid']
    source_tid, source_n, source_blobs = read_root(args['source'], args['source_blob_dir'])
    target_tid, target_n, target_blobs = read_root(args['path'], args['blob_dir'])
    assert result['last_tid'] == result['target_last_tid'] == source_tid.hex()
    assert (target_tid, target_n, target_blobs) == (source_tid, source_n, source_blobs)
    assert fstest(args['path'])[0] == 0

    again = run_module('zodb_replay', args)
    assert again['rc'] == 0 and again['changed'] is False
    assert again['resumed_after'] == source_tid.hex()

    # more on the source: the next run resumes after what the target already has
    write_transactions(args['source'], args['source_blob_dir'], count=2, start=400)
    more = run_module('zodb_replay', args)
    assert more['transactions_replayed'] == 2 and more['resumed_after'] == source_tid.hex()


def test_replay_refuses_a_diverged_target(installed):
    _taken, args = installed
    write_transactions(args['path'], args['blob_dir'], count=1, start=999)
    before = md5(args['path'])
    result = run_module('zodb_replay', args)
    assert result.get('failed'), result
    assert 'diverged' in result['msg'] and args['path'] in result['msg']
    assert md5(args['path']) == before


def test_replay_refuses_a_target_behind_and_a_locked_target(installed, zeo_factory):
    _taken, args = installed
    behind = {k: v for k, v in args.items() if k != 'after_manifest'}
    result = run_module('zodb_replay', dict(behind, after_tid='7' * 16))
    assert result.get('failed') and 'older than' in result['msg']
    zeo = zeo_factory(args['path'], args['blob_dir'])
    result = run_module('zodb_replay', args)
    assert result.get('failed') and 'locked' in result['msg']
    # online, the new transactions store blobs, which ZEO cannot restore: refused up front
    online = {k: v for k, v in args.items() if k not in ('path', 'blob_dir')}
    online['zeo_address'] = zeo.address
    result = run_module('zodb_replay', online)
    assert result.get('failed') and 'ZEO clients cannot restore blobs' in result['msg']


def test_replay_online_without_blobs(storage_factory, zeo_factory, tmp_path):
    data, _blobs = storage_factory('source', count=5, blobs_every=0)
    snapshot = tmp_path / 'snap'
    run_module('zodb_snapshot', {'path': data, 'dest': str(snapshot)})
    target = str(tmp_path / 'target' / 'Data.fs')
    assert run_module('zodb_restore', {'snapshot': str(snapshot), 'path': target})['changed']
    write_transactions(data, count=4, start=50)
    zeo = zeo_factory(target)
    result = run_module('zodb_replay', {'source': data, 'after_manifest': str(snapshot),
                                        'zeo_address': zeo.address})
    assert result['rc'] == 0, result
    assert result['transactions_replayed'] == 4
    zeo.stop()
    assert read_root(target)[:2] == read_root(data)[:2]
