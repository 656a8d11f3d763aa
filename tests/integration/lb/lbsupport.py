"""Helpers of the load-balancer integration tests: render with the real haproxy role, run a
real HAProxy and tiny HTTP backends, and talk to them."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import requests

from support.paths import ANSIBLE_PLAYBOOK, REPO
from support.ports import free_port
from support.procs import wait_for

from ansible_collections.zopeops.stages.plugins.module_utils.haproxy import RuntimeAPI

HERE = pathlib.Path(__file__).resolve().parent
BACKEND = HERE / 'backend.py'
HAPROXY = shutil.which('haproxy') or '/usr/sbin/haproxy'
# Fast checks so that a stopped test backend is DOWN within about a second.
FAST_CHECKS = {'haproxy_check_inter': '300ms', 'haproxy_check_fastinter': '100ms',
               'haproxy_check_downinter': '200ms', 'haproxy_check_rise': 1,
               'haproxy_check_fall': 2, 'haproxy_timeout_connect': '1s'}


def client(instance, name, port):
    return {'host': instance + '-local', 'name': name, 'address': '127.0.0.1', 'port': port,
            'id': '%s-%s' % (instance, name)}


def make_model():
    """dev without a twin; test with two live clients and a one-client twin."""
    def side(instance, side_name, clients):
        return {'instance': instance, 'side': side_name, 'clients': clients,
                'zeo': {'host': instance + '-local', 'address': '127.0.0.1', 'port': free_port()},
                'hosts': [instance + '-local']}
    stages = {
        'dev': {'name': 'dev', 'index': 0, 'predecessor': None, 'successor': 'test',
                'lb_port': free_port(), 'data_policy': 'upstream',
                'live': side('dev', 'live', [client('dev', 'client1', free_port())]),
                'upgrade': None},
        'test': {'name': 'test', 'index': 1, 'predecessor': 'dev', 'successor': None,
                 'lb_port': free_port(), 'data_policy': 'upstream',
                 'live': side('test', 'live', [client('test', 'client1', free_port()),
                                               client('test', 'client2', free_port())]),
                 'upgrade': side('test_upgrade', 'upgrade',
                                 [client('test_upgrade', 'client1', free_port())])},
    }
    return {'pipeline': ['dev', 'test'], 'stages': stages, 'lb_hosts': ['lb-local']}


def short_tmpdir():
    """A world-traversable folder under /tmp (short socket paths; other users can reach it)."""
    path = tempfile.mkdtemp(prefix='zlb-')
    os.chmod(path, 0o755)
    return pathlib.Path(path)


def run_role(root, model, extra=None, process_manager='supervisord', manage=False,
             role='haproxy'):
    """Apply roles/<role> with ansible-playbook; return (returncode, output)."""
    variables = {'zopeops_root': str(root / 'root'), 'zopeops_runtime_dir': str(root / 'run'),
                 'zopeops_process_manager': process_manager, 'zopeops_model': model,
                 role + '_manage_service': manage}
    if role == 'haproxy':
        variables['haproxy_binary'] = HAPROXY
        variables.update(FAST_CHECKS)
    variables.update(extra or {})
    vars_file = root / 'vars.json'
    vars_file.write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_STDOUT_CALLBACK='default', ANSIBLE_CALLBACK_RESULT_FORMAT='json')
    proc = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), '-i', 'localhost,', str(HERE / (role + '_role.yml')),
         '-e', '@' + str(vars_file)],
        cwd=str(REPO), capture_output=True, text=True, env=env, timeout=240, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def recap_changed(output):
    for line in output.splitlines():
        if line.startswith('localhost') and 'changed=' in line:
            return int(line.split('changed=')[1].split()[0])
    raise AssertionError('no PLAY RECAP in:\n' + output)


class LB:
    """A running HAProxy with its backends, from a rendered configuration."""

    def __init__(self, root, model, processes):
        self.root = root
        self.model = model
        self.processes = processes
        self.etc = root / 'root' / 'lb' / 'etc'
        self.config = self.etc / 'haproxy.cfg'
        self.active_map = self.etc / 'active.map'
        self.frozen_map = self.etc / 'frozen.map'
        self.socket = root / 'run' / 'haproxy.sock'
        self.backends = {}
        self.haproxy = None

    # -- processes --------------------------------------------------------------------------
    def start_backend(self, client_id):
        return self.start_backends([client_id])[0]

    def start_backends(self, client_ids):
        """Start the test backends of ``client_ids`` together, then wait until each listens."""
        clients = {c['id']: c for stage in self.model['stages'].values()
                   for side in ('live', 'upgrade') for c in (stage[side] or {}).get('clients', [])}
        missing = [client_id for client_id in client_ids if client_id not in clients]
        if missing:
            raise KeyError(missing[0])
        procs = []
        for client_id in client_ids:
            port = clients[client_id]['port']
            procs.append(self.processes.start([sys.executable, str(BACKEND), str(port),
                                               client_id]))
            self.backends[client_id] = procs[-1]
        for client_id in client_ids:
            port = clients[client_id]['port']
            wait_for(lambda port=port: _connects(port), 10, 0.05,
                     'backend %s on port %d' % (client_id, port))
        return procs

    def stop_backend(self, client_id):
        self.processes.stop(self.backends.pop(client_id))

    def start_haproxy(self, config=None):
        if self.socket.exists():
            self.socket.unlink()
        self.haproxy = self.processes.start(
            [HAPROXY, '-W', '-db', '-f', str(config or self.config)],
            log_path=str(self.root / 'haproxy.log'))
        wait_for(self.socket.exists, 10, 0.05, 'the HAProxy admin socket')
        return self.haproxy

    def reload_haproxy(self):
        os.kill(self.haproxy.pid, signal.SIGUSR2)
        time.sleep(0.5)
        wait_for(lambda: _safe(lambda: self.api().show_stat()), 10, 0.1, 'HAProxy after reload')

    # -- HAProxy ----------------------------------------------------------------------------
    def api(self):
        return RuntimeAPI(str(self.socket), timeout=5)

    def status(self, backend, server):
        return self.api().backend_stats(backend)['servers'][server]['status']

    def wait_status(self, backend, server, wanted, timeout=15):
        wait_for(lambda: self.status(backend, server) == wanted, timeout, 0.05,
                 '%s/%s to be %s' % (backend, server, wanted))

    def wait_all_up(self, timeout=15):
        for stage in self.model['stages'].values():
            for side in ('live', 'upgrade'):
                for c in (stage[side] or {}).get('clients', []):
                    if c['id'] in self.backends:
                        self.wait_status('be_%s_%s' % (stage['name'], side), c['id'], 'UP',
                                         timeout)

    def wait_in_flight(self, backend, methods, timeout=15):
        """Until HAProxy holds a stream of each of ``methods`` on ``backend`` (a request sent
        from a thread has reached it: no fixed sleep, which a loaded machine outruns)."""
        def there():
            held = [s['method'] for s in self.api().streams() if s['backend'] == backend]
            return all(held.count(m) >= methods.count(m) for m in set(methods))
        wait_for(lambda: _safe(there), timeout, 0.05,
                 '%s in flight on %s' % (', '.join(methods), backend))

    def runtime_active(self, stage):
        return self.api().get_map(str(self.active_map), stage)

    # -- HTTP through the frontend ----------------------------------------------------------
    def url(self, stage, path='/'):
        return 'http://127.0.0.1:%d%s' % (self.model['stages'][stage]['lb_port'], path)

    def get(self, stage, path='/', **kwargs):
        return requests.get(self.url(stage, path), timeout=10, **kwargs)

    def post(self, stage, path='/', **kwargs):
        return requests.post(self.url(stage, path), data=b'x=1', timeout=10, **kwargs)

    def module_args(self, **args):
        base = {'socket': str(self.socket), 'map_file': str(self.active_map),
                'frozen_map_file': str(self.frozen_map), 'timeout': 5, 'drain_timeout': 10}
        base.update(args)
        return base


def _connects(port):
    import socket
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(('127.0.0.1', port)) == 0


def _safe(fn):
    try:
        return fn() or True
    except Exception:  # noqa: BLE001 - polling until HAProxy answers again
        return False


def process_uids(pid):
    """(real, effective, saved, filesystem) uid of a process, from /proc/<pid>/status."""
    with open('/proc/%d/status' % pid) as handle:
        for line in handle:
            if line.startswith('Uid:'):
                return tuple(int(uid) for uid in line.split()[1:5])
    raise AssertionError('no Uid line for pid %d' % pid)


def child_pids(pid):
    """The PIDs whose parent is ``pid`` (HAProxy's master-worker: the master's workers)."""
    children = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as handle:
                stat = handle.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        if int(stat.rsplit(')', 1)[1].split()[1]) == pid:
            children.append(int(entry))
    return children


def haproxy_workers(master_pid, timeout=10):
    """The worker PIDs of the HAProxy master ``master_pid`` (waits until there is one)."""
    found = []
    wait_for(lambda: found.extend(child_pids(master_pid)) or found, timeout, 0.05,
             'an HAProxy worker of master %d' % master_pid)
    return found
