"""restart.yml on the local pipeline (the faults' pipeline, after its promotions): prod's
clients restarted one at a time, then its ZEO server, each under a read load and an
acknowledged-write load through HAProxy (0 failed reads, 0 lost writes, new pids); a client
that cannot start stops the run there, drained, while prod serves on the other; dev (one
client) is refused.
"""
from __future__ import annotations

import pytest

from support.promotion import lost_writes, output, run_under_load, said

pytestmark = [pytest.mark.integration, pytest.mark.pipeline,
              pytest.mark.xdist_group('pipeline-faults')]

CLIENTS = ('prod-client1', 'prod-client2')


def pids(pipeline, *programs):
    found = {}
    for program in programs:
        line = pipeline.supervisorctl('status', program).stdout
        assert 'RUNNING' in line, line
        found[program] = int(line.split('pid ')[1].split(',')[0])
    return found


def admin_states(pipeline):
    """{server: ready | drain | maint} of prod's live backend, from HAProxy's runtime API."""
    from ansible_collections.zopeops.stages.plugins.module_utils.haproxy import RuntimeAPI
    return RuntimeAPI(str(pipeline.runtime_dir / 'haproxy.sock')).admin_states('be_prod_live')


def assert_served_without_loss(pipeline, run):
    assert not run.reads.failures, run.report()
    assert not run.writes.failed, run.report()
    assert run.reads.total > 20 and len(run.writes.acknowledged) >= 5, run.report()
    lost = lost_writes(pipeline, 'prod', set(run.writes.acknowledged))
    assert lost['missing_http'] == 0 and lost['missing_datafs'] == 0, (lost, run.report())


def test_rolling_restart_of_clients_then_zeo_under_load(pipeline):
    before = pids(pipeline, *CLIENTS, 'prod-zeo')
    run = run_under_load(pipeline, 'restart.yml', 'prod', timeout=600)
    assert run.proc.returncode == 0, run.output
    assert_served_without_loss(pipeline, run)
    after = pids(pipeline, *CLIENTS)
    assert all(after[c] != before[c] for c in CLIENTS), (before, after)
    text = said(run.proc)
    assert 'restart of its clients succeeded' in text, run.output
    assert text.index('prod-client1') < text.index('prod-client2')
    assert admin_states(pipeline) == {c: 'ready' for c in CLIENTS}
    entry = [e for e in pipeline.ledger() if e.get('action') == 'restart'][-1]
    assert entry['result'] == 'succeeded' and entry['stage'] == 'prod', entry

    run = run_under_load(pipeline, 'restart.yml', 'prod', {'component': 'zeo'}, timeout=600)
    assert run.proc.returncode == 0, run.output
    assert_served_without_loss(pipeline, run)
    assert pids(pipeline, 'prod-zeo')['prod-zeo'] != before['prod-zeo']
    entry = [e for e in pipeline.ledger() if e.get('action') == 'restart'][-1]
    assert entry['component'] == 'zeo' and entry['writes_frozen_seconds'] > 0, entry


def test_a_client_that_does_not_come_back_stops_the_run_drained(pipeline):
    fault = pipeline.sandbox / 'prod' / 'var' / 'FAULT'
    fault.write_text('made by test_restart\n')
    try:
        run = run_under_load(pipeline, 'restart.yml', 'prod', {'restart_start_timeout': 20},
                             timeout=600)
    finally:
        fault.unlink()
    assert run.proc.returncode != 0, run.output
    text = said(run.proc)
    assert 'Stopped at prod-client1 (step restart)' in text, run.output
    assert 'It stays out of rotation (drained) on every balancer; prod serves on prod-client2' in text
    assert 'playbooks/restart.yml -e stage=prod -e clients=client1' in text
    assert 'prod-client2 pid' not in text  # the run did not go on to the next client
    assert admin_states(pipeline) == {'prod-client1': 'drain', 'prod-client2': 'ready'}
    assert not run.reads.failures and not run.writes.failed, run.report()
    assert not (pipeline.sandbox / 'lb' / 'promotions' / 'prod.lock').exists()

    # Fixed (no fault file), the advised run restarts it and puts it back.
    proc = pipeline.playbook('restart.yml', {'stage': 'prod', 'clients': 'client1'})
    assert proc.returncode == 0, output(proc)
    assert admin_states(pipeline) == {c: 'ready' for c in CLIENTS}


def test_a_stage_of_one_client_is_refused(pipeline):
    before = pids(pipeline, 'dev-client1')
    proc = pipeline.playbook('restart.yml', {'stage': 'dev'})
    assert proc.returncode != 0, output(proc)
    assert ("Refusing to restart dev's clients 1 at a time: the stage has 1 client(s) "
            "(dev-client1), so no client would serve while it restarts") in said(proc)
    assert 'Promote the stage instead' in said(proc)
    assert pids(pipeline, 'dev-client1') == before
