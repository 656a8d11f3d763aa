# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lock, the claims, the state and the ledger of promotions, on the conductor.

Layout of the state folder (``<root>/lb/promotions`` by default)::

    .mutex                          flock'ed for the milliseconds of an acquire or release
    <stage>.lock/owner.json         the stage's exclusive lock: ``mkdir`` is atomic
    <stage>.claims/<run_id>.json    shared claims: a run reads this stage's data
    <stage>.json                    the state of the stage's last (or current) run
    ledger.jsonl                    one JSON line per finished, failed or aborted run

Why a directory and a mutex: ``mkdir`` makes two runs racing for one stage agree on a single
winner without any reader-writer window (the old lock was "read the state, write running 15 s
later", and two runs both got through). The claims need to be checked against the lock of the
same stage and the other way round; doing both under one short ``flock`` of ``.mutex`` means
that of a promotion of ``beta`` and a promotion of ``test`` (which reads beta's data) started
together, exactly one proceeds, never both and never neither.

One lock covers every run that changes a stage: promote, resume, rollback, branding pushes.
The state file outlives the lock: it keeps the plan of the last run (so a resume carries out
the same plan), the step reached, the intent before each switch and the outcome after it, and
the stage's rollback target (the release and data pair it ran before its last promotion).
"""
from __future__ import annotations

import json
import os
import shutil
import time

from ansible_collections.zopeops.stages.plugins.module_utils.files import (
    LockTimeout, append_line, atomic_write, file_lock, read_json)
from ansible_collections.zopeops.stages.plugins.module_utils.redact import redact_deep

# A run whose state says one of these has traffic somewhere unusual or a half-done plan: a
# plain new promotion of that stage is refused until it is resumed or rolled back, and the
# stage's data may not be read by a promotion of its successor.
UNFINISHED = ('running', 'failed', 'interrupted')


class PromotionRefused(Exception):
    """The run may not go ahead; ``holder`` describes who holds what it needs."""

    def __init__(self, message, holder=None):
        super().__init__(message)
        self.holder = holder


def _paths(state_dir, stage):
    return {
        'lock': os.path.join(state_dir, '%s.lock' % stage),
        'owner': os.path.join(state_dir, '%s.lock' % stage, 'owner.json'),
        'claims': os.path.join(state_dir, '%s.claims' % stage),
        'state': os.path.join(state_dir, '%s.json' % stage),
    }


def read_owner(state_dir, stage):
    """The owner.json of the stage's lock, {} for a lock without one, None if it is free."""
    paths = _paths(state_dir, stage)
    if not os.path.isdir(paths['lock']):
        return None
    try:
        return read_json(paths['owner']) or {}
    except ValueError:
        return {}


def read_state(state_dir, stage):
    try:
        return read_json(_paths(state_dir, stage)['state']) or {}
    except ValueError as exc:
        raise PromotionRefused('The state file %s is not valid JSON (%s): look at it, fix or '
                               'move it, then run again.' % (_paths(state_dir, stage)['state'],
                                                             exc)) from None


def live_claims(state_dir, stage):
    """The claims on ``stage`` whose runs still hold their own lock (the others are left over
    from runs that ended without releasing them, and are removed)."""
    folder = _paths(state_dir, stage)['claims']
    claims = []
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return claims
    for name in names:
        path = os.path.join(folder, name)
        try:
            claim = read_json(path) or {}
        except ValueError:
            claim = {}
        holder = read_owner(state_dir, claim.get('stage', '')) if claim.get('stage') else None
        if holder is not None and holder.get('run_id') == claim.get('run_id'):
            claims.append(claim)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return claims


def describe_owner(stage, owner):
    return '%s of %s (run %s) by %s, since %s, at step %s' % (
        owner.get('action') or 'a run', stage, owner.get('run_id', '?'), owner.get('owner', '?'),
        owner.get('started_at', '?'), owner.get('step', '?'))


def acquire(state_dir, stage, owner, claims=(), take_over_run_id=None, now=time.time):
    """Take the stage's lock and shared claims on ``claims`` for the run described by
    ``owner`` (run_id, owner, action, controller, controller_pid, started_at).

    Returns (previous_state, taken_over_owner or None). Raises PromotionRefused naming the
    holder when the lock is held (unless it is held by ``take_over_run_id``), when a claimed
    stage is locked or unfinished, or when the stage itself is claimed by a running promotion.
    """
    paths = _paths(state_dir, stage)
    os.makedirs(state_dir, mode=0o750, exist_ok=True)
    try:
        with file_lock(os.path.join(state_dir, '.mutex'), timeout=30, what='the promotions mutex'):
            taken_over = None
            holder = read_owner(state_dir, stage)
            if holder is not None:
                if take_over_run_id and holder.get('run_id') == take_over_run_id:
                    taken_over = holder
                    shutil.rmtree(paths['lock'])
                else:
                    raise PromotionRefused('A %s holds the lock (%s).'
                                           % (describe_owner(stage, holder), paths['lock']),
                                           holder=dict(holder, stage=stage, kind='lock'))
            readers = live_claims(state_dir, stage)
            if readers:
                raise PromotionRefused(
                    'The data of %s is being read by the %s: wait until it is done.'
                    % (stage, describe_owner(readers[0]['stage'], readers[0])),
                    holder=dict(readers[0], kind='claim'))
            for source in claims:
                if source == stage:
                    continue
                source_holder = read_owner(state_dir, source)
                if source_holder is not None:
                    raise PromotionRefused(
                        'This run reads the data of %s, and a %s holds that stage: wait until it '
                        'is done.' % (source, describe_owner(source, source_holder)),
                        holder=dict(source_holder, stage=source, kind='source'))
                source_state = read_state(state_dir, source)
                if source_state.get('status') in UNFINISHED:
                    raise PromotionRefused(
                        'This run reads the data of %s, whose last run (%s) is %s at step %s: '
                        'resume it or roll it back first (-e stage=%s -e action=resume).'
                        % (source, source_state.get('run_id', '?'), source_state.get('status'),
                           source_state.get('step', '?'), source),
                        holder=dict(source_state, stage=source, kind='source'))
            try:
                os.mkdir(paths['lock'], 0o750)
            except FileExistsError:  # only without the mutex, e.g. a lock made by hand
                raise PromotionRefused('The lock %s appeared while this run took it: run again.'
                                       % paths['lock']) from None
            record = dict(owner, stage=stage, taken_at=now())
            atomic_write(paths['owner'], json.dumps(record, indent=2, sort_keys=True) + '\n',
                         mode=0o640)
            for source in claims:
                if source == stage:
                    continue
                folder = _paths(state_dir, source)['claims']
                os.makedirs(folder, mode=0o750, exist_ok=True)
                atomic_write(os.path.join(folder, '%s.json' % owner['run_id']),
                             json.dumps(dict(record, claims=source), sort_keys=True) + '\n',
                             mode=0o640)
            return read_state(state_dir, stage), taken_over
    except LockTimeout as exc:
        raise PromotionRefused(str(exc)) from None


def release(state_dir, stage, run_id, claims=()):
    """Give up the stage's lock and this run's claims. A lock held by another run is left
    alone (returns False): a run never releases what it does not own."""
    paths = _paths(state_dir, stage)
    with file_lock(os.path.join(state_dir, '.mutex'), timeout=30, what='the promotions mutex'):
        for source in claims:
            try:
                os.unlink(os.path.join(_paths(state_dir, source)['claims'], '%s.json' % run_id))
            except FileNotFoundError:
                pass
        holder = read_owner(state_dir, stage)
        if holder is None:
            return False
        if holder.get('run_id') != run_id:
            return False
        shutil.rmtree(paths['lock'])
        return True


def update_state(state_dir, stage, run_id, update=None, event=None, now=time.time):
    """Merge ``update`` into the stage's state and append ``event`` to its events; refresh the
    lock's heartbeat. Only the run that holds the lock may write (the state is the lock's)."""
    paths = _paths(state_dir, stage)
    holder = read_owner(state_dir, stage)
    if holder is None or holder.get('run_id') != run_id:
        raise PromotionRefused(
            'This run (%s) no longer holds the lock of %s (%s): another run took it over. '
            'Nothing more is done by this run.'
            % (run_id, stage, describe_owner(stage, holder) if holder else 'nobody holds it'),
            holder=holder)
    state = read_state(state_dir, stage)
    stamp = now()
    state.update(update or {})
    if event:
        state.setdefault('events', []).append(dict(event, at=round(stamp, 3)))
        if event.get('phase'):
            state['step'] = event['phase']
    state['updated_epoch'] = int(stamp)
    state['updated_at'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(stamp))
    state = redact_deep(state)  # a failure message may quote a URL with credentials
    atomic_write(paths['state'], json.dumps(state, indent=2, sort_keys=True) + '\n', mode=0o640)
    if state.get('step') and holder.get('step') != state['step']:
        atomic_write(paths['owner'], json.dumps(dict(holder, step=state['step']), indent=2,
                                                sort_keys=True) + '\n', mode=0o640)
    return state


def start_state(state_dir, stage, previous, fresh, run_id):
    """The state a run starts from: ``fresh`` (its run id, plan, status running) over what the
    last run left that must carry forward (the stage's rollback target)."""
    holder = read_owner(state_dir, stage)
    if holder is None or holder.get('run_id') != run_id:
        raise PromotionRefused('This run (%s) does not hold the lock of %s: it may not write its '
                               'state.' % (run_id, stage), holder=holder)
    state = {key: previous[key] for key in ('rollback_target',) if key in previous}
    state.update(fresh)
    state.setdefault('events', [])
    state = redact_deep(state)
    atomic_write(_paths(state_dir, stage)['state'],
                 json.dumps(state, indent=2, sort_keys=True) + '\n', mode=0o640)
    return state


def append_ledger(state_dir, entry):
    path = os.path.join(state_dir, 'ledger.jsonl')
    append_line(path, json.dumps(redact_deep(entry), sort_keys=True))
    return path


def phase_durations(events):
    """[{phase, event: start|end, at}] -> [{phase, seconds}] in the order the phases started.

    Steps run one after the other, so a phase without an end event ends where the next phase
    starts; the last one without an end (the run stopped in it) has ``seconds: None``.
    """
    starts, ends = [], {}
    for entry in events or []:
        phase, event = entry.get('phase'), entry.get('event')
        if phase is None or entry.get('at') is None:
            continue
        if event == 'start':
            starts.append((phase, float(entry['at'])))
        elif event == 'end':
            ends[phase] = float(entry['at'])
    order, first, last_start = [], {}, {}
    for phase, at in starts:
        if phase not in first:
            order.append(phase)
            first[phase] = at
        last_start[phase] = at
    result = []
    for index, phase in enumerate(order):
        end = ends.get(phase)
        if end is None and index + 1 < len(order):
            end = first[order[index + 1]]
        start = last_start[phase] if phase in ends else first[phase]
        result.append({'phase': phase,
                       'seconds': round(end - start, 1) if end is not None else None})
    if result and all(item['seconds'] is not None for item in result):
        result.append({'phase': 'total', 'seconds': round(
            max(ends.get(order[-1], 0), first[order[-1]]) - first[order[0]], 1)})
    return result
