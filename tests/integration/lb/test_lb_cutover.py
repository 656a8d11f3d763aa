"""lb_cutover: the whole cutover of a stage behind one HAProxy in one module process, against
a real HAProxy (rendered by the haproxy role, stub HTTP clients) and a real runzeo target.

The source is a FileStorage that a writer thread keeps committing to until the balancer's
freeze shows in the frozen map file (the stand-in for the stage's clients, whose writes the
freeze holds back); a slow POST is in flight through HAProxy when the freeze comes, so the
module must wait for it inside the one call."""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time

import pytest

from support.modules import run_module
from support.procs import wait_for
from support.promotion import frozen_in_file

from lbsupport import LB

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'zodb'))
from zodbdata import Zeo, read_root, write_transactions  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIVE = ('test-client1', 'test-client2')
TWIN = 'test_upgrade-client1'
STAGE = 'test'


@pytest.fixture
def cutover(rendered, processes, tmp_path):
    """HAProxy with test's clients and twin up; test's Data.fs (the source, 6 transactions
    beyond the twin's copy) and the twin's copy served by runzeo."""
    root, model, maps = rendered
    balancer = LB(root, model, processes)
    for name, text in maps.items():
        (balancer.etc / name).write_text(text)
    balancer.start_backends(LIVE + (TWIN,))
    balancer.start_haproxy()
    balancer.wait_all_up()
    source_dir, target_dir = tmp_path / 'source', tmp_path / 'target'
    source_dir.mkdir()
    source, blobs = str(source_dir / 'Data.fs'), str(source_dir / 'blobs')
    write_transactions(source, blobs, count=4, blobs_every=2)
    shutil.copytree(source_dir, target_dir)
    base = read_root(source, blobs)[0].hex()
    write_transactions(source, blobs, count=6, start=100, blobs_every=2)
    zeo = Zeo(processes, str(tmp_path), str(target_dir / 'Data.fs'), str(target_dir / 'blobs'))
    args = balancer.module_args(stage=STAGE, to='upgrade', source=source,
                                source_blob_dir=blobs, after_tid=base,
                                zeo_address=zeo.address, lease=30, lease_margin=5,
                                freeze_timeout=10, gate_timeout=10, passes=4, settle=2)
    return balancer, zeo, args, source, blobs, str(target_dir / 'Data.fs')


def tids(path, after=None):
    from ZODB.FileStorage import FileIterator
    iterator = FileIterator(path, start=after)
    try:
        return [txn.tid.hex() for txn in iterator]
    finally:
        iterator.close()


def in_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append((fn(), time.time())))
    thread.start()
    return thread, out


def test_one_call_waits_for_writes_replays_switches_and_unfreezes(cutover):
    lb, zeo, args, source, blobs, _target = cutover
    frozen_map = lb.frozen_map
    stop = threading.Event()
    written = []

    def writer():  # the stage's clients: they commit until the freeze holds their writes
        n = 1000
        while not stop.is_set() and not frozen_in_file(frozen_map, STAGE):
            written.append(write_transactions(source, blobs, count=1, start=n).hex())
            n += 1
            time.sleep(0.05)
    commits = threading.Thread(target=writer)
    commits.start()
    plan = run_module('lb_cutover', args, check=True)
    assert plan['rc'] == 0, plan
    assert plan['traffic_on'] == 'live' and plan['gap']['transactions'] >= 6
    assert not frozen_in_file(frozen_map, STAGE)  # check mode froze nothing
    # a write in flight when the freeze comes (the module's start and the gap take < 2.5 s)
    post, post_out = in_thread(lambda: lb.post(STAGE, '/slow?seconds=2.5'))
    try:
        lb.wait_in_flight('be_test_live', ['POST'])
        result = run_module('lb_cutover', args)
        returned = time.time()
    finally:
        stop.set()
        commits.join(30)
        post.join(30)
    assert result['rc'] == 0, result
    assert written, 'the writer committed nothing before the freeze'
    # the slow POST was answered (by the source side) before the module came back
    answer, answered = post_out[0]
    assert answer.status_code == 200 and answer.text.startswith('POST test-client')
    assert answered <= returned and result['writes_in_flight_seconds'] > 0.2, result
    # the whole frozen window is inside this one process: the freeze, the wait for the write,
    # the replay, the switch and the unfreeze, in this order, and nothing else
    assert result['frozen_at'] < result['switched_at'] < result['unfrozen_at']
    steps = result['steps']
    inside = steps['freeze'] + steps['final'] + steps['switch'] + steps['late'] + steps['unfreeze']
    assert result['freeze_seconds'] <= inside, result
    # every transaction of the source is on the target, the tids verified
    assert tids(source)[-1] == result['last_tid'] == written[-1]
    after = bytes.fromhex(args['after_tid'])
    assert result['transactions'] == len(tids(source, after)) - 1  # start= includes after
    assert result['traffic_on'] == 'upgrade' and result['frozen'] is False
    assert lb.runtime_active(STAGE) == 'be_test_upgrade'
    assert lb.post(STAGE).text.startswith('POST test_upgrade')  # writes flow to the twin
    assert 'test be_test_upgrade' in lb.active_map.read_text()
    assert not frozen_in_file(frozen_map, STAGE)
    zeo.stop()
    assert tids(cutover[5]) == tids(source)
    target_blobs = os.path.join(os.path.dirname(cutover[5]), 'blobs')
    assert read_root(cutover[5], target_blobs)[1:] == read_root(source, blobs)[1:]

    # a second call: the traffic is on the target, nothing to replay: changes nothing
    zeo2 = Zeo(lb.processes, os.path.dirname(source), cutover[5], target_blobs)
    again = run_module('lb_cutover', dict(args, zeo_address=zeo2.address))
    assert again['rc'] == 0 and again['changed'] is False, again
    assert again['traffic_on'] == 'upgrade' and again['frozen_at'] is None


def test_target_zeo_killed_after_the_freeze_puts_the_traffic_back_unfrozen(cutover):
    lb, zeo, args, source, _blobs, _target = cutover
    before = tids(source)
    killed = []

    def kill_at_freeze():
        wait_for(lambda: frozen_in_file(lb.frozen_map, STAGE), 60, 0.005, 'the freeze')
        zeo.proc.kill()  # SIGKILL to the runzeo this test started, by its PID
        killed.append(time.time())
    killer = threading.Thread(target=kill_at_freeze)
    killer.start()
    post, post_out = in_thread(lambda: lb.post(STAGE, '/slow?seconds=1.5'))
    try:
        lb.wait_in_flight('be_test_live', ['POST'])
        result = run_module('lb_cutover', dict(args, zeo_timeout=3))
    finally:
        killer.join(90)
        post.join(30)
    assert killed, 'the freeze never showed'
    assert result['rc'] == 1, result
    assert result['traffic_on'] == 'live' and result['frozen'] is False, result
    assert result['rolled_forward'] is False
    assert 'put back on live' in result['msg'], result['msg']
    assert result['frozen_at'] is not None and result['unfrozen_at'] > result['frozen_at']
    assert post_out[0][0].status_code == 200  # the write in flight was answered, by the source
    assert lb.runtime_active(STAGE) in (None, 'be_test_live')
    assert not frozen_in_file(lb.frozen_map, STAGE)
    answer = lb.post(STAGE)
    assert answer.status_code == 200 and answer.text.startswith('POST test-client')
    assert tids(source) == before  # the source, which kept the traffic, lost nothing
