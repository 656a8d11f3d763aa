"""Fail-safe: what a dead controller, a restarted balancer or a commit that did not come through
a frozen method leaves behind (issue "Fail-safe", docs/promotion.md "The freeze is a lease").

On the faults' pipeline (xdist group pipeline-faults), each run under the read load and the
acknowledged-write load through HAProxy: 0 lost acknowledged writes asserted, and 0 failed reads
except while HAProxy itself is down.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time

import pytest
import requests

from support.promotion import (frozen_in_file, info, lost_writes, map_file, output,
                               run_under_load, wait_for_freeze, wait_for_text)
from support.writeload import WriteLoad

pytestmark = [pytest.mark.integration, pytest.mark.pipeline,
              pytest.mark.xdist_group('pipeline-faults')]

# A short lease keeps the tests short; it must still outlast the steps under the freeze
# (promote_freeze_timeout + promote_lease_margin + 5, checked before the lock).
LEASE = 15
# With one balancer the cutover is one lb_cutover call whose freeze lasts milliseconds: the
# drill hold keeps it frozen 2 s after its switch, so that these faults land inside it.
SHORT = {'zopeops_data_policy': 'self', 'promote_freeze_lease': LEASE,
         'promote_lease_margin': 3, 'promote_freeze_timeout': 5, 'promote_cutover_hold': 2}


def frozen_answer(pipeline, stage):
    """Whether HAProxy answers a write to ``stage`` with the freeze's 503 (None: no answer)."""
    try:
        answer = requests.post('http://127.0.0.1:%d/' % pipeline.lb_port(stage), data=b'x=1',
                               timeout=5)
    except requests.RequestException:
        return None
    return answer.status_code == 503 and 'frozen for a moment' in answer.text


def seconds_until_writes_flow(pipeline, stage, timeout):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if frozen_answer(pipeline, stage) is False:
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def kill_when_frozen(pipeline, switched_first, measured):
    """A `during` action: SIGKILL ansible-playbook's whole process group during a freeze (of
    the switch to the twin, or, with ``switched_first``, of the switch back), then measure how
    long HAProxy keeps refusing writes with no controller left to lift the freeze."""
    def act(background):
        if switched_first and not wait_for_text(map_file(pipeline, 'active.map'),
                                                'test be_test_upgrade', background):
            return None
        if not wait_for_freeze(map_file(pipeline, 'frozen.map'), 'test', background):
            return None
        os.killpg(background.proc.pid, signal.SIGKILL)
        killed = time.time()
        assert frozen_answer(pipeline, 'test') is True  # frozen, and nobody left to lift it
        measured['seconds'] = seconds_until_writes_flow(pipeline, 'test', LEASE + 30)
        return killed
    return act


def assert_no_loss(pipeline, runs):
    for run in runs:
        assert not run.reads.failures and not run.writes.failed, run.report()
    acked = set()
    for run in runs:
        acked |= set(run.writes.acknowledged)
    assert len(acked) >= 5
    assert lost_writes(pipeline, 'test', acked) == {
        'http': [], 'datafs': [], 'missing_http': 0, 'missing_datafs': 0}


@pytest.mark.parametrize('switched_first', [False, True], ids=['to_twin', 'to_live'])
def test_a_killed_controller_freezes_writes_no_longer_than_the_lease(pipeline, switched_first):
    measured = {}
    first = run_under_load(pipeline, 'promote.yml', 'test', SHORT,
                           during=kill_when_frozen(pipeline, switched_first, measured))
    assert first.interrupted_at, 'the freeze never came: ' + first.output
    assert first.proc.returncode == -signal.SIGKILL
    # Writes flow again by themselves once the lease ends (plus a margin for a busy machine).
    assert measured['seconds'] is not None and measured['seconds'] <= LEASE + 5, measured
    print('killed controller (%s): writes refused %.1f s after the kill (lease %d s)'
          % ('to_live' if switched_first else 'to_twin', measured['seconds'], LEASE))
    second = run_under_load(pipeline, 'promote.yml', 'test', dict(SHORT, action='resume'))
    assert second.proc.returncode == 0, second.output
    assert_no_loss(pipeline, [first, second])
    assert not frozen_in_file(map_file(pipeline, 'frozen.map'), 'test')
    assert info(pipeline, 'test')['instance'] == 'test'
    assert pipeline.state('test')['status'] == 'done'


def test_haproxy_killed_during_a_freeze_lets_writes_through_when_the_lease_ends(pipeline):
    """supervisord restarts HAProxy, which loads the freeze from its file with its deadline: it
    must not come back frozen for good."""
    measured = {}

    def kill_haproxy(background):
        if not wait_for_freeze(map_file(pipeline, 'frozen.map'), 'test', background):
            return None
        pid = int(pipeline.supervisorctl('pid', 'haproxy').stdout.strip() or 0)
        assert pid > 0
        os.kill(pid, signal.SIGKILL)  # the master; its worker goes with it
        killed = time.time()
        measured['seconds'] = seconds_until_writes_flow(pipeline, 'test', LEASE + 30)
        return killed

    first = run_under_load(pipeline, 'promote.yml', 'test', SHORT, during=kill_haproxy)
    assert first.interrupted_at, first.output
    assert measured['seconds'] is not None and measured['seconds'] <= LEASE + 5, measured
    print('HAProxy killed during the freeze: writes refused %.1f s after the kill (lease %d s); '
          'run rc %d' % (measured['seconds'], LEASE, first.proc.returncode))
    runs = [first]
    if first.proc.returncode != 0:
        # The run's next call found HAProxy down: it said where the traffic is and what to run.
        said = ' '.join(output(first.proc).split())
        assert 'action=resume' in said or 'Nothing moved' in said, output(first.proc)
        if 'action=resume' in said:
            runs.append(run_under_load(pipeline, 'promote.yml', 'test',
                                       dict(SHORT, action='resume')))
            assert runs[-1].proc.returncode == 0, runs[-1].output
    # Reads fail only while HAProxy itself is down (supervisord restarts it in about 1 s).
    for run in runs:
        assert not run.writes.failed, run.report()
        late = [f for f in run.reads.failures if f[0] > first.interrupted_at + 10]
        assert not late, run.report()
    acked = set()
    for run in runs:
        acked |= set(run.writes.acknowledged)
    lost = lost_writes(pipeline, 'test', acked)
    assert lost['missing_http'] == 0 and lost['missing_datafs'] == 0, lost
    assert not frozen_in_file(map_file(pipeline, 'frozen.map'), 'test')


def test_a_commit_that_bypasses_the_freeze_reaches_the_target(pipeline):
    """A write straight to a client of the stage (not through HAProxy, so the freeze does not
    hold it back) right after the switch to the twin, while the freeze still holds: the
    cutover waits for the source to go idle, reads its last tid again and copies it."""
    direct = {}
    port = pipeline.port_base + 31  # test-client1 (inventories/local/host_vars/test-local.yml)

    def write_around_the_freeze(background):
        if not wait_for_text(map_file(pipeline, 'active.map'), 'test be_test_upgrade', background):
            return None
        if not frozen_in_file(map_file(pipeline, 'frozen.map'), 'test'):
            return None
        with WriteLoad('http://127.0.0.1:%d' % port, auth=pipeline.admin_auth(), threads=1,
                       max_writes=1, id_prefix='direct-', max_seconds=20) as load:
            load.wait(20)
        direct.update(load.acknowledged)
        return time.time()

    run = run_under_load(pipeline, 'promote.yml', 'test', SHORT, during=write_around_the_freeze)
    assert run.proc.returncode == 0, run.output
    assert run.interrupted_at and len(direct) == 1, (direct, run.output)
    assert not run.reads.failures and not run.writes.failed, run.report()
    expected = set(run.writes.acknowledged) | set(direct)
    assert lost_writes(pipeline, 'test', expected) == {
        'http': [], 'datafs': [], 'missing_http': 0, 'missing_datafs': 0}


class SlowRequest(threading.Thread):
    """A GET through the stage's frontend whose body trickles in, one byte every half second:
    HAProxy routes it on its headers, and the side it chose keeps it in flight until ``stop``
    (at most ``max_seconds``, under HAProxy's ``timeout server`` of 300 s)."""

    def __init__(self, port, max_seconds=240):
        super().__init__(daemon=True)
        self.port, self.max_seconds = port, max_seconds
        self.stopped = threading.Event()
        self.connected = threading.Event()
        self.local_port = None

    def run(self):
        with socket.create_connection(('127.0.0.1', self.port), timeout=10) as sock:
            self.local_port = sock.getsockname()[1]
            sock.sendall(b'GET /@@zopeops-info HTTP/1.1\r\nHost: slow\r\n'
                         b'Content-Length: 1000\r\n\r\n')
            self.connected.set()
            for _beat in range(int(self.max_seconds * 2)):
                if self.stopped.wait(0.5):
                    return
                try:
                    sock.sendall(b'x')
                except OSError:
                    return

    def stop(self):
        self.stopped.set()
        self.join(10)


def stream_backend(pipeline, client_port):
    """The backend HAProxy sends the connection from 127.0.0.1:``client_port`` to ('<none>'
    before it is routed), or None if HAProxy holds no such stream (``show sess all``)."""
    from ansible_collections.zopeops.stages.plugins.module_utils.haproxy import RuntimeAPI
    text = RuntimeAPI(str(pipeline.runtime_dir / 'haproxy.sock')).execute('show sess all')
    for block in re.split(r'\n(?=0x[0-9a-fA-F]+: \[)', text):
        if re.search(r' source=127\.0\.0\.1:%d\b' % client_port, block.split('\n', 1)[0]):
            backend = re.search(r'^\s*backend=(\S+)', block, re.M)
            return backend.group(1) if backend else '<none>'
    return None


def wait_for_stream(pipeline, client_port, backend, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stream_backend(pipeline, client_port) == backend:
            return True
        time.sleep(0.1)
    return False


def test_haproxy_lost_right_after_the_unfreeze_rolls_forward_and_loses_nothing(pipeline):
    """HAProxy dies after the freeze is lifted on the twin, while the one cutover call still
    waits for the stage's old side to drain: the call fails after the twin may have acknowledged
    writes. The cutover must not put the traffic back over them: it rolls forward, and the run
    finishes with nothing lost.

    The window is made, not hoped for: a slow request routed to the stage's live side before
    the run starts keeps that side busy, so the call's drain (``promote_drain_timeout``) lasts
    until HAProxy is killed; right before the kill the test checks that this request is still
    in flight there (so the drain has not ended) and that the drain's time is not up."""
    drain = 60
    slow = SlowRequest(pipeline.lb_port('test'))
    window = {}

    def kill_after_unfreeze(background):
        if not wait_for_text(map_file(pipeline, 'active.map'), 'test be_test_upgrade',
                             background):
            return None
        deadline = time.monotonic() + 120
        while frozen_in_file(map_file(pipeline, 'frozen.map'), 'test'):
            if time.monotonic() > deadline or background.proc.poll() is not None:
                return None
            time.sleep(0.005)
        unfrozen = time.monotonic()
        window['slow_on'] = stream_backend(pipeline, slow.local_port)
        pid = int(pipeline.supervisorctl('pid', 'haproxy').stdout.strip() or 0)
        os.kill(pid, signal.SIGKILL)
        window['after_unfreeze'] = time.monotonic() - unfrozen
        window['run_alive'] = background.proc.poll() is None
        return time.time()

    slow.start()
    try:
        assert slow.connected.wait(10), 'the slow request could not connect'
        assert wait_for_stream(pipeline, slow.local_port, 'be_test_live'), \
            'the slow request was not routed to be_test_live'
        run = run_under_load(pipeline, 'promote.yml', 'test',
                             dict(SHORT, promote_cutover_hold=0, promote_drain_timeout=drain),
                             during=kill_after_unfreeze)
    finally:
        slow.stop()
    assert run.interrupted_at, run.output
    # The kill landed in the window: the old side still had the slow request (its drain was
    # still waiting), well before the drain's time was up, with the run still going.
    assert window['slow_on'] == 'be_test_live', (window, run.output)
    assert window['after_unfreeze'] < drain / 2 and window['run_alive'], (window, run.output)
    print('HAProxy killed %.3f s after the unfreeze, the slow request still on %s'
          % (window['after_unfreeze'], window['slow_on']))
    assert run.proc.returncode == 0, run.output
    assert 'The cutover rolled forward' in ' '.join(run.output.split()), run.output
    assert pipeline.state('test').get('rolled_forward') == 'cutover_to_twin'
    assert not run.writes.failed, run.report()
    assert not [f for f in run.reads.failures if f[0] > run.interrupted_at + 10], run.report()
    lost = lost_writes(pipeline, 'test', set(run.writes.acknowledged))
    assert lost['missing_http'] == 0 and lost['missing_datafs'] == 0, lost
    assert info(pipeline, 'test')['instance'] == 'test'
    assert pipeline.state('test')['status'] == 'done'
