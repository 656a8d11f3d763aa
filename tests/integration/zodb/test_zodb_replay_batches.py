"""zodb_replay through ZEO sends several transactions per round trip (OnlineWriter): the edges
of its windows (a blob inside a window, the not_after deadline between two transactions, an
empty range) and a target that conflicts half way, where the target must keep a prefix."""
from __future__ import annotations

import os
import time
import types

import pytest

from support.modules import run_module, run_module_in_process
from zodbdata import fstest, read_root, write_transactions

from ansible_collections.zopeops.stages.plugins.module_utils import zodb_replay_core
from ansible_collections.zopeops.stages.plugins.modules import zodb_replay

pytestmark = pytest.mark.integration


def tids_after(path, after):
    from ZODB.FileStorage import FileIterator
    iterator = FileIterator(path, start=(int.from_bytes(after, 'big') + 1).to_bytes(8, 'big'))
    try:
        return [txn.tid.hex() for txn in iterator]
    finally:
        iterator.close()


@pytest.fixture
def online(storage_factory, zeo_factory, tmp_path):
    """A source with 6 new transactions (blobs in every other one) and a target, a copy of the
    source before them, served by a real runzeo."""
    import shutil
    data, blobs = storage_factory('source', count=4, blobs_every=2)
    target_dir = tmp_path / 'target'
    target_dir.mkdir()
    target, target_blobs = str(target_dir / 'Data.fs'), str(target_dir / 'blobs')
    shutil.copyfile(data, target)
    shutil.copytree(blobs, target_blobs)
    after = read_root(data, blobs)[0]
    write_transactions(data, blobs, count=6, start=100, blobs_every=2)
    zeo = zeo_factory(target, target_blobs)
    args = {'source': data, 'source_blob_dir': blobs, 'after_tid': after.hex(),
            'zeo_address': zeo.address}
    return types.SimpleNamespace(args=args, zeo=zeo, target=target, target_blobs=target_blobs,
                                 tids=tids_after(data, after), after=after.hex())


class DeadlineAfter:
    """``time`` for the module, whose clock passes ``not_after`` at the n-th look."""

    def __init__(self, looks):
        self.looks = looks

    def time(self):
        self.looks -= 1
        return time.time() + (0 if self.looks >= 0 else 10**6)

    def __getattr__(self, name):
        return getattr(time, name)


def test_windows_span_blobs_not_after_cuts_between_two_and_an_empty_range_writes_nothing(
        online, monkeypatch, capsys):
    # windows of 4: the first one holds two blob transactions; the fifth one's blob file is
    # missing, so it fails before it is sent, and the four before it are taken
    monkeypatch.setattr(zodb_replay_core, 'WINDOW_TRANSACTIONS', 4)
    from ZODB.blob import FilesystemHelper, is_blob_record
    from ZODB.FileStorage import FileIterator
    iterator = FileIterator(online.args['source'], start=bytes.fromhex(online.tids[4]))
    record = [record for record in next(iterator) if is_blob_record(record.data)][0]
    iterator.close()
    helper = FilesystemHelper(online.args['source_blob_dir'])
    blob = helper.getBlobFilename(record.oid, record.tid)
    os.rename(blob, blob + '.away')
    missing = run_module_in_process(zodb_replay, online.args, monkeypatch, capsys)
    os.rename(blob + '.away', blob)
    assert missing['rc'] == 1 and 'is missing' in missing['msg'], missing
    assert 'transaction %s' % online.tids[4] in missing['msg']
    assert 'target_tid %s' % online.tids[3] in missing['msg']

    # the deadline passes after the fifth transaction is begun: it is finished, the sixth is
    # not begun
    monkeypatch.setattr(zodb_replay_core, 'time', DeadlineAfter(1))
    cut = run_module_in_process(zodb_replay, dict(online.args, after_tid=online.tids[3],
                                                  not_after=time.time() + 600),
                                monkeypatch, capsys)
    assert cut['rc'] == 1 and 'not_after' in cut['msg'], cut
    assert 'before transaction %s' % online.tids[5] in cut['msg']
    assert 'up to %s' % online.tids[4] in cut['msg']

    monkeypatch.setattr(zodb_replay_core, 'time', time)
    monkeypatch.setattr(zodb_replay_core, 'WINDOW_BYTES', 1)  # every transaction its own window
    # going on from the wrong place is refused (its first transaction meets the target's
    # newer revision), going on from the tid the error named works
    wrong = run_module_in_process(zodb_replay, dict(online.args, target_tid=online.tids[4]),
                                  monkeypatch, capsys)
    assert wrong['rc'] == 1 and 'ReadConflictError' in wrong['msg'], wrong
    assert 'up to %s' % online.tids[4] in wrong['msg']
    rest = run_module_in_process(zodb_replay, dict(online.args, after_tid=online.tids[4]),
                                 monkeypatch, capsys)
    assert rest['rc'] == 0 and rest['transactions'] == 1, rest
    last = online.tids[-1]
    for empty_range in ({'after_tid': last}, {'after_tid': last, 'until_tid': last}):
        empty = run_module_in_process(zodb_replay, dict(online.args, **empty_range),
                                      monkeypatch, capsys)
        assert empty['rc'] == 0 and empty['changed'] is False, empty
        assert empty['transactions'] == 0 and empty['target_tid_before'] == last
        assert 'Nothing to copy' in empty['msg']
    assert rest['last_tid'] == online.tids[-1]
    online.zeo.stop()
    assert read_root(online.target, online.target_blobs) == read_root(
        online.args['source'], online.args['source_blob_dir'])
    assert fstest(online.target)[0] == 0


def test_a_target_that_conflicts_half_way_keeps_a_prefix(storage_factory, zeo_factory,
                                                         tmp_path):
    """The fourth transaction meets an object the target changed itself: it fails, and so do
    the two sent after it although they touch nothing the target changed (each proves the one
    before it), so the target holds the first three, not a tail with a hole."""
    import shutil

    import ZODB
    from persistent.mapping import PersistentMapping
    from ZODB.FileStorage import FileStorage
    data, blobs = storage_factory('source', count=1, blobs_every=0)

    def commit(path, change):
        db = ZODB.DB(FileStorage(path))
        try:
            with db.transaction() as conn:
                change(conn.root())
        finally:
            db.close()
    commit(data, lambda root: root.update(a=PersistentMapping(), b=PersistentMapping()))
    target = str(tmp_path / 'target.fs')
    shutil.copyfile(data, target)
    after = read_root(data)[0]
    commit(target, lambda root: root['b'].update(own=True))  # the target's own write
    own = read_root(target)[0].hex()
    for key in ('a', 'a', 'a', 'b', 'a', 'a'):
        commit(data, lambda root, key=key: root[key].update(x=root[key].get('x', 0) + 1))
    tids = tids_after(data, after)
    zeo = zeo_factory(target)
    result = run_module('zodb_replay', {'source': data, 'after_tid': after.hex(),
                                        'target_tid': own, 'zeo_address': zeo.address})
    assert result.get('failed'), result
    assert 'transaction %s' % tids[3] in result['msg'] and 'ReadConflictError' in result['msg']
    assert 'up to %s' % tids[2] in result['msg'] and 'target_tid %s' % tids[2] in result['msg']
    db = zeo.db()
    try:
        assert db.storage._call('lastTransaction').hex() == tids[2]
        with db.transaction() as conn:
            root = conn.root()
            assert root['a']['x'] == 3 and root['b'] == {'own': True}  # the first three only
    finally:
        db.close()
        zeo.stop()
    assert fstest(target)[0] == 0
