"""The steps stdout callback: its parsing and timeline on fixed data, and a real run of a small
playbook shaped like promote.yml (plays and tasks named "[N/T] step: ...")."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap

from ansible_collections.zopeops.stages.plugins.callback.steps import (
    clock, log_path, parse_step, timeline_lines)
from support.paths import ANSIBLE_PLAYBOOK, REPO

PLAYBOOK = textwrap.dedent('''\
    - name: Validate the inputs.
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Nothing to see.
          ansible.builtin.set_fact: {x: 1}

    - name: "[1/4] preflight: inputs and plan"
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Wait a little.
          ansible.builtin.command: sleep 0.3
          changed_when: false

    - name: "[2-3/4] twin_code, twin_data: bring up the twin"
      hosts: localhost
      gather_facts: false
      tasks:
        - name: "[2/4] twin_code: the twin runs the revision."
          ansible.builtin.set_fact: {y: 1}
        - name: "[3/4] twin_data: the twin holds the data."
          ansible.builtin.debug: {msg: "skipped"}
          when: false

    - name: "[4/4] finish: summary"
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Show the summary.
          ansible.builtin.debug:
            msg: ["Promoted test from a to b.", "Writes: frozen 0.2 s"]
        - name: A failure that is handled.
          ansible.builtin.fail: {msg: "expected and ignored"}
          ignore_errors: true
        - name: A failure that is not.
          ansible.builtin.fail: {msg: "the twin did not answer"}
    ''')


def test_parse_step():
    assert parse_step('[3/12] twin_data: the twin holds a snapshot.') == (
        3, 3, 12, 'twin_data', 'the twin holds a snapshot.')
    assert parse_step('[2-4/12] twin_code, twin_data, twin_start: bring up the twin')[:4] == (
        2, 4, 12, None)
    assert parse_step('Record the step.') is None and parse_step(None) is None


def test_timeline_lines_and_clock():
    phases = [{'label': '[1/3] preflight', 'started': 10.0, 'active': True},
              {'label': '[2/3] twin_code', 'started': 12.5, 'active': False},
              {'label': '[3/3] finish', 'started': 13.0, 'active': True, 'failed': True}]
    assert timeline_lines(phases, 20.0) == [
        '  [1/3] preflight      2.5 s',
        '  [2/3] twin_code      0.5 s  (skipped)',
        '  [3/3] finish         7.0 s  FAILED']
    assert clock(125.4) == '2:05' and timeline_lines([], 1.0) == []


def test_a_run_prints_a_page_and_logs_everything(tmp_path):
    book = tmp_path / 'promote_like.yml'
    book.write_text(PLAYBOOK)
    log = tmp_path / 'logs' / 'run.log'
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_STDOUT_CALLBACK='zopeops.stages.steps', ZOPEOPS_STEPS_LOG=str(log))
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), '-i', 'localhost,', '-c', 'local',
                           '-e', 'ansible_python_interpreter=' + sys.executable, str(book)],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    out = proc.stdout
    assert proc.returncode == 2, out + proc.stderr
    lines = out.splitlines()
    # Each play and each step once, in order, with the time since the start.
    starts = [line for line in lines if re.match(r'^\d+:\d\d ', line)]
    assert [s.split(' ', 1)[1] for s in starts] == [
        'Validate the inputs.', '[1/4] preflight: inputs and plan',
        '[2/4] twin_code: the twin runs the revision.',
        '[3/4] twin_data: the twin holds the data.', '[4/4] finish: summary']
    assert '    Promoted test from a to b.' in lines and '    Writes: frozen 0.2 s' in lines
    failed = [line for line in lines if line.startswith('    FAILED on')]
    assert failed == ['    FAILED on localhost: A failure that is not.: the twin did not answer']
    # The timeline: a line per step, the skipped and the failed one marked, then the total.
    timeline = lines[lines.index('Timeline of promote_like:') + 1:]
    assert [t.split()[:2] for t in timeline[:4]] == [
        ['[1/4]', 'preflight'], ['[2/4]', 'twin_code'], ['[3/4]', 'twin_data'],
        ['[4/4]', 'finish']]
    assert float(timeline[0].split()[2]) >= 0.3
    assert timeline[2].endswith('(skipped)') and timeline[3].endswith('FAILED')
    assert re.match(r'^promote_like FAILED on localhost in \d+:\d\d \([\d.]+ s\)\.$', timeline[4])
    assert lines[-1] == 'Full output: %s' % log
    assert 'TASK [' not in out and 'PLAY RECAP' not in out
    # The log has what the default callback prints.
    text = log.read_text()
    for expected in ('PLAY [[1/4] preflight: inputs and plan]', 'TASK [Wait a little.]',
                     'the twin did not answer', '...ignoring', 'PLAY RECAP'):
        assert expected in text
    assert len(lines) < 25


def test_log_path(tmp_path):
    """No option or a folder: a new file named after the playbook (once it is known); a
    file name is used as given, '~' expanded."""
    assert log_path('', None) is None and log_path(str(tmp_path), None) is None
    named = log_path(str(tmp_path), 'promote')
    assert os.path.dirname(named) == str(tmp_path)
    assert re.match(r'^zopeops-promote-\d{8}T\d{6}-\d+\.log$', os.path.basename(named))
    assert os.path.dirname(log_path('', 'status')) == os.path.abspath(tempfile.gettempdir())
    assert log_path(str(tmp_path / 'x.log'), None) == str(tmp_path / 'x.log')
    assert log_path('~/x.log', 'p') == os.path.join(os.path.expanduser('~'), 'x.log')


def test_a_run_without_a_log_option_writes_a_temporary_log(tmp_path):
    """Without ZOPEOPS_STEPS_LOG the run ends normally (it once ended with rc 250 and a
    traceback: the empty path was taken for the current folder) and names its log."""
    book = tmp_path / 'small.yml'
    book.write_text(PLAYBOOK.split('\n\n- name: "[2-3/4]')[0] + '\n')
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_STDOUT_CALLBACK='zopeops.stages.steps', TMPDIR=str(tmp_path))
    env.pop('ZOPEOPS_STEPS_LOG', None)
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), '-i', 'localhost,', '-c', 'local',
                           '-e', 'ansible_python_interpreter=' + sys.executable, str(book)],
                          cwd=str(REPO), env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stderr
    logs = list(tmp_path.glob('zopeops-small-*.log'))
    assert len(logs) == 1 and proc.stdout.splitlines()[-1] == 'Full output: %s' % logs[0]
    assert 'TASK [Wait a little.]' in logs[0].read_text()
