# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""zopeops.stages.preflight_reads: everything one host says to a promotion's preflight, in one
task call on that host.

The preflight runs it once on every host of the run at the same time (one play over them), so
its reads cost one round, not one module task after another: the balancer's view
(``lb_switch`` read-only), the deployed.json files of the stages whose ZEO runs here (read
with ``cat``, no module), the predecessor's clients' health and revision (``pipeline_status``)
and whether the twin's programs here are stopped (``zeo_service`` in check mode). The modules
run through this task's connection, as their own tasks did. A host with no module to run is
pinged (unless it is reached without a connection), so that every host of the run has proven
it answers. A module that fails is an answer (its result is returned, the task does not fail);
the preflight judges the answers after the lock (module_utils/preflight.py). Only a host that
cannot be reached fails this task (unreachable).
"""
from __future__ import annotations

import json
import shlex
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

# option -> (module, check mode): the reads that are module runs, in the order they run.
MODULE_READS = (
    ('balancer', 'zopeops.stages.lb_switch', False),
    ('health', 'zopeops.stages.pipeline_status', False),
    ('idle', 'zopeops.stages.zeo_service', True),
)


def parse_json_file(text):
    """A deployed.json's text -> (dict, None), or (None, why it is not one)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return None, 'not JSON (%s)' % exc
    if not isinstance(value, dict):
        return None, 'not a JSON object'
    return value, None


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(('balancer', 'json_files', 'health', 'idle'))
    _supports_check_mode = True

    def _module(self, name, args, task_vars, check_mode):
        """One module run on this host, in check mode or not whatever the task's mode is."""
        saved = self._task.check_mode
        self._task.check_mode = check_mode
        try:
            result = self._execute_module(module_name=name, module_args=dict(args),
                                          task_vars=task_vars)
        finally:
            self._task.check_mode = saved
        result.pop('invocation', None)
        return result

    def _read_json(self, path):
        """A JSON file on this host -> (dict or None, error or None); a missing file is None."""
        found = self._low_level_execute_command('cat -- %s' % shlex.quote(path), sudoable=True)
        if found.get('rc') != 0:
            return None, None
        return parse_json_file(found.get('stdout') or '')

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        for option, _module, _check in MODULE_READS:
            if args.get(option) is not None and not isinstance(args[option], dict):
                raise AnsibleActionFail('preflight_reads: %s must be a dict of the module\'s '
                                        'options, not %r.' % (option, args[option]))
        paths = args.get('json_files') or {}
        if not isinstance(paths, dict):
            raise AnsibleActionFail('preflight_reads: json_files must be a dict of name -> path.')
        result.update(changed=False, files={}, file_errors={}, ran=[], seconds={})
        started = time.monotonic()
        for name, path in paths.items():
            value, error = self._read_json(str(path))
            result['files'][name] = value
            if error:
                result['file_errors'][name] = '%s: %s' % (path, error)
        if paths:
            result['seconds']['json_files'] = round(time.monotonic() - started, 3)
        for option, module, check_mode in MODULE_READS:
            result[option] = None
            if args.get(option):
                started = time.monotonic()
                result[option] = self._module(module, args[option], task_vars, check_mode)
                result['seconds'][option] = round(time.monotonic() - started, 3)
                result['ran'].append(module)
        if not result['ran'] and self._connection.transport != 'local':
            pong = self._module('ansible.builtin.ping', {}, task_vars, False)
            if pong.get('failed'):
                raise AnsibleActionFail('preflight_reads: Python does not run on this host: %s'
                                        % pong.get('msg'))
            result['ran'].append('ansible.builtin.ping')
        result['reached'] = True
        return result
