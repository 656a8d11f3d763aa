"""promote.yml on the local pipeline, all real processes, under continuous load.

Runs after test_local_pipeline.py in the same session sandbox (the `pipeline` fixture).
Order matters within this file: the refusals first (nothing may change), then the three
promotions, then the faults.
"""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import requests

from support.load import LoadGenerator
from support.procs import wait_for

# One xdist worker runs the whole pipeline (one sandbox, in file order).
pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]


def info(pipeline, stage):
    response = requests.get('http://127.0.0.1:%d/@@zopeops-info' % pipeline.lb_port(stage),
                            timeout=15)
    response.raise_for_status()
    return response.json()


def state_file(pipeline, stage):
    return pipeline.sandbox / 'lb' / 'promotions' / ('%s.json' % stage)


def ledger(pipeline):
    path = pipeline.sandbox / 'lb' / 'promotions' / 'ledger.jsonl'
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def promote(pipeline, stage, **extra):
    """Run promote.yml for ``stage`` under load through HAProxy; return (proc, load)."""
    url = 'http://127.0.0.1:%d/@@zopeops-info' % pipeline.lb_port(stage)
    with LoadGenerator(url) as load:
        proc = pipeline.playbook('promote.yml', dict({'stage': stage}, **extra))
    return proc, load


def output(proc):
    return proc.stdout[-12000:] + proc.stderr[-4000:]


def refused(pipeline, stage, message, watch=('beta', 'test', 'prod'), **extra):
    before = {s: info(pipeline, s)['revision'] for s in watch}
    proc = pipeline.playbook('promote.yml', dict({'stage': stage}, **extra))
    assert proc.returncode != 0, output(proc)
    assert message in proc.stdout + proc.stderr, output(proc)
    assert 'Traceback' not in proc.stdout + proc.stderr
    assert {s: info(pipeline, s)['revision'] for s in before} == before
    return proc


# --- refusals: one clear message, nothing changed ---------------------------------------

def test_refuses_an_unknown_stage(pipeline):
    refused(pipeline, 'staging', "Stage 'staging' is not in the pipeline")


def test_refuses_the_head_of_the_pipeline(pipeline):
    refused(pipeline, 'dev', 'is the head of the pipeline')


def test_refuses_a_running_twin(pipeline):
    import socket
    # Something answers on the twin's ZEO port (a person's test, a fast-rollback window).
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(('127.0.0.1', pipeline.port_base + 35))
        listener.listen()
        proc = refused(pipeline, 'test', 'The twin test_upgrade is running')
    assert str(pipeline.port_base + 35) in proc.stdout


def test_refuses_while_another_promotion_holds_the_lock(pipeline):
    path = state_file(pipeline, 'prod')
    path.parent.mkdir(parents=True, exist_ok=True)
    import time
    path.write_text(json.dumps({'status': 'running', 'run_id': 'other-run', 'owner': 'alice@x',
                                'started_at': '2026-01-01T00:00:00Z', 'phase': 'twin',
                                'updated_epoch': int(time.time())}))
    try:
        refused(pipeline, 'prod', 'A promotion of prod (other-run) by alice@x')
        path.write_text(json.dumps({'status': 'running', 'run_id': 'old-run', 'owner': 'bob@x',
                                    'started_at': '2026-01-01T00:00:00Z', 'phase': 'live',
                                    'updated_epoch': 1000}))
        refused(pipeline, 'prod', 'A stale lock of prod (old-run) by bob@x')
    finally:
        path.unlink()


def test_refuses_an_unhealthy_predecessor(pipeline):
    for client in ('beta-client1', 'beta-client2'):
        assert pipeline.supervisorctl('stop', client).returncode == 0
    try:
        refused(pipeline, 'test', 'The predecessor beta is not healthy', watch=('test', 'prod'))
    finally:
        for client in ('beta-client1', 'beta-client2'):
            pipeline.supervisorctl('start', client)
    wait_for(lambda: requests.get('http://127.0.0.1:%d/@@zopeops-info' % pipeline.lb_port('beta'),
                                  timeout=5).status_code == 200,
             timeout=120, what='beta to serve through HAProxy again')


# --- the promotions: dev's change and content reach prod ---------------------------------

def test_dev_change_and_content_reach_prod_through_beta_and_test(pipeline):
    v2 = pipeline.revision_of('demo-v2')
    marker = 'marker-%s' % uuid.uuid4().hex[:8]
    response = requests.post('http://127.0.0.1:%d/@@zopeops-marker' % pipeline.lb_port('dev'),
                             data={'value': marker}, timeout=15)
    assert response.status_code == 200, response.text
    for stage in ('beta', 'test', 'prod'):
        before = info(pipeline, stage)
        assert before['revision'] == pipeline.revision_of('demo-v1')
        proc, load = promote(pipeline, stage)
        assert proc.returncode == 0, output(proc)
        print('promote %s under load: %s' % (stage, load.report()))
        assert load.total > 20 and not load.failures, load.report()
        after = info(pipeline, stage)
        assert after['revision'] == v2 and after['instance'] == stage, after
        assert after['marker'] == marker, after
        states = pipeline.program_states()
        assert not [p for p, s in states.items() if p.startswith(stage + '_upgrade')
                    and s == 'RUNNING'], states
        state = json.loads(state_file(pipeline, stage).read_text())
        assert state['status'] == 'done' and not state['switched']
        assert 'Promoted %s from' % stage in proc.stdout
    entries = [e for e in ledger(pipeline) if e['result'] == 'success']
    assert [e['stage'] for e in entries][-3:] == ['beta', 'test', 'prod']
    assert all(e['to_revision'] == v2 and e['phases'] for e in entries[-3:])
    active = (pipeline.sandbox / 'lb' / 'etc' / 'active.map').read_text()
    for stage in ('beta', 'test', 'prod'):
        assert '%s be_%s_live' % (stage, stage) in active


def test_promoting_again_is_safe(pipeline):
    proc, load = promote(pipeline, 'test')
    assert proc.returncode == 0, output(proc)
    assert not load.failures, load.report()
    assert info(pipeline, 'test')['revision'] == pipeline.revision_of('demo-v2')


def test_rollback_returns_prod_to_its_previous_release_and_data(pipeline):
    proc = pipeline.playbook('rollback.yml', {'stage': 'prod'})
    assert proc.returncode == 0, output(proc)
    after = info(pipeline, 'prod')
    assert after['revision'] == pipeline.revision_of('demo-v1') and after['instance'] == 'prod'
    assert after['marker'] is None, after  # prod's own data from before: never seeded
    assert json.loads(state_file(pipeline, 'prod').read_text())['status'] == 'rolled_back'
    assert ledger(pipeline)[-1]['result'] == 'rolled back'


# --- faults: traffic never fails, and ends up where the rules say ------------------------

def broken_revision(pipeline, tmp_path):
    """A commit of the example app whose product fails at Zope's start-up."""
    work = tmp_path / 'broken'
    subprocess.run(['git', 'clone', '-q', str(pipeline.sandbox / 'app.git'), str(work)],
                   check=True)
    init = work / 'Products' / 'ZopeOpsDemo' / '__init__.py'
    init.write_text(init.read_text() + '\nraise RuntimeError("this release cannot start")\n')
    env = {'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@x', 'GIT_COMMITTER_NAME': 't',
           'GIT_COMMITTER_EMAIL': 't@x', 'PATH': '/usr/bin:/bin'}
    subprocess.run(['git', 'commit', '-qam', 'break start-up'], cwd=work, env=env, check=True)
    subprocess.run(['git', 'push', '-q', 'origin', 'HEAD:refs/heads/broken'], cwd=work,
                   check=True)
    return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=work, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_a_release_that_cannot_start_aborts_before_the_switch(pipeline, tmp_path):
    broken = broken_revision(pipeline, tmp_path)
    before = info(pipeline, 'prod')
    proc, load = promote(pipeline, 'prod', promote_revision=broken)
    assert proc.returncode != 0, output(proc)
    assert 'stopped in phase twin' in proc.stdout and 'Nothing moved' in proc.stdout
    assert not load.failures, load.report()
    assert info(pipeline, 'prod')['revision'] == before['revision']
    states = pipeline.program_states()
    assert states['prod_upgrade-zeo'] != 'RUNNING' and states['prod_upgrade-client1'] != 'RUNNING'
    assert json.loads(state_file(pipeline, 'prod').read_text())['status'] == 'aborted'


def test_twin_zeo_killed_during_twin_start(pipeline):
    import os
    import signal
    import threading
    import time

    result = {}
    url = 'http://127.0.0.1:%d/@@zopeops-info' % pipeline.lb_port('prod')
    with LoadGenerator(url) as load:
        worker = threading.Thread(target=lambda: result.setdefault(
            'proc', pipeline.playbook('promote.yml', {'stage': 'prod'})))
        worker.start()
        killed = None
        deadline = time.monotonic() + 600
        while worker.is_alive() and killed is None and time.monotonic() < deadline:
            if pipeline.program_states().get('prod_upgrade-zeo') == 'RUNNING':
                pid = int(pipeline.supervisorctl('pid', 'prod_upgrade-zeo').stdout.strip())
                if pid > 0:
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
            time.sleep(0.2)
        worker.join(900)
    proc = result['proc']
    print('twin ZEO %s killed; promotion rc=%d; %s' % (killed, proc.returncode, load.report()))
    assert killed, 'the twin ZEO server never ran'
    assert not load.failures, load.report()
    states = pipeline.program_states()
    assert states['prod_upgrade-zeo'] != 'RUNNING', states
    served = info(pipeline, 'prod')
    assert served['instance'] == 'prod'
    if proc.returncode == 0:  # supervisord restarted ZEO in time: the promotion went through
        assert served['revision'] == pipeline.revision_of('demo-v2')
    else:  # it stopped before the switch: prod untouched
        assert 'Nothing moved' in proc.stdout, output(proc)
        assert served['revision'] == pipeline.revision_of('demo-v1')


def test_live_client_failing_after_upgrade_keeps_traffic_on_twin_until_resumed(pipeline):
    fault = pipeline.sandbox / 'test' / 'var' / 'FAULT'
    fault.write_text('injected by the test\n')
    try:
        proc, load = promote(pipeline, 'test')
        assert proc.returncode != 0, output(proc)
        assert 'TRAFFIC IS SERVED BY THE TWIN test_upgrade' in proc.stdout, output(proc)
        assert not load.failures, load.report()
        assert info(pipeline, 'test')['instance'] == 'test_upgrade'
        state = json.loads(state_file(pipeline, 'test').read_text())
        assert state['status'] == 'failed' and state['switched'] and state['phase'] == 'live'
        again = pipeline.playbook('promote.yml', {'stage': 'test'})
        assert again.returncode != 0 and '-e action=resume' in again.stdout
        assert info(pipeline, 'test')['instance'] == 'test_upgrade'
    finally:
        fault.unlink(missing_ok=True)
    proc, load = promote(pipeline, 'test', action='resume')
    assert proc.returncode == 0, output(proc)
    assert not load.failures, load.report()
    served = info(pipeline, 'test')
    assert served['instance'] == 'test' and served['revision'] == pipeline.revision_of('demo-v2')
    assert json.loads(state_file(pipeline, 'test').read_text())['status'] == 'done'
    assert not [p for p, s in pipeline.program_states().items()
                if p.startswith('test_upgrade') and s == 'RUNNING']


def test_refuses_a_stage_without_a_twin(pipeline, tmp_path):
    import shutil
    import yaml
    inventory = tmp_path / 'inventory'
    shutil.copytree(pipeline.inventory, inventory)
    hosts = yaml.safe_load((inventory / 'hosts.yml').read_text())
    hosts['all']['children'].pop('prod_upgrade')
    (inventory / 'hosts.yml').write_text(yaml.safe_dump(hosts))
    (inventory / 'host_vars' / 'prod_upgrade-local.yml').unlink()
    from support.ansible import run_playbook
    proc = run_playbook('promote.yml', inventory, dict(pipeline.extra_vars, stage='prod'))
    assert proc.returncode != 0
    assert "Stage 'prod' has no upgrade twin" in proc.stdout, output(proc)
