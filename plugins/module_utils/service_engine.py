# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""zeo_service's engine: the programs of one call started, restarted or stopped together, and
waited for until they really serve (or are really gone).

One program (the module's ``name``) is a set of one: the same decisions, the same process
manager commands (one ``status``, one ``reread``/``update``, one ``start``/``stop`` for all,
through process_manager's batch calls), the same concurrent readiness wait. Only the result's
shape and the wording of a failure follow the form the user called the module with: with
``name`` the program's fields are the result itself and its log tail has no ``=== <name>``
heading; with ``programs`` each program has its entry in ``programs``.
"""
from __future__ import annotations

import time

from ansible_collections.zopeops.stages.plugins.module_utils.process_manager import (
    ACTIVE_STATES, RUNNING_STATES, ProcessManagerError, ProcessStatus)
from ansible_collections.zopeops.stages.plugins.module_utils.http_checks import (
    HAS_REQUESTS, fetch_with_ansible, fetch_with_requests)
from ansible_collections.zopeops.stages.plugins.module_utils.revision_proof import RevisionProof
from ansible_collections.zopeops.stages.plugins.module_utils.zodb_format import normalize_tid
from ansible_collections.zopeops.stages.plugins.module_utils.readiness import (
    STOP_HOLDER, ProbeResult, holders, join_address, parse_address, pid_alive, port_open,
    probe_http, probe_listener, probe_zeo, tail_file, tail_text, wait_all, wait_until_gone)

LOG_LINES = 40
NOUNS = {'zeo': 'ZEO server', 'zope': 'Zope client', 'listener': 'program'}
HINTS = {'zeo': 'check the storage path and the address in zeo.conf',
         'zope': 'check zope.conf (its ZEO address), zope.ini (the port) and the application '
                 'code',
         'listener': 'check its configuration and the address it should listen on'}


class ServiceFailed(Exception):
    """The module's goal was not reached; ``msg`` is the user's error message, ``log`` the
    log lines that explain it."""

    def __init__(self, msg, log=None):
        super().__init__(msg)
        self.msg = msg
        self.log = log


# -- readiness probes ----------------------------------------------------------------------

def proves_revision(params):
    return bool(params.get('revision_proof') or params.get('revision_json_key')
                or params.get('revision_regex'))


def revision_probe(address, params, pid_of=None, timeout=2.0):
    """A readiness probe that also proves which code revision a Zope client serves.

    It is ``revision_proof``'s proof (the one promote's preflight and pipeline_status make),
    made once per attempt: ready means HTTP 200 on O(health_path) and the revision proven by
    O(revision_proof) (the client's release, a JSON key, or a regex) equal to
    ``expected_revision`` when one is given. A proven other revision is final: waiting cannot
    change the code; so is a release proof that cannot be read from a process that answers.
    """
    host, port = parse_address(address)[1]
    base = 'http://' + join_address(host, port)
    proof = RevisionProof.from_params(params)
    fetch = fetch_with_requests if HAS_REQUESTS else fetch_with_ansible
    headers = {'User-Agent': 'zopeops-readiness', 'Connection': 'close'}

    def probe():
        result = proof.prove(base, fetch, headers, timeout, params.get('expected_revision'),
                             pid_of=pid_of)
        if result['ok']:
            return ProbeResult(True, '%s%s answered HTTP 200 with revision %s (%s)'
                               % (base, proof.health_path, result['revision'], proof.proof),
                               result['revision'])
        final = result['mismatch'] or (proof.proof == 'release' and result['status'] == 200)
        return ProbeResult(False, '%s: %s' % (base, result['error']), result['revision'],
                           final=final)
    return probe


def make_probe(kind, address, params, pid_of=None):
    """The readiness probe of one program: ZEO's ruok, HTTP, HTTP + revision, or (a
    listener) a connection accepted."""
    if kind == 'listener':
        return lambda: probe_listener(address)
    if kind == 'zeo':
        expected_tid = (normalize_tid(params['expected_tid'])
                        if params.get('expected_tid') else None)
        return lambda: probe_zeo(address, params['storage'], expected_tid,
                                 min_connections=params.get('min_connections') or 0)
    if proves_revision(params):
        return revision_probe(address, params, pid_of)
    return lambda: probe_http(address, params['health_path'])


# -- what a failure shows --------------------------------------------------------------------

def log_tail(manager, name, log_path=None):
    """The last 40 lines of log_path, then what the process manager captured.

    Both, because they say different things: a config error or a traceback at start-up
    goes to stderr (captured by supervisord/journald), not to the program's own log file,
    which may still hold an older run's lines.
    """
    lines = []
    manager_lines = LOG_LINES
    if log_path:
        try:
            lines = ['[%s]' % log_path] + tail_file(log_path, LOG_LINES).splitlines()
            manager_lines = LOG_LINES // 2
        except OSError as exc:
            lines.append('[log_path %s could not be read: %s]' % (log_path, exc))
    try:
        text = tail_text(manager.log_tail(name), manager_lines)
    except ProcessManagerError as exc:
        text = '[no log: %s]' % exc
    if text.strip():
        lines += ['[%s output of %s]' % (manager.kind, name)] + text.splitlines()
    return lines


def unknown_program_message(manager, names, supervisor_config=None):
    listed = ', '.join(repr(name) for name in names)
    if manager.kind == 'systemd':
        return ('systemd has no unit %s, also after daemon-reload. Install the unit file '
                '(e.g. /etc/systemd/system/%s.service) or fix the name.'
                % (listed, names[0].split('@')[0]))
    return ('supervisord has no program %s, also after reread/update (via %s). Make sure a '
            '[program:%s] section is in a file that the [include] of %s matches, or fix '
            'the name.' % (listed, manager.describe(), names[0].split(':')[-1],
                           supervisor_config or 'the config'))


def plural_noun(kinds):
    """'ZEO servers', 'Zope clients', or 'programs' for a set of both."""
    kinds = set(kinds)
    return NOUNS[kinds.pop()] + 's' if len(kinds) == 1 else 'programs'


# -- the engine ------------------------------------------------------------------------------

class Programs:
    """The programs of one zeo_service call on this host (a side's ZEO server and its Zope
    clients, or the one program of O(name)), driven together: one status, one reread/update,
    one start or stop command for all, then one readiness wait that polls them all
    concurrently.

    Each program is ``{name, kind, address, log_path}`` (``kind`` defaults to the module's;
    with O(name) the program is made of the module's own name, kind, address and log_path);
    ``self.params`` holds what they share (storage, expected_tid and min_connections for a
    ZEO server, health_path and the revision options for the clients, timeout).
    """

    def __init__(self, params, manager, check_mode=False, clock=time.monotonic,
                 sleep=time.sleep):
        self.params = params
        self.manager = manager
        self.check_mode = check_mode
        self.clock = clock
        self.sleep = sleep
        self.single = params.get('programs') is None
        listed = params['programs'] if not self.single else [
            {key: params.get(key) for key in ('name', 'address', 'log_path')}]
        self.programs = [dict(program, kind=program.get('kind') or params['kind'])
                         for program in listed]
        self.names = [program['name'] for program in self.programs]
        self.by_name = {program['name']: program for program in self.programs}
        self.entries = {name: {'name': name, 'state_before': None, 'state_after': None,
                               'pid': None, 'actions': []} for name in self.names}
        self.summary = {'changed': False, 'actions': [], 'commands': manager.commands,
                        'process_manager': manager.describe()}

    @property
    def result(self):
        """The module's result so far: with O(programs) one entry per program; with O(name)
        the program's own fields (its error and log tail are the failure's msg and log)."""
        if not self.single:
            return dict(self.summary, programs=[self.entries[name] for name in self.names])
        result = dict(self.summary)
        result.update((key, value) for key, value in self.entries[self.names[0]].items()
                      if key not in ('name', 'error', 'log_tail'))
        return result

    # -- what the user asked for -------------------------------------------------------
    def ensure(self):
        before = self._status()
        for name, status in before.items():
            self.entries[name]['state_before'] = status.state
            self._record(name, status)
        if self.params['state'] == 'stopped':
            self._ensure_stopped(before)
        else:
            self._ensure_running(before, restart=self.params['state'] == 'restarted')
        return self.result

    def _ensure_running(self, before, restart):
        current = before
        changes = self.manager.pending_changes(self.names)
        changed = [name for name in self.names if changes.get(name)]
        if changed:
            self._act('daemon-reload' if self.manager.kind == 'systemd' else 'update', changed)
            if not self.check_mode:
                self._call(lambda: self.manager.apply_changes(changed),
                           'apply the new definition%s of' % ('s' if len(changed) > 1 else ''),
                           changed)
                current = self._status()
        absent = [name for name in self.names if current[name].state == 'ABSENT'
                  and not (self.check_mode and changes.get(name) == 'new')]
        if absent:
            raise ServiceFailed(unknown_program_message(
                self.manager, absent, self.params.get('supervisor_config')))
        # `update` of a new or changed program (re)starts it when it has autostart.
        just_started = {name for name in changed
                        if not self.check_mode and current[name].running}
        if restart:
            to_restart = [name for name in self.names if name not in just_started]
            to_start = []
        else:
            to_restart = []
            # BACKOFF: supervisord is already retrying; the wait below reports it failing.
            to_start = [name for name in self.names
                        if current[name].state not in RUNNING_STATES + ('BACKOFF',)]
        if to_restart:
            self._act('restart', to_restart)
        if to_start:
            self._act('start', to_start)
        if self.check_mode:
            for name in to_restart + to_start:
                self.entries[name]['state_after'] = 'RUNNING'
            return
        if to_restart:
            active = [name for name in to_restart if current[name].state in ACTIVE_STATES]
            if active:
                self._call(lambda: self.manager.stop_many(active), 'stop', active)
                self._confirm_gone({name: current[name].pid for name in active},
                                   self.params['timeout'])
            self._call(lambda: self.manager.start_many(to_restart), 'start', to_restart)
        elif to_start:
            self._call(lambda: self.manager.start_many(to_start), 'start', to_start)
        self._wait_ready()

    def _ensure_stopped(self, before):
        active = [name for name in self.names if before[name].state in ACTIVE_STATES]
        if active:
            self._act('stop', active)
            if self.check_mode:
                for name in active:
                    self.entries[name].update(state_after='STOPPED', pid=None)
                return
            self._call(lambda: self.manager.stop_many(active), 'stop', active)
            self._confirm_gone({name: before[name].pid for name in active},
                               self.params['timeout'])
        # Read-only, so also in check mode: a preflight asks whether a side is idle.
        held = [name for name in self.names if name not in active
                and self.by_name[name].get('address')
                and port_open(self.by_name[name]['address'])]
        if held:
            subject = self._subject(held)
            raise ServiceFailed(
                '%s %s stopped per %s, but something still accepts connections at %s. '
                'Another process holds %s (a copy started by hand, or another instance '
                'configured with the same port): %s.'
                % (subject[0].upper() + subject[1:], 'is' if len(held) == 1 else 'are',
                   self.manager.describe(), '; '.join(
                       '%s (%s)' % (self.by_name[name]['address'],
                                    holders(self.by_name[name]['address'])) for name in held),
                   'that address' if len(held) == 1 else 'those addresses', STOP_HOLDER))

    # -- the steps -----------------------------------------------------------------------
    def _act(self, action, names):
        if action not in self.summary['actions']:
            self.summary['actions'].append(action)
        for name in names:
            self.entries[name]['actions'].append(action)
        self.summary['changed'] = True

    def _record(self, name, status):
        self.entries[name].update(state_after=status.state, pid=status.pid)

    def _status(self, names=None):
        return self.manager.status_many(names or self.names)

    def _call(self, action, verb, names):
        try:
            return action()
        except ProcessManagerError as exc:
            statuses = self._settled_status(names)
            raise ServiceFailed(
                'Could not %s %s via %s: %s. State now: %s. Read the log lines below (and '
                'supervisord\'s or systemd\'s own log), fix the cause, and run again.'
                % (verb, self._subject(names), self.manager.describe(), exc,
                   self._states_text(names, statuses)),
                self._log_tails(names)) from None

    def _settled_status(self, names):
        """Summaries for an error message; programs still starting or backing off get up to
        3 seconds to reach the state that explains them."""
        deadline = self.clock() + 3.0
        while True:
            try:
                statuses = self._status(names)
            except ProcessManagerError as exc:
                return {name: 'unknown (%s)' % exc for name in names}
            if self.clock() >= deadline or not any(
                    status.state in ('STARTING', 'BACKOFF') for status in statuses.values()):
                break
            self.sleep(0.2)
        for name, status in statuses.items():
            self._record(name, status)
        return {name: status.summary() for name, status in statuses.items()}

    def _confirm_gone(self, pids, timeout):
        deadline = self.clock() + max(1.0, timeout)
        # `supervisorctl stop` and `systemctl stop` return once the process has exited and
        # was reaped: when every pid is gone already, that is the proof, and the process
        # manager is asked again only while one is not.
        statuses = {name: ProcessStatus(name, 'STOPPED') for name in pids}
        while True:
            if all(pid and not pid_alive(pid) for pid in pids.values()) and not any(
                    status.state in ACTIVE_STATES for status in statuses.values()):
                break
            statuses = self._status(list(pids))
            if self.clock() >= deadline or not any(
                    status.state in ACTIVE_STATES for status in statuses.values()):
                break
            self.sleep(0.1)
        problems, failing = [], []
        for name, pid in pids.items():
            status = statuses[name]
            self._record(name, status)
            address = self.by_name[name].get('address')
            pid_gone, port_closed = wait_until_gone(
                pid, address, max(0.5, deadline - self.clock()), clock=self.clock,
                sleep=self.sleep)
            if status.state in ACTIVE_STATES or not pid_gone:
                problems.append('%s did not stop within %.0f seconds: state %s, pid %s %s'
                                % (name, timeout, status.summary(), pid,
                                   'still exists' if not pid_gone else 'is gone'))
            elif not port_closed:
                problems.append('%s is stopped (pid %s is gone), but %s still accepts '
                                'connections: another process holds that address (%s)'
                                % (name, pid, address, holders(address)))
            else:
                continue
            failing.append(name)
        if problems:
            raise ServiceFailed(
                'Stopping %s via %s failed: %s. Check the stop signal and '
                'stopwaitsecs/TimeoutStopSec (a process that hangs: stop it by its pid); for '
                'a held port, %s.' % (self._subject(pids), self.manager.describe(),
                                      '; '.join(problems), STOP_HOLDER),
                self._log_tails(failing))

    def _pid_reader(self, name):
        # Asked only once the client answers its health page (the release proof's pid).
        return lambda: self._status([name])[name].pid

    def _wait_ready(self):
        probes = {name: make_probe(self.by_name[name]['kind'], self.by_name[name]['address'],
                                   self.params, pid_of=self._pid_reader(name))
                  for name in self.names}
        after_start = self._status()
        for name, status in after_start.items():
            self._record(name, status)
        # The last state seen of each program: the wait's own polls, not one more status call.
        final = dict(after_start)

        def states_of(names):
            # While every process still runs under the pid it started with, nothing can have
            # died: the process manager is asked only when one is gone (or has no pid yet),
            # which spares a supervisorctl run per poll (about 0.2 s of CPU each, more under
            # load) while the programs boot.
            if all(final[name].pid and final[name].state in RUNNING_STATES
                   and pid_alive(final[name].pid) for name in names):
                return {name: (final[name].state, final[name].pid) for name in names}
            statuses = self._status(names)
            final.update(statuses)
            return {name: (status.state, status.pid) for name, status in statuses.items()}

        ready, failed = wait_all(
            probes, states_of, self.params['timeout'],
            initial_pids={name: status.pid for name, status in after_start.items()
                          if status.pid},
            clock=self.clock, sleep=self.sleep)
        for name, status in final.items():
            self._record(name, status)
        for name, (probe, elapsed) in ready.items():
            entry = self.entries[name]
            entry.update(ready_seconds=round(elapsed, 3), ready_detail=probe.detail)
            if self.by_name[name]['kind'] == 'zeo':
                entry['last_tid'] = probe.value
            elif proves_revision(self.params):
                entry['revision'] = probe.value
        if not failed:
            return
        failing = [name for name in self.names if name in failed]
        self._stop_the_dead([name for name in failing if failed[name].died], final)
        for name in failing:
            exc = failed[name]
            # A timeout's reason says its seconds already ('not ready after 120 seconds').
            self.entries[name]['error'] = '%s%s (%s)' % (
                exc.reason, '' if ' after ' in exc.reason else ' after %.1f seconds'
                % exc.elapsed, exc.detail)
        lines = self._log_tails(failing)
        hint = '; '.join(HINTS[kind] for kind in sorted(
            {self.by_name[name]['kind'] for name in failing}))
        raise ServiceFailed(
            '%s not ready via %s: %s. Read the log lines below; %s; then run again.'
            % (NOUNS[self.programs[0]['kind']] if self.single else '%d of %d %s' % (
                len(failing), len(self.names), plural_noun(
                    program['kind'] for program in self.programs)),
               self.manager.describe(), '; '.join('%s at %s: %s. State: %s' % (
                   name, self.by_name[name]['address'], self.entries[name]['error'],
                   final[name].summary()) for name in failing), hint), lines)

    def _stop_the_dead(self, names, statuses):
        """Stop the programs that died during the wait and that the process manager is
        starting again: with ``startsecs = 0`` supervisord counts every start as a success,
        so a program that crashes at start-up would be restarted for ever."""
        again = [name for name in names if statuses[name].state in ACTIVE_STATES]
        if not again:
            return
        try:
            self.manager.stop_many(again)
        except ProcessManagerError:
            pass  # the readiness failure is what the user must read; the state says the rest
        for name, status in self._status().items():
            self._record(name, status)
            statuses[name] = status
        self._act('stop', again)

    # -- the wording of a failure ----------------------------------------------------------
    def _subject(self, names):
        """"ZEO server 'x'" with O(name); 'the Zope clients a, b' with O(programs)."""
        if self.single:
            return '%s %r' % (NOUNS[self.programs[0]['kind']], self.names[0])
        return 'the %s %s' % (plural_noun(self.by_name[name]['kind'] for name in names),
                              ', '.join(names))

    def _states_text(self, names, statuses):
        if self.single:
            return statuses.get(self.names[0], '?')
        return '; '.join('%s %s' % (name, statuses.get(name, '?')) for name in names)

    def _log_tails(self, names):
        """The log tails of ``names``; with O(programs) each after a ``=== <name>`` line,
        which is also kept in that program's entry."""
        lines = []
        for name in names:
            tail = log_tail(self.manager, name, self.by_name[name].get('log_path'))
            if self.single:
                return tail
            self.entries[name]['log_tail'] = tail
            lines += ['=== %s' % name] + tail
        return lines
