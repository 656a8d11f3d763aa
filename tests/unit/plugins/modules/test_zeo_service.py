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
from ansible_collections.zopeops.stages.plugins.module_utils.process_manager import (
    ProcessManagerError, ProcessStatus)
from ansible_collections.zopeops.stages.plugins.modules import zeo_service
from support.modules import run_module

TID = '03f2a1b7c0d4e5f6'


class FakeManager:
    """A process manager in memory: programs have a state; start/stop change it."""

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

    def status(self, name):
        return ProcessStatus(name, self.state, self.pid)

    def pending_change(self, name):
        self.calls.append('reread')
        return self.pending

    def apply_change(self, name):
        self.calls.append('update')
        if self.state == 'ABSENT':
            self.state = 'STOPPED'

    def start(self, name):
        self.calls.append('start')
        if self.fail_start:
            self.state = 'FATAL'
            raise ProcessManagerError(self.fail_start)
        self.state = self.start_to
        self.pid = 200 + len(self.calls) if self.state == 'RUNNING' else None

    def stop(self, name):
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
    monkeypatch.setattr(zeo_service, 'probe_zeo', lambda *a, **k: readiness.ProbeResult(
        True, 'ZEO answers', TID))
    monkeypatch.setattr(zeo_service, 'probe_http', lambda *a, **k: readiness.ProbeResult(
        True, 'answered HTTP 200', 200))
    monkeypatch.setattr(zeo_service, 'port_open', lambda *a, **k: False)
    monkeypatch.setattr(zeo_service, 'wait_until_gone', lambda *a, **k: (True, True))


def test_started_when_running_changes_nothing_but_checks_readiness(ready):
    manager = FakeManager('RUNNING')
    result = zeo_service.Service(params(), manager).ensure()
    assert result['changed'] is False and manager.calls == ['reread']
    assert result['last_tid'] == TID and result['state_after'] == 'RUNNING'


def test_started_when_stopped_starts(ready):
    manager = FakeManager('STOPPED')
    result = zeo_service.Service(params(), manager).ensure()
    assert result['changed'] is True and result['actions'] == ['start']
    assert manager.calls == ['reread', 'start']
    assert result['state_before'] == 'STOPPED' and result['state_after'] == 'RUNNING'
    assert result['pid'] and result['ready_seconds'] >= 0


@pytest.mark.parametrize('before', ['FATAL', 'EXITED'])
def test_started_after_a_crash_starts_again(ready, before):
    manager = FakeManager(before)
    result = zeo_service.Service(params(), manager).ensure()
    assert result['actions'] == ['start'] and result['state_after'] == 'RUNNING'


def test_new_program_is_added_by_update_then_started(ready):
    manager = FakeManager('ABSENT', pending='new')
    result = zeo_service.Service(params(), manager).ensure()
    assert manager.calls == ['reread', 'update', 'start']
    assert result['actions'] == ['update', 'start'] and result['state_before'] == 'ABSENT'


def test_update_that_already_started_it_is_not_restarted_twice(ready):
    manager = FakeManager('RUNNING', pending='changed')
    result = zeo_service.Service(params(state='restarted'), manager).ensure()
    assert manager.calls == ['reread', 'update']
    assert result['actions'] == ['update']


def test_restarted_stops_and_starts(ready):
    manager = FakeManager('RUNNING')
    result = zeo_service.Service(params(state='restarted'), manager).ensure()
    assert manager.calls == ['reread', 'stop', 'start']
    assert result['changed'] is True and result['pid'] != 100


def test_unknown_program_fails_with_what_to_do(ready):
    manager = FakeManager('ABSENT')
    with pytest.raises(zeo_service.ServiceFailed, match=r"no program 'test-zeo'.*"
                                                        r"\[program:test-zeo\]"):
        zeo_service.Service(params(), manager).ensure()


def test_check_mode_touches_nothing(ready):
    for state, desired, action in [('STOPPED', 'started', 'start'),
                                   ('RUNNING', 'restarted', 'restart'),
                                   ('RUNNING', 'stopped', 'stop')]:
        manager = FakeManager(state)
        result = zeo_service.Service(params(state=desired), manager, check_mode=True).ensure()
        assert result['changed'] is True and result['actions'] == [action]
        assert manager.calls in ([], ['reread'])
        assert manager.state == state


def test_check_mode_of_a_new_program_predicts_update_and_start(ready):
    manager = FakeManager('ABSENT', pending='new')
    result = zeo_service.Service(params(), manager, check_mode=True).ensure()
    assert result['actions'] == ['update', 'start'] and manager.calls == ['reread']


def test_stopped_stops_and_reports(ready):
    manager = FakeManager('RUNNING')
    result = zeo_service.Service(params(state='stopped'), manager).ensure()
    assert manager.calls == ['stop'] and result['state_after'] == 'STOPPED'
    assert result['pid'] is None
    again = zeo_service.Service(params(state='stopped'), manager).ensure()
    assert again['changed'] is False


def test_stopped_program_whose_port_is_still_open_fails(ready, monkeypatch):
    monkeypatch.setattr(zeo_service, 'port_open', lambda *a, **k: True)
    with pytest.raises(zeo_service.ServiceFailed, match='still accepts connections at '
                                                        '127.0.0.1:1'):
        zeo_service.Service(params(state='stopped'), FakeManager('STOPPED')).ensure()


def test_spawn_error_fails_with_state_and_40_log_lines(ready):
    manager = FakeManager('STOPPED', fail_start='x: ERROR (spawn error)')
    with pytest.raises(zeo_service.ServiceFailed) as info:
        zeo_service.Service(params(), manager).ensure()
    assert 'spawn error' in info.value.msg and 'FATAL' in info.value.msg
    assert info.value.log[-1] == 'line 99' and len(info.value.log) == 41


def test_log_path_comes_first_then_the_captured_output(ready, tmp_path):
    log = tmp_path / 'zeo.log'
    log.write_text(''.join('zeo line %d\n' % n for n in range(500)))
    manager = FakeManager('STOPPED', fail_start='spawn error')
    with pytest.raises(zeo_service.ServiceFailed) as info:
        zeo_service.Service(params(log_path=str(log)), manager).ensure()
    lines = info.value.log
    assert lines[0] == '[%s]' % log and lines[40] == 'zeo line 499'
    # ... and then what supervisord captured (stderr: where start-up errors go).
    assert lines[41] == '[supervisord output of test-zeo]' and lines[-1] == 'line 99'
    assert len(lines) == 41 + 1 + 20


def test_process_that_dies_while_waiting_fails_at_once(monkeypatch, ready):
    monkeypatch.setattr(zeo_service, 'probe_zeo', lambda *a, **k: readiness.ProbeResult(
        False, 'connection refused'))
    manager = FakeManager('STOPPED', start_to='BACKOFF')
    with pytest.raises(zeo_service.ServiceFailed, match='the process is BACKOFF'):
        zeo_service.Service(params(timeout=60), manager).ensure()


def test_never_ready_times_out(monkeypatch, ready):
    monkeypatch.setattr(zeo_service, 'probe_http', lambda *a, **k: readiness.ProbeResult(
        False, 'no HTTP answer'))
    clock = FakeClock()
    service = zeo_service.Service(params(kind='zope', timeout=3), FakeManager('RUNNING'),
                                  clock=clock, sleep=clock.sleep)
    with pytest.raises(zeo_service.ServiceFailed) as info:
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
    assert readiness.normalize_tid(text) == expected


def test_bad_tid_is_refused():
    with pytest.raises(ValueError):
        readiness.normalize_tid('not-a-tid')


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
