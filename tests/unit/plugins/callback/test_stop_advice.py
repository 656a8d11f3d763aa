"""The stop_advice callback: the advice on fixed inputs, and a real Ctrl-C (SIGINT) of a small
playbook shaped like promote.yml that takes a real lock."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from ansible_collections.zopeops.stages.plugins.callback.stop_advice import Watch, freeze_line
from support.paths import ANSIBLE_PLAYBOOK, REPO

NOW = 1_800_000_000


def test_freeze_line_with_deadline_held_passed_and_missing_keys():
    assert freeze_line({'lb1': {'frozen': True, 'frozen_until': NOW + 9.5},
                        'lb2': {'frozen': True, 'frozen_until': NOW + 4}}, NOW) == (
        'Writes: FROZEN on lb1, lb2 until 08:00:09 UTC (in 10 s); the freeze lets writes '
        'through by itself then.')
    assert freeze_line({'lb1': {'frozen': True, 'frozen_held': True}}, NOW).startswith(
        'Writes: FROZEN without a deadline (held) on lb1')
    assert 'deadline has passed' in freeze_line(
        {'lb1': {'frozen': True, 'frozen_until': NOW - 1}}, NOW)
    # lb_switch without the lease keys: frozen, no deadline known.
    assert freeze_line({'lb1': {'frozen': True}}, NOW) == (
        'Writes: FROZEN on lb1 (no deadline was reported): a resume or a rollback lifts the '
        'freeze.')
    assert freeze_line({'lb1': {'active': 'live'}}, NOW) == (
        'Writes: not frozen, as the run last saw the balancers.')
    assert 'read no balancer' in freeze_line({}, NOW)


def _promote_watch():
    watch = Watch()
    watch.playbook(os.path.join(os.getcwd(), 'playbooks', 'promote.yml'))
    watch.extra = {'stage': 'test'}
    watch.named('[1/12] preflight: inputs, lock, balancers, plan (test)')
    watch.result('lb1', 'zopeops.stages.promotion_state', {'previous': {}}, {'lock': 'acquired'})
    watch.result('lb1', 'zopeops.stages.lb_switch', {'before': {'active': 'live', 'frozen': False}})
    watch.result('lb1', 'ansible.builtin.set_fact', {'ansible_facts': {'promote_plan': {
        'stage': 'test', 'action': 'run', 'serving_at_start': 'live'}}})
    watch.result('lb1', 'zopeops.stages.promotion_state',
                 {'state': {'status': 'running', 'plan': {'stage': 'test'}}}, {})
    return watch


def test_interrupted_at_the_switch_with_traffic_on_the_twin_and_writes_frozen():
    watch = _promote_watch()
    watch.named('[5/12] cutover_to_twin: the twin holds every write, then takes the traffic')
    watch.result('lb1', 'lb_switch', {'results': [
        {'item': 'lb1', 'after': {'active': 'upgrade', 'frozen': True, 'frozen_until': NOW + 30}},
        {'item': 'lb2', 'after': {'active': 'upgrade', 'frozen': True, 'frozen_until': NOW + 30}},
        {'item': 'lb3', 'skipped': True}]})
    assert watch.advice(NOW) == [
        'Interrupted: the promotion of stage test, in step [5/12] cutover_to_twin.',
        'Traffic: served by its twin test_upgrade, when the run last read the balancers.',
        'Writes: FROZEN on lb1, lb2 until 08:00:30 UTC (in 30 s); the freeze lets writes '
        'through by itself then.',
        'The lock and the state of test stay (its owner process is gone).',
        'Next: ansible-playbook playbooks/promote.yml -e stage=test -e action=resume     '
        '(finishes it, from the side that serves)',
        '  or: ansible-playbook playbooks/promote.yml -e stage=test -e action=rollback   '
        '(undoes it)']


def test_interrupted_before_the_lock_and_after_the_recap():
    watch = Watch()
    watch.playbook('playbooks/rollback.yml')
    watch.extra = {'stage': 'prod'}
    watch.named('[1/12] preflight: inputs, lock, balancers, plan (prod)')
    assert watch.advice(NOW) == [
        'Interrupted: the rollback of stage prod, in step [1/12] preflight.',
        'Nothing changed: the run stopped before it took the lock of prod.',
        'Next: ansible-playbook playbooks/promote.yml -e stage=prod -e action=rollback   '
        '(runs it again)']
    watch.finished = True
    assert watch.advice(NOW) == []


def test_an_interrupted_restore_says_where_the_traffic_is_and_what_to_run():
    watch = Watch()
    watch.playbook('playbooks/restore.yml')
    watch.extra = {'stage': 'beta'}
    watch.named('[1/12] preflight: inputs, lock, balancers, plan (beta)')
    assert watch.advice(NOW) == [
        'Interrupted: the restore of stage beta, in step [1/12] preflight.',
        'Nothing changed: the run stopped before it took the lock of beta.',
        'Next: ansible-playbook playbooks/restore.yml -e stage=beta   (runs it again)']
    watch.result('lb1', 'zopeops.stages.promotion_state', {'previous': {}}, {'lock': 'acquired'})
    watch.result('lb1', 'zopeops.stages.lb_switch', {'before': {'active': 'live', 'frozen': False}})
    watch.result('lb1', 'ansible.builtin.set_fact', {'ansible_facts': {'promote_plan': {
        'stage': 'beta', 'action': 'restore', 'serving_at_start': 'live'}}})
    watch.result('lb1', 'zopeops.stages.promotion_state',
                 {'state': {'status': 'running', 'plan': {'stage': 'beta'}}}, {})
    watch.named('[5/12] cutover_to_twin: the twin holds every write, then takes the traffic')
    watch.result('lb1', 'lb_switch', {'results': [
        {'item': 'lb1', 'after': {'active': 'upgrade', 'frozen': False}}]})
    advice = watch.advice(NOW)
    assert advice[0] == 'Interrupted: the restore of stage beta, in step [5/12] cutover_to_twin.'
    assert advice[1] == 'Traffic: served by its twin beta_upgrade, when the run last read the balancers.'
    assert advice[-2:] == [
        'Next: ansible-playbook playbooks/restore.yml -e stage=beta -e action=resume     '
        '(finishes it, from the side that serves)',
        '  or: ansible-playbook playbooks/restore.yml -e stage=beta -e action=rollback   '
        '(undoes it)']


def test_a_lock_released_and_the_other_playbooks():
    watch = _promote_watch()
    watch.result('lb1', 'promotion_state', {'released': True}, {'lock': 'released'})
    assert not watch.lock_taken
    site = Watch()
    site.playbook('playbooks/site.yml')
    assert site.advice(NOW)[-1].startswith('Next: ansible-playbook playbooks/site.yml')
    push = Watch()
    push.playbook('playbooks/push_branding.yml')
    push.extra = {'partner': 'acme', 'from_stage': 'beta', 'to_stage': 'prod'}
    push.result('lb1', 'set_fact', {'ansible_facts': {'push_branding_lock_held': True}})
    lines = push.advice(NOW)
    assert 'promotion lock of prod, which stays' in lines[2]
    assert lines[-1] == ('Next: ansible-playbook playbooks/push_branding.yml -e partner=acme '
                         '-e from_stage=beta -e to_stage=prod')


PLAYBOOK = textwrap.dedent('''\
    - name: "[1/12] preflight: inputs, lock ({{ stage }})"
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Take the lock.
          zopeops.stages.promotion_state:
            dir: "{{ state_dir }}"
            stage: "{{ stage }}"
            run_id: r1
            lock: acquired
            purpose: run
            owner: {owner: me, action: run}
        - name: Make the plan.
          ansible.builtin.set_fact:
            promote_plan: {stage: "{{ stage }}", action: run, serving_at_start: live}
        - name: Record the plan.
          zopeops.stages.promotion_state:
            dir: "{{ state_dir }}"
            stage: "{{ stage }}"
            run_id: r1
            initial: {status: running, action: run, plan: "{{ promote_plan }}"}
            event: {phase: preflight, event: end}

    - name: "[2-4/12] twin_code, twin_data, twin_start: bring up the twin"
      hosts: localhost
      gather_facts: false
      tasks:
        - name: "[2/12] twin_code: the twin runs the revision."
          ansible.builtin.command: sleep 60
    ''')


def test_a_real_ctrl_c_ends_with_the_advice(tmp_path):
    """SIGINT to a real ansible-playbook (as Ctrl-C sends it): Ansible says "User interrupted
    execution", and the last lines are the advice."""
    (tmp_path / 'playbooks').mkdir()
    (tmp_path / 'playbooks' / 'promote.yml').write_text(PLAYBOOK)
    out = tmp_path / 'out.txt'
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1')
    with open(out, 'w', encoding='utf-8') as stdout:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            [str(ANSIBLE_PLAYBOOK), '-i', 'localhost,', '-c', 'local',
             '-e', 'ansible_python_interpreter=' + sys.executable, '-e', 'stage=test',
             '-e', 'state_dir=%s' % (tmp_path / 'state'), 'playbooks/promote.yml'],
            cwd=str(tmp_path), env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while 'twin_code' not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert 'twin_code' in out.read_text(), out.read_text()
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 99, err
    lines = err.strip().splitlines()
    assert lines[-6:] == [
        'Interrupted: the promotion of stage test, in step [2/12] twin_code.',
        'Traffic: served by test itself (its live side), when the run started.',
        'Writes: the run read no balancer; playbooks/status.yml shows whether they are frozen.',
        'The lock and the state of test stay (its owner process is gone).',
        'Next: ansible-playbook playbooks/promote.yml -e stage=test -e action=resume     '
        '(finishes it, from the side that serves)',
        '  or: ansible-playbook playbooks/promote.yml -e stage=test -e action=rollback   '
        '(undoes it)']
    assert 'User interrupted execution' in err
    assert (tmp_path / 'state' / 'test.lock').is_dir()
