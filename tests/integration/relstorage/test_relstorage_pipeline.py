"""A RelStorage pipeline (inventories/relstorage: dev, beta and beta's twin, one PostgreSQL
cluster of the sandbox's own), made a mixed one: dev keeps its data on ZEO (a copy of the
inventory with dev in groups dev_zeo and dev_clients), beta and its twin on RelStorage. Brought
up by site.yml twice (the second run changes nothing), then beta promoted from dev under a
read load and an acknowledged-write load, with policy upstream (between kinds: dev's packed
Data.fs converted into the twin's database, then the usual RelStorage steps) and then self
(both catch-ups through RelStorage): 0 failed reads, 0 lost acknowledged writes, the freeze
windows reported, the replaced database kept for a rollback. A wrong PostgreSQL password is
refused before anything changes, naming the stage and the server, never printing the password.

In make test (docs/relstorage.md): one test, one sandbox, to keep it lean.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import requests

from support.ansible import assert_no_changes, playbook_command, run_playbook
from support.inventories import mixed_relstorage_inventory
from support.load import LoadGenerator
from support.paths import REPO, VENV_BIN
from support.ports import free_port_block
from support.postgresql import PG_BIN, pg_missing
from support.promotion import Background, SandboxFiles, expected_writes, run_under_load, \
    said, state_events
from support.writeload import WriteLoad, admin_auth
from support.zodbcheck import write_ids_over_http

pytestmark = [pytest.mark.integration, pytest.mark.pipeline,
              pytest.mark.skipif(bool(pg_missing()), reason=pg_missing() or 'ok'),
              pytest.mark.xdist_group('relstorage-pipeline')]

INVENTORY = REPO / 'inventories' / 'relstorage'


class RelStoragePipeline(SandboxFiles):
    """What tests/support/promotion.py asks of a pipeline, for inventories/relstorage."""

    def __init__(self, sandbox, base, inventory=INVENTORY):
        self.sandbox, self.base = sandbox, base
        self.inventory = inventory
        self.extra_vars = {'zopeops_sandbox': str(sandbox), 'zopeops_port_base': base}

    def lb_bases(self, stage):
        return ['http://127.0.0.1:%d' % (self.base + ['dev', 'beta'].index(stage))]

    def playbook(self, name, extra=None):
        return run_playbook(name, self.inventory, dict(self.extra_vars, **(extra or {})))

    def background_playbook(self, name, extra=None):
        argv, env = playbook_command(name, self.inventory,
                                     dict(self.extra_vars, **(extra or {})))
        return Background(argv, env, str(REPO))

    def databases(self):
        run_dir = ('/tmp/zopeops-' + hashlib.sha1(str(self.sandbox).encode()).hexdigest()[:10]
                   + '-pg')
        psql = ['runuser', '-u', 'postgres', '--'] if os.geteuid() == 0 else []
        return set(subprocess.run(psql + ['psql', '-X', '-A', '-t', '-h', run_dir, '-p',
                                          str(self.base + 50), '-d', 'postgres', '-c',
                                          'SELECT datname FROM pg_database'],
                                  capture_output=True, text=True, check=True).stdout.split())


def promote_without_loss(pipeline, policy):
    """promote.yml -e stage=beta under the loads; every write that must survive is served."""
    run = run_under_load(pipeline, 'promote.yml', 'beta', {'zopeops_data_policy': policy})
    assert run.proc.returncode == 0, run.output
    print('promote beta (%s): %s' % (policy, run.report()))
    assert not run.reads.failures and run.reads.total > 20, run.report()
    assert not run.writes.failed and len(run.writes.acknowledged) >= 5, run.report()
    state, events = state_events(pipeline, 'beta')
    expected = expected_writes(run, 'beta', policy, events.get(('cutover_to_live', 'start')))
    missing = expected - write_ids_over_http(pipeline.lb_bases('beta')[0], pipeline.admin_auth())
    assert not missing, (sorted(missing)[:20], run.report())
    assert state['status'] == 'done' and state['traffic'] == 'live', state
    windows = state['freeze_windows']
    print('freeze windows (%s): %s' % (policy, windows))
    assert [w['switch'] for w in windows] == ['cutover_to_twin', 'cutover_to_live'], windows
    assert 'Writes: frozen' in said(run.proc)
    return run, state


def test_relstorage_pipeline_site_twice_and_promotions_under_load(tmp_path_factory):
    sandbox = tmp_path_factory.mktemp('relstorage') / 'sandbox'
    base = free_port_block(51, start=25000, stop=27400)
    inventory = mixed_relstorage_inventory(sandbox.parent / 'inventory', zeo_sides=['dev'])
    pipeline = RelStoragePipeline(sandbox, base, inventory)
    try:
        first = pipeline.playbook('site.yml')
        assert first.returncode == 0, first.stdout[-15000:] + first.stderr[-3000:]
        # The second run under a read load and an acknowledged-write load through beta's
        # balancer: the writes land in PostgreSQL and every acknowledged one is served.
        beta = pipeline.lb_bases('beta')[0]
        auth = admin_auth(sandbox / 'secrets' / 'zope-admin-password')
        with LoadGenerator(beta + '/@@zopeops-info', threads=2, max_seconds=900) as reads, \
                WriteLoad(beta, auth=auth, threads=2, max_seconds=900, pause=0.15) as writes:
            second = pipeline.playbook('site.yml')
        assert_no_changes(second)
        assert not reads.failures and reads.total > 20, reads.report()
        assert not writes.failed and len(writes.acknowledged) >= 5, writes.report()
        missing = set(writes.acknowledged) - write_ids_over_http(beta, auth)
        assert not missing, (sorted(missing)[:20], writes.report())
        # A ZEO server for dev only; beta's clients and PostgreSQL under supervisord.
        conf = sandbox / 'supervisor' / 'supervisord.conf'
        programs = subprocess.run([str(VENV_BIN / 'supervisorctl'), '-c', str(conf), 'status'],
                                  capture_output=True, text=True, check=False).stdout
        assert 'postgresql' in programs and 'dev-zeo' in programs, programs
        assert not [line for line in programs.splitlines()
                    if line.startswith('beta') and 'zeo' in line.split()[0]], programs
        # dev's demo content was made on ZEO by the init script; each stage serves.
        dev = requests.get('http://127.0.0.1:%d/partners/acme/' % base, timeout=30)
        assert dev.status_code == 200 and 'acme' in dev.text
        assert requests.get(beta + '/@@zopeops-info', timeout=30).status_code == 200
        # Each RelStorage side has its own database; dev has none.
        databases = pipeline.databases()
        assert {'zopeops_beta', 'zopeops_beta_upgrade'} <= databases, databases
        assert 'zopeops_dev' not in databases, databases
        # status.yml shows the storage kind of each side, and the pipeline healthy.
        status = pipeline.playbook('status.yml')
        assert status.returncode == 0, status.stdout[-8000:]
        report = json.loads((sandbox / 'lb' / 'status' / 'status.json').read_text())
        kinds = {stage['name']: {side['storage'] for side in stage['sides']}
                 for stage in report['stages']}
        assert kinds == {'dev': {'zeo'}, 'beta': {'relstorage'}}, kinds
        assert 'storage' in status.stdout and 'RelStorage' in status.stdout
        assert (PG_BIN / 'postgres').exists()

        # A wrong password: refused before anything is locked or changed, naming the stage
        # and the server; the password is never printed.
        wrong = 'Wrong-%s' % hashlib.sha1(str(sandbox).encode()).hexdigest()[:12]
        refused = pipeline.playbook('promote.yml', {'stage': 'beta',
                                                    'zopeops_postgresql_password': wrong})
        text = said(refused)
        assert refused.returncode != 0 and 'Refused before anything changed' in text, text[-3000:]
        assert 'stage beta' in text and '127.0.0.1:%d' % (base + 50) in text, text[-3000:]
        assert 'password authentication failed' in text, text[-3000:]
        assert wrong not in refused.stdout + refused.stderr
        assert not pipeline.state('beta'), 'a refused run must leave no state'

        # Policy upstream between kinds: beta gets dev's code and its ZEO data, converted into
        # the twin's database (zodb_convert) and copied from there; beta's own database is kept
        # for a rollback.
        dev_revision = requests.get('http://127.0.0.1:%d/@@zopeops-info' % base,
                                    timeout=30).json()['revision']
        _run, state = promote_without_loss(pipeline, 'upstream')
        assert requests.get(beta + '/@@zopeops-info', timeout=30).json()['revision'] \
            == dev_revision
        assert requests.get(beta + '/partners/acme/', timeout=30).status_code == 200
        assert state['tids']['twin_base'] and state['tids']['source_at_snapshot'], state['tids']
        kept = [name for name in pipeline.databases() if name.startswith('zopeops_beta_prev_')]
        assert state['rollback_target']['data_pair'] in kept, (state['rollback_target'], kept)
        # Policy self: the twin gets beta's own database and both switches catch up through
        # RelStorage; every acknowledged write is kept.
        _run, state = promote_without_loss(pipeline, 'self')
        assert all(w['frozen_seconds'] > 0 for w in state['freeze_windows'])
    finally:
        subprocess.run([sys.executable, str(REPO / 'scripts' / 'sandbox-stop'), str(sandbox)],
                       timeout=180, check=False)
