"""The haproxy role, applied for real with ansible-playbook: it runs HAProxy under a real
supervisord, and a second run changes nothing, not even a switch made at runtime.
(That its configuration passes ``haproxy -c`` is tested in test_lb_haproxy.py.)"""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
import requests

from support.modules import run_module
from support.paths import VENV_BIN
from support.procs import wait_for

from lbsupport import (LB, haproxy_workers, make_model, process_uids, recap_changed, run_role,
                       short_tmpdir)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUPERVISORD_CONF = """\
[unix_http_server]
file={run}/supervisor.sock
[supervisord]
logfile={root}/supervisor/supervisord.log
pidfile={run}/supervisord.pid
nodaemon=true
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{run}/supervisor.sock
[include]
files = {root}/*/etc/supervisor-*.conf
"""


@pytest.fixture
def root():
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_role_runs_haproxy_under_supervisord_and_keeps_runtime_switches(root, processes):
    run = root / 'run'
    run.mkdir()
    (root / 'root' / 'supervisor').mkdir(parents=True)
    conf = root / 'root' / 'supervisor' / 'supervisord.conf'
    conf.write_text(SUPERVISORD_CONF.format(root=root / 'root', run=run))
    ctl = [str(VENV_BIN / 'supervisorctl'), '-c', str(conf)]
    processes.start([str(VENV_BIN / 'supervisord'), '-c', str(conf)],
                    log_path=str(root / 'supervisord.out'))
    wait_for((run / 'supervisor.sock').exists, 15, 0.1, 'supervisord')

    model = make_model()
    balancer = LB(root, model, processes)
    balancer.start_backends(['test-client1', 'test-client2', 'test_upgrade-client1', 'dev-client1'])
    extra = {'zopeops_supervisorctl': str(VENV_BIN / 'supervisorctl')}
    try:
        started = time.monotonic()
        code, output = run_role(root, model, extra, manage=True)
        timings = [time.monotonic() - started]
        assert code == 0, output
        status = subprocess.run(ctl + ['status', 'haproxy'], capture_output=True, text=True,
                                check=False)
        assert 'RUNNING' in status.stdout, status.stdout
        balancer.wait_all_up()
        assert requests.get(balancer.url('test'), timeout=5).text.startswith('test-client')

        _assert_serves_unprivileged(ctl, balancer)

        switched = run_module('lb_switch', balancer.module_args(stage='test', active='upgrade'))
        assert switched['rc'] == 0 and switched['changed'], switched
        assert requests.post(balancer.url('test'), data=b'x=1', timeout=5).text == (
            'POST test_upgrade-client1')

        # The second run changes nothing: not the files, not the process, not the switch.
        started = time.monotonic()
        code, output = run_role(root, model, extra, manage=True)
        timings.append(time.monotonic() - started)
        assert code == 0 and recap_changed(output) == 0, output
        assert 'test be_test_upgrade' in balancer.active_map.read_text()
        assert balancer.runtime_active('test') == 'be_test_upgrade'
        assert _quiet_get(balancer.url('test')) == 'test_upgrade-client1'
        print('role runs took %s seconds' % ['%.1f' % t for t in timings])
    finally:
        subprocess.run(ctl + ['shutdown'], capture_output=True, timeout=60, check=False)


def _assert_serves_unprivileged(ctl, balancer):
    """Under a supervisord running as root, HAProxy's master keeps root (to reload) and its
    worker serves as the haproxy user; writes go through; the admin socket stays root's."""
    pid = subprocess.run(ctl + ['pid', 'haproxy'], capture_output=True, text=True,
                         check=True).stdout.strip()
    master = int(pid)
    if process_uids(master)[1] != 0:
        return  # a supervisord not run as root: HAProxy has nothing to drop (and may not)
    import pwd
    haproxy_uid = pwd.getpwnam('haproxy').pw_uid
    for worker in haproxy_workers(master):
        assert process_uids(worker) == (haproxy_uid,) * 4, worker
    assert requests.post(balancer.url('test'), data=b'x=1', timeout=5).text in (
        'POST test-client1', 'POST test-client2')
    assert os.stat(balancer.socket).st_uid == 0


def _quiet_get(url):
    try:
        return requests.get(url, timeout=5).text
    except requests.RequestException:
        return None
