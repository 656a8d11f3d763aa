"""zodb_pack against real FileStorages and a real runzeo."""
from __future__ import annotations

import os

import pytest

from support.modules import run_module
from zodbdata import md5, read_root

pytestmark = pytest.mark.integration


def test_offline_pack_frees_garbage_and_is_idempotent(storage_factory):
    data, blobs = storage_factory(count=40, garbage=True)
    tid_before, n_before, blobs_before = read_root(data, blobs)
    checked = run_module('zodb_pack', {'path': data, 'blob_dir': blobs}, check=True)
    assert checked['changed'] is True and 'Would pack' in checked['msg']
    assert not os.path.exists(data + '.old')

    packed = run_module('zodb_pack', {'path': data, 'blob_dir': blobs})
    assert packed['rc'] == 0, packed
    assert packed['changed'] is True
    assert packed['bytes_freed'] > 0
    assert packed['size_after'] == os.path.getsize(data)
    assert packed['last_tid_before'] == packed['last_tid_after'] == tid_before.hex()
    assert not os.path.exists(data + '.old')  # keep_old false
    assert read_root(data, blobs) == (tid_before, n_before, blobs_before)

    again = run_module('zodb_pack', {'path': data, 'blob_dir': blobs})
    assert again['changed'] is False and again['bytes_freed'] == 0
    checked = run_module('zodb_pack', {'path': data, 'blob_dir': blobs}, check=True)
    assert checked['changed'] is False and 'already packed' in checked['msg']


def test_check_mode_and_keep_old(storage_factory):
    data, blobs = storage_factory(count=20, garbage=True)
    digest = md5(data)
    run_module('zodb_pack', {'path': data, 'blob_dir': blobs}, check=True)
    assert md5(data) == digest
    packed = run_module('zodb_pack', {'path': data, 'blob_dir': blobs, 'keep_old': True,
                                      'days': 0})
    assert packed['changed'] is True
    assert md5(data + '.old') == digest


def test_offline_pack_refuses_a_storage_locked_by_runzeo(storage_factory, zeo_factory):
    data, blobs = storage_factory(count=10, garbage=True)
    zeo = zeo_factory(data, blobs)
    size = os.path.getsize(data)
    result = run_module('zodb_pack', {'path': data, 'blob_dir': blobs})
    assert result.get('failed') and result['rc'] != 0
    assert 'locked' in result['msg'] and data in result['msg'] and 'Stop' in result['msg']
    assert os.path.getsize(data) == size
    assert not os.path.exists(data + '.old')
    # online through the same server works
    online = run_module('zodb_pack', {'zeo_address': zeo.address})
    assert online['rc'] == 0, online
    assert online['mode'] == 'online' and online['bytes_freed'] > 0 and online['changed']
    assert os.path.getsize(data) < size


def test_online_pack_refuses_gc_false_and_missing_server(storage_factory):
    result = run_module('zodb_pack', {'zeo_address': '127.0.0.1:1', 'gc': False})
    assert result.get('failed') and 'pack-gc' in result['msg']
    result = run_module('zodb_pack', {'zeo_address': '127.0.0.1:1', 'zeo_timeout': 1})
    assert result.get('failed') and '127.0.0.1:1' in result['msg']


def test_pack_refuses_what_is_not_a_filestorage(tmp_path):
    bogus = tmp_path / 'Data.fs'
    bogus.write_bytes(b'hello world')
    result = run_module('zodb_pack', {'path': str(bogus)})
    assert result.get('failed') and 'not a ZODB FileStorage' in result['msg']
    result = run_module('zodb_pack', {'path': str(tmp_path / 'missing.fs')})
    assert result.get('failed') and 'does not exist' in result['msg']
    assert not (tmp_path / 'missing.fs').exists()
