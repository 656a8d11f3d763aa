"""promote.yml on the local pipeline: real processes, a read load and an acknowledged-write load
through HAProxy during every run, 0 failed reads and 0 lost writes asserted.

Runs after test_local_pipeline.py in the same session sandbox (the `pipeline` fixture), in
file order: the refusals first (nothing may change), then the promotions of each policy, the
rollbacks, the faults, the interrupts and the races.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest
import requests

from support.procs import wait_for
from support.promotion import assert_zero_loss, lost_writes, run_under_load
from support.zodbcheck import write_ids_in_datafs

# One xdist worker runs the whole pipeline (one sandbox, in file order).
pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]


def info(pipeline, stage):
    response = requests.get('http://127.0.0.1:%d/@@zopeops-info' % pipeline.lb_port(stage),
                            timeout=15)
    response.raise_for_status()
    return response.json()


def output(proc):
    return proc.stdout[-15000:] + proc.stderr[-4000:]


def lock_dir(pipeline, stage):
    return pipeline.sandbox / 'lb' / 'promotions' / ('%s.lock' % stage)


def refused(pipeline, stage, message, watch=('beta', 'test', 'prod'), **extra):
    before = {s: info(pipeline, s)['revision'] for s in watch}
    state_before = pipeline.state(stage)
    proc = pipeline.playbook('promote.yml', dict({'stage': stage}, **extra))
    assert proc.returncode != 0, output(proc)
    assert message in proc.stdout + proc.stderr, output(proc)
    assert 'Traceback' not in proc.stdout + proc.stderr
    assert {s: info(pipeline, s)['revision'] for s in before} == before
    assert pipeline.state(stage) == state_before  # a refused run writes no state
    return proc


def wait_for_text(path, text, background, timeout=300):
    """Poll a file (a map file the balancer's switch rewrites) until it holds ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and background.proc.poll() is None:
        try:
            if text in path.read_text():
                return time.time()
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    return None


def map_file(pipeline, name):
    return pipeline.sandbox / 'lb' / 'etc' / name


# --- refusals: one clear message, nothing changed ---------------------------------------

def test_refuses_an_unknown_stage(pipeline):
    refused(pipeline, 'staging', "Stage 'staging' is not in the pipeline")


def test_refuses_the_head_of_the_pipeline(pipeline):
    refused(pipeline, 'dev', 'is the head of the pipeline')


def test_refuses_bad_inputs_before_taking_the_lock(pipeline):
    refused(pipeline, 'test', 'bogus', action='bogus')
    refused(pipeline, 'test', 'rollback_data', action='rollback', rollback_data='maybe')
    refused(pipeline, 'test', 'no-such-revision', promote_revision='no-such-revision')
    assert not lock_dir(pipeline, 'test').exists()
    assert not [e for e in pipeline.ledger() if e.get('action') == 'bogus']


def test_refuses_a_running_twin(pipeline):
    # Something answers on the twin's ZEO port (a person's test, a fast-rollback window).
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(('127.0.0.1', pipeline.port_base + 35))
        listener.listen()
        proc = refused(pipeline, 'test', 'Nothing was changed')
    assert str(pipeline.port_base + 35) in proc.stdout
    assert not lock_dir(pipeline, 'test').exists()


def hold_lock(pipeline, stage, pid, run_id):
    folder = lock_dir(pipeline, stage)
    folder.mkdir(parents=True)
    (folder / 'owner.json').write_text(json.dumps({
        'run_id': run_id, 'owner': 'alice', 'action': 'run', 'stage': stage,
        'started_at': '2026-11-29T12:00:00Z', 'step': 'twin_data',
        'controller': socket.gethostname(), 'controller_pid': pid, 'taken_at': time.time()}))
    return folder


def test_refuses_while_a_live_run_holds_the_lock_and_names_it(pipeline):
    folder = hold_lock(pipeline, 'prod', os.getpid(), 'other-run')
    try:
        refused(pipeline, 'prod', 'A run of prod (run other-run) by alice')
        refused(pipeline, 'prod', 'is in progress', action='rollback')
    finally:
        (folder / 'owner.json').unlink()
        folder.rmdir()


def test_an_interrupted_run_is_named_and_only_resume_or_rollback_take_over(pipeline):
    dead = subprocess.Popen(['true'])
    dead.wait()
    folder = hold_lock(pipeline, 'prod', dead.pid, 'dead-run')
    try:
        refused(pipeline, 'prod', 'was interrupted')
    finally:
        (folder / 'owner.json').unlink()
        folder.rmdir()


def test_refuses_an_unhealthy_predecessor(pipeline):
    for client in ('beta-client1', 'beta-client2'):
        assert pipeline.supervisorctl('stop', client).returncode == 0
    try:
        refused(pipeline, 'test', 'is not healthy', watch=('test', 'prod'))
    finally:
        for client in ('beta-client1', 'beta-client2'):
            pipeline.supervisorctl('start', client)
    wait_for(lambda: requests.get('http://127.0.0.1:%d/@@zopeops-info' % pipeline.lb_port('beta'),
                                  timeout=5).status_code == 200,
             timeout=120, what='beta to serve through HAProxy again')
    assert not lock_dir(pipeline, 'test').exists()


# --- promotions under reads and writes: nothing acknowledged is lost ---------------------

def test_dev_change_and_content_reach_prod_through_beta_and_test(pipeline):
    v2 = pipeline.revision_of('demo-v2')
    marker = 'marker-%s' % uuid.uuid4().hex[:8]
    response = requests.post('http://127.0.0.1:%d/@@zopeops-marker' % pipeline.lb_port('dev'),
                             data={'value': marker}, timeout=15)
    assert response.status_code == 200, response.text
    for stage in ('beta', 'test', 'prod'):
        assert info(pipeline, stage)['revision'] == pipeline.revision_of('demo-v1')
        run = run_under_load(pipeline, 'promote.yml', stage)
        assert run.proc.returncode == 0, run.output
        print('promote %s: %s' % (stage, run.report()))
        assert_zero_loss(pipeline, run, stage, 'upstream')
        after = info(pipeline, stage)
        assert after['revision'] == v2 and after['instance'] == stage, after
        assert after['marker'] == marker, after
        assert not [p for p, s in pipeline.program_states().items()
                    if p.startswith(stage + '_upgrade') and s == 'RUNNING']
        state = pipeline.state(stage)
        assert state['status'] == 'done' and state['traffic'] == 'live'
        assert state['rollback_target']['revision'] == pipeline.revision_of('demo-v1')
        assert 'Promoted %s from' % stage in run.proc.stdout
        assert not lock_dir(pipeline, stage).exists()
    entries = [e for e in pipeline.ledger() if e['result'] == 'success']
    assert [e['stage'] for e in entries][-3:] == ['beta', 'test', 'prod']
    assert all(e['to_revision'] == v2 and e['phases'] for e in entries[-3:])
    active = map_file(pipeline, 'active.map').read_text()
    for stage in ('beta', 'test', 'prod'):
        assert '%s be_%s_live' % (stage, stage) in active


def test_self_policy_keeps_every_write_and_reports_the_freeze(pipeline):
    run = run_under_load(pipeline, 'promote.yml', 'test', {'zopeops_data_policy': 'self'})
    assert run.proc.returncode == 0, run.output
    print('promote test (self): %s' % run.report())
    assert_zero_loss(pipeline, run, 'test', 'self')
    entry = pipeline.ledger()[-1]
    assert entry['stage'] == 'test' and entry['policy'] == 'self' and entry['result'] == 'success'
    windows = entry['freeze_windows']
    assert [w['switch'] for w in windows] == ['cutover_to_twin', 'cutover_to_live'], windows
    assert all(0 < w['frozen_seconds'] < 30 for w in windows), windows
    print('freeze windows: %s' % windows)
    assert 'Writes: frozen' in run.proc.stdout


def test_rollback_returns_prod_to_its_previous_release_and_archives_every_write(pipeline):
    run = run_under_load(pipeline, 'rollback.yml', 'prod')
    assert run.proc.returncode == 0, run.output
    print('rollback prod: %s' % run.report())
    after = info(pipeline, 'prod')
    assert after['revision'] == pipeline.revision_of('demo-v1') and after['instance'] == 'prod'
    assert after['marker'] is None, after  # prod's own data from before: never seeded
    state = pipeline.state('prod')
    assert state['status'] == 'rolled_back'
    assert pipeline.ledger()[-1]['result'] == 'rolled back'
    # Every write acknowledged during the rollback is in the archive of the data it left,
    # except those prod itself took after it came back, which are in prod's data.
    archive = state['twin_archive']
    assert archive['transactions'] > 0
    archived = write_ids_in_datafs(os.path.join(archive['path'], 'Data.fs'))
    back = {i for i, e in run.writes.acknowledged.items()
            if e['instance'] == 'prod' and i not in archived}
    assert set(run.writes.acknowledged) - back <= archived
    assert lost_writes(pipeline, 'prod', back)['missing_datafs'] == 0
    assert not run.reads.failures and not run.writes.failed, run.report()
    # The rollback target is used up: a second rollback has nothing to return to.
    refused(pipeline, 'prod', 'nothing to roll back to', action='rollback', watch=('prod',))


def test_none_policy_keeps_the_stage_data_and_every_write(pipeline):
    run = run_under_load(pipeline, 'promote.yml', 'prod', {'zopeops_data_policy': 'none'})
    assert run.proc.returncode == 0, run.output
    assert_zero_loss(pipeline, run, 'prod', 'none')
    after = info(pipeline, 'prod')
    assert after['revision'] == pipeline.revision_of('demo-v2') and after['marker'] is None


def test_code_only_rollback_after_a_promotion_that_kept_the_revision(pipeline):
    # test's last promotion (self policy) kept demo-v2: the rollback returns that revision,
    # with the data as it is, and loses no write.
    run = run_under_load(pipeline, 'rollback.yml', 'test', {'rollback_data': False})
    assert run.proc.returncode == 0, run.output
    assert_zero_loss(pipeline, run, 'test', 'self')
    assert info(pipeline, 'test')['revision'] == pipeline.revision_of('demo-v2')


# --- faults: traffic never fails, no write is lost, and it ends where the rules say ------

def broken_revision(pipeline, tmp_path):
    """A commit of the example app whose product fails at Zope's start-up."""
    work = tmp_path / 'broken'
    subprocess.run(['git', 'clone', '-q', str(pipeline.sandbox / 'app.git'), str(work)],
                   check=True)
    init = work / 'Products' / 'ZopeOpsDemo' / '__init__.py'
    init.write_text(init.read_text() + '\nraise RuntimeError("this release cannot start")\n')
    env = dict(os.environ, GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@t', GIT_COMMITTER_NAME='t',
               GIT_COMMITTER_EMAIL='t@t')
    subprocess.run(['git', 'commit', '-qam', 'broken'], cwd=work, check=True, env=env)
    subprocess.run(['git', 'push', '-q', 'origin', 'HEAD:refs/heads/broken'], cwd=work,
                   check=True)
    return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=work, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_a_release_that_cannot_start_aborts_before_the_switch(pipeline, tmp_path):
    broken = broken_revision(pipeline, tmp_path)
    before = info(pipeline, 'prod')
    run = run_under_load(pipeline, 'promote.yml', 'prod', {'promote_revision': 'broken'})
    assert run.proc.returncode != 0, run.output
    assert 'Nothing moved' in run.proc.stdout, run.output
    assert_zero_loss(pipeline, run, 'prod', 'none')
    assert info(pipeline, 'prod')['revision'] == before['revision'] != broken
    states = pipeline.program_states()
    assert states['prod_upgrade-zeo'] != 'RUNNING' and states['prod_upgrade-client1'] != 'RUNNING'
    assert pipeline.state('prod')['status'] == 'aborted'
    assert not lock_dir(pipeline, 'prod').exists()


def test_a_full_disk_on_the_twin_aborts_before_the_switch(pipeline):
    target = pipeline.sandbox / 'test_upgrade' / 'var' / 'snapshots'
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root (CI runs as root)')
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', str(target)], check=True)
    try:
        run = run_under_load(pipeline, 'promote.yml', 'test')
    finally:
        subprocess.run(['umount', str(target)], check=True)
    assert run.proc.returncode != 0, run.output
    assert 'Nothing moved' in run.proc.stdout and 'Traceback' not in run.output, run.output
    assert_zero_loss(pipeline, run, 'test', 'none')
    assert pipeline.state('test')['status'] == 'aborted'


def test_live_failure_keeps_traffic_on_the_twin_until_resumed(pipeline):
    fault = pipeline.sandbox / 'test' / 'var' / 'FAULT'
    fault.write_text('injected by the test\n')
    extra = {'zopeops_data_policy': 'self'}
    try:
        first = run_under_load(pipeline, 'promote.yml', 'test', extra)
        assert first.proc.returncode != 0, first.output
        assert 'TRAFFIC IS SERVED BY THE TWIN test_upgrade' in first.proc.stdout, first.output
        assert 'Do not stop the twin' in first.proc.stdout
        assert info(pipeline, 'test')['instance'] == 'test_upgrade'
        state = pipeline.state('test')
        assert state['status'] == 'failed' and state['traffic'] == 'upgrade'
        again = pipeline.playbook('promote.yml', dict({'stage': 'test'}, **extra))
        assert again.returncode != 0 and '-e action=resume' in again.stdout, output(again)
    finally:
        fault.unlink(missing_ok=True)
    second = run_under_load(pipeline, 'promote.yml', 'test', dict(extra, action='resume'))
    assert second.proc.returncode == 0, second.output
    served = info(pipeline, 'test')
    assert served['instance'] == 'test' and served['revision'] == pipeline.revision_of('demo-v2')
    assert pipeline.state('test')['status'] == 'done'
    assert not [p for p, s in pipeline.program_states().items()
                if p.startswith('test_upgrade') and s == 'RUNNING']
    for run in (first, second):
        assert not run.reads.failures and not run.writes.failed, run.report()
    acked = set(first.writes.acknowledged) | set(second.writes.acknowledged)
    assert lost_writes(pipeline, 'test', acked)['missing_datafs'] == 0


# --- interrupts: Ctrl-C at the worst moments, then resume ---------------------------------

@pytest.mark.parametrize('moment,path,text', [
    ('during the freeze before the first switch', 'frozen.map', 'test 1'),
    ('right after the first switch', 'active.map', 'test be_test_upgrade'),
])
def test_interrupt_then_resume_loses_nothing(pipeline, moment, path, text):
    extra = {'zopeops_data_policy': 'self'}

    def interrupt(background):
        seen = wait_for_text(map_file(pipeline, path), text, background)
        background.interrupt()
        return seen

    first = run_under_load(pipeline, 'promote.yml', 'test', extra, during=interrupt)
    assert first.interrupted_at, 'the moment (%s) never came: %s' % (moment, first.output)
    assert first.proc.returncode != 0
    refused_run = pipeline.playbook('promote.yml', dict({'stage': 'test'}, **extra))
    assert refused_run.returncode != 0 and 'was interrupted' in refused_run.stdout, \
        output(refused_run)
    second = run_under_load(pipeline, 'promote.yml', 'test', dict(extra, action='resume'))
    assert second.proc.returncode == 0, second.output
    for run in (first, second):
        assert not run.reads.failures and not run.writes.failed, (moment, run.report())
    acked = set(first.writes.acknowledged) | set(second.writes.acknowledged)
    assert lost_writes(pipeline, 'test', acked) == {
        'http': [], 'datafs': [], 'missing_http': 0, 'missing_datafs': 0}, moment
    assert 'test 1' not in map_file(pipeline, 'frozen.map').read_text()
    assert info(pipeline, 'test')['instance'] == 'test'
    assert pipeline.state('test')['status'] == 'done'


# --- races: exactly one run proceeds, the others are refused with the owner named ---------

def test_concurrent_runs_exactly_one_proceeds(pipeline):
    first = pipeline.background_playbook('promote.yml', {'stage': 'test'})
    wait_for(lambda: lock_dir(pipeline, 'test').exists() or first.proc.poll() is not None,
             timeout=120, what='the first run to take the lock')
    results = {}

    def contend(name, extra):
        results[name] = pipeline.playbook('promote.yml', extra)

    threads = [threading.Thread(target=contend, args=args) for args in (
        ('again', {'stage': 'test'}),
        ('rollback', {'stage': 'test', 'action': 'rollback'}),
        ('successor', {'stage': 'prod'}),
    )]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    done = first.wait(900)
    assert done.returncode == 0, output(done)
    owner = 'run %s' % pipeline.state('test')['run_id']
    for name, proc in results.items():
        assert proc.returncode != 0, (name, output(proc))
        assert owner in proc.stdout, (name, output(proc))
