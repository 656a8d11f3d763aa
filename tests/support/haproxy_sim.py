"""A simulated HAProxy CLI for the balancer modules' unit tests (lb_switch, lb_health): the real
runtime API client and parsers, a fake socket end."""
from __future__ import annotations

from ansible_collections.zopeops.stages.plugins.module_utils import haproxy as hx

COLUMNS = ['pxname', 'svname', 'qcur', 'qmax', 'scur', 'status', 'check_status', 'addr']


class SimulatedHAProxy(hx.RuntimeAPI):
    """Answers the CLI commands lb_switch sends the way HAProxy 2.6 does."""

    def __init__(self, tmp_path, servers=None, maps=None, level='admin'):
        super().__init__(str(tmp_path / 'haproxy.sock'), timeout=1)
        self.map_path = str(tmp_path / 'active.map')
        self.frozen_path = str(tmp_path / 'frozen.map')
        default = {'test': 'be_test_live', 'dev': 'be_dev_live'}
        self.map_data = {self.map_path: dict(maps or default),
                         self.frozen_path: {'test': '0', 'dev': '0'}}
        self.servers = servers or {
            'be_dev_live': {'dev-client1': ['UP', 0]},
            'be_dev_upgrade': {},
            'be_test_live': {'test-client1': ['UP', 0], 'test-client2': ['UP', 0]},
            'be_test_upgrade': {'test_upgrade-client1': ['UP', 0]},
        }
        self.backend_scur = {}
        self.sessions = []  # (method number, backend) of the streams `show sess all` lists
        self.level = level
        self.check_status = 'L7OK'
        self.admin = {}  # (backend, server) -> ready | drain | maint, as `set server` left it
        self.failing = set()  # servers whose health checks fail: DOWN whatever their state

    def execute(self, command):
        self.sent.append(command)
        words = command.split()
        if command == 'show stat':
            lines = ['# ' + ','.join(COLUMNS)]
            for backend, servers in self.servers.items():
                for name, (status, scur) in servers.items():
                    status = 'DOWN' if name in self.failing else status
                    check = 'L7OK' if backend == 'be_test_live' else self.check_status
                    lines.append(','.join([backend, name, '0', '0', str(scur), status, check,
                                           '127.0.0.1:1']))
                lines.append(','.join([backend, 'BACKEND', '0', '0',
                                       str(self.backend_scur.get(backend, 0)), 'UP', '', '']))
            return '\n'.join(lines)
        if command == 'show map':
            return '# id (file) description\n' + '\n'.join(
                '%d (%s) pattern loaded from file' % (i, path)
                for i, path in enumerate(self.map_data))
        if command == 'show cli level':
            return self.level
        if command == 'show sess all':
            return ''.join(
                '0x55%04x: [29/Nov/2026:12:22:38.846171] id=%d proto=tcpv4 source=127.0.0.1:1\n'
                '  frontend=fe_test (id=5 mode=http), listener=? (id=1) addr=127.0.0.1:2\n'
                '  backend=%s (id=6 mode=http) addr=127.0.0.1:3\n'
                '  server=test-client1 (id=1) addr=127.0.0.1:4\n'
                '  task=0x1 (state=0x00 nice=0 calls=2 rate=0 exp=0s tmask=0x1 age=1s)\n'
                '  txn=0x2 flags=0x1000000 meth=%d status=-1 req.st=MSG_DONE rsp.st=MSG_RPBEFORE'
                ' req.f=0x0d rsp.f=0x00\n' % (n, n, backend, method)
                for n, (method, backend) in enumerate(self.sessions))
        if words[:2] == ['get', 'map']:
            value = self.map_data[words[2]].get(words[3])
            if value is None:
                return 'type=str, case=sensitive, found=no'
            return 'type=str, found=yes, key="%s", value="%s"' % (words[3], value)
        if words[:2] in (['set', 'map'], ['add', 'map']):
            if words[0] == 'set' and words[3] not in self.map_data[words[2]]:
                return 'entry not found.'
            self.map_data[words[2]][words[3]] = words[4]
            return ''
        if words[:3] == ['show', 'servers', 'state']:
            lines = ['1', '# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state']
            for number, name in enumerate(self.servers[words[3]]):
                admin = self.admin.get((words[3], name), 'ready')
                lines.append('3 %s %d %s 127.0.0.1 2 %d' % (words[3], number + 1, name, {
                    'ready': 0, 'drain': 0x08, 'maint': 0x01}[admin]))
            return '\n'.join(lines)
        if words[:2] == ['set', 'server']:
            if self.level != 'admin':
                return 'Permission denied'
            backend, server = words[2].split('/')
            if backend not in self.servers:
                return 'No such backend.'
            if server not in self.servers[backend]:
                return 'No such server.'
            self.servers[backend][server][0] = {'ready': 'UP', 'drain': 'DRAIN',
                                                'maint': 'MAINT'}[words[4]]
            self.admin[(backend, server)] = words[4]
            return ''
        return 'Unknown command: ' + command
