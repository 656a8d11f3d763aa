# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
name: push_report
type: notification
short_description: Reports a branding push started from the push page back to that page
version_added: 0.9.0
author:
  - zopeops.stages developers (@zopeops)
description:
  - "Active only in a run of C(playbooks/push_branding.yml) given the extra variable
    C(push_branding_request_id) (the push engine's runs, see C(docs/push_branding.md));
    any other run is left alone."
  - "Posts the run's progress to the push page on the source stage,
    C(<source stage URL>/zopeops_push_report), with C(Authorization: Bearer <zopeops_push_secret>):
    state C(running) with the current step when the run starts and as its tasks go (at most one
    report a second, and at least one every 30 seconds while a task runs long: the page takes
    a run silent for longer than its C(silence_timeout) as stopped by force), then C(done),
    C(failed) or C(refused) with the result."
  - "The source stage's URL is its balancer frontend (the first C(lb) host's address and the
    stage's C(zopeops_lb_port)), or C(push_branding_report_url) when the inventory sets it; it is
    never taken from the request."
  - "A run that fails before it took the target's lock changed nothing: it is C(refused) (an
    unknown partner, a stage not downstream, a lock held by a promotion or another push).
    A failure after that is C(failed). The result is the ledger line of the push
    (C(push_branding_entry)), the check's C(push_branding_check_result), or C({msg}) of the
    failure."
  - "Each report carries the run's output so far (plays, tasks, results and failures),
    the secret and URL credentials redacted, at most 200 kB (the tail)."
  - "A page that cannot be reached is warned about once; the run goes on."
requirements:
  - enabled in callbacks_enabled (the push engine's environment does it for its runs)
'''

import json
import re
import threading
import time
import urllib.error

from ansible.module_utils import urls
from ansible.plugins.callback import CallbackBase
from ansible.template import Templar, trust_as_template

from ansible_collections.zopeops.stages.plugins.module_utils.redact import Scrubber

MAX_LOG = 200 * 1024
REPORT_EVERY = 1.0
# While a task runs long, the run still says it lives this often (the page's silence_timeout,
# 180 s by default, is several of these).
HEARTBEAT = 30.0
# The source stage's frontend, from the inventory: the first lb host and the stage's port.
DEFAULT_URL = (
    "{{ push_branding_report_url | default('http://' ~ (hostvars[groups['lb'][0]].ansible_host"
    " | default(groups['lb'][0])) ~ ':' ~ hostvars[groups[from_stage][0]].zopeops_lb_port, true) }}")


# A role's task is named "<role> : <name>"; the page shows the name.
ROLE_PREFIX = re.compile(r'^[\w.]+ : ')


def step_name(name):
    return ROLE_PREFIX.sub('', name or '')


def utc_now():
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


def final_state(failed, lock_taken):
    """done, or refused (failed before the target's lock: nothing changed), or failed."""
    if not failed:
        return 'done'
    return 'failed' if lock_taken else 'refused'


class Report:
    """One push page request's run: what is posted, and the text of the run so far."""

    def __init__(self, extra, url, secret):
        self.request_id = str(extra['push_branding_request_id'])
        check = extra.get('push_branding_check_only', False)
        self.action = 'check' if str(check).lower() in ('true', '1', 'yes') else 'push'
        self.partner = extra.get('partner')
        self.to_stage = extra.get('to_stage')
        self.url = url.rstrip('/') + '/zopeops_push_report'
        self.secret = secret
        self.scrub = Scrubber([secret])
        self.lines = []
        self.size = 0
        self.step = ''
        self.last_sent = 0.0
        self.facts = {}
        self.failure = None
        self.warned = False
        # The heartbeat thread and the run's thread share the log and the connection.
        self.lock = threading.RLock()
        self.ended = threading.Event()
        self.heart = None

    def log(self, line):
        line = self.scrub.text(line)
        with self.lock:
            self.lines.append(line)
            self.size += len(line) + 1
            while self.size > MAX_LOG and len(self.lines) > 1:
                self.size -= len(self.lines.pop(0)) + 1

    def body(self, state, result=None):
        with self.lock:
            log = '\n'.join(self.lines)[-MAX_LOG:]
        body = {'request_id': self.request_id, 'action': self.action, 'partner': self.partner,
                'to_stage': self.to_stage, 'state': state, 'step': self.step, 'at': utc_now(),
                'log': log}
        if result is not None:
            body['result'] = self.scrub.deep(result)
        return body

    def beat(self, display=None, every=HEARTBEAT):
        """Start reporting `running` at least every ``every`` seconds until end()."""
        if self.heart is not None:
            return

        def loop():
            while not self.ended.wait(every / 3):
                if time.monotonic() - self.last_sent >= every:
                    with self.lock:
                        if not self.ended.is_set():
                            self.send('running', display=display)

        self.heart = threading.Thread(target=loop, name='push_report-heartbeat', daemon=True)
        self.heart.start()

    def end(self, state, result, display=None):
        """The final report; the heartbeat stops first (no `running` after it)."""
        with self.lock:
            self.ended.set()
            self.send(state, result, display=display)

    def send(self, state, result=None, display=None):
        self.last_sent = time.monotonic()
        try:
            response = urls.open_url(
                self.url, data=json.dumps(self.body(state, result)).encode('utf-8'),
                method='POST', timeout=5, follow_redirects='none',
                headers={'Content-Type': 'application/json',
                         'Authorization': 'Bearer %s' % self.secret})
            response.read()
            response.close()
            return True
        except (urllib.error.URLError, urls.ConnectionError, OSError, ValueError) as error:
            if display is not None and not self.warned:
                self.warned = True
                display.warning('push_report: the push page at %s did not take the report: %s'
                                % (self.url, self.scrub.text(str(error))))
            return False

    def read_ledger_line(self, path):
        """The ledger line of this push as promotion_state wrote it (on the conductor, where
        the engine runs this callback), instead of the entry the role gave it."""
        run_id = (self.facts.get('push_branding_entry') or {}).get('run_id')
        try:
            with open(path, encoding='utf-8') as handle:
                lines = handle.readlines()[-50:]
        except OSError:
            return
        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if run_id and isinstance(entry, dict) and entry.get('run_id') == run_id:
                self.facts['push_branding_entry'] = entry
                return

    def result(self, failed):
        if failed:
            return {'msg': self.failure or 'The run failed (see the log).'}
        if self.action == 'check':
            return self.facts.get('push_branding_check_result') or {}
        return self.facts.get('push_branding_entry') or {}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'notification'
    CALLBACK_NAME = 'zopeops.stages.push_report'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super().__init__(display=display)
        self.report = None
        self.looked = False
        self.lock_taken = False

    def _setup(self, play):
        """The first play: a push page's run (push_branding_request_id) gets a Report."""
        self.looked = True
        manager = play.get_variable_manager()
        extra = dict(manager.extra_vars or {}) if manager is not None else {}
        if not extra.get('push_branding_request_id'):
            return
        try:
            lb_host = manager._inventory.get_groups_dict()['lb'][0]
            variables = manager.get_vars(play=play, host=manager._inventory.get_host(lb_host))
            templar = Templar(loader=manager._loader, variables=variables)
            url = str(templar.template(trust_as_template(DEFAULT_URL)))
            secret = str(templar.template(trust_as_template('{{ zopeops_push_secret }}')))
        except Exception as error:  # pylint: disable=broad-exception-caught
            self._display.warning('push_report: cannot report to the push page (%s); set '
                                  'zopeops_push_secret and the source stage\'s zopeops_lb_port.'
                                  % type(error).__name__)
            return
        self.report = Report(extra, url, secret)

    def v2_playbook_on_play_start(self, play):
        if not self.looked:
            self._setup(play)
        if self.report is None:
            return
        self.report.step = play.get_name()
        self.report.log('PLAY [%s]' % play.get_name())
        self.report.send('running', display=self._display)
        self.report.beat(display=self._display)

    def v2_playbook_on_task_start(self, task, is_conditional):
        if self.report is None:
            return
        self.report.step = step_name(task.get_name())
        self.report.log('TASK [%s]' % task.get_name())
        if time.monotonic() - self.report.last_sent >= REPORT_EVERY:
            self.report.send('running', display=self._display)

    def v2_runner_on_ok(self, result):
        if self.report is None:
            return
        facts = result._result.get('ansible_facts') or {}
        for name in ('push_branding_entry', 'push_branding_check_result'):
            if name in facts:
                self.report.facts[name] = facts[name]
        if isinstance(result._result.get('ledger'), str):
            self.report.read_ledger_line(result._result['ledger'])
        if facts.get('push_branding_lock_held') is True:
            self.lock_taken = True
        shown = result._result.get('msg') if result._task.action in (
            'debug', 'ansible.builtin.debug') else None
        self.report.log('%s: [%s]%s' % ('changed' if result._result.get('changed') else 'ok',
                                        result._host.get_name(),
                                        ' => %s' % shown if shown else ''))

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if self.report is None:
            return
        message = result._result.get('msg') or result._result.get('stderr') or 'failed'
        if ignore_errors:
            self.report.log('failed (ignored): [%s] => %s' % (result._host.get_name(), message))
            return
        self.report.failure = ' '.join(str(message).split())
        self.report.log('fatal: [%s]: FAILED! => %s' % (result._host.get_name(), message))

    def v2_runner_on_unreachable(self, result):
        self.v2_runner_on_failed(result)

    def v2_playbook_on_stats(self, stats):
        if self.report is None:
            return
        failed = any(stats.failures.values()) or any(stats.dark.values())
        self.report.log('PLAY RECAP ' + ', '.join(
            '%s: %s' % (host, stats.summarize(host)) for host in sorted(stats.processed)))
        state = final_state(failed, self.lock_taken)
        self.report.end(state, self.report.result(failed), display=self._display)
