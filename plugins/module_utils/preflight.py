# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The judgements of a promotion's preflight (roles/promote/tasks/preflight.yml), in Python:
the run's inputs before any lock, and what the reads after the plan say (the predecessor's
health and revision, the twin idle). Each returns the sentence the run stops with, or nothing;
the tasks only read and assert."""
from __future__ import annotations

import re

REVISION_NAME = re.compile(r'^[A-Za-z0-9._/-]*$')
BOOL_WORDS = ('true', 'false', 'yes', 'no', '1', '0')
ACTIONS = ('run', 'resume', 'rollback', 'restore')


def _text(value):
    """A value as Jinja's ``string`` filter shows it (True -> 'True', None -> 'None')."""
    return value if isinstance(value, str) else str(value)


def input_problems(model, stage, action, rollback_data, revision, rollback_to, migrate=''):
    """The run's inputs (-e stage, action, rollback_data, promote_revision, rollback_to,
    migrate_storage) against the pipeline model -> the list of refusals, empty when the run
    may go on."""
    stage, action, migrate = _text(stage), _text(action), _text(migrate)
    revision, rollback_to = _text(revision), _text(rollback_to)
    pipeline = list(model['pipeline'])
    promotable = ', '.join(pipeline[1:])
    entry = model['stages'].get(stage) if stage else None
    problems = []
    if not stage:
        problems.append('Name the stage to promote: -e stage=<one of %s>.' % promotable)
    elif entry is None:
        problems.append("Stage '%s' is not in the pipeline %s; promote one of %s."
                        % (stage, ' -> '.join(pipeline), promotable))
    # A restore or a move between kinds needs no predecessor.
    if entry and entry['predecessor'] is None and action != 'restore' and not migrate:
        problems.append("Stage '%s' is the head of the pipeline: nothing comes before it to "
                        'promote from. Deploy to it instead: set zopeops_revision for its hosts '
                        'and run playbooks/site.yml --limit %s.' % (stage, stage))
    if entry and entry['upgrade'] is None:
        problems.append("Stage '%s' has no upgrade twin: add the groups %s_upgrade_zeo (one ZEO "
                        'host) and %s_upgrade_clients to the inventory.' % (stage, stage, stage))
    if action not in ACTIONS:
        problems.append("action is '%s'; choose run (the default), resume or rollback." % action)
    if _text(rollback_data).lower() not in BOOL_WORDS:
        problems.append("rollback_data is '%s'; give true or false." % _text(rollback_data))
    if not REVISION_NAME.match(revision):
        problems.append("promote_revision '%s' is not a revision name (letters, digits, . _ / -)."
                        % revision)
    if not REVISION_NAME.match(rollback_to):
        problems.append("rollback_to '%s' is not a revision name (letters, digits, . _ / -)."
                        % rollback_to)
    if migrate and migrate not in ('zeo', 'relstorage'):
        problems.append("migrate_storage is '%s'; choose zeo or relstorage (the kind the stage "
                        'moves to; docs/relstorage.md).' % migrate)
    elif migrate and (action != 'run' or rollback_to):
        problems.append('migrate_storage moves a stage with action run; leave it out of -e '
                        'action=%s (a resume or rollback reads the move from the last run).'
                        % action)
    if rollback_to and action != 'rollback':
        problems.append('rollback_to goes with a rollback: use playbooks/rollback.yml -e stage=%s '
                        '-e rollback_to=%s (or -e action=rollback).' % (stage, rollback_to))
    return problems


def _client_items(health_results, predecessor):
    """pipeline_status results of the predecessor's client hosts -> [(client, its check)]."""
    items = []
    for result in health_results or []:
        clients = ((result.get('instances') or {}).get(predecessor) or {}).get('clients') or {}
        items.extend(clients.items())
    return items


def predecessor_problem(plan, health_results):
    """The predecessor's clients as pipeline_status read them -> why the run may not promote
    what the predecessor runs (unhealthy, revision unproven, another revision), or ''."""
    predecessor = plan['predecessor']
    clients = _client_items(health_results, predecessor)
    unhealthy = ['%s: %s' % (name, check.get('error')) for name, check in clients
                 if check.get('health_error')]
    unproven = ['%s: %s' % (name, check.get('error')) for name, check in clients
                if not check.get('health_error') and not check.get('ok')
                and not check.get('mismatch')]
    other = ['%s runs %s' % (name, check.get('revision')) for name, check in clients
             if not check.get('health_error') and check.get('ok')
             and check.get('revision') != plan['twin_revision']]
    if unhealthy:
        return ('The predecessor %s is not healthy, so what it runs cannot be promoted: %s. Fix '
                '%s first (playbooks/status.yml shows every stage).'
                % (predecessor, '; '.join(unhealthy), predecessor))
    if unproven:
        return ('The predecessor %s answers, but which revision it runs cannot be proven: %s.'
                % (predecessor, '; '.join(unproven)))
    if other:
        return ('The predecessor %s does not run its deployed revision %s: %s. Re-run '
                'playbooks/site.yml for %s (or restart its clients), then promote again.'
                % (predecessor, (plan['twin_revision'] or '')[:12], '; '.join(other),
                   predecessor))
    return ''


def twin_problem(stage, idle_results, supervisor_conf):
    """zeo_service's check-mode answers of the twin's hosts (state stopped) -> why the twin
    is not free for this run (a program runs, or a host could not say), or ''."""
    results = [result for result in idle_results or [] if 'skipped' not in result]
    busy = [result.get('msg') for result in results if result.get('failed')]
    busy += ['%s runs' % program['name'] for result in results if not result.get('failed')
             for program in result.get('programs') or [] if program.get('actions')]
    if not busy:
        return ''
    return ('The twin %s_upgrade is running: %s. Another run, a person or a fast-rollback window '
            'may be using it. See why with `supervisorctl -c %s status` (or systemctl status '
            "'zopeops-%s_upgrade-*') on its hosts, and stop it when it is free."
            % (stage, '; '.join(busy), supervisor_conf, stage))


def reads_problem(hosts, reads, addresses):
    """What the hosts of the run said to the preflight's one read (the preflight_reads
    results, ``reads``: host -> result, in the order of ``hosts``) -> why the run stops before
    its plan, or '': the hosts that did not answer, named with their machine (``addresses``:
    host -> ansible_host), else the first read that failed (a balancer's view, the
    predecessor's health: what the module said)."""
    lost = ['%s on machine %s' % (host, addresses.get(host) or '?') for host in hosts
            if not reads.get(host) or reads[host].get('unreachable')]
    if lost:
        return ('Refused before anything changed: %s did not answer. Bring the machine back (or '
                'fix its SSH access) and run again.' % ', '.join(lost))
    for host in hosts:
        read = reads[host]
        if read.get('failed'):
            return '%s could not be read: %s' % (host, read.get('msg') or 'see above')
        for what in ('balancer', 'health'):
            if (read.get(what) or {}).get('failed'):
                return read[what].get('msg') or '%s: the %s read failed' % (host, what)
    return ''


def plan_reads_problem(plan, reads, stage, supervisor_conf):
    """The plan and the hosts' reads (preflight_reads results) -> why the planned run may not
    start, or '': the predecessor's health and revision when the run starts a promotion of what
    the predecessor runs (a read only made without a hotfix revision), the twin idle when the
    run starts the twin. What the plan does not start is not judged."""
    starts = plan.get('start') == 'twin_code'
    would_start = starts or plan.get('would_start') == 'twin_code'  # check mode
    # A move between kinds (plan migrate) copies the stage's own data and code: the
    # predecessor is not read from.
    if plan.get('action') == 'run' and would_start and not plan.get('migrate'):
        problem = predecessor_problem(plan, [read['health'] for read in reads
                                             if (read or {}).get('health')])
        if problem:
            return problem
    if starts and not plan.get('stop_twin_first'):
        return twin_problem(stage, [read['idle'] for read in reads if (read or {}).get('idle')],
                            supervisor_conf)
    return ''
