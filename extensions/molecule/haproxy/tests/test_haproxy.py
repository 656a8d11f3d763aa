"""haproxy: HAProxy runs, its admin socket is private, and the stage answers through it."""
from __future__ import annotations

from zopeops_molecule import get_json


def test_haproxy_runs_under_supervisord(host, sandbox):
    pid = sandbox.program_pid('haproxy')
    assert pid > 0
    assert 'haproxy' in host.process.get(pid=pid).args


def test_the_stage_frontend_listens(host, sandbox):
    assert host.socket('tcp://127.0.0.1:%d' % sandbox.lb_port).is_listening


def test_the_admin_socket_is_for_its_owner_only(host, sandbox):
    sock = host.file(str(sandbox.runtime_dir / 'haproxy.sock'))
    assert sock.exists and sock.is_socket
    assert sock.mode == 0o600


def test_configuration_files(host, sandbox):
    etc = sandbox.root / 'lb' / 'etc'
    cfg = host.file(str(etc / 'haproxy.cfg'))
    assert cfg.is_file and cfg.mode == 0o644
    assert 'haproxy.sock' in cfg.content_string
    for name in ('active.map', 'frozen.map'):
        assert host.file(str(etc / name)).is_file, name


def test_the_stage_answers_through_the_load_balancer(sandbox):
    status, info = get_json('http://127.0.0.1:%d/@@zopeops-info' % sandbox.lb_port)
    assert status == 200
    assert info['stage'] == 'dev'
    assert info['revision'] == sandbox.main_revision()
