"""A RelStorage pipeline (inventories/relstorage: dev, beta and beta's twin, one PostgreSQL
cluster of the sandbox's own), made a mixed one: dev keeps its data on ZEO (a copy of the
inventory with dev in groups dev_zeo and dev_clients), beta and its twin on RelStorage. Brought
up by site.yml twice (the second run changes nothing), then beta promoted from dev under a
read load and an acknowledged-write load, with policy upstream (between kinds: dev's packed
Data.fs converted into the twin's database, then the usual RelStorage steps): 0 failed reads,
0 lost acknowledged writes, the freeze windows reported, the replaced database kept for a
rollback. A wrong PostgreSQL password is refused before anything changes, naming the stage and
the server, never printing the password.

In make test (docs/relstorage.md): one sandbox for the file's tests, to keep them lean; the
later ones add a catch-up fault with a rollback (its first switch catches up through
RelStorage), beta moved to ZEO and back (promotions with policy self; the move back copies the
twin's database into beta's and catches up through RelStorage at the switch back), a backup,
its drill and its restore through the twin, the scheduled backup, and a rolling restart of a
client.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import pytest
import requests
import yaml

from support.ansible import assert_no_changes, playbook_command, recap, run_playbook
from support.inventories import ZEO_PORTS, mixed_relstorage_inventory
from support.load import LoadGenerator
from support.paths import REPO, VENV_BIN
from support.ports import free_port_block
from support.postgresql import PG_BIN, Cluster, pg_missing
from support.procs import ProcessGroup
from support.promotion import Background, SandboxFiles, expected_writes, frozen_in_file, \
    map_file, run_under_load, said, state_events, wait_for_freeze
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

    def ensure_up(self):
        """The sandbox brought up by site.yml (by the first test, or now)."""
        if not (self.sandbox / 'supervisor' / 'supervisord.conf').exists():
            first = self.playbook('site.yml')
            assert first.returncode == 0, first.stdout[-15000:] + first.stderr[-3000:]

    def sql(self, query, database='postgres'):
        """``query``'s rows, one a line, on the sandbox's cluster (its superuser, by socket)."""
        run_dir = ('/tmp/zopeops-' + hashlib.sha1(str(self.sandbox).encode()).hexdigest()[:10]
                   + '-pg')
        psql = ['runuser', '-u', 'postgres', '--'] if os.geteuid() == 0 else []
        return subprocess.run(psql + ['psql', '-X', '-A', '-t', '-h', run_dir, '-p',
                                      str(self.base + 50), '-d', database, '-c', query],
                              capture_output=True, text=True, check=True).stdout

    def databases(self):
        return set(self.sql('SELECT datname FROM pg_database').split())


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


@pytest.fixture(scope='module')
def pipeline(tmp_path_factory):
    """One sandbox for the file's tests (the first one brings it up with site.yml; another
    run alone brings it up itself: ``ensure_up``), stopped at the end."""
    sandbox = tmp_path_factory.mktemp('relstorage') / 'sandbox'
    # A mixed pipeline: dev on ZEO, beta and its twin on RelStorage.
    inventory = mixed_relstorage_inventory(sandbox.parent / 'inventory', zeo_sides=['dev'])
    pipeline = RelStoragePipeline(sandbox, free_port_block(51, start=25000, stop=27400),
                                  inventory)
    try:
        yield pipeline
    finally:
        subprocess.run([sys.executable, str(REPO / 'scripts' / 'sandbox-stop'), str(sandbox)],
                       timeout=180, check=False)


def test_relstorage_pipeline_site_twice_and_promotions_under_load(pipeline):
    sandbox, base = pipeline.sandbox, pipeline.base
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
    assert 'beta-backup' in programs, programs  # beta's scheduled pg_dump (RelStorage)
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
    # Policy self is the move test's two promotions (its copies, its catch-ups through
    # RelStorage, every acknowledged write kept, both freezes > 0 s).


def run_limited(pipeline, extra):
    """site.yml for beta's twin's host alone (its clients' configuration)."""
    return run_playbook('site.yml', pipeline.inventory, dict(pipeline.extra_vars, **extra),
                        args=('--limit', 'beta_upgrade-local'))


def twin_on(port):
    """Extra vars that put beta's twin's database on the server at ``port`` (every other side
    keeps the sandbox's cluster): templated per host, as the inventory's own value is."""
    return {'zopeops_postgresql_port': (
        "{{ %d if zopeops_stage | default('') == 'beta' and zopeops_side | default('') == "
        "'upgrade' else zopeops_port_base | int + 50 }}" % port)}


def test_relstorage_twin_server_stopped_in_the_catch_up_then_rollback_to_with_its_data(pipeline):
    """Beta's twin on a PostgreSQL server of its own. A rollback of beta to the release before
    its last promotion (-e rollback_to), whose first switch catches the stage's writes up into
    the twin: the twin's server is stopped while writes are frozen for that catch-up. The
    switch is called off, nothing is lost, beta serves, the message says what happened and
    what to run. With the server back, the same rollback returns beta to that release *and*
    to the database kept with it (<db>_prev_<stamp>), as a ZEO stage returns to its kept pair."""
    pipeline.ensure_up()
    beta = pipeline.lb_bases('beta')[0]
    state = pipeline.state('beta')
    kept = {name for name in pipeline.databases() if name.startswith('zopeops_beta_prev_')}
    if not any(entry.get('data_pair') in kept for entry in state.get('rollback_history') or []):
        promote_without_loss(pipeline, 'upstream')  # run alone: a promotion that keeps one
        state = pipeline.state('beta')
        kept = {name for name in pipeline.databases() if name.startswith('zopeops_beta_prev_')}
    target = [entry for entry in state['rollback_history'] if entry.get('data_pair') in kept][-1]
    password = (pipeline.sandbox / 'secrets' / 'postgresql-beta').read_text().strip()
    with ProcessGroup() as procs:
        twin_pg = Cluster(procs).start()
        twin_pg.sql("CREATE ROLE zopeops_beta LOGIN CREATEDB PASSWORD '%s'" % password)
        twin_pg.sql('CREATE DATABASE zopeops_beta_upgrade OWNER zopeops_beta')
        moved = twin_on(twin_pg.port)
        try:
            placed = run_limited(pipeline, moved)
            assert placed.returncode == 0, placed.stdout[-8000:]

            def stop_twin_server_when_frozen(background):
                seen = wait_for_freeze(map_file(pipeline, 'frozen.map'), 'beta', background)
                if seen:
                    twin_pg.halt()
                return seen

            extra = dict(moved, rollback_to=target['revision'])
            run = run_under_load(pipeline, 'rollback.yml', 'beta', extra,
                                 during=stop_twin_server_when_frozen)
            print('rollback_to, twin server stopped: %s' % run.report())
            text = said(run.proc)
            assert run.interrupted_at and run.proc.returncode != 0, run.output
            # What happened (the twin's server, by its port, stopped in the catch-up), that
            # nothing moved, and what to do.
            assert 'stopped at step cutover_to_twin' in text, text[-4000:]
            # Stopped before the catch-up connected, or while it was connected.
            assert re.search(r'port %d failed: (Connection refused|FATAL:  ?the database '
                             r'system is shutting down|server closed the connection)'
                             % twin_pg.port, text), text[-4000:]
            assert 'PostgreSQL server is stopped or does not accept connections: start it, ' \
                'then run again' in text, text[-4000:]
            assert 'Nothing moved: beta kept serving on its live side and lost no write' in text
            assert not frozen_in_file(map_file(pipeline, 'frozen.map'), 'beta')
            assert pipeline.state('beta')['status'] == 'aborted', pipeline.state('beta')
            assert requests.get(beta + '/@@zopeops-info', timeout=30).json()['instance'] \
                == 'beta'
            assert not run.reads.failures and run.reads.total > 20, run.report()
            assert not run.writes.failed and len(run.writes.acknowledged) >= 5, run.report()
            served = write_ids_over_http(beta, pipeline.admin_auth())
            assert not set(run.writes.acknowledged) - served, run.report()

            # The server back: the same rollback goes through, code and kept database.
            twin_pg.resume()
            again = run_under_load(pipeline, 'rollback.yml', 'beta', extra)
            assert again.proc.returncode == 0, again.output
            print('rollback_to, again: %s' % again.report())
            assert 'Only the code goes back' not in said(again.proc)
            after = requests.get(beta + '/@@zopeops-info', timeout=30).json()
            assert after['revision'] == target['revision'] and after['instance'] == 'beta'
            assert target['data_pair'] not in pipeline.databases()  # it is zopeops_beta again
            assert not again.reads.failures and not again.writes.failed, again.report()
            served = write_ids_over_http(beta, pipeline.admin_auth())
            # The data went back: the writes of the failed run are not in the kept database;
            # those beta acknowledged after the switch back are.
            assert not set(run.writes.acknowledged) & served
            back = state_events(pipeline, 'beta')[1].get(('cutover_to_live', 'start'))
            after_back = {w for w, e in again.writes.acknowledged.items()
                          if e['instance'] == 'beta' and back and e['at'] > back}
            assert not after_back - served, again.report()
            assert any(name.startswith('zopeops_beta_upgrade_rolledback_')
                       for name in twin_pg.sql('SELECT datname FROM pg_database').split())
        finally:
            restored = run_limited(pipeline, {})  # the twin back on the sandbox's cluster
            assert restored.returncode == 0, restored.stdout[-8000:]


@contextlib.contextmanager
def beta_inventory_with_zeo(inventory, storage):
    """The inventory describes beta and its twin on ZEO too (groups beta_zeo and
    beta_upgrade_zeo, a ZEO port each), their PostgreSQL settings kept (group relstorage), and
    names ``storage`` for them (zopeops_storage in their host vars): the operator's step 1 of a
    move to ``storage`` (docs/relstorage.md). Put back as it was on leaving."""
    hosts = inventory / 'hosts.yml'
    files = [hosts] + [inventory / 'host_vars' / ('%s-local.yml' % side)
                       for side in ('beta', 'beta_upgrade')]
    saved = {path: path.read_text() for path in files}
    data = yaml.safe_load(saved[hosts])
    groups = data['all']['children']
    for side in ('beta', 'beta_upgrade'):
        groups[side]['children'] = dict({'%s_zeo' % side: {'hosts': {'%s-local' % side: None}}},
                                        **groups[side]['children'])
        host = inventory / 'host_vars' / ('%s-local.yml' % side)
        host.write_text(saved[host] + 'zopeops_storage: %s\nzopeops_zeo_port: '
                        '"{{ zopeops_port_base | int + %d }}"\n' % (storage, ZEO_PORTS[side]))
    hosts.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        yield
    finally:
        for path, text in saved.items():
            path.write_text(text)


def move_without_loss(pipeline, to):
    """promote.yml -e stage=beta -e migrate_storage=<to> under the read and acknowledged-write
    loads: 0 failed reads, every acknowledged write served, both switches' freezes recorded,
    beta's deployed.json on the new kind and the summary naming the kept old data."""
    before = 'relstorage' if to == 'zeo' else 'zeo'
    started = time.monotonic()
    run = run_under_load(pipeline, 'promote.yml', 'beta', {'migrate_storage': to})
    assert run.proc.returncode == 0, run.output
    print('move beta %s -> %s in %.0f s: %s' % (before, to, time.monotonic() - started,
                                                run.report()))
    assert not run.reads.failures and run.reads.total > 20, run.report()
    assert not run.writes.failed and len(run.writes.acknowledged) >= 5, run.report()
    missing = set(run.writes.acknowledged) - write_ids_over_http(pipeline.lb_bases('beta')[0],
                                                                 pipeline.admin_auth())
    assert not missing, (sorted(missing)[:20], run.report())
    state = pipeline.state('beta')
    assert state['status'] == 'done' and state['traffic'] == 'live', state
    switches = [window['switch'] for window in state['freeze_windows']]
    assert switches == ['cutover_to_twin', 'cutover_to_live'], state
    print('freeze windows (move to %s): %s' % (to, state['freeze_windows']))
    # Policy self: both switches catch the other side's writes up, under a freeze.
    assert all(window['frozen_seconds'] > 0 for window in state['freeze_windows']), state
    text = said(run.proc)
    assert 'Storage: beta moved from %s to %s; its %s data is kept as it was: %s.' % (
        before, to, before, 'database zopeops_beta on 127.0.0.1:%d' % (pipeline.base + 50)
        if before == 'relstorage' else 'beta/var/filestorage/Data.fs on beta-local') in text, \
        text[-3000:]
    ledger = (pipeline.sandbox / 'lb' / 'promotions' / 'ledger.jsonl').read_text()
    line = json.loads(ledger.splitlines()[-1])
    assert line['storage']['from'] == before and line['storage']['to'] == to, line
    assert line['storage']['kept'] in text and line['policy'] == 'self', line
    deployed = json.loads((pipeline.sandbox / 'beta' / 'deployed.json').read_text())
    assert deployed['storage'] == to, deployed
    conf = (pipeline.sandbox / 'beta' / 'etc' / 'zope-client1.conf').read_text()
    assert ('%import relstorage' in conf) == (to == 'relstorage'), conf
    for side in ('beta', 'beta_upgrade'):  # a move to ZEO leaves no RelStorage configuration
        assert (pipeline.sandbox / side / 'etc' / 'relstorage.conf').exists() == (to != 'zeo')
    programs = subprocess.run([str(VENV_BIN / 'supervisorctl'), '-c',
                               str(pipeline.sandbox / 'supervisor' / 'supervisord.conf'),
                               'status'], capture_output=True, text=True, check=False).stdout
    zeo = [line for line in programs.splitlines() if line.startswith('beta-zeo ')]
    assert (to == 'zeo') == bool(zeo and 'RUNNING' in zeo[0]), programs
    return run


def site_for_beta(pipeline):
    """site.yml for beta's and its twin's hosts alone: what a move may have left to change."""
    return run_playbook('site.yml', pipeline.inventory, pipeline.extra_vars,
                        args=('--limit', 'beta-local:beta_upgrade-local'))


def test_relstorage_move_beta_to_zeo_and_back_under_load(pipeline):
    """issue 24 point 3: beta moved from RelStorage to ZEO with zero downtime, and back, by the
    operator's order (docs/relstorage.md): the inventory names the new kind first, the move
    runs under the read and acknowledged-write loads (0 failed reads, 0 lost writes), and
    site.yml then changes nothing: on ZEO, checked with the inventory already naming
    relstorage for the move back, where site.yml leaves beta on the kind it runs (and says so)
    and finds nothing to change on beta; on RelStorage after the move back."""
    pipeline.ensure_up()
    with beta_inventory_with_zeo(pipeline.inventory, 'zeo'):
        move_without_loss(pipeline, 'zeo')
        # The acknowledged writes are in beta's new Data.fs too.
        assert pipeline.datafs('beta').stat().st_size > 0
    # Back: an inventory that no longer says where beta's ZEO server is, refused.
    state = pipeline.state('beta')
    refused = pipeline.playbook('promote.yml', {'stage': 'beta', 'migrate_storage': 'relstorage'})
    assert refused.returncode != 0 and 'beta runs on zeo, but the inventory no longer says ' \
        'where: keep group beta_zeo (its ZEO server) with zopeops_zeo_port until the move is ' \
        'done' in said(refused), said(refused)[-3000:]
    assert pipeline.state('beta') == state
    with beta_inventory_with_zeo(pipeline.inventory, 'relstorage'):
        # The operator's step 2 of the move back: beta stays on ZEO as the move left it (its
        # files, ZEO server, pack and backup as site.yml writes them for ZEO: nothing to
        # change on beta's host); its twin is configured on RelStorage.
        waiting = site_for_beta(pipeline)
        assert waiting.returncode == 0, waiting.stdout[-8000:]
        assert recap(waiting.stdout)['beta-local']['changed'] == 0, waiting.stdout[-8000:]
        assert 'beta runs on zeo (its deployed.json) and the inventory names relstorage: ' \
            'site.yml leaves its storage as it is' in said(waiting), said(waiting)[-3000:]
        move_without_loss(pipeline, 'relstorage')
    after = site_for_beta(pipeline)
    assert after.returncode == 0, after.stdout[-8000:]
    assert_no_changes(after)


# After the rollback test: its rollback_to returns to the database the first test's upstream
# promotion kept, which the restore's copy would prune (promote_keep_previous_data 1).
def test_relstorage_backup_drill_and_restore_under_load(pipeline):
    """backup.yml on a RelStorage stage: a pg_dump of beta's database in its repository, with
    the report, naming and listing of a ZEO backup; the drill restores it into a scratch
    database and finds its last tid; status.yml gives its age. Then restore.yml puts beta back
    to that dump through its twin under the loads: no failed read, every write the twin (or
    beta after the switch back) acknowledged kept, those beta took after the dump dropped and
    counted, beta's database the dump's history plus the twin's writes."""
    pipeline.ensure_up()
    beta = pipeline.lb_bases('beta')[0]
    repository = pipeline.sandbox / 'backups' / 'beta'
    before = pipeline.state('beta')  # a promotion's, if the first test ran before
    run = run_under_load(pipeline, 'backup.yml', 'beta', timeout=300)
    assert run.proc.returncode == 0, run.output
    print('backup beta (RelStorage): %s' % run.report())
    latest = json.loads((repository / 'latest.json').read_text())
    assert latest['kind'] == 'full' and latest['storage'] == 'relstorage', latest
    assert latest['files'] == [latest['stamp'] + '.dump'], latest
    assert (repository / latest['files'][0]).stat().st_size == latest['size'] > 0
    assert 'Dumped zopeops_beta on 127.0.0.1:%d' % (pipeline.base + 50) in said(run.proc)
    assert pipeline.state('beta') == before, 'a backup changes no promotion state'

    # The drill while the loads go on: restored into a scratch database, its last tid checked.
    drill = run_under_load(pipeline, 'backup.yml', 'beta', {'verify': True}, timeout=300)
    assert drill.proc.returncode == 0, drill.output
    assert 'as backed up' in said(drill.proc)
    report = json.loads((repository / 'reports' / 'drill-latest.json').read_text())
    assert report['last_tid'] == latest['last_tid'], (report, latest)
    assert 'zopeops_beta_drill' not in pipeline.databases()
    for each in (run, drill):
        assert not each.reads.failures and each.reads.total > 20, each.report()
        assert not each.writes.failed and len(each.writes.acknowledged) >= 5, each.report()
    auth = pipeline.admin_auth()
    missing = (set(run.writes.acknowledged) | set(drill.writes.acknowledged)) \
        - write_ids_over_http(beta, auth)
    assert not missing, (sorted(missing)[:20], drill.report())

    status = pipeline.playbook('status.yml')
    assert status.returncode == 0, status.stdout[-5000:]
    page = json.loads((pipeline.sandbox / 'lb' / 'status' / 'status.json').read_text())
    stage = next(s for s in page['stages'] if s['name'] == 'beta')
    assert stage['backup']['ok'] and stage['backup']['stamp'] == latest['stamp'], stage

    # The restore of that dump through the twin, under the loads. The drill's writes came
    # after the dump: the restore drops them, and beta's own before the first switch.
    restore = run_under_load(pipeline, 'restore.yml', 'beta', {'backup': latest['stamp']})
    assert restore.proc.returncode == 0, restore.output
    print('restore beta (RelStorage): %s' % restore.report())
    assert not restore.reads.failures and restore.reads.total > 20, restore.report()
    assert not restore.writes.failed and len(restore.writes.acknowledged) >= 5, restore.report()
    state, events = state_events(pipeline, 'beta')
    assert state['status'] == 'done' and state['traffic'] == 'live', state
    assert state['plan']['restore']['stamp'] == latest['stamp'], state['plan']['restore']
    restored_tid = state['plan']['restore']['last_tid']
    assert restored_tid == latest['last_tid']
    windows = state['freeze_windows']
    print('freeze windows (restore): %s' % windows)
    assert [w['switch'] for w in windows] == ['cutover_to_twin', 'cutover_to_live'], windows
    assert not windows[0].get('replayed'), windows  # no catch-up into the twin: dropped
    back = events[('cutover_to_live', 'start')]
    acked = restore.writes.acknowledged
    kept = {w for w, e in acked.items()
            if e['instance'] == 'beta_upgrade' or (e['instance'] == 'beta' and e['at'] > back)}
    dropped = set(drill.writes.acknowledged) | {
        w for w, e in acked.items() if e['instance'] == 'beta' and e['at'] <= back}
    served = write_ids_over_http(beta, auth)
    assert kept and kept <= served, (sorted(kept - served)[:20], restore.report())
    assert not dropped & served, sorted(dropped & served)[:20]

    # beta's database after: the dump's history up to its last tid, as it was, then only the
    # twin's and later writes; the database it replaced is kept, and its transactions after
    # the dump are the count the run gives (state, ledger, summary).
    replaced = state['rollback_target']['data_pair']
    assert replaced in pipeline.databases(), replaced

    def tids(database, where):
        return pipeline.sql('SELECT tid FROM transaction WHERE %s ORDER BY tid' % where,
                            database).split()

    cut = 'tid <= %d' % int(restored_tid, 16)
    assert tids('zopeops_beta', cut) == tids(replaced, cut) and tids(replaced, cut)
    assert '%016x' % int(tids('zopeops_beta', cut)[-1]) == restored_tid
    gone = tids(replaced, 'tid > %d' % int(restored_tid, 16))
    assert len(gone) >= len(dropped) and not set(gone) & set(tids('zopeops_beta', 'true'))
    assert state['replaced_transactions'] == len(gone), state
    entry = pipeline.ledger()[-1]
    assert (entry['action'], entry['result']) == ('restore', 'success'), entry
    assert entry['backup']['stamp'] == latest['stamp'] and entry['dropped_transactions'] == len(gone)
    text = said(restore.proc)
    assert 'Restored beta to the backup %s of beta' % latest['stamp'] in text, text[-3000:]
    assert 'Dropped %d transactions beta had after it' % len(gone) in text, text[-3000:]
    password = (pipeline.sandbox / 'secrets' / 'postgresql-beta').read_text().strip()
    assert password not in restore.output

    # The scheduled backup site.yml installed for beta (the supervisord program beta-backup)
    # runs the same dump: one run of its command makes a dump of beta's database as it is
    # now (the restore's writes since the last dump), with the same report; its settings
    # hold no password (it reads the clients' etc/pgpass).
    config = pipeline.sandbox / 'beta' / 'etc' / 'backup.json'
    settings = json.loads(config.read_text())
    assert settings['storage'] == 'relstorage' and password not in config.read_text(), settings
    command = [str(pipeline.sandbox / 'beta' / 'current' / 'venv' / 'bin' / 'python'),
               str(pipeline.sandbox / 'beta' / 'bin' / 'zopeops_backup' / 'zopeops_backup.py'),
               '--config', str(config)]
    scheduled = subprocess.run(command, capture_output=True, text=True, timeout=300,
                               check=False)
    assert scheduled.returncode == 0, scheduled.stdout + scheduled.stderr
    made = json.loads(scheduled.stdout.splitlines()[-1])
    assert made['kind'] == 'full' and made['report']['stamp'] > latest['stamp'], made
    now = '%016x' % int(pipeline.sql('SELECT max(tid) FROM transaction', 'zopeops_beta'))
    assert made['report']['last_tid'] == now and made['report']['storage'] == 'relstorage'
    assert json.loads((repository / 'latest.json').read_text())['stamp'] \
        == made['report']['stamp']
    assert password not in scheduled.stdout + scheduled.stderr
    drilled = subprocess.run(command + ['--verify'], capture_output=True, text=True,
                             timeout=300, check=False)
    assert drilled.returncode == 0 and json.loads(drilled.stdout)['verified'], drilled.stdout


def test_relstorage_restart_of_a_client_under_load_and_no_zeo_to_restart(pipeline):
    """restart.yml on a RelStorage stage: a client restarted (drained, restarted, checked, put
    back) under the loads with nothing lost, as on ZEO; -e component=zeo refused, saying the
    stage has no ZEO server, before anything is locked."""
    pipeline.ensure_up()
    conf = pipeline.sandbox / 'supervisor' / 'supervisord.conf'

    def pid():
        line = subprocess.run([str(VENV_BIN / 'supervisorctl'), '-c', str(conf), 'status',
                               'beta-client1'], capture_output=True, text=True,
                              check=False).stdout
        assert 'RUNNING' in line, line
        return int(line.split('pid ')[1].split(',')[0])

    before = pid()
    run = run_under_load(pipeline, 'restart.yml', 'beta', {'clients': 'client1'}, timeout=600)
    assert run.proc.returncode == 0, run.output
    print('restart beta client1 (RelStorage): %s' % run.report())
    assert 'restart of its clients succeeded' in said(run.proc), run.output
    assert pid() != before
    assert not run.reads.failures and run.reads.total > 20, run.report()
    assert not run.writes.failed and len(run.writes.acknowledged) >= 5, run.report()
    served = write_ids_over_http(pipeline.lb_bases('beta')[0], pipeline.admin_auth())
    assert not set(run.writes.acknowledged) - served, run.report()
    entry = [e for e in pipeline.ledger() if e.get('action') == 'restart'][-1]
    assert entry['result'] == 'succeeded' and entry['stage'] == 'beta', entry

    refused = pipeline.playbook('restart.yml', {'stage': 'beta', 'component': 'zeo'})
    text = said(refused)
    assert refused.returncode != 0 and 'it has no ZEO server to restart' in text, text[-3000:]
    assert 'Nothing was restarted' in text
    assert not (pipeline.sandbox / 'lb' / 'promotions' / 'beta.lock').exists()
