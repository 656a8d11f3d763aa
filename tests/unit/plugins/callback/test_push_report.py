"""The push_report callback in real ansible-playbook runs of small playbooks shaped like
push_branding.yml, reporting to a local stand-in for the push page."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time

from ansible_collections.zopeops.stages.plugins.callback import push_report
from support.paths import ANSIBLE_PLAYBOOK, REPO
from support.push_reports import ReportSink

Report, final_state, step_name = push_report.Report, push_report.final_state, push_report.step_name

SECRET = 'sec-' + 'k3' * 16
INVENTORY = textwrap.dedent('''\
    all:
      children:
        lb: {hosts: {lb-local: {ansible_connection: local, ansible_host: 127.0.0.1}}}
        dev: {hosts: {dev-local: {ansible_connection: local}}, vars: {zopeops_lb_port: 1}}
    ''')
PLAYBOOK = textwrap.dedent('''\
    - name: Validate the pipeline.
      hosts: all
      gather_facts: false
      tasks:
        - name: Nothing to see.
          ansible.builtin.set_fact: {x: 1}

    - name: Push one partner's branding.
      hosts: lb[0]
      gather_facts: false
      tasks:
        - name: Refuse an unknown partner.
          ansible.builtin.assert:
            that: partner != 'hooli'
            fail_msg: "Partner 'hooli' is not in zopeops_partners: nothing was pushed. {{ zopeops_push_secret }}"
            quiet: true
        - name: Take the lock.
          ansible.builtin.set_fact: {push_branding_lock_held: true}
        - name: Fail after the lock.
          ansible.builtin.fail: {msg: "the pages fail"}
          when: fail_after | default(false) | bool
        - name: Describe the ledger line.
          ansible.builtin.set_fact:
            push_branding_entry: {partner: "{{ partner }}", result: done, by: webdev, via: page}
            push_branding_check_result: {differs: true, lines: [a], last_push: null, target_locked_by: null}
    ''')


def run(tmp_path, extra, callbacks='zopeops.stages.push_report'):
    (tmp_path / 'hosts.yml').write_text(INVENTORY)
    (tmp_path / 'push.yml').write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_CALLBACKS_ENABLED=callbacks)
    return subprocess.run([str(ANSIBLE_PLAYBOOK), '-i', str(tmp_path / 'hosts.yml'),
                           str(tmp_path / 'push.yml'), '-e', json.dumps(extra)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def request(sink, **extra):
    return dict({'push_branding_request_id': 'b' * 32, 'partner': 'acme', 'from_stage': 'dev',
                 'to_stage': 'beta', 'zopeops_push_secret': SECRET,
                 'push_branding_report_url': sink.url}, **extra)


def test_step_name_drops_the_role():
    assert step_name('zopeops.stages.push_branding : Take the lock.') == 'Take the lock.'
    assert step_name('Validate the pipeline.') == 'Validate the pipeline.'


def test_final_state():
    assert final_state(False, False) == 'done' and final_state(False, True) == 'done'
    assert final_state(True, False) == 'refused' and final_state(True, True) == 'failed'


def test_a_push_reports_running_steps_then_done_with_the_ledger_line(tmp_path):
    with ReportSink(SECRET) as sink:
        proc = run(tmp_path, request(sink))
    assert proc.returncode == 0, proc.stdout[-3000:]
    reports = sink.of('b' * 32)
    assert reports[0]['state'] == 'running' and reports[0]['step'] == 'Validate the pipeline.'
    assert [r['state'] for r in reports[:-1]] == ['running'] * (len(reports) - 1)
    end = reports[-1]
    assert end['state'] == 'done' and end['action'] == 'push', end
    assert end['result'] == {'partner': 'acme', 'result': 'done', 'by': 'webdev', 'via': 'page'}
    assert (end['partner'], end['to_stage']) == ('acme', 'beta') and end['at'].endswith('Z')
    assert 'TASK [Take the lock.]' in end['log'] and 'PLAY RECAP' in end['log']
    assert sink.refused == 0


def test_a_check_reports_the_check_result(tmp_path):
    with ReportSink(SECRET) as sink:
        proc = run(tmp_path, request(sink, push_branding_check_only=True))
    assert proc.returncode == 0, proc.stdout[-3000:]
    end = sink.final('b' * 32)
    assert end['action'] == 'check' and end['state'] == 'done'
    assert end['result'] == {'differs': True, 'lines': ['a'], 'last_push': None,
                             'target_locked_by': None}


def test_a_failure_before_the_lock_is_refused_and_the_secret_never_sent(tmp_path):
    with ReportSink(SECRET) as sink:
        proc = run(tmp_path, request(sink, partner='hooli'))
    assert proc.returncode != 0
    end = sink.final('b' * 32)
    assert end['state'] == 'refused', end
    assert end['result']['msg'].startswith("Partner 'hooli' is not in zopeops_partners")
    assert end['step'] == 'Refuse an unknown partner.'
    sent = json.dumps(sink.of('b' * 32))
    assert SECRET not in sent and '********' in sent


def test_a_failure_after_the_lock_is_failed(tmp_path):
    with ReportSink(SECRET) as sink:
        proc = run(tmp_path, request(sink, fail_after=True))
    assert proc.returncode != 0
    end = sink.final('b' * 32)
    assert end['state'] == 'failed' and end['result'] == {'msg': 'the pages fail'}, end


def test_without_a_request_id_nothing_is_reported(tmp_path):
    with ReportSink(SECRET) as sink:
        extra = request(sink)
        del extra['push_branding_request_id']
        proc = run(tmp_path, extra)
    assert proc.returncode == 0 and sink.reports == [] and sink.refused == 0


def test_an_unreachable_page_warns_once_and_the_run_goes_on(tmp_path):
    with ReportSink(SECRET) as sink:
        url = sink.url
    proc = run(tmp_path, dict(request(sink), push_branding_report_url=url))
    assert proc.returncode == 0, proc.stdout[-3000:]
    said = ' '.join((proc.stdout + proc.stderr).split())
    assert said.count('push_report: the push page at %s/zopeops_push_report did not take' % url) == 1


def test_the_heartbeat_says_the_run_lives_while_a_task_runs_long_and_stops_at_the_end():
    with ReportSink(SECRET) as sink:
        report = Report({'push_branding_request_id': 'c' * 32, 'partner': 'acme',
                         'to_stage': 'beta'}, sink.url, SECRET)
        report.step = 'Copy the branding.'
        report.send('running')
        report.beat(every=0.3)
        time.sleep(1.5)
        report.end('done', {'result': 'pushed'})
        time.sleep(0.5)
        reports = sink.of('c' * 32)
    states = [r['state'] for r in reports]
    assert states[-1] == 'done' and states.count('done') == 1, states
    # The first report, then at least three beats in 1.5 s, and nothing after the end.
    assert states[:-1] == ['running'] * (len(states) - 1) and len(states) >= 5, states
    assert all(r['step'] == 'Copy the branding.' for r in reports)
    report.heart.join(2)
    assert not report.heart.is_alive()
