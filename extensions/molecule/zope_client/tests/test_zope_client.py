"""zope_client: the Zope client runs, listens and serves the head's revision over HTTP."""
from __future__ import annotations

from zopeops_molecule import CLIENT, get_json


def test_client_runs_under_supervisord(host, sandbox):
    pid = sandbox.program_pid('dev-' + CLIENT)
    assert pid > 0
    assert 'runwsgi' in host.process.get(pid=pid).args


def test_client_listens_on_its_port(host, sandbox):
    assert host.socket('tcp://127.0.0.1:%d' % sandbox.client_port).is_listening


def test_client_serves_the_revision_of_main(sandbox):
    status, info = get_json('http://127.0.0.1:%d/@@zopeops-info' % sandbox.client_port)
    assert status == 200
    assert info['revision'] == sandbox.main_revision()
    assert info['stage'] == 'dev'
    assert info['client'] == CLIENT


def test_client_configuration_files(host, sandbox):
    etc = sandbox.instance_dir / 'etc'
    for name in ('zope-%s.conf' % CLIENT, 'zope-%s.ini' % CLIENT, 'supervisor-clients.conf'):
        conf = host.file(str(etc / name))
        assert conf.is_file, name
        assert conf.mode == 0o644, name
