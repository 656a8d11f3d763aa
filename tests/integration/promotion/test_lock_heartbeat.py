"""The promotion lock's heartbeat, with the real action plugin and ansible-playbook.

A tiny playbook against localhost takes a lock in a temporary folder, pauses, and releases
it. While it pauses the heartbeat file is renewed; when the playbook's whole process group is
SIGKILLed, the renewals stop, no heartbeat process is left, and the next run finds the lock
interrupted at once (same controller, its ansible-playbook is gone).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
import uuid

import pytest

from support.paths import ANSIBLE_PLAYBOOK, REPO
from support.procs import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PERIOD = 10  # heartbeat_period(120): a tenth of the default lease, at most 10 s
HEARTBEAT = 'zopeops-lock-hb'  # the heartbeat process's name


def heartbeats(marker):
    return marked_processes(marker, comm=HEARTBEAT)


def kill_leftovers(marker):
    """ansible-core runs each task in a worker of its own session: a SIGKILL of the playbook's
    process group leaves the worker of the running task (here the pause) to finish alone.
    Only the processes this test started carry its marker."""
    for pid in marked_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def playbook(tmp_path, state_dir, run_id, purpose='run', pause=25, release=True):
    path = tmp_path / ('%s.yml' % run_id)
    path.write_text(textwrap.dedent('''\
        - name: Hold a promotion lock for a while.
          hosts: localhost
          connection: local
          gather_facts: false
          vars:
            ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
            lock_args: {{dir: "{state_dir}", stage: test, run_id: "{run_id}"}}
          tasks:
            - name: Take the lock.
              zopeops.stages.promotion_state:
                dir: "{{{{ lock_args.dir }}}}"
                stage: test
                run_id: "{run_id}"
                lock: acquired
                purpose: {purpose}
                owner: {{owner: tester, action: {purpose}}}
                initial: {{status: running}}
                event: {{phase: twin_data, event: start}}
            - name: Work for a while.
              ansible.builtin.pause:
                seconds: {pause}
              when: {pause} > 0
            - name: Release the lock.
              zopeops.stages.promotion_state:
                dir: "{{{{ lock_args.dir }}}}"
                stage: test
                run_id: "{run_id}"
                lock: released
              when: {release}
        ''').format(state_dir=state_dir, run_id=run_id, purpose=purpose, pause=pause,
                    release=str(release).lower()))
    return path


def start(path, marker):
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               PYTHONUNBUFFERED='1', ZOPEOPS_HEARTBEAT_TEST=marker)
    return subprocess.Popen([str(ANSIBLE_PLAYBOOK), '-i', 'localhost,', str(path)],
                            cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def marked_processes(marker, comm=None):
    """The pids of every process whose environment carries ``marker`` (the playbook, its
    workers and any heartbeat they started); with ``comm``, only those of that name."""
    found = []
    needle = ('ZOPEOPS_HEARTBEAT_TEST=%s' % marker).encode()
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/environ' % name, 'rb') as handle:
                if needle not in handle.read().split(b'\0'):
                    continue
            with open('/proc/%s/comm' % name) as handle:
                if comm is None or handle.read().strip() == comm:
                    found.append(int(name))
        except OSError:
            continue
    return found


def mtime(path):
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return None


def test_the_heartbeat_is_renewed_while_the_run_works_and_ends_with_it(tmp_path):
    state_dir = tmp_path / 'promotions'
    heartbeat = state_dir / 'test.lock' / 'heartbeat'
    marker = uuid.uuid4().hex
    proc = start(playbook(tmp_path, state_dir, 'r1'), marker)
    try:
        first = wait_for(lambda: mtime(heartbeat), timeout=60, what='the lock to be taken')
        owner = json.loads((state_dir / 'test.lock' / 'owner.json').read_text())
        assert owner['controller_pid'] == proc.pid and owner['purpose'] == 'run'
        wait_for(lambda: (mtime(heartbeat) or 0) > first, timeout=PERIOD * 2 + 5,
                 what='the heartbeat to be renewed during the pause')
        # The heartbeat does not hold ansible-playbook's output open: communicate() returns
        # when the playbook ends.
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, output
    assert not (state_dir / 'test.lock').exists(), output
    wait_for(lambda: not marked_processes(marker), timeout=5,
             what='every process of the run (the heartbeat included) to end')


def test_a_sigkilled_run_stops_renewing_and_its_lock_is_interrupted(tmp_path):
    state_dir = tmp_path / 'promotions'
    heartbeat = state_dir / 'test.lock' / 'heartbeat'
    marker = uuid.uuid4().hex
    proc = start(playbook(tmp_path, state_dir, 'victim', pause=300), marker)
    try:
        first = wait_for(lambda: mtime(heartbeat), timeout=60, what='the lock to be taken')
        wait_for(lambda: (mtime(heartbeat) or 0) > first, timeout=PERIOD * 2 + 5,
                 what='a first renewal')
        assert len(heartbeats(marker)) == 1
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    try:
        wait_for(lambda: not heartbeats(marker), timeout=5,
                 what='the heartbeat to stop with the killed ansible-playbook')
    finally:
        kill_leftovers(marker)
    stopped = mtime(heartbeat)
    time.sleep(PERIOD + 3)
    assert mtime(heartbeat) == stopped, 'the heartbeat was renewed after the run was killed'
    assert json.loads((state_dir / 'test.json').read_text())['status'] == 'running'

    # The next plain run: refused at once, naming the step; the state says interrupted.
    refused = start(playbook(tmp_path, state_dir, 'next', pause=0), marker)
    output = refused.communicate(timeout=120)[0]
    said = ' '.join(output.split())
    assert refused.returncode != 0, output
    assert 'was interrupted' in said and 'at step twin_data' in said, output
    assert 'ansible-playbook pid %d' % proc.pid in said and 'is gone' in said, output
    assert '-e action=resume' in said, output
    state = json.loads((state_dir / 'test.json').read_text())
    assert state['status'] == 'interrupted' and state['interrupted']['step'] == 'twin_data'
    assert json.loads((state_dir / 'test.lock' / 'owner.json').read_text())['run_id'] == 'victim'

    # A resume takes it over and says so.
    resumed = start(playbook(tmp_path, state_dir, 'resumer', purpose='resume', pause=0), marker)
    output = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0, output
    assert 'Took over the lock of the run of test (run victim' in ' '.join(output.split()), output
    assert not (state_dir / 'test.lock').exists()
    wait_for(lambda: not marked_processes(marker), timeout=5, what='every process to end')


def test_the_heartbeat_stops_when_the_lock_is_no_longer_the_runs(tmp_path):
    state_dir = tmp_path / 'promotions'
    marker = uuid.uuid4().hex
    proc = start(playbook(tmp_path, state_dir, 'r1', pause=40, release=False), marker)
    try:
        wait_for(lambda: heartbeats(marker), timeout=60, what='the heartbeat to start')
        owner = state_dir / 'test.lock' / 'owner.json'
        record = json.loads(owner.read_text())
        owner.write_text(json.dumps(dict(record, run_id='someone-else'), indent=2))
        wait_for(lambda: not heartbeats(marker), timeout=PERIOD * 2 + 5,
                 what='the heartbeat to stop once the lock names another run')
        assert proc.poll() is None  # the playbook itself goes on
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kill_leftovers(marker)


def test_a_killed_push_or_site_run_has_its_lock_released_by_its_heartbeat(tmp_path):
    """A push or a site.yml run leaves no plan to resume: its lock ends with its run."""
    state_dir = tmp_path / 'promotions'
    marker = uuid.uuid4().hex
    proc = start(playbook(tmp_path, state_dir, 'pusher', purpose='push', pause=300), marker)
    try:
        wait_for(lambda: heartbeats(marker), timeout=60, what='the heartbeat to start')
        assert (state_dir / 'test.lock').is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    try:
        wait_for(lambda: not (state_dir / 'test.lock').exists(), timeout=15,
                 what='the heartbeat to release the killed push lock')
        wait_for(lambda: not heartbeats(marker), timeout=5, what='the heartbeat to end')
    finally:
        kill_leftovers(marker)
