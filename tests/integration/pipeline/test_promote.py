"""promote.yml on the local pipeline: real processes, a read load and an acknowledged-write load
through HAProxy during every run, 0 failed reads and 0 lost writes asserted.

Runs after test_local_pipeline.py in the same session sandbox (the `pipeline` fixture), in
file order: the refusals first (nothing may change), then the promotions of each policy, the
rollbacks, the faults, the interrupts and the races.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid

import pytest
import requests

from support.procs import wait_for
from support.promotion import (assert_zero_loss, info, lock_dir, lost_writes, map_file, output,
                               refused, run_under_load, said)
from support.zodbcheck import write_ids_in_datafs

# One xdist worker runs the whole pipeline (one sandbox, in file order).
pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]


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
    assert str(pipeline.port_base + 35) in said(proc)
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
        refused(pipeline, 'test', 'The predecessor beta is not healthy', watch=('test', 'prod'))
        # site.yml ends saying that beta's frontend has no healthy backend, naming its URL.
        proc = pipeline.playbook('site.yml', args=('--limit', 'lb-local'))
        assert proc.returncode == 0, output(proc)
        assert ("Stage beta has no healthy backend: no server of be_beta_live passes HAProxy's "
                "health check" in said(proc)), output(proc)
        assert 'so http://127.0.0.1:%d/ answers 503' % pipeline.lb_port('beta') in said(proc)
        assert 'Stage dev has no healthy backend' not in said(proc)
    finally:
        for client in ('beta-client1', 'beta-client2'):
            pipeline.supervisorctl('start', client)
        wait_for(lambda: requests.get('http://127.0.0.1:%d/@@zopeops-info'
                                      % pipeline.lb_port('beta'), timeout=5).status_code == 200,
                 timeout=120, what='beta to serve through HAProxy again')
    assert not lock_dir(pipeline, 'test').exists()


def test_an_unproven_predecessor_is_not_called_unhealthy(pipeline):
    proc = refused(pipeline, 'test', 'The predecessor beta answers, but which revision it runs '
                   'cannot be proven', watch=('test', 'prod'),
                   zopeops_revision_json_path='/@@no-such-view')
    assert 'not healthy' not in said(proc)
    assert ('the revision page /@@no-such-view answers HTTP 404, not 200; set '
            'zopeops_revision_json_path and zopeops_revision_json_key') in said(proc)


def test_check_mode_proves_the_predecessor_by_its_release(pipeline):
    """The default proof (release) on the real pipeline: the preflight reads the REVISION of
    the release beta's running clients were started from, on beta's host."""
    proc = pipeline.playbook('promote.yml', {'stage': 'test', 'zopeops_revision_proof': 'release'},
                             check=True)
    assert proc.returncode == 0, output(proc)
    # beta's clients run on beta-local: its one preflight call read their health there.
    proven = said(proc).split('Read what this host says to the preflight')[1]
    assert proven.split('TASK [')[0].count('ok: [beta-local]') == 1, output(proc)


def test_check_mode_prints_the_plan_and_changes_nothing(pipeline):
    before = {s: info(pipeline, s)['revision'] for s in ('beta', 'test', 'prod')}
    states, ledger = pipeline.state('test'), pipeline.ledger()
    datafs = pipeline.datafs('test').stat().st_size
    programs = pipeline.program_states()
    proc = pipeline.playbook('promote.yml', {'stage': 'test'}, check=True)
    assert proc.returncode == 0, output(proc)
    text = said(proc)
    for line in ('would start at step twin_code', 'Data: beta', 'Data.fs,', 'Processes: start',
                 'Switches: every balancer', 'Disk: about',
                 'Check mode: nothing was locked, started, stopped, copied or switched.'):
        assert line in text, (line, output(proc))
    assert {s: info(pipeline, s)['revision'] for s in before} == before
    assert pipeline.state('test') == states and pipeline.ledger() == ledger
    assert not lock_dir(pipeline, 'test').exists()
    assert pipeline.datafs('test').stat().st_size == datafs
    assert pipeline.program_states() == programs


# --- promotions under reads and writes: nothing acknowledged is lost ---------------------

def test_dev_change_and_content_reach_prod_through_beta_and_test(pipeline):
    v2 = pipeline.revision_of('demo-v2')
    marker = 'marker-%s' % uuid.uuid4().hex[:8]
    response = requests.post('http://127.0.0.1:%d/@@zopeops-marker' % pipeline.lb_port('dev'),
                             data={'value': marker}, timeout=15)
    assert response.status_code == 200, response.text
    # beta has the push page in this run: its product must be in the release of each side the
    # promotion builds (the twin's and the stage's), or the page would vanish with it.
    page_stages = {'beta': {'zopeops_push_page_stages': ['dev', 'beta']}}
    for stage in ('beta', 'test', 'prod'):
        assert info(pipeline, stage)['revision'] == pipeline.revision_of('demo-v1')
        run = run_under_load(pipeline, 'promote.yml', stage, page_stages.get(stage))
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
        assert 'Promoted %s from' % stage in said(run.proc)
        assert not lock_dir(pipeline, stage).exists()
        if stage in page_stages:
            for side in (stage, stage + '_upgrade'):
                release = json.loads((pipeline.sandbox / side / 'current' / 'release.json')
                                     .read_text())
                assert any(path.endswith('/Products.ZopeOpsPush')
                           for path in release.get('extra_packages') or {}), (side, release)
            page = requests.get('http://127.0.0.1:%d/@@zopeops-push' % pipeline.lb_port(stage),
                                auth=pipeline.admin_auth(), timeout=15)
            # The product answers (its page is not configured on beta: its own 404 says so).
            assert 'The push page is not enabled on this stage' in page.text, page.text[:500]
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
    assert 'Writes: frozen' in said(run.proc)


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
