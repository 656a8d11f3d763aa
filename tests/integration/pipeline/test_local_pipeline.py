"""The embedded pipeline, for real: runzeo and runwsgi under supervisord, HAProxy in front."""
from __future__ import annotations

import json

import pytest
import requests
import testinfra

from support.ansible import recap

# One xdist worker runs the whole pipeline (one sandbox, in file order).
pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]

LIVE = {'dev': ['client1'], 'beta': ['client1', 'client2'], 'test': ['client1', 'client2'],
        'prod': ['client1', 'client2']}
ZEO_OFFSET = {'dev': 10, 'beta': 20, 'test': 30, 'prod': 40}


@pytest.fixture(scope='module')
def host():
    return testinfra.get_host('local://')


def test_every_live_program_runs_and_twins_do_not(pipeline):
    lines = pipeline.program_states()
    status = pipeline.supervisorctl('status').stdout
    for stage, clients in LIVE.items():
        for program in ['%s-zeo' % stage] + ['%s-%s' % (stage, c) for c in clients]:
            assert lines.get(program) == 'RUNNING', status
    assert lines.get('haproxy') == 'RUNNING', status
    assert not [name for name in lines if '_upgrade' in name and lines[name] == 'RUNNING']


def test_twins_are_configured_but_not_started(pipeline, host):
    # site.yml configures the twins, so a promotion only relinks releases and starts programs.
    for twin in ('beta_upgrade', 'test_upgrade', 'prod_upgrade'):
        root = pipeline.sandbox / twin
        for path in ('etc/zeo.conf', 'etc/zope-client1.conf', 'etc/zope-client1.ini',
                     'etc/supervisor-zeo.conf', 'etc/supervisor-clients.conf'):
            assert host.file(str(root / path)).is_file, (twin, path)
        for folder in ('var/filestorage', 'var/blobstorage', 'var/snapshots', 'var/client1',
                       'log'):
            assert host.file(str(root / folder)).is_directory, (twin, folder)
        for program in ('supervisor-zeo.conf', 'supervisor-clients.conf'):
            text = (root / 'etc' / program).read_text()
            assert 'autostart = false' in text and 'startsecs = 0' in text
        assert not (root / 'current').exists() and not (root / 'deployed.json').exists()


def test_every_port_listens(pipeline, host):
    for stage, clients in LIVE.items():
        ports = [pipeline.lb_port(stage), pipeline.port_base + ZEO_OFFSET[stage]]
        ports += [pipeline.port_base + ZEO_OFFSET[stage] + i + 1 for i in range(len(clients))]
        for port in ports:
            assert host.socket('tcp://127.0.0.1:%d' % port).is_listening, (stage, port)


def test_haproxy_admin_socket_is_private(pipeline, host):
    sock = host.file(str(pipeline.runtime_dir / 'haproxy.sock'))
    assert sock.is_socket
    assert sock.mode & 0o007 == 0, oct(sock.mode)


def test_every_stage_answers_through_haproxy_with_its_own_revision(pipeline):
    expected = {'dev': pipeline.revision_of('demo-v2')}
    expected.update({s: pipeline.revision_of('demo-v1') for s in ('beta', 'test', 'prod')})
    for stage, revision in expected.items():
        response = requests.get('http://127.0.0.1:%d/@@zopeops-info' % pipeline.lb_port(stage),
                                timeout=10)
        assert response.status_code == 200, (stage, response.text[:500])
        info = response.json()
        assert info['revision'] == revision and info['stage'] == stage, info
        deployed = json.loads((pipeline.sandbox / stage / 'deployed.json').read_text())
        assert deployed['revision'] == revision


def test_dev_has_the_demo_partners(pipeline):
    response = requests.get('http://127.0.0.1:%d/partners' % pipeline.lb_port('dev'),
                            timeout=10)
    assert response.status_code == 200
    # The initialisation and the push page's grant ran and left their stamps, so an idle
    # site.yml skips both zconsole starts (instance_files stale_stamps).
    var = pipeline.sandbox / 'dev' / 'var'
    assert (var / 'zopeops-init.stamp').read_text().startswith('{"script": "seed_demo_content.py"')
    assert '"role": ' in (var / 'zopeops-push-grant.stamp').read_text()


def test_check_mode_shows_drift_without_changing_it(pipeline):
    """One check-mode run over every host: the drifted host alone reports a change (so check
    mode predicts no change where nothing drifted), and nothing is written. A real second run
    of site.yml (changed=0 everywhere) is the multi-machine suite's
    (tests/integration/multihost: the same roles, over SSH with become)."""
    conf = pipeline.sandbox / 'test' / 'etc' / 'zeo.conf'
    original = conf.read_text()
    conf.write_text(original + '\n# drift\n')
    try:
        proc = pipeline.playbook('site.yml', check=True, diff=True)
        assert proc.returncode == 0, proc.stdout[-6000:]
        assert '# drift' in proc.stdout and 'changed: [test-local]' in proc.stdout
        # Check mode asks the ZODB itself, whatever the stamps say.
        assert 'zopeops-init: /partners exists' in proc.stdout, proc.stdout[-6000:]
        changed = {host for host, totals in recap(proc.stdout).items() if totals['changed']}
        assert changed == {'test-local'}, (changed, proc.stdout[-6000:])
        assert conf.read_text().endswith('# drift\n')
    finally:
        conf.write_text(original)
