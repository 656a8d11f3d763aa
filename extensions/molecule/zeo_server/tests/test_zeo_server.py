"""zeo_server: the stage's ZEO server runs under supervisord and listens on its port."""
from __future__ import annotations


def test_zeo_runs_under_supervisord(host, sandbox):
    pid = sandbox.program_pid('dev-zeo')
    assert pid > 0
    process = host.process.get(pid=pid)
    assert 'runzeo' in process.args


def test_zeo_listens_on_its_port(host, sandbox):
    assert host.socket('tcp://127.0.0.1:%d' % sandbox.zeo_port).is_listening


def test_zeo_configuration_and_data_folders(host, sandbox):
    conf = host.file(str(sandbox.instance_dir / 'etc' / 'zeo.conf'))
    assert conf.is_file and conf.mode == 0o644
    assert '%d' % sandbox.zeo_port in conf.content_string
    program = host.file(str(sandbox.instance_dir / 'etc' / 'supervisor-zeo.conf'))
    assert program.is_file and program.mode == 0o644
    # The data is the service's alone: 0700 without zopeops_service_group (0750 with one).
    assert host.file(str(sandbox.instance_dir / 'var' / 'filestorage')).mode == 0o700
    assert host.file(str(sandbox.instance_dir / 'var' / 'filestorage' / 'Data.fs')).is_file
