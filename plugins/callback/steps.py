# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
name: steps
type: stdout
short_description: A page per run instead of every task; the full output goes to a log file
version_added: 0.1.0
author:
  - zopeops.stages developers (@zopeops)
description:
  - "Prints one line per play and one per promotion step as it starts (the plays and tasks of
    C(playbooks/promote.yml) named C([3/12] twin_data: ...)), with the time since the run
    began; the messages of C(debug) tasks (the summaries and the status table); and, for a
    failed task, the host, the task and why."
  - At the end it prints a timeline of each step's duration, the total time, and the name of
    the log file.
  - Everything the default callback would print goes to that log file instead, so nothing is
    lost. Several runs may share one log file (it is appended to).
  - "Enable it with C(ANSIBLE_STDOUT_CALLBACK=zopeops.stages.steps) (as C(make demo) does) or
    C(stdout_callback = zopeops.stages.steps) in C(ansible.cfg)."
extends_documentation_fragment:
  - ansible.builtin.default_callback
  - ansible.builtin.result_format_callback
options:
  log_file:
    description:
      - The file the full output is appended to. Empty means a new file in the system's
        temporary folder, named after the playbook and the time; an existing folder means a
        new file of that name in that folder. A leading C(~) is expanded.
    type: str
    default: ''
    env:
      - name: ZOPEOPS_STEPS_LOG
    ini:
      - section: callback_zopeops_steps
        key: log_file
requirements:
  - set as the stdout callback
'''

import os
import re
import tempfile
import time

from ansible import constants as C
from ansible.plugins.callback.default import CallbackModule as DefaultCallback

# "[3/12] twin_data: ..." (one step) or "[2-4/12] twin_code, ...: ..." (a group of steps).
STEP = re.compile(r'^\[(\d+)(?:-(\d+))?/(\d+)\]\s*([A-Za-z0-9_]+)?:?\s*(.*)$')
ANSI = re.compile(r'\x1b\[[0-9;]*m')


def parse_step(name):
    """'[3/12] twin_data: the twin ...' -> (3, 3, 12, 'twin_data', 'the twin ...'); a group
    '[2-4/12] a, b, c: ...' -> (2, 4, 12, None, ...); anything else -> None."""
    match = STEP.match((name or '').strip())
    if not match:
        return None
    first, last, total = int(match.group(1)), match.group(2), int(match.group(3))
    last = int(last) if last else first
    step = match.group(4) if last == first else None
    return first, last, total, step, match.group(5)


def clock(seconds):
    seconds = int(round(seconds))
    return '%d:%02d' % (seconds // 60, seconds % 60)


def timeline_lines(phases, end):
    """[{number, total, step, started}] and the end time -> the timeline table's lines."""
    lines = []
    if phases:
        width = max(len(p['label']) for p in phases)
        for index, phase in enumerate(phases):
            stop = phases[index + 1]['started'] if index + 1 < len(phases) else end
            note = '' if phase['active'] else '  (skipped)'
            if phase.get('failed'):
                note = '  FAILED'
            lines.append('  %s  %7.1f s%s' % (phase['label'].ljust(width),
                                              stop - phase['started'], note))
    return lines


def log_path(option, playbook):
    """The log file for the option's value ('' or a folder: a new file named after the
    playbook and the time there, or in the system's temporary folder); None while a file name
    is needed and the playbook is not known yet."""
    path = os.path.expanduser((option or '').strip())
    folder = None
    if not path:
        folder = tempfile.gettempdir()
    elif os.path.isdir(path):
        folder = path
    if folder is None:
        return os.path.abspath(path)
    if playbook is None:
        return None
    return os.path.abspath(os.path.join(folder, 'zopeops-%s-%s-%d.log' % (
        playbook, time.strftime('%Y%m%dT%H%M%S'), os.getpid())))


class LogDisplay:
    """Stands in for Ansible's display for the default callback: its output goes to a file."""

    def __init__(self, real, path):
        self._real = real
        self.path = path
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self._file = open(path, 'a', encoding='utf-8')  # pylint: disable=consider-using-with

    def __getattr__(self, name):
        return getattr(self._real, name)

    def display(self, msg, color=None, stderr=False, screen_only=False, log_only=False,
                newline=True, **kwargs):
        if screen_only:
            return
        self._file.write(ANSI.sub('', str(msg)) + ('\n' if newline else ''))
        self._file.flush()

    def _error(self, msg, *args, **kwargs):
        """A task's exception: in the log, formatted as Ansible does; the page has one line."""
        try:
            type(self._real)._error(self, msg, *args, **kwargs)
        except Exception:  # pylint: disable=broad-except
            self.display('[ERROR]: %s' % (msg,))

    def banner(self, msg, color=None, cows=True):
        msg = str(msg).strip()
        self.display('\n%s %s' % (msg, '*' * max(3, 79 - len(msg))))

    def close(self):
        self._file.close()


class CallbackModule(DefaultCallback):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'stdout'
    CALLBACK_NAME = 'zopeops.stages.steps'

    def __init__(self):
        super().__init__()
        self._screen = self._display
        self._log = None
        self._started = time.monotonic()
        self._phases = []
        self._failures = 0
        self._playbook = 'playbook'

    # -- set up -------------------------------------------------------------------------

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self._open_log()

    def _open_log(self, playbook=None):
        if self._log is not None:
            return
        path = log_path(self.get_option('log_file'), playbook)
        if path is None:
            return  # named after the playbook, once it is known
        self._log = LogDisplay(self._screen, os.path.abspath(path))
        self._display = self._log

    def _say(self, text, color=None):
        self._screen.display(text, color=color)

    def _elapsed(self):
        return clock(time.monotonic() - self._started)

    # -- what is shown ------------------------------------------------------------------

    def _phase(self, number, total, step, text):
        if self._phases and self._phases[-1]['number'] == number:
            return
        label = '[%d/%d] %s' % (number, total, step or '?')
        self._phases.append({'number': number, 'label': label, 'started': time.monotonic(),
                             'active': False, 'failed': False})
        self._say('%s %s: %s' % (self._elapsed(), label, text) if text else
                  '%s %s' % (self._elapsed(), label), color=C.COLOR_HIGHLIGHT)

    def v2_playbook_on_start(self, playbook):
        self._playbook = os.path.splitext(os.path.basename(playbook._file_name))[0]
        self._open_log(self._playbook)
        self._started = time.monotonic()
        super().v2_playbook_on_start(playbook)
        self._say('%s: %s' % (self._playbook, os.path.basename(playbook._file_name)))

    def v2_playbook_on_play_start(self, play):
        super().v2_playbook_on_play_start(play)
        name = play.get_name().strip()
        step = parse_step(name)
        if step and step[0] == step[1]:
            self._phase(step[0], step[2], step[3], step[4])
        elif step:
            # A play of several steps: its tasks named "[N/T] step: ..." start each step.
            return
        else:
            self._say('%s %s' % (self._elapsed(), name))

    def v2_playbook_on_task_start(self, task, is_conditional):
        super().v2_playbook_on_task_start(task, is_conditional)
        step = parse_step(task.get_name())
        if step and step[0] == step[1]:
            self._phase(step[0], step[2], step[3], step[4])

    def _mark(self, failed=False):
        if self._phases:
            self._phases[-1]['active'] = True
            if failed:
                self._phases[-1]['failed'] = True

    def v2_runner_on_ok(self, result):
        super().v2_runner_on_ok(result)
        self._mark()
        action = result.task.action or ''
        if action.split('.')[-1] == 'debug' and 'msg' in result._result:
            message = result._result['msg']
            lines = message if isinstance(message, list) else str(message).splitlines()
            for line in lines:
                self._say('    ' + str(line))

    def v2_runner_item_on_ok(self, result):
        super().v2_runner_item_on_ok(result)
        self._mark()

    def v2_runner_on_failed(self, result, ignore_errors=False):
        super().v2_runner_on_failed(result, ignore_errors=ignore_errors)
        if ignore_errors:
            return
        self._mark(failed=True)
        self._failures += 1
        message = result._result.get('msg') or result._result.get('stderr') or 'see the log'
        message = ' '.join(str(message).split())
        if len(message) > 600:
            message = message[:600] + '...'
        self._say('    FAILED on %s: %s: %s' % (result._host.get_name(), result.task.get_name(),
                                                message), color=C.COLOR_ERROR)

    def v2_runner_on_unreachable(self, result):
        super().v2_runner_on_unreachable(result)
        self._mark(failed=True)
        self._failures += 1
        self._say('    UNREACHABLE %s: %s' % (result._host.get_name(),
                                              result._result.get('msg', '')),
                  color=C.COLOR_UNREACHABLE)

    def v2_playbook_on_stats(self, stats):
        super().v2_playbook_on_stats(stats)
        end = time.monotonic()
        failed = sorted(h for h in stats.processed
                        if stats.summarize(h)['failures'] or stats.summarize(h)['unreachable'])
        lines = timeline_lines(self._phases, end)
        if lines:
            self._say('Timeline of %s:' % self._playbook)
            for line in lines:
                self._say(line)
        outcome = ('FAILED on %s' % ', '.join(failed)) if failed else 'done'
        self._say('%s %s in %s (%.1f s).' % (self._playbook, outcome, clock(end - self._started),
                                             end - self._started),
                  color=C.COLOR_ERROR if failed else C.COLOR_OK)
        if self._log is not None:
            self._say('Full output: %s' % self._log.path)
            self._log.close()
