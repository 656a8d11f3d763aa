# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of zopeops.stages.promotion_state.

The lock lives on the conductor; whether the run that holds it is alive is a fact of the
controller. This plugin does the two things only the controller can do:

- It writes the controller's host name and its ansible-playbook process id into the lock, and
  when the module is refused by a lock of this controller whose process is gone, it calls the
  module again naming that run as dead (``dead_run_id``): the lock counts as interrupted at
  once, without waiting for its lease (the module decides the rest, as for any interrupted
  lock).
- When this run takes a lock, it starts the lock's heartbeat: a detached process on the
  controller that renews ``<lock>/heartbeat`` on the conductor every few seconds, through
  this task's connection (so over SSH and with become as the module itself runs), while the
  ansible-playbook process lives and the lock still names this run.

Why a process of its own, and how it ends: a task can last longer than the lease (a copy of a
large Data.fs), so the renewal cannot wait for the next task. The process is forked twice
from the worker (it outlives the task) and leaves the worker's session (``setsid``), so a
Ctrl-C answered by a ``pause`` prompt does not stop it while the run goes on; its stdio is
/dev/null, so whoever reads ansible-playbook's output through pipes is not held open by it.
It polls ansible-playbook's pid (with the process's start time, against pid reuse) every
second and exits when it is gone, whatever signal ended it, SIGKILL of its process group
included; it exits when the renewal finds the lock released or another run's.

A push, a site.yml or a backup.yml run leaves no plan to resume, so when its ansible-playbook ends without
having released its locks (a play whose every host failed ends the playbook before its last
play; a kill), the heartbeat releases them, through the module, before it exits: their lock
lives exactly as long as the run. A promotion's lock stays, interrupted, for its resume.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import time

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.zopeops.stages.plugins.module_utils.promotion import STATELESS
from ansible_collections.zopeops.stages.plugins.module_utils.readiness import pid_alive

display = Display()

# The renewal's exit status when the lock is gone or names another run: the heartbeat stops.
NOT_OURS = 3
# Seconds between two renewals: a tenth of the lease, at most this.
MAX_PERIOD = 10.0
# The heartbeat's process name (ps -o comm, /proc/<pid>/comm): what it is, at a glance.
PROCESS_NAME = b'zopeops-lock-hb'
# Runs whose locks the heartbeat releases when their ansible-playbook ends (see above).
RELEASED_AT_EXIT = STATELESS


def _controller():
    # Workers are forked from the ansible-playbook process: our parent is the run itself.
    return {'controller': socket.gethostname(), 'controller_pid': os.getppid()}


def process_start(pid):
    """The start time of process ``pid`` (clock ticks since boot), or None if it is gone."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as handle:
            fields = handle.read().rsplit(b')', 1)[-1].split()
    except OSError:
        return None
    if not fields or fields[0] == b'Z':
        return None
    return fields[19]  # field 22 of proc(5), counted after the command's closing parenthesis


def renew_command(dirs, run_id):
    """The shell line that renews the heartbeat of each lock folder in ``dirs`` if its
    owner.json still names ``run_id`` (as json.dumps writes it), else exits NOT_OURS."""
    mark = shlex.quote('"run_id": %s' % json.dumps(run_id))
    return ' && '.join(
        '{ grep -qF %s %s && touch %s || exit %d; }'
        % (mark, shlex.quote(os.path.join(d, 'owner.json')),
           shlex.quote(os.path.join(d, 'heartbeat')), NOT_OURS)
        for d in dirs)


def held_command(dirs, run_id):
    """The shell line that exits 0 when any of the lock folders still names ``run_id``."""
    mark = shlex.quote('"run_id": %s' % json.dumps(run_id))
    return ' || '.join('grep -qsF %s %s' % (mark, shlex.quote(os.path.join(d, 'owner.json')))
                       for d in dirs)


def _set_process_name(name):
    try:
        import ctypes  # pylint: disable=import-outside-toplevel
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass  # not Linux: the process keeps the worker's name


class RenewalTimeout(Exception):
    """One renewal took too long (a stuck connection); the next period tries again."""


def _renewal_timed_out(signum, frame):
    raise RenewalTimeout()


def heartbeat_period(lease):
    return max(0.5, min(MAX_PERIOD, float(lease) / 10.0))


class ActionModule(ActionBase):
    _supports_check_mode = True

    def _call(self, args, task_vars):
        return self._execute_module(module_name='zopeops.stages.promotion_state',
                                    module_args=args, task_vars=task_vars)

    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get('lock') == 'acquired':
            args['owner'] = dict(args.get('owner') or {}, **_controller())
        result = self._call(args, task_vars)
        holder = result.get('holder') or {}
        if (holder.get('kind') == 'lock' and not holder.get('interrupted')
                and holder.get('controller') == socket.gethostname()
                and holder.get('controller_pid')
                and not pid_alive(int(holder['controller_pid']))):
            # Same controller, its ansible-playbook is gone: interrupted now, not after the lease.
            result = self._call(dict(args, dead_run_id=holder.get('run_id')), task_vars)
        for owner in result.get('taken_over') or []:
            result.setdefault('warnings', []).append(
                'Took over the lock of the %s of %s (run %s by %s, at step %s): %s.'
                % (owner.get('action') or 'run', owner.get('stage'), owner.get('run_id'),
                   owner.get('owner', '?'), owner.get('step') or '?',
                   owner.get('why') if owner.get('interrupted') else 'lock broken on request'))
        if (args.get('lock') == 'acquired' and result.get('lock_dirs')
                and not result.get('failed') and not self._task.check_mode):
            release = None
            if (args.get('purpose') or 'run') in RELEASED_AT_EXIT:
                release = {key: args[key] for key in ('dir', 'stage', 'stages', 'run_id', 'claims')
                           if args.get(key) is not None}
                release['lock'] = 'released'
            self._start_heartbeat(result['lock_dirs'], args['run_id'],
                                  result.get('lease') or 120, release, task_vars)
        return result

    def _start_heartbeat(self, dirs, run_id, lease, release=None, task_vars=None):
        playbook_pid = os.getppid()
        started = process_start(playbook_pid)
        command = renew_command(dirs, run_id)
        period = heartbeat_period(lease)
        child = os.fork()
        if child:
            os.waitpid(child, 0)  # the middle process exits at once: no zombie is left
            return
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            playbook_ended = self._heartbeat(command, period, playbook_pid, started)
            if release and playbook_ended:
                signal.alarm(120)
                still_held = self._low_level_execute_command(
                    held_command(dirs, run_id), sudoable=True).get('rc') == 0
                if still_held:  # the run ended without its release: a failure, a kill
                    self._call(release, task_vars)
        except BaseException:  # pylint: disable=broad-except
            pass
        os._exit(0)

    def _heartbeat(self, command, period, playbook_pid, started):
        """The detached process: renew until ansible-playbook is gone (True) or the lock is no
        longer this run's (False)."""
        _set_process_name(PROCESS_NAME)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGALRM, _renewal_timed_out)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, 1 << 16)  # the worker's result queue included; nothing else is used
        # Its queue is closed: nothing may be sent through it from here.
        display._final_q = None  # pylint: disable=protected-access

        def alive():
            return started is not None and process_start(playbook_pid) == started

        next_renewal = time.monotonic() + period
        while alive():
            if time.monotonic() >= next_renewal:
                signal.alarm(int(period * 3) + 5)  # a renewal that hangs is given up
                try:
                    rc = self._low_level_execute_command(command, sudoable=True).get('rc')
                except Exception:  # pylint: disable=broad-except
                    rc = None  # a connection hiccup or a hang: try again at the next period
                finally:
                    signal.alarm(0)
                if rc == NOT_OURS:
                    return False  # released or taken over
                next_renewal = time.monotonic() + period
            time.sleep(min(1.0, period))
        return True
