# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The promotion_plan, promotion_plan_lines and side_programs filters; their documentation is
in the .yml files of the same names beside this file."""
from __future__ import annotations

import base64
import json

from ansible_collections.zopeops.stages.plugins.module_utils.promotion_plan import (
    PlanRefused, describe, make_plan)


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
                   rollback_data=True, force=False):
    """``deployed``: [the predecessor's, the stage's] deployed.json (slurp results or dicts)."""
    deployed = list(deployed or []) + [{}, {}]
    try:
        return make_plan(model, stage, action, dict(previous or {}), _deployed(deployed[0]),
                         _deployed(deployed[1]), list(lb_views or []), revision=revision or None,
                         rollback_data=rollback_data, force=force)
    except PlanRefused as exc:
        # A refusal is an answer, not an error of the template: the play says it in one line.
        return {'refused': str(exc)}


def side_programs(side, host, process_manager='supervisord', root=''):
    """The process-manager programs of one side that run on one inventory host:
    {'zeo': {name, kind, address, log_path} or None, 'clients': [{name, kind, address,
    log_path}], 'start': ZEO then clients, 'stop': clients then ZEO} (zeo_service programs)."""
    prefix = 'zopeops-' if process_manager == 'systemd' else ''
    folder = '%s/%s' % (root, side['instance'])
    zeo = None
    if side['zeo']['host'] == host:
        zeo = {'name': '%s%s-zeo' % (prefix, side['instance']), 'kind': 'zeo',
               'address': '%s:%s' % (side['zeo']['address'], side['zeo']['port']),
               'log_path': '%s/log/zeo.log' % folder}
    clients = [{'name': prefix + client['id'], 'kind': 'zope',
                'address': '%s:%s' % (client['address'], client['port']),
                'log_path': '%s/log/%s.log' % (folder, client['name'])}
               for client in side['clients'] if client['host'] == host]
    zeos = [zeo] if zeo else []
    return {'zeo': zeo, 'clients': clients, 'start': zeos + clients, 'stop': clients + zeos}


class FilterModule:
    def filters(self):
        return {'promotion_plan': promotion_plan, 'promotion_plan_lines': describe,
                'side_programs': side_programs}
