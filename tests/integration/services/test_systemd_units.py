"""The systemd units the zeo_server and zope_client roles write pass `systemd-analyze verify`,
with the service user, group and umask of a real host."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

from support import nspawn
from support.modules import run_module as run_module_on_host
from support.paths import ANSIBLE_PLAYBOOK, REPO
from support.ports import free_port, port_is_free

pytestmark = [pytest.mark.integration, pytest.mark.slow]


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
ROLES = REPO / 'roles'


def instance_facts(instance, zeo_port=8100, client_ports=(8080, 8081), bind='10.0.0.3'):
    """The pipeline role's facts for one instance whose ZEO and clients run on this machine."""
    return {
        'zopeops_instance': 'prod', 'zopeops_instance_dir': str(instance), 'zopeops_stage': 'prod',
        'zopeops_side': 'live', 'zopeops_zeo_address': '%s:%d' % (bind, zeo_port),
        'zopeops_bind_address': bind, 'zopeops_process_manager': 'systemd',
        'zopeops_clients': [{'name': 'client%d' % (index + 1), 'port': port}
                            for index, port in enumerate(client_ports)],
        'zopeops_side_model': {'zeo': {'machine': 'app1'}}, 'ansible_host': 'app1',
    }


def render(folder, facts, variants, configs=False):
    """Template the roles' units (and, with ``configs``, zeo.conf and each client's zope.conf
    and zope.ini into the instance's etc/) as the roles do: one folder per variant
    (service user, group), one playbook run."""
    def template(role, src, dest, **extra):
        return dict({'name': 'Render %s.' % src, 'ansible.builtin.template': {
            'src': str(ROLES / role / 'templates' / src), 'dest': dest, 'mode': '0644'}}, **extra)

    clients = {'loop': '{{ zope_client_clients }}'}
    etc = facts['zopeops_instance_dir'] + '/etc'
    blocks = []
    for name, (user, group) in variants.items():
        units = folder / name
        units.mkdir()
        tasks = [template('zeo_server', 'zeo.service.j2', str(units / 'zopeops-prod-zeo.service')),
                 template('zope_client', 'zope.service.j2',
                          str(units) + '/zopeops-prod-{{ item.name }}.service', **clients)]
        if configs:
            tasks += [template('zeo_server', 'etc/zeo.conf.j2', etc + '/zeo.conf'),
                      dict(template('zope_client', 'etc/zope.conf.j2',
                                    etc + '/zope-{{ item.name }}.conf', **clients),
                           vars={'zope_client_conf_name': '{{ item.name }}',
                                 'zope_client_conf_persistent_cache': True}),
                      template('zope_client', 'etc/zope.ini.j2',
                               etc + '/zope-{{ item.name }}.ini', **clients)]
        blocks.append({'name': 'Render: %s.' % name, 'block': tasks, 'vars': {
            'zopeops_service_user': user, 'zopeops_service_group': group}})
    playbook = folder / 'render.yml'
    playbook.write_text(yaml.safe_dump([{
        'hosts': 'localhost', 'gather_facts': False,
        'vars_files': [str(ROLES / 'zeo_server' / 'defaults' / 'main.yml'),
                       str(ROLES / 'zope_client' / 'defaults' / 'main.yml')],
        'tasks': blocks}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1')
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), '-i', 'localhost,', '-c', 'local',
                           '-e', 'ansible_python_interpreter=' + sys.executable,
                           '-e', json.dumps(facts), str(playbook)], cwd=str(REPO),
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return {name: sorted((folder / name).glob('*.service')) for name in variants}


def release_of_this_venv(instance):
    """An instance whose `current` release is the project's own virtualenv, so that runzeo and
    runwsgi exist where ExecStart names them."""
    (instance / 'current').mkdir(parents=True)
    (instance / 'current' / 'venv').symlink_to(sys.prefix)


@pytest.fixture(scope='module')
def rendered(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp('units')
    instance = tmp_path / 'srv' / 'prod'
    release_of_this_venv(instance)
    return render(tmp_path, instance_facts(instance), VARIANTS)


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


# --------------------------------------------------------------------------- a real systemd
# A Debian rootfs booted by systemd-nspawn is a real systemd as PID 1 (tests/support/nspawn.py),
# built once per machine by scripts/ensure-nspawn-rootfs (make test runs it as root).


@pytest.fixture
def container():
    reason = nspawn.unavailable_reason()
    if reason:
        pytest.skip(reason)
    # pytest's own folders are root's alone (0700): the service user could not reach the
    # instance there. A folder of this test's, traversable, removed afterwards.
    folder = pathlib.Path(tempfile.mkdtemp(prefix='zopeops-systemd-'))
    folder.chmod(0o755)
    try:
        # The project's virtualenv (and the Python it is made from) and checkout read-only and
        # the folder writable, at their own paths; its root a throw-away overlay.
        base = pathlib.Path(os.path.realpath(sys.executable)).parents[1]
        box = nspawn.Container('zopeops-units-%d' % os.getpid(), folder / 'nspawn.log',
                               options=['--bind-ro=%s' % sys.prefix, '--bind-ro=%s' % base,
                                        '--bind-ro=%s' % REPO, '--bind=%s' % folder])
        box.start(90)
        box.folder = folder
        try:
            yield box
        finally:
            box.poweroff().wait_down(60)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_stage_runs_under_a_real_systemd_as_the_service_user(container):
    """ZEO and two Zope clients as the roles' units, started, checked and stopped by zeo_service
    through systemctl of a booted systemd, running as the service user with private files."""
    tmp_path = container.folder
    instance = tmp_path / 'srv' / 'prod'
    release_of_this_venv(instance)
    (instance / 'etc').mkdir()
    zeo_port, ports = free_port(), (free_port(), free_port())
    facts = instance_facts(instance, zeo_port, ports, bind='127.0.0.1')
    units = render(tmp_path, facts, {'real': ('daemon', '')}, configs=True)['real']
    # The folders as the roles make them: the service user's, 0700.
    clients = [c['name'] for c in facts['zopeops_clients']]
    for path in ['var', 'log', 'var/filestorage', 'var/blobstorage'] + [
            'var/%s' % name for name in clients] + ['var/%s/chameleon' % name for name in clients]:
        (instance / path).mkdir(parents=True, exist_ok=True)
        os.chown(instance / path, 1, 1)
        (instance / path).chmod(0o700)
    # The throw-away root: the Python the virtualenv is made from may live below /root.
    container.run(['chmod', '0755', '/root'], check=True)
    for unit in units:
        container.run(['systemctl', 'link', str(unit)], check=True)
    # zeo_service runs inside the machine whose systemd it drives, as Ansible runs it over SSH:
    # every namespace of the container, pids included, so that a MainPID it reads is looked up
    # in the /proc it came from (on the host, that pid may belong to another process).
    python = tmp_path / 'python-in-container'
    python.write_text('#!/bin/sh\nexec nsenter -t %d -a %s "$@"\n'
                      % (container.leader, sys.executable))
    python.chmod(0o755)

    def run_module(name, args):
        return run_module_on_host(name, args, python=str(python), args_dir=str(tmp_path),
                                  env={'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:'
                                               '/usr/bin:/sbin:/bin'})
    zeo = {'name': 'zopeops-prod-zeo', 'kind': 'zeo', 'process_manager': 'systemd',
           'address': '127.0.0.1:%d' % zeo_port, 'timeout': 90,
           'log_path': str(instance / 'log' / 'zeo.log')}
    zope = {'kind': 'zope', 'process_manager': 'systemd', 'timeout': 180, 'programs': [
        {'name': 'zopeops-prod-%s' % name, 'address': '127.0.0.1:%d' % port,
         'log_path': str(instance / 'log' / ('%s.log' % name))}
        for name, port in zip(clients, ports)]}

    started = run_module('zeo_service', dict(zeo, state='started'))
    assert started['rc'] == 0 and started['changed'], started.get('msg')
    # The first client alone creates the empty database's Zope application (two clients at once
    # would both try, and one would fail with a ConflictError); then all of them.
    first = run_module('zeo_service', dict(zope, state='started', programs=zope['programs'][:1]))
    assert first['rc'] == 0 and first['changed'], first.get('msg')
    up = run_module('zeo_service', dict(zope, state='started'))
    assert up['rc'] == 0 and up['changed'], up.get('msg')
    again = run_module('zeo_service', dict(zope, state='started'))
    assert again['rc'] == 0 and not again['changed'], again

    # As the service user, never root; what they write is private.
    running = subprocess.run(['ps', '-ww', '-eo', 'user:20,args'], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    ours = [line.split(None, 1) for line in running if str(instance) + '/' in line
            and ('runzeo' in line or 'runwsgi' in line)]
    assert len(ours) == 3 and {user for user, _args in ours} == {'daemon'}, ours
    data = os.stat(instance / 'var' / 'filestorage' / 'Data.fs')
    assert (data.st_uid, data.st_mode & 0o777) == (1, 0o600)
    status = container.run(['systemctl', 'show', '-p', 'User', '-p', 'UMask',
                            'zopeops-prod-client1']).stdout
    assert 'User=daemon' in status and 'UMask=0077' in status, status

    stopped = run_module('zeo_service', dict(zope, state='stopped'))
    assert stopped['rc'] == 0 and stopped['changed'], stopped
    stopped = run_module('zeo_service', dict(zeo, state='stopped'))
    assert stopped['rc'] == 0 and stopped['changed'], stopped
    assert all(port_is_free(port) for port in (zeo_port,) + ports)
