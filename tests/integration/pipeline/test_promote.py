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

pytestmark = [pytest.mark.integration, pytest.mark.pipeline]


def info(pipeline, stage):
    response = requests.get('http://127.0.0.1:%d/@@zopeops-info' % pipeline.lb_port(stage),
                            timeout=15)
    response.raise_for_status()
    return response.json()


def sha(pipeline, ref):
    return subprocess.run(['git', '--git-dir', str(pipeline.sandbox / 'app.git'), 'rev-parse',
                           ref + '^{commit}'], capture_output=True, text=True,
                          check=True).stdout.strip()


def program_states(pipeline):
    out = pipeline.supervisorctl('status').stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


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


def refused(pipeline, stage, message, **extra):
    before = {s: info(pipeline, s)['revision'] for s in ('beta', 'test', 'prod')}
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
    assert pipeline.supervisorctl('start', 'test_upgrade-zeo').returncode == 0
    try:
        refused(pipeline, 'test', 'The twin test_upgrade is running')
    finally:
        pipeline.supervisorctl('stop', 'test_upgrade-zeo')


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
        refused(pipeline, 'test', 'beta')
    finally:
        for client in ('beta-client1', 'beta-client2'):
            pipeline.supervisorctl('start', client)
    for _ in range(60):
        if all(program_states(pipeline).get(c) == 'RUNNING'
               for c in ('beta-client1', 'beta-client2')):
            break


# --- the promotions: dev's change and content reach prod ---------------------------------

def test_dev_change_and_content_reach_prod_through_beta_and_test(pipeline):
    v2 = sha(pipeline, 'demo-v2')
    marker = 'marker-%s' % uuid.uuid4().hex[:8]
    response = requests.post('http://127.0.0.1:%d/@@zopeops-marker' % pipeline.lb_port('dev'),
                             data={'value': marker}, timeout=15)
    assert response.status_code == 200, response.text
    for stage in ('beta', 'test', 'prod'):
        before = info(pipeline, stage)
        assert before['revision'] == sha(pipeline, 'demo-v1')
        proc, load = promote(pipeline, stage)
        assert proc.returncode == 0, output(proc)
        print('promote %s under load: %s' % (stage, load.report()))
        assert load.total > 20 and not load.failures, load.report()
        after = info(pipeline, stage)
        assert after['revision'] == v2 and after['instance'] == stage, after
        assert after['marker'] == marker, after
        states = program_states(pipeline)
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
    assert info(pipeline, 'test')['revision'] == sha(pipeline, 'demo-v2')
