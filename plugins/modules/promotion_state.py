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
  - "B(Taking over.) The action plugin of this module runs on the controller. When the lock is
    held by a run of this controller whose C(ansible-playbook) process is gone (interrupted,
    killed), a run with O(purpose=resume) or O(purpose=rollback) takes the lock over, and
    O(purpose=run) is refused with what to do. A lock of another controller is taken over only
    with O(break_lock), and is reported as stale after O(stale_after) seconds without a state
    update."
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
    description: The stage whose lock and state this call is about.
    type: str
    required: true
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
    description: What the run does, which decides whether it may take over a dead run's lock.
    type: str
    choices: [run, resume, rollback, push]
    default: run
  break_lock:
    description: Take over the lock whoever holds it. For a run that is known to be dead.
    type: bool
    default: false
  stale_after:
    description: Seconds without a state update after which another controller's lock is
      reported as stale (it is still taken over only with O(break_lock)).
    type: int
    default: 7200
  take_over_run_id:
    description: Set by the action plugin when it decided to take over the lock of this dead
      run; the lock is taken over only if that run still holds it.
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
    details: Reads the lock and state and reports whether the lock could be taken; writes
      nothing.
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
  description: The owner of the lock this run took over, or null.
  returned: always
  type: dict
holder:
  description: Who holds what this run needed, when it was refused (C(kind) lock, claim or
    source).
  returned: failed
  type: dict
durations:
  description: Seconds per step (C(phase), C(seconds)), from the state's start and end events.
  returned: always
  type: list
  elements: dict
released:
  description: Whether this call released the lock.
  returned: always
  type: bool
'''

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zopeops.stages.plugins.module_utils.promotion import (
    PromotionRefused, acquire, append_ledger, phase_durations, read_owner, read_state, release,
    start_state, update_state)

ARGUMENT_SPEC = dict(
    dir=dict(type='path', required=True),
    stage=dict(type='str', required=True),
    run_id=dict(type='str', required=True),
    lock=dict(type='str', choices=['acquired', 'released', 'unchanged'], default='unchanged'),
    owner=dict(type='dict', default={}),
    claims=dict(type='list', elements='str', default=[]),
    purpose=dict(type='str', choices=['run', 'resume', 'rollback', 'push'], default='run'),
    break_lock=dict(type='bool', default=False),
    stale_after=dict(type='int', default=7200),
    take_over_run_id=dict(type='str'),
    initial=dict(type='dict'),
    update=dict(type='dict'),
    event=dict(type='dict'),
    ledger_entry=dict(type='dict'),
)


def holder_age(params, holder):
    """Seconds since the holder's run last showed life (a state update, or taking the lock)."""
    state = read_state(params['dir'], holder.get('stage') or params['stage'])
    if state.get('run_id') == holder.get('run_id') and state.get('updated_epoch'):
        return time.time() - float(state['updated_epoch'])
    return time.time() - float(holder.get('taken_at') or 0)


def run(module):
    params = module.params
    result = {'changed': False, 'previous': {}, 'state': {}, 'taken_over': None,
              'released': False, 'durations': {}}
    if module.check_mode:
        # Nothing is taken or written; the caller learns what a real run would find.
        result['state'] = read_state(params['dir'], params['stage'])
        result['previous'] = result['state']
        result['holder'] = read_owner(params['dir'], params['stage'])
        return result
    if params['lock'] == 'acquired':
        owner = dict(params['owner'], run_id=params['run_id'])
        previous, taken_over = acquire(params['dir'], params['stage'], owner,
                                       claims=params['claims'],
                                       take_over_run_id=params['take_over_run_id'])
        result.update(changed=True, previous=previous, taken_over=taken_over)
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
    if not result['state']:
        result['state'] = read_state(params['dir'], params['stage'])
    result['durations'] = phase_durations(result['state'].get('events'))
    if params['ledger_entry']:
        entry = dict(params['ledger_entry'], stage=params['stage'], run_id=params['run_id'],
                     phases=result['durations'],
                     finished_at=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
        result['ledger'] = append_ledger(params['dir'], entry)
        result['changed'] = True
    if params['lock'] == 'released':
        result['released'] = release(params['dir'], params['stage'], params['run_id'],
                                     claims=params['claims'])
        result['changed'] = result['changed'] or result['released']
    return result


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        result = run(module)
    except PromotionRefused as exc:
        holder = exc.holder
        if holder and holder.get('kind') == 'lock':
            holder = dict(holder, age_seconds=int(holder_age(module.params, holder)))
        module.fail_json(msg=str(exc), holder=holder)
    except OSError as exc:
        module.fail_json(msg='Cannot write the promotion state in %s (%s: %s): the conductor '
                         'needs a writable state folder.'
                         % (module.params['dir'], exc.filename or '', exc.strerror))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
