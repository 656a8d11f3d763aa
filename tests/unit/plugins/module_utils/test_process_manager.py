"""process_manager: supervisorctl output parsing, and the argv given to systemctl."""
from __future__ import annotations

import os
import stat
import textwrap

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils import process_manager as pm

STATUS = textwrap.dedent('''\
    test-client1                     RUNNING   pid 4242, uptime 0:03:12
    test-client2                     STARTING
    test-zeo                         STOPPED   Not started
    test_upgrade-zeo                 FATAL     Exited too quickly (process log may have details)
    beta-zeo                         BACKOFF   Exited too quickly (process log may have details)
    dev-zeo                          EXITED    Nov 26 10:44 AM
    web:dev-client1                  STOPPING  pid 77, uptime 0:00:01
    odd                              WEIRD     something
    ''')


@pytest.mark.parametrize('name, state, pid', [
    ('test-client1', 'RUNNING', 4242),
    ('test-client2', 'STARTING', None),
    ('test-zeo', 'STOPPED', None),
    ('test_upgrade-zeo', 'FATAL', None),
    ('beta-zeo', 'BACKOFF', None),
    ('dev-zeo', 'EXITED', None),
    ('dev-client1', 'STOPPING', 77),           # listed as group:program
    ('web:dev-client1', 'STOPPING', 77),
    ('odd', 'UNKNOWN', None),
])
def test_status_lines_are_parsed(name, state, pid):
    status = pm.parse_supervisorctl_status(STATUS, name)
    assert (status.state, status.pid) == (state, pid)


def test_fatal_keeps_supervisords_reason():
    status = pm.parse_supervisorctl_status(STATUS, 'test_upgrade-zeo')
    assert 'Exited too quickly' in status.description
    assert status.summary().startswith('FATAL: Exited too quickly')


def test_unknown_program_is_absent():
    status = pm.parse_supervisorctl_status('test-zeo: ERROR (no such process)\n', 'test-zeo')
    assert status.state == 'ABSENT' and not status.running


def test_a_similar_name_does_not_match():
    with pytest.raises(pm.ProcessManagerError):
        pm.parse_supervisorctl_status('test-zeo2    RUNNING   pid 1, uptime 0:00:01\n',
                                      'test-zeo')


@pytest.mark.parametrize('output', [
    'unix:///tmp/zt-x/s.sock no such file\n',
    'unix:///tmp/zt-x/s.sock refused connection\n',
    'error: <class \'PermissionError\'>, [Errno 13] Permission denied: file: ...\n',
])
def test_unreachable_supervisord_raises(output):
    with pytest.raises(pm.ProcessManagerError):
        pm.parse_supervisorctl_status(output, 'test-zeo')


def test_reread_output_is_parsed():
    out = 'new: available\nok: changed\ngone: disappeared\n'
    assert pm.parse_supervisorctl_reread(out) == {
        'new': 'available', 'ok': 'changed', 'gone': 'disappeared'}
    assert pm.parse_supervisorctl_reread('No config updates to processes\n') == {}


class FakeRun:
    """Answers supervisorctl commands from a table and records every argv."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv, timeout=None):
        self.calls.append(argv)
        return self.answers.get(tuple(argv[3:]), (0, '', ''))


def test_supervisord_argv_and_pending_change():
    run = FakeRun({('reread',): (0, 'test-zeo: changed\nother: available\n', '')})
    sup = pm.Supervisord('/v/bin/supervisorctl', '/srv/s.conf', run=run)
    changes = sup.pending_changes(['test-zeo', 'other', 'third'])
    assert changes['test-zeo'] == 'changed'
    assert changes['other'] == 'new'
    assert changes['third'] == ''
    sup.apply_changes(['test-zeo'])
    assert run.calls[-1] == ['/v/bin/supervisorctl', '-c', '/srv/s.conf', 'update', 'test-zeo']
    sup.apply_changes(['grp:prog'])
    assert run.calls[-1][-2:] == ['update', 'grp']          # update takes the group


def test_supervisord_start_errors_say_what():
    run = FakeRun({('start', 'x'): (7, 'x: ERROR (spawn error)\n', '')})
    sup = pm.Supervisord('supervisorctl', '/srv/s.conf', run=run)
    with pytest.raises(pm.ProcessManagerError, match='start x failed: x: ERROR'):
        sup.start_many(['x'])


def test_supervisord_already_started_and_not_running_are_fine():
    run = FakeRun({('start', 'x'): (0, 'x: ERROR (already started)\n', ''),
                   ('stop', 'x'): (0, 'x: ERROR (not running)\n', '')})
    sup = pm.Supervisord('supervisorctl', '/srv/s.conf', run=run)
    sup.start_many(['x'])
    sup.stop_many(['x'])


def test_supervisord_missing_binary_is_explained():
    sup = pm.Supervisord('/nowhere/supervisorctl', '/srv/s.conf')
    with pytest.raises(pm.ProcessManagerError, match='command not found'):
        sup.status('x')


def test_default_supervisorctl_prefers_the_one_beside_python(tmp_path):
    ctl = tmp_path / 'supervisorctl'
    ctl.write_text('#!/bin/sh\n')
    ctl.chmod(0o755)
    assert pm.default_supervisorctl(str(tmp_path / 'python'), lambda _: None) == str(ctl)
    assert pm.default_supervisorctl('/nowhere/python', lambda _: '/usr/bin/x') == '/usr/bin/x'


@pytest.mark.parametrize('props, state', [
    ({'LoadState': 'loaded', 'ActiveState': 'active', 'SubState': 'running'}, 'RUNNING'),
    ({'LoadState': 'loaded', 'ActiveState': 'activating', 'SubState': 'start'}, 'STARTING'),
    ({'LoadState': 'loaded', 'ActiveState': 'activating', 'SubState': 'auto-restart'},
     'BACKOFF'),
    ({'LoadState': 'loaded', 'ActiveState': 'failed', 'SubState': 'failed'}, 'FATAL'),
    ({'LoadState': 'loaded', 'ActiveState': 'inactive', 'SubState': 'dead'}, 'STOPPED'),
    ({'LoadState': 'loaded', 'ActiveState': 'deactivating', 'SubState': 'stop'}, 'STOPPING'),
    ({'LoadState': 'not-found', 'ActiveState': 'inactive', 'SubState': 'dead'}, 'ABSENT'),
])
def test_systemd_states_are_mapped(props, state):
    assert pm.systemd_state(props) == state


FAKE_SYSTEMCTL = '''#!/bin/sh
# A stand-in for systemctl: records its argv, answers `show` from a state file.
echo "$0 $*" >> "$FAKE_LOG"
case "$1" in
  show) cat "$FAKE_STATE" ;;
  start) printf 'LoadState=loaded\\nActiveState=active\\nSubState=running\\nMainPID=999\\n' > "$FAKE_STATE" ;;
  stop) printf 'LoadState=loaded\\nActiveState=inactive\\nSubState=dead\\nMainPID=0\\n' > "$FAKE_STATE" ;;
  daemon-reload) : ;;
  fail) exit 1 ;;
esac
'''


@pytest.fixture
def fake_systemctl(tmp_path, monkeypatch):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for tool in ('systemctl', 'journalctl'):
        path = bin_dir / tool
        path.write_text(FAKE_SYSTEMCTL if tool == 'systemctl' else
                        '#!/bin/sh\necho "$0 $*" >> "$FAKE_LOG"\necho "line one"\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    state = tmp_path / 'state'
    state.write_text('LoadState=loaded\nActiveState=inactive\nSubState=dead\nMainPID=0\n'
                     'NeedDaemonReload=yes\n')
    log = tmp_path / 'log'
    monkeypatch.setenv('PATH', '%s%s%s' % (bin_dir, os.pathsep, os.environ['PATH']))
    monkeypatch.setenv('FAKE_STATE', str(state))
    monkeypatch.setenv('FAKE_LOG', str(log))
    return log


def test_systemd_backend_runs_systemctl_argv(fake_systemctl):
    unit = 'zopeops-test-zeo'
    sd = pm.Systemd()
    assert sd.status(unit).state == 'STOPPED'
    assert sd.pending_changes([unit]) == {unit: 'changed'}
    sd.apply_changes([unit])
    sd.start_many([unit])
    running = sd.status(unit)
    assert running.state == 'RUNNING' and running.pid == 999
    sd.stop_many([unit])
    assert sd.status(unit).state == 'STOPPED'
    assert sd.log_tail(unit) == 'line one'
    lines = [line.split(' ', 1)[1] for line in fake_systemctl.read_text().splitlines()]
    show = 'show %s --no-pager --property=%s' % (unit, pm.Systemd.PROPERTIES)
    assert lines == [show, show, 'daemon-reload', 'start ' + unit, show, 'stop ' + unit, show,
                     '--unit %s --lines 40 --no-pager --output short-iso' % unit]


def test_systemd_failures_name_the_unit(fake_systemctl, monkeypatch, tmp_path):
    bad = tmp_path / 'bin' / 'systemctl'
    bad.write_text('#!/bin/sh\necho "Job for $2.service failed." >&2\nexit 1\n')
    with pytest.raises(pm.ProcessManagerError, match=r'systemctl start zopeops-x failed '
                                                     r'\(rc 1\): Job for zopeops-x'):
        pm.Systemd().start_many(['zopeops-x'])


def test_supervisord_batches_are_one_command_each():
    run = FakeRun({
        ('status', 'a', 'b', 'c'): (3, 'a   RUNNING   pid 1, uptime 0:00:01\nb   STOPPED   Not '
                                       'started\nc: ERROR (no such process)\n', ''),
        ('reread',): (0, 'b: changed\nc: available\n', ''),
        ('start', 'a', 'b'): (0, 'a: ERROR (already started)\nb: started\n', ''),
        ('stop', 'a', 'b'): (7, 'a: stopped\nb: ERROR (abnormal termination)\n', '')})
    sup = pm.Supervisord('supervisorctl', '/srv/s.conf', run=run)
    statuses = sup.status_many(['a', 'b', 'c'])
    assert {n: s.state for n, s in statuses.items()} == {
        'a': 'RUNNING', 'b': 'STOPPED', 'c': 'ABSENT'}
    assert sup.pending_changes(['a', 'b', 'c']) == {'a': '', 'b': 'changed', 'c': 'new'}
    sup.apply_changes(['g:b', 'c', 'g:d'])
    assert run.calls[-1][3:] == ['update', 'c', 'g']
    sup.start_many(['a', 'b'])                           # already started is fine
    with pytest.raises(pm.ProcessManagerError, match=r'stop a b failed: b: ERROR \(abnormal'):
        sup.stop_many(['a', 'b'])


def test_systemd_show_of_several_units_is_split_in_order():
    out = ('LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=42\n\n'
           'LoadState=not-found\nActiveState=inactive\nSubState=dead\nMainPID=0\n')
    calls = []

    def run(argv, timeout=None):
        calls.append(argv)
        return 0, out, ''

    unit = pm.Systemd('systemctl', run=run)
    statuses = unit.status_many(['u1', 'u2'])
    assert (statuses['u1'].state, statuses['u1'].pid) == ('RUNNING', 42)
    assert statuses['u2'].state == 'ABSENT'
    assert calls[0][:4] == ['systemctl', 'show', 'u1', 'u2']
    assert unit.pending_changes(['u1', 'u2']) == {'u1': '', 'u2': 'new'}
    unit.start_many(['u1', 'u2'])
    assert calls[-1] == ['systemctl', 'start', 'u1', 'u2']
