"""zeo_service: the decisions (start, restart, update, stop), readiness and failure reports."""
from __future__ import annotations

import json
import os
import socket
import stat
import struct
import threading

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils import readiness
from ansible_collections.zopeops.stages.plugins.module_utils import service_engine as engine
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_format
from ansible_collections.zopeops.stages.plugins.module_utils.process_manager import (
    ProcessManagerError, ProcessStatus)
from support.modules import run_module

TID = '03f2a1b7c0d4e5f6'


class FakeManager:
    """One program in memory with a state; start/stop change it. It answers the process
    manager's batch calls (the engine's only ones) for its one program."""

    kind = 'supervisord'

    def __init__(self, state='STOPPED', pending='', start_to='RUNNING', fail_start=None):
        self.state = state
        self.pid = 100 if state == 'RUNNING' else None
        self.pending = pending
        self.start_to = start_to
        self.fail_start = fail_start
        self.calls = []
        self.commands = []

    def describe(self):
        return 'supervisord (fake)'

    def status_many(self, names):
        return {name: ProcessStatus(name, self.state, self.pid) for name in names}

    def pending_changes(self, names):
        self.calls.append('reread')
        return {name: self.pending for name in names}

    def apply_changes(self, names):
        self.calls.append('update')
        if self.state == 'ABSENT':
            self.state = 'STOPPED'

    def start_many(self, names):
        self.calls.append('start')
        if self.fail_start:
            self.state = 'FATAL'
            raise ProcessManagerError(self.fail_start)
        self.state = self.start_to
        self.pid = 200 + len(self.calls) if self.state == 'RUNNING' else None

    def stop_many(self, names):
        self.calls.append('stop')
        self.state, self.pid = 'STOPPED', None

    def log_tail(self, name):
        return '\n'.join('line %d' % n for n in range(100))


def params(**overrides):
    base = dict(name='test-zeo', kind='zeo', state='started', address='127.0.0.1:1',
                storage='1', expected_tid=None, health_path='/', timeout=5, log_path=None,
                supervisor_config='/srv/s.conf', process_manager='supervisord')
    base.update(overrides)
    return base


@pytest.fixture
def ready(monkeypatch):
    """Every probe succeeds at once with TID; no port is open."""
    monkeypatch.setattr(engine, 'probe_zeo', lambda *a, **k: readiness.ProbeResult(
        True, 'ZEO answers', TID))
    monkeypatch.setattr(engine, 'probe_http', lambda *a, **k: readiness.ProbeResult(
        True, 'answered HTTP 200', 200))
    monkeypatch.setattr(engine, 'port_open', lambda *a, **k: False)
    monkeypatch.setattr(engine, 'wait_until_gone', lambda *a, **k: (True, True))
    # The fakes' pids are not real processes: the wait asks the process manager every round.
    monkeypatch.setattr(engine, 'pid_alive', lambda pid: False)


def test_started_when_running_changes_nothing_but_checks_readiness(ready):
    manager = FakeManager('RUNNING')
    result = engine.Programs(params(), manager).ensure()
    assert result['changed'] is False and manager.calls == ['reread']
    assert result['last_tid'] == TID and result['state_after'] == 'RUNNING'


def test_started_when_stopped_starts(ready):
    manager = FakeManager('STOPPED')
    result = engine.Programs(params(), manager).ensure()
    assert result['changed'] is True and result['actions'] == ['start']
    assert manager.calls == ['reread', 'start']
    assert result['state_before'] == 'STOPPED' and result['state_after'] == 'RUNNING'
    assert result['pid'] and result['ready_seconds'] >= 0


def test_a_listener_is_ready_once_its_socket_accepts_and_its_failure_names_the_address(
        monkeypatch, tmp_path):
    """kind=listener (HAProxy's admin socket, the push engine's port): started, then ready
    when the address accepts a connection; a program that never listens fails with it."""
    monkeypatch.setattr(engine, 'pid_alive', lambda pid: False)
    path = str(tmp_path / 'admin.sock')
    manager = FakeManager('STOPPED')
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
        server.listen(1)
        result = engine.Programs(params(name='haproxy', kind='listener', address=path),
                                 manager).ensure()
    finally:
        server.close()
    assert result['changed'] is True and manager.calls == ['reread', 'start']
    assert result['ready_detail'] == '%s accepts connections' % path
    idle = engine.Programs(params(name='haproxy', kind='listener', address='127.0.0.1:1',
                                  timeout=1), FakeManager('RUNNING'))
    with pytest.raises(engine.ServiceFailed) as failed:
        idle.ensure()
    assert 'program not ready' in failed.value.msg and 'haproxy at 127.0.0.1:1' in failed.value.msg
    assert 'nothing accepts connections at 127.0.0.1:1' in failed.value.msg, failed.value.msg


@pytest.mark.parametrize('before', ['FATAL', 'EXITED'])
def test_started_after_a_crash_starts_again(ready, before):
    manager = FakeManager(before)
    result = engine.Programs(params(), manager).ensure()
    assert result['actions'] == ['start'] and result['state_after'] == 'RUNNING'


def test_new_program_is_added_by_update_then_started(ready):
    manager = FakeManager('ABSENT', pending='new')
    result = engine.Programs(params(), manager).ensure()
    assert manager.calls == ['reread', 'update', 'start']
    assert result['actions'] == ['update', 'start'] and result['state_before'] == 'ABSENT'


def test_update_that_already_started_it_is_not_restarted_twice(ready):
    manager = FakeManager('RUNNING', pending='changed')
    result = engine.Programs(params(state='restarted'), manager).ensure()
    assert manager.calls == ['reread', 'update']
    assert result['actions'] == ['update']


def test_restarted_stops_and_starts(ready):
    manager = FakeManager('RUNNING')
    result = engine.Programs(params(state='restarted'), manager).ensure()
    assert manager.calls == ['reread', 'stop', 'start']
    assert result['changed'] is True and result['pid'] != 100


def test_unknown_program_fails_with_what_to_do(ready):
    manager = FakeManager('ABSENT')
    with pytest.raises(engine.ServiceFailed, match=r"no program 'test-zeo'.*"
                       r"\[program:test-zeo\]"):
        engine.Programs(params(), manager).ensure()


def test_check_mode_touches_nothing(ready):
    for state, desired, action in [('STOPPED', 'started', 'start'),
                                   ('RUNNING', 'restarted', 'restart'),
                                   ('RUNNING', 'stopped', 'stop')]:
        manager = FakeManager(state)
        result = engine.Programs(params(state=desired), manager, check_mode=True).ensure()
        assert result['changed'] is True and result['actions'] == [action]
        assert manager.calls in ([], ['reread'])
        assert manager.state == state


def test_check_mode_of_a_new_program_predicts_update_and_start(ready):
    manager = FakeManager('ABSENT', pending='new')
    result = engine.Programs(params(), manager, check_mode=True).ensure()
    assert result['actions'] == ['update', 'start'] and manager.calls == ['reread']


def test_stopped_stops_and_reports(ready):
    manager = FakeManager('RUNNING')
    result = engine.Programs(params(state='stopped'), manager).ensure()
    assert manager.calls == ['stop'] and result['state_after'] == 'STOPPED'
    assert result['pid'] is None
    again = engine.Programs(params(state='stopped'), manager).ensure()
    assert again['changed'] is False


def test_stopped_program_whose_port_is_still_open_fails(ready, monkeypatch):
    monkeypatch.setattr(engine, 'port_open', lambda *a, **k: True)
    with pytest.raises(engine.ServiceFailed, match='still accepts connections at '
                       '127.0.0.1:1'):
        engine.Programs(params(state='stopped'), FakeManager('STOPPED')).ensure()


def test_stopped_program_whose_port_is_held_names_the_holder(ready, monkeypatch):
    """The error names the process that really listens there (this test's own), by pid."""
    monkeypatch.setattr(engine, 'port_open', readiness.port_open)
    with socket.socket() as listener:
        listener.bind(('127.0.0.1', 0))
        listener.listen(1)
        address = '127.0.0.1:%d' % listener.getsockname()[1]
        with pytest.raises(engine.ServiceFailed) as info:
            engine.Programs(params(state='stopped', address=address),
                            FakeManager('STOPPED')).ensure()
    assert 'held by pid %d (' % os.getpid() in info.value.msg, info.value.msg


def test_listeners_of_a_closed_port_is_empty():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        address = '127.0.0.1:%d' % probe.getsockname()[1]
    assert readiness.listeners(address) == []
    assert readiness.holders(address) == 'find it with ss -ltnp'
    assert readiness.listeners('no-port') == []


def test_spawn_error_fails_with_state_and_40_log_lines(ready):
    manager = FakeManager('STOPPED', fail_start='x: ERROR (spawn error)')
    with pytest.raises(engine.ServiceFailed) as info:
        engine.Programs(params(), manager).ensure()
    assert 'spawn error' in info.value.msg and 'FATAL' in info.value.msg
    assert info.value.log[-1] == 'line 99' and len(info.value.log) == 41


def test_log_path_comes_first_then_the_captured_output(ready, tmp_path):
    log = tmp_path / 'zeo.log'
    log.write_text(''.join('zeo line %d\n' % n for n in range(500)))
    manager = FakeManager('STOPPED', fail_start='spawn error')
    with pytest.raises(engine.ServiceFailed) as info:
        engine.Programs(params(log_path=str(log)), manager).ensure()
    lines = info.value.log
    assert lines[0] == '[%s]' % log and lines[40] == 'zeo line 499'
    # ... and then what supervisord captured (stderr: where start-up errors go).
    assert lines[41] == '[supervisord output of test-zeo]' and lines[-1] == 'line 99'
    assert len(lines) == 41 + 1 + 20


def test_process_that_dies_while_waiting_fails_at_once(monkeypatch, ready):
    monkeypatch.setattr(engine, 'probe_zeo', lambda *a, **k: readiness.ProbeResult(
        False, 'connection refused'))
    manager = FakeManager('STOPPED', start_to='BACKOFF')
    with pytest.raises(engine.ServiceFailed, match='the process is BACKOFF'):
        engine.Programs(params(timeout=60), manager).ensure()


def test_never_ready_times_out(monkeypatch, ready):
    monkeypatch.setattr(engine, 'probe_http', lambda *a, **k: readiness.ProbeResult(
        False, 'no HTTP answer'))
    clock = FakeClock()
    service = engine.Programs(params(kind='zope', timeout=3), FakeManager('RUNNING'),
                              clock=clock, sleep=clock.sleep)
    with pytest.raises(engine.ServiceFailed) as info:
        service.ensure()
    assert 'not ready after 3 seconds' in info.value.msg and 'State: RUNNING' in info.value.msg
    assert 'zope.conf' in info.value.msg
    assert clock.now <= 3.0 + 1e-9 and len(clock.sleeps) > 5      # polled, with backoff
    assert clock.sleeps[0] < clock.sleeps[3] <= 0.5


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


# -- the readiness probes against small fake servers ---------------------------------------

class FakeZeo:
    """Answers the ZEO ``ruok`` handshake like a ZEO 6 server."""

    def __init__(self, status):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen()
        self.address = '127.0.0.1:%d' % self.sock.getsockname()[1]
        self.status = status
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(8)
                for message in (b'Z5', json.dumps(self.status).encode()):
                    conn.sendall(struct.pack('>I', len(message)) + message)

    def close(self):
        self.sock.close()


def test_probe_zeo_reads_the_last_tid():
    zeo = FakeZeo({'1': {'last-transaction': TID, 'connections': 0}})
    try:
        assert readiness.probe_zeo(zeo.address).value == TID
        assert readiness.probe_zeo(zeo.address, expected_tid=TID).ok
        wrong = readiness.probe_zeo(zeo.address, expected_tid='0' * 15 + '1')
        assert not wrong.ok and wrong.final and TID in wrong.detail
        missing = readiness.probe_zeo(zeo.address, storage='main')
        assert not missing.ok and missing.final and "has no storage 'main'" in missing.detail
        # After a restart: ready once its clients have reconnected (ZEO's own count).
        waiting = readiness.probe_zeo(zeo.address, expected_tid=TID, min_connections=2)
        assert not waiting.ok and not waiting.final, waiting
        assert 'has 0 client connection(s), fewer than the 2 expected' in waiting.detail
    finally:
        zeo.close()


def test_probe_zeo_refused_is_not_final():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    address = '127.0.0.1:%d' % sock.getsockname()[1]
    sock.close()
    result = readiness.probe_zeo(address)
    assert not result.ok and not result.final and 'connection refused' in result.detail


@pytest.mark.parametrize('text, expected', [
    ('0x03F2A1B7C0D4E5F6', TID), ('3f2a1b7c0d4e5f6', TID), (TID, TID)])
def test_normalize_tid(text, expected):
    assert zodb_format.normalize_tid(text) == expected


def test_bad_tid_is_refused():
    with pytest.raises(ValueError):
        zodb_format.normalize_tid('not-a-tid')


@pytest.mark.parametrize('address, family', [
    ('127.0.0.1:8100', socket.AF_INET), ('[::1]:8100', socket.AF_INET6),
    ('/run/zopeops/zeo.sock', socket.AF_UNIX), ('localhost:1', socket.AF_INET)])
def test_parse_address(address, family):
    assert readiness.parse_address(address)[0] == family


# -- the module for real, on a systemd host (fake systemctl) -------------------------------

FAKE_SYSTEMCTL = '''#!/bin/sh
echo "$*" >> "$FAKE_LOG"
case "$1" in
  show) cat "$FAKE_STATE" ;;
  start) printf 'LoadState=loaded\\nActiveState=active\\nSubState=running\\nMainPID=%s\\n' $$ > "$FAKE_STATE" ;;
esac
'''


def test_module_on_systemd_starts_the_unit_and_reports_the_tid(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    ctl = bin_dir / 'systemctl'
    ctl.write_text(FAKE_SYSTEMCTL)
    ctl.chmod(ctl.stat().st_mode | stat.S_IEXEC)
    state = tmp_path / 'state'
    state.write_text('LoadState=loaded\nActiveState=inactive\nSubState=dead\nMainPID=0\n')
    log = tmp_path / 'log'
    zeo = FakeZeo({'1': {'last-transaction': TID}})
    try:
        result = run_module('zeo_service', dict(
            name='zopeops-test-zeo', kind='zeo', process_manager='systemd',
            address=zeo.address, expected_tid=TID, timeout=10),
            env={'PATH': '%s%s%s' % (bin_dir, os.pathsep, os.environ['PATH']),
                 'FAKE_STATE': str(state), 'FAKE_LOG': str(log)})
    finally:
        zeo.close()
    assert result['rc'] == 0, result
    assert result['changed'] is True and result['last_tid'] == TID
    assert result['state_before'] == 'STOPPED' and result['state_after'] == 'RUNNING'
    assert 'start zopeops-test-zeo' in log.read_text().splitlines()


@pytest.mark.parametrize('args, message', [
    (dict(name='x', kind='zeo'), 'address is required with state=started'),
    (dict(name='x', kind='zeo', address='nonsense'), 'neither host:port'),
    (dict(name='x', kind='zeo', address='127.0.0.1:1', expected_tid='xyz'), 'expected_tid'),
    (dict(name='x', kind='zope', address='127.0.0.1:1', expected_tid='01'),
     'only for kind=zeo'),
    (dict(name='x', kind='zope', address='/run/x.sock'), 'must be host:port'),
])
def test_module_refuses_bad_arguments(args, message):
    result = run_module('zeo_service', args)
    assert result['failed'] and message in result['msg']


# -- programs: all programs of a side in one call ------------------------------------------

class FakeFleet:
    """Several programs in memory, driven in batches like `supervisorctl start a b c`."""

    kind = 'supervisord'

    def __init__(self, states, pending=None, start_to=None, log=None):
        self.states = dict(states)
        self.pids = {name: (100 + n if state == 'RUNNING' else None)
                     for n, (name, state) in enumerate(states.items())}
        self.pending = pending or {}
        self.start_to = start_to or {}
        self.log = log or {}
        self.calls = []
        self.commands = []
        self.next_pid = 500
        self.after_status = None   # called after each status_many (to make programs die)

    def describe(self):
        return 'supervisord (fake)'

    def status_many(self, names):
        self.calls.append(('status', tuple(names)))
        statuses = {name: ProcessStatus(name, self.states.get(name, 'ABSENT'),
                                        self.pids.get(name)) for name in names}
        if self.after_status:
            self.after_status(self)
        return statuses

    def pending_changes(self, names):
        self.calls.append(('reread',))
        return {name: self.pending.get(name, '') for name in names}

    def apply_changes(self, names):
        self.calls.append(('update', tuple(names)))
        for name in names:
            if self.states.get(name, 'ABSENT') == 'ABSENT':
                self.states[name] = 'STOPPED'

    def start_many(self, names):
        self.calls.append(('start', tuple(names)))
        for name in names:
            self.states[name] = self.start_to.get(name, 'RUNNING')
            self.next_pid += 1
            self.pids[name] = self.next_pid if self.states[name] == 'RUNNING' else None

    def stop_many(self, names):
        self.calls.append(('stop', tuple(names)))
        for name in names:
            self.states[name], self.pids[name] = 'STOPPED', None

    def log_tail(self, name):
        return self.log.get(name, '%s output' % name)

    def batch_calls(self, verb):
        return [call for call in self.calls if call[0] == verb]


CLIENTS = [{'name': 'test-client1', 'address': '127.0.0.1:1', 'log_path': None},
           {'name': 'test-client2', 'address': '127.0.0.1:2', 'log_path': None}]


def set_params(**overrides):
    base = params(name=None, kind='zope', address=None, programs=CLIENTS,
                  expected_revision=None, revision_json_key=None, revision_regex=None)
    base.update(overrides)
    return base


def test_programs_start_together_in_one_command(ready):
    fleet = FakeFleet({'test-client1': 'STOPPED', 'test-client2': 'STOPPED'})
    result = engine.Programs(set_params(), fleet).ensure()
    assert fleet.batch_calls('start') == [('start', ('test-client1', 'test-client2'))]
    assert result['changed'] is True and result['actions'] == ['start']
    assert [p['name'] for p in result['programs']] == ['test-client1', 'test-client2']
    for program in result['programs']:
        assert program['state_before'] == 'STOPPED' and program['state_after'] == 'RUNNING'
        assert program['actions'] == ['start'] and program['ready_seconds'] >= 0
        assert program['pid']


def test_programs_all_running_change_nothing_and_are_still_probed(ready):
    fleet = FakeFleet({'test-client1': 'RUNNING', 'test-client2': 'RUNNING'})
    result = engine.Programs(set_params(), fleet).ensure()
    assert result['changed'] is False and result['actions'] == []
    assert not fleet.batch_calls('start') and not fleet.batch_calls('stop')
    assert all('ready_seconds' in p for p in result['programs'])


def test_programs_only_the_stopped_one_is_started(ready):
    fleet = FakeFleet({'test-client1': 'RUNNING', 'test-client2': 'FATAL'})
    result = engine.Programs(set_params(), fleet).ensure()
    assert fleet.batch_calls('start') == [('start', ('test-client2',))]
    assert [p['actions'] for p in result['programs']] == [[], ['start']]


def test_programs_new_ones_are_updated_in_one_command(ready):
    fleet = FakeFleet({'test-client1': 'ABSENT', 'test-client2': 'ABSENT'},
                      pending={'test-client1': 'new', 'test-client2': 'new'})
    result = engine.Programs(set_params(), fleet).ensure()
    assert fleet.batch_calls('update') == [('update', ('test-client1', 'test-client2'))]
    assert result['actions'] == ['update', 'start']


def test_programs_restarted_stop_and_start_all_in_two_commands(ready):
    fleet = FakeFleet({'test-client1': 'RUNNING', 'test-client2': 'STOPPED'})
    result = engine.Programs(set_params(state='restarted'), fleet).ensure()
    assert fleet.batch_calls('stop') == [('stop', ('test-client1',))]
    assert fleet.batch_calls('start') == [('start', ('test-client1', 'test-client2'))]
    assert result['actions'] == ['restart']


def test_programs_stopped_in_one_command_and_idempotent(ready):
    fleet = FakeFleet({'test-client1': 'RUNNING', 'test-client2': 'RUNNING'})
    result = engine.Programs(set_params(state='stopped'), fleet).ensure()
    assert fleet.batch_calls('stop') == [('stop', ('test-client1', 'test-client2'))]
    assert [p['state_after'] for p in result['programs']] == ['STOPPED', 'STOPPED']
    again = engine.Programs(set_params(state='stopped'), fleet).ensure()
    assert again['changed'] is False and len(fleet.batch_calls('stop')) == 1


def test_programs_check_mode_touches_nothing(ready):
    for before, desired, action in [('STOPPED', 'started', 'start'),
                                    ('RUNNING', 'restarted', 'restart'),
                                    ('RUNNING', 'stopped', 'stop')]:
        fleet = FakeFleet({'test-client1': before, 'test-client2': before})
        result = engine.Programs(set_params(state=desired), fleet,
                                 check_mode=True).ensure()
        assert result['changed'] is True and result['actions'] == [action]
        assert not [c for c in fleet.calls if c[0] in ('start', 'stop', 'update')]
        assert set(fleet.states.values()) == {before}


def test_programs_unknown_ones_are_all_named(ready):
    fleet = FakeFleet({'test-client1': 'ABSENT', 'test-client2': 'ABSENT'})
    with pytest.raises(engine.ServiceFailed,
                       match="no program 'test-client1', 'test-client2'"):
        engine.Programs(set_params(), fleet).ensure()


def test_programs_failure_names_every_failing_program_with_its_log(monkeypatch, ready):
    monkeypatch.setattr(engine, 'probe_http', lambda address, path: readiness.ProbeResult(
        address.endswith(':1'), 'probe of %s' % address))
    fleet = FakeFleet({'test-client1': 'STOPPED', 'test-client2': 'STOPPED', 'test-client3':
                       'STOPPED'}, start_to={'test-client2': 'FATAL'},
                      log={'test-client2': 'Traceback: client2 broke',
                           'test-client3': 'client3 waits for ZEO'})
    programs = CLIENTS + [{'name': 'test-client3', 'address': '127.0.0.1:3', 'log_path': None}]
    clock = FakeClock()
    service = engine.Programs(set_params(programs=programs, timeout=3), fleet,
                              clock=clock, sleep=clock.sleep)
    with pytest.raises(engine.ServiceFailed) as info:
        service.ensure()
    msg = info.value.msg
    assert msg.startswith('2 of 3 Zope clients not ready')
    assert 'test-client2 at 127.0.0.1:2: the process is FATAL' in msg
    assert 'test-client3 at 127.0.0.1:3: not ready after 3 seconds' in msg
    assert 'test-client1 at' not in msg
    assert '=== test-client2' in info.value.log and 'Traceback: client2 broke' in info.value.log
    assert 'client3 waits for ZEO' in info.value.log
    entries = {p['name']: p for p in service.result['programs']}
    assert 'ready_seconds' in entries['test-client1'] and 'error' not in entries['test-client1']
    assert entries['test-client2']['log_tail'][-1] == 'Traceback: client2 broke'


def test_programs_a_process_restarted_behind_our_back_has_failed_and_is_stopped(
        monkeypatch, ready):
    # startsecs = 0 plus autorestart: a process that dies is started again at once, so the
    # wait may never see a dead state; its new pid gives it away. It is stopped, or
    # supervisord would restart it for ever (startretries counts only before startsecs).
    monkeypatch.setattr(engine, 'probe_http', lambda address, path: readiness.ProbeResult(
        address.endswith(':1'), 'connection refused'))

    def respawn(fleet):
        if fleet.states['test-client2'] == 'RUNNING':
            fleet.pids['test-client2'] += 1

    fleet = FakeFleet({'test-client1': 'RUNNING', 'test-client2': 'RUNNING'})
    fleet.after_status = respawn
    clock = FakeClock()
    service = engine.Programs(set_params(timeout=30), fleet, clock=clock,
                              sleep=clock.sleep)
    with pytest.raises(engine.ServiceFailed,
                       match=r'test-client2 at 127.0.0.1:2: the process exited and was started '
                             r'again \(pid \d+, now \d+\)'):
        service.ensure()
    assert clock.now < 1        # found at the first poll, not after the timeout
    assert fleet.batch_calls('stop') == [('stop', ('test-client2',))]
    assert fleet.states == {'test-client1': 'RUNNING', 'test-client2': 'STOPPED'}
    entries = {p['name']: p for p in service.result['programs']}
    assert entries['test-client2']['actions'] == ['stop']
    assert entries['test-client2']['state_after'] == 'STOPPED'


# -- the revision probe (http_checks) against a small HTTP server --------------------------

class FakeZope:
    def __init__(self, body, status=200):
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):  # pylint: disable=arguments-differ
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.address = '127.0.0.1:%d' % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


REV = 'a' * 40


def test_revision_probe_reads_and_checks_the_revision():
    zope = FakeZope(json.dumps({'revision': REV}))
    try:
        base = dict(health_path='/@@zopeops-info', revision_json_key='revision',
                    revision_regex=None)
        good = engine.make_probe('zope', zope.address, dict(base, expected_revision=REV))()
        assert good.ok and good.value == REV and 'with revision ' + REV in good.detail
        wrong = engine.make_probe('zope', zope.address,
                                  dict(base, expected_revision='b' * 40))()
        assert not wrong.ok and wrong.final and 'expected ' + 'b' * 40 in wrong.detail
        just_read = engine.make_probe('zope', zope.address,
                                      dict(base, expected_revision=None))()
        assert just_read.ok and just_read.value == REV
    finally:
        zope.close()


def test_revision_probe_keeps_waiting_on_a_5xx():
    zope = FakeZope('{"error": 1}', status=503)
    try:
        probe = engine.make_probe('zope', zope.address, dict(
            health_path='/', revision_json_key='revision', revision_regex=None,
            expected_revision=REV))()
        assert not probe.ok and not probe.final and 'HTTP 503' in probe.detail
    finally:
        zope.close()


def test_module_programs_form_reports_each_program_and_revision(tmp_path):
    zope = FakeZope(json.dumps({'revision': REV}))
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    ctl = bin_dir / 'systemctl'
    ctl.write_text(FAKE_SYSTEMCTL_MANY)
    ctl.chmod(ctl.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / 'log'
    try:
        result = run_module('zeo_service', dict(
            kind='zope', process_manager='systemd', timeout=10,
            programs=[{'name': 'zopeops-test-client1', 'address': zope.address},
                      {'name': 'zopeops-test-client2', 'address': zope.address}],
            health_path='/@@zopeops-info', revision_json_key='revision',
            expected_revision=REV),
            env={'PATH': '%s%s%s' % (bin_dir, os.pathsep, os.environ['PATH']),
                 'FAKE_DIR': str(tmp_path), 'FAKE_LOG': str(log)})
    finally:
        zope.close()
    assert result['rc'] == 0, result
    assert result['changed'] is True and result['actions'] == ['start']
    assert [p['revision'] for p in result['programs']] == [REV, REV]
    assert [p['state_before'] for p in result['programs']] == ['STOPPED', 'STOPPED']
    assert 'start zopeops-test-client1 zopeops-test-client2' in log.read_text().splitlines()


FAKE_SYSTEMCTL_MANY = '''#!/bin/sh
echo "$*" >> "$FAKE_LOG"
case "$1" in
  show) shift; first=1
        for unit in "$@"; do
          case "$unit" in --*) continue ;; esac
          [ $first = 1 ] || echo; first=0
          if [ -f "$FAKE_DIR/$unit.up" ]; then
            printf 'LoadState=loaded\\nActiveState=active\\nSubState=running\\nMainPID=%s\\n' "$(cat "$FAKE_DIR/$unit.up")"
          else
            printf 'LoadState=loaded\\nActiveState=inactive\\nSubState=dead\\nMainPID=0\\n'
          fi
        done ;;
  start) shift; for unit in "$@"; do echo $$ > "$FAKE_DIR/$unit.up"; done ;;
esac
'''


@pytest.mark.parametrize('args, message', [
    (dict(kind='zope', name='x', programs=[{'name': 'y', 'address': '127.0.0.1:1'}]),
     'mutually exclusive'),
    (dict(kind='zope'), 'one of the following is required: name, programs'),
    (dict(kind='zope', programs=[{'name': 'y'}, {'name': 'z', 'address': '127.0.0.1:1'}]),
     'missing for y'),
    (dict(kind='zope', programs=[{'name': 'y', 'address': '127.0.0.1:1'},
                                 {'name': 'y', 'address': '127.0.0.1:2'}]), 'more than once'),
    (dict(kind='zeo', programs=[{'name': 'y', 'address': '127.0.0.1:1'}],
          expected_revision='abc', revision_json_key='revision'), 'only for kind=zope'),
    (dict(kind='zope', name='y', address='127.0.0.1:1', expected_revision='abc'),
     'needs revision_proof (release, json with revision_json_key, or regex'),
    (dict(kind='zope', name='y', address='127.0.0.1:1', revision_regex='nogroup'),
     'has no group'),
    (dict(kind='zope', name='y', address='127.0.0.1:1', revision_proof='json',
          revision_page='/@@info'),
     'zopeops_revision_proof is json, so zopeops_revision_json_key must name the key'),
    (dict(kind='zope', name='y', address='127.0.0.1:1', revision_proof='regex'),
     'zopeops_revision_proof is regex, so zopeops_revision_regex must be a regular'),
])
def test_module_refuses_bad_programs_arguments(args, message):
    result = run_module('zeo_service', args)
    assert result['failed'] and message in result['msg'], result['msg']


# -- a side's ZEO server and clients in one call; a crashing program is not left looping ---

def test_programs_zeo_and_clients_of_a_side_start_in_one_command(ready):
    side = [{'name': 'test-zeo', 'kind': 'zeo', 'address': '127.0.0.1:9', 'log_path': None}]
    side += [dict(client, kind='zope') for client in CLIENTS]
    fleet = FakeFleet({'test-zeo': 'STOPPED', 'test-client1': 'STOPPED',
                       'test-client2': 'STOPPED'})
    result = engine.Programs(set_params(kind=None, programs=side, expected_tid=TID),
                             fleet).ensure()
    assert fleet.batch_calls('start') == [
        ('start', ('test-zeo', 'test-client1', 'test-client2'))]
    entries = {p['name']: p for p in result['programs']}
    assert entries['test-zeo']['last_tid'] == TID
    assert 'last_tid' not in entries['test-client1']
    assert all(p['state_after'] == 'RUNNING' for p in result['programs'])


def test_programs_of_both_kinds_fail_with_each_hint(monkeypatch, ready):
    monkeypatch.setattr(engine, 'probe_zeo', lambda *a, **k: readiness.ProbeResult(
        False, 'refused'))
    side = [{'name': 'test-zeo', 'kind': 'zeo', 'address': '127.0.0.1:9', 'log_path': None},
            dict(CLIENTS[0], kind='zope')]
    fleet = FakeFleet({'test-zeo': 'STOPPED', 'test-client1': 'STOPPED'})
    clock = FakeClock()
    with pytest.raises(engine.ServiceFailed) as info:
        engine.Programs(set_params(kind=None, programs=side, timeout=2), fleet,
                        clock=clock, sleep=clock.sleep).ensure()
    assert info.value.msg.startswith('1 of 2 programs not ready')
    assert 'zeo.conf' in info.value.msg and 'test-client1 at' not in info.value.msg


def test_programs_that_time_out_are_left_running(monkeypatch, ready):
    monkeypatch.setattr(engine, 'probe_http', lambda address, path: readiness.ProbeResult(
        False, 'HTTP 503'))
    fleet = FakeFleet({'test-client1': 'STOPPED', 'test-client2': 'STOPPED'})
    clock = FakeClock()
    with pytest.raises(engine.ServiceFailed, match='not ready after 2 seconds'):
        engine.Programs(set_params(timeout=2), fleet, clock=clock,
                        sleep=clock.sleep).ensure()
    assert not fleet.batch_calls('stop')


@pytest.mark.parametrize('args, message', [
    (dict(programs=[{'name': 'y', 'address': '127.0.0.1:1'}]),
     'say what y is: kind (zeo, zope or listener)'),
    (dict(programs=[{'name': 'y', 'kind': 'zope', 'address': '127.0.0.1:1'}],
          expected_tid=TID), 'only for kind=zeo'),
    (dict(name='y', address='127.0.0.1:1'), 'kind'),
])
def test_module_refuses_programs_whose_kind_is_unknown(args, message):
    result = run_module('zeo_service', args)
    assert result['failed'] and message in result['msg'], result['msg']


def test_programs_wait_asks_the_process_manager_only_when_a_pid_is_gone(monkeypatch, ready):
    answers = iter([False, False, False, True])
    monkeypatch.setattr(engine, 'probe_http', lambda address, path: readiness.ProbeResult(
        next(answers, True), 'probe'))
    alive = {'now': True}
    monkeypatch.setattr(engine, 'pid_alive', lambda pid: alive['now'])
    fleet = FakeFleet({'test-client1': 'STOPPED'})
    clock = FakeClock()
    engine.Programs(set_params(programs=CLIENTS[:1]), fleet, clock=clock,
                    sleep=clock.sleep).ensure()
    # status before, after the start; none during the polls while the pid lives
    assert len(fleet.batch_calls('status')) == 2

    alive['now'] = False
    answers = iter([False, False, True])
    fleet = FakeFleet({'test-client1': 'STOPPED'})
    engine.Programs(set_params(programs=CLIENTS[:1]), fleet, clock=clock,
                    sleep=clock.sleep).ensure()
    assert len(fleet.batch_calls('status')) == 5


def test_programs_stop_asks_again_only_while_a_pid_lives(monkeypatch, ready):
    fleet = FakeFleet({'test-client1': 'RUNNING', 'test-client2': 'RUNNING'})
    engine.Programs(set_params(state='stopped'), fleet).ensure()
    assert len(fleet.batch_calls('status')) == 1   # before; the stop itself proved the rest
    monkeypatch.setattr(engine, 'pid_alive', lambda pid: True)
    fleet = FakeFleet({'test-client1': 'RUNNING', 'test-client2': 'RUNNING'})
    result = engine.Programs(set_params(state='stopped'), fleet).ensure()
    assert len(fleet.batch_calls('status')) == 2
    assert [p['state_after'] for p in result['programs']] == ['STOPPED', 'STOPPED']
