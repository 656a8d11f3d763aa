# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan of a promotion, made once in preflight from what is true now.

A plan says which revision and which data each side gets, whether data follows traffic at
each switch, and at which step the run starts (a resume starts where the balancers say the
last run stood). It is written into the stage's state, so that a resume carries out the same
plan, and every later step reads it instead of recomputing anything. See docs/promotion.md.

The data modes of the stage at step ``live_data``:

    from_twin       a snapshot of the twin; the twin's later writes are caught up at the switch
    own             the stage keeps its Data.fs; the twin's later writes are caught up
    previous_pair   the pair kept before the last promotion is swapped in; the twin's data is
                    archived when it stops (a rollback)
    keep            the stage keeps its Data.fs and the twin's data is archived (the rollback
                    of a promotion that failed before the stage's data was replaced)

A restore (action ``restore``, playbooks/restore.yml) is a plan like the upstream policy's:
the twin's data comes from a backup (``plan['restore']``: the stage it is of, the backup's
stamp and last tid) instead of a snapshot, the code stays the stage's, the first switch has no
catch-up (the restore drops the stage's transactions after the backup) and the switch back
catches up the twin's writes.
"""
from __future__ import annotations

STEPS = ('preflight', 'twin_code', 'twin_data', 'twin_start', 'cutover_to_twin', 'live_stop',
         'live_code', 'live_data', 'live_start', 'cutover_to_live', 'twin_stop', 'finish')
CATCH_UP_BACK = ('from_twin', 'own')
STORAGES = ('zeo', 'relstorage')
ARCHIVE_TWIN = ('previous_pair', 'keep')
UNFINISHED = ('running', 'failed', 'interrupted')


class PlanRefused(ValueError):
    """This run cannot go ahead; the message says why and what to do."""


def serving_side(lb_views):
    """Which side the balancers send traffic to: ('live' | 'upgrade', agree).

    When they disagree (a run stopped between two balancers), an unfrozen balancer's side
    wins: it is the one that takes writes, so all must follow it.
    """
    sides = [view.get('active') or 'live' for view in lb_views]
    if not sides:
        return 'live', True
    if len(set(sides)) == 1:
        return sides[0], True
    unfrozen = [view.get('active') or 'live' for view in lb_views if not view.get('frozen')]
    return (unfrozen or sides)[0], False


def _short(revision):
    return (revision or '-')[:12]


HISTORY_LENGTH = 20  # the rollback targets a stage's state remembers, newest last


def rollback_history(previous):
    """The stage's rollback targets, oldest first: each promotion's from_revision with the data
    pair it kept ({revision, data_pair, recorded_by}); the last is the rollback target."""
    history = [dict(entry) for entry in previous.get('rollback_history') or []
               if isinstance(entry, dict) and entry.get('revision')]
    target = previous.get('rollback_target') or {}
    if target.get('revision') and not any(
            entry.get('recorded_by') == target.get('recorded_by')
            and entry.get('revision') == target['revision'] for entry in history):
        history.append(dict(target))  # a state written before the history existed
    return history[-HISTORY_LENGTH:]


KEPT_DATAFS_PREFIX = 'Data.fs.prev-'


def kept_pair_stamp(name):
    """The stamp a rollback history names a kept pair by: a kept Data.fs file's name
    (``Data.fs.prev-<stamp>``, as the ZEO host lists it) without its prefix; a kept
    RelStorage database's name as it is."""
    return name[len(KEPT_DATAFS_PREFIX):] if name.startswith(KEPT_DATAFS_PREFIX) else name


def _rollback_to(plan, previous, stage, stage_revision, rollback_to, rollback_data, kept_pairs):
    """The plan of a rollback to any kept release (-e rollback_to): its data pair when one
    is kept with it, else the code only (said in code_only_reason)."""
    name, target = rollback_to.get('name') or '', rollback_to.get('revision') or ''
    if previous.get('status') in UNFINISHED:
        raise PlanRefused(
            'The last run of %s (%s) is %s at step %s: finish it (-e action=resume) or roll it '
            'back (-e action=rollback without rollback_to) first, then roll back to %s.'
            % (stage, previous.get('run_id', '?'), previous.get('status'),
               previous.get('step', '?'), name))
    if target == stage_revision:
        raise PlanRefused('%s runs %s (%s) already: there is nothing to roll back.'
                          % (stage, name, _short(target)))
    pairs = {kept_pair_stamp(name) for name in kept_pairs or []}
    entry = next((entry for entry in reversed(rollback_history(previous))
                  if entry.get('revision') == target and entry.get('data_pair') in pairs), None)
    plan.update(twin_revision=stage_revision, live_revision=target, data_from=stage,
                catch_up_to_twin=True, start='twin_code', rollback_to=name)
    if rollback_data and entry:
        plan.update(live_data='previous_pair', rollback_pair=entry['data_pair'])
        return plan
    plan.update(live_data='own', rollback_pair=None, code_only_reason=(
        'Only the code goes back: -e rollback_data=false keeps the data as it is.'
        if not rollback_data else
        'Only the code goes back: no data pair of %s is kept on %s (a promotion keeps '
        'promote_keep_previous_data pairs); the stage keeps its data and every write.'
        % (name, stage)))
    return plan


def _refuse_unless_idle(stage, previous, serving):
    """A new run (a promotion, a restore) needs the last one finished and traffic on the stage."""
    if previous.get('status') in UNFINISHED:
        raise PlanRefused(
            'The last run of %s (%s, %s) is %s at step %s: finish it with -e action=resume, '
            'or return the stage to what it ran before with -e action=rollback.'
            % (stage, previous.get('run_id', '?'), previous.get('action', 'run'),
               previous.get('status'), previous.get('step', '?')))
    if serving != 'live':
        raise PlanRefused(
            'The load balancer sends the traffic of %s to its twin %s_upgrade although no '
            'run of it is unfinished. Find out why; -e action=resume finishes a promotion '
            'from there.' % (stage, stage))


def _restore(plan, previous, stage, serving, stage_revision, restore):
    """The plan of a restore of a backup through the twin (the module's docstring)."""
    _refuse_unless_idle(stage, previous, serving)
    source = restore.get('from') or stage
    if source != stage and not restore.get('allow_other_stage'):
        raise PlanRefused(
            "Refused: restoring %s's backup into %s replaces %s's data with another stage's. "
            'Give -e allow_other_stage=true to do that.' % (source, stage, stage))
    if not restore.get('stamp'):
        raise PlanRefused('No backup of %s is named to restore: run playbooks/restore.yml, which '
                          'finds it.' % source)
    if not stage_revision:
        raise PlanRefused('%s has no deployed revision (no deployed.json): deploy it first.'
                          % stage)
    plan.update(twin_revision=stage_revision, live_revision=stage_revision, data_from=source,
                restore=dict(restore, **{'from': source}), catch_up_to_twin=False,
                live_data='from_twin', start='twin_code',
                rollback_history=rollback_history(previous))
    return plan


def _migrate(plan, entry, previous, serving, stage_deployed, to, revision):
    """The plan of a move of the stage between kinds of storage (-e migrate_storage): the twin
    is built on the new kind from the stage's own data (policy self, the code the stage runs),
    takes the traffic, the stage is rebuilt on the new kind from the twin and takes it back.
    ``plan['live_before']`` is the stage as it runs until its data is moved (the model's
    ``other``); ``plan['live']`` and ``plan['twin']`` are on the new kind."""
    stage, live = entry['name'], entry['live']
    if to not in STORAGES:
        raise PlanRefused('migrate_storage is %r: choose one of %s.' % (to, ', '.join(STORAGES)))
    _refuse_unless_idle(stage, previous, serving)
    if revision:
        raise PlanRefused('A move between kinds keeps the code %s runs: leave out promote_revision '
                          '(promote the code before or after the move).' % stage)
    running = (stage_deployed or {}).get('storage') or ''
    if not running:
        raise PlanRefused(
            "%s's deployed.json does not say which kind of storage it runs (it was deployed "
            'before the collection recorded it): run site.yml --limit %s once (it records the '
            'kind its configuration runs and changes nothing else), then move it.'
            % (stage, stage))
    if running == to:
        raise PlanRefused('%s runs on %s already (its deployed.json says so): there is nothing '
                          'to move.' % (stage, to))
    if live['storage'] != to:
        raise PlanRefused(
            'The inventory names %s for %s, not %s: set zopeops_storage: %s for %s and its twin '
            '%s_upgrade (and, for RelStorage, their PostgreSQL settings), run site.yml --limit '
            'postgresql, then run the move again (docs/relstorage.md).'
            % (live['storage'], stage, to, to, stage, stage))
    before = live.get('other') or None
    if not before or before['storage'] != running:
        raise PlanRefused(
            '%s runs on %s, but the inventory no longer says where: keep %s until the move is '
            'done (docs/relstorage.md), then run again.' % (
                stage, running,
                "group %s_zeo (its ZEO server) with zopeops_zeo_port" % stage
                if running == 'zeo' else
                'its PostgreSQL settings (zopeops_postgresql_host and the others)'))
    if running == 'relstorage' and not (before.get('database') or {}).get('keep_history', True):
        raise PlanRefused(
            '%s keeps its data in a history-free RelStorage database: a copy between kinds '
            'reads the history, which a history-free database does not keep consistently while '
            'it serves.' % stage)
    stage_revision = (stage_deployed or {}).get('revision') or ''
    if not stage_revision:
        raise PlanRefused('%s has no deployed revision (no deployed.json): deploy it first.'
                          % stage)
    plan.update(twin_revision=stage_revision, live_revision=stage_revision, data_from=stage,
                policy='self', catch_up_to_twin=True, live_data='from_twin', start='twin_code',
                code_only_refresh=False, migrate={'from': running, 'to': to},
                live_before=before, rollback_history=rollback_history(previous))
    return plan


def make_plan(model, stage, action, previous, predecessor_deployed, stage_deployed, lb_views,
              revision=None, rollback_data=True, force=False, rollback_to=None, kept_pairs=None,
              restore=None, migrate=None):
    """Return the plan dict, or raise PlanRefused with one clear sentence.

    ``rollback_to``: {name, revision} of the kept release a rollback returns to (-e
    rollback_to); ``kept_pairs``: the data pairs kept on the stage's ZEO host (their Data.fs file names or stamps) or its kept databases;
    ``restore``: the backup a restore installs ({from, stamp, last_tid, files, repository,
    allow_other_stage, ...}, found by restore.yml on the backup's ZEO host); ``migrate``: the
    kind of storage a move takes the stage to (-e migrate_storage, action run)."""
    entry = model['stages'][stage]
    policy = entry['data_policy']
    predecessor = entry['predecessor']
    serving, agree = serving_side(lb_views)
    unfinished = previous.get('status') in UNFINISHED
    previous_plan = previous.get('plan') or {}
    stage_revision = (stage_deployed or {}).get('revision') or ''
    plan = {
        'stage': stage, 'action': action, 'policy': policy, 'predecessor': predecessor,
        'serving_at_start': serving, 'balancers_agree': agree,
        'lift_freeze': any(view.get('frozen') for view in lb_views),
        'stop_twin_first': False, 'rollback_data': bool(rollback_data),
        'from_revision': stage_revision,
        'twin': entry['upgrade'], 'live': entry['live'],
    }

    if action == 'restore':
        return _restore(plan, previous, stage, serving, stage_revision, restore or {})

    if migrate:
        if action != 'run':
            raise PlanRefused('migrate_storage moves a stage with action run; -e action=%s takes '
                              'no migrate_storage (a resume or rollback reads the move from the '
                              "stage's last run)." % action)
        return _migrate(plan, entry, previous, serving, stage_deployed, migrate, revision)

    if action == 'run':
        _refuse_unless_idle(stage, previous, serving)
        target = revision or (predecessor_deployed or {}).get('revision') or ''
        if not target:
            raise PlanRefused('%s has no deployed revision to promote (no deployed.json): '
                              'deploy it first.' % predecessor)
        upstream = policy == 'upstream'
        if policy == 'none' and target == stage_revision and not force:
            raise PlanRefused(
                '%s runs %s already and its data policy is none: a promotion would change '
                'nothing. Nothing to do (-e promote_force=true goes through the twin anyway).'
                % (stage, _short(target)))
        plan.update(
            twin_revision=target, live_revision=target,
            data_from=predecessor if upstream else stage,
            catch_up_to_twin=not upstream,
            live_data='from_twin' if upstream else 'own',
            start='twin_code',
            code_only_refresh=target == stage_revision,
            rollback_history=rollback_history(previous),
        )
        return plan

    if action == 'resume':
        if not unfinished or not previous_plan:
            raise PlanRefused('There is no unfinished run of %s to resume (last state: %s); run '
                              'it without -e action=resume.'
                              % (stage, previous.get('status') or 'none'))
        plan.update({key: previous_plan[key] for key in (
            'twin_revision', 'live_revision', 'data_from', 'catch_up_to_twin', 'live_data',
            'from_revision', 'rollback_pair', 'code_only_refresh', 'rollback_data',
            'rollback_history', 'rollback_to', 'code_only_reason', 'restore', 'migrate',
            'live_before', 'policy')
            if key in previous_plan})
        plan['action'] = previous_plan.get('action', 'run')
        plan['resumed_run'] = previous.get('run_id')
        plan['start'] = _resume_start(previous, serving)
        plan['stop_twin_first'] = plan['start'] == 'twin_code'
        if plan['start'] == 'live_stop':
            plan['live_data'] = _live_data_on_resume(previous, plan['live_data'])
        return plan

    # rollback
    if unfinished and previous_plan.get('migrate'):
        move = previous_plan['migrate']
        raise PlanRefused(
            'The last run of %s (%s) moved it from %s to %s and is %s at step %s: a rollback '
            'would start the stage on %s without its data. The traffic is on %s. Finish the '
            'move with -e action=resume; to go back to %s, move it again afterwards (-e '
            'migrate_storage=%s, with the inventory naming %s).'
            % (stage, previous.get('run_id', '?'), move['from'], move['to'],
               previous.get('status'), previous.get('step', '?'), move['to'],
               '%s_upgrade, which holds every write' % stage if serving == 'upgrade' else
               '%s, which still runs on %s' % (stage, move['from']),
               move['from'], move['from'], move['from']))
    if rollback_to:
        return _rollback_to(plan, previous, stage, stage_revision, rollback_to, rollback_data,
                            kept_pairs)
    if unfinished and serving == 'upgrade':
        # A promotion failed (or stopped) with traffic on the twin: the stage returns to what
        # it ran before that promotion; the twin keeps serving until the stage is back.
        replaced = previous.get('live_data_done')
        target_revision = previous_plan.get('from_revision') or stage_revision
        pair = previous.get('rollback_target', {}).get('data_pair') if replaced else None
        if rollback_data:
            mode = 'previous_pair' if replaced else 'keep'
            if replaced and not pair:
                raise PlanRefused(
                    'The failed run replaced the data of %s but kept no previous pair '
                    '(promote_keep_previous_data was 0): roll back the code only with '
                    '-e rollback_data=false.' % stage)
        else:
            # Code only: the twin holds every transaction, the stage's own file may not.
            mode = 'from_twin'
        plan.update(twin_revision=previous_plan.get('twin_revision') or '',
                    live_revision=target_revision, data_from=stage, catch_up_to_twin=True,
                    live_data=mode, rollback_pair=pair, start='live_stop',
                    rolled_back_run=previous.get('run_id'))
        return plan
    if unfinished:
        raise PlanRefused(
            'The last run of %s (%s) is %s at step %s with traffic on the stage itself: resume '
            'it first (-e action=resume), then roll back.'
            % (stage, previous.get('run_id', '?'), previous.get('status'),
               previous.get('step', '?')))
    target = previous.get('rollback_target') or {}
    if not target.get('revision'):
        raise PlanRefused('%s has no rollback target recorded (it was never promoted by this '
                          'collection, or it was rolled back already): there is nothing to roll '
                          'back to.' % stage)
    if rollback_data and not target.get('data_pair'):
        raise PlanRefused(
            'The last promotion of %s kept no previous data pair (its policy keeps the stage\'s '
            'own data, or promote_keep_previous_data was 0): roll back the code only with '
            '-e rollback_data=false.' % stage)
    plan.update(twin_revision=stage_revision, live_revision=target['revision'], data_from=stage,
                catch_up_to_twin=True,
                live_data='previous_pair' if rollback_data else 'own',
                rollback_pair=target.get('data_pair') if rollback_data else None,
                start='twin_code')
    return plan


def _resume_start(previous, serving):
    if serving == 'upgrade':
        return 'live_stop'
    if previous.get('twin_took_traffic'):
        # Traffic went to the twin and is back on the stage: only the switch back moves it
        # there after the stage caught up, so what is left is to stop the twin.
        return 'twin_stop'
    return 'twin_code'


def _live_data_on_resume(previous, mode):
    # 'own' needs the stage's Data.fs untouched since the first switch and the tid it had
    # then. A run stopped after that switch may not have recorded the tid, and may have started
    # the stage already; the twin's data holds every transaction the stage had and every write
    # made since, so a resume takes a snapshot of the twin instead.
    return 'from_twin' if mode == 'own' else mode


def describe(plan):
    """One line per fact of the plan, for the run's output and --check."""
    start = ('would start at step %s (check mode: nothing is done)' % plan.get('would_start')
             if plan['start'] == 'check' else 'start at step %s' % plan['start'])
    lines = ['%s %s: twin gets %s, the stage gets %s; %s.' % (
        plan['action'], plan['stage'], _short(plan.get('twin_revision')),
        _short(plan.get('live_revision')), start)]
    restore = plan.get('restore')
    if restore:
        lines.append('Data: the twin gets %s\'s backup %s (%s, last transaction %s); at the '
                     'first switch %s\'s transactions after it are dropped, the twin\'s writes '
                     'are caught up at the switch back.' % (
                         restore['from'], restore.get('stamp'), ' + '.join(restore.get('files') or []),
                         restore.get('last_tid'), plan['stage']))
    else:
        lines.append('Data: policy %s; the twin gets a snapshot of %s%s; the stage\'s data: %s.'
                     % (plan['policy'], plan.get('data_from'),
                        ', caught up at the first switch' if plan.get('catch_up_to_twin') else '',
                        plan.get('live_data')))
    if plan.get('migrate'):
        lines.append('Storage: %s moves from %s to %s; its %s data is kept as it is (%s).'
                     % (plan['stage'], plan['migrate']['from'], plan['migrate']['to'],
                        plan['migrate']['from'], kept_data(plan)))
    if plan.get('code_only_reason'):
        lines.append(plan['code_only_reason'])
    if plan.get('code_only_refresh'):
        lines.append('%s already runs %s: this run refreshes its data only (%s policy).'
                     % (plan['stage'], _short(plan.get('live_revision')), plan['policy']))
    return lines


def kept_data(plan):
    """What a move between kinds leaves untouched of the stage's old kind: its Data.fs (and
    blobs) or its database, named for the result and the ledger."""
    before = plan.get('live_before') or {}
    if before.get('storage') == 'zeo':
        return '%s/var/filestorage/Data.fs on %s' % (
            before.get('instance'), before.get('data_host'))
    database = before.get('database') or {}
    return 'database %s on %s:%s' % (database.get('name'), database.get('host'),
                                     database.get('port'))
