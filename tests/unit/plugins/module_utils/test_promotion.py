"""The promotion's lock, claims and state: atomic, exactly one winner, nothing lost."""
from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils.promotion import (
    PromotionRefused, acquire, append_ledger, phase_durations, read_owner, read_state, release,
    start_state, update_state)


def owner(run_id, action='run'):
    return {'run_id': run_id, 'owner': 'alice', 'action': action, 'started_at': 'now'}


def test_lock_is_exclusive_and_names_its_owner(tmp_path):
    acquire(str(tmp_path), 'test', owner('r1'))
    with pytest.raises(PromotionRefused) as refused:
        acquire(str(tmp_path), 'test', owner('r2'))
    assert 'r1' in str(refused.value) and 'alice' in str(refused.value)
    assert refused.value.holder['kind'] == 'lock'
    assert read_owner(str(tmp_path), 'test')['run_id'] == 'r1'


def _race(state_dir, stage, run_id, claims, barrier, results):
    barrier.wait()
    try:
        acquire(state_dir, stage, owner(run_id), claims=claims)
        results.put((run_id, 'won'))
    except PromotionRefused as exc:
        results.put((run_id, 'refused: %s' % exc))


@pytest.mark.parametrize('contenders', [
    # two runs of one stage
    [('test', 'a', []), ('test', 'b', [])],
    # a promotion of beta against a promotion of test that reads beta's data
    [('beta', 'a', ['dev']), ('test', 'b', ['beta'])],
])
def test_of_two_racing_runs_exactly_one_proceeds(tmp_path, contenders):
    for attempt in range(20):
        state_dir = str(tmp_path / str(attempt))
        barrier = multiprocessing.Barrier(len(contenders))
        results = multiprocessing.Queue()
        procs = [multiprocessing.Process(target=_race, args=(state_dir, stage, run_id, claims,
                                                             barrier, results))
                 for stage, run_id, claims in contenders]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(30)
        outcomes = dict(results.get(timeout=5) for _proc in procs)
        assert sorted(v == 'won' for v in outcomes.values()) == [False, True], outcomes


def test_a_claimed_stage_cannot_be_locked_and_a_locked_source_cannot_be_claimed(tmp_path):
    acquire(str(tmp_path), 'test', owner('t1'), claims=['beta'])
    with pytest.raises(PromotionRefused, match='data of beta is being read'):
        acquire(str(tmp_path), 'beta', owner('b1', 'rollback'))
    release(str(tmp_path), 'test', 't1', claims=['beta'])
    acquire(str(tmp_path), 'beta', owner('b1'))
    with pytest.raises(PromotionRefused, match='reads the data of beta'):
        acquire(str(tmp_path), 'test', owner('t2'), claims=['beta'])


def test_an_unfinished_source_cannot_be_read(tmp_path):
    acquire(str(tmp_path), 'beta', owner('b1'))
    start_state(str(tmp_path), 'beta', {}, {'status': 'failed', 'run_id': 'b1'}, 'b1')
    release(str(tmp_path), 'beta', 'b1')
    with pytest.raises(PromotionRefused, match='resume it or roll it back'):
        acquire(str(tmp_path), 'test', owner('t1'), claims=['beta'])


def test_claims_left_by_dead_runs_are_ignored(tmp_path):
    folder = tmp_path / 'beta.claims'
    folder.mkdir()
    (folder / 'gone.json').write_text(json.dumps({'stage': 'test', 'run_id': 'gone'}))
    acquire(str(tmp_path), 'beta', owner('b1'))
    assert not list(folder.iterdir())


def test_take_over_only_the_named_run(tmp_path):
    acquire(str(tmp_path), 'test', owner('dead'))
    with pytest.raises(PromotionRefused):
        acquire(str(tmp_path), 'test', owner('r2'), take_over_run_id='someone-else')
    previous, taken = acquire(str(tmp_path), 'test', owner('r2', 'resume'),
                              take_over_run_id='dead')
    assert taken['run_id'] == 'dead'
    assert read_owner(str(tmp_path), 'test')['run_id'] == 'r2'


def test_state_writes_need_the_lock_and_refresh_the_step(tmp_path):
    acquire(str(tmp_path), 'test', owner('r1'))
    start_state(str(tmp_path), 'test', {'rollback_target': {'revision': 'abc'}},
                {'status': 'running', 'plan': {'x': 1}}, 'r1')
    state = update_state(str(tmp_path), 'test', 'r1', update={'traffic': 'upgrade'},
                         event={'phase': 'cutover_to_twin', 'event': 'start'})
    assert state['rollback_target'] == {'revision': 'abc'}  # carried forward
    assert state['step'] == 'cutover_to_twin' and state['traffic'] == 'upgrade'
    assert read_owner(str(tmp_path), 'test')['step'] == 'cutover_to_twin'
    with pytest.raises(PromotionRefused, match='no longer holds the lock'):
        update_state(str(tmp_path), 'test', 'intruder', update={'traffic': 'live'})
    assert release(str(tmp_path), 'test', 'intruder') is False
    assert release(str(tmp_path), 'test', 'r1') is True
    assert read_owner(str(tmp_path), 'test') is None
    assert read_state(str(tmp_path), 'test')['traffic'] == 'upgrade'  # the state outlives it


def test_ledger_lines_are_whole_json(tmp_path):
    for n in range(3):
        append_ledger(str(tmp_path), {'n': n})
    lines = (tmp_path / 'ledger.jsonl').read_text().splitlines()
    assert [json.loads(line)['n'] for line in lines] == [0, 1, 2]
    assert oct(os.stat(tmp_path / 'ledger.jsonl').st_mode & 0o777) == '0o640'


def test_phase_durations_in_start_order():
    events = [{'phase': 'a', 'event': 'start', 'at': 1.0}, {'phase': 'b', 'event': 'start', 'at': 2.0},
              {'phase': 'a', 'event': 'end', 'at': 3.0}]
    assert phase_durations(events) == [{'phase': 'a', 'seconds': 2.0}, {'phase': 'b', 'seconds': None}]
