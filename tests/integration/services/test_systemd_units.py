"""The systemd units the zeo_server and zope_client roles write pass `systemd-analyze verify`,
with the service user, group and umask of a real host."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from support.paths import ANSIBLE_PLAYBOOK, REPO

pytestmark = pytest.mark.integration


def systemd_analyze():
    """systemd-analyze, installed from the distribution (package systemd) if it is missing: it
    verifies unit files without systemd running as PID 1."""
    found = shutil.which('systemd-analyze')
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which('apt-get'):
        pytest.skip('systemd-analyze is missing and cannot be installed here (needs root and '
                    'apt-get): apt-get install systemd')
    proc = subprocess.run(['apt-get', 'install', '-y', '--no-install-recommends', 'systemd'],
                          capture_output=True, text=True, timeout=600, check=False,
                          env=dict(os.environ, DEBIAN_FRONTEND='noninteractive'))
    found = shutil.which('systemd-analyze')
    if not found:
        pytest.skip('systemd-analyze could not be installed (apt-get install systemd: rc %d, %s)'
                    % (proc.returncode, (proc.stderr or proc.stdout).strip()[-300:]))
    return found


VARIANTS = {'user': ('daemon', ''), 'user-and-group': ('daemon', 'daemon')}


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
    """The units as the roles template them, one folder per VARIANTS entry (one playbook run),
    for an instance whose release is the project's own virtualenv (so that runzeo and runwsgi
    exist where ExecStart names them)."""
    tmp_path = tmp_path_factory.mktemp('units')
    instance = tmp_path / 'srv' / 'prod'
    (instance / 'current').mkdir(parents=True)
    (instance / 'current' / 'venv').symlink_to(sys.prefix)
    facts = {
        'zopeops_instance': 'prod', 'zopeops_instance_dir': str(instance), 'zopeops_stage': 'prod',
        'zopeops_side': 'live', 'zopeops_zeo_address': '10.0.0.2:8100',
        'zopeops_bind_address': '10.0.0.3', 'zopeops_process_manager': 'systemd',
        'zopeops_clients': [{'name': 'client1', 'port': 8080}, {'name': 'client2', 'port': 8081}],
        'zopeops_side_model': {'zeo': {'machine': 'db1'}}, 'ansible_host': 'app1',
    }
    blocks = []
    for name, (user, group) in VARIANTS.items():
        units = tmp_path / name
        units.mkdir()
        blocks.append({'name': 'Render the units: %s.' % name, 'vars': {
            'zopeops_service_user': user, 'zopeops_service_group': group}, 'block': [
                {'name': 'Render the ZEO unit.', 'ansible.builtin.template': {
                    'src': str(REPO / 'roles' / 'zeo_server' / 'templates' / 'zeo.service.j2'),
                    'dest': str(units / 'zopeops-prod-zeo.service'), 'mode': '0644'}},
                {'name': 'Render the client units.', 'ansible.builtin.template': {
                    'src': str(REPO / 'roles' / 'zope_client' / 'templates' / 'zope.service.j2'),
                    'dest': str(units) + '/zopeops-prod-{{ item.name }}.service',
                    'mode': '0644'},
                 'loop': '{{ zope_client_clients }}'}]})
    playbook = tmp_path / 'render.yml'
    playbook.write_text(yaml.safe_dump([{
        'hosts': 'localhost', 'gather_facts': False,
        'vars_files': [str(REPO / 'roles' / 'zeo_server' / 'defaults' / 'main.yml'),
                       str(REPO / 'roles' / 'zope_client' / 'defaults' / 'main.yml')],
        'tasks': blocks}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1')
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), '-i', 'localhost,', '-c', 'local',
                           '-e', 'ansible_python_interpreter=' + sys.executable,
                           '-e', json.dumps(facts), str(playbook)], cwd=str(REPO),
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return {name: sorted((tmp_path / name).iterdir()) for name in VARIANTS}


def verify(analyze, unit):
    proc = subprocess.run([analyze, 'verify', '--man=no', str(unit)], capture_output=True,
                          text=True, timeout=120, check=False)
    # systemd-analyze reports what it ignores (a bad value, an unknown key) on stderr and still
    # exits 0: any line about our unit is a failure.
    about_unit = [line for line in (proc.stdout + proc.stderr).splitlines()
                  if unit.name in line or str(unit) in line]
    return proc.returncode, about_unit


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_the_roles_units_pass_systemd_analyze_verify(rendered, variant):
    analyze = systemd_analyze()
    service_group = VARIANTS[variant][1]
    units = rendered[variant]
    assert [u.name for u in units] == ['zopeops-prod-client1.service',
                                       'zopeops-prod-client2.service',
                                       'zopeops-prod-zeo.service']
    for unit in units:
        text = unit.read_text()
        assert 'User=daemon\n' in text
        assert ('Group=daemon\n' in text) == bool(service_group)
        assert ('UMask=0027\n' if service_group else 'UMask=0077\n') in text
        code, problems = verify(analyze, unit)
        assert code == 0 and not problems, '%s:\n%s\n%s' % (unit.name, '\n'.join(problems), text)


def test_verify_catches_a_broken_unit(rendered, tmp_path):
    """The check above can fail: a unit with a bad value and a missing program does."""
    analyze = systemd_analyze()
    unit = tmp_path / 'zopeops-prod-zeo.service'
    unit.write_text(rendered['user'][-1].read_text().replace('UMask=0077', 'UMask=private')
                    .replace('/venv/bin/runzeo', '/venv/bin/no-such-runzeo'))
    code, problems = verify(analyze, unit)
    assert code != 0 or problems
    assert any('UMask' in line or 'mode' in line for line in problems), problems
