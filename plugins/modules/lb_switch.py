#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: lb_switch
short_description: Send a stage's traffic to its live side or its upgrade twin, safely
version_added: 0.1.0
description:
  - Switches the load balancer of one pipeline stage between its live side
    (backend C(be_<stage>_live)) and its upgrade twin (C(be_<stage>_upgrade)), the step of a
    blue/green promotion where traffic moves.
  - "With HAProxy the switch is, in this order: a B(gate) (every server of the target backend
    is C(UP) by HAProxy's own health checks, else the task fails and nothing changes);
    C(set map) (or C(add map)) of the stage's key in the active map; a read-back with
    C(get map); an atomic rewrite of the map file on disk, so that a reload or restart keeps
    the choice; and a bounded wait until the old backend has no current sessions
    (C(scur) 0), reported as RV(drain_seconds)."
  - Also sets a stage's B(write freeze) (O(frozen)) through a second map; while a stage is
    frozen, HAProxy answers unsafe requests (anything but GET, HEAD, OPTIONS) with 503 and a
    C(Retry-After) header and keeps serving safe ones. The file is rewritten as well.
  - "B(The freeze is a lease.) The map holds the epoch second until which the writes are frozen
    (O(lease) seconds after the call), and HAProxy compares it with its own clock on every
    write: a freeze ends by itself at its deadline, whatever happened to the controller that
    set it, and an HAProxy restarted during a freeze that loads the deadline from the file lets
    writes through at the same moment. Every call with O(frozen=true) renews the lease."
  - "For a data cutover (C(docs/promotion.md)): O(frozen=true) with O(wait_writes) sets the
    freeze and then waits until no write that came in before it is still in flight on the
    stage's backends; O(active) with O(frozen=false) then switches (gate, C(set map), read-back,
    file), lifts the freeze, and only after that waits for the old side's drain, so that
    writes are frozen for the switch only, not for the drain. RV(frozen_at), RV(switched_at)
    and RV(unfrozen_at) let the caller compute the freeze window."
  - "A switch under a freeze (O(under_freeze)) is refused, changing nothing, unless the
    stage's freeze is in force with at least O(lease_margin) seconds left; it renews the lease
    before it switches. So a controller that stalled past the lease never switches the traffic
    to a side that lacks the writes the source took after the freeze ended."
  - "With O(stage) and neither O(active) nor O(frozen), a read-only query: RV(before) and
    RV(after) report the stage's side, freeze and servers as HAProxy has them now, and
    RV(healthy_servers) the servers of the side that takes the traffic which pass their
    health checks. With O(wait_healthy) the query waits for one to pass and warns, naming the
    stage and O(frontend_url), when none does: the stage's frontend would answer 503."
  - Also sets the administrative state of one server (O(backend), O(server), O(state)),
    waiting for it to drain when it is taken out (C(scur) 0) and, with O(wait_up), until it
    passes its health checks when it is put back; O(min_others_up) refuses to take out the
    last healthy servers. The state is read with C(show servers state), so a drained server
    whose checks fail (C(DOWN)) is still known as drained. C(playbooks/restart.yml) restarts
    a stage's clients this way, one at a time.
  - With O(balancer=nginx) it rewrites the stage's upstream include file, validates the whole
    configuration with C(nginx -t), reloads nginx gracefully, and puts the old file back if
    nginx refuses the new one.
  - "Idempotent. A stage that already points at the requested side reports C(changed=false),
    sets no timestamp and does not wait for a drain (unless O(drain_other)); O(wait_writes)
    still waits, as a check. A freeze (O(frozen=true)) is a lease: each call renews it and
    reports a change."
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.lb
options:
  balancer:
    description: Which load balancer serves the stage.
    type: str
    choices: [haproxy, nginx]
    default: haproxy
  stage:
    description:
      - The pipeline stage to switch or freeze, for example C(test). Its backends are
        C(be_<stage>_live) and C(be_<stage>_upgrade); its map key is the stage name.
      - Give O(active), O(frozen), or both; give neither to only read the stage's state (with
        O(map_file) and O(frozen_map_file) to read its side and its freeze). Not together with
        O(backend).
    type: str
  active:
    description:
      - The side that should receive the stage's traffic.
    type: str
    choices: [live, upgrade]
  frozen:
    description:
      - V(true) freezes writes of the stage (unsafe methods get 503 + Retry-After), V(false)
        lifts the freeze. When given with O(active), a freeze is set before the switch, and
        lifted after the switch is verified and persisted but before the old side's drain.
        HAProxy only.
      - A failure (a gate refusal, a switch that fails) leaves the freeze as it was; lifting it
        is the caller's decision.
    type: bool
  lease:
    description:
      - With O(frozen=true), and when a switch renews the freeze (O(under_freeze)), the freeze
        ends by itself this many seconds later unless a later call renews it. V(0) holds it
        with no deadline, until a call lifts it; for a balancer that waits for others to switch
        (a stage must never take writes on both sides). HAProxy only.
    type: float
    default: 30.0
  lease_margin:
    description:
      - With O(under_freeze), the least time the freeze must have left for the switch to go
        ahead. It covers the switch itself and the clock difference between this host and
        the hosts that act within the lease (the replay's deadline).
    type: float
    default: 5.0
  under_freeze:
    description:
      - "With O(active), the switch is part of a cutover under the stage's write freeze: it is
        refused, changing nothing, unless the freeze is in force with O(lease_margin) seconds
        left, and it renews the lease (O(lease)) first. The freeze stays on after the switch
        unless O(frozen=false) lifts it."
    type: bool
    default: false
  gate_side:
    description:
      - With O(frozen=true), before the freeze is set, wait (O(gate_timeout)) until every
        server of this side's backend is C(UP) by HAProxy's health checks, and refuse,
        changing nothing, if they are not; so that the health gate of the switch that follows
        runs before writes are frozen, not during the freeze. Without O(frozen) and
        O(active), only this wait (the gates of several balancers, before any freeze).
    type: str
    choices: [live, upgrade]
  wait_writes:
    description:
      - With O(frozen=true), after the freeze is set, wait at most this many seconds until
        HAProxy holds no request with an unsafe method (anything but GET, HEAD, OPTIONS) on
        the stage's backends C(be_<stage>_live) and C(be_<stage>_upgrade), nor one that its
        frontend C(fe_<stage>) took but has not routed yet. HAProxy's C(show sess all) is the
        source. V(0) does not wait.
      - If writes are still in flight when the time is up the task fails, naming them, and
        leaves the freeze set for the caller to lift. Check mode does not wait.
    type: float
    default: 0.0
  wait_healthy:
    description:
      - Read-only query only (HAProxy only); wait at most this many seconds until a server of the
        stage's active backend passes HAProxy's health checks, then warn if none does (it
        stops waiting once every server was checked and is C(DOWN)). V(0) reads the state as
        it is and does not warn. A server HAProxy has not checked yet
        counts as not passing, so give it at least C(rise) checks' time.
    type: float
    default: 0.0
  frontend_url:
    description: The stage's URL through the load balancer, named in the warning of O(wait_healthy).
    type: str
  map_file:
    description:
      - The map file that the stage's C(use_backend) rule reads, exactly as HAProxy loaded it
        (C(show map) lists it); required with O(active) on HAProxy. It is rewritten in place
        after a switch so that a reload keeps the choice.
    type: path
  frozen_map_file:
    description: The map file with C(<stage> 1|0) entries that the freeze rule reads; required
      with O(frozen).
    type: path
  gate:
    description:
      - Refuse to switch unless every server of the target backend is C(UP) by HAProxy's
        health checks (with nginx, unless every target server answers O(health_path) below
        HTTP 500). Turn off only to move traffic away from a side in an emergency.
    type: bool
    default: true
  gate_timeout:
    description:
      - How long the gate waits for the target servers to pass HAProxy's health checks before
        it refuses. A twin just started is DOWN to HAProxy until C(rise) checks have passed,
        and HAProxy counts a server as UP only after its first check has passed. Check mode
        does not wait.
    type: float
    default: 15.0
  drain_timeout:
    description:
      - After a switch (or after taking a server to C(drain)/C(maint)), wait at most this many
        seconds until the old backend (or the server) has no current sessions. V(0) does not
        wait. A drain that does not finish is a warning, or a failure with
        O(fail_on_drain_timeout).
    type: float
    default: 30.0
  drain_other:
    description:
      - "With O(active), wait for the drain of the side that does not take the traffic (at most
        O(drain_timeout)) even when this call did not move the traffic: for the call that
        lifts a freeze after an earlier call switched under it. Returns at once when that side
        has no sessions."
    type: bool
    default: false
  fail_on_drain_timeout:
    description: Fail (after the switch is done and persisted) if the drain did not finish
      within O(drain_timeout), so that a playbook does not stop a side still serving requests.
    type: bool
    default: false
  backend:
    description: Per-server mode, HAProxy only; the backend of O(server).
    type: str
  server:
    description: Per-server mode; the server whose state to set.
    type: str
  state:
    description:
      - Per-server mode; C(ready) takes traffic, C(drain) keeps serving current sessions but
        gets no new ones, C(maint) is out of service (health checks stop too).
    type: str
    choices: [ready, drain, maint]
  min_others_up:
    description:
      - Per-server mode with O(state=drain) or O(state=maint); refuse, changing nothing,
        unless at least this many other servers of O(backend) pass HAProxy's health checks and
        take traffic (state C(ready)). V(1) never takes the last healthy server out of
        rotation (C(playbooks/restart.yml)).
    type: int
    default: 0
  wait_up:
    description:
      - Per-server mode with O(state=ready); wait at most this many seconds until the server
        passes HAProxy's health checks (it takes traffic again), and fail naming its status if
        it does not. V(0) does not wait. Check mode does not wait.
    type: float
    default: 0.0
  nginx_conf:
    description: nginx's main configuration file, given to C(nginx -t -c) and C(nginx -s reload -c).
    type: path
    default: /etc/nginx/nginx.conf
  nginx_include:
    description: The stage's upstream include file, rewritten by a switch; required with
      O(balancer=nginx). It holds C(upstream zopeops_<stage> { ... }).
    type: path
  nginx_binary:
    description: The nginx program.
    type: str
    default: nginx
  nginx_pid_file:
    description: When given, reload by sending HUP to the pid in this file instead of running
      C(nginx -s reload).
    type: path
  nginx_prefix:
    description: nginx's prefix path (C(-p)), for an nginx not installed in the default one.
    type: path
  servers:
    description:
      - With O(balancer=nginx), the servers of the side named by O(active), as C(host:port)
        strings or C({address, port}) dicts (the pipeline model's clients).
    type: list
    elements: raw
  server_options:
    description: With O(balancer=nginx), text appended to each C(server) line, for example
      C(max_fails=1 fail_timeout=2s).
    type: str
    default: ''
  health_path:
    description: With O(balancer=nginx) and O(gate), the path each target server must answer.
    type: str
    default: /
attributes:
  check_mode:
    support: full
    details: Reads HAProxy's state, runs the gate and reports what would change; sends no
      write command, writes no file and does not wait for a drain.
  diff_mode:
    support: full
    details: Shows the map files (or the nginx include file) before and after.
  platform:
    support: full
    platforms: posix
notes:
  - Runtime map changes are lost when HAProxy reloads unless the file says the same; this
    module always rewrites the file after a switch, atomically, keeping its mode and owner.
  - "The stage and map values go into runtime commands, so they may only hold letters,
    digits and C(_ . : @ / + -)."
seealso:
  - name: HAProxy runtime API
    description: set map, get map, show stat, set server.
    link: https://docs.haproxy.org/2.6/management.html#9.3
author:
  - zopeops.stages developers (@zopeops)
"""

EXAMPLES = r"""
- name: Send test's traffic to its upgrade twin once every twin client is up.
  zopeops.stages.lb_switch:
    socket: /run/zopeops/haproxy.sock
    map_file: /etc/haproxy/active.map
    stage: test
    active: upgrade
    drain_timeout: 60
    fail_on_drain_timeout: true
  register: switch

- name: Freeze writes on prod for the data cutover.
  zopeops.stages.lb_switch:
    socket: /run/zopeops/haproxy.sock
    frozen_map_file: /etc/haproxy/frozen.map
    stage: prod
    frozen: true

- name: Freeze writes on prod and wait until the writes already sent are answered.
  zopeops.stages.lb_switch:
    socket: /run/zopeops/haproxy.sock
    frozen_map_file: /etc/haproxy/frozen.map
    stage: prod
    frozen: true
    wait_writes: 10
  register: freeze

- name: Switch prod to its twin and lift the freeze at once; the old side drains after that.
  zopeops.stages.lb_switch:
    socket: /run/zopeops/haproxy.sock
    map_file: /etc/haproxy/active.map
    frozen_map_file: /etc/haproxy/frozen.map
    stage: prod
    active: upgrade
    frozen: false
    drain_timeout: 60
  register: cutover

- name: Show how long prod's writes were frozen.
  ansible.builtin.debug:
    msg: "{{ cutover.unfrozen_at - freeze.frozen_at }} s"

- name: Read which side serves test and whether it is frozen (changes nothing).
  zopeops.stages.lb_switch:
    socket: /run/zopeops/haproxy.sock
    map_file: /etc/haproxy/active.map
    frozen_map_file: /etc/haproxy/frozen.map
    stage: test
  register: test_lb

- name: Take one server out of a single-backend setup.
  zopeops.stages.lb_switch:
    socket: /run/zopeops/haproxy.sock
    backend: be_prod_live
    server: prod-client3
    state: drain

- name: Point nginx's upstream for beta at the twin.
  zopeops.stages.lb_switch:
    balancer: nginx
    stage: beta
    active: upgrade
    nginx_include: /etc/nginx/zopeops/upstream-beta.conf
    servers: "{{ zopeops_model.stages.beta.upgrade.clients }}"
"""

RETURN = r"""
before:
  description: The state before the task. For a stage, C(active) (side), C(frozen) (a
    freeze in force now), C(frozen_until) (its deadline in epoch seconds, null when not frozen
    or held), C(frozen_held) (frozen with no deadline) and C(servers) (backend -> server ->
    HAProxy status); for a server, C(backend), C(server), C(state) and C(status).
  returned: always
  type: dict
  sample: {active: live, frozen: false, frozen_until: null, frozen_held: false,
           servers: {be_test_live: {test-client1: UP}}}
after:
  description: The same after the task (in check mode, what it would be).
  returned: always
  type: dict
  sample: {active: upgrade, frozen: false, servers: {be_test_upgrade: {test_upgrade-client1: UP}}}
healthy_servers:
  description:
    - For a read-only query of a stage with O(map_file) (HAProxy), the servers of the active side's
      backend that pass HAProxy's health checks; in per-server mode, the servers of
      O(backend) that pass them and take traffic (state C(ready)) before the task; null
      otherwise.
  returned: always (null where it does not apply)
  type: list
  elements: str
  sample: [test-client1, test-client2]
drain_seconds:
  description: Seconds until the old backend (or the server) had no current sessions; null
    when nothing was switched or no wait was asked for.
  returned: always
  type: float
  sample: 0.4
drained:
  description: Whether the drain finished within O(drain_timeout); null when there was none.
  returned: always
  type: bool
writes_in_flight_seconds:
  description: With O(wait_writes), seconds from the freeze until no write was in flight on
    the stage's backends (the time waited when they did not finish); null without a wait.
  returned: always
  type: float
  sample: 0.03
writes_in_flight:
  description: The writes still in flight when O(wait_writes) ran out (HAProxy's stream id,
    method, frontend, backend, server, age); empty otherwise.
  returned: always
  type: list
  elements: dict
  sample: [{id: '42', method: POST, frontend: fe_prod, backend: be_prod_live,
            server: prod-client3, age: 12s}]
frozen_at:
  description: Epoch seconds when HAProxy took the freeze (the runtime map said 1); null when
    this task did not set it.
  returned: always
  type: float
  sample: 1764419000.123
switched_at:
  description: Epoch seconds when HAProxy took the new side (runtime map set and read back);
    null when this task did not switch.
  returned: always
  type: float
  sample: 1764419000.456
unfrozen_at:
  description: Epoch seconds when HAProxy lifted the freeze; null when this task did not lift
    it. With O(active), always after RV(switched_at) and before the drain.
  returned: always
  type: float
  sample: 1764419000.461
frozen_until:
  description: The deadline of the stage's freeze after the task (epoch seconds on this host's
    clock), when a freeze with a deadline is in force; null otherwise (not frozen, or held).
  returned: always
  type: int
  sample: 1764419030
commands:
  description: The runtime API commands sent to HAProxy, or the nginx commands run, in order.
  returned: always
  type: list
  elements: str
files:
  description: The files rewritten (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
elapsed_seconds:
  description: How long the whole task took, gate wait and drain included.
  returned: success
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zopeops.stages.plugins.module_utils.balancer import (
    ARGUMENT_SPEC, SwitchError)
from ansible_collections.zopeops.stages.plugins.module_utils.haproxy import (
    HAProxyError, RuntimeAPI)
from ansible_collections.zopeops.stages.plugins.module_utils.haproxy_server import run_server
from ansible_collections.zopeops.stages.plugins.module_utils.haproxy_stage import run_stage
from ansible_collections.zopeops.stages.plugins.module_utils import nginx as nginx_utils


def run(params, check_mode, api_factory=RuntimeAPI):
    """Do what ``params`` ask; return the module result. Raises on failure.

    Which request: a server's state (backend, server, state: module_utils/haproxy_server.py),
    a stage on nginx (module_utils/nginx.py), or a stage on HAProxy, its side, its freeze or a
    read (module_utils/haproxy_stage.py). Each returns the one result of
    module_utils/balancer.py."""
    for name in ('wait_writes', 'lease', 'lease_margin', 'gate_timeout', 'drain_timeout',
                 'wait_up'):
        if params[name] < 0:
            raise SwitchError('%s must be 0 or a number of seconds, not %s.'
                              % (name, params[name]))
    if params['under_freeze'] and params['lease'] and params['lease'] <= params['lease_margin']:
        raise SwitchError('lease (%s s) must be longer than lease_margin (%s s), or 0 to hold '
                          'the freeze with no deadline.' % (params['lease'], params['lease_margin']))
    if params['balancer'] == 'nginx':
        if params['backend']:
            raise SwitchError('Per-server mode (backend/server/state) needs balancer=haproxy.')
        return nginx_utils.switch_stage(params, check_mode)
    api = api_factory(params['socket'], timeout=params['timeout'])
    if params['backend']:
        return run_server(api, params, check_mode)
    return run_stage(api, params, check_mode)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_if=[('balancer', 'haproxy', ['socket'])],
        required_one_of=[('stage', 'backend')],
        mutually_exclusive=[('stage', 'backend')],
        required_together=[('backend', 'server', 'state')],
    )
    started = time.monotonic()
    try:
        result = run(module.params, module.check_mode)
    except SwitchError as exc:
        module.fail_json(msg=str(exc), **dict({'changed': False}, **exc.result))
    except (HAProxyError, nginx_utils.NginxError) as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop('warnings'):
        module.warn(warning)
    result['elapsed_seconds'] = round(time.monotonic() - started, 3)
    if result['drained'] is False and module.params['fail_on_drain_timeout']:
        module.fail_json(msg='The switch is done and persisted, but the old side did not drain '
                             'within %.1fs (drain_timeout).' % module.params['drain_timeout'],
                         **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
