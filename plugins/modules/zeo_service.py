#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zeo_service
short_description: Start, stop or restart a ZEO server or Zope client and wait until it is ready
description:
  - Manages one program of a Zope/ZEO instance through supervisord or systemd, and after
    starting it waits, bounded by O(timeout), until it really serves.
  - A ZEO server is ready when it answers the ZEO protocol's status handshake (C(ruok), the
    one C(zeo-nagios) uses) and reports the last transaction of O(storage); with
    O(expected_tid) that transaction must be exactly the expected one. The handshake is plain
    standard library, so the Python that runs this module does not need ZEO installed.
  - A Zope client is ready when it answers HTTP on O(address) with any status below 500 for
    O(health_path). A 401, 403, 404 or redirect proves the WSGI server and Zope's publisher
    answer; a 5xx (for example a client that cannot reach ZEO) or no answer means not ready.
  - With supervisord, the module first runs C(supervisorctl reread); if the program is new or
    its definition changed it runs C(supervisorctl update <group>), so freshly templated program
    files take effect. With systemd, C(systemctl daemon-reload) plays that part.
  - The wait polls with a growing interval (50 ms to 500 ms), never a fixed sleep. If the
    process exits, or reaches C(FATAL), C(BACKOFF) or C(EXITED), or is not ready in time, the
    module fails with its state and the last 40 lines of its log.
  - O(state=stopped) stops the program and confirms that its process is gone and, if
    O(address) is given, that nothing accepts connections there any more. It does not
    reread or update the definition; a changed definition takes effect at the next start.
version_added: 0.1.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - zopeops.stages.process_manager
options:
  name:
    description:
      - The supervisord program name (C(<instance>-zeo), C(<instance>-<client>)), written
        C(group:program) if the program belongs to a supervisord C([group:...]); or the systemd
        unit (C(zopeops-<instance>-zeo)).
    type: str
    required: true
  kind:
    description:
      - What the program is, which decides how readiness is checked.
    type: str
    choices: [zeo, zope]
    required: true
  state:
    description:
      - V(started) starts the program if it is not running (nothing changes if it is) and
        always waits until it is ready.
      - V(restarted) always stops and starts it, then waits until it is ready.
      - V(stopped) stops it if it runs and confirms that it is gone.
    type: str
    choices: [started, stopped, restarted]
    default: started
  address:
    description:
      - Where the program listens. ZEO, C(host:port), C([ipv6]:port) or a unix socket path;
        Zope, C(host:port).
      - Required for V(started) and V(restarted), which check readiness there. With
        V(stopped), the module also confirms that nothing listens there any more.
    type: str
  storage:
    description:
      - The ZEO storage name (the C(<filestorage NAME>) section in C(zeo.conf)) whose last
        transaction is reported and checked. Only for O(kind=zeo).
    type: str
    default: '1'
  expected_tid:
    description:
      - Hex transaction id (up to 16 digits, C(0x) optional) that the ZEO storage must report
        as its last transaction, proving that the server serves the data that was installed.
      - A different tid fails at once (waiting cannot fix it). Only for O(kind=zeo).
    type: str
  health_path:
    description:
      - The path requested to decide that a Zope client is up. Only for O(kind=zope).
    type: str
    default: /
  timeout:
    description:
      - Seconds to wait for readiness after starting, or for the process to be gone after
        stopping.
    type: int
    default: 120
  log_path:
    description:
      - A log file of the program (C(log/zeo.log), C(log/<client>.log)) whose last 40 lines
        are shown when the program fails.
      - The process manager's capture of the program's stdout/stderr (C(supervisorctl tail),
        C(journalctl -u)) is shown as well (its last 20 lines, 40 without O(log_path)),
        because start-up errors go there, not to the program's own log.
    type: path
attributes:
  check_mode:
    description: Can run in check mode and report what would change without changing it.
    support: full
    details:
      - Reports what would be done (C(changed), the predicted C(state_after) and C(actions))
        and starts, stops, updates and probes nothing. With supervisord it still runs
        C(supervisorctl reread), which only re-parses the config files (as C(supervisorctl
        avail) does) and so changes no process.
  diff_mode:
    description: Not supported; the result's state_before and state_after say what changed.
    support: none
seealso:
  - module: zopeops.stages.zope_healthcheck
  - name: supervisorctl
    description: supervisord's command line client.
    link: https://supervisord.org/running.html#supervisorctl-actions
notes:
  - Readiness is checked from the managed host, so O(address) is as seen from that host.
  - ZEO servers that require TLS are not supported by the readiness probe.
'''

EXAMPLES = r'''
- name: Ensure the ZEO server of test_upgrade runs and holds the installed data.
  zopeops.stages.zeo_service:
    name: test_upgrade-zeo
    kind: zeo
    state: started
    supervisor_config: "{{ zopeops_root }}/supervisor/supervisord.conf"
    address: "{{ zopeops_zeo_address }}"
    expected_tid: "{{ installed_data.tid }}"
    log_path: "{{ zopeops_instance_dir }}/log/zeo.log"
    timeout: 120

- name: Ensure the Zope client client1 of test answers HTTP.
  zopeops.stages.zeo_service:
    name: test-client1
    kind: zope
    state: restarted
    supervisor_config: "{{ zopeops_root }}/supervisor/supervisord.conf"
    address: 127.0.0.1:18480
    health_path: /
    log_path: "{{ zopeops_instance_dir }}/log/client1.log"

- name: Ensure the ZEO server of prod runs (systemd host).
  zopeops.stages.zeo_service:
    name: zopeops-prod-zeo
    kind: zeo
    process_manager: systemd
    address: 10.0.0.5:8100

- name: Ensure the twin's ZEO server is stopped and its port closed.
  zopeops.stages.zeo_service:
    name: test_upgrade-zeo
    kind: zeo
    state: stopped
    supervisor_config: "{{ zopeops_root }}/supervisor/supervisord.conf"
    address: "{{ zopeops_zeo_address }}"
'''

RETURN = r'''
state_before:
  description:
    - The program's state before the module acted, in supervisord's words (systemd states
      are mapped), one of C(ABSENT) (unknown to the process manager), C(STOPPED), C(STARTING),
      C(RUNNING), C(BACKOFF), C(STOPPING), C(EXITED), C(FATAL) or C(UNKNOWN).
  returned: always
  type: str
  sample: STOPPED
state_after:
  description: The program's state when the module finished (predicted in check mode).
  returned: always
  type: str
  sample: RUNNING
pid:
  description: The program's process id when it runs, else null.
  returned: always
  type: int
  sample: 4242
last_tid:
  description: The last transaction id (16 hex digits) that the ZEO storage reported.
  returned: when O(kind=zeo) and the server was found ready
  type: str
  sample: 03f2a1b7c0d4e5f6
ready_seconds:
  description: Seconds from the start of the readiness wait until the program was ready.
  returned: when the module waited for readiness
  type: float
  sample: 0.84
ready_detail:
  description: What the successful readiness probe saw.
  returned: when the module waited for readiness
  type: str
  sample: "ZEO at 127.0.0.1:8100 answers; storage '1' last transaction 03f2a1b7c0d4e5f6"
actions:
  description: What was done (or would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [update, start]
commands:
  description: The process-manager command lines that were run, as argv lists.
  returned: always
  type: list
  elements: list
log_tail:
  description:
    - The last 40 lines of O(log_path), then the last lines of the program's output as the
      process manager captured it (C(supervisorctl tail), C(journalctl -u)).
  returned: on failure, when a log could be read
  type: list
  elements: str
process_manager:
  description: The process manager used, and how it was reached.
  returned: always
  type: str
  sample: supervisord (/srv/venv/bin/supervisorctl -c /srv/zopeops/supervisor/supervisord.conf)
'''

import socket
import sys
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zopeops.stages.plugins.module_utils.process_manager import (
    ACTIVE_STATES, RUNNING_STATES, ProcessManagerError, Supervisord, Systemd,
    default_supervisorctl)
from ansible_collections.zopeops.stages.plugins.module_utils.readiness import (
    NotReady, normalize_tid, parse_address, port_open, probe_http, probe_zeo, tail_file,
    tail_text, wait_until, wait_until_gone)

LOG_LINES = 40


class ServiceFailed(Exception):
    """The module's goal was not reached; ``msg`` is the user's error message."""

    def __init__(self, msg, log=None):
        super().__init__(msg)
        self.msg = msg
        self.log = log


class Service:
    """One program of one instance, as the module sees it."""

    def __init__(self, params, manager, check_mode=False, clock=time.monotonic,
                 sleep=time.sleep):
        self.params = params
        self.name = params['name']
        self.kind = params['kind']
        self.manager = manager
        self.check_mode = check_mode
        self.clock = clock
        self.sleep = sleep
        self.what = '%s %r' % ('ZEO server' if self.kind == 'zeo' else 'Zope client',
                               self.name)
        self.expected_tid = (normalize_tid(params['expected_tid'])
                             if params.get('expected_tid') else None)
        self.result = {
            'changed': False, 'state_before': None, 'state_after': None, 'pid': None,
            'actions': [], 'commands': manager.commands, 'process_manager': manager.describe(),
        }

    # -- what the user asked for -------------------------------------------------------
    def ensure(self):
        before = self.manager.status(self.name)
        self.result['state_before'] = before.state
        self.result['state_after'] = before.state
        self.result['pid'] = before.pid
        if self.params['state'] == 'stopped':
            self._ensure_stopped(before)
        else:
            self._ensure_running(before, restart=self.params['state'] == 'restarted')
        return self.result

    def _act(self, action):
        self.result['actions'].append(action)
        self.result['changed'] = True

    def _ensure_running(self, before, restart):
        current = before
        change = self.manager.pending_change(self.name)
        if change:
            self._act('daemon-reload' if self.manager.kind == 'systemd' else 'update')
            if not self.check_mode:
                self._call(self.manager.apply_change, 'apply the new definition of')
                current = self.manager.status(self.name)
        if current.state == 'ABSENT' and not (self.check_mode and change == 'new'):
            raise ServiceFailed(self._unknown_program_message())
        # `update` of a new or changed program (re)starts it when it has autostart.
        just_started = bool(change) and not self.check_mode and current.running
        if restart and not just_started:
            self._act('restart')
            if self.check_mode:
                return self._predict('RUNNING')
            if current.state in ACTIVE_STATES:
                self._call(self.manager.stop, 'stop')
                self._confirm_gone(current.pid, self._remaining(self.params['timeout']))
            self._call(self.manager.start, 'start')
        elif not restart and current.state not in RUNNING_STATES + ('BACKOFF',):
            # BACKOFF: supervisord is already retrying; the wait below reports it failing.
            self._act('start')
            if self.check_mode:
                return self._predict('RUNNING')
            self._call(self.manager.start, 'start')
        if self.check_mode:
            return self._predict(current.state)
        self._wait_ready()

    def _ensure_stopped(self, before):
        address = self.params.get('address')
        started = self.clock()
        if before.state in ACTIVE_STATES:
            self._act('stop')
            if self.check_mode:
                return self._predict('STOPPED')
            self._call(self.manager.stop, 'stop')
            self._confirm_gone(before.pid, self.params['timeout'] - (self.clock() - started))
        elif address and not self.check_mode and port_open(address):
            raise ServiceFailed(
                '%s is %s per %s, but something still accepts connections at %s. Another '
                'process holds that address (a copy started by hand, or another instance '
                'configured with the same port): find it (ss -ltnp) and stop it, or fix the '
                'port.' % (self.what, before.state, self.manager.describe(), address))
        after = self.manager.status(self.name) if not self.check_mode else before
        self.result['state_after'] = after.state
        self.result['pid'] = after.pid
        return self.result

    # -- helpers -----------------------------------------------------------------------
    def _predict(self, state):
        self.result['state_after'] = state
        return self.result

    def _remaining(self, budget):
        return max(1.0, float(budget))

    def _call(self, action, verb):
        try:
            return action(self.name)
        except ProcessManagerError as exc:
            state = self._state_quietly(settle=True)
            raise ServiceFailed(
                'Could not %s %s via %s: %s. State now: %s. Read the log lines below (and '
                'supervisord\'s or systemd\'s own log), fix the cause, and run again.'
                % (verb, self.what, self.manager.describe(), exc, state),
                self._log_tail()) from None

    def _state_quietly(self, settle=False):
        """The state for an error message; with ``settle``, give a process that is still
        starting or backing off up to 3 seconds to reach the state that explains it."""
        deadline = self.clock() + 3.0
        while True:
            try:
                status = self.manager.status(self.name)
            except ProcessManagerError as exc:
                return 'unknown (%s)' % exc
            if not settle or status.state not in ('STARTING', 'BACKOFF') or (
                    self.clock() >= deadline):
                break
            self.sleep(0.2)
        self.result['state_after'] = status.state
        self.result['pid'] = status.pid
        return status.summary()

    def _confirm_gone(self, pid, timeout):
        address = self.params.get('address')
        deadline = self.clock() + max(1.0, timeout)
        # The process manager first: supervisorctl/systemctl stop normally return after it.
        while True:
            status = self.manager.status(self.name)
            if status.state not in ACTIVE_STATES or self.clock() >= deadline:
                break
            self.sleep(0.1)
        pid_gone, port_closed = wait_until_gone(
            pid, address, max(0.5, deadline - self.clock()), clock=self.clock,
            sleep=self.sleep)
        self.result['state_after'] = status.state
        self.result['pid'] = status.pid
        if status.state in ACTIVE_STATES or not pid_gone:
            raise ServiceFailed(
                '%s did not stop within %.0f seconds via %s: state %s, pid %s %s. Check its '
                'stop signal and stopwaitsecs/TimeoutStopSec, then stop it by its pid.'
                % (self.what, timeout, self.manager.describe(), status.summary(), pid,
                   'still exists' if not pid_gone else 'is gone'), self._log_tail())
        if not port_closed:
            raise ServiceFailed(
                '%s is stopped (pid %s is gone), but %s still accepts connections. Another '
                'process holds that address: find it (ss -ltnp) and stop it, or fix the port.'
                % (self.what, pid, address))

    def _probe(self):
        address = self.params['address']
        if self.kind == 'zeo':
            return lambda: probe_zeo(address, self.params['storage'], self.expected_tid)
        return lambda: probe_http(address, self.params['health_path'])

    def _wait_ready(self):
        timeout = self.params['timeout']
        try:
            probe, elapsed = wait_until(
                self._probe(), lambda: self.manager.status(self.name).state, timeout,
                clock=self.clock, sleep=self.sleep)
        except NotReady as exc:
            state = self._state_quietly()
            hint = ('check the storage path and the address in zeo.conf' if self.kind == 'zeo'
                    else 'check zope.conf (its ZEO address), zope.ini (the port) and the '
                         'application code')
            raise ServiceFailed(
                '%s at %s is not ready via %s: %s after %.1f seconds (%s). State: %s. Read the '
                'log lines below; %s; then run again.'
                % (self.what, self.params['address'], self.manager.describe(), exc.reason,
                   exc.elapsed, exc.detail, state, hint), self._log_tail()) from None
        status = self.manager.status(self.name)
        self.result.update(state_after=status.state, pid=status.pid,
                           ready_seconds=round(elapsed, 3), ready_detail=probe.detail)
        if self.kind == 'zeo':
            self.result['last_tid'] = probe.value
        return self.result

    def _log_tail(self):
        """The last 40 lines of log_path, then what the process manager captured.

        Both, because they say different things: a config error or a traceback at start-up
        goes to stderr (captured by supervisord/journald), not to the program's own log file,
        which may still hold an older run's lines.
        """
        log_path = self.params.get('log_path')
        lines = []
        manager_lines = LOG_LINES
        if log_path:
            try:
                lines = ['[%s]' % log_path] + tail_file(log_path, LOG_LINES).splitlines()
                manager_lines = LOG_LINES // 2
            except OSError as exc:
                lines.append('[log_path %s could not be read: %s]' % (log_path, exc))
        try:
            text = tail_text(self.manager.log_tail(self.name), manager_lines)
        except ProcessManagerError as exc:
            text = '[no log: %s]' % exc
        if text.strip():
            lines += ['[%s output of %s]' % (self.manager.kind, self.name)] + text.splitlines()
        return lines

    def _unknown_program_message(self):
        if self.manager.kind == 'systemd':
            return ('systemd has no unit %r, also after daemon-reload. Install the unit file '
                    '(e.g. /etc/systemd/system/%s.service) or fix the name.'
                    % (self.name, self.name.split('@')[0]))
        return ('supervisord has no program %r, also after reread/update (via %s). Make sure a '
                '[program:%s] section is in a file that the [include] of %s matches, or fix '
                'the name.' % (self.name, self.manager.describe(), self.name.split(':')[-1],
                               self.params.get('supervisor_config') or 'the config'))


def make_manager(module):
    params = module.params
    command_timeout = params['timeout'] + 60
    if params['process_manager'] == 'systemd':
        return Systemd(systemctl=module.get_bin_path('systemctl') or 'systemctl',
                       journalctl=module.get_bin_path('journalctl') or 'journalctl',
                       command_timeout=command_timeout)
    supervisorctl = params['supervisorctl'] or default_supervisorctl(
        sys.executable, module.get_bin_path)
    if not supervisorctl:
        module.fail_json(msg='supervisorctl was found neither beside %s nor on PATH. Install '
                             'supervisor or set the supervisorctl option to its path.'
                             % sys.executable)
    return Supervisord(supervisorctl, params['supervisor_config'],
                       command_timeout=command_timeout)


def validate(module):
    params = module.params
    address = params.get('address')
    if address:
        try:
            family = parse_address(address)[0]
        except ValueError as exc:
            module.fail_json(msg='zeo_service %s: %s.' % (params['name'], exc))
        if params['kind'] == 'zope' and family == socket.AF_UNIX:
            module.fail_json(msg='zeo_service %s: a Zope client is checked over HTTP, so its '
                                 'address must be host:port, not %r.' % (params['name'], address))
    if params['state'] != 'stopped' and not address:
        module.fail_json(msg='zeo_service %s: address is required with state=%s, to check that '
                             'the program is ready.' % (params['name'], params['state']))
    if params.get('expected_tid'):
        if params['kind'] != 'zeo':
            module.fail_json(msg='zeo_service %s: expected_tid is only for kind=zeo.'
                                 % params['name'])
        try:
            normalize_tid(params['expected_tid'])
        except ValueError as exc:
            module.fail_json(msg='zeo_service %s: expected_tid: %s.' % (params['name'], exc))
    if not params['health_path'].startswith('/'):
        params['health_path'] = '/' + params['health_path']
    if params['timeout'] < 1:
        module.fail_json(msg='zeo_service %s: timeout must be at least 1 second.'
                             % params['name'])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str', required=True),
            kind=dict(type='str', required=True, choices=['zeo', 'zope']),
            state=dict(type='str', default='started',
                       choices=['started', 'stopped', 'restarted']),
            process_manager=dict(type='str', default='supervisord',
                                 choices=['supervisord', 'systemd']),
            supervisor_config=dict(type='path'),
            supervisorctl=dict(type='path'),
            address=dict(type='str'),
            storage=dict(type='str', default='1'),
            expected_tid=dict(type='str'),
            health_path=dict(type='str', default='/'),
            timeout=dict(type='int', default=120),
            log_path=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    validate(module)
    service = Service(module.params, make_manager(module), module.check_mode)
    try:
        result = service.ensure()
    except ServiceFailed as exc:
        log = exc.log or []
        msg = exc.msg + ('\n' + '\n'.join(log) if log else '')
        module.fail_json(msg=msg, log_tail=log, **service.result)
    except ProcessManagerError as exc:
        module.fail_json(msg='zeo_service %s: %s' % (module.params['name'], exc),
                         **service.result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
