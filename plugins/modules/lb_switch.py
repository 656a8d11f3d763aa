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

from ansible_collections.zopeops.stages.plugins.module_utils.files import atomic_write
from ansible_collections.zopeops.stages.plugins.module_utils.haproxy import (
    HELD, HAProxyError, RuntimeAPI, check_token, file_lock, freeze_state, freeze_value,
    parse_map_text, read_text, server_is_up, server_state, set_map_line, wait_until_idle,
    wait_until_no_writes)
from ansible_collections.zopeops.stages.plugins.module_utils import nginx as nginx_utils

SIDES = ('live', 'upgrade')


class SwitchError(Exception):
    """A refusal (gate, unknown name) that changed nothing; carries the state seen."""

    def __init__(self, message, **result):
        super().__init__(message)
        self.result = result


def _stream_summary(stream):
    return {key: stream[key] for key in ('id', 'method', 'frontend', 'backend', 'server', 'age')}


def backend_name(stage, side):
    return 'be_%s_%s' % (stage, side)


def side_of(value, stage):
    for side in SIDES:
        if value == backend_name(stage, side):
            return side
    return value


def _statuses(api, backends, rows):
    statuses = {}
    for backend in backends:
        servers = api.backend_stats(backend, rows)['servers']
        statuses[backend] = {name: server['status'] for name, server in servers.items()}
    return statuses


def _gate(api, stage, side, rows, before, timeout, clock=time.monotonic, sleep=time.sleep):
    """Return once every server of the target backend is UP; wait at most ``timeout``."""
    target = backend_name(stage, side)
    deadline = clock() + timeout
    while True:
        servers = api.backend_stats(target, rows)['servers']
        if not servers or all(server_is_up(s['status'], s['check']) for s in servers.values()):
            break
        if clock() >= deadline:
            break
        sleep(0.2)
        rows = api.show_stat()
    if not servers:
        raise SwitchError(
            'Refusing to switch stage %s to %s: backend %s has no servers (the stage has no %s '
            'side in the pipeline model, or the haproxy role has not rendered it yet). Nothing '
            'was changed.' % (stage, side, target, side), before=before)
    down = ['%s (%s%s)' % (name, srv['status'] or 'unknown',
                           ', check ' + srv['check'] if srv['check'] else '')
            for name, srv in sorted(servers.items())
            if not server_is_up(srv['status'], srv['check'])]
    if down:
        raise SwitchError(
            'Refusing to switch stage %s to %s: not every server of %s is UP by HAProxy\'s health '
            'checks (waited %.0fs): %s. Nothing was changed. Start those servers and wait until '
            'they pass their checks, or set gate=false to move traffic anyway.'
            % (stage, side, target, timeout, ', '.join(down)), before=before)


def _healthy_servers(api, stage, side, rows, timeout, clock=time.monotonic, sleep=time.sleep):
    """The servers of the stage's ``side`` that pass their checks, waiting at most ``timeout``
    seconds for one to."""
    backend = backend_name(stage, side)
    deadline = clock() + timeout
    while True:
        servers = api.backend_stats(backend, rows)['servers']
        healthy = sorted(name for name, srv in servers.items()
                         if server_is_up(srv['status'], srv['check']))
        # Every server checked and DOWN (or in maintenance): waiting longer will not help.
        settled = all((srv['status'] or '').startswith(('DOWN', 'MAINT'))
                      and (srv['check'] or 'INI').lstrip('* ')[:3] not in ('INI', '')
                      for srv in servers.values())
        if healthy or settled or clock() >= deadline:
            return healthy
        sleep(0.25)
        rows = api.show_stat()


def _set_map_entry(api, map_file, key, value, check_mode, result, diffs):
    """Make runtime map and file say key -> value; return True if anything changed."""
    if check_mode:
        return _set_map_entry_locked(api, map_file, key, value, check_mode, result, diffs)
    with file_lock(map_file):
        return _set_map_entry_locked(api, map_file, key, value, check_mode, result, diffs)


def _set_map_entry_locked(api, map_file, key, value, check_mode, result, diffs):
    """Returns (changed, runtime value before, epoch when HAProxy took the value or None)."""
    map_name = api.resolve_map(map_file)
    runtime_value = api.get_map(map_name, key)
    text = read_text(map_file)
    file_value = dict(parse_map_text(text)).get(key)
    changed = False
    taken_at = None
    if runtime_value != value:
        changed = True
        if not check_mode:
            api.set_map(map_name, key, value)  # reads the value back, raises if it differs
            taken_at = round(time.time(), 6)
    if file_value != value:
        changed = True
        new_text = set_map_line(text, key, value)
        diffs.append({'before_header': map_file, 'before': text,
                      'after_header': map_file, 'after': new_text})
        result['files'].append(map_file)
        if not check_mode:
            try:
                atomic_write(map_file, new_text)
            except OSError as exc:
                raise HAProxyError(
                    'HAProxy now has %s -> %s, but rewriting the map file %s failed (%s): a reload '
                    'would undo the change. Fix the file\'s folder permissions and run again.'
                    % (key, value, map_file, exc)) from None
    return changed, runtime_value, taken_at


def haproxy_stage(api, params, check_mode):
    stage = check_token(params['stage'], 'Stage')
    result = {'changed': False, 'drain_seconds': None, 'drained': None, 'files': [],
              'commands': api.sent, 'warnings': [], 'writes_in_flight_seconds': None,
              'writes_in_flight': [], 'frozen_at': None, 'switched_at': None,
              'unfrozen_at': None, 'healthy_servers': None, 'frozen_until': None}
    diffs = []
    rows = api.show_stat()
    known = {row['pxname'] for row in rows if row['svname'] == 'BACKEND'}
    stages = sorted({name[3:-5] for name in known
                     if name.startswith('be_') and name.endswith('_live')})
    if backend_name(stage, 'live') not in known:
        raise SwitchError('HAProxy at %s has no backend %s, so it does not serve a stage %r. '
                          'Stages it serves: %s.' % (api.address, backend_name(stage, 'live'),
                                                     stage, ', '.join(stages) or 'none'))
    backends = [backend_name(stage, s) for s in SIDES if backend_name(stage, s) in known]
    before = {'active': None, 'frozen': None, 'frozen_until': None, 'frozen_held': None,
              'servers': _statuses(api, backends, rows)}
    after = dict(before)

    if params['active'] and params['map_file'] is None:
        raise SwitchError('active needs map_file: the active map that the stage\'s use_backend '
                          'rule reads (e.g. <root>/lb/etc/active.map).')
    if params['frozen'] is not None and params['frozen_map_file'] is None:
        raise SwitchError('frozen needs frozen_map_file: the map that the write-freeze rule '
                          'reads (e.g. <root>/lb/etc/frozen.map).')
    if params['under_freeze'] and not (params['active'] and params['frozen_map_file']):
        raise SwitchError('under_freeze is a switch under the write freeze: give it with active '
                          'and frozen_map_file.')
    if params['gate_side'] and (params['frozen'] is False or params['active']):
        raise SwitchError('gate_side gates a side before a freeze: give it with frozen=true, or '
                          'alone to only wait for the gate (a switch gates its own side).')
    if params['wait_writes'] > 0 and params['frozen'] is not True:
        raise SwitchError('wait_writes waits for the writes in flight after a freeze: give it '
                          'with frozen=true (waiting without a freeze could wait forever).')

    if params['map_file']:
        map_name = api.resolve_map(params['map_file'])
        value = api.get_map(map_name, stage)
        # No entry means the rule's default, the live backend.
        before['active'] = side_of(value, stage) if value is not None else 'live'
        after['active'] = before['active']
    if params['frozen_map_file']:
        frozen_name = api.resolve_map(params['frozen_map_file'])
        _set_freeze_view(before, freeze_state(api.get_map(frozen_name, stage)))
        _set_freeze_view(after, freeze_state(api.get_map(frozen_name, stage)))

    def freeze(flag, lease=params['lease']):
        """Set the freeze (a lease of ``lease`` seconds, 0 held) or lift it."""
        until = (HELD if lease <= 0 else time.time() + lease) if flag else None
        changed, frozen_before, taken_at = _set_map_entry(
            api, params['frozen_map_file'], stage, freeze_value(until), check_mode, result,
            diffs)
        _set_freeze_view(after, freeze_state(freeze_value(until)))
        was_frozen = freeze_state(frozen_before)['frozen']
        deadline_before = freeze_state(frozen_before, 0)['until'] or 0  # the value as a second
        # A renewal is not the moment writes stopped. A lease that ended before it was lifted
        # let writes through at its deadline: that is when the freeze ended.
        if flag and not was_frozen:
            result['frozen_at'] = taken_at
        elif not flag and was_frozen:
            result['unfrozen_at'] = taken_at
        elif not flag and taken_at and deadline_before > 10 ** 9:
            result['unfrozen_at'] = float(deadline_before)
        return changed

    changed = False
    if params['gate_side']:
        _gate(api, stage, params['gate_side'], rows, before,
              0.0 if check_mode else params['gate_timeout'])
    if params['frozen'] is True:
        changed |= freeze(True)
        if params['wait_writes'] > 0 and not check_mode:
            done, seconds, streams = wait_until_no_writes(
                api, backends, params['wait_writes'], frontend='fe_%s' % stage)
            result['writes_in_flight_seconds'] = seconds
            result['writes_in_flight'] = [_stream_summary(s) for s in streams]
            if not done:
                result.update(changed=changed, before=before, after=after)
                if diffs:
                    result['diff'] = diffs
                result.pop('warnings')
                raise SwitchError(
                    'Stage %s is frozen, but %d write(s) were still in flight on its backends '
                    '%.1fs later (wait_writes): %s. The freeze is left in place: lift it '
                    '(frozen=false) or wait longer before the cutover goes on.'
                    % (stage, len(streams), seconds, ', '.join(
                        '%s on %s/%s for %s' % (s['method'], s['backend'] or s['frontend'],
                                                s['server'] or '-', s['age'] or '?')
                        for s in streams)), **result)
            # The lease counts from the moment the writes in flight were answered.
            freeze(True)

    if params['active']:
        side = params['active']
        target = backend_name(stage, side)
        if target not in known:
            raise SwitchError('HAProxy at %s has no backend %s: the stage %s has no %s backend in '
                              'its configuration. Re-run the haproxy role.'
                              % (api.address, target, stage, side), before=before)
        map_name = api.resolve_map(params['map_file'])
        runtime_value = api.get_map(map_name, stage)
        effective = runtime_value if runtime_value is not None else backend_name(stage, 'live')
        moving = effective != target
        if moving and params['gate']:
            _gate(api, stage, side, rows, before,
                  0.0 if check_mode else params['gate_timeout'])
        if params['under_freeze'] and moving:
            _check_lease(api, stage, params, before)
            changed |= freeze(True)
        switched, active_before, result['switched_at'] = _set_map_entry(
            api, params['map_file'], stage, target, check_mode, result, diffs)
        changed |= switched
        after['active'] = side
        # The freeze is lifted as soon as the switch is verified and persisted: the drain of
        # the old side below can take long, and writes must not be held back for it.
        if params['frozen'] is False:
            changed |= freeze(False)
        other = backend_name(stage, 'live' if side == 'upgrade' else 'upgrade')
        if ((moving or params['drain_other']) and not check_mode and params['drain_timeout'] > 0
                and other in known):
            drained, seconds = wait_until_idle(api, other, params['drain_timeout'])
            result['drained'], result['drain_seconds'] = drained, seconds
            if not drained:
                result['warnings'].append(
                    'Backend %s still had sessions %.1fs after the switch of stage %s to %s; '
                    'requests in flight there may be cut if it is stopped now.'
                    % (other, seconds, stage, side))
    elif params['frozen'] is False:
        changed |= freeze(False)

    if params['active'] is None and params['frozen'] is None and params['map_file']:
        result['healthy_servers'] = _healthy_servers(
            api, stage, before['active'], rows, 0.0 if check_mode else params['wait_healthy'])
        if params['wait_healthy'] > 0 and not result['healthy_servers']:
            result['warnings'].append(
                'Stage %s has no healthy backend: no server of %s passes HAProxy\'s health '
                'check (%s), so %s answers 503. Check its Zope clients (playbooks/status.yml), '
                'the health page (zopeops_health_path) and whether the site exists (an init '
                'script: zopeops_init_script).'
                % (stage, backend_name(stage, before['active']), ', '.join(
                    '%s %s%s' % (name, srv['status'] or '?', ' ' + srv['check'] if srv['check']
                                 else '')
                    for name, srv in sorted(api.backend_stats(
                        backend_name(stage, before['active']))['servers'].items())) or 'none',
                   params['frontend_url'] or 'its frontend'))
    if not check_mode and changed:
        after['servers'] = _statuses(api, backends, api.show_stat())
    result['frozen_until'] = after.get('frozen_until')
    result.update(changed=changed, before=before, after=after)
    if diffs:
        result['diff'] = diffs
    return result


def _set_freeze_view(view, state):
    view.update(frozen=state['frozen'], frozen_until=None if state['held'] else state['until'],
                frozen_held=state['held'])


def _check_lease(api, stage, params, before, clock=time.time):
    """Refuse a switch under a freeze whose lease ended or has less than the margin left."""
    value = api.get_map(api.resolve_map(params['frozen_map_file']), stage)
    state = freeze_state(value, clock())
    if state['held']:
        return
    left = (state['until'] - clock()) if state['frozen'] else None
    if left is not None and left >= params['lease_margin']:
        return
    raise SwitchError(
        'Refusing to switch stage %s to %s under its write freeze: %s. The source may have '
        'taken writes that the target does not hold, so the traffic stays where it is and '
        'nothing was changed. Run the cutover again (its catch-up copies those writes).'
        % (stage, params['active'],
           'the freeze is not in force (its lease ended: %s)' % (value or 'no entry')
           if left is None else 'its lease has only %.1fs left, less than lease_margin %.1fs'
           % (left, params['lease_margin'])), before=before)


def haproxy_server(api, params, check_mode):
    backend = check_token(params['backend'], 'Backend')
    server = check_token(params['server'], 'Server')
    result = {'changed': False, 'drain_seconds': None, 'drained': None, 'files': [],
              'commands': api.sent, 'warnings': [], 'writes_in_flight_seconds': None,
              'writes_in_flight': [], 'frozen_at': None, 'switched_at': None,
              'unfrozen_at': None, 'healthy_servers': None, 'frozen_until': None}
    stats = api.backend_stats(backend)
    if server not in stats['servers']:
        raise SwitchError('Backend %s in HAProxy at %s has no server %s; it has: %s.'
                          % (backend, api.address, server,
                             ', '.join(sorted(stats['servers'])) or 'none'))
    # The administrative state, not the status: a drained server whose checks fail shows DOWN.
    admin = api.admin_states(backend)
    status = stats['servers'][server]['status']
    before = {'backend': backend, 'server': server,
              'state': admin.get(server) or server_state(status), 'status': status}
    after = dict(before, state=params['state'])
    result['healthy_servers'] = sorted(
        name for name, srv in stats['servers'].items()
        if server_is_up(srv['status'], srv['check']) and admin.get(name, 'ready') == 'ready')
    if params['state'] != 'ready' and before['state'] == 'ready':
        others = [name for name in result['healthy_servers'] if name != server]
        if len(others) < params['min_others_up']:
            raise SwitchError(
                'Refusing to set %s/%s to %s in HAProxy at %s: only %d other server(s) of %s '
                'pass their health checks and take traffic (%s), and min_others_up is %d. '
                'Nothing was changed.' % (backend, server, params['state'], api.address,
                                          len(others), backend, ', '.join(others) or 'none',
                                          params['min_others_up']), before=before)
    if before['state'] != params['state']:
        result['changed'] = True
        result['diff'] = {'before': '%s/%s state %s\n' % (backend, server, before['state']),
                          'after': '%s/%s state %s\n' % (backend, server, params['state'])}
        if not check_mode:
            api.set_server_state(backend, server, params['state'])
            if params['state'] != 'ready' and params['drain_timeout'] > 0:
                drained, seconds = wait_until_idle(api, backend, params['drain_timeout'],
                                                   server=server)
                result['drained'], result['drain_seconds'] = drained, seconds
                if not drained:
                    result['warnings'].append('Server %s/%s still had sessions after %.1fs.'
                                              % (backend, server, seconds))
            now = api.admin_states(backend).get(server)
            if now != params['state']:
                raise HAProxyError('HAProxy at %s accepted "set server %s/%s state %s" but reports '
                                   'state %s.' % (api.address, backend, server,
                                                  params['state'], now))
    if params['state'] == 'ready' and params['wait_up'] > 0 and not check_mode:
        _wait_server_up(api, backend, server, params['wait_up'], before)
    if not check_mode:
        after['status'] = api.backend_stats(backend)['servers'][server]['status']
    result.update(before=before, after=after)
    return result


def _wait_server_up(api, backend, server, timeout, before, clock=time.monotonic,
                    sleep=time.sleep):
    """Wait until ``server`` passes HAProxy's health checks (it takes traffic again)."""
    start = clock()
    while True:
        srv = api.backend_stats(backend)['servers'][server]
        if server_is_up(srv['status'], srv['check']):
            return round(clock() - start, 3)
        if clock() - start >= timeout:
            raise SwitchError(
                'Server %s/%s is ready in HAProxy at %s but has not passed its health checks '
                'within %.0fs (wait_up): status %s, check %s. It gets no traffic until it does.'
                % (backend, server, api.address, timeout, srv['status'] or '?',
                   srv['check'] or '?'), before=before)
        sleep(0.2)


def nginx_stage(params, check_mode):
    stage = check_token(params['stage'], 'Stage')
    if params['frozen'] is not None or params['wait_writes'] > 0:
        raise SwitchError('The write freeze (frozen, wait_writes) needs balancer=haproxy: nginx '
                          'has no runtime map to hold it.')
    if not params['nginx_include']:
        raise SwitchError('balancer=nginx needs nginx_include (the stage\'s upstream include '
                          'file).')
    if not params['active']:
        side = nginx_utils.active_side(read_text(params['nginx_include']))
        state = {'active': side, 'frozen': None, 'servers': None}
        return {'changed': False, 'drain_seconds': None, 'drained': None, 'files': [],
                'commands': [], 'before': state, 'after': dict(state), 'warnings': [],
                'writes_in_flight_seconds': None, 'writes_in_flight': [], 'frozen_at': None,
                'switched_at': None, 'unfrozen_at': None, 'frozen_until': None}
    servers = nginx_utils.normalize_servers(params['servers'])
    if not servers:
        raise SwitchError('balancer=nginx needs servers: the host:port of every client of the %s '
                          'side of %s.' % (params['active'], stage))
    include = params['nginx_include']
    old_text = read_text(include)
    new_text = nginx_utils.render_upstream(stage, params['active'], servers,
                                           params['server_options'])
    before = {'active': nginx_utils.active_side(old_text), 'frozen': None, 'servers': servers
              if nginx_utils.active_side(old_text) == params['active'] else None}
    after = {'active': params['active'], 'frozen': None, 'servers': servers}
    result = {'changed': False, 'drain_seconds': None, 'drained': None, 'files': [],
              'commands': [], 'before': before, 'after': after, 'warnings': [],
              'writes_in_flight_seconds': None, 'writes_in_flight': [], 'frozen_at': None,
              'switched_at': None, 'unfrozen_at': None, 'frozen_until': None}
    if old_text == new_text:
        return result
    if params['gate']:
        problems = [p for p in (nginx_utils.probe(s, params['health_path'], params['timeout'])
                                for s in servers) if p]
        if problems:
            raise SwitchError('Refusing to switch stage %s to %s on nginx: not every target '
                              'server answers: %s. Nothing was changed.'
                              % (stage, params['active'], '; '.join(problems)), before=before)
    result.update(changed=True, files=[include],
                  diff={'before_header': include, 'before': old_text,
                        'after_header': include, 'after': new_text})
    if not check_mode:
        result['commands'] = nginx_utils.switch(include, new_text, params['nginx_binary'],
                                                params['nginx_conf'], params['nginx_pid_file'],
                                                params['nginx_prefix'])
    return result


ARGUMENT_SPEC = dict(
    balancer=dict(type='str', choices=['haproxy', 'nginx'], default='haproxy'),
    socket=dict(type='str'),
    timeout=dict(type='float', default=5.0),
    stage=dict(type='str'),
    active=dict(type='str', choices=list(SIDES)),
    frozen=dict(type='bool'),
    map_file=dict(type='path'),
    frozen_map_file=dict(type='path'),
    gate=dict(type='bool', default=True),
    gate_timeout=dict(type='float', default=15.0),
    drain_timeout=dict(type='float', default=30.0),
    fail_on_drain_timeout=dict(type='bool', default=False),
    drain_other=dict(type='bool', default=False),
    wait_writes=dict(type='float', default=0.0),
    lease=dict(type='float', default=30.0),
    lease_margin=dict(type='float', default=5.0),
    under_freeze=dict(type='bool', default=False),
    gate_side=dict(type='str', choices=list(SIDES)),
    wait_healthy=dict(type='float', default=0.0),
    frontend_url=dict(type='str'),
    backend=dict(type='str'),
    server=dict(type='str'),
    state=dict(type='str', choices=['ready', 'drain', 'maint']),
    min_others_up=dict(type='int', default=0),
    wait_up=dict(type='float', default=0.0),
    nginx_conf=dict(type='path', default='/etc/nginx/nginx.conf'),
    nginx_include=dict(type='path'),
    nginx_binary=dict(type='str', default='nginx'),
    nginx_pid_file=dict(type='path'),
    nginx_prefix=dict(type='path'),
    servers=dict(type='list', elements='raw'),
    server_options=dict(type='str', default=''),
    health_path=dict(type='str', default='/'),
)


def run(params, check_mode, api_factory=RuntimeAPI):
    """Do what ``params`` ask; return the module result. Raises on failure."""
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
        return nginx_stage(params, check_mode)
    api = api_factory(params['socket'], timeout=params['timeout'])
    if params['backend']:
        return haproxy_server(api, params, check_mode)
    return haproxy_stage(api, params, check_mode)


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
