"""The bare baseline of one promotion with the ``upstream`` data policy: the same inherent
steps as ``playbooks/promote.yml``, by hand, on the same local sandbox, without Ansible.

    baseline_promote.py --sandbox DIR --stage test [--port-base N] [--json]

For stage S with predecessor P (pipeline dev -> beta -> test -> prod) and twin S_upgrade:
  twin_data      cp P's Data.fs (and its index) to the twin, hard-link P's blobs (cp -al),
                 remove the twin's ZEO client caches and its inituser
  twin_code      relink the twin's ``current`` to P's release
  twin_start     supervisorctl start the twin's ZEO and clients; wait for HTTP 200 on each
  to_twin        wait until HAProxy's health checks pass on the twin's servers, then
                 ``set map`` active.map S -> be_S_upgrade on the admin socket
  live_stop      supervisorctl stop the stage's clients and ZEO
  live_data      cp the twin's Data.fs into the stage, hard-link the twin's blobs, caches gone
  live_code      relink the stage's ``current`` to P's release
  live_start     supervisorctl start the stage's ZEO and clients; wait for HTTP 200
  to_live        wait for the health checks, ``set map`` S -> be_S_live
  twin_stop      supervisorctl stop the twin

What it leaves out, and the playbook does: the lock, state and ledger; checks of the inputs
and of the balancers; a consistent, verified and packed snapshot (this copies a file that
its ZEO server is writing); the write freeze and the catch-up at each switch (writes that
reach the twin after its Data.fs is copied into the stage are lost here); proof that every
client serves the expected revision; the previous Data.fs kept for a rollback.

Paths and names follow docs/architecture.md: <sandbox>/<instance>/{current, etc, var},
supervisord programs <instance>-zeo and <instance>-<client>, the HAProxy admin socket
/tmp/zopeops-<sha1(sandbox)[:10]>/haproxy.sock. Client ports are read from each client's
``etc/zope-<client>.ini`` (inventories/local: zopeops_port_base + 31.. for test, + 36.. for
its twin). Standard library only; prints one JSON object with each step's seconds.
"""
from __future__ import annotations

import argparse
import configparser
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

PIPELINE = ['dev', 'beta', 'test', 'prod']


class Sandbox:
    def __init__(self, root, supervisorctl=None):
        self.root = os.path.abspath(root)
        run = '/tmp/zopeops-' + hashlib.sha1(self.root.encode()).hexdigest()[:10]
        self.haproxy_socket = os.path.join(run, 'haproxy.sock')
        self.active_map = os.path.join(self.root, 'lb', 'etc', 'active.map')
        self.supervisor_conf = os.path.join(self.root, 'supervisor', 'supervisord.conf')
        self.supervisorctl = supervisorctl or os.path.join(os.path.dirname(sys.executable),
                                                           'supervisorctl')

    def instance(self, name):
        return os.path.join(self.root, name)

    def clients(self, instance):
        """[(client name, port)] from the instance's etc/zope-<client>.ini files."""
        found = []
        for ini in sorted(glob.glob(os.path.join(self.instance(instance), 'etc', 'zope-*.ini'))):
            name = re.match(r'zope-(.+)\.ini$', os.path.basename(ini)).group(1)
            parser = configparser.RawConfigParser()
            parser.read(ini)
            found.append((name, int(parser.get('server:main', 'port'))))
        return found

    def ctl(self, *args):
        proc = subprocess.run([self.supervisorctl, '-c', self.supervisor_conf, *args],
                              capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode not in (0, 3, 4) or (args[0] != 'status' and 'ERROR' in proc.stdout):
            # 3: some not running, 4: no such process (status only)
            raise SystemExit('supervisorctl %s: %s %s'
                             % (' '.join(args), proc.stdout, proc.stderr))
        return proc.stdout

    def haproxy(self, command):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(self.haproxy_socket)
            sock.sendall(command.encode() + b'\n')
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b''.join(chunks).decode()


def copy_data(src, dest):
    """cp Data.fs (and its index) from instance folder ``src`` to ``dest``; blobs by hard
    links (cp -al); the ZEO client caches of ``dest`` are removed (they describe old data)."""
    sfs, dfs = os.path.join(src, 'var', 'filestorage'), os.path.join(dest, 'var', 'filestorage')
    for leftover in glob.glob(os.path.join(dfs, 'Data.fs*')):
        os.unlink(leftover)
    if os.path.exists(os.path.join(sfs, 'Data.fs.index')):
        subprocess.run(['cp', os.path.join(sfs, 'Data.fs.index'), dfs], check=True)
    subprocess.run(['cp', os.path.join(sfs, 'Data.fs'), os.path.join(dfs, 'Data.fs')],
                   check=True)
    dblobs = os.path.join(dest, 'var', 'blobstorage')
    shutil.rmtree(dblobs, ignore_errors=True)
    subprocess.run(['cp', '-al', os.path.join(src, 'var', 'blobstorage'), dblobs], check=True)
    for cache in glob.glob(os.path.join(dest, 'var', '*', '*.zec')):
        os.unlink(cache)


def relink(instance_dir, release):
    link = os.path.join(instance_dir, 'current')
    tmp = link + '.baseline-tmp'
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(release, tmp)
    os.replace(tmp, link)


def wait_http(ports, path='/@@zopeops-info', timeout=300):
    deadline = time.monotonic() + timeout
    for port in ports:
        url = 'http://127.0.0.1:%d%s' % (port, path)
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit('no HTTP 200 from %s within %ds' % (url, timeout))
            time.sleep(0.05)


def wait_checks_pass(sandbox, backend, timeout=60):
    """HAProxy's health checks passed on every server of ``backend`` (show stat: status UP)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [line.split(',') for line in sandbox.haproxy('show stat').splitlines()
                if line.startswith(backend + ',')]
        servers = [r for r in rows if r[1] not in ('FRONTEND', 'BACKEND')]
        if servers and all(r[17] == 'UP' for r in servers):
            return
        if time.monotonic() > deadline:
            raise SystemExit('HAProxy backend %s not UP within %ds' % (backend, timeout))
        time.sleep(0.05)


def promote(sandbox, stage):
    predecessor = PIPELINE[PIPELINE.index(stage) - 1]
    twin = stage + '_upgrade'
    live_dir, twin_dir = sandbox.instance(stage), sandbox.instance(twin)
    release = os.path.realpath(os.path.join(sandbox.instance(predecessor), 'current'))
    twin_clients, live_clients = sandbox.clients(twin), sandbox.clients(stage)
    steps = []

    def step(name, func, *args):
        started = time.perf_counter()
        func(*args)
        steps.append({'step': name, 'seconds': round(time.perf_counter() - started, 3),
                      'at': time.time()})

    def twin_data():
        copy_data(sandbox.instance(predecessor), twin_dir)
        if os.path.exists(os.path.join(twin_dir, 'inituser')):
            os.unlink(os.path.join(twin_dir, 'inituser'))

    def start(instance, clients):
        programs = [instance + '-zeo'] + ['%s-%s' % (instance, c) for c, _p in clients]
        if 'no such process' in sandbox.ctl('status', *programs):
            # site.yml writes a twin's programs but supervisord loads them at the first
            # start (zeo_service does the same reread/update).
            sandbox.ctl('reread')
            sandbox.ctl('update', *programs)
        sandbox.ctl('start', *programs)
        wait_http([port for _c, port in clients])

    def switch(side):
        backend = 'be_%s_%s' % (stage, side)
        wait_checks_pass(sandbox, backend)
        answer = sandbox.haproxy('set map %s %s %s' % (sandbox.active_map, stage, backend))
        if answer.strip():
            raise SystemExit('set map: %s' % answer)

    def stop(instance, clients):
        sandbox.ctl('stop', *['%s-%s' % (instance, c) for c, _p in clients], instance + '-zeo')

    step('twin_data', twin_data)
    step('twin_code', relink, twin_dir, release)
    step('twin_start', start, twin, twin_clients)
    step('to_twin', switch, 'upgrade')
    step('live_stop', stop, stage, live_clients)
    step('live_data', copy_data, twin_dir, live_dir)
    step('live_code', relink, live_dir, release)
    step('live_start', start, stage, live_clients)
    step('to_live', switch, 'live')
    step('twin_stop', stop, twin, twin_clients)
    return steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--sandbox', required=True)
    parser.add_argument('--stage', default='test', choices=PIPELINE[1:])
    parser.add_argument('--supervisorctl', default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    steps = promote(Sandbox(args.sandbox, args.supervisorctl), args.stage)
    print(json.dumps({'stage': args.stage, 'seconds': round(time.perf_counter() - started, 3),
                      'steps': steps}))


if __name__ == '__main__':
    main()
