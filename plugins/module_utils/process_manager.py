# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Control programs through supervisord or systemd, in one vocabulary.

Every command takes a list of programs and is one command line for all of them
(``supervisorctl start a b c``, ``systemctl start a b c``); one program is a list of one
(ProcessManager.status is the one shorthand for a list of one).

Both backends speak through their command line tools with argv lists (never a shell string):
``supervisorctl -c <config> ...`` and ``systemctl ...``. We chose ``supervisorctl`` over
supervisord's XML-RPC API because the module runs under Ansible's Python, which need not have
the ``supervisor`` package (it usually lives in another virtualenv), and because
``supervisorctl`` reads the server URL and credentials from the same config file that the
roles template, so the module needs no second copy of them.

States are reported in supervisord's words for both backends (systemd's are mapped):

  ABSENT    the process manager does not know the program / unit
  STOPPED   not running (also systemd ``inactive``)
  STARTING  started, not yet past supervisord's ``startsecs`` (systemd ``activating``)
  RUNNING   running (systemd ``active``)
  BACKOFF   exited while starting; supervisord will retry (systemd ``auto-restart``)
  STOPPING  being stopped (systemd ``deactivating``)
  EXITED    exited after it was running
  FATAL     could not be started (systemd ``failed``)
  UNKNOWN   supervisord's own UNKNOWN, or a state this code does not know
"""
from __future__ import annotations

import os
import re
import subprocess

RUNNING_STATES = ('RUNNING', 'STARTING')
ACTIVE_STATES = ('RUNNING', 'STARTING', 'BACKOFF', 'STOPPING')
FAILED_STATES = ('FATAL', 'BACKOFF', 'EXITED')
STOPPED_STATES = ('STOPPED', 'EXITED', 'FATAL', 'ABSENT')

_STATUS_LINE = re.compile(r'^(?P<name>\S+)\s+(?P<state>[A-Z]+)\b\s*(?P<description>.*)$')
_PID = re.compile(r'\bpid (\d+)')
_SUPERVISORD_UNREACHABLE = (
    'no such file', 'refused connection', 'connection refused', 'shut_down_state',
    'shutdown_state', "can't find command", 'error: <class', 'permission denied')


class ProcessManagerError(Exception):
    """A process-manager command failed; the message says which, on what, why, what to do."""


class ProcessStatus:
    """What the process manager says about one program."""

    def __init__(self, name, state, pid=None, description='', raw=''):
        self.name = name
        self.state = state
        self.pid = pid
        self.description = description
        self.raw = raw

    @property
    def running(self):
        return self.state in RUNNING_STATES

    def __repr__(self):
        return 'ProcessStatus(%r, %r, pid=%r, %r)' % (
            self.name, self.state, self.pid, self.description)

    def summary(self):
        text = self.state
        if self.pid:
            text += ' (pid %d)' % self.pid
        if self.description and not self.description.startswith('pid '):
            text += ': ' + self.description
        return text


def run_argv(argv, timeout=None, env=None):
    """Run ``argv`` (a list, no shell) with C locale; return ``(rc, stdout, stderr)``."""
    run_env = dict(os.environ)
    run_env.update({'LANG': 'C', 'LC_ALL': 'C'})
    run_env.update(env or {})
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=run_env, check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, '', '%s: command not found' % argv[0]
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors='replace') if isinstance(exc.stdout, bytes) else (
            exc.stdout or '')
        return -1, out, 'timed out after %ss' % timeout
    return proc.returncode, proc.stdout, proc.stderr


def parse_supervisorctl_status(output, name):
    """Parse ``supervisorctl status <name>`` output into a ProcessStatus.

    A program inside a ``[group:g]`` is listed as ``g:name``; either spelling matches.
    Raises ProcessManagerError when the output says supervisord cannot be reached.
    """
    for line in output.splitlines():
        line = line.rstrip()
        if not line:
            continue
        if 'ERROR (no such process)' in line or 'ERROR (no such group)' in line:
            head = line.split(':', 1)[0].strip()
            if head == name or line.startswith(name + ':'):
                return ProcessStatus(name, 'ABSENT', raw=line)
            continue
        match = _STATUS_LINE.match(line)
        if not match:
            continue
        listed = match.group('name')
        if listed != name and listed.split(':', 1)[-1] != name:
            continue
        state = match.group('state')
        description = match.group('description').strip()
        pid = None
        if state in ('RUNNING', 'STOPPING'):
            pid_match = _PID.search(description)
            if pid_match:
                pid = int(pid_match.group(1))
        known = ('STOPPED', 'STARTING', 'RUNNING', 'BACKOFF', 'STOPPING', 'EXITED', 'FATAL',
                 'UNKNOWN')
        return ProcessStatus(name, state if state in known else 'UNKNOWN', pid, description,
                             line)
    lowered = output.lower()
    if any(marker in lowered for marker in _SUPERVISORD_UNREACHABLE):
        raise ProcessManagerError(output.strip())
    raise ProcessManagerError('unexpected output: %r' % output.strip()[:500])


def parse_supervisorctl_reread(output):
    """``supervisorctl reread`` -> {group: 'available' | 'changed' | 'disappeared'}."""
    changes = {}
    for line in output.splitlines():
        match = re.match(r'^(\S+): (available|changed|disappeared)\s*$', line.strip())
        if match:
            changes[match.group(1)] = match.group(2)
    return changes


def parse_systemctl_show(output):
    """``systemctl show --property=...`` output (KEY=value lines) -> dict."""
    props = {}
    for line in output.splitlines():
        if '=' in line:
            key, value = line.split('=', 1)
            props[key.strip()] = value.strip()
    return props


def systemd_state(props):
    """Map systemd's LoadState/ActiveState/SubState onto the supervisord vocabulary."""
    load = props.get('LoadState', '')
    active = props.get('ActiveState', '')
    sub = props.get('SubState', '')
    if load in ('not-found', 'masked') or (load == '' and active == ''):
        return 'ABSENT'
    if active == 'active':
        return 'RUNNING'
    if active == 'activating':
        return 'BACKOFF' if sub == 'auto-restart' else 'STARTING'
    if active == 'deactivating':
        return 'STOPPING'
    if active == 'failed':
        return 'FATAL'
    if active == 'inactive':
        return 'STOPPED'
    return 'UNKNOWN'


class ProcessManager:
    """What Supervisord and Systemd both offer, each command one command line for a list of
    programs: ``status_many``, ``pending_changes`` (new or changed definitions; read-only),
    ``apply_changes``, ``start_many``, ``stop_many``; ``log_tail`` of one program; ``commands``
    (the argv lists run) and ``describe()`` for the user."""

    kind = None
    commands = None

    def status(self, name):
        """The ProcessStatus of one program (``status_many`` of a list of one)."""
        return self.status_many([name])[name]


class Supervisord(ProcessManager):
    """Programs of the supervisord that ``supervisorctl -c <config>`` talks to."""

    kind = 'supervisord'

    def __init__(self, supervisorctl, config=None, run=run_argv, command_timeout=60):
        self.supervisorctl = supervisorctl
        self.config = config
        self.run = run
        self.command_timeout = command_timeout
        self.commands = []

    def describe(self):
        if self.config:
            return 'supervisord (%s -c %s)' % (self.supervisorctl, self.config)
        return 'supervisord (%s)' % self.supervisorctl

    def _argv(self, *args):
        argv = [self.supervisorctl]
        if self.config:
            argv += ['-c', self.config]
        return argv + list(args)

    def _ctl(self, *args, timeout=None):
        argv = self._argv(*args)
        self.commands.append(argv)
        rc, out, err = self.run(argv, timeout=timeout or self.command_timeout)
        if rc == 127 or rc == -1:
            raise ProcessManagerError(
                'Running %s failed: %s. Check the supervisorctl option (the path to '
                'supervisorctl) and that supervisord answers.' % (' '.join(argv),
                                                                  (err or out).strip()))
        return rc, out + err

    def _unreachable(self, detail):
        where = self.config or 'its default config'
        return ProcessManagerError(
            'supervisord could not be reached through %s: %s. Start supervisord with that '
            'config (supervisord -c %s) or fix the supervisor_config option.'
            % (where, detail.strip(), where))

    def log_tail(self, name, nbytes=6000):
        """The tail of the program's stdout and stderr logs as supervisord kept them."""
        parts = []
        for stream in ('stdout', 'stderr'):
            argv_stream = [] if stream == 'stdout' else ['stderr']
            try:
                rc, out = self._ctl('tail', '-%d' % nbytes, name, *argv_stream)
            except ProcessManagerError as exc:
                parts.append('[%s: %s]' % (stream, exc))
                continue
            text = out.strip('\n')
            if rc == 0 and text and 'ERROR (no log file)' not in text:
                parts.append(text)
        return '\n'.join(parts)

    def status_many(self, names):
        """{name: ProcessStatus} from one ``supervisorctl status a b c``."""
        _rc, out = self._ctl('status', *names)
        try:
            return {name: parse_supervisorctl_status(out, name) for name in names}
        except ProcessManagerError as exc:
            raise self._unreachable(str(exc)) from None

    def pending_changes(self, names):
        """{name: 'new' | 'changed' | ''} from one ``supervisorctl reread``.

        ``reread`` only re-parses the files (``supervisorctl avail`` does the same); no
        process is started, stopped or added, so this is also safe in check mode.
        """
        rc, out = self._ctl('reread')
        if rc != 0 and 'ERROR' in out:
            raise ProcessManagerError(
                'supervisorctl reread failed for %s: %s. Fix the program files that the '
                'supervisord config includes.' % (self.describe(), out.strip()))
        changes = parse_supervisorctl_reread(out)
        return {name: {'available': 'new', 'changed': 'changed'}.get(
            changes.get(name.split(':', 1)[0], ''), '') for name in names}

    def apply_changes(self, names):
        groups = sorted({name.split(':', 1)[0] for name in names})
        rc, out = self._ctl('update', *groups)
        if rc != 0 or 'ERROR' in out:
            raise ProcessManagerError(
                'supervisorctl update %s failed: %s. Check their [program:...] sections and '
                'supervisord\'s log.' % (' '.join(groups), out.strip()))
        return out.strip()

    def _many(self, verb, names, harmless):
        rc, out = self._ctl(verb, *names)
        errors = [line.strip() for line in out.splitlines()
                  if 'ERROR' in line and harmless not in line]
        if errors:
            raise ProcessManagerError('supervisorctl %s %s failed: %s'
                                      % (verb, ' '.join(names),
                                         '; '.join(errors) or 'exit %d' % rc))
        return out.strip()

    def start_many(self, names):
        """``supervisorctl start a b c``: one command; already started ones are fine."""
        return self._many('start', names, 'ERROR (already started)')

    def stop_many(self, names):
        """``supervisorctl stop a b c``: one command; stopped ones are fine."""
        return self._many('stop', names, 'ERROR (not running)')


class Systemd(ProcessManager):
    """systemd units, through ``systemctl`` (and ``journalctl`` for its log)."""

    kind = 'systemd'
    PROPERTIES = 'LoadState,ActiveState,SubState,MainPID,NeedDaemonReload,Result'

    def __init__(self, systemctl='systemctl', journalctl='journalctl', run=run_argv,
                 command_timeout=120):
        self.systemctl = systemctl
        self.journalctl = journalctl
        self.run = run
        self.command_timeout = command_timeout
        self.commands = []

    def describe(self):
        return 'systemd (%s)' % self.systemctl

    def _ctl(self, *args, timeout=None):
        argv = [self.systemctl] + list(args)
        self.commands.append(argv)
        rc, out, err = self.run(argv, timeout=timeout or self.command_timeout)
        if rc == 127 or rc == -1:
            raise ProcessManagerError('Running %s failed: %s. Is this host run by systemd?'
                                      % (' '.join(argv), (err or out).strip()))
        return rc, out, err

    def _status_of(self, name, props):
        state = systemd_state(props)
        pid = None
        try:
            pid = int(props.get('MainPID', '0')) or None
        except ValueError:
            pid = None
        description = '%s/%s' % (props.get('ActiveState', '?'), props.get('SubState', '?'))
        if props.get('Result') not in (None, '', 'success'):
            description += ' result=%s' % props['Result']
        return ProcessStatus(name, state, pid if state in ACTIVE_STATES else None,
                             description, ' '.join('%s=%s' % kv for kv in sorted(props.items())))

    def _unit_command(self, verb, *names):
        rc, out, err = self._ctl(verb, *names)
        if rc != 0:
            raise ProcessManagerError('systemctl %s %s failed (rc %d): %s'
                                      % (verb, ' '.join(names), rc, (err or out).strip()))
        return (out + err).strip()

    def log_tail(self, name, lines=40):
        argv = [self.journalctl, '--unit', name, '--lines', str(lines), '--no-pager',
                '--output', 'short-iso']
        self.commands.append(argv)
        rc, out, err = self.run(argv, timeout=30)
        if rc != 0:
            return '[journalctl failed (rc %d): %s]' % (rc, (err or out).strip())
        return out.strip('\n')

    def _show_many(self, names):
        rc, out, err = self._ctl('show', *names, '--no-pager',
                                 '--property=' + self.PROPERTIES)
        if rc != 0:
            raise ProcessManagerError(
                'systemctl show %s failed (rc %d): %s. Is systemd running on this host? '
                'Use process_manager=supervisord where it is not.'
                % (' '.join(names), rc, (err or out).strip()))
        # One block of KEY=value lines per unit, in the order asked, between empty lines.
        blocks = [parse_systemctl_show(block) for block in re.split(r'\n\s*\n', out.strip())]
        if len(blocks) != len(names):
            raise ProcessManagerError('systemctl show %s answered %d blocks for %d units'
                                      % (' '.join(names), len(blocks), len(names)))
        return dict(zip(names, blocks))

    def status_many(self, names):
        return {name: self._status_of(name, props)
                for name, props in self._show_many(names).items()}

    def pending_changes(self, names):
        """'new' when a unit is not loaded, 'changed' when its files changed on disk."""
        changes = {}
        for name, props in self._show_many(names).items():
            if props.get('LoadState') == 'not-found':
                changes[name] = 'new'
            elif props.get('NeedDaemonReload') == 'yes':
                changes[name] = 'changed'
            else:
                changes[name] = ''
        return changes

    def apply_changes(self, names):
        rc, out, err = self._ctl('daemon-reload')
        if rc != 0:
            raise ProcessManagerError('systemctl daemon-reload failed (rc %d): %s'
                                      % (rc, (err or out).strip()))
        return 'daemon-reload'

    def start_many(self, names):
        return self._unit_command('start', *names)

    def stop_many(self, names):
        return self._unit_command('stop', *names)


def default_supervisorctl(python_executable, which):
    """The supervisorctl beside the running Python (same virtualenv), else ``which()``'s."""
    beside = os.path.join(os.path.dirname(python_executable), 'supervisorctl')
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return which('supervisorctl')


def manager_from_params(params, get_bin_path, python_executable, command_timeout=60):
    """The Supervisord or Systemd a module's process_manager options name (doc fragment
    zopeops.stages.process_manager); ProcessManagerError when supervisorctl is not found."""
    if params['process_manager'] == 'systemd':
        return Systemd(systemctl=get_bin_path('systemctl') or 'systemctl',
                       journalctl=get_bin_path('journalctl') or 'journalctl',
                       command_timeout=command_timeout)
    supervisorctl = params.get('supervisorctl') or default_supervisorctl(
        python_executable, get_bin_path)
    if not supervisorctl:
        raise ProcessManagerError(
            'supervisorctl was found neither beside %s nor on PATH. Install supervisor or set '
            'the supervisorctl option to its path.' % python_executable)
    return Supervisord(supervisorctl, params.get('supervisor_config'),
                       command_timeout=command_timeout)
