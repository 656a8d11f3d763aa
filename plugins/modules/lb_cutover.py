#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: lb_cutover
short_description: Move a stage's traffic to the side that holds every write, in one call
description:
  - "The data cutover of a promotion behind B(one) HAProxy balancer (C(docs/promotion.md),
    'The cutover'), run on the balancer's host in one process: the replay's source and target
    are opened (ZODB, ZEO, RelStorage imported) before anything is frozen, so the frozen window
    holds HAProxy's socket round trips and the transactions replayed, no process start and no
    task boundary."
  - "In order: the gap is replayed while the source serves (O(passes) passes, until a pass
    copies at most O(settle)); a catch-up that did not settle fails before any freeze. Then the
    gate (every server of the target side C(UP)), the write freeze (a lease of O(lease)
    seconds that HAProxy ends by itself) and the wait until no write is in flight
    (O(freeze_timeout)); the final replay up to the source's last transaction, verified, that
    stops before the lease's deadline minus O(lease_margin); the switch under the freeze
    (refused unless the lease has O(lease_margin) left; it renews it) and the wait until no
    request of any method is in flight on the source; the replay of what the source committed
    meanwhile (refused, naming both tids, if the target took a write of its own); the freeze
    lifted; then the source side drains (O(drain_timeout))."
  - "Each HAProxy request is the one M(zopeops.stages.lb_switch) makes with the same options,
    and each replay is M(zopeops.stages.zodb_replay)'s (the same checks: the target's last tid
    before, the last replayed tid after)."
  - "B(A failure leaves a known state,) and the module fails saying which. Before the freeze
    nothing is changed. After it, the balancer is read: if it does not send the stage to the
    target with the writes unfrozen, the target took no write, so the stage is put back on the
    source and unfrozen (RV(traffic_on) the source). Otherwise the target may hold acknowledged
    writes: the cutover rolls forward (the stage stays on the target, unfrozen, and the
    source's late transactions are replayed; RV(rolled_forward)); if they cannot be
    (RV(diverged)), both sides must be kept."
  - "With several balancers, use M(zopeops.stages.lb_switch) per balancer per step (each
    socket is on its own machine) and M(zopeops.stages.zodb_replay) (C(roles/promote))."
  - "B(The Python that runs it) must import ZODB and ZEO (and RelStorage for RelStorage
    sides), and this host must read the source: its C(Data.fs) and blobs (O(source)), or its
    RelStorage configuration (O(source_config)). In the local pipeline that is the
    release's virtualenv of the source (C(zopeops_app_python)) on the same machine."
version_added: 0.2.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.zodb
  - zopeops.stages.zodb.zeo
options:
  socket:
    description:
      - Where HAProxy's runtime API listens, the path of its C(stats socket) (also written
        C(unix@/path)), or C(ipv4@host:port); at C(level admin). Required.
    type: str
  timeout:
    description: Seconds to wait for HAProxy to accept a connection and finish one answer.
    type: float
    default: 5.0
  stage:
    description: The pipeline stage whose traffic moves (backends C(be_<stage>_live) and
      C(be_<stage>_upgrade)).
    type: str
    required: true
  to:
    description: The side that takes the traffic; the other one is the source of the replay.
    type: str
    choices: [live, upgrade]
    required: true
  map_file:
    description: The active map file, as for M(zopeops.stages.lb_switch).
    type: path
    required: true
  frozen_map_file:
    description: The write-freeze map file, as for M(zopeops.stages.lb_switch).
    type: path
    required: true
  lease:
    description: Seconds the write freeze lasts unless renewed (HAProxy lets writes through
      by itself then); every step under the freeze renews it. Must be more than O(lease_margin).
    type: float
    default: 30.0
  lease_margin:
    description: The least time the lease must have left for the switch, and the margin the
      replays under the freeze stop short of its deadline by.
    type: float
    default: 5.0
  freeze_timeout:
    description: Under the freeze, the longest wait until no write is in flight (after the
      freeze) and until nothing of any method is in flight on the source (after the switch).
      When either does not end in time the module fails and the stage goes back to the source.
    type: float
    default: 10.0
  gate_timeout:
    description: How long the gate, before the freeze, waits for every server of the target
      side to pass HAProxy's health checks.
    type: float
    default: 60.0
  drain_timeout:
    description: After the freeze is lifted, the longest wait until the source side has no
      sessions left (a warning when it does not drain).
    type: float
    default: 30.0
  hold_frozen:
    description:
      - Seconds to hold the freeze, doing nothing, after the switch under the freeze and before
        the last replay. For fault drills only (the fault tests kill the controller, a
        ZEO server or HAProxy inside the freeze, which otherwise lasts milliseconds); it must
        leave the lease more than O(lease_margin). V(0) in production.
    type: float
    default: 0.0
  recover_timeout:
    description: After a failure, how long to keep asking an HAProxy that does not answer
      where it sends the stage, before the traffic is left where it is.
    type: float
    default: 8.0
  source:
    description: The source's FileStorage (C(Data.fs)), on this host; only read. One of
      O(source) and O(source_config) is required.
    type: path
  source_blob_dir:
    description: The source's blob directory, with O(source).
    type: path
  source_config:
    description: The source storage's ZConfig file (a RelStorage side's C(etc/relstorage.conf));
      only read.
    type: path
  after_tid:
    description: The last source transaction the target holds (16 hex digits); the gap is
      replayed after it.
    type: str
    required: true
  target_tid:
    description: The target's last tid before anything is written (defaults to O(after_tid)).
    type: str
  passes:
    description: Passes of the gap's replay, until one copies at most O(settle) transactions.
    type: int
    default: 4
  settle:
    description: A gap pass that copies at most this many transactions has settled.
    type: int
    default: 5
  target_config:
    description: The target storage's ZConfig file (a RelStorage side's C(etc/relstorage.conf)).
      Exactly one of O(zeo_address) (the target's running ZEO server) and O(target_config) is
      required.
    type: path
attributes:
  check_mode:
    support: full
    details: Counts the gap and checks the target's last tid (as zodb_replay does in check
      mode), reads the balancer and reports the freeze and the switch it would make; writes
      nothing, freezes nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
notes:
  - "Idempotent: with the stage already on the target, unfrozen, and the target holding every
    transaction of the source after O(after_tid), a call changes nothing. With the stage on the
    target but the source's last transactions missing (a cutover that failed after the freeze
    was lifted), they are caught up (a roll forward)."
  - The freeze window (RV(freeze_seconds)) is measured on this host's clock, from the moment
    HAProxy took the freeze to the moment it lifted it.
seealso:
  - module: zopeops.stages.lb_switch
  - module: zopeops.stages.zodb_replay
'''

EXAMPLES = r'''
- name: Move test's traffic to its twin, every write of test caught up, in one call.
  zopeops.stages.lb_cutover:
    socket: /run/zopeops/haproxy.sock
    map_file: /etc/zopeops/lb/active.map
    frozen_map_file: /etc/zopeops/lb/frozen.map
    stage: test
    to: upgrade
    source: /srv/zopeops/test/var/filestorage/Data.fs
    source_blob_dir: /srv/zopeops/test/var/blobstorage
    after_tid: "{{ snapshot_tid }}"
    zeo_address: 127.0.0.1:8231
    lease: 30
    lease_margin: 5
  vars:
    ansible_python_interpreter: /srv/zopeops/test/current/venv/bin/python
  register: cutover

- name: Say how long writes were frozen.
  ansible.builtin.debug:
    msg: "{{ cutover.freeze_seconds }} s, {{ cutover.transactions_frozen }} transactions"
'''

RETURN = r'''
traffic_on:
  description: The side the stage's traffic goes to after the call (also on failure; null when
    the balancer could not be read after a failure).
  type: str
  returned: always
  sample: upgrade
frozen:
  description: Whether the stage's writes are frozen after the call (null when unknown).
  type: bool
  returned: always
rolled_forward:
  description: A failure came after the target could take writes, so the stage stayed on the
    target and the source's late transactions were caught up.
  type: bool
  returned: always
diverged:
  description: Rolling forward, the source's late transactions could not be copied (the target
    took writes of its own meanwhile); both sides must be kept.
  type: bool
  returned: always
frozen_at:
  description: Epoch seconds when HAProxy took the freeze; null when none was set.
  type: float
  returned: always
switched_at:
  description: Epoch seconds when HAProxy took the target side.
  type: float
  returned: always
unfrozen_at:
  description: Epoch seconds when HAProxy lifted the freeze.
  type: float
  returned: always
freeze_seconds:
  description: The frozen window, RV(unfrozen_at) minus RV(frozen_at); null without a freeze.
  type: float
  returned: always
  sample: 0.21
last_tid:
  description: The last source transaction the target is known to hold after the call.
  type: str
  returned: always
transactions:
  description: Transactions replayed in all.
  type: int
  returned: always
transactions_frozen:
  description: Transactions replayed while writes were frozen.
  type: int
  returned: always
gap:
  description: The result of the replay before the freeze (zodb_replay's keys), null if none ran.
  type: dict
  returned: always
final:
  description: The result of the replay under the freeze, before the switch.
  type: dict
  returned: always
late:
  description: The result of the replay after the switch (or of a roll forward's).
  type: dict
  returned: always
writes_in_flight_seconds:
  description: Seconds from the freeze until no write was in flight.
  type: float
  returned: always
source_idle_seconds:
  description: Seconds from the switch until nothing was in flight on the source side.
  type: float
  returned: always
source_idle:
  description: Whether nothing was in flight on the source side within O(freeze_timeout) after
    the switch (false is a warning, as with M(zopeops.stages.lb_switch)'s drain; the last
    replay copies what the source committed until it ran).
  type: bool
  returned: always
drain_seconds:
  description: Seconds from the unfreeze until the source side had no sessions.
  type: float
  returned: always
drained:
  description: Whether the source side drained within O(drain_timeout).
  type: bool
  returned: always
before:
  description: The stage on the balancer before the call (as
    RV(zopeops.stages.lb_switch#module:before)).
  type: dict
  returned: always
after:
  description: The stage on the balancer after the call's last request.
  type: dict
  returned: always
steps:
  description: Seconds of each step inside the call (read, gap, freeze, final, switch, late,
    unfreeze, total).
  type: dict
  returned: always
  sample: {gap: 0.4, freeze: 0.02, final: 0.03, switch: 0.03, late: 0.01, unfreeze: 0.05}
msg:
  description: What happened.
  type: str
  returned: always
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_format as zfmt
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_replay_core as core
from ansible_collections.zopeops.stages.plugins.module_utils.balancer import SwitchError
from ansible_collections.zopeops.stages.plugins.module_utils.cutover import Cutover, CutoverFailed
from ansible_collections.zopeops.stages.plugins.module_utils.haproxy import RuntimeAPI
from ansible_collections.zopeops.stages.plugins.module_utils.haproxy_stage import run_stage

ARGUMENT_SPEC = dict(
    socket=dict(type='str'),
    timeout=dict(type='float', default=5.0),
    stage=dict(type='str', required=True),
    to=dict(type='str', required=True, choices=['live', 'upgrade']),
    map_file=dict(type='path', required=True),
    frozen_map_file=dict(type='path', required=True),
    lease=dict(type='float', default=30.0),
    lease_margin=dict(type='float', default=5.0),
    freeze_timeout=dict(type='float', default=10.0),
    gate_timeout=dict(type='float', default=60.0),
    drain_timeout=dict(type='float', default=30.0),
    hold_frozen=dict(type='float', default=0.0),
    recover_timeout=dict(type='float', default=8.0),
    source=dict(type='path'),
    source_blob_dir=dict(type='path'),
    source_config=dict(type='path'),
    after_tid=dict(type='str', required=True),
    target_tid=dict(type='str'),
    passes=dict(type='int', default=4, no_log=False),
    settle=dict(type='int', default=5),
    zeo_address=dict(type='str'),
    target_config=dict(type='path'),
    storage=dict(type='str', default='1'),
    zeo_timeout=dict(type='float', default=30.0),
)


def check_options(params):
    """Bad input, named before anything is opened."""
    if not params['socket']:
        raise SwitchError('socket is required: the path of HAProxy\'s admin socket (the haproxy '
                          'role\'s <runtime_dir>/haproxy.sock).')
    for name in ('lease', 'lease_margin', 'freeze_timeout', 'gate_timeout', 'drain_timeout',
                 'hold_frozen'):
        if params[name] < 0:
            raise SwitchError('%s must be 0 or a number of seconds, not %s.' % (name, params[name]))
    if params['lease'] <= params['lease_margin']:
        raise SwitchError('lease (%s s) must be longer than lease_margin (%s s): the replays under '
                          'the freeze stop lease_margin before its deadline.'
                          % (params['lease'], params['lease_margin']))
    if params['hold_frozen'] and params['hold_frozen'] >= params['lease'] - params['lease_margin']:
        raise SwitchError('hold_frozen (%s s) must leave the lease (%s s) more than lease_margin '
                          '(%s s).' % (params['hold_frozen'], params['lease'],
                                       params['lease_margin']))
    for name in ('after_tid', 'target_tid'):
        if params[name]:
            try:
                zfmt.hex_to_tid(params[name])
            except ValueError as exc:
                raise SwitchError('%s: %s.' % (name, exc)) from None


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_one_of=[('source', 'source_config'), ('zeo_address', 'target_config')],
        mutually_exclusive=[('source', 'source_config'), ('zeo_address', 'target_config'),
                            ('source_config', 'source_blob_dir')],
        supports_check_mode=True,
    )
    params = module.params
    try:
        check_options(params)
    except SwitchError as exc:
        module.fail_json(msg=str(exc))
    zu.import_zodb(module)
    api = RuntimeAPI(params['socket'], timeout=params['timeout'])
    replay = core.replay_params(
        source=params['source'], source_config=params['source_config'],
        source_blob_dir=params['source_blob_dir'], zeo_address=params['zeo_address'],
        target_config=params['target_config'], storage=params['storage'],
        zeo_timeout=params['zeo_timeout'], after_tid=params['after_tid'])
    # Both ends opened before anything is frozen: the imports and connections are done.
    try:
        source = core.open_source(replay)
    except (zu.ZODBDataError, OSError) as exc:
        module.fail_json(msg='Nothing was frozen or switched: %s' % exc, traffic_on=None)
    try:
        try:
            target = core.Target(replay, module.check_mode)
        except (zu.ZODBDataError, OSError) as exc:
            module.fail_json(msg='Nothing was frozen or switched: %s' % exc, traffic_on=None)
        try:
            cutover = Cutover(params, module.check_mode,
                              lambda request, check: run_stage(api, request, check),
                              source, target)
            result = cutover.run()
        except CutoverFailed as failed:
            module.fail_json(msg=str(failed), **failed.result)
        finally:
            target.close()
    finally:
        source.close()
    if result['source_idle'] is False:
        module.warn('Stage %s\'s source side still had requests in flight %.1fs after the switch '
                    'under the freeze (freeze_timeout); the last replay copied what it had '
                    'committed by then.' % (params['stage'], result['source_idle_seconds'] or 0))
    if result['drained'] is False:
        module.warn('The source side of stage %s still had sessions %.1fs after the cutover; '
                    'requests in flight there may be cut if it is stopped now.'
                    % (params['stage'], result['drain_seconds'] or 0))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
