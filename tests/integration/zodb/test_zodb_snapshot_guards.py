"""zodb_snapshot and zodb_pack guards, run in process so that a test can step in between:
a source replaced after the plan, a copy whose headers disagree, a pack during a snapshot,
a full disk."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils import zodb_copy as zcopy
from ansible_collections.zopeops.stages.plugins.modules import zodb_pack, zodb_snapshot
from support.modules import run_module, run_module_in_process, start_module
from zodbdata import fstest, md5, write_transactions

pytestmark = pytest.mark.integration


def snapshot(monkeypatch, capsys, data, blobs, dest, **extra):
    args = {'path': data, 'blob_dir': blobs, 'dest': str(dest)}
    args.update(extra)
    return run_module_in_process(zodb_snapshot, args, monkeypatch, capsys)


@pytest.mark.parametrize('pack', [False, True])
def test_source_replaced_between_plan_and_copy_is_refused(storage_factory, tmp_path,
                                                          monkeypatch, capsys, pack):
    data, blobs = storage_factory(count=10, blobs_every=3, garbage=True)
    (tmp_path / 'other').mkdir()
    other = str(tmp_path / 'other' / 'Data.fs')
    write_transactions(other, count=3)
    monkeypatch.setattr(zodb_snapshot, 'between_plan_and_copy',
                        lambda plan: os.replace(other, data))
    dest = tmp_path / 'snap'
    result = snapshot(monkeypatch, capsys, data, blobs, dest, pack=pack)
    assert result['rc'] == 1 and result['failed'], result
    assert 'was replaced while the snapshot was planned' in result['msg']
    assert data in result['msg'] and 'Nothing was written' in result['msg']
    assert not dest.exists()
    assert sorted(os.listdir(tmp_path)) == ['other', 'src']  # nothing half-built beside dest


def test_source_replaced_before_a_refresh_keeps_the_snapshot(storage_factory, tmp_path,
                                                             monkeypatch, capsys):
    data, blobs = storage_factory(count=10, blobs_every=3)
    dest = tmp_path / 'snap'
    assert snapshot(monkeypatch, capsys, data, blobs, dest)['rc'] == 0
    manifest, copied = (dest / 'manifest.json').read_text(), md5(str(dest / 'Data.fs'))
    write_transactions(data, blobs, count=3, start=100)
    other = str(tmp_path / 'other.fs')
    write_transactions(other, count=2)
    monkeypatch.setattr(zodb_snapshot, 'between_plan_and_copy',
                        lambda plan: os.replace(other, data))
    result = snapshot(monkeypatch, capsys, data, blobs, dest)
    assert result['failed'] and 'was replaced' in result['msg'], result
    assert result['mode_used'] == 'incremental'
    assert (dest / 'manifest.json').read_text() == manifest
    assert md5(str(dest / 'Data.fs')) == copied


def test_a_copy_whose_headers_disagree_gets_no_manifest(storage_factory, tmp_path,
                                                        monkeypatch, capsys):
    data, blobs = storage_factory(count=10, blobs_every=3)
    real_copy = zcopy.copy_and_hash

    def damaging_copy(source, dst_path, start, end, **kwargs):
        entry = real_copy(source, dst_path, start, end, **kwargs)
        with open(dst_path, 'r+b') as handle:  # the last transaction's status: in progress
            handle.seek(-8, 2)
            tlen = int.from_bytes(handle.read(8), 'big')
            handle.seek(end - 8 - tlen + 16)
            handle.write(b'c')
        return entry

    monkeypatch.setattr(zcopy, 'copy_and_hash', damaging_copy)
    dest = tmp_path / 'snap'
    result = snapshot(monkeypatch, capsys, data, blobs, dest)
    assert result['failed'] and 'does not hold what was written' in result['msg'], result
    assert 'manifest was not written' in result['msg']
    assert not dest.exists() and sorted(os.listdir(tmp_path)) == ['src']

    # a refresh that goes wrong the same way is cut back to what its manifest says
    monkeypatch.setattr(zcopy, 'copy_and_hash', real_copy)
    assert snapshot(monkeypatch, capsys, data, blobs, dest)['rc'] == 0
    manifest, copied = (dest / 'manifest.json').read_text(), md5(str(dest / 'Data.fs'))
    write_transactions(data, blobs, count=3, start=100)
    monkeypatch.setattr(zcopy, 'copy_and_hash', damaging_copy)
    result = snapshot(monkeypatch, capsys, data, blobs, dest)
    assert result['failed'] and result['mode_used'] == 'incremental', result
    assert (dest / 'manifest.json').read_text() == manifest
    assert md5(str(dest / 'Data.fs')) == copied


def holds_open(pid, path):
    """Whether process ``pid`` has ``path`` open (it is polling that lock)."""
    folder = '/proc/%d/fd' % pid
    with contextlib.suppress(OSError):
        return any(os.readlink(os.path.join(folder, fd)) == path for fd in os.listdir(folder))
    return False


def test_a_pack_waits_for_a_snapshot_of_its_file(storage_factory, tmp_path, monkeypatch,
                                                 capsys):
    data, blobs = storage_factory(count=30, blobs_every=3, garbage=True)
    during = {}

    def pack_now(plan):
        # the snapshot holds <path>.pack.lock: a pack that will not wait is refused...
        during['refused'] = run_module('zodb_pack', {'path': data, 'blob_dir': blobs,
                                                     'lock_timeout': 0.5})
        # ...and one that waits is held until the snapshot is done
        started = start_module('zodb_pack', {'path': data, 'blob_dir': blobs,
                                             'lock_timeout': 120})
        during['waiting'] = started
        deadline = time.monotonic() + 60
        while not holds_open(started.proc.pid, data + '.pack.lock'):
            assert started.proc.poll() is None, started.result()
            assert time.monotonic() < deadline, 'the pack never reached the lock'
            time.sleep(0.05)
        time.sleep(0.5)
        during['pack_running'] = started.proc.poll() is None
        during['size'] = os.path.getsize(data)

    monkeypatch.setattr(zodb_snapshot, 'between_plan_and_copy', pack_now)
    dest = tmp_path / 'snap'
    result = snapshot(monkeypatch, capsys, data, blobs, dest)
    assert result['rc'] == 0, result
    refused = during['refused']
    assert refused['failed'] and data + '.pack.lock' in refused['msg'], refused
    assert 'a snapshot' in refused['msg'] and 'lock_timeout' in refused['msg']
    assert during['pack_running'] and during['size'] == result['size']  # it waited
    packed = during['waiting'].result()
    assert packed['rc'] == 0 and packed['changed'], packed
    code, output = fstest(str(dest / 'Data.fs'))
    assert code == 0, output
    assert os.path.getsize(data) < result['size']


@contextlib.contextmanager
def small_filesystem(path, size='2m'):
    os.makedirs(path)
    try:
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s' % size, 'tmpfs', str(path)],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip('cannot mount a tmpfs here: %s' % exc)
    try:
        yield path
    finally:
        subprocess.run(['umount', '--lazy', str(path)], check=True)


def test_a_full_disk_is_a_clear_failure(storage_factory, tmp_path, monkeypatch, capsys):
    data = str(tmp_path / 'src' / 'Data.fs')
    os.makedirs(os.path.dirname(data))
    write_transactions(data, count=300, payload=10000)
    assert os.path.getsize(data) > 3 * 1024 * 1024
    # the free-space check would refuse before writing: let the write itself hit ENOSPC
    monkeypatch.setattr(zcopy, 'free_bytes', lambda path: 1 << 50)
    with small_filesystem(tmp_path / 'small'):
        for pack in (False, True):
            dest = tmp_path / 'small' / 'snap'
            result = snapshot(monkeypatch, capsys, data, None, dest, pack=pack)
            assert result['rc'] == 1 and result['failed'], result
            assert 'ENOSPC' in result['msg'] and 'is full' in result['msg'], result['msg']
            assert str(dest) in result['msg'] and 'Traceback' not in result['msg']
            assert os.listdir(tmp_path / 'small') == []  # the half-built snapshot is gone

        # zodb_pack on a full filesystem: fails clearly, the storage stays as it was
        packable = str(tmp_path / 'src' / 'packable.fs')
        write_transactions(packable, count=25, payload=3000, garbage=True)
        assert os.path.getsize(packable) < 1536 * 1024
        small = str(tmp_path / 'small' / 'Data.fs')
        shutil.copyfile(packable, small)
        filler = os.open(str(tmp_path / 'small' / 'filler'), os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(filler, b'\0' * 4096)
        os.close(filler)
        digest = md5(small)
        result = run_module_in_process(zodb_pack, {'path': small}, monkeypatch, capsys)
        assert result['rc'] == 1 and 'ENOSPC' in result['msg'], result
        assert small in result['msg'] and 'as it was' in result['msg']
        assert md5(small) == digest
        assert not os.path.exists(small + '.pack')
