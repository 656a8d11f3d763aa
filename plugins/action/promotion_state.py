# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of zopeops.stages.promotion_state.

The lock lives on the conductor, but whether the run that holds it is still alive is a fact
of the controller: its ansible-playbook process. This plugin writes the controller's host name
and that process id into the lock, and when the module is refused by a lock of this
controller whose process is gone (an interrupted or killed run), it decides what the docs say:
resume and rollback take the lock over, a plain run is refused with what to do.
"""
from __future__ import annotations

import os
import socket

from ansible.plugins.action import ActionBase

from ansible_collections.zopeops.stages.plugins.module_utils.readiness import pid_alive


def _controller():
    # Workers are forked from the ansible-playbook process: our parent is the run itself.
    return {'controller': socket.gethostname(), 'controller_pid': os.getppid()}


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get('lock') == 'acquired':
            args['owner'] = dict(args.get('owner') or {}, **_controller())
        result = self._execute_module(module_name='zopeops.stages.promotion_state',
                                      module_args=args, task_vars=task_vars)
        holder = result.get('holder') or {}
        if not result.get('failed') or holder.get('kind') != 'lock':
            return result

        stage = holder.get('stage') or args.get('stage')
        purpose = args.get('purpose') or 'run'
        same_controller = holder.get('controller') == socket.gethostname()
        dead = same_controller and holder.get('controller_pid') and not pid_alive(
            int(holder['controller_pid']))
        where = 'ansible-playbook pid %s on %s' % (holder.get('controller_pid', '?'),
                                                   holder.get('controller', '?'))
        describe = '%s of %s (run %s) by %s, started %s, at step %s' % (
            holder.get('action') or 'a run', stage, holder.get('run_id', '?'),
            holder.get('owner', '?'), holder.get('started_at', '?'), holder.get('step', '?'))
        if args.get('break_lock') or (dead and purpose in ('resume', 'rollback')):
            retry = dict(args, take_over_run_id=holder.get('run_id'))
            result = self._execute_module(module_name='zopeops.stages.promotion_state',
                                          module_args=retry, task_vars=task_vars)
            if not result.get('failed'):
                result.setdefault('warnings', []).append(
                    'Took over the lock of the %s (%s, %s).'
                    % (describe, where, 'gone' if dead else 'lock broken on request'))
            return result
        if dead:
            result['msg'] = (
                'The %s was interrupted: its %s is gone, and it left the lock. Finish it with '
                '-e action=resume, or return the stage to what it ran before with '
                '-e action=rollback; both take the lock over and start by finding out which side '
                'the load balancer sends traffic to.' % (describe, where))
        elif not same_controller and holder.get('age_seconds', 0) > int(args.get('stale_after') or 7200):
            result['msg'] = (
                'A stale lock: the %s (%s) has not updated its state for %ss. If that run is '
                'dead, run again with -e promote_break_lock=true.'
                % (describe, where, holder.get('age_seconds')))
        else:
            result['msg'] = ('A %s is in progress (%s). Wait for it to finish.' % (describe, where))
        return result
