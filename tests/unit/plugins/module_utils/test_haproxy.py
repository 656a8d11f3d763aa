"""The HAProxy runtime-API client: parsing HAProxy's answers, map files, and the transport
(against a real unix socket served by a thread, with HAProxy's replies)."""
from __future__ import annotations

import os
import socket
import stat
import threading
import time

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils import haproxy as hx
from ansible_collections.zopeops.stages.plugins.module_utils.files import atomic_write

# Replies captured from HAProxy 2.6.12.
SHOW_MAP = ("# id (file) description\n2 (/srv/lb/etc/active.map) pattern loaded from file "
            "'/srv/lb/etc/active.map' used by map at file 'haproxy.cfg' line 10. curr_ver=0 "
            "next_ver=0 entry_cnt=1\n3 (/srv/lb/etc/frozen.map) pattern loaded from file "
            "'/srv/lb/etc/frozen.map' used by map at file 'haproxy.cfg' line 9.\n")
SHOW_MAP_ENTRIES = '0x556f81b885a0 dev be_dev_live\n0x556f81b885f0 test be_test_upgrade\n'
GET_FOUND = ('type=str, case=sensitive, found=yes, idx=tree, key="dev", value="be_dev_live", '
             'type="str"\n')
GET_MISSING = 'type=str, case=sensitive, found=no\n'
HEADER = ('# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,'
          'wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,'
          'sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status\n')


def stat_row(px, sv, scur, status, check=''):
    fields = [px, sv, '0', '0', str(scur), '0', '', '0', '0', '0', '', '0', '', '0', '0', '0',
              '0', status, '1', '1', '0', '0', '0', '1', '0', '', '1', '3', '1', '', '0', '',
              '2', '0', '', '0', check]
    return ','.join(fields) + '\n'


SHOW_STAT = (HEADER + stat_row('fe_test', 'FRONTEND', 3, 'OPEN')
             + stat_row('be_test_live', 'test-client1', 2, 'UP', 'L7OK')
             + stat_row('be_test_live', 'test-client2', 0, 'DOWN', 'L4CON')
             + stat_row('be_test_live', 'BACKEND', 2, 'UP')
             + stat_row('be_test_upgrade', 'BACKEND', 0, 'DOWN'))


def test_parse_show_map_list():
    assert hx.parse_show_map_list(SHOW_MAP) == [
        {'id': '2', 'file': '/srv/lb/etc/active.map'},
        {'id': '3', 'file': '/srv/lb/etc/frozen.map'}]


def test_parse_show_map_entries_and_get_map():
    assert hx.parse_show_map_entries(SHOW_MAP_ENTRIES) == [
        ('dev', 'be_dev_live'), ('test', 'be_test_upgrade')]
    assert hx.parse_get_map(GET_FOUND) == 'be_dev_live'
    assert hx.parse_get_map(GET_MISSING) is None
    with pytest.raises(hx.HAProxyError, match='Cannot read'):
        hx.parse_get_map('Unknown map identifier. Please use #<id> or <file>.')


def test_parse_show_stat_and_backend_stats():
    rows = hx.parse_show_stat(SHOW_STAT)
    assert rows[1]['svname'] == 'test-client1' and rows[1]['status'] == 'UP'
    api = hx.RuntimeAPI('/nonexistent.sock')
    stats = api.backend_stats('be_test_live', rows)
    assert stats['scur'] == 2
    assert stats['servers']['test-client2'] == {'status': 'DOWN', 'scur': 0, 'check': 'L4CON',
                                                'address': ''}
    assert api.backend_stats('be_test_upgrade', rows)['servers'] == {}
    with pytest.raises(hx.HAProxyError, match='no backend be_nope_live; its backends are: '
                                              'be_test_live, be_test_upgrade'):
        api.backend_stats('be_nope_live', rows)
    with pytest.raises(hx.HAProxyError, match='not its CSV'):
        hx.parse_show_stat('Permission denied')


@pytest.mark.parametrize('status, state, up', [
    ('UP', 'ready', True), ('UP 1/2', 'ready', False), ('DOWN', 'ready', False),
    ('DOWN 1/2', 'ready', False), ('DRAIN', 'drain', False), ('NOLB', 'drain', False),
    ('MAINT', 'maint', False), ('MAINT (via be/x)', 'maint', False), ('no check', 'ready', False),
])
def test_server_state_and_up(status, state, up):
    assert hx.server_state(status) == state
    assert hx.server_is_up(status) is up


@pytest.mark.parametrize('check, up', [
    ('L7OK', True), ('* L7OK', True), ('L4OK', True), ('INI', False), ('', False),
    ('L7STS', False), ('L4CON', False)])
def test_up_needs_a_passed_check_when_checks_run(check, up):
    assert hx.server_is_up('UP', check) is up


def test_parse_address():
    assert hx.parse_address('/run/zopeops/haproxy.sock') == (socket.AF_UNIX,
                                                             '/run/zopeops/haproxy.sock')
    assert hx.parse_address('unix@/x.sock') == (socket.AF_UNIX, '/x.sock')
    assert hx.parse_address('ipv4@127.0.0.1:9999') == (socket.AF_INET, ('127.0.0.1', 9999))
    assert hx.parse_address('127.0.0.1:9999') == (socket.AF_INET, ('127.0.0.1', 9999))
    for bad in ('', 'localhost', 'ipv4@host:port'):
        with pytest.raises(hx.HAProxyError):
            hx.parse_address(bad)


@pytest.mark.parametrize('value', ['te st', 'test;shutdown sessions', 'a\nb', ''])
def test_tokens_that_could_smuggle_commands_are_refused(value):
    with pytest.raises(hx.HAProxyError, match='cannot be sent'):
        hx.check_token(value, 'Stage')


def test_map_file_text_helpers():
    text = '# comment\ndev be_dev_live\n\ntest be_test_live\ntest be_test_upgrade\n'
    assert hx.parse_map_text(text) == [('dev', 'be_dev_live'), ('test', 'be_test_live'),
                                       ('test', 'be_test_upgrade')]
    assert hx.set_map_line(text, 'test', 'be_test_upgrade') == (
        '# comment\ndev be_dev_live\n\ntest be_test_upgrade\n')
    assert hx.set_map_line('dev be_dev_live\n', 'prod', 'be_prod_live') == (
        'dev be_dev_live\nprod be_prod_live\n')
    assert hx.set_map_line('', 'dev', '1') == 'dev 1\n'


def test_atomic_write_keeps_mode_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / 'active.map'
    path.write_text('dev be_dev_live\n')
    os.chmod(path, 0o640)
    atomic_write(str(path), 'dev be_dev_upgrade\n')
    assert path.read_text() == 'dev be_dev_upgrade\n'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.listdir(tmp_path) == ['active.map']
    atomic_write(str(tmp_path / 'new.map'), 'x 1\n')
    assert stat.S_IMODE(os.stat(tmp_path / 'new.map').st_mode) == 0o644


class FakeHAProxy(threading.Thread):
    """A unix socket answering like HAProxy's CLI: one command, one reply, then close."""

    def __init__(self, path, replies, delay=0.0):
        super().__init__(daemon=True)
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen(8)
        self.replies = replies
        self.delay = delay
        self.received = []

    def run(self):
        while True:
            try:
                conn, peer = self.server.accept()
            except OSError:
                return
            with conn:
                command = conn.recv(4096).decode().strip()
                self.received.append(command)
                time.sleep(self.delay)
                reply = self.replies.get(command.split(' ')[0] + ' ' + command.split(' ')[1]
                                         if ' ' in command else command, '')
                reply = self.replies.get(command, reply)
                try:
                    conn.sendall(reply.encode() + b'\n')
                except OSError:
                    pass

    def close(self):
        self.server.close()


@pytest.fixture
def sock_path(tmp_path):
    return str(tmp_path / 'h.sock')


def test_execute_reads_the_whole_reply(sock_path):
    fake = FakeHAProxy(sock_path, {'show stat': SHOW_STAT, 'show map': SHOW_MAP})
    fake.start()
    try:
        api = hx.RuntimeAPI(sock_path, timeout=2)
        assert [r['svname'] for r in api.show_stat()][-1] == 'BACKEND'
        assert api.resolve_map('/srv/lb/etc/active.map') == '/srv/lb/etc/active.map'
        with pytest.raises(hx.HAProxyError, match='has not loaded the map file /srv/x.map'):
            api.resolve_map('/srv/x.map')
        assert api.sent == ['show stat', 'show map', 'show map']
    finally:
        fake.close()


def test_error_replies_raise_with_command_and_reason(sock_path):
    fake = FakeHAProxy(sock_path, {'set server': 'Permission denied\n',
                                   'show cli': 'user\n'})
    fake.start()
    try:
        api = hx.RuntimeAPI(sock_path, timeout=2)
        with pytest.raises(hx.HAProxyError) as info:
            api.set_server_state('be_test_live', 'test-client1', 'drain')
        assert "refused 'set server be_test_live/test-client1 state drain': Permission " \
               'denied (this socket is at level user' in str(info.value)
    finally:
        fake.close()


def test_a_set_map_that_did_not_stick_is_detected(sock_path):
    # get map keeps answering the old value although set map "succeeded".
    fake = FakeHAProxy(sock_path, {'get map': GET_FOUND, 'set map': '', 'show cli': 'user'})
    fake.start()
    try:
        api = hx.RuntimeAPI(sock_path, timeout=2)
        with pytest.raises(hx.HAProxyError, match="reading it back gives 'be_dev_live'"):
            api.set_map('/m.map', 'dev', 'be_dev_upgrade')
    finally:
        fake.close()


def test_a_silent_haproxy_times_out_instead_of_hanging(sock_path):
    fake = FakeHAProxy(sock_path, {'show stat': SHOW_STAT}, delay=3)
    fake.start()
    try:
        started = time.monotonic()
        with pytest.raises(hx.HAProxyError, match='did not finish answering .show stat. within'):
            hx.RuntimeAPI(sock_path, timeout=0.5).show_stat()
        assert time.monotonic() - started < 2
    finally:
        fake.close()


def test_missing_and_stale_sockets(tmp_path):
    with pytest.raises(hx.HAProxyError, match='does not exist: HAProxy is not running'):
        hx.RuntimeAPI(str(tmp_path / 'none.sock')).execute('show stat')
    stale = tmp_path / 'stale.sock'
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(stale))
    server.close()  # the file stays, nobody listens: what a crashed HAProxy leaves
    with pytest.raises(hx.HAProxyError, match='refused the connection'):
        hx.RuntimeAPI(str(stale)).execute('show stat')


def test_permission_denied_is_explained(monkeypatch, sock_path):
    # Root opens any socket file, so the kernel's EACCES is simulated at connect().
    def connect(self, target):
        raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(socket.socket, 'connect', connect)
    with pytest.raises(hx.HAProxyError, match='Permission denied on HAProxy runtime socket .*'
                                              'become: true'):
        hx.RuntimeAPI(sock_path).execute('show stat')


def test_commands_with_separators_are_refused():
    api = hx.RuntimeAPI('/x.sock')
    with pytest.raises(hx.HAProxyError, match='one command per call'):
        api.execute('show stat; shutdown sessions server be/x')


def test_wait_until_idle_is_bounded():
    class API:
        def __init__(self, values):
            self.values = list(values)

        def backend_stats(self, backend):
            value = self.values.pop(0) if len(self.values) > 1 else self.values[0]
            return {'scur': value, 'servers': {'s1': {'scur': value}}}

    now = [0.0]

    def clock():
        return now[0]

    def sleep(seconds):
        now[0] += seconds

    assert hx.wait_until_idle(API([3, 1, 0]), 'be', 10, clock=clock, sleep=sleep) == (True, 0.4)
    now[0] = 0.0
    assert hx.wait_until_idle(API([5]), 'be', 1.0, clock=clock, sleep=sleep) == (False, 1.0)
    now[0] = 0.0
    assert hx.wait_until_idle(API([0]), 'be', 1.0, server='s1', clock=clock,
                              sleep=sleep) == (True, 0.0)


def test_file_lock_serialises_rewrites_of_one_map(tmp_path):
    path = str(tmp_path / 'active.map')
    with hx.file_lock(path):
        errors = []

        def other():
            try:
                with hx.file_lock(path, timeout=0.3):
                    pass
            except hx.HAProxyError as exc:
                errors.append(str(exc))
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(5)
    assert errors and 'held the lock' in errors[0]
    with hx.file_lock(path, timeout=0.3):  # released again
        pass


def test_concurrent_rewrites_of_different_keys_keep_both(tmp_path):
    path = str(tmp_path / 'active.map')
    atomic_write(path, 'dev be_dev_live\ntest be_test_live\nprod be_prod_live\n')

    def switch(key, value):
        for attempt in range(20):
            with hx.file_lock(path):
                atomic_write(path, hx.set_map_line(hx.read_text(path), key, value))

    threads = [threading.Thread(target=switch, args=(k, 'be_%s_upgrade' % k))
               for k in ('dev', 'test', 'prod')]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert hx.parse_map_text(hx.read_text(path)) == [
        ('dev', 'be_dev_upgrade'), ('test', 'be_test_upgrade'), ('prod', 'be_prod_upgrade')]


# `show sess all` on HAProxy 2.6.12 with a slow POST, a slow GET and a PUT whose body is still
# arriving in flight on be_test_live, and the CLI's own stream (trimmed to the lines read).
SHOW_SESS_ALL = """\
0x565321dcd0a0: [29/Nov/2026:12:22:38.846171] id=10 proto=tcpv4 source=127.0.0.1:54404
  flags=0x84a, conn_retries=0, conn_exp=<NEVER> conn_et=0x000 srv_conn=0x565321d08d10, \
pend_pos=(nil) waiting=0 epoch=0
  frontend=fe_test (id=5 mode=http), listener=? (id=1) addr=127.0.0.1:49015
  backend=be_test_live (id=6 mode=http) addr=127.0.0.1:33016
  server=test-client2 (id=2) addr=127.0.0.1:59933
  task=0x565321ee1bf0 (state=0x00 nice=0 calls=2 rate=0 exp=0s tmask=0x1 age=1s)
  txn=0x565321ee1cc0 flags=0x1000000 meth=4 status=-1 req.st=MSG_DATA rsp.st=MSG_RPBEFORE \
req.f=0x0d rsp.f=0x00
  req=0x565321dcd0c0 (f=0xc40080 an=0x8000 pipe=0 tofwd=-1 total=57)
0x565321ee2bf0: [29/Nov/2026:12:22:38.855786] id=11 proto=tcpv4 source=127.0.0.1:54410
  frontend=fe_test (id=5 mode=http), listener=? (id=1) addr=127.0.0.1:49015
  backend=be_test_live (id=6 mode=http) addr=127.0.0.1:45476
  server=test-client1 (id=1) addr=127.0.0.1:45413
  task=0x565321ee2fe0 (state=0x00 nice=0 calls=2 rate=0 exp=0s tmask=0x1 age=1s)
  txn=0x565321ee3150 flags=0x1000000 meth=3 status=-1 req.st=MSG_DONE rsp.st=MSG_RPBEFORE \
req.f=0x0d rsp.f=0x00
0x565321ee4220: [29/Nov/2026:12:22:39.538028] id=21 proto=unix_stream source=unix:1
  frontend=GLOBAL (id=0 mode=tcp), listener=? (id=1) addr=unix:1
  backend=<NONE> (id=-1 mode=-)
  server=<NONE> (id=-1)
  task=0x565321ee3eb0 (state=0x00 nice=-64 calls=1 rate=0 exp=<NEVER> tmask=0x1 age=0s)
0x7f57a403ae80: [29/Nov/2026:12:22:38.845298] id=9 proto=tcpv4 source=127.0.0.1:54406
  frontend=fe_test (id=5 mode=http), listener=? (id=1) addr=127.0.0.1:49015
  backend=be_test_live (id=6 mode=http) addr=127.0.0.1:45460
  server=test-client1 (id=1) addr=127.0.0.1:45413
  task=0x7f57a402eb70 (state=0x00 nice=0 calls=2 rate=0 exp=0s tmask=0x2 age=1s)
  txn=0x7f57a402e860 flags=0x803000 meth=1 status=-1 req.st=MSG_DONE rsp.st=MSG_RPBEFORE \
req.f=0x4c rsp.f=0x00
"""


def test_show_sess_all_is_parsed_into_streams():
    streams = hx.parse_show_sess_all(SHOW_SESS_ALL)
    assert [(s['id'], s['method'], s['backend'], s['server']) for s in streams] == [
        ('10', 'PUT', 'be_test_live', 'test-client2'),
        ('11', 'POST', 'be_test_live', 'test-client1'),
        ('21', None, None, None),
        ('9', 'GET', 'be_test_live', 'test-client1')]
    assert streams[0]['req_state'] == 'MSG_DATA' and streams[0]['age'] == '1s'
    assert streams[1]['frontend'] == 'fe_test' and streams[1]['status'] == -1
    assert hx.parse_show_sess_all('') == []


def test_writes_in_flight_are_unsafe_methods_on_the_stages_backends():
    streams = hx.parse_show_sess_all(SHOW_SESS_ALL)
    found = hx.writes_in_flight(streams, ['be_test_live', 'be_test_upgrade'], 'fe_test')
    assert [s['id'] for s in found] == ['10', '11']
    assert hx.writes_in_flight(streams, ['be_dev_live']) == []
    # A method printed as a name, an unknown number, a write not routed yet, a frozen answer.
    unrouted = [dict(streams[1], backend=None, method='LOCK'),
                dict(streams[1], backend=None, status=503),
                dict(streams[1], backend='be_test_upgrade', method='PATCH')]
    assert len(hx.writes_in_flight(unrouted, ['be_test_upgrade'], 'fe_test')) == 2
    weird = hx.parse_show_sess_all(SHOW_SESS_ALL.replace('meth=3', 'meth=42'))
    assert weird[1]['method'] == 'OTHER'


def test_show_servers_state_gives_the_administrative_state():
    text = ('1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state '
            'srv_uweight\n3 be_t 1 t-c1 127.0.0.1 0 8 1\n3 be_t 2 t-c2 127.0.0.1 2 0 1\n'
            '3 be_t 3 t-c3 127.0.0.1 0 1 1\n')
    assert hx.parse_show_servers_state(text) == {'t-c1': 'drain', 't-c2': 'ready',
                                                 't-c3': 'maint'}
    with pytest.raises(hx.HAProxyError, match='not its table'):
        hx.parse_show_servers_state('Unknown command')
