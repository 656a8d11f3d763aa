"""zodb_replay's passes: the catch-up has settled when a pass copies at most ``settle``
transactions, and also when the source got nothing new during the last pass."""
from __future__ import annotations

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils import zodb_replay_core as zodb_replay


class FakeTarget:
    where = 'the ZEO server at 127.0.0.1:1'

    def __init__(self, params, read_only):
        pass

    def last_tid(self):
        return (1).to_bytes(8, 'big')

    def close(self):
        pass


def run(monkeypatch, tails, passes=6, settle=5):
    """Replay with plan_tail answering ``tails`` (transaction counts) one pass after another."""
    tid = [1]

    def plan_tail(source, after, until):
        count = tails.pop(0) if tails else 0
        tail = []
        for _n in range(count):
            tid[0] += 1
            tail.append((tid[0].to_bytes(8, 'big'), 0, 10))
        return tail

    def replay_tail(params, source, tail, target, result, base):
        result.update(transactions=len(tail), blobs=0, bytes=0,
                      last_tid=zodb_replay.zfmt.tid_to_hex(tail[-1][0]))

    monkeypatch.setattr(zodb_replay.zfmt, 'check_filestorage', lambda *a: None)
    monkeypatch.setattr(zodb_replay, 'plan_tail', plan_tail)
    monkeypatch.setattr(zodb_replay, 'replay_tail', replay_tail)
    monkeypatch.setattr(zodb_replay, 'Target', FakeTarget)
    params = zodb_replay.replay_params(source='/s/Data.fs', after_tid='0000000000000001',
                                       zeo_address='127.0.0.1:1', source_blob_dir='/s/blobs',
                                       passes=passes, settle=settle)
    result = {}
    zodb_replay.replay(params, False, result)
    return result


@pytest.mark.parametrize('tails, passes, settled', [
    ([40, 12, 3], 3, True),      # the third pass copied at most settle
    ([40, 12, 0], 2, True),      # nothing arrived during the second pass
    ([40, 12, 9, 8, 7, 6], 6, False),   # still more than settle after every pass
])
def test_settled(monkeypatch, tails, passes, settled):
    result = run(monkeypatch, list(tails))
    assert (result['passes'], result['settled']) == (passes, settled)
    assert result['transactions'] == sum(tails[:passes])
