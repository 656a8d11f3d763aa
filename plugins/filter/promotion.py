# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The promotion_plan, promotion_plan_lines, side_programs, freeze_window, replay_ends,
storage_kept, preflight_input_problems, preflight_reads_problem and preflight_problem filters;
their documentation is in the .yml files of the same names beside this file."""
from __future__ import annotations

import base64
import json

from ansible.errors import AnsibleFilterError

from ansible_collections.zopeops.stages.plugins.module_utils.preflight import (
    input_problems, plan_reads_problem, reads_problem)
from ansible_collections.zopeops.stages.plugins.module_utils.promotion_plan import (
    PlanRefused, describe, kept_data, make_plan)


def _deployed(read):
    """A deployed.json as read by slurp (base64 content; absent when there is no file), or as
    a dict already."""
    if not read:
        return {}
    if 'content' not in read:
        return {} if 'failed' in read or 'msg' in read else dict(read)
    try:
        return json.loads(base64.b64decode(read['content']).decode('utf-8')) or {}
    except ValueError:
        return {}


def promotion_plan(model, stage, action, previous, deployed, lb_views, revision=None,
                   rollback_data=True, force=False, rollback_to=None, kept_pairs=None,
                   restore=None, migrate=None):
    """``deployed``: [the predecessor's, the stage's] deployed.json (slurp results or dicts)."""
    deployed = list(deployed or []) + [{}, {}]
    try:
        return make_plan(model, stage, action, dict(previous or {}), _deployed(deployed[0]),
                         _deployed(deployed[1]), list(lb_views or []), revision=revision or None,
                         rollback_data=rollback_data, force=force,
                         rollback_to=rollback_to or None, kept_pairs=kept_pairs,
                         restore=restore or None, migrate=migrate or None)
    except PlanRefused as exc:
        # A refusal is an answer, not an error of the template: the play says it in one line.
        return {'refused': str(exc)}


def preflight_input_problems(model, stage, action, rollback_data, revision, rollback_to,
                             migrate=''):
    """The run's inputs against the model -> the refusals (empty: the run may go on)."""
    return input_problems(model, stage, action, rollback_data, revision, rollback_to, migrate)


def preflight_reads_problem(hosts, reads, addresses):
    """The hosts of the run and what each said to preflight_reads -> why the run stops before
    its plan (a host that did not answer, a read that failed), or ''."""
    return reads_problem(list(hosts or []), dict(reads or {}), dict(addresses or {}))


def preflight_problem(plan, reads, stage, supervisor_conf):
    """The plan and the hosts' preflight_reads results -> the first reason the planned run may
    not start (the predecessor, the twin), or ''. What the plan does not start is not judged."""
    return plan_reads_problem(plan, list(reads or []), stage, supervisor_conf)


def side_programs(side, host, process_manager='supervisord', root=''):
    """The process-manager programs of one side that run on one inventory host:
    {'zeo': {name, kind, address, log_path} or None, 'clients': [{name, kind, address,
    log_path}], 'start': ZEO then clients, 'stop': clients then ZEO} (zeo_service programs)."""
    prefix = 'zopeops-' if process_manager == 'systemd' else ''
    folder = '%s/%s' % (root, side['instance'])
    zeo = None
    if side.get('zeo') and side['zeo']['host'] == host:  # a RelStorage side has no ZEO server
        zeo = {'name': '%s%s-zeo' % (prefix, side['instance']), 'kind': 'zeo',
               'address': '%s:%s' % (side['zeo']['address'], side['zeo']['port']),
               'log_path': '%s/log/zeo.log' % folder}
    clients = [{'name': prefix + client['id'], 'kind': 'zope',
                'address': '%s:%s' % (client['address'], client['port']),
                'log_path': '%s/log/%s.log' % (folder, client['name'])}
               for client in side['clients'] if client['host'] == host]
    zeos = [zeo] if zeo else []
    return {'zeo': zeo, 'clients': clients, 'start': zeos + clients, 'stop': clients + zeos}


def _times(results, key):
    """The numeric ``key`` of registered loop results (a skipped or unchanged call has none)."""
    return [item[key] for item in results or [] if isinstance(item, dict)
            and isinstance(item.get(key), (int, float)) and not isinstance(item.get(key), bool)]


def freeze_window(switch, freezes=None, switches=None, unfreezes=None, replayed=0,
                  replayed_frozen=0):
    """The write freeze of one cutover, for the state's ``freeze_windows``: from the earliest
    ``frozen_at`` of the freeze calls to the latest ``unfrozen_at`` of the switch and unfreeze
    calls (lb_switch's results, one per balancer). No freeze: 0 seconds."""
    frozen = _times(freezes, 'frozen_at')
    unfrozen = _times(list(switches or []) + list(unfreezes or []), 'unfrozen_at')
    if not frozen:
        return {'switch': switch, 'frozen_seconds': 0}
    if not unfrozen:
        raise AnsibleFilterError(
            'freeze_window: the writes of %s were frozen at %s, but no switch or unfreeze call '
            'says when the freeze was lifted' % (switch, min(frozen)))
    return {'switch': switch, 'frozen_seconds': round(max(unfrozen) - min(frozen), 3),
            'replayed': int(replayed or 0) + int(replayed_frozen or 0),
            'replayed_frozen': int(replayed_frozen or 0)}


def replay_ends(source, target, source_dir, target_dir):
    """What a cutover's replays read and write (roles/promote/tasks/cutover.yml and
    cutover_rescue.yml; zodb_replay's and lb_cutover's options): the one place that chooses.

    ``source`` / ``target``: the sides of the plan (their ``storage``, and the target's
    ``zeo``); ``source_dir`` / ``target_dir``: their instance folders on their data hosts. A
    RelStorage side is read or written through its etc/relstorage.conf (the stage and its twin
    share the stage's account), a ZEO side's source through its Data.fs and blobs, its target
    through its running ZEO server."""
    def relstorage(side):
        return ((side or {}).get('storage') or 'zeo') == 'relstorage'
    if relstorage(source):
        read = {'config': source_dir + '/etc/relstorage.conf'}
    else:
        read = {'file': source_dir + '/var/filestorage/Data.fs',
                'blob_dir': source_dir + '/var/blobstorage'}
    if relstorage(target):
        write = {'config': target_dir + '/etc/relstorage.conf'}
    else:
        zeo = (target or {}).get('zeo') or {}
        write = {'zeo_address': '%s:%s' % (zeo.get('address'), zeo.get('port'))}
    return {'source': read, 'target': write}


def _loop_items(results):
    """The items of a registered loop that ran (not skipped)."""
    return [item for item in results or [] if isinstance(item, dict) and not item.get('skipped')]


def cutover_rescue(target, views=None, unfreezes=None):
    """What a failed cutover does (roles/promote/tasks/cutover_rescue.yml): roll forward when
    the target may hold an acknowledged write, else put the traffic back on the source.

    ``views``: lb_switch's read-only results, one per balancer (a loop's results; a balancer
    that could not be read has no ``after``). ``unfreezes``: the results of the cutover's
    unfreeze calls. The target can have acknowledged a write only through a balancer that
    sends the stage to it with no freeze in force (lifted, or a lease that ran out), or once an
    unfreeze call ran at all (it may have lifted a freeze before it failed).
    """
    read = [item for item in _loop_items(views) if isinstance(item.get('after'), dict)]
    open_on_target = sorted(str(item.get('item')) for item in read
                            if item['after'].get('active') == target
                            and not item['after'].get('frozen'))
    unfreeze_ran = bool(_loop_items(unfreezes))
    return {'roll_forward': bool(open_on_target) or unfreeze_ran,
            'open_on_target': open_on_target,
            'unfreeze_ran': unfreeze_ran,
            'unread': sorted(str(item.get('item')) for item in _loop_items(views)
                             if not isinstance(item.get('after'), dict))}


class FilterModule:
    def filters(self):
        return {'promotion_plan': promotion_plan, 'promotion_plan_lines': describe,
                'side_programs': side_programs, 'freeze_window': freeze_window,
                'storage_kept': kept_data,
                'cutover_rescue': cutover_rescue, 'replay_ends': replay_ends,
                'preflight_input_problems': preflight_input_problems,
                'preflight_problem': preflight_problem,
                'preflight_reads_problem': preflight_reads_problem}
