"""The promotion's lock, claims and state: atomic, exactly one winner, nothing lost."""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import time

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils.promotion import (
    PromotionRefused, acquire, append_ledger, heartbeat_age, phase_durations, read_owner,
    read_state, release, start_state, update_state)


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


def test_a_dead_run_named_by_the_controller_is_taken_over_only_by_resume(tmp_path):
    acquire(str(tmp_path), 'test', owner('dead'))
    with pytest.raises(PromotionRefused, match='is in progress|holds the lock'):
        acquire(str(tmp_path), 'test', owner('r2', 'resume'), purpose='resume',
                dead_run_id='someone-else')
    with pytest.raises(PromotionRefused, match='was interrupted'):
        acquire(str(tmp_path), 'test', owner('r2'), dead_run_id='dead')
    previous, taken = acquire(str(tmp_path), 'test', owner('r2', 'resume'), purpose='resume',
                              dead_run_id='dead')
    assert [t['run_id'] for t in taken] == ['dead'] and taken[0]['interrupted']
    assert read_owner(str(tmp_path), 'test')['run_id'] == 'r2'


def _foreign_lock(state_dir, stage, run_id, heartbeat_seconds_ago, step=None):
    """A lock taken by a run on another controller whose heartbeat is that old."""
    acquire(state_dir, stage, dict(owner(run_id), controller='awx-job-17', controller_pid=7))
    start_state(state_dir, stage, {}, {'status': 'running', 'run_id': run_id}, run_id)
    if step:
        update_state(state_dir, stage, run_id, event={'phase': step, 'event': 'start'})
    owner_path = os.path.join(state_dir, '%s.lock' % stage, 'owner.json')
    record = json.load(open(owner_path))
    record.pop('step', None)  # an owner.json that does not know the step: the state does
    with open(owner_path, 'w') as handle:
        json.dump(record, handle)
    stamp = time.time() - heartbeat_seconds_ago
    os.utime(os.path.join(state_dir, '%s.lock' % stage, 'heartbeat'), (stamp, stamp))


def test_heartbeat_age_is_the_age_of_the_heartbeat_file(tmp_path):
    _foreign_lock(str(tmp_path), 'test', 'r1', 300)
    age = heartbeat_age(str(tmp_path), 'test', read_owner(str(tmp_path), 'test'))
    assert 299 <= age <= 302
    update_state(str(tmp_path), 'test', 'r1', update={'x': 1})  # a state update shows life
    assert heartbeat_age(str(tmp_path), 'test', read_owner(str(tmp_path), 'test')) < 2


def test_a_foreign_live_lock_is_refused_naming_the_holder_and_the_time_left(tmp_path):
    _foreign_lock(str(tmp_path), 'prod', 'job-17', 30, step='twin_data')
    for purpose in ('run', 'resume', 'rollback', 'push', 'site'):
        with pytest.raises(PromotionRefused) as refused:
            acquire(str(tmp_path), 'prod', owner('r2', purpose), purpose=purpose, lease=120)
        text = str(refused.value)
        assert 'holds the lock' in text and 'job-17' in text and 'alice' in text, text
        assert 'at step twin_data' in text and 'at step ?' not in text, text
        assert 'awx-job-17' in text and 'renewed 30s ago' in text, text
        assert 'counts as interrupted' in text and re.search('in (89|90)s', text), text
        assert refused.value.holder['interrupted'] is False
    assert read_owner(str(tmp_path), 'prod')['run_id'] == 'job-17'
    assert read_state(str(tmp_path), 'prod')['status'] == 'running'


def test_a_foreign_lock_whose_heartbeat_stopped_is_interrupted_and_resume_takes_it(tmp_path):
    _foreign_lock(str(tmp_path), 'prod', 'job-17', 121, step='cutover_to_twin')
    with pytest.raises(PromotionRefused) as refused:
        acquire(str(tmp_path), 'prod', owner('r2'), purpose='run', lease=120)
    text = str(refused.value)
    assert 'was interrupted' in text and 'at step cutover_to_twin' in text, text
    assert '-e action=resume' in text and '-e action=rollback' in text, text
    assert 'heartbeat stopped 121s ago' in text and 'awx-job-17' in text, text
    state = read_state(str(tmp_path), 'prod')
    assert state['status'] == 'interrupted' and state['interrupted']['step'] == 'cutover_to_twin'
    with pytest.raises(PromotionRefused, match='was interrupted'):  # a push may not take it
        acquire(str(tmp_path), 'prod', owner('p1', 'push_branding'), purpose='push', lease=120)
    assert read_owner(str(tmp_path), 'prod')['run_id'] == 'job-17'
    previous, taken = acquire(str(tmp_path), 'prod', owner('r3', 'resume'), purpose='resume',
                              lease=120)
    assert previous['status'] == 'interrupted' and previous['run_id'] == 'job-17'
    assert taken[0]['run_id'] == 'job-17' and taken[0]['step'] == 'cutover_to_twin'
    assert read_owner(str(tmp_path), 'prod')['run_id'] == 'r3'


def test_the_lease_is_the_callers(tmp_path):
    _foreign_lock(str(tmp_path), 'prod', 'job-17', 40)
    with pytest.raises(PromotionRefused, match='holds the lock'):
        acquire(str(tmp_path), 'prod', owner('r2', 'rollback'), purpose='rollback', lease=60)
    acquire(str(tmp_path), 'prod', owner('r2', 'rollback'), purpose='rollback', lease=30)
    assert read_owner(str(tmp_path), 'prod')['run_id'] == 'r2'


def test_break_lock_takes_a_live_lock(tmp_path):
    _foreign_lock(str(tmp_path), 'prod', 'job-17', 1)
    _previous, taken = acquire(str(tmp_path), 'prod', owner('r2'), break_lock=True)
    assert taken[0]['run_id'] == 'job-17' and not taken[0]['interrupted']
    assert read_state(str(tmp_path), 'prod')['status'] == 'running'  # not known to be dead


def test_an_interrupted_push_or_site_lock_is_taken_by_any_run(tmp_path):
    acquire(str(tmp_path), ['dev', 'beta'], owner('site-1', 'site'), purpose='site')
    for stage in ('dev', 'beta'):
        assert read_owner(str(tmp_path), stage)['stages'] == ['dev', 'beta']
        path = tmp_path / ('%s.lock' % stage) / 'heartbeat'
        os.utime(path, (time.time() - 500, time.time() - 500))
    with pytest.raises(PromotionRefused, match='site.yml run of dev'):
        acquire(str(tmp_path), 'dev', owner('r1'), lease=600)
    _previous, taken = acquire(str(tmp_path), 'beta', owner('r1'), lease=120)
    assert taken[0]['run_id'] == 'site-1'


def test_several_stages_are_locked_all_or_none_and_released_together(tmp_path):
    acquire(str(tmp_path), 'test', owner('t1'))
    with pytest.raises(PromotionRefused, match='run of test'):
        acquire(str(tmp_path), ['dev', 'beta', 'test'], owner('s1', 'site'), purpose='site')
    assert read_owner(str(tmp_path), 'dev') is None and read_owner(str(tmp_path), 'beta') is None
    release(str(tmp_path), 'test', 't1')
    acquire(str(tmp_path), ['dev', 'beta', 'test'], owner('s1', 'site'), purpose='site')
    with pytest.raises(PromotionRefused, match='site.yml run of beta'):
        acquire(str(tmp_path), 'beta', owner('p1', 'push_branding'), purpose='push')
    assert release(str(tmp_path), ['dev', 'beta', 'test'], 's1') is True
    assert all(read_owner(str(tmp_path), s) is None for s in ('dev', 'beta', 'test'))


def test_the_module_reads_every_stages_state_in_one_call_and_takes_nothing(tmp_path):
    """promotion_state with stages and lock unchanged: the release keeping's one read of every
    stage's state on the conductor ({} for a stage without one); no lock is taken."""
    from support.modules import run_module
    acquire(str(tmp_path), 'test', owner('r1'))
    start_state(str(tmp_path), 'test', {}, {'status': 'running', 'plan': {'twin_revision': 'v2'}},
                'r1')
    result = run_module('promotion_state', {'dir': str(tmp_path), 'stages': ['dev', 'test'],
                                            'run_id': 'release-keeping'})
    assert result['rc'] == 0 and result['changed'] is False, result
    assert result['states']['dev'] == {}
    assert result['states']['test']['plan'] == {'twin_revision': 'v2'}
    assert read_owner(str(tmp_path), 'dev') is None
    assert read_owner(str(tmp_path), 'test')['run_id'] == 'r1'


def test_a_dry_run_decides_alike_and_writes_nothing(tmp_path):
    _foreign_lock(str(tmp_path), 'prod', 'job-17', 500)
    before = sorted(os.listdir(tmp_path)), (tmp_path / 'prod.json').read_text()
    with pytest.raises(PromotionRefused, match='was interrupted'):
        acquire(str(tmp_path), 'prod', owner('r2'), dry_run=True)
    acquire(str(tmp_path), 'prod', owner('r2', 'resume'), purpose='resume', dry_run=True)
    assert (sorted(os.listdir(tmp_path)), (tmp_path / 'prod.json').read_text()) == before
    assert read_owner(str(tmp_path), 'prod')['run_id'] == 'job-17'


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


def _append_many(state_dir, writer, count, barrier):
    barrier.wait()
    padding = 'x' * (3000 + 1000 * writer)  # lines longer than PIPE_BUF, of differing sizes
    for n in range(count):
        append_ledger(state_dir, {'writer': writer, 'n': n, 'padding': padding})


def test_writers_appending_at_once_lose_no_line(tmp_path):
    writers, count = 4, 300
    barrier = multiprocessing.Barrier(writers)
    procs = [multiprocessing.Process(target=_append_many,
                                     args=(str(tmp_path), writer, count, barrier))
             for writer in range(writers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    lines = (tmp_path / 'ledger.jsonl').read_text().splitlines()
    assert len(lines) == writers * count
    entries = [json.loads(line) for line in lines]  # every line whole
    for writer in range(writers):
        assert [e['n'] for e in entries if e['writer'] == writer] == list(range(count))


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
