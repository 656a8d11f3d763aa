"""The pipeline on production-shaped machines (tests/harness): site.yml twice, services running
as the service user, a machine unreachable at preflight, prod's backup, drill and scheduled
backup, the promotion of prod under reads through both balancers and acknowledged writes (a
client machine lost after the switch to the twin, then the run resumed), data moving machine
to machine, status.yml. ``multihost_full`` (make test-multihost only) adds a rolling restart of
prod's clients, one balancer refusing the switch (most of a promotion: the twin comes up) and
the promotions of beta and test.

The tests run in this order on one harness (one xdist group): each builds on the last.
"""
from __future__ import annotations

import json
import re
import socket
import time

import pytest
import requests
import yaml

from harness import inventory
from support.ansible import assert_no_changes, recap
from support.promotion import (assert_zero_loss, expected_writes, frozen_in_file, lost_writes,
                               output, run_under_load, said, state_events)

pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.multihost,
              pytest.mark.xdist_group('multihost')]


@pytest.fixture(scope='module')
def deployed(harness):
    """site.yml twice on fresh machines, timed."""
    runs = []
    for _run in range(2):
        started = time.monotonic()
        runs.append((harness.playbook('site.yml'), time.monotonic() - started))
    first = runs[0][0]
    if first.returncode != 0:
        pytest.fail('site.yml failed on the machines:\n%s' % output(first), pytrace=False)
    return runs


def live_clients(harness, stage):
    """[(host, address, port)] of every Zope client of a stage's live side, on every machine."""
    found = []
    for path in sorted((harness.inventory / 'host_vars').glob('*.yml')):
        host_vars = yaml.safe_load(path.read_text())
        if host_vars.get('zopeops_stage') == stage and host_vars.get('zopeops_side') == 'live':
            found += [(path.stem, host_vars['ansible_host'], client['port'])
                      for client in host_vars.get('zopeops_clients', [])]
    return found


def served_revisions(harness, stage):
    return {'%s:%s' % (host, port): requests.get('http://%s:%d/@@zopeops-info' % (address, port),
                                                 timeout=15).json()['revision']
            for host, address, port in live_clients(harness, stage)}


def test_site_twice_the_second_run_changes_nothing(deployed):
    (first, first_s), (second, second_s) = deployed
    assert recap(first.stdout), output(first)
    assert_no_changes(second)
    print('site.yml: first %.0f s, second %.0f s' % (first_s, second_s))


def test_every_stage_answers_through_both_balancers(harness, deployed):
    for stage in inventory.LB_PORTS:
        for base in harness.lb_bases(stage):
            answer = requests.get(base + '/@@zopeops-info', timeout=15)
            assert answer.status_code == 200, (base, answer.text[:300])
            assert answer.json()['stage'] == stage


def test_services_run_as_the_service_user_under_their_units(harness, deployed):
    """Every ZEO server, Zope client and HAProxy runs unprivileged, under the unit systemd
    started it with (the machine's own process table: its own PID namespace)."""
    expected = {'runzeo': harness.service_user, 'runwsgi': harness.service_user,
                'haproxy': 'haproxy'}
    for machine, command in (('db1', 'runzeo'), ('app1', 'runwsgi'), ('app3', 'runwsgi'),
                             ('stage1', 'runzeo'), ('stage1', 'runwsgi'), ('lb1', 'haproxy'),
                             ('lb2', 'haproxy')):
        table = harness[machine].run(['ps', '-ww', '-eo', 'user:32=,unit:48=,args='],
                                     check=True).stdout
        rows = [line.split(None, 2) for line in table.splitlines() if command in line
                and 'ps -ww' not in line]
        assert rows and {user for user, _unit, _args in rows} == {expected[command]}, \
            (machine, command, table)
        units = {unit for _user, unit, _args in rows}
        assert all(unit.startswith('zopeops-') or unit == 'haproxy.service' for unit in units), \
            (machine, units)
    # Each listens on the machine's private address only, never on every address.
    for machine, command in (('db1', 'runzeo'), ('app1', 'runwsgi'), ('lb1', 'haproxy')):
        sockets = harness[machine].run(['ss', '-Hltnp'], check=True).stdout.splitlines()
        ours = [line.split()[3] for line in sockets if '"%s"' % command in line]
        assert ours and {local.rsplit(':', 1)[0] for local in ours} == \
            {harness[machine].address}, (machine, sockets)
    # The units as systemd runs them: enabled at boot, with their account and umask.
    shown = harness['app1'].run(['systemctl', 'show', '-p', 'User', '-p', 'UMask', '-p',
                                 'UnitFileState', 'zopeops-prod-client1'], check=True).stdout
    assert 'User=%s' % harness.service_user in shown and 'UnitFileState=enabled' in shown, shown


def test_a_machine_unreachable_at_preflight_is_named_and_nothing_changes(harness, deployed):
    before, state_before = served_revisions(harness, 'prod'), harness.state('prod')
    harness.machines.stop_sshd('app3')
    try:
        proc = harness.playbook('promote.yml', {'stage': 'prod'})
    finally:
        harness.machines.start_sshd('app3')
    assert proc.returncode != 0, output(proc)
    assert 'Refused before anything changed' in said(proc), output(proc)
    assert 'prod-app3 on machine %s' % harness['app3'].address in said(proc), output(proc)
    assert served_revisions(harness, 'prod') == before
    assert harness.state('prod') == state_before


PULL_KEY_PLAY = """
- name: The pipeline's facts.
  hosts: all
  gather_facts: false
  roles: [zopeops.stages.pipeline]
- name: The key prod's twin machine pulls a stage's snapshots with, as the promote role makes it.
  hosts: prod_upgrade_zeo
  gather_facts: false
  tasks:
    - name: Authorize or remove it.
      ansible.builtin.include_role: {name: zopeops.stages.promote, tasks_from: pull_key.yml}
      vars:
        promote_snapshot_of: "{{ zopeops_model.stages[of_stage].live }}"
        promote_pull_key_state: "{{ key_state }}"
"""
KEY = '/srv/zopeops/.ssh/promote-prod_upgrade_ed25519'
OUTGOING = '/srv/zopeops/outgoing/to-prod_upgrade'


def keys_left(harness):
    """Pull keys left anywhere: authorized on a machine's login user, or a key file."""
    left = []
    for name in inventory.MACHINES:
        machine = harness[name]
        authorized = machine.path('/home/%s/.ssh/authorized_keys' % harness.machines.ssh_user)
        if authorized.exists() and 'zopeops-promote' in authorized.read_text():
            left.append('%s: authorized_keys' % name)
        folder = machine.path('/srv/zopeops/.ssh')
        if folder.exists():
            left += ['%s: %s' % (name, key.name) for key in folder.glob('promote*')]
    return left


def test_the_pull_key_may_only_read_its_one_snapshot_folder(harness, deployed, tmp_path):
    """The key a machine pulls a snapshot with, as the role authorizes it on the source: it
    reads the one folder, and cannot run a command (id, sudo), write, or read outside it."""
    db1, db2 = harness['db1'], harness['db2']
    login = harness.machines.ssh_user
    db1.run(['mkdir', '-p', OUTGOING], check=True)
    db1.run(['sh', '-c', 'echo snapshot > %s/Data.fs' % OUTGOING], check=True)
    db1.run(['chown', '-R', login, OUTGOING.rsplit('/', 1)[0]], check=True)
    play = tmp_path / 'pull_key.yml'
    play.write_text(PULL_KEY_PLAY)
    made = harness.playbook(str(play), {'key_state': 'present', 'of_stage': 'prod'})
    assert made.returncode == 0, output(made)
    try:
        ssh = ('ssh -i %s -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no '
               '-o UserKnownHostsFile=/dev/null' % KEY)
        source = '%s@%s' % (login, db1.address)
        # What db2 pulls lands on db2 (its /tmp, read here through its root).
        pulled = db2.run(['rsync', '-a', '-e', ssh, source + ':/', '/tmp/zh-got/'])
        assert pulled.returncode == 0, pulled.stderr
        assert db2.path('/tmp/zh-got/Data.fs').read_text() == 'snapshot\n'
        for command in (['id'], ['sudo', '-n', 'id'], ['sh', '-c', 'echo owned > /tmp/x']):
            shell = db2.run(['ssh', *ssh.split()[1:], source, *command])
            assert shell.returncode != 0 and 'uid=' not in shell.stdout, (command, shell)
        db2.path('/tmp/zh-evil').write_text('x')
        pushed = db2.run(['rsync', '-a', '-e', ssh, '/tmp/zh-evil', source + ':/'])
        assert pushed.returncode != 0
        assert db1.run(['test', '-e', OUTGOING + '/evil']).returncode != 0
        outside = db2.run(['rsync', '-a', '-e', ssh, source + ':/../../../../etc/passwd',
                           '/tmp/zh-passwd'])
        assert outside.returncode != 0 and not db2.path('/tmp/zh-passwd').exists(), outside
    finally:
        removed = harness.playbook(str(play), {'key_state': 'absent', 'of_stage': 'prod'})
        db1.run(['rm', '-rf', OUTGOING])
    assert removed.returncode == 0, output(removed)
    assert keys_left(harness) == []


BACKUPS = '/srv/zopeops/backups/prod'


def backup_reports(machine):
    """{stamp: report} of prod's backups on its ZEO machine (their files there)."""
    folder = machine.path(BACKUPS + '/reports')
    return {path.stem: json.loads(path.read_text()) for path in folder.glob('*.json')
            if path.stem != 'drill-latest'} if folder.exists() else {}


def test_backup_of_prod_the_drill_and_the_scheduled_backup(harness, deployed):
    """backup.yml and its drill under the loads, on prod's ZEO machine: the backup, its report
    and every file of the repository belong to the service user; the drill passes; the backup
    and pack timers site.yml installed are enabled and listed by systemd; the timer's service,
    started as the timer would, backs up what was written since as the service user."""
    db1 = harness['db1']
    run = run_under_load(harness, 'backup.yml', 'prod', timeout=600)
    assert run.proc.returncode == 0, output(run.proc)
    assert_zero_loss(harness, run, 'prod', 'self')
    latest = json.loads(db1.path(BACKUPS + '/latest.json').read_text())
    assert latest['kind'] == 'full' and latest['ok'] and latest['last_tid'], latest
    assert db1.path(BACKUPS + '/' + latest['files'][0]).exists()
    assert latest['blob_backup'] == 'blobs/' + latest['stamp'], latest
    drill = run_under_load(harness, 'backup.yml', 'prod', {'verify': True}, timeout=600)
    assert drill.proc.returncode == 0, output(drill.proc)
    assert_zero_loss(harness, drill, 'prod', 'self')
    assert 'fstest passed' in said(drill.proc), output(drill.proc)
    report = json.loads(db1.path(BACKUPS + '/reports/drill-latest.json').read_text())
    assert report['ok'] and report['last_tid'] == latest['last_tid'], report

    timers = db1.run(['systemctl', 'list-timers', '--all', '--no-pager'], check=True).stdout
    for unit in ('zopeops-prod-backup.timer', 'zopeops-prod-pack.timer'):
        assert unit in timers, timers
        enabled = db1.run(['systemctl', 'is-enabled', unit]).stdout.strip()
        assert enabled == 'enabled', (unit, enabled)
    # One scheduled backup, started as the timer starts it: the writes of the loads above
    # came after the backup, so it is an incremental one with a report of its own.
    before = backup_reports(db1)
    fired = db1.run(['systemctl', 'start', 'zopeops-prod-backup.service'], timeout=600)
    shown = db1.run(['systemctl', 'show', '-p', 'Result', '-p', 'ExecMainStatus',
                     'zopeops-prod-backup.service']).stdout
    journal = db1.run(['journalctl', '--no-pager', '-n', '30', '-u',
                       'zopeops-prod-backup.service']).stdout
    assert fired.returncode == 0 and 'Result=success' in shown, (fired.stderr, shown, journal)
    new = {stamp: r for stamp, r in backup_reports(db1).items() if stamp not in before}
    assert [r['kind'] for r in new.values()] == ['incremental'], (new, journal)
    # Everything in the repository is the service user's, nothing root's.
    strangers = db1.run(['find', '/srv/zopeops/backups', '!', '-user', harness.service_user],
                        check=True).stdout
    assert not strangers.strip(), strangers
    print('backup prod: %s; drill: %s' % (run.report(), drill.report()))


def main_pids(harness, stage):
    """{unit: MainPID} of every live client of a stage, read from systemd on its machine."""
    found = {}
    for path in sorted((harness.inventory / 'host_vars').glob('*.yml')):
        host_vars = yaml.safe_load(path.read_text())
        if host_vars.get('zopeops_stage') != stage or host_vars.get('zopeops_side') != 'live':
            continue
        machine = harness[path.stem.split('-', 1)[1]]
        for client in host_vars.get('zopeops_clients', []):
            unit = 'zopeops-%s-%s' % (stage, client['name'])
            shown = machine.run(['systemctl', 'show', '-p', 'MainPID', '--value', unit],
                                check=True).stdout.strip()
            found['%s/%s' % (machine.name, unit)] = int(shown or 0)
    return found


@pytest.mark.multihost_full
def test_rolling_restart_of_prod_under_load_through_both_balancers(harness, deployed):
    """restart.yml restarts prod's clients on three machines one at a time while both
    balancers serve the reads and lb1 the writes: no read fails, no acknowledged write is
    lost, and every client runs a new process (its unit's MainPID in its machine)."""
    before = main_pids(harness, 'prod')
    assert len(before) == sum(harness.prod_clients) and all(before.values()), before
    started = time.monotonic()
    run = run_under_load(harness, 'restart.yml', 'prod', timeout=900)
    took = time.monotonic() - started
    assert run.proc.returncode == 0, output(run.proc)
    assert 'restart of its clients succeeded' in said(run.proc), output(run.proc)
    assert_zero_loss(harness, run, 'prod', 'self')
    after = main_pids(harness, 'prod')
    assert all(after[unit] and after[unit] != before[unit] for unit in before), (before, after)
    assert_prod_served_by(harness, 'live')
    print('rolling restart of prod: %.0f s; %s' % (took, run.report()))


def haproxy_command(socket_path, command):
    """One command on a balancer's admin socket (its path as this machine sees it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(socket_path))
        sock.sendall(command.encode() + b'\n')
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b''.join(chunks).decode()
            chunks.append(chunk)


def assert_prod_served_by(harness, side):
    """Both balancers send prod to ``side`` (their runtime map) and no write freeze is left."""
    for lb in ('lb1', 'lb2'):
        active = haproxy_command(harness[lb].path('/run/zopeops/haproxy.sock'),
                                 'show map %s' % '/etc/haproxy/active.map')
        assert re.search(r'\bprod be_prod_%s\b' % side, active), (lb, active)
        frozen = harness[lb].path('/etc/haproxy/frozen.map')
        assert not frozen_in_file(frozen, 'prod'), (lb, frozen.read_text())


@pytest.mark.multihost_full
def test_one_balancer_refusing_the_switch_puts_both_back_on_live(harness, deployed):
    """lb2 cannot pass its gate (the twin's servers are in maintenance there): the switch is
    refused on lb2, lb1 is put back, both send prod to its live side, reads never fail, and
    no write reached the twin (the freeze lasts until every balancer switched)."""
    lb2 = harness['lb2']
    config = lb2.path('/etc/haproxy/haproxy.cfg').read_text()
    backend = config[config.index('backend be_prod_upgrade'):].split('\nbackend ', 1)[0]
    servers = re.findall(r'^\s*server (\S+) ', backend, re.M)
    assert servers, backend
    admin = lb2.path('/run/zopeops/haproxy.sock')
    for server in servers:
        haproxy_command(admin, 'disable server be_prod_upgrade/%s' % server)
    try:
        run = run_under_load(harness, 'promote.yml', 'prod', timeout=900,
                             extra={'promote_gate_timeout': 10})
    finally:
        for server in servers:
            haproxy_command(admin, 'enable server be_prod_upgrade/%s' % server)
    assert run.proc.returncode != 0, output(run.proc)
    assert 'Nothing moved' in said(run.proc), output(run.proc)
    assert not run.reads.failures, run.report()
    assert not run.writes.failed, run.report()
    assert_prod_served_by(harness, 'live')
    # The traffic stayed on prod: it holds every write it acknowledged, and none went elsewhere.
    assert {entry['instance'] for entry in run.writes.acknowledged.values()} == {'prod'}, \
        run.report()
    lost = lost_writes(harness, 'prod', run.writes.acknowledged)
    assert lost['missing_http'] == 0 and lost['missing_datafs'] == 0, (lost, run.report())
    print('refused switch: %s' % run.report())


@pytest.mark.multihost_full
@pytest.mark.parametrize('stage', ['beta', 'test'])
def test_promote_under_load_through_both_balancers(harness, deployed, stage):
    predecessor = {'beta': 'dev', 'test': 'beta'}[stage]
    wanted = set(served_revisions(harness, predecessor).values())
    assert len(wanted) == 1, wanted
    started = time.monotonic()
    run = run_under_load(harness, 'promote.yml', stage, timeout=900)
    took = time.monotonic() - started
    assert run.proc.returncode == 0, output(run.proc)
    assert_zero_loss(harness, run, stage, 'upstream')
    assert set(served_revisions(harness, stage).values()) == wanted, run.report()
    # Data moved machine to machine: pulled over SSH by the machine that needed it.
    assert 'Ensure the snapshot is pulled here over SSH' in run.proc.stdout, output(run.proc)
    print('promote %s: %.0f s; %s' % (stage, took, run.report()))


def test_promote_prod_losing_a_client_machine_after_the_switch_then_resume(
        harness, deployed, tmp_path):
    """prod's promotion under load; once both balancers send prod to the twin, app3 (live prod
    clients only) is lost as in a power cut. The run stops, names the machine and says the twin
    serves; the twin keeps serving without a failed read or a lost write. app3 comes back,
    ``action=resume`` finishes: every prod client on every machine serves test's revision and
    every write the twin or the upgraded stage acknowledged, in both runs, is in prod's data.
    A pull key a killed run left (the twin machine's, authorized on test's ZEO machine, as a run
    killed during that pull leaves it) is gone after the runs, with every key they made."""
    play = tmp_path / 'pull_key.yml'
    play.write_text(PULL_KEY_PLAY)
    left = harness.playbook(str(play), {'key_state': 'present', 'of_stage': 'test'})
    assert left.returncode == 0, output(left)
    assert keys_left(harness), 'the killed run\'s key was not planted'
    wanted = set(served_revisions(harness, 'test').values())
    assert len(wanted) == 1, wanted
    assert set(served_revisions(harness, 'prod').values()) != wanted
    maps = [harness[lb].path('/etc/haproxy/active.map') for lb in ('lb1', 'lb2')]

    crashed = []

    def lose_app3(background):
        deadline = time.monotonic() + 900
        while background.proc.poll() is None and time.monotonic() < deadline:
            if all(re.search(r'^prod\s+be_prod_upgrade\b', path.read_text(), re.M)
                   for path in maps):
                harness.machines.crash('app3')
                crashed.append(time.time())
                return crashed[0]
            time.sleep(0.2)
        return None

    started = time.monotonic()
    try:
        first = run_under_load(harness, 'promote.yml', 'prod', timeout=900, during=lose_app3)
    finally:
        if crashed:
            harness.boot('app3')
    first_s = time.monotonic() - started
    assert first.interrupted_at is not None, 'app3 was never lost:\n' + output(first.proc)
    assert first.proc.returncode != 0, output(first.proc)
    assert 'prod-app3 on machine %s' % harness['app3'].address in said(first.proc), \
        output(first.proc)
    assert 'TRAFFIC IS SERVED BY THE TWIN prod_upgrade' in said(first.proc), output(first.proc)
    assert not first.reads.failures, first.report()
    assert not first.writes.failed, first.report()
    assert_prod_served_by(harness, 'upgrade')
    state = harness.state('prod')
    assert (state.get('status'), state.get('traffic')) == ('failed', 'upgrade'), state
    # Data moved machine to machine: test's snapshot pulled over SSH by the twin's ZEO machine.
    assert 'Ensure the snapshot is pulled here over SSH' in first.proc.stdout, output(first.proc)

    started = time.monotonic()
    second = run_under_load(harness, 'promote.yml', 'prod', timeout=900,
                            extra={'action': 'resume'})
    second_s = time.monotonic() - started
    assert second.proc.returncode == 0, output(second.proc)
    assert_zero_loss(harness, second, 'prod', 'upstream', earlier=[first])
    assert set(served_revisions(harness, 'prod').values()) == wanted, second.report()
    assert_prod_served_by(harness, 'live')
    assert keys_left(harness) == []  # every pull removed its key, also in the stopped run
    print('promote prod: %.0f s until app3 was lost and the run stopped (%s); resume %.0f s (%s)'
          % (first_s, first.report(), second_s, second.report()))


def test_a_balancer_failing_after_the_first_switched_loses_no_write(harness, deployed):
    """lb2's HAProxy is killed the moment lb1 sends prod to the twin (under the freeze, which
    lb1 holds until every balancer has switched). systemd starts it again at once: lb2's switch
    goes through, or fails; then no write reached the twin (lb1 held its freeze), so both
    balancers go back to prod's live side, or, where lb2 cannot be reached, the twin is kept for
    it and a resume finishes. Every way, reads keep flowing and no acknowledged write is
    lost."""
    maps = {lb: harness[lb].path('/etc/haproxy/active.map') for lb in ('lb1', 'lb2')}

    def kill_lb2(background):
        deadline = time.monotonic() + 900
        while background.proc.poll() is None and time.monotonic() < deadline:
            if re.search(r'^prod\s+be_prod_upgrade\b', maps['lb1'].read_text(), re.M):
                shown = harness['lb2'].run(['systemctl', 'show', '-p', 'MainPID', '--value',
                                            'haproxy'])
                pid = int(shown.stdout.strip() or 0)
                assert pid > 0, (shown, harness['lb2'].run(['systemctl', 'status', '--no-pager',
                                                            'haproxy']).stdout)
                harness['lb2'].run(['kill', '-KILL', str(pid)], check=True)
                return time.time()
            time.sleep(0.05)
        return None

    first = run_under_load(harness, 'promote.yml', 'prod', timeout=900, during=kill_lb2)
    assert first.interrupted_at is not None, 'lb1 never switched:\n' + output(first.proc)
    runs = [first]
    if 'action=resume' in said(first.proc):
        runs.append(run_under_load(harness, 'promote.yml', 'prod', timeout=900,
                                   extra={'action': 'resume'}))
        assert runs[-1].proc.returncode == 0, output(runs[-1].proc)
    elif first.proc.returncode == 0:
        # systemd started lb2's HAProxy again at once (Restart=always) with the maps' files,
        # which lb_switch keeps in step with its runtime: lb2's switch went through.
        assert_prod_served_by(harness, 'live')
    else:
        assert 'Nothing moved' in said(first.proc), output(first.proc)
        assert_prod_served_by(harness, 'live')
        # lb1 held its freeze: the twin acknowledged no write.
        assert {e['instance'] for e in first.writes.acknowledged.values()} == {'prod'}
    for run in runs:
        assert not run.writes.failed, run.report()
        # reads through lb2 fail only while its HAProxy restarts
        assert not [f for f in run.reads.failures if f[0] > first.interrupted_at + 10], \
            run.report()
    if first.proc.returncode != 0 and len(runs) == 1:
        expected = set(first.writes.acknowledged)   # nothing moved: prod kept every write
    else:
        # The upstream policy replaces prod's data by test's: what prod acknowledged before the
        # twin took the traffic is gone by definition; the rest must be there.
        switch_back = state_events(harness, 'prod')[1].get(('cutover_to_live', 'start'))
        expected = expected_writes(runs[-1], 'prod', 'upstream', switch_back)
        for run in runs[:-1]:
            expected |= expected_writes(run, 'prod', 'upstream')
        assert expected, [run.report() for run in runs]
    lost = lost_writes(harness, 'prod', expected)
    assert lost['missing_http'] == 0 and lost['missing_datafs'] == 0, (lost, first.report())


def test_status_reports_every_stage(harness, deployed):
    proc = harness.playbook('status.yml')
    assert proc.returncode == 0, output(proc)
    for stage in inventory.LB_PORTS:
        assert stage in proc.stdout
