#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zeo_service
short_description: Start, stop or restart ZEO servers, Zope clients or other listening programs and wait until they are ready
description:
  - Manages one program (O(name)), or all programs of one side of an instance on a host at
    once (O(programs)), through supervisord or systemd, and after starting waits, bounded by
    O(timeout), until they really serve.
  - O(name) is driven as a set of one program, the same way as O(programs).
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
  - Any other program (O(kind=listener), for example HAProxy or the push engine) is ready
    when its O(address) accepts a connection, a C(host:port) or a unix socket's path.
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
    module fails with its state and the last 40 lines of its log. A process whose pid changes
    during the wait has also failed (it died and the process manager started it again). The readiness probes, not supervisord's C(startsecs), decide; the roles
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
        choices: [zeo, zope, listener]
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
      - V(listener) is any other program, ready when O(address) accepts a connection.
    type: str
    choices: [zeo, zope, listener]
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

import sys

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zopeops.stages.plugins.module_utils.process_manager import (
    ProcessManagerError, manager_from_params)
from ansible_collections.zopeops.stages.plugins.module_utils.revision_proof import PROOFS
from ansible_collections.zopeops.stages.plugins.module_utils.service_engine import (
    Programs, ServiceFailed)
from ansible_collections.zopeops.stages.plugins.module_utils.service_options import (
    OptionError, check_options)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type='str'),
            programs=dict(type='list', elements='dict', options=dict(
                name=dict(type='str', required=True),
                kind=dict(type='str', choices=['zeo', 'zope', 'listener']),
                address=dict(type='str'),
                log_path=dict(type='path'),
            )),
            kind=dict(type='str', choices=['zeo', 'zope', 'listener']),
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
    try:
        check_options(module.params)
        manager = manager_from_params(module.params, module.get_bin_path, sys.executable,
                                      command_timeout=module.params['timeout'] + 60)
    except (OptionError, ProcessManagerError) as exc:
        module.fail_json(msg=str(exc))
    programs = Programs(module.params, manager, module.check_mode)
    try:
        result = programs.ensure()
    except ServiceFailed as exc:
        log = exc.log or []
        msg = exc.msg + ('\n' + '\n'.join(log) if log else '')
        module.fail_json(msg=msg, log_tail=log, **programs.result)
    except ProcessManagerError as exc:
        module.fail_json(msg='zeo_service %s: %s' % (', '.join(programs.names), exc),
                         **programs.result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
