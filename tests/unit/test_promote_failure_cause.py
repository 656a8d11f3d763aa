"""roles/promote/tasks/failure_cause.yml, the rescue of the promotion's plays on several
hosts: a machine lost mid-step (unreachable: it runs no rescue) is named with its address, and
a task that failed is named with its message. Real ansible-playbook, local hosts plus one that
no SSH reaches (127.0.0.1 port 1 refuses at once)."""
from __future__ import annotations

import json
import re

import pytest

from support.ansible import run_playbook
from support.paths import VENV_BIN

PLAYBOOK = '''
- name: The conductor's timeline, as preflight starts it.
  hosts: lb
  gather_facts: false
  tasks:
    - name: Start the timeline.
      ansible.builtin.set_fact:
        promote_timeline: [{phase: live_stop, event: start, at: 0}]

- name: A step on several hosts.
  hosts: side
  gather_facts: false
  any_errors_fatal: true
  tasks:
    - name: The step.
      block:
        - name: Stop the clients.
          ansible.builtin.fail:
            msg: the clients did not stop
          when: fail_here | default(false)
        - name: Start the clients.
          ansible.builtin.command: 'true'
          changed_when: false
      rescue:
        - name: Say why.
          ansible.builtin.import_role: {name: zopeops.stages.promote, tasks_from: failure_cause.yml}
        - name: Show it.
          ansible.builtin.debug:
            msg: "FAILURE={{ promote_failure | to_json }}"
          run_once: true
'''


def failure_of(tmp_path, side_hosts):
    local = {'ansible_connection': 'local', 'ansible_python_interpreter': str(VENV_BIN / 'python')}
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(json.dumps({'all': {'children': {
        'lb': {'hosts': {'conductor': local}},
        'side': {'hosts': side_hosts}}}}))
    playbook = tmp_path / 'step.yml'
    playbook.write_text(PLAYBOOK)
    proc = run_playbook(str(playbook), inventory, timeout=120)
    # The callback wraps long lines at spaces: undone before the JSON is read.
    shown = re.search(r"FAILURE=(\{.*?\})'", ' '.join(proc.stdout.split()))
    assert shown, proc.stdout[-4000:]
    return json.loads(shown.group(1))


@pytest.mark.parametrize('how', ['lost', 'failed'])
def test_the_rescue_names_a_lost_machine_or_the_failed_task(tmp_path, how):
    local = {'ansible_connection': 'local', 'ansible_python_interpreter': str(VENV_BIN / 'python')}
    hosts = {'app1': local, 'app2': dict(local)}
    if how == 'lost':
        hosts['app3'] = {'ansible_connection': 'ssh', 'ansible_host': '127.0.0.1',
                         'ansible_port': 1, 'ansible_ssh_common_args': '-o ConnectTimeout=5'}
    else:
        hosts['app2']['fail_here'] = True
    failure = failure_of(tmp_path, hosts)
    assert failure['step'] == 'live_stop'
    if how == 'lost':
        assert failure['task'] == '?'
        assert failure['message'] == ('Lost during the step (did not answer over SSH): app3 on '
                                      'machine 127.0.0.1.')
    else:
        assert failure['task'] == 'Stop the clients.'
        assert failure['message'] == 'the clients did not stop'
