# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
name: stop_advice
type: notification
short_description: An interrupted promotion (Ctrl-C) says where the traffic is and what to run
version_added: 0.6.0
author:
  - zopeops.stages developers (@zopeops)
description:
  - "Watches C(playbooks/promote.yml) (and C(rollback.yml), C(restore.yml), C(push_branding.yml), C(site.yml)):
    the step it is in (plays and tasks named C([N/12] step: ...) and the promotion's timeline),
    the plan (the C(promote_plan) fact), whether the stage's lock was taken, and the last
    C(zopeops.stages.lb_switch) and C(zopeops.stages.lb_cutover) results it saw (which side
    serves, whether writes are frozen and until when)."
  - "When the run is interrupted (SIGINT, Ctrl-C) and so ends without its recap, its last lines
    (on stderr, after Ansible's C(User interrupted execution)) name the stage, the step, the
    side that serves as far as the run knew, the write freeze (a freeze with a deadline lets
    writes through by itself at that time; a held one until a resume or a rollback), and the
    command that finishes or undoes the run."
  - A run that ends normally (done or failed) prints nothing more; its own messages say it.
  - "Enable it with C(callbacks_enabled = zopeops.stages.stop_advice) in C(ansible.cfg)
    (the checkout's does) or C(ANSIBLE_CALLBACKS_ENABLED=zopeops.stages.stop_advice)."
requirements:
  - enabled in callbacks_enabled
'''

import atexit
import os
import signal
import sys
import time

from ansible.plugins.callback import CallbackBase

from ansible_collections.zopeops.stages.plugins.callback.steps import parse_step

PROMOTE_BOOKS = ('promote', 'rollback', 'restore')


def _when(epoch):
    return time.strftime('%H:%M:%S UTC', time.gmtime(epoch))


def freeze_line(views, now):
    """The balancers' last lb_switch views of the stage ({'frozen', 'frozen_until',
    'frozen_held'}, missing keys as null/false) -> one sentence about the write freeze."""
    if not views:
        return 'Writes: the run read no balancer; playbooks/status.yml shows whether they are frozen.'
    held = [host for host, view in sorted(views.items()) if view.get('frozen_held')]
    untils = [view.get('frozen_until') for view in views.values()
              if view.get('frozen') and not view.get('frozen_held')]
    frozen = [host for host, view in sorted(views.items()) if view.get('frozen')]
    if held:
        return ('Writes: FROZEN without a deadline (held) on %s: they stay frozen until a '
                'resume or a rollback lifts the freeze.' % ', '.join(held))
    if frozen:
        deadlines = [until for until in untils if isinstance(until, (int, float))]
        if deadlines:
            last = max(deadlines)
            if last <= now:
                return ('Writes: were frozen on %s until %s; that deadline has passed, so '
                        'writes go through again.' % (', '.join(frozen), _when(last)))
            return ('Writes: FROZEN on %s until %s (in %d s); the freeze lets writes through '
                    'by itself then.' % (', '.join(frozen), _when(last), int(last - now + 0.999)))
        return ('Writes: FROZEN on %s (no deadline was reported): a resume or a rollback lifts '
                'the freeze.' % ', '.join(frozen))
    return 'Writes: not frozen, as the run last saw the balancers.'


def traffic_line(stage, views, plan):
    sides = sorted({view.get('active') for view in views.values() if view.get('active')})
    if not sides and plan:
        sides = [plan.get('serving_at_start') or 'live']
        source = 'when the run started'
    else:
        source = 'when the run last read the balancers'
    if not sides:
        return ('Traffic: unknown (the run read no balancer); playbooks/status.yml shows which '
                'side serves.')
    names = {'live': '%s itself (its live side)' % stage,
             'upgrade': 'its twin %s_upgrade' % stage}
    if len(sides) > 1:
        return ('Traffic: the balancers DISAGREED %s (%s); a resume brings them to one side.'
                % (source, ' / '.join(names.get(s, s) for s in sides)))
    return 'Traffic: served by %s, %s.' % (names.get(sides[0], sides[0]), source)


class Watch:
    """What a run showed so far, and the advice when it stops without its recap."""

    def __init__(self):
        self.book = None          # the playbook's path as it can be run again
        self.name = None          # its base name without .yml
        self.extra = {}
        self.step = None          # '[5/12] cutover_to_twin'
        self.phase = None         # from the promotion's timeline fact
        self.plan = None
        self.lock_taken = False
        self.plan_recorded = False
        self.finished = False
        self.views = {}           # balancer -> the last lb_switch view of the stage

    def playbook(self, path):
        self.name = os.path.splitext(os.path.basename(path))[0]
        rel = os.path.relpath(path)
        self.book = rel if not rel.startswith('..') else path
        if self.name == 'rollback':
            self.book = os.path.join(os.path.dirname(self.book), 'promote.yml')

    def named(self, name):
        parsed = parse_step(name)
        if parsed and parsed[0] == parsed[1]:
            self.step = '[%d/%d] %s' % (parsed[0], parsed[2], parsed[3])

    def result(self, host, action, result, args=None):
        args = args or {}
        action = (action or '').split('.')[-1]
        facts = result.get('ansible_facts') or {}
        if isinstance(facts.get('promote_plan'), dict):
            self.plan = facts['promote_plan']
        timeline = facts.get('promote_timeline')
        if isinstance(timeline, list) and timeline and isinstance(timeline[-1], dict):
            self.phase = timeline[-1].get('phase')
        if facts.get('push_branding_lock_held'):
            self.lock_taken = True
        if action == 'promotion_state' and not result.get('failed'):
            if result.get('released') or args.get('lock') == 'released':
                self.lock_taken = False
            elif args.get('lock') == 'acquired':
                self.lock_taken = True
            if isinstance(result.get('state'), dict) and result['state'].get('plan'):
                self.plan_recorded = True
        if action in ('lb_switch', 'lb_cutover'):  # lb_cutover: the view after its last request
            for item in result.get('results') or [result]:
                if not isinstance(item, dict) or item.get('skipped'):
                    continue
                view = item.get('after') or item.get('before')
                if isinstance(view, dict) and view:
                    self.views[item.get('item') if isinstance(item.get('item'), str)
                               and 'results' in result else host] = view

    def stage(self):
        return ((self.plan or {}).get('stage') or self.extra.get('stage')
                or self.extra.get('to_stage') or '?')

    def advice(self, now=None):
        """The lines to print, or [] when there is nothing to say."""
        now = time.time() if now is None else now
        if self.finished or not self.name:
            return []
        if self.name in PROMOTE_BOOKS:
            return self._promote(now)
        if self.name == 'push_branding':
            return self._push()
        if self.name == 'site':
            return ['Interrupted: %s, in %s.' % (self.book, self.step or 'its first play'),
                    'site.yml moves no traffic and freezes no writes; each live side may be '
                    'half-configured where it stopped.',
                    'Next: ansible-playbook %s   (idempotent: brings every live side to its '
                    'configured state)' % self.book]
        return []

    def _promote(self, now):
        stage = self.stage()
        action = (self.plan or {}).get('action') or self.extra.get('action') or (
            self.name if self.name in ('rollback', 'restore') else 'run')
        step = self.step or 'the validation of the pipeline'
        if self.phase and (not self.step or self.phase not in self.step):
            step = '%s (the promotion recorded %s)' % (step, self.phase)
        lines = ['Interrupted: the %s of stage %s, in step %s.' % (
            {'run': 'promotion', 'resume': 'resume', 'rollback': 'rollback'}.get(action, action),
            stage, step)]
        base = 'ansible-playbook %s -e stage=%s' % (self.book, stage)
        if not self.lock_taken and not self.plan_recorded:
            lines += ['Nothing changed: the run stopped before it took the lock of %s.' % stage,
                      'Next: %s%s   (runs it again)' % (
                          base, '' if action in ('run', 'restore') else ' -e action=' + action)]
            return lines
        lines.append(traffic_line(stage, self.views, self.plan))
        lines.append(freeze_line(self.views, now))
        if not self.plan_recorded:
            lines += ['The lock of %s stays (its owner process is gone); the plan was not '
                      'recorded yet, so nothing in the pipeline changed.' % stage,
                      'Next: %s -e action=resume   (takes the lock over and says what is left)'
                      % base]
            return lines
        lines.append('The lock and the state of %s stay (its owner process is gone).' % stage)
        if action == 'rollback':
            lines.append('Next: %s -e action=rollback   (finishes the rollback)' % base)
        else:
            lines += ['Next: %s -e action=resume     (finishes it, from the side that serves)'
                      % base,
                      '  or: %s -e action=rollback   (undoes it)' % base]
        return lines

    def _push(self):
        target = self.stage()
        lines = [
            'Interrupted: push_branding of %s to %s, in %s.' % (
                self.extra.get('partner', '?'), target, self.step or 'its plan'),
            'Traffic: unchanged (a push moves no traffic and freezes no writes).']
        again = 'ansible-playbook %s %s' % (self.book, ' '.join(
            '-e %s=%s' % (key, self.extra[key]) for key in ('partner', 'from_stage', 'to_stage')
            if key in self.extra))
        if self.lock_taken:
            lines += ['The push held the promotion lock of %s, which stays: a promotion and '
                      'another push of %s refuse until it is removed. Check the partner\'s '
                      'pages, then remove the lock (rm -r <promotions>/%s.lock, on the first lb '
                      'host) once no push runs, and push again.' % (target, target, target),
                      'Next: %s' % again]
        else:
            lines += ['Nothing changed: the push stopped before it took the lock.',
                      'Next: %s   (runs it again)' % again]
        return lines


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'zopeops.stages.stop_advice'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super().__init__(display=display)
        self.watch = Watch()
        self._interrupted = False
        self._armed = False

    def _on_sigint(self, previous):
        def handler(signum, frame):
            self._interrupted = True
            if callable(previous):
                return previous(signum, frame)
            raise KeyboardInterrupt()
        return handler

    def v2_playbook_on_start(self, playbook):
        self.watch.playbook(playbook._file_name)
        if not self._armed:
            self._armed = True
            # Ansible's task queue manager has set its SIGINT handler by now (it raises
            # KeyboardInterrupt, which the CLI reports and exits on); ours notes the interrupt
            # first, and the advice is printed when the process exits.
            signal.signal(signal.SIGINT, self._on_sigint(signal.getsignal(signal.SIGINT)))
            atexit.register(self._at_exit)

    def v2_playbook_on_play_start(self, play):
        manager = play.get_variable_manager()
        if manager is not None:
            self.watch.extra = dict(manager.extra_vars or {})
        self.watch.named(play.get_name())

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.watch.named(task.get_name())

    def _result(self, result):
        self.watch.result(result._host.get_name(), result._task.action, result._result,
                          result._task.args)

    def v2_runner_on_ok(self, result):
        self._result(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result)

    def v2_playbook_on_stats(self, stats):
        self.watch.finished = True

    def _at_exit(self):
        if not self._interrupted:
            return
        lines = self.watch.advice()
        if lines:
            sys.stderr.write('\n' + '\n'.join(lines) + '\n')
            sys.stderr.flush()
