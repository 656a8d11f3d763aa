# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmarks only (bench/): one JSON line per task result, with its wall time.

Enabled by bench/promotion_bench.py through ANSIBLE_CALLBACK_PLUGINS=bench/callback_plugins,
ANSIBLE_CALLBACKS_ENABLED=bench_timings and BENCH_TIMINGS_FILE=<path>. It does not change
what the stdout callback prints. A task's time runs from its start (as the controller sees
it) to each host's result, so it includes templating, the module's start and its own work.
"""
from __future__ import annotations

DOCUMENTATION = r'''
name: bench_timings
type: aggregate
short_description: Per-task wall times as JSON lines, for the benchmarks
description:
  - Appends one JSON line per task result to the file named by C(BENCH_TIMINGS_FILE).
requirements:
  - enabled in callbacks_enabled
'''

import json
import os
import time

from ansible.plugins.callback import CallbackBase

# Result keys worth keeping for the profile (small values only).
KEEP = ('duration', 'transactions', 'last_tid', 'frozen_at', 'switched_at', 'unfrozen_at',
        'elapsed_seconds', 'changed', 'bytes_copied', 'size', 'tid', 'seconds', 'passes',
        'blobs', 'bytes')


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_timings'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get('BENCH_TIMINGS_FILE')
        self._task_started = {}
        self._play = None

    def _write(self, record):
        if not self._path:
            return
        with open(self._path, 'a', encoding='utf-8') as handle:
            handle.write(json.dumps(record, sort_keys=True, default=str) + '\n')

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_started[task._uuid] = time.time()

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start

    def _result(self, result, status):
        task = result._task
        started = self._task_started.get(task._uuid)
        now = time.time()
        data = result._result or {}
        record = {'play': self._play, 'task': task.get_name(), 'action': task.action,
                  'host': result._host.get_name(), 'status': status, 'start': started,
                  'end': now, 'seconds': None if started is None else round(now - started, 3)}
        record['result'] = {key: data[key] for key in KEEP if key in data and isinstance(
            data[key], (int, float, str, bool, type(None)))}
        if isinstance(data.get('seconds'), dict):  # preflight_reads: each read's seconds
            record['result']['seconds'] = data['seconds']
        if isinstance(data.get('steps'), dict):  # lb_cutover: each step's seconds inside it
            record['result']['steps'] = data['steps']
            for step in ('gap', 'final', 'late'):
                if isinstance(data.get(step), dict):
                    record['result'][step] = {k: data[step].get(k)
                                              for k in ('seconds', 'passes', 'transactions')}
        if 'results' in data:  # a loop: keep each item's module duration
            record['items'] = [{k: item.get(k) for k in KEEP if k in item}
                               for item in data['results'] if isinstance(item, dict)]
        self._write(record)

    def v2_runner_on_ok(self, result):
        self._result(result, 'ok')

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result(result, 'failed')

    def v2_runner_on_skipped(self, result):
        pass

    def v2_runner_on_unreachable(self, result):
        self._result(result, 'unreachable')
