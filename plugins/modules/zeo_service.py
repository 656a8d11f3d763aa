#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zeo_service
short_description: Start, stop or restart ZEO servers or Zope clients and wait until they are ready
description:
  - Manages one program (O(name)), or all programs of one side of an instance on a host at
    once (O(programs)), through supervisord or systemd, and after starting waits, bounded by
    O(timeout), until they really serve.
  - With O(programs), one call drives them all together, which is what makes a promotion step
    one call per host; one C(supervisorctl status), one C(reread)/C(update), one
    C(supervisorctl start a b c) (or C(systemctl start a b c)) for all, then one readiness wait
    that probes them all concurrently. A side's ZEO server and its Zope clients can be one
    call, each program giving its O(programs[].kind); the clients boot while ZEO opens its
    storage, since a Zope client waits for its ZEO server at start-up. A failure names every
    failing program, each with its log tail. The result lists each program in RV(programs).
  - A ZEO server is ready when it answers the ZEO protocol's status handshake (C(ruok), the
    one C(zeo-nagios) uses) and reports the last transaction of O(storage); with
    O(expected_tid) that transaction must be exactly the expected one. The handshake is plain
    standard library, so the Python that runs this module does not need ZEO installed.
  - A Zope client is ready when it answers HTTP on O(address) with any status below 500 for
    O(health_path). A 401, 403, 404 or redirect proves the WSGI server and Zope's publisher
    answer; a 5xx (for example a client that cannot reach ZEO) or no answer means not ready.
  - With O(revision_proof) a Zope client is ready only when O(health_path) answers C(200) and
    the code revision it runs, proven the O(revision_proof) way, is O(expected_revision), so
    one call means started and proven to serve that revision. A client that serves another
    revision fails at once. C(release) reads the C(REVISION) file of the folder the process
    was started in (C(/proc/<pid>/cwd), the pid from the process manager); the roles start
    clients in C(<instance>/current), which the kernel resolves at the start.
  - With supervisord, the module first runs C(supervisorctl reread); if the program is new or
    its definition changed it runs C(supervisorctl update <group>), so freshly templated program
    files take effect. With systemd, C(systemctl daemon-reload) plays that part.
  - The wait polls with a growing interval (50 ms to 500 ms), never a fixed sleep. If the
    process exits, or reaches C(FATAL), C(BACKOFF) or C(EXITED), or is not ready in time, the
    module fails with its state and the last 40 lines of its log. With O(programs) a process
    whose pid changes during the wait has also failed (it died and the process manager
    started it again). The readiness probes, not supervisord's C(startsecs), decide; the roles
    write C(startsecs = 0) so that C(supervisorctl start) returns at once.
  - A program that died during the wait and that the process manager is starting again is
    stopped before the module fails. With C(startsecs = 0) supervisord counts every start as a
    success and would restart a program that crashes at start-up for ever; C(startretries)
    only counts failures before C(startsecs).
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
      - One of O(name) and O(programs) is required.
    type: str
  programs:
    description:
      - All programs to drive together, instead of O(name), O(address) and O(log_path)
        (exclusive with them). Every other option applies to all of them that it concerns;
        O(storage) and O(expected_tid) to the ZEO servers, O(health_path) and the revision
        options to the Zope clients.
      - With O(state=stopped) they are stopped in the order given (list the clients before
        their ZEO server).
      - A program is started or stopped only if it needs it; the others are just checked, so
        the call stays idempotent.
    type: list
    elements: dict
    suboptions:
      name:
        description: The program or unit name, as for O(name).
        type: str
        required: true
      kind:
        description: What this program is; defaults to O(kind).
        type: str
        choices: [zeo, zope]
      address:
        description:
          - Where it listens, as for O(address). Required with O(state=started) and
            O(state=restarted).
        type: str
      log_path:
        description: Its log file, as for O(log_path).
        type: path
  kind:
    description:
      - What the program is, which decides how readiness is checked.
      - Required with O(name), and with O(programs) unless every program gives its own
        O(programs[].kind).
    type: str
    choices: [zeo, zope]
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
  min_connections:
    description:
      - A ZEO server is ready only once at least this many clients are connected to
        O(storage) (ZEO's own count in its C(ruok) status), for example the stage's Zope
        clients after a restart of their server (C(playbooks/restart.yml -e component=zeo)).
        V(0) does not count. Only for O(kind=zeo).
    type: int
    default: 0
  health_path:
    description:
      - The path requested to decide that a Zope client is up. Only for O(kind=zope).
    type: str
    default: /
  expected_revision:
    description:
      - The code revision (a git commit id) every Zope client must serve once ready, proven
        the O(revision_proof) way.
      - A client that answers C(200) with another revision fails at once (waiting cannot
        change its code). Only for O(kind=zope).
    type: str
  revision_proof:
    description:
      - How the revision a Zope client runs is proven (docs/applications.md).
      - C(release), the REVISION file of the release the running process was started in
        (read on this host through C(/proc/<pid>/cwd)); needs no code in the application.
      - C(json), O(revision_json_key) of the JSON answer of O(revision_page).
      - C(regex), group 1 of O(revision_regex) searched in the answer of O(revision_page).
      - Default C(json) with O(revision_json_key), C(regex) with O(revision_regex), else no
        revision is proven. Only for O(kind=zope).
    type: str
    choices: [release, json, regex]
  revision_page:
    description:
      - The path of the page showing the revision for O(revision_proof=json) or C(regex);
        default O(health_path).
    type: str
  revision_json_key:
    description:
      - A dotted key into the JSON answer of O(revision_page) whose value is the revision, e.g.
        C(revision) for the example application's C(/@@zopeops-info).
      - With it (or O(revision_regex)) readiness needs HTTP C(200), and RV(revision) reports
        what each client serves. Only for O(kind=zope).
    type: str
  revision_regex:
    description:
      - A regular expression whose group 1 captures the revision from the answer of
        O(health_path); used when O(revision_json_key) is not given. Only for O(kind=zope).
    type: str
  timeout:
    description:
      - Seconds to wait for readiness after starting, or for the process to be gone after
        stopping. With O(programs), one budget for all of them (they are waited for
        concurrently).
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
        and starts, stops, updates and probes no readiness. With supervisord it still runs
        C(supervisorctl reread), which only re-parses the config files (as C(supervisorctl
        avail) does) and so changes no process.
      - With O(state=stopped) it still checks that nothing accepts connections at the address
        of a program that is not running (read-only), so a check-mode call tells whether a
        side is idle.
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

- name: Ensure every Zope client of test_upgrade on this host runs the twin's revision.
  zopeops.stages.zeo_service:
    kind: zope
    state: started
    supervisor_config: "{{ zopeops_root }}/supervisor/supervisord.conf"
    programs:
      - {name: test_upgrade-client1, address: "127.0.0.1:18436",
         log_path: "{{ zopeops_instance_dir }}/log/client1.log"}
      - {name: test_upgrade-client2, address: "127.0.0.1:18437",
         log_path: "{{ zopeops_instance_dir }}/log/client2.log"}
    health_path: /
    revision_proof: release
    expected_revision: "{{ plan.twin_revision }}"
  register: twin_clients

- name: Ensure the twin's ZEO server and clients serve the installed data and revision.
  zopeops.stages.zeo_service:
    supervisor_config: "{{ zopeops_root }}/supervisor/supervisord.conf"
    programs:
      - {name: test_upgrade-zeo, kind: zeo, address: "127.0.0.1:18435"}
      - {name: test_upgrade-client1, kind: zope, address: "127.0.0.1:18436"}
    expected_tid: "{{ installed_data.tid }}"
    health_path: /@@zopeops-info
    revision_json_key: revision
    expected_revision: "{{ plan.twin_revision }}"

- name: Ensure all Zope clients of test on this host are stopped (one supervisorctl stop).
  zopeops.stages.zeo_service:
    kind: zope
    state: stopped
    supervisor_config: "{{ zopeops_root }}/supervisor/supervisord.conf"
    programs:
      - {name: test-client1, address: "127.0.0.1:18431"}
      - {name: test-client2, address: "127.0.0.1:18432"}

- name: Ensure the twin's ZEO server is stopped and its port closed.
  zopeops.stages.zeo_service:
    name: test_upgrade-zeo
    kind: zeo
    state: stopped
    supervisor_config: "{{ zopeops_root }}/supervisor/supervisord.conf"
    address: "{{ zopeops_zeo_address }}"
'''

RETURN = r'''
programs:
  description:
    - With O(programs), one entry per program in the order given.
    - C(name); C(state_before) and C(state_after) (as RV(state_before)); C(pid); C(actions)
      done to it (C(update), C(daemon-reload), C(start), C(restart), C(stop)).
    - C(ready_seconds) (from the start of the common wait until this program was ready) and
      C(ready_detail), when it was waited for and became ready; C(last_tid) for ZEO;
      C(revision) for Zope with O(revision_proof).
    - C(error) and C(log_tail) for a program that failed.
  returned: with O(programs)
  type: list
  elements: dict
  sample:
    - {name: test-client1, state_before: STOPPED, state_after: RUNNING, pid: 4242,
       actions: [start], ready_seconds: 1.2, revision: 3f2c1a9e0b7d4c55a1e2f3b4c5d6e7f8a9b0c1d2,
       ready_detail: "http://127.0.0.1:18431/ answered HTTP 200 with revision 3f2c... (release)"}
revision:
  description: The code revision the Zope client serves (see O(revision_proof)).
  returned: with O(name), O(kind=zope) and O(revision_proof), when ready
  type: str
  sample: 3f2c1a9e0b7d4c55a1e2f3b4c5d6e7f8a9b0c1d2
state_before:
  description:
    - The program's state before the module acted, in supervisord's words (systemd states
      are mapped), one of C(ABSENT) (unknown to the process manager), C(STOPPED), C(STARTING),
      C(RUNNING), C(BACKOFF), C(STOPPING), C(EXITED), C(FATAL) or C(UNKNOWN).
  returned: with O(name)
  type: str
  sample: STOPPED
state_after:
  description: The program's state when the module finished (predicted in check mode).
  returned: with O(name)
  type: str
  sample: RUNNING
pid:
  description: The program's process id when it runs, else null.
  returned: with O(name)
  type: int
  sample: 4242
last_tid:
  description: The last transaction id (16 hex digits) that the ZEO storage reported.
  returned: with O(name), when O(kind=zeo) and the server was found ready
  type: str
  sample: 03f2a1b7c0d4e5f6
ready_seconds:
  description: Seconds from the start of the readiness wait until the program was ready.
  returned: with O(name), when the module waited for readiness
  type: float
  sample: 0.84
ready_detail:
  description: What the successful readiness probe saw.
  returned: with O(name), when the module waited for readiness
  type: str
  sample: "ZEO at 127.0.0.1:8100 answers; storage '1' last transaction 03f2a1b7c0d4e5f6"
actions:
  description:
    - What was done (or would be done in check mode), in order. With O(programs), each action
      once (it was one command for all); RV(programs) says which program got which.
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
    - With O(programs), the same for every failing program, each after a C(=== <name>) line.
  returned: on failure, when a log could be read
  type: list
  elements: str
process_manager:
  description: The process manager used, and how it was reached.
  returned: always
  type: str
  sample: supervisord (/srv/venv/bin/supervisorctl -c /srv/zopeops/supervisor/supervisord.conf)
'''

import re
import socket
import sys
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zopeops.stages.plugins.module_utils.process_manager import (
    ACTIVE_STATES, RUNNING_STATES, ProcessManagerError, ProcessStatus, manager_from_params)
from ansible_collections.zopeops.stages.plugins.module_utils.http_checks import (
    HAS_REQUESTS, fetch_with_ansible, fetch_with_requests)
from ansible_collections.zopeops.stages.plugins.module_utils.revision_proof import (
    PROOFS, RevisionProof)
from ansible_collections.zopeops.stages.plugins.module_utils.zodb_format import normalize_tid
from ansible_collections.zopeops.stages.plugins.module_utils.readiness import (
    STOP_HOLDER, ProbeResult, holders, parse_address, pid_alive, port_open, probe_http,
    probe_zeo, tail_file, tail_text, wait_all, wait_until_gone)

LOG_LINES = 40


def revision_probe(address, params, pid_of=None, timeout=2.0):
    """A readiness probe that also proves which code revision a Zope client serves.

    It is ``revision_proof``'s proof (the one promote's preflight and pipeline_status make),
    made once per attempt: ready means HTTP 200 on O(health_path) and the revision proven by
    O(revision_proof) (the client's release, a JSON key, or a regex) equal to
    ``expected_revision`` when one is given. A proven other revision is final: waiting cannot
    change the code; so is a release proof that cannot be read from a process that answers.
    """
    host, port = parse_address(address)[1]
    base = 'http://%s:%d' % (host if ':' not in host else '[%s]' % host, port)
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


def proves_revision(params):
    return bool(params.get('revision_proof') or params.get('revision_json_key')
                or params.get('revision_regex'))


def make_probe(kind, address, params, pid_of=None):
    """The readiness probe of one program: ZEO's ruok, HTTP, or HTTP + revision."""
    if kind == 'zeo':
        expected_tid = (normalize_tid(params['expected_tid'])
                        if params.get('expected_tid') else None)
        return lambda: probe_zeo(address, params['storage'], expected_tid,
                                 min_connections=params.get('min_connections') or 0)
    if proves_revision(params):
        return revision_probe(address, params, pid_of)
    return lambda: probe_http(address, params['health_path'])


NOUNS = {'zeo': 'ZEO server', 'zope': 'Zope client'}
HINTS = {'zeo': 'check the storage path and the address in zeo.conf',
         'zope': 'check zope.conf (its ZEO address), zope.ini (the port) and the application '
                 'code'}


def plural_noun(kinds):
    """'ZEO servers', 'Zope clients', or 'programs' for a set of both."""
    kinds = set(kinds)
    return NOUNS[kinds.pop()] + 's' if len(kinds) == 1 else 'programs'


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
        self.what = '%s %r' % (NOUNS[self.kind], self.name)
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
        elif address and port_open(address):
            raise ServiceFailed(
                '%s is %s per %s, but something still accepts connections at %s. Another '
                'process holds that address (a copy started by hand, or another instance '
                'configured with the same port; %s): %s.'
                % (self.what, before.state, self.manager.describe(), address,
                   holders(address), STOP_HOLDER))
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
                'process holds that address (%s): %s.'
                % (self.what, pid, address, holders(address), STOP_HOLDER))

    def _probe(self):
        return make_probe(self.kind, self.params['address'], self.params,
                          pid_of=lambda: self.manager.status(self.name).pid)

    def _wait_ready(self):
        def states_of(names):
            status = self.manager.status(self.name)
            return {self.name: (status.state, status.pid)}

        # wait_all (for one program) rather than wait_until: it also catches a process that
        # died and was started again between two polls (its pid changed).
        ready, failed = wait_all({self.name: self._probe()}, states_of, self.params['timeout'],
                                 clock=self.clock, sleep=self.sleep)
        if failed:
            exc = failed[self.name]
            log = self._log_tail()
            if exc.died and self.manager.status(self.name).state in ACTIVE_STATES:
                # startsecs = 0: supervisord would restart a crashing program for ever.
                self._act('stop')
                try:
                    self.manager.stop(self.name)
                except ProcessManagerError:
                    pass  # the readiness failure is the message; the state says the rest
            state = self._state_quietly()
            raise ServiceFailed(
                '%s at %s is not ready via %s: %s after %.1f seconds (%s). State: %s. Read the '
                'log lines below; %s; then run again.'
                % (self.what, self.params['address'], self.manager.describe(), exc.reason,
                   exc.elapsed, exc.detail, state, HINTS[self.kind]), log)
        probe, elapsed = ready[self.name]
        status = self.manager.status(self.name)
        self.result.update(state_after=status.state, pid=status.pid,
                           ready_seconds=round(elapsed, 3), ready_detail=probe.detail)
        if self.kind == 'zeo':
            self.result['last_tid'] = probe.value
        elif proves_revision(self.params):
            self.result['revision'] = probe.value
        return self.result

    def _log_tail(self):
        return log_tail(self.manager, self.name, self.params.get('log_path'))

    def _unknown_program_message(self):
        return unknown_program_message(self.manager, [self.name],
                                       self.params.get('supervisor_config'))


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


class ProgramSet:
    """All programs of one side of an instance on this host (its ZEO server and its Zope
    clients), driven together: one status, one reread/update, one start or stop command for
    all, then one readiness wait that polls them all concurrently.

    Each program is ``{name, kind, address, log_path}`` (``kind`` defaults to the module's);
    ``self.params`` holds what they share (storage, expected_tid for the ZEO server,
    health_path and the revision options for the clients, timeout).
    """

    def __init__(self, params, manager, check_mode=False, clock=time.monotonic,
                 sleep=time.sleep):
        self.params = params
        self.manager = manager
        self.check_mode = check_mode
        self.clock = clock
        self.sleep = sleep
        self.programs = [dict(program, kind=program.get('kind') or params['kind'])
                         for program in params['programs']]
        self.nouns = plural_noun(program['kind'] for program in self.programs)
        self.names = [program['name'] for program in self.programs]
        self.by_name = {program['name']: program for program in self.programs}
        self.entries = {name: {'name': name, 'state_before': None, 'state_after': None,
                               'pid': None, 'actions': []} for name in self.names}
        self.result = {'changed': False, 'actions': [], 'commands': manager.commands,
                       'process_manager': manager.describe(),
                       'programs': [self.entries[name] for name in self.names]}

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

    def _act(self, action, names=()):
        if action not in self.result['actions']:
            self.result['actions'].append(action)
        for name in names:
            self.entries[name]['actions'].append(action)
        self.result['changed'] = True

    def _record(self, name, status):
        self.entries[name].update(state_after=status.state, pid=status.pid)

    def _status(self):
        return self.manager.status_many(self.names)

    def _ensure_running(self, before, restart):
        current = before
        changes = self.manager.pending_changes(self.names)
        changed = [name for name in self.names if changes.get(name)]
        if changed:
            self._act('daemon-reload' if self.manager.kind == 'systemd' else 'update', changed)
            if not self.check_mode:
                self._call(lambda: self.manager.apply_changes(changed),
                           'apply the new definitions of', changed)
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
            return self.result
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
        return self.result

    def _ensure_stopped(self, before):
        active = [name for name in self.names if before[name].state in ACTIVE_STATES]
        if active:
            self._act('stop', active)
            if self.check_mode:
                for name in active:
                    self.entries[name].update(state_after='STOPPED', pid=None)
                return self.result
            self._call(lambda: self.manager.stop_many(active), 'stop', active)
            self._confirm_gone({name: before[name].pid for name in active},
                               self.params['timeout'])
        # Read-only, so also in check mode: a preflight asks whether a side is idle.
        held = [name for name in self.names if name not in active
                and self.by_name[name].get('address')
                and port_open(self.by_name[name]['address'])]
        if held:
            raise ServiceFailed(
                'These %s are stopped per %s, but something still accepts connections '
                'at their address: %s. Another process holds it (a copy started by hand, '
                'or another instance configured with the same port): %s.'
                % (self.nouns, self.manager.describe(), '; '.join(
                    '%s at %s, %s' % (name, self.by_name[name]['address'],
                                      holders(self.by_name[name]['address']))
                    for name in held), STOP_HOLDER))
        return self.result

    # -- helpers -----------------------------------------------------------------------
    def _call(self, action, verb, names):
        try:
            return action()
        except ProcessManagerError as exc:
            statuses = self._settled_status(names)
            raise ServiceFailed(
                'Could not %s the %s %s via %s: %s. State now: %s. Read the log lines '
                'below (and supervisord\'s or systemd\'s own log), fix the cause, and run '
                'again.' % (verb, self.nouns, ', '.join(names), self.manager.describe(), exc,
                            '; '.join('%s %s' % (name, statuses.get(name, '?'))
                                      for name in names)),
                self._log_tails(names)) from None

    def _settled_status(self, names):
        """Summaries for an error message; programs still starting or backing off get up to
        3 seconds to reach the state that explains them."""
        deadline = self.clock() + 3.0
        while True:
            try:
                statuses = self.manager.status_many(names)
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
            statuses = self.manager.status_many(list(pids))
            if self.clock() >= deadline or not any(
                    status.state in ACTIVE_STATES for status in statuses.values()):
                break
            self.sleep(0.1)
        problems = []
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
        if problems:
            raise ServiceFailed(
                'Stopping the %s via %s failed: %s. Check their stop signal and '
                'stopwaitsecs/TimeoutStopSec; for a held port, %s.'
                % (self.nouns, self.manager.describe(), '; '.join(problems), STOP_HOLDER),
                self._log_tails([problem.split(' ', 1)[0] for problem in problems]))

    def _pid_reader(self, name):
        # Asked only once the client answers its health page (the release proof's pid).
        return lambda: self.manager.status(name).pid

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
            statuses = self.manager.status_many(names)
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
        if failed:
            failing = [name for name in self.names if name in failed]
            self._stop_the_dead([name for name in failing if failed[name].died], final)
            lines = []
            for name in failing:
                exc = failed[name]
                self.entries[name]['error'] = '%s after %.1f seconds (%s)' % (
                    exc.reason, exc.elapsed, exc.detail)
                tail = log_tail(self.manager, name, self.by_name[name].get('log_path'))
                self.entries[name]['log_tail'] = tail
                lines += ['=== %s' % name] + tail
            hint = '; '.join(HINTS[kind] for kind in sorted(
                {self.by_name[name]['kind'] for name in failing}))
            raise ServiceFailed(
                '%d of %d %s not ready via %s: %s. Read the log lines below; %s; then run '
                'again.' % (len(failing), len(self.names), self.nouns, self.manager.describe(),
                            '; '.join('%s at %s: %s, state %s' % (
                                name, self.by_name[name]['address'],
                                self.entries[name]['error'], final[name].summary())
                                for name in failing), hint), lines)
        return self.result

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
        for name in again:
            self.entries[name]['actions'].append('stop')

    def _log_tails(self, names):
        lines = []
        for name in names:
            if name in self.by_name:
                lines += ['=== %s' % name] + log_tail(self.manager, name,
                                                      self.by_name[name].get('log_path'))
        return lines


def make_manager(module):
    try:
        return manager_from_params(module.params, module.get_bin_path, sys.executable,
                                   command_timeout=module.params['timeout'] + 60)
    except ProcessManagerError as exc:
        module.fail_json(msg=str(exc))


def _check_address(module, what, kind, address):
    try:
        family = parse_address(address)[0]
    except ValueError as exc:
        module.fail_json(msg='zeo_service %s: %s.' % (what, exc))
    if kind == 'zope' and family == socket.AF_UNIX:
        module.fail_json(msg='zeo_service %s: a Zope client is checked over HTTP, so its '
                             'address must be host:port, not %r.' % (what, address))


def validate(module):
    """Refuse what cannot work, naming every program concerned."""
    params = module.params
    what = params['name'] or ', '.join(p['name'] for p in params['programs'] or [])
    if params['programs'] is not None:
        if not params['programs']:
            module.fail_json(msg='zeo_service: programs is empty; list the programs of the '
                                 'side (name, address, log_path), or use name.')
        names = [program['name'] for program in params['programs']]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            module.fail_json(msg='zeo_service %s: programs lists %s more than once.'
                                 % (what, ', '.join(twice)))
        untyped = [program['name'] for program in params['programs']
                   if not (program.get('kind') or params['kind'])]
        if untyped:
            module.fail_json(msg='zeo_service %s: say what %s %s: kind (zeo or zope), for the '
                                 'call or for each program.'
                                 % (what, ', '.join(untyped),
                                    'is' if len(untyped) == 1 else 'are'))
        missing = [program['name'] for program in params['programs']
                   if not program.get('address')]
        if params['state'] != 'stopped' and missing:
            module.fail_json(msg='zeo_service %s: address is required with state=%s for every '
                                 'program, to check that it is ready; missing for %s.'
                                 % (what, params['state'], ', '.join(missing)))
        for program in params['programs']:
            if program.get('address'):
                _check_address(module, program['name'], program.get('kind') or params['kind'],
                               program['address'])
        kinds = {program.get('kind') or params['kind'] for program in params['programs']}
    else:
        if params.get('address'):
            _check_address(module, what, params['kind'], params['address'])
        elif params['state'] != 'stopped':
            module.fail_json(msg='zeo_service %s: address is required with state=%s, to check '
                                 'that the program is ready.' % (what, params['state']))
        kinds = {params['kind']}
    if params.get('expected_tid'):
        if 'zeo' not in kinds:
            module.fail_json(msg='zeo_service %s: expected_tid is only for kind=zeo.' % what)
        try:
            normalize_tid(params['expected_tid'])
        except ValueError as exc:
            module.fail_json(msg='zeo_service %s: expected_tid: %s.' % (what, exc))
    wants_revision = any(params.get(key) for key in (
        'expected_revision', 'revision_proof', 'revision_json_key', 'revision_regex'))
    if wants_revision and 'zope' not in kinds:
        module.fail_json(msg='zeo_service %s: expected_revision, revision_proof, '
                             'revision_json_key and revision_regex are only for kind=zope.'
                             % what)
    if params.get('expected_revision') and not proves_revision(params):
        module.fail_json(msg='zeo_service %s: expected_revision needs revision_proof (release, '
                             'json with revision_json_key, or regex with revision_regex) to '
                             'say how the revision is proven.' % what)
    if params.get('revision_json_key') and params.get('revision_regex'):
        module.fail_json(msg='zeo_service %s: give revision_json_key or revision_regex, not '
                         'both.' % what)
    if proves_revision(params):
        problems = RevisionProof.from_params(params).problems()
        if problems:
            module.fail_json(msg='zeo_service %s: the revision proof is not usable: %s.'
                             % (what, '; '.join(problems)))
    if params.get('revision_regex'):
        try:
            if re.compile(params['revision_regex']).groups < 1:
                module.fail_json(msg='zeo_service %s: revision_regex %r has no group: group 1 '
                                     'must capture the revision.'
                                     % (what, params['revision_regex']))
        except re.error as exc:
            module.fail_json(msg='zeo_service %s: revision_regex %r is not a valid regular '
                                 'expression: %s.' % (what, params['revision_regex'], exc))
    if not params['health_path'].startswith('/'):
        params['health_path'] = '/' + params['health_path']
    if params['timeout'] < 1:
        module.fail_json(msg='zeo_service %s: timeout must be at least 1 second.' % what)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str'),
            programs=dict(type='list', elements='dict', options=dict(
                name=dict(type='str', required=True),
                kind=dict(type='str', choices=['zeo', 'zope']),
                address=dict(type='str'),
                log_path=dict(type='path'),
            )),
            kind=dict(type='str', choices=['zeo', 'zope']),
            state=dict(type='str', default='started',
                       choices=['started', 'stopped', 'restarted']),
            process_manager=dict(type='str', default='supervisord',
                                 choices=['supervisord', 'systemd']),
            supervisor_config=dict(type='path'),
            supervisorctl=dict(type='path'),
            address=dict(type='str'),
            storage=dict(type='str', default='1'),
            expected_tid=dict(type='str'),
            min_connections=dict(type='int', default=0),
            health_path=dict(type='str', default='/'),
            expected_revision=dict(type='str'),
            revision_proof=dict(type='str', choices=list(PROOFS)),
            revision_page=dict(type='str'),
            revision_json_key=dict(type='str', no_log=False),
            revision_regex=dict(type='str'),
            timeout=dict(type='int', default=120),
            log_path=dict(type='path'),
        ),
        mutually_exclusive=[('programs', 'name'), ('programs', 'address'),
                            ('programs', 'log_path')],
        required_one_of=[('name', 'programs')],
        required_by={'name': 'kind'},
        supports_check_mode=True,
    )
    validate(module)
    manager = make_manager(module)
    if module.params['programs'] is not None:
        service = ProgramSet(module.params, manager, module.check_mode)
        what = ', '.join(service.names)
    else:
        service = Service(module.params, manager, module.check_mode)
        what = module.params['name']
    try:
        result = service.ensure()
    except ServiceFailed as exc:
        log = exc.log or []
        msg = exc.msg + ('\n' + '\n'.join(log) if log else '')
        module.fail_json(msg=msg, log_tail=log, **service.result)
    except ProcessManagerError as exc:
        module.fail_json(msg='zeo_service %s: %s' % (what, exc), **service.result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
