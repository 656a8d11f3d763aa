"""lb_switch against a real HAProxy 2.6 rendered by the real haproxy role, with real HTTP
backends standing in for Zope clients."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests

from support.modules import run_module
from support.promotion import frozen_in_file
from support.writeload import WriteLoad
from support.paths import COLLECTIONS, REPO

import lbsupport
from lbsupport import LB, haproxy_workers, make_model, process_uids, run_role, short_tmpdir

pytestmark = pytest.mark.integration

LIVE = ('test-client1', 'test-client2')
TWIN = 'test_upgrade-client1'
STAGE = 'test'


@pytest.fixture
def lb(rendered, processes):
    root, model, maps = rendered
    balancer = LB(root, model, processes)
    for name, text in maps.items():  # every test starts from the role's fresh maps
        (balancer.etc / name).write_text(text)
    balancer.start_backends(LIVE + (TWIN, 'dev-client1'))
    balancer.start_haproxy()
    balancer.wait_all_up()
    return balancer


def switch(lb, active, check=False, **args):
    return run_module('lb_switch', lb.module_args(stage=STAGE, active=active, **args),
                      check=check, diff=True)


def test_switch_to_the_twin_and_back_moves_traffic_and_persists(lb):
    assert lb.get(STAGE).text in LIVE

    result = switch(lb, 'upgrade')
    assert result['rc'] == 0, result
    assert result['changed'] is True
    assert result['before']['active'] == 'live'
    assert result['after']['active'] == 'upgrade'
    assert result['drained'] is True and result['drain_seconds'] is not None
    assert 'set map %s test be_test_upgrade' % lb.active_map in result['commands']
    assert {lb.get(STAGE).text for request_number in range(6)} == {TWIN}
    assert 'test be_test_upgrade' in lb.active_map.read_text().splitlines()
    assert 'dev be_dev_live' in lb.active_map.read_text().splitlines()

    again = switch(lb, 'upgrade')
    assert again['rc'] == 0 and again['changed'] is False, again
    assert again['drain_seconds'] is None
    assert not any(c.startswith(('set ', 'add ')) for c in again['commands'])

    back = switch(lb, 'live')
    assert back['rc'] == 0 and back['changed'] is True, back
    assert back['before']['active'] == 'upgrade' and back['after']['active'] == 'live'
    assert {lb.get(STAGE).text for request_number in range(6)} <= set(LIVE)
    assert 'test be_test_live' in lb.active_map.read_text().splitlines()


def test_gate_refuses_a_target_with_a_down_server_and_changes_nothing(lb):
    lb.stop_backend(TWIN)
    lb.wait_status('be_test_upgrade', TWIN, 'DOWN')
    map_before = lb.active_map.read_text()

    result = switch(lb, 'upgrade', gate_timeout=1)
    assert result['rc'] != 0 and result.get('failed'), result
    assert 'not every server of be_test_upgrade is UP' in result['msg']
    assert TWIN in result['msg'] and 'Nothing was changed' in result['msg']
    assert lb.runtime_active(STAGE) == 'be_test_live'
    assert lb.active_map.read_text() == map_before
    assert lb.get(STAGE).text in LIVE

    # A twin that comes up while the gate waits (a promotion's just-started twin) is let through.
    starter = threading.Timer(0.5, lb.start_backend, args=(TWIN,))
    starter.start()
    result = switch(lb, 'upgrade', gate_timeout=20)
    starter.join()
    assert result['rc'] == 0 and result['changed'] is True, result
    assert lb.get(STAGE).text == TWIN


def test_gate_refuses_a_stage_without_twin(lb):
    result = run_module('lb_switch', lb.module_args(stage='dev', active='upgrade'))
    assert result['rc'] != 0
    assert 'be_dev_upgrade has no servers' in result['msg']
    assert lb.runtime_active('dev') == 'be_dev_live'


def test_switch_survives_a_reload(lb):
    assert switch(lb, 'upgrade')['changed'] is True
    lb.reload_haproxy()
    assert lb.runtime_active(STAGE) == 'be_test_upgrade'
    assert {lb.get(STAGE).text for request_number in range(4)} == {TWIN}


def test_the_switch_waits_until_requests_in_flight_on_the_old_side_are_done(lb):
    answers = []

    def slow_request():
        answer = lb.get(STAGE, '/slow?seconds=5')
        answers.append((answer, time.monotonic()))

    slow = threading.Thread(target=slow_request)
    slow.start()
    lb.wait_in_flight('be_test_live', ['GET'])
    result = switch(lb, 'upgrade')
    returned = time.monotonic()
    slow.join()
    assert result['rc'] == 0, result
    assert result['drained'] is True
    # The module came back only after the old side's last request was answered.
    answer, answered = answers[0]
    assert answer.status_code == 200 and answer.text in LIVE
    assert answered <= returned
    assert 0.3 <= result['drain_seconds'] <= 6, result['drain_seconds']


def test_drain_timeout_is_reported_as_not_drained(lb):
    slow = threading.Thread(target=lambda: lb.get(STAGE, '/slow?seconds=6'))
    slow.start()
    time.sleep(0.4)
    result = switch(lb, 'upgrade', drain_timeout=0.5)
    slow.join()
    assert result['rc'] == 0 and result['drained'] is False, result
    assert 'still had sessions' in json.dumps(result.get('warnings')), result
    strict = switch(lb, 'live', drain_timeout=0.0, fail_on_drain_timeout=True)
    assert strict['rc'] == 0, strict


def test_frozen_stage_refuses_writes_with_retry_after_and_keeps_serving_reads(lb):
    assert lb.post(STAGE).status_code == 200
    result = run_module('lb_switch', lb.module_args(stage=STAGE, frozen=True), diff=True)
    assert result['rc'] == 0 and result['changed'] is True, result
    assert result['before']['frozen'] is False and result['after']['frozen'] is True
    for method in ('POST', 'PUT', 'PATCH', 'DELETE'):
        answer = requests.request(method, lb.url(STAGE), data=b'x', timeout=5)
        assert answer.status_code == 503, method
        assert answer.headers.get('Retry-After') == '1'
    assert lb.get(STAGE).status_code == 200
    assert lb.post('dev').status_code == 200  # only the frozen stage
    assert frozen_in_file(lb.frozen_map, STAGE)
    assert abs(result['frozen_until'] - (time.time() + 30)) < 5  # the default lease

    lb.reload_haproxy()  # the freeze survives a reload too
    assert lb.post(STAGE).status_code == 503

    again = run_module('lb_switch', lb.module_args(stage=STAGE, frozen=True))
    assert again['rc'] == 0 and again['after']['frozen'] is True  # a renewal of the lease
    assert again['frozen_until'] >= result['frozen_until'] and again['frozen_at'] is None
    thawed = run_module('lb_switch', lb.module_args(stage=STAGE, frozen=False))
    assert thawed['rc'] == 0 and thawed['changed'] is True
    assert lb.post(STAGE).status_code == 200
    assert 'test 0' in lb.frozen_map.read_text().splitlines()


def test_freeze_switch_and_thaw_in_one_call_order(lb):
    run_module('lb_switch', lb.module_args(stage=STAGE, frozen=True))
    result = switch(lb, 'upgrade', frozen=False)
    assert result['rc'] == 0, result
    sets = [c for c in result['commands'] if c.startswith('set map')]
    assert sets == ['set map %s test be_test_upgrade' % lb.active_map,
                    'set map %s test 0' % lb.frozen_map]
    assert lb.post(STAGE).text == 'POST ' + TWIN


def wait_accepted(lb, timeout):
    """Post to the stage until a write is accepted; the seconds it took (None: never)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if lb.post(STAGE).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return None


def test_a_freeze_is_a_lease_that_haproxy_ends_by_itself(lb):
    result = run_module('lb_switch', lb.module_args(stage=STAGE, frozen=True, lease=3))
    assert result['rc'] == 0 and result['after']['frozen'] is True, result
    assert lb.post(STAGE).status_code == 503
    # Nobody lifts it: HAProxy compares the deadline with its own clock on each write.
    waited = wait_accepted(lb, 15)
    assert waited is not None and waited <= 5, waited
    query = run_module('lb_switch', lb.module_args(stage=STAGE))
    assert query['after']['frozen'] is False and query['after']['frozen_until'] is None
    assert not frozen_in_file(lb.frozen_map, STAGE)


def test_a_held_freeze_has_no_deadline_until_lifted(lb):
    result = run_module('lb_switch', lb.module_args(stage=STAGE, frozen=True, lease=0))
    assert result['after']['frozen_held'] is True
    time.sleep(1.5)
    assert lb.post(STAGE).status_code == 503
    lifted = run_module('lb_switch', lb.module_args(stage=STAGE, frozen=False))
    assert lifted['rc'] == 0 and lb.post(STAGE).status_code == 200


def test_haproxy_killed_during_a_freeze_comes_back_unfrozen_when_the_lease_ends(lb):
    run_module('lb_switch', lb.module_args(stage=STAGE, frozen=True, lease=4))
    switched = switch(lb, 'upgrade', under_freeze=True, lease=4, lease_margin=1)
    assert switched['rc'] == 0, switched
    lb.processes.kill(lb.haproxy)  # master and worker, as a crash would
    lb.start_haproxy()  # loads both maps from their files, as supervisord's restart does
    lb.wait_all_up()
    assert lb.post(STAGE).status_code == 503  # still frozen: the lease has not run out
    waited = wait_accepted(lb, 15)
    assert waited is not None and waited <= 6, waited
    # and it sends the stage to the side the last switch chose
    assert lb.post(STAGE).text == 'POST ' + TWIN


def test_a_switch_under_an_ended_freeze_is_refused_and_changes_nothing(lb):
    run_module('lb_switch', lb.module_args(stage=STAGE, frozen=True, lease=2))
    time.sleep(2.5)
    refused = switch(lb, 'upgrade', under_freeze=True, lease_margin=1)
    assert refused['rc'] != 0 and 'traffic stays where it is' in refused['msg'], refused
    assert lb.runtime_active(STAGE) == 'be_test_live'
    # HAProxy holds the lease to the whole second (its clock is date(), in seconds): the
    # freeze may still answer for up to a second after the module's own clock saw it end.
    assert wait_accepted(lb, 5) is not None
    assert lb.post(STAGE).text.startswith('POST test-client')


def freeze(lb, **args):
    return run_module('lb_switch', lb.module_args(stage=STAGE, frozen=True, **args), diff=True)


def in_thread(fn):
    """Run ``fn`` in a thread; the returned list gets (its result, epoch when it returned)."""
    out = []

    def target():
        out.append((fn(), time.time()))
    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def test_wait_writes_holds_the_freeze_until_a_slow_post_is_answered(lb):
    # The POST lasts 4 s: the module (a process start, 1-3 s on a loaded machine) must still
    # find it in flight, and wait for it.
    post, post_out = in_thread(lambda: lb.post(STAGE, '/slow?seconds=4'))
    read, read_out = in_thread(lambda: lb.get(STAGE, '/slow?seconds=9'))  # reads do not count
    try:
        lb.wait_in_flight('be_test_live', ['POST', 'GET'])
        result = freeze(lb, wait_writes=10)
        returned = time.time()
        assert result['rc'] == 0, result
        assert result['changed'] is True and result['after']['frozen'] is True
        post.join(10)
        answer, answered = post_out[0]
        assert answer.status_code == 200 and answer.text.startswith('POST test-client')
        assert answered <= returned  # the module came back only after the POST's answer
        assert 0.3 <= result['writes_in_flight_seconds'] <= 6, result['writes_in_flight_seconds']
        assert result['frozen_at'] <= returned - 0.3
        assert result['writes_in_flight'] == []
        assert 'show sess all' in result['commands']
        assert lb.post(STAGE).status_code == 503  # new writes are held back meanwhile
        assert read_out == []  # the slow GET is still in flight: it did not hold the wait
    finally:
        post.join(10)
        read.join(10)


def test_wait_writes_fails_for_a_post_that_outlives_it_and_keeps_the_freeze(lb):
    post, post_out = in_thread(lambda: lb.post(STAGE, '/slow?seconds=4'))
    try:
        lb.wait_in_flight('be_test_live', ['POST'])
        result = freeze(lb, wait_writes=0.8)
        assert result['rc'] != 0 and result.get('failed'), result
        assert 'still in flight' in result['msg'] and 'POST on be_test_live' in result['msg']
        assert result['changed'] is True and result['after']['frozen'] is True
        assert [w['method'] for w in result['writes_in_flight']] == ['POST']
        assert result['writes_in_flight'][0]['backend'] == 'be_test_live'
        assert 0.8 <= result['writes_in_flight_seconds'] < 3
        # The freeze is left for the caller to lift.
        assert lb.post(STAGE).status_code == 503
        assert frozen_in_file(lb.frozen_map, STAGE)
    finally:
        post.join(10)
    assert post_out[0][0].status_code == 200  # the write itself was not cut
    thawed = run_module('lb_switch', lb.module_args(stage=STAGE, frozen=False))
    assert thawed['rc'] == 0 and thawed['unfrozen_at'] is not None


def test_cutover_lifts_the_freeze_before_the_old_side_drains(lb):
    assert freeze(lb, wait_writes=5)['rc'] == 0
    slow, slow_out = in_thread(lambda: lb.get(STAGE, '/slow?seconds=4'))  # keeps live busy
    writes_accepted = []
    stop = threading.Event()

    def writer():  # a client that retries its write until the balancer takes it
        while not stop.is_set() and not writes_accepted:
            answer = lb.post(STAGE)
            if answer.status_code == 200:
                writes_accepted.append((answer.text, time.time()))
            else:
                time.sleep(0.05)
    writing = threading.Thread(target=writer)
    try:
        time.sleep(0.5)
        writing.start()
        result = switch(lb, 'upgrade', frozen=False, drain_timeout=10)
        returned = time.time()
        assert result['rc'] == 0, result
        assert result['before']['frozen'] is True and result['after']['frozen'] is False
        assert result['switched_at'] <= result['unfrozen_at'] < returned
        assert result['unfrozen_at'] - result['switched_at'] < 1
        assert result['drained'] is True and result['drain_seconds'] >= 2
        slow.join(10)
        slow_answer, slow_answered = slow_out[0]
        assert slow_answer.status_code == 200 and slow_answer.text in LIVE
        # Writes were accepted (by the twin) while the old side was still draining.
        writing.join(10)
        text, accepted = writes_accepted[0]
        assert text == 'POST ' + TWIN
        assert accepted < slow_answered - 1
        assert result['unfrozen_at'] < slow_answered - 1
    finally:
        stop.set()
        slow.join(10)
        if writing.ident is not None:  # started
            writing.join(10)


def test_a_write_load_is_held_by_the_freeze_and_goes_on_on_the_twin(lb):
    load = WriteLoad(lb.url(STAGE), auth=('admin', 'unused-here'), threads=3, max_seconds=30)
    with load:
        time.sleep(0.6)
        frozen = freeze(lb, wait_writes=5)
        time.sleep(0.8)  # every write now gets 503 + Retry-After and is retried
        cutover = switch(lb, 'upgrade', frozen=False)
        time.sleep(0.6)
    assert frozen['rc'] == 0 and cutover['rc'] == 0, (frozen, cutover)
    assert load.failed == [] and load.abandoned == [], load.report()
    assert load.retried_503 > 0 and load.statuses[503] == load.retried_503, load.report()
    assert set(load.by_instance()) >= {TWIN} and set(load.by_instance()) & set(LIVE)
    quiet_from = frozen['frozen_at'] + frozen['writes_in_flight_seconds'] + 0.3
    for write_id, entry in load.acknowledged.items():
        # Nothing is acknowledged while frozen; after the switch only the twin acknowledges.
        # unfrozen_at is taken once HAProxy has read the lifted freeze back, so under load the
        # twin may acknowledge a write in between: the lift was sent after switched_at.
        assert not quiet_from < entry['at'] < cutover['switched_at'], (write_id, entry)
        if entry['at'] < cutover['unfrozen_at']:
            assert not quiet_from < entry['at'] or entry['instance'] == TWIN, (write_id, entry)
        if entry['at'] > cutover['unfrozen_at'] + 0.3:
            assert entry['instance'] == TWIN, (write_id, entry)
    assert any(e['attempts'] > 1 and e['instance'] == TWIN for e in load.acknowledged.values())


def test_query_reports_side_freeze_and_servers_and_changes_nothing(lb):
    query = run_module('lb_switch', lb.module_args(stage=STAGE), diff=True)
    assert query['rc'] == 0 and query['changed'] is False, query
    assert query['before'] == query['after']
    assert query['after']['active'] == 'live' and query['after']['frozen'] is False
    assert query['after']['servers'] == {'be_test_live': {c: 'UP' for c in LIVE},
                                         'be_test_upgrade': {TWIN: 'UP'}}
    assert not any(c.startswith(('set ', 'add ')) for c in query['commands'])
    assert query['files'] == [] and 'diff' not in query

    assert switch(lb, 'upgrade')['rc'] == 0
    assert freeze(lb)['rc'] == 0
    later = run_module('lb_switch', lb.module_args(stage=STAGE))
    assert (later['after']['active'], later['after']['frozen']) == ('upgrade', True)
    # Without the map files only the servers are known.
    bare = run_module('lb_switch', {'socket': str(lb.socket), 'stage': STAGE})
    assert bare['rc'] == 0 and bare['after']['active'] is None, bare
    assert set(bare['after']['servers']) == {'be_test_live', 'be_test_upgrade'}


def test_per_server_drain_maint_ready(lb):
    def server(state):
        return run_module('lb_switch', {'socket': str(lb.socket), 'backend': 'be_test_live',
                                        'server': 'test-client2', 'state': state,
                                        'drain_timeout': 5})

    drained = server('drain')
    assert drained['rc'] == 0 and drained['changed'] is True, drained
    assert drained['before']['state'] == 'ready' and drained['after']['state'] == 'drain'
    assert lb.status('be_test_live', 'test-client2') == 'DRAIN'
    assert {lb.get(STAGE).text for request_number in range(6)} == {'test-client1'}
    assert server('drain')['changed'] is False

    assert server('maint')['after']['status'].startswith('MAINT')
    ready = server('ready')
    assert ready['changed'] is True and ready['after']['state'] == 'ready'
    lb.wait_status('be_test_live', 'test-client2', 'UP')
    assert {lb.get(STAGE).text for request_number in range(8)} == set(LIVE)


def test_unknown_stage_backend_and_server_are_named(lb):
    stage = run_module('lb_switch', lb.module_args(stage='nope', active='upgrade'))
    assert stage['rc'] != 0 and 'no backend be_nope_live' in stage['msg']
    assert 'Stages it serves: dev, test' in stage['msg']
    server = run_module('lb_switch', {'socket': str(lb.socket), 'backend': 'be_test_live',
                                      'server': 'ghost', 'state': 'drain'})
    assert server['rc'] != 0 and 'has no server ghost' in server['msg']
    assert 'test-client1' in server['msg']
    backend = run_module('lb_switch', {'socket': str(lb.socket), 'backend': 'be_ghost',
                                       'server': 'x', 'state': 'drain'})
    assert backend['rc'] != 0 and 'no backend be_ghost' in backend['msg']


def test_map_file_that_haproxy_did_not_load_is_refused(lb):
    other = lb.root / 'other.map'
    other.write_text('test be_test_live\n')
    result = run_module('lb_switch', lb.module_args(stage=STAGE, active='upgrade',
                                                    map_file=str(other)))
    assert result['rc'] != 0
    assert 'has not loaded the map file %s' % other in result['msg']
    assert str(lb.active_map) in result['msg']


def test_missing_socket_is_named(lb):
    result = run_module('lb_switch', lb.module_args(stage=STAGE, active='upgrade',
                                                    socket=str(lb.root / 'nothere.sock')))
    assert result['rc'] != 0
    assert 'nothere.sock does not exist' in result['msg']


def test_permission_denied_on_the_socket_for_another_user(lb):
    """Root passes every file mode, so the module runs as 'nobody' against the 0600 socket."""
    import pwd
    try:
        pwd.getpwnam('nobody')
    except KeyError:
        pytest.skip('no user nobody')
    if os.geteuid() != 0 or not os.path.exists('/usr/bin/python3'):
        pytest.skip('needs root (to run as nobody) and /usr/bin/python3')
    assert oct(os.stat(lb.socket).st_mode & 0o777) == '0o600'
    site = [p for p in sys.path if p.endswith('site-packages')]
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': lb.module_args(stage=STAGE, active='upgrade')}, handle)
    os.chmod(handle.name, 0o644)
    try:
        proc = subprocess.run(
            ['/usr/bin/python3', str(REPO / 'plugins/modules/lb_switch.py'), handle.name],
            user='nobody', capture_output=True, text=True, timeout=60, cwd='/tmp', check=False,
            env={'PYTHONPATH': os.pathsep.join([str(COLLECTIONS)] + site), 'HOME': '/tmp'})
    finally:
        os.unlink(handle.name)
    if 'No module named' in proc.stderr:
        pytest.skip('the system python cannot import ansible as nobody: ' + proc.stderr[-200:])
    result = json.loads(proc.stdout)
    assert result.get('failed'), result
    assert 'Permission denied on HAProxy runtime socket %s' % lb.socket in result['msg']
    assert lb.runtime_active(STAGE) == 'be_test_live'


def test_haproxy_started_as_root_serves_as_its_unprivileged_user(lb):
    """The role's configuration makes a root-started HAProxy's worker drop to haproxy_user;
    the socket, bound before that as root, stays root's 0600 and lb_switch (root) uses it."""
    if os.geteuid() != 0:
        pytest.skip('HAProxy drops privileges only when started as root')
    import pwd
    haproxy_uid = pwd.getpwnam('haproxy').pw_uid
    assert process_uids(lb.haproxy.pid)[1] == 0          # the master keeps root to reload
    workers = haproxy_workers(lb.haproxy.pid)
    for pid in workers:
        assert process_uids(pid) == (haproxy_uid,) * 4, pid
    assert lb.post(STAGE).text in ('POST test-client1', 'POST test-client2')
    stat = os.stat(lb.socket)
    assert (stat.st_uid, oct(stat.st_mode & 0o777)) == (0, '0o600')
    result = switch(lb, 'upgrade')
    assert result['rc'] == 0 and result['changed'], result
    assert lb.post(STAGE).text == 'POST ' + TWIN
    lb.reload_haproxy()                                    # a reload's new worker drops too
    for pid in set(haproxy_workers(lb.haproxy.pid)) - set(workers):
        assert process_uids(pid)[1] == haproxy_uid, pid
    assert lb.post(STAGE).text == 'POST ' + TWIN


def test_check_mode_reports_and_changes_nothing(lb):
    map_before = lb.active_map.read_text()
    result = switch(lb, 'upgrade', check=True)
    assert result['rc'] == 0 and result['changed'] is True, result
    assert result['after']['active'] == 'upgrade'
    assert result['diff'][0]['after'].count('test be_test_upgrade') == 1
    assert not any(c.startswith(('set ', 'add ')) for c in result['commands'])
    assert lb.runtime_active(STAGE) == 'be_test_live'
    assert lb.active_map.read_text() == map_before
    assert lb.get(STAGE).text in LIVE
    frozen = run_module('lb_switch', lb.module_args(stage=STAGE, frozen=True), check=True)
    assert frozen['changed'] is True and lb.post(STAGE).status_code == 200


def test_missing_map_entry_is_added(lb):
    api = lb.api()
    api.execute('del map %s test' % lb.active_map)
    lb.active_map.write_text('dev be_dev_live\n')
    assert api.get_map(str(lb.active_map), STAGE) is None
    result = switch(lb, 'upgrade')
    assert result['rc'] == 0, result
    assert 'add map %s test be_test_upgrade' % lb.active_map in result['commands']
    assert lb.active_map.read_text() == 'dev be_dev_live\ntest be_test_upgrade\n'


class Hammer(threading.Thread):
    """GETs in a loop, on kept-alive and on new connections; counts every failure."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.ok = 0
        self.failures = []
        self.seen = set()

    def run(self):
        session = requests.Session()
        while not self.stop.is_set():
            for getter in (session.get, requests.get):
                try:
                    answer = getter(self.url, timeout=10)
                    if answer.status_code == 200:
                        self.ok += 1
                        self.seen.add(answer.text)
                    else:
                        self.failures.append(answer.status_code)
                except requests.RequestException as exc:
                    self.failures.append(repr(exc))


def test_zero_failed_gets_while_switching_and_stopping_the_old_side(lb):
    hammer = Hammer(lb.url(STAGE))
    hammer.start()
    try:
        time.sleep(0.5)
        # A live client dies without warning: retries and redispatch hide it.
        lb.stop_backend('test-client2')
        time.sleep(0.5)
        lb.start_backend('test-client2')
        lb.wait_status('be_test_live', 'test-client2', 'UP')
        for attempt in range(2):
            assert switch(lb, 'upgrade')['rc'] == 0
            time.sleep(0.3)
            for client_id in LIVE:  # the old side stops after the switch
                lb.stop_backend(client_id)
            time.sleep(0.5)
            lb.start_backends(LIVE)
            lb.wait_all_up()
            assert switch(lb, 'live')['rc'] == 0
            time.sleep(0.3)
            lb.stop_backend(TWIN)
            time.sleep(0.5)
            lb.start_backend(TWIN)
            lb.wait_all_up()
    finally:
        hammer.stop.set()
        hammer.join(15)
    assert hammer.failures == []
    assert hammer.ok > 50
    assert hammer.seen == set(LIVE) | {TWIN}


def test_role_renders_a_configuration_haproxy_accepts(rendered):
    root, model, maps = rendered
    etc = root / 'root' / 'lb' / 'etc'
    check = subprocess.run([lbsupport.HAPROXY, '-c', '-f', str(etc / 'haproxy.cfg')],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    config = (etc / 'haproxy.cfg').read_text()
    for stage in ('dev', 'test'):
        assert 'bind 127.0.0.1:%d' % model['stages'][stage]['lb_port'] in config
        assert ('use_backend %%[str(%s),map(%s/active.map,be_%s_live)]' % (stage, etc, stage)
                in config)
        assert 'backend be_%s_live' % stage in config
        assert 'backend be_%s_upgrade' % stage in config
    assert 'server test_upgrade-client1 127.0.0.1:%d check' % (
        model['stages']['test']['upgrade']['clients'][0]['port']) in config
    assert 'stats socket %s/run/haproxy.sock mode 0600 level admin' % root in config
    # Rendered by this account for a HAProxy under supervisord, which runs as this account.
    assert (('\n    user haproxy\n    group haproxy\n' in config) == (os.geteuid() == 0)), config
    assert 'option redispatch' in config and 'retry-on conn-failure' in config
    assert maps['active.map'].splitlines()[-2:] == ['dev be_dev_live', 'test be_test_live']
    assert maps['frozen.map'].splitlines()[-2:] == ['dev 0', 'test 0']
    facts = json.loads((root / 'root' / 'zopeops_lb.json').read_text())
    assert facts == {'balancer': 'haproxy', 'bind_address': '127.0.0.1',
                     'socket': '%s/run/haproxy.sock' % root,
                     'active_map': str(etc / 'active.map'), 'frozen_map': str(etc / 'frozen.map'),
                     'config_file': str(etc / 'haproxy.cfg'),
                     'ports': {s: model['stages'][s]['lb_port'] for s in ('dev', 'test')}}


@pytest.mark.slow
@pytest.mark.parametrize('drop', [False, True])
def test_role_renders_the_privilege_drop_as_told(drop):
    root = short_tmpdir()
    try:
        code, output = run_role(root, make_model(), {'haproxy_drop_privileges': drop})
        assert code == 0, output
        config = (root / 'root' / 'lb' / 'etc' / 'haproxy.cfg').read_text()
        assert ('\n    user haproxy\n    group haproxy\n' in config) is drop, config
    finally:
        shutil.rmtree(root, ignore_errors=True)
