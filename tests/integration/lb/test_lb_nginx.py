"""lb_switch with balancer=nginx against a real nginx with its own prefix, configuration,
pid file and port, and real HTTP backends."""
from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import requests

from support.modules import run_module
from support.ports import free_port
from support.procs import wait_for

from ansible_collections.zopeops.stages.plugins.module_utils import nginx as ngx

from lbsupport import (BACKEND, LB, _connects, make_model, recap_changed, run_role,
                       short_tmpdir)

pytestmark = pytest.mark.integration

NGINX = shutil.which('nginx') or '/usr/sbin/nginx'

CONF = """\
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
{user}
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    include {root}/upstream-beta.conf;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://zopeops_beta; }}
    }}
}}
"""


@pytest.fixture
def nginx(tmp_path, processes):

    if not os.path.exists(NGINX):
        pytest.skip('nginx is not installed')
    (tmp_path / 'tmp').mkdir()
    port = free_port()
    sides = {'live': [free_port(), free_port()], 'upgrade': [free_port()]}
    for side, ports in sides.items():
        for index, backend_port in enumerate(ports):
            processes.start([sys.executable, str(BACKEND), str(backend_port),
                             '%s-%d' % (side, index)])
            wait_for(lambda p=backend_port: _connects(p), 10, 0.05, 'backend %d' % backend_port)
    conf = tmp_path / 'nginx.conf'
    # As root nginx would switch its workers to 'nobody', who cannot enter pytest's tmp dir.
    user = 'user root;' if os.geteuid() == 0 else ''
    conf.write_text(CONF.format(root=tmp_path, port=port, user=user))
    include = tmp_path / 'upstream-beta.conf'
    include.write_text(ngx.render_upstream(
        'beta', 'live', ['127.0.0.1:%d' % p for p in sides['live']]))
    processes.start([NGINX, '-c', str(conf), '-p', str(tmp_path)],
                    log_path=str(tmp_path / 'nginx.out'))
    wait_for(lambda: _connects(port), 10, 0.05, 'nginx on port %d' % port)
    wait_for((tmp_path / 'nginx.pid').exists, 10, 0.05, 'nginx pid file')

    class Nginx:
        url = 'http://127.0.0.1:%d/' % port

        @staticmethod
        def args(active, **extra):
            values = {'balancer': 'nginx', 'stage': 'beta', 'active': active,
                      'nginx_conf': str(conf), 'nginx_include': str(include),
                      'nginx_binary': NGINX, 'nginx_pid_file': str(tmp_path / 'nginx.pid'),
                      'nginx_prefix': str(tmp_path),
                      'servers': ['127.0.0.1:%d' % p for p in sides[active]]}
            values.update(extra)
            return values

        @staticmethod
        def serves(prefix):
            # A reload is asynchronous: old workers answer until the new ones have started.
            wait_for(lambda: all(requests.get(Nginx.url, timeout=5).text.startswith(prefix)
                                 for request_number in range(4)), 15, 0.1, 'nginx to serve ' + prefix)
            return True

    Nginx.include = include
    Nginx.sides = sides
    return Nginx


def test_nginx_switches_upstream_and_back(nginx):
    assert nginx.serves('live-')
    result = run_module('lb_switch', nginx.args('upgrade'), diff=True)
    assert result['rc'] == 0 and result['changed'] is True, result
    assert result['before']['active'] == 'live' and result['after']['active'] == 'upgrade'
    assert nginx.serves('upgrade-')
    assert ngx.active_side(nginx.include.read_text()) == 'upgrade'

    again = run_module('lb_switch', nginx.args('upgrade'))
    assert again['rc'] == 0 and again['changed'] is False

    check = run_module('lb_switch', nginx.args('live'), check=True)
    assert check['changed'] is True and ngx.active_side(nginx.include.read_text()) == 'upgrade'

    back = run_module('lb_switch', nginx.args('live'))
    assert back['rc'] == 0 and back['changed'] is True
    assert nginx.serves('live-')


def test_nginx_refuses_a_broken_file_and_restores_the_old_one(nginx):
    before = nginx.include.read_text()
    result = run_module('lb_switch', nginx.args(
        'upgrade', servers=['no-such-host.invalid:80'], gate=False))
    assert result['rc'] != 0 and result.get('failed'), result
    assert 'old file was restored' in result['msg'] and 'no-such-host.invalid' in result['msg']
    assert nginx.include.read_text() == before
    assert nginx.serves('live-')


def test_nginx_gate_refuses_a_target_that_does_not_answer(nginx):
    before = nginx.include.read_text()
    result = run_module('lb_switch', nginx.args('upgrade', servers=['127.0.0.1:%d' % free_port()]))
    assert result['rc'] != 0 and 'Nothing was changed' in result['msg'], result
    assert nginx.include.read_text() == before


@pytest.mark.slow
def test_nginx_role_renders_a_valid_configuration_that_keeps_runtime_switches(processes):

    if not os.path.exists(NGINX):
        pytest.skip('nginx is not installed')
    root = short_tmpdir()
    try:
        model = make_model()
        code, output = run_role(root, model, role='nginx')
        assert code == 0, output
        etc = root / 'root' / 'lb' / 'etc' / 'nginx'
        main, prefix = etc / 'nginx.conf', root / 'root' / 'lb' / 'nginx'
        test_include = etc / 'upstream-test.conf'
        assert ngx.active_side(test_include.read_text()) == 'live'
        lb = LB(root, model, processes)
        lb.start_backends(['test-client1', 'test-client2', 'test_upgrade-client1'])
        processes.start([NGINX, '-c', str(main), '-p', str(prefix)],
                        log_path=str(root / 'nginx.out'))
        port = model['stages']['test']['lb_port']
        wait_for(lambda: _connects(port), 10, 0.05, 'nginx')
        assert requests.get(lb.url('test'), timeout=5).text.startswith('test-client')

        # Drive lb_switch from the role's facts, as a playbook would.
        facts = json.loads((root / 'root' / 'zopeops_lb.json').read_text())
        assert facts['balancer'] == 'nginx' and facts['nginx_conf'] == str(main)
        result = run_module('lb_switch', {
            'balancer': 'nginx', 'stage': 'test', 'active': 'upgrade',
            'nginx_conf': facts['nginx_conf'], 'nginx_prefix': facts['nginx_prefix'],
            'nginx_include': facts['nginx_include_dir'] + '/upstream-test.conf',
            'nginx_binary': facts['nginx_binary'], 'nginx_pid_file': facts['nginx_pid_file'],
            'server_options': facts['server_options'],
            'servers': model['stages']['test']['upgrade']['clients']})
        assert result['rc'] == 0 and result['changed'], result
        wait_for(lambda: requests.get(lb.url('test'), timeout=5).text == 'test_upgrade-client1',
                 15, 0.1, 'nginx to serve the twin')

        code, output = run_role(root, model, role='nginx')
        assert code == 0 and recap_changed(output) == 0, output
        assert ngx.active_side(test_include.read_text()) == 'upgrade'
    finally:
        shutil.rmtree(root, ignore_errors=True)
