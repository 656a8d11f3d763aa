#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: promotion_state
short_description: Take, record and release the lock and state of a stage's promotion
version_added: 0.2.0
description:
  - "The bookkeeping of C(playbooks/promote.yml), on the conductor (the first C(lb) host): the
    stage's lock, shared claims on the stages whose data the run reads, the state of the run
    (its plan, the step reached, the intent before each switch and the outcome after it) and the
    ledger. See C(docs/promotion.md)."
  - "B(The lock) is a directory C(<dir>/<stage>.lock) made with C(mkdir), which is atomic: of two
    runs started together exactly one gets it. It holds C(owner.json) (run id, who, action, the
    controller host and its C(ansible-playbook) process id, the time, the step)."
  - "B(Claims.) O(claims) names stages whose data the run reads (the predecessor, under the
    C(upstream) policy). Such a stage may not be locked or left unfinished by its own last run;
    while the claim stands, that stage cannot be promoted or rolled back. Lock and claims are
    checked and taken under one short C(flock) of C(<dir>/.mutex)."
  - "B(A lock lives as long as its run.) While a run holds a lock, the action plugin of this
    module keeps a small heartbeat process on the controller that touches
    C(<dir>/<stage>.lock/heartbeat) every few seconds through the task's connection (SSH,
    C(become) and C(local) alike), as long as the run's C(ansible-playbook) process lives and the
    lock still names the run; every state update touches it too. It stops when
    C(ansible-playbook) dies by any signal, when the lock is released or taken over."
  - "B(Interrupted.) A lock whose heartbeat is older than O(lease) seconds is interrupted,
    whichever controller took it; so is, at once, a lock of this controller whose
    C(ansible-playbook) process is gone. Its run's state then says C(status: interrupted).
    O(purpose=resume) and O(purpose=rollback) take an interrupted lock over; so does any run when
    the holder was a push, a site.yml run, a backup.yml run, a rolling restart or a pack (they
    leave no plan to finish). O(purpose=run) and O(purpose=restore) are
    refused, naming the run, its step and what to do. A lock whose heartbeat is younger is
    refused, naming the holder and how long until it counts as interrupted."
  - "One call can take the lock, update the state, append to the ledger and release the lock, in
    that order; what is not asked for is left alone."
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  dir:
    description: The folder of the locks, states and the ledger (C(<root>/lb/promotions)).
    type: path
    required: true
  stage:
    description: The stage whose lock and state this call is about. One of O(stage) and
      O(stages) is required.
    type: str
  stages:
    description:
      - Several stages whose locks are taken (or released) together, all or none, with one
        owner; for C(playbooks/site.yml), which changes every stage of its hosts. Without
        state or ledger updates.
      - With O(lock=unchanged), a read of their states in one call (RV(states)); the
        releases they name are kept by C(release_prune).
    type: list
    elements: str
  run_id:
    description: The id of this run; only the run holding the lock may update or release it.
    type: str
    required: true
  lock:
    description:
      - V(acquired) takes the lock (and the O(claims)); V(released) gives them up after the
        updates of this call; V(unchanged) only updates (the lock must be this run's).
    type: str
    choices: [acquired, released, unchanged]
    default: unchanged
  owner:
    description:
      - With O(lock=acquired), who runs (C(owner)), the C(action) and C(started_at), written to
        C(owner.json). The action plugin adds C(controller) and C(controller_pid).
    type: dict
    default: {}
  claims:
    description: Stages whose data this run reads; claimed with the lock, released with it.
    type: list
    elements: str
    default: []
  purpose:
    description:
      - What the run does, which decides whether it may take over an interrupted run's lock
        (V(resume), V(rollback)) and is recorded in C(owner.json). V(push) is a branding push,
        V(site) a C(site.yml) run, V(backup) a C(backup.yml) run, V(restart) a rolling restart
        (C(restart.yml)), V(pack) a pack (C(pack.yml) or the scheduled one), V(restore) a
        restore of a backup through the twin (C(restore.yml); a run with a plan, like V(run)).
    type: str
    choices: [run, resume, rollback, restore, push, site, backup, restart, pack]
    default: run
  break_lock:
    description: Take over the lock whoever holds it, even a live one. For a run that is known
      to be dead before its lease has passed (C(promote_break_lock)).
    type: bool
    default: false
  lease:
    description:
      - "Seconds without a heartbeat after which a lock counts as interrupted
        (C(promote_lock_lease)): the longest a dead controller's lock holds up a resume. A
        positive number; it must be well above the heartbeat's period (a tenth of it, at most
        10 s), so a busy conductor does not make a live run look interrupted."
    type: raw
    default: 120
  dead_run_id:
    description: Set by the action plugin when the run holding the lock ran on this controller
      and its C(ansible-playbook) process is gone; that lock counts as interrupted at once, if
      that run still holds it.
    type: str
  initial:
    description: The state this run starts with (its plan), replacing the last run's state once
      the lock is this run's. The stage's rollback target carries over unless given here.
    type: dict
  update:
    description: Keys merged into the state (after the lock is taken, before it is released).
    type: dict
  event:
    description: Appended to the state's C(events) with the time; its C(phase) becomes the
      state's C(step) (and the lock's).
    type: dict
  ledger_entry:
    description: One line appended to C(<dir>/ledger.jsonl), with the stage, the run id, the
      step durations and the time added.
    type: dict
attributes:
  check_mode:
    support: full
    details: Reads the lock and state and decides as a real run would (RV(refused) says why the
      lock could not be taken); writes nothing, takes nothing, starts no heartbeat.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: zopeops.stages.lb_switch
notes:
  - The module keeps its files in one folder on one host; every run of the stage must use the
    same conductor (the first C(lb) host).
'''

EXAMPLES = r'''
- name: Take test's lock and claim beta's data.
  zopeops.stages.promotion_state:
    dir: /srv/zopeops/lb/promotions
    stage: test
    run_id: 20261129T120000Z-4711
    lock: acquired
    owner: {owner: alice, action: run, started_at: "2026-11-29T12:00:00Z"}
    claims: [beta]
    initial: {status: running, plan: {to_revision: 4eccdb1}}
  register: promotion

- name: Record the intent before a switch.
  zopeops.stages.promotion_state:
    dir: /srv/zopeops/lb/promotions
    stage: test
    run_id: 20261129T120000Z-4711
    update: {intent: {switch_to: upgrade}}
    event: {phase: cutover_to_twin, event: start}
'''

RETURN = r'''
previous:
  description: The state the stage's last run left (with O(lock=acquired)), {} if none.
  returned: always
  type: dict
state:
  description: The state after this call.
  returned: always
  type: dict
taken_over:
  description: The owners of the locks this run took over (interrupted, or broken on
    request), or null.
  returned: always
  type: list
  elements: dict
holder:
  description: Who holds what this run needed, when it was refused (C(kind) lock, claim or
    source); for a lock also C(heartbeat_age), C(lease), C(interrupted), C(purpose), C(step).
  returned: failed, or in check mode when the lock is held
  type: dict
refused:
  description: In check mode, why a real run would be refused the lock; null if it would get it.
  returned: check mode
  type: str
lock_dirs:
  description: The lock folders this call took (with O(lock=acquired)), which the heartbeat
    renews.
  returned: always
  type: list
  elements: str
durations:
  description: Seconds per step (C(phase), C(seconds)), from the state's start and end events.
  returned: always
  type: list
  elements: dict
states:
  description: With O(stages) and O(lock=unchanged), each stage's state as its last run left
    it ({} for a stage without one).
  returned: with O(stages) and O(lock=unchanged)
  type: dict
released:
  description: Whether this call released the lock.
  returned: always
  type: bool
'''

import math
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zopeops.stages.plugins.module_utils.promotion import (
    PURPOSES, PromotionRefused, acquire, append_ledger, lock_dirs, phase_durations, read_owner, read_state,
    release, start_state, update_state)

ARGUMENT_SPEC = dict(
    dir=dict(type='path', required=True),
    stage=dict(type='str'),
    stages=dict(type='list', elements='str'),
    run_id=dict(type='str', required=True),
    lock=dict(type='str', choices=['acquired', 'released', 'unchanged'], default='unchanged'),
    owner=dict(type='dict', default={}),
    claims=dict(type='list', elements='str', default=[]),
    purpose=dict(type='str', choices=list(PURPOSES), default='run'),
    break_lock=dict(type='bool', default=False),
    lease=dict(type='raw', default=120),
    dead_run_id=dict(type='str'),
    initial=dict(type='dict'),
    update=dict(type='dict'),
    event=dict(type='dict'),
    ledger_entry=dict(type='dict'),
)


def lease_seconds(value):
    """The lease as a positive float, or ValueError saying what to give."""
    try:
        lease = float(value)
    except (TypeError, ValueError):
        lease = None
    if lease is None or not math.isfinite(lease) or lease <= 0:
        raise ValueError('The lock lease (lease, promote_lock_lease) is %r: give a positive '
                         'number of seconds, e.g. -e promote_lock_lease=120.' % (value,))
    return lease


def run(module):
    params = module.params
    stages = params['stages'] or [params['stage']]
    lease = lease_seconds(params['lease'])
    result = {'changed': False, 'previous': {}, 'state': {}, 'taken_over': None,
              'released': False, 'durations': [], 'lock_dirs': [], 'lease': lease}
    owner = dict(params['owner'], run_id=params['run_id'])
    if module.check_mode:
        # Nothing is taken or written; the caller learns what a real run would find.
        result['state'] = read_state(params['dir'], stages[0])
        result['previous'] = result['state']
        result['holder'] = read_owner(params['dir'], stages[0])
        result['refused'] = None
        if params['lock'] == 'acquired':
            try:
                acquire(params['dir'], stages, owner, claims=params['claims'],
                        purpose=params['purpose'], lease=lease, dead_run_id=params['dead_run_id'],
                        break_lock=params['break_lock'], dry_run=True)
            except PromotionRefused as exc:
                result['refused'], result['holder'] = str(exc), exc.holder
        return result
    if params['lock'] == 'acquired':
        previous, taken_over = acquire(params['dir'], stages, owner, claims=params['claims'],
                                       purpose=params['purpose'], lease=lease,
                                       dead_run_id=params['dead_run_id'],
                                       break_lock=params['break_lock'])
        result.update(changed=True, previous=previous, taken_over=taken_over or None,
                      lock_dirs=lock_dirs(params['dir'], stages))
    if params['initial'] is not None:
        # The run's own state replaces the last run's only once its plan is made: a run
        # refused in preflight leaves the last run's state (and its plan) as it was.
        previous = result['previous'] or read_state(params['dir'], params['stage'])
        fresh = dict(params['initial'], run_id=params['run_id'], stage=params['stage'])
        result['state'] = start_state(params['dir'], params['stage'], previous, fresh,
                                      params['run_id'])
        result['changed'] = True
    if params['update'] or params['event']:
        result['state'] = update_state(params['dir'], params['stage'], params['run_id'],
                                       update=params['update'], event=params['event'])
        result['changed'] = True
    if params['stages'] and params['lock'] == 'unchanged':
        result['states'] = {stage: read_state(params['dir'], stage) for stage in stages}
    if not result['state']:
        result['state'] = (result['states'][stages[0]] if 'states' in result
                           else read_state(params['dir'], stages[0]))
    result['durations'] = phase_durations(result['state'].get('events'))
    if params['ledger_entry']:
        entry = dict(params['ledger_entry'], stage=stages[0], run_id=params['run_id'],
                     finished_at=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
        if params['initial'] is not None or params['update'] or params['event']:
            entry['phases'] = result['durations']  # a promotion's steps; a push has none
        result['ledger'] = append_ledger(params['dir'], entry)
        result['changed'] = True
    if params['lock'] == 'released':
        result['released'] = release(params['dir'], stages, params['run_id'],
                                     claims=params['claims'])
        result['changed'] = result['changed'] or result['released']
    return result


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           required_one_of=[('stage', 'stages')],
                           mutually_exclusive=[('stage', 'stages')])
    params = module.params
    if params['stages'] is not None and (
            not params['stages'] or params['initial'] is not None or params['update']
            or params['event'] or params['ledger_entry']):
        module.fail_json(msg='stages takes the locks of several stages together (site.yml): '
                         'give at least one stage, and no initial, update, event or ledger_entry '
                         '(those are about one stage: use stage).')
    try:
        result = run(module)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    except PromotionRefused as exc:
        module.fail_json(msg=str(exc), holder=exc.holder)
    except OSError as exc:
        module.fail_json(msg='Cannot write the promotion state in %s (%s: %s): the conductor '
                         'needs a writable state folder.'
                         % (module.params['dir'], exc.filename or '', exc.strerror))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
