# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lock, the claims, the state and the ledger of promotions, on the conductor.

Layout of the state folder (``<root>/lb/promotions`` by default)::

    .mutex                          flock'ed for the milliseconds of every write here
    <stage>.lock/owner.json         the stage's exclusive lock: ``mkdir`` is atomic
    <stage>.lock/heartbeat          renewed (its mtime) while the run lives, see ``LEASE``
    <stage>.claims/<run_id>.json    shared claims: a run reads this stage's data
    <stage>.json                    the state of the stage's last (or current) run
    ledger.jsonl                    one JSON line per finished, failed or aborted run

Why a directory and a mutex: ``mkdir`` makes two runs racing for one stage agree on a single
winner without any reader-writer window (the old lock was "read the state, write running 15 s
later", and two runs both got through). The claims need to be checked against the lock of the
same stage and the other way round; doing both under one short ``flock`` of ``.mutex`` means
that of a promotion of ``beta`` and a promotion of ``test`` (which reads beta's data) started
together, exactly one proceeds, never both and never neither.

One lock covers every run that changes a stage: promote, resume, rollback, branding pushes
and ``site.yml`` (which takes the locks of every stage it changes, in one call).

A lock lives exactly as long as its run: the run renews ``heartbeat`` while it works (the
action plugin starts a small process on the controller that touches it every few seconds
through the task's connection while ``ansible-playbook`` lives, and every state update touches
it too). A lock whose heartbeat is older than the lease (``promote_lock_lease``, 120 s) is
*interrupted*, whichever controller took it: a resume or a rollback takes it over, a plain run
is refused saying so, and the state of the interrupted run says ``interrupted``. Every write
(lock, claims, state, ledger) happens under the flock of ``.mutex``.
The state file outlives the lock: it keeps the plan of the last run (so a resume carries out
the same plan), the step reached, the intent before each switch and the outcome after it, and
the stage's rollback target (the release and data pair it ran before its last promotion).
"""
from __future__ import annotations

import json
import math
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

# Seconds without a heartbeat after which a lock counts as interrupted (promote_lock_lease).
LEASE = 120.0
# The purposes of a run that may take over an interrupted promotion's lock: they start by
# finding out where the traffic is, and carry out (or undo) the recorded plan.
TAKES_OVER_INTERRUPTED = ('resume', 'rollback')
# Runs that leave no plan behind: their interrupted lock is taken over by any run, and their
# heartbeat releases their lock when their ansible-playbook ends (a backup, a rolling restart
# and a pack, playbooks/backup.yml, restart.yml and pack.yml, and the scheduled pack, are such
# runs too).
STATELESS = ('push', 'site', 'backup', 'restart', 'pack')
# A restore (playbooks/restore.yml) is a run with a plan, like a promotion: its interrupted
# lock is taken over by a resume or a rollback.
PURPOSES = ('run', 'resume', 'rollback', 'restore') + STATELESS
MUTEX_TIMEOUT = 30


class PromotionRefused(Exception):
    """The run may not go ahead; ``holder`` describes who holds what it needs."""

    def __init__(self, message, holder=None):
        super().__init__(message)
        self.holder = holder


def _paths(state_dir, stage):
    return {
        'lock': os.path.join(state_dir, '%s.lock' % stage),
        'owner': os.path.join(state_dir, '%s.lock' % stage, 'owner.json'),
        'heartbeat': os.path.join(state_dir, '%s.lock' % stage, 'heartbeat'),
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


def live_claims(state_dir, stage, remove_stale=True):
    """The claims on ``stage`` whose runs still hold their own lock (the others are left over
    from runs that ended without releasing them, and are removed unless ``remove_stale`` is
    false)."""
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
        elif remove_stale:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return claims


def _mutex(state_dir):
    return file_lock(os.path.join(state_dir, '.mutex'), timeout=MUTEX_TIMEOUT,
                     what='the promotions mutex')


def holder_purpose(owner):
    """What the holder of a lock does: its recorded purpose, else (a lock written before the
    purpose was recorded) read from its action."""
    if owner.get('purpose'):
        return owner['purpose']
    action = owner.get('action') or 'run'
    if action == 'push_branding':
        return 'push'
    return action if action in PURPOSES else 'run'


def holder_step(state_dir, stage, owner):
    """The step the holder reached: the lock's, else its state's (a lock taken before the
    first step was recorded), else None."""
    if owner.get('step'):
        return owner['step']
    try:
        state = read_state(state_dir, stage)
    except PromotionRefused:
        return None
    if state.get('run_id') == owner.get('run_id') and state.get('step'):
        return state['step']
    return None


def heartbeat_age(state_dir, stage, owner, now=time.time):
    """Seconds since the holder of the stage's lock last showed life: the mtime of the lock's
    ``heartbeat`` (renewed while the run lives), else the time the lock was taken."""
    paths = _paths(state_dir, stage)
    for path in (paths['heartbeat'], paths['owner'], paths['lock']):
        try:
            return max(0.0, now() - os.stat(path).st_mtime)
        except FileNotFoundError:
            continue
    return max(0.0, now() - float(owner.get('taken_at') or 0))


def touch_heartbeat(state_dir, stage):
    path = _paths(state_dir, stage)['heartbeat']
    with open(path, 'a'):
        os.utime(path)


def describe_owner(stage, owner):
    what = owner.get('action') or 'a run'
    if owner.get('purpose') == 'site':
        what = 'site.yml run'
    elif owner.get('purpose') == 'backup':
        what = 'backup.yml run'
    elif owner.get('action') == 'push_branding':
        what = 'branding push%s' % (' of %s' % owner['partner'] if owner.get('partner') else '')
    elif owner.get('purpose') in ('restart', 'pack'):
        what = {'restart': 'rolling restart', 'pack': 'pack'}[owner['purpose']]
    return '%s of %s (run %s) by %s, since %s, at step %s' % (
        what, stage, owner.get('run_id', '?'), owner.get('owner', '?'),
        owner.get('started_at', '?'), owner.get('step') or '?')


def _controller_of(owner):
    return 'ansible-playbook pid %s on %s' % (owner.get('controller_pid', '?'),
                                              owner.get('controller', '?'))


def mark_interrupted(state_dir, stage, owner, why, now=time.time):
    """Under the mutex: the state of the interrupted run that held the stage's lock says
    ``interrupted`` (a run that never wrote a state, or a state already finished, is left as
    it is). Returns the state."""
    state = read_state(state_dir, stage)
    if state.get('run_id') != owner.get('run_id') or state.get('status') != 'running':
        return state
    stamp = now()
    state.update(status='interrupted', interrupted={
        'found_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(stamp)), 'why': why,
        'step': state.get('step') or owner.get('step')})
    atomic_write(_paths(state_dir, stage)['state'],
                 json.dumps(redact_deep(state), indent=2, sort_keys=True) + '\n', mode=0o640)
    return state


def _lock_decision(state_dir, stage, holder, purpose, lease, dead_run_id, break_lock, now,
                   write=True):
    """(take_over: bool, refusal or None, holder described) for a lock held by ``holder``;
    ``write`` records an interrupted holder's state as such (not in check mode)."""
    age = heartbeat_age(state_dir, stage, holder, now)
    dead = bool(dead_run_id) and holder.get('run_id') == dead_run_id
    interrupted = dead or age > lease
    info = dict(holder, stage=stage, kind='lock', heartbeat_age=int(age), lease=lease,
                interrupted=interrupted, purpose=holder_purpose(holder),
                step=holder_step(state_dir, stage, holder))
    described = describe_owner(stage, info)
    lock_path = _paths(state_dir, stage)['lock']
    if interrupted:
        why = ('its %s is gone' % _controller_of(holder) if dead else
               'its heartbeat stopped %ds ago (lease %gs; it ran on %s)'
               % (age, lease, _controller_of(holder)))
        info['why'] = why
        if write:
            mark_interrupted(state_dir, stage, holder, why, now)
        if break_lock or purpose in TAKES_OVER_INTERRUPTED or info['purpose'] in STATELESS:
            return True, None, info
        if purpose in ('run', 'restore'):
            todo = ('Finish it with -e action=resume, or return %s to what it ran before with '
                    '-e action=rollback; both take the lock over and start by finding out which '
                    'side the load balancer sends traffic to.' % stage)
        else:
            todo = ('Nothing was changed by this run. Finish that promotion first: '
                    'playbooks/promote.yml -e stage=%s -e action=resume (or -e action=rollback).'
                    % stage)
        return False, 'The %s was interrupted: %s, and it left the lock (%s). %s' % (
            described, why, lock_path, todo), info
    if break_lock:
        return True, None, info
    return False, (
        'A %s is in progress and holds the lock (%s): its heartbeat was renewed %ds ago by %s. '
        'Wait for it to finish. If that run is dead, its lock counts as interrupted once its '
        'heartbeat is %gs old (promote_lock_lease), in %ds.'
        % (described, lock_path, age, _controller_of(holder), lease,
           max(0, math.ceil(lease - age)))), info


def acquire(state_dir, stage, owner, claims=(), purpose='run', lease=LEASE, dead_run_id=None,
            break_lock=False, dry_run=False, now=time.time):
    """Take the lock of ``stage`` (a stage, or a list of stages taken together, all or none)
    and shared claims on ``claims`` for the run described by ``owner`` (run_id, owner, action,
    controller, controller_pid, started_at).

    A lock held by another run is taken over when it is interrupted (its heartbeat is older
    than ``lease`` seconds, or the caller found its process gone: ``dead_run_id``) and this
    run resumes or rolls back, or the holder was a push or a site.yml run; and always with
    ``break_lock``. A lock found interrupted gets ``status: interrupted`` in its state.

    Returns (previous_state of the first stage, [taken-over owners]). Raises PromotionRefused
    naming the holder when the lock is held, when a claimed stage is locked or unfinished, or
    when the stage itself is claimed by a running promotion. ``dry_run`` decides the same
    without writing anything (check mode): it returns or raises as a real call would.
    """
    stages = [stage] if isinstance(stage, str) else list(stage)
    os.makedirs(state_dir, mode=0o750, exist_ok=True)
    try:
        with _mutex(state_dir):
            taken_over = []
            for name in stages:
                holder = read_owner(state_dir, name)
                if holder is None:
                    continue
                _take, refusal, info = _lock_decision(state_dir, name, holder, purpose, lease,
                                                      dead_run_id, break_lock, now,
                                                      write=not dry_run)
                if refusal:
                    raise PromotionRefused(refusal, holder=info)
                taken_over.append(info)
            for name in stages:
                readers = live_claims(state_dir, name, remove_stale=not dry_run)
                if readers:
                    raise PromotionRefused(
                        'The data of %s is being read by the %s: wait until it is done.'
                        % (name, describe_owner(readers[0]['stage'], readers[0])),
                        holder=dict(readers[0], kind='claim'))
            for source in claims:
                if source in stages:
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
            if dry_run:
                return read_state(state_dir, stages[0]), taken_over
            for info in taken_over:
                shutil.rmtree(_paths(state_dir, info['stage'])['lock'])
            made = []
            for name in stages:
                paths = _paths(state_dir, name)
                try:
                    os.mkdir(paths['lock'], 0o750)
                except FileExistsError:  # only without the mutex, e.g. a lock made by hand
                    for other in made:
                        shutil.rmtree(_paths(state_dir, other)['lock'])
                    raise PromotionRefused('The lock %s appeared while this run took it: run '
                                           'again.' % paths['lock']) from None
                made.append(name)
                record = dict(owner, stage=name, purpose=purpose, taken_at=now())
                if len(stages) > 1:
                    record['stages'] = stages
                atomic_write(paths['owner'], json.dumps(record, indent=2, sort_keys=True) + '\n',
                             mode=0o640)
                touch_heartbeat(state_dir, name)
            for source in claims:
                if source in stages:
                    continue
                folder = _paths(state_dir, source)['claims']
                os.makedirs(folder, mode=0o750, exist_ok=True)
                record = dict(owner, stage=stages[0], purpose=purpose, taken_at=now())
                atomic_write(os.path.join(folder, '%s.json' % owner['run_id']),
                             json.dumps(dict(record, claims=source), sort_keys=True) + '\n',
                             mode=0o640)
            return read_state(state_dir, stages[0]), taken_over
    except LockTimeout as exc:
        raise PromotionRefused(str(exc)) from None


def lock_dirs(state_dir, stages):
    return [_paths(state_dir, name)['lock'] for name in stages]


def release(state_dir, stage, run_id, claims=()):
    """Give up the lock of ``stage`` (or of each of a list of stages) and this run's claims. A
    lock held by another run is left alone (returns False): a run never releases what it does
    not own."""
    stages = [stage] if isinstance(stage, str) else list(stage)
    released = False
    with _mutex(state_dir):
        for source in claims:
            try:
                os.unlink(os.path.join(_paths(state_dir, source)['claims'], '%s.json' % run_id))
            except FileNotFoundError:
                pass
        for name in stages:
            holder = read_owner(state_dir, name)
            if holder is None or holder.get('run_id') != run_id:
                continue
            shutil.rmtree(_paths(state_dir, name)['lock'])
            released = True
    return released


def _require_lock(state_dir, stage, run_id, what):
    holder = read_owner(state_dir, stage)
    if holder is None or holder.get('run_id') != run_id:
        raise PromotionRefused(
            'This run (%s) no longer holds the lock of %s (%s): another run took it over. '
            '%s' % (run_id, stage, describe_owner(stage, holder) if holder else 'nobody holds it',
                    what), holder=holder)
    return holder


def update_state(state_dir, stage, run_id, update=None, event=None, now=time.time):
    """Merge ``update`` into the stage's state and append ``event`` to its events; renew the
    lock's heartbeat. Only the run that holds the lock may write (the state is the lock's);
    the check and the write happen under the mutex."""
    paths = _paths(state_dir, stage)
    with _mutex(state_dir):
        holder = _require_lock(state_dir, stage, run_id, 'Nothing more is done by this run.')
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
        atomic_write(paths['state'], json.dumps(state, indent=2, sort_keys=True) + '\n',
                     mode=0o640)
        if state.get('step') and holder.get('step') != state['step']:
            atomic_write(paths['owner'], json.dumps(dict(holder, step=state['step']), indent=2,
                                                    sort_keys=True) + '\n', mode=0o640)
        touch_heartbeat(state_dir, stage)
    return state


def start_state(state_dir, stage, previous, fresh, run_id):
    """The state a run starts from: ``fresh`` (its run id, plan, status running) over what the
    last run left that must carry forward (the stage's rollback target)."""
    with _mutex(state_dir):
        _require_lock(state_dir, stage, run_id, 'It may not write its state.')
        state = {key: previous[key] for key in ('rollback_target', 'rollback_history')
                 if key in previous}
        state.update(fresh)
        state.setdefault('events', [])
        state = redact_deep(state)
        atomic_write(_paths(state_dir, stage)['state'],
                     json.dumps(state, indent=2, sort_keys=True) + '\n', mode=0o640)
        touch_heartbeat(state_dir, stage)
    return state


def append_ledger(state_dir, entry):
    """Append one JSON line to ``ledger.jsonl``: the one writer of the ledger for every
    playbook. The whole line goes in one ``write`` on an O_APPEND descriptor, under the
    mutex, so two runs finishing together never interleave or lose a line."""
    path = os.path.join(state_dir, 'ledger.jsonl')
    os.makedirs(state_dir, mode=0o750, exist_ok=True)
    with _mutex(state_dir):
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
