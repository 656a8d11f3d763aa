"""Faults, interrupts and races of promote.yml on a local pipeline of its own (a second xdist
group, so a second sandbox beside test_promote.py's): a read load and an acknowledged-write
load through HAProxy during every run, 0 failed reads and 0 lost writes asserted.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest

from support.procs import wait_for
from support.promotion import (assert_zero_loss, frozen_in_file, info, lock_dir, lost_writes,
                               map_file, output, run_under_load, said, wait_for_freeze,
                               wait_for_text)

pytestmark = [pytest.mark.integration, pytest.mark.pipeline,
              pytest.mark.xdist_group('pipeline-faults')]

# With one balancer the cutover is one lb_cutover call whose freeze lasts milliseconds: the
# drill hold keeps it frozen 2 s after its switch, so that the faults below land inside it.
DRILL = {'promote_cutover_hold': 2}


# --- faults: traffic never fails, no write is lost, and it ends where the rules say ------

def broken_revision(pipeline, tmp_path):
    """A commit of the example app whose product fails at Zope's start-up."""
    work = tmp_path / 'broken'
    subprocess.run(['git', 'clone', '-q', str(pipeline.sandbox / 'app.git'), str(work)],
                   check=True)
    init = work / 'Products' / 'ZopeOpsDemo' / '__init__.py'
    init.write_text(init.read_text() + '\nraise RuntimeError("this release cannot start")\n')
    env = dict(os.environ, GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@t', GIT_COMMITTER_NAME='t',
               GIT_COMMITTER_EMAIL='t@t')
    subprocess.run(['git', 'commit', '-qam', 'broken'], cwd=work, check=True, env=env)
    subprocess.run(['git', 'push', '-q', 'origin', 'HEAD:refs/heads/broken'], cwd=work,
                   check=True)
    return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=work, capture_output=True,
                          text=True, check=True).stdout.strip()


def test_a_release_that_cannot_start_aborts_before_the_switch(pipeline, tmp_path):
    broken = broken_revision(pipeline, tmp_path)
    before = info(pipeline, 'prod')
    run = run_under_load(pipeline, 'promote.yml', 'prod', {'promote_revision': 'broken'})
    assert run.proc.returncode != 0, run.output
    assert 'Nothing moved' in said(run.proc), run.output
    assert_zero_loss(pipeline, run, 'prod', 'none')
    assert info(pipeline, 'prod')['revision'] == before['revision'] != broken
    states = pipeline.program_states()
    assert states['prod_upgrade-zeo'] != 'RUNNING' and states['prod_upgrade-client1'] != 'RUNNING'
    assert pipeline.state('prod')['status'] == 'aborted'
    assert not lock_dir(pipeline, 'prod').exists()


def test_a_full_disk_on_the_twin_aborts_before_the_switch(pipeline):
    target = pipeline.sandbox / 'test_upgrade' / 'var' / 'snapshots'
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root (CI runs as root)')
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(target)], check=True)
    try:
        # Leave almost nothing free: less than the smallest Data.fs of a stage.
        filler = target / 'filler'
        with open(filler, 'wb', buffering=0) as handle:
            try:
                while True:
                    handle.write(b'\0' * 4096)
            except OSError:
                pass
        run = run_under_load(pipeline, 'promote.yml', 'test')
    finally:
        subprocess.run(['umount', str(target)], check=True)
    assert run.proc.returncode != 0, run.output
    assert 'Nothing moved' in said(run.proc) and 'Traceback' not in run.output, run.output
    assert_zero_loss(pipeline, run, 'test', 'none')
    assert pipeline.state('test')['status'] == 'aborted'


def test_live_failure_keeps_traffic_on_the_twin_until_resumed(pipeline):
    fault = pipeline.sandbox / 'test' / 'var' / 'FAULT'
    fault.write_text('injected by the test\n')
    extra = {'zopeops_data_policy': 'self'}
    try:
        # The faulty live side answers with a wrong revision until the start timeout: 60 s
        # (not the default 180) keeps the test short and still leaves the twin's healthy start
        # ample time on a loaded machine.
        first = run_under_load(pipeline, 'promote.yml', 'test',
                               dict(extra, zopeops_start_timeout=60))
        assert first.proc.returncode != 0, first.output
        assert 'TRAFFIC IS SERVED BY THE TWIN test_upgrade' in said(first.proc), first.output
        assert 'Do not stop the twin' in said(first.proc)
        assert info(pipeline, 'test')['instance'] == 'test_upgrade'
        state = pipeline.state('test')
        assert state['status'] == 'failed' and state['traffic'] == 'upgrade'
        again = pipeline.playbook('promote.yml', dict({'stage': 'test'}, **extra))
        assert again.returncode != 0 and '-e action=resume' in said(again), output(again)
    finally:
        fault.unlink(missing_ok=True)
    second = run_under_load(pipeline, 'promote.yml', 'test', dict(extra, action='resume'))
    assert second.proc.returncode == 0, second.output
    served = info(pipeline, 'test')
    assert served['instance'] == 'test' and served['revision'] == info(pipeline, 'beta')['revision']
    assert pipeline.state('test')['status'] == 'done'
    assert not [p for p, s in pipeline.program_states().items()
                if p.startswith('test_upgrade') and s == 'RUNNING']
    for run in (first, second):
        assert not run.reads.failures and not run.writes.failed, run.report()
    acked = set(first.writes.acknowledged) | set(second.writes.acknowledged)
    assert lost_writes(pipeline, 'test', acked)['missing_datafs'] == 0


# --- interrupts: Ctrl-C at the worst moments, then resume ---------------------------------

@pytest.mark.parametrize('moment,waits', [
    ('during the freeze before the first switch', [('frozen.map', None)]),
    ('right after the first switch', [('active.map', 'test be_test_upgrade')]),
    ('during the freeze before the switch back',
     [('active.map', 'test be_test_upgrade'), ('frozen.map', None)]),
])
def test_interrupt_then_resume_loses_nothing(pipeline, moment, waits):
    extra = dict(DRILL, zopeops_data_policy='self')

    def interrupt(background):
        seen = None
        for path, text in waits:
            seen = (wait_for_text(map_file(pipeline, path), text, background) if text
                    else wait_for_freeze(map_file(pipeline, path), 'test', background))
        if seen:
            background.interrupt()
        return seen

    first = run_under_load(pipeline, 'promote.yml', 'test', extra, during=interrupt)
    assert first.interrupted_at, 'the moment (%s) never came: %s' % (moment, first.output)
    assert first.proc.returncode != 0
    # Its last lines say where the traffic is, whether writes are frozen, and what to run.
    last = ' '.join(first.proc.stderr.split())
    assert 'Interrupted: the promotion of stage test' in last, first.output
    assert 'Traffic:' in last and 'Writes:' in last, first.output
    assert 'promote.yml -e stage=test -e action=resume' in last, first.output
    refused_run = pipeline.playbook('promote.yml', dict({'stage': 'test'}, **extra))
    assert refused_run.returncode != 0 and 'was interrupted' in said(refused_run), \
        output(refused_run)
    second = run_under_load(pipeline, 'promote.yml', 'test', dict(extra, action='resume'))
    assert second.proc.returncode == 0, second.output
    for run in (first, second):
        assert not run.reads.failures and not run.writes.failed, (moment, run.report())
    acked = set(first.writes.acknowledged) | set(second.writes.acknowledged)
    assert lost_writes(pipeline, 'test', acked) == {
        'http': [], 'datafs': [], 'missing_http': 0, 'missing_datafs': 0}, moment
    assert not frozen_in_file(map_file(pipeline, 'frozen.map'), 'test')
    assert info(pipeline, 'test')['instance'] == 'test'
    assert pipeline.state('test')['status'] == 'done'


# --- races: exactly one run proceeds, the others are refused with the owner named ---------

def test_concurrent_runs_exactly_one_proceeds(pipeline):
    results = {}

    def contend(background):
        """Once the first run holds the lock, three others start at once."""
        wait_for(lambda: lock_dir(pipeline, 'test').exists() or background.proc.poll() is not None,
                 timeout=120, what='the first run to take the lock')

        def one(name, extra):
            results[name] = pipeline.playbook('promote.yml', extra)

        threads = [threading.Thread(target=one, args=args) for args in (
            ('again', {'stage': 'test'}),
            ('rollback', {'stage': 'test', 'action': 'rollback'}),
            ('successor', {'stage': 'prod'}),
        )]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        return True

    # The run that proceeds is a whole promotion: it runs under reads and writes like any other.
    run = run_under_load(pipeline, 'promote.yml', 'test', during=contend)
    assert run.proc.returncode == 0, run.output
    assert_zero_loss(pipeline, run, 'test', 'upstream')
    owner = 'run %s' % pipeline.state('test')['run_id']
    for name, proc in results.items():
        assert proc.returncode != 0, (name, output(proc))
        assert owner in said(proc), (name, output(proc))


# --- services killed during a cutover ---------------------------------------------------

def kill_zeo_when_frozen(pipeline, instance):
    """A `during` action: SIGKILL the instance's ZEO server as soon as writes are frozen."""
    def kill(background):
        seen = wait_for_freeze(map_file(pipeline, 'frozen.map'), 'test', background)
        pid = int(pipeline.supervisorctl('pid', '%s-zeo' % instance).stdout.strip() or 0)
        if seen and pid > 0:
            os.kill(pid, signal.SIGKILL)
            return seen
        return None
    return kill


def test_target_zeo_killed_during_the_catch_up_calls_the_switch_off(pipeline):
    """The twin's ZEO dies while writes are frozen: the freeze is lifted, traffic stays on the
    stage (which holds every write), the twin is stopped, the run is aborted."""
    run = run_under_load(pipeline, 'promote.yml', 'test', dict(DRILL, zopeops_data_policy='self'),
                         during=kill_zeo_when_frozen(pipeline, 'test_upgrade'))
    assert run.interrupted_at, run.output
    if run.proc.returncode == 0:
        # supervisord restarted the twin's ZEO before the replay noticed: the cutover went
        # through on a server that holds every transaction (the catch-up verifies the last tid)
        assert_zero_loss(pipeline, run, 'test', 'self')
    else:
        assert 'Nothing moved' in said(run.proc), run.output
        assert_zero_loss(pipeline, run, 'test', 'self')
        assert info(pipeline, 'test')['instance'] == 'test'
        assert pipeline.state('test')['status'] == 'aborted'
    assert not frozen_in_file(map_file(pipeline, 'frozen.map'), 'test')


def test_source_zeo_killed_during_the_freeze_loses_nothing(pipeline):
    """The stage's own ZEO dies while writes are frozen: the catch-up reads its file, which
    holds every acknowledged write, so the twin still gets all of them."""
    run = run_under_load(pipeline, 'promote.yml', 'test', dict(DRILL, zopeops_data_policy='self'),
                         during=kill_zeo_when_frozen(pipeline, 'test'))
    assert run.interrupted_at, run.output
    assert not run.reads.failures, run.report()
    if run.proc.returncode != 0:
        proc = pipeline.playbook('promote.yml', {'stage': 'test', 'action': 'resume',
                                                 'zopeops_data_policy': 'self'})
        assert proc.returncode == 0, output(proc)
    assert lost_writes(pipeline, 'test', set(run.writes.acknowledged))['missing_datafs'] == 0
    assert info(pipeline, 'test')['instance'] == 'test'
