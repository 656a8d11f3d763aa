"""The harness's inventory: production's shape on the harness's machines (their addresses
change with every run, so it is generated).

Machines (``MACHINES``):
- ``lb1``, ``lb2``: HAProxy, both configured for every stage and both switched;
- ``dev1``: dev on its own machine;
- ``stage1``: beta and its twin; ``stage2``: test and its twin (the smaller stages; test
  starts at ``demo-v2``, every other stage but dev at ``demo-v1``);
- ``db1``: prod's ZEO server; ``db2``: the ZEO server of prod's twin;
- ``app1``, ``app2``, ``app3``: prod's Zope clients (``prod_clients`` per machine, 3/3/2 = 8
  by default), the twin's clients on ``app1`` and ``app2``.

Every host is reached over SSH as the harness's user with ``become``; the modules run on the
project's virtualenv Python, which every machine has bound in at its path here, while every
release and its virtualenv is built under the machine's own ``/srv`` from its own python3.
Every service runs under systemd, the process manager of production: the roles write the units,
HAProxy is the distribution's service.
"""
from __future__ import annotations

import os
import pathlib
import sys

import yaml

MACHINES = ('lb1', 'lb2', 'dev1', 'stage1', 'stage2', 'db1', 'db2', 'app1', 'app2', 'app3')
ZEO_MACHINES = {'dev': 'dev1', 'beta': 'stage1', 'beta_upgrade': 'stage1', 'test': 'stage2',
                'test_upgrade': 'stage2', 'prod': 'db1', 'prod_upgrade': 'db2'}
LB_PORTS = {'dev': 8081, 'beta': 8082, 'test': 8083, 'prod': 8084}
ZEO_PORT = {'live': 8100, 'upgrade': 8200}
CLIENT_PORT = {'live': 8080, 'upgrade': 8090}
# The releases' Python on the machines, and the wheel cache they install from (offline).
MACHINE_PYTHON = '/usr/bin/python3'
WHEEL_CACHE = os.path.expanduser('~/.cache/zopeops-stages')


def _clients(count, first, side):
    return [{'name': 'client%d' % (first + offset), 'port': CLIENT_PORT[side] + offset}
            for offset in range(count)]


def _stage_on_one_machine(stage, machine, addresses, live_clients=1, twin_clients=1):
    """A stage and its twin on one machine: ZEO and clients of each side on the same host."""
    live = '%s-%s' % (stage, machine)
    twin = '%s_upgrade-%s' % (stage, machine)
    hosts = {
        live: {'ansible_host': addresses[machine], 'zopeops_stage': stage, 'zopeops_side': 'live',
               'zopeops_zeo_port': ZEO_PORT['live'],
               'zopeops_clients': _clients(live_clients, 1, 'live')},
        twin: {'ansible_host': addresses[machine], 'zopeops_stage': stage,
               'zopeops_side': 'upgrade', 'zopeops_zeo_port': ZEO_PORT['upgrade'],
               'zopeops_clients': _clients(twin_clients or 0, 1, 'upgrade')},
    }
    groups = {
        stage: {'vars': {'zopeops_lb_port': LB_PORTS[stage]},
                'children': {stage + '_zeo': {'hosts': {live: None}},
                             stage + '_clients': {'hosts': {live: None}}}},
    }
    if twin_clients is not None:
        groups[stage + '_upgrade'] = {'children': {
            stage + '_upgrade_zeo': {'hosts': {twin: None}},
            stage + '_upgrade_clients': {'hosts': {twin: None}}}}
    else:
        del hosts[twin]
    return hosts, groups


def _client_hosts(hosts, instance, side, addresses, machines, counts):
    """Client-only hosts of an instance, numbered on across its machines."""
    names, first = [], 1
    for machine, count in zip(machines, counts):
        name = '%s-%s' % (instance, machine)
        hosts[name] = {'ansible_host': addresses[machine], 'zopeops_stage': 'prod',
                       'zopeops_side': side, 'zopeops_clients': _clients(count, first, side)}
        names.append(name)
        first += count
    return names


def build(addresses, workdir, ssh_key, known_hosts, ssh_user, prod_clients=(3, 3, 2),
          twin_clients=(1, 1), service_user=''):
    """Write ``<workdir>/inventory/{hosts.yml,group_vars/all.yml}``; return the folder."""
    hosts, groups = {}, {}
    for stage, machine in (('beta', 'stage1'), ('test', 'stage2')):
        stage_hosts, stage_groups = _stage_on_one_machine(stage, machine, addresses)
        hosts.update(stage_hosts)
        groups.update(stage_groups)
    # test starts one revision ahead of prod: promoting prod really changes the code on every
    # client machine, also when beta and test are not promoted first.
    for host in ('test-stage2', 'test_upgrade-stage2'):
        hosts[host]['zopeops_revision'] = 'demo-v2'
    dev_hosts, dev_groups = _stage_on_one_machine('dev', 'dev1', addresses, twin_clients=None)
    hosts['dev-dev1'] = dict(dev_hosts['dev-dev1'], zopeops_revision='main',
                             zopeops_seed_demo_content=True)
    groups.update(dev_groups)

    hosts['prod-db1'] = {'ansible_host': addresses['db1'], 'zopeops_stage': 'prod',
                         'zopeops_side': 'live', 'zopeops_zeo_port': ZEO_PORT['live']}
    hosts['prod_upgrade-db2'] = {'ansible_host': addresses['db2'], 'zopeops_stage': 'prod',
                                 'zopeops_side': 'upgrade', 'zopeops_zeo_port': ZEO_PORT['upgrade']}
    prod_client_hosts = _client_hosts(hosts, 'prod', 'live', addresses, ('app1', 'app2', 'app3'),
                                      prod_clients)
    twin_client_hosts = _client_hosts(hosts, 'prod_upgrade', 'upgrade', addresses,
                                      ('app1', 'app2'), twin_clients)
    groups['prod'] = {'vars': {'zopeops_lb_port': LB_PORTS['prod']},
                      'children': {'prod_zeo': {'hosts': {'prod-db1': None}},
                                   'prod_clients': {'hosts': dict.fromkeys(prod_client_hosts)}}}
    groups['prod_upgrade'] = {'children': {
        'prod_upgrade_zeo': {'hosts': {'prod_upgrade-db2': None}},
        'prod_upgrade_clients': {'hosts': dict.fromkeys(twin_client_hosts)}}}

    for machine in ('lb1', 'lb2'):
        hosts[machine] = {'ansible_host': addresses[machine], 'zopeops_stage': None,
                          'haproxy_bind_address': addresses[machine]}
    groups['lb'] = {'hosts': {'lb1': None, 'lb2': None}}

    inventory = pathlib.Path(workdir) / 'inventory'
    (inventory / 'group_vars').mkdir(parents=True, exist_ok=True)
    (inventory / 'host_vars').mkdir(exist_ok=True)
    ordered = {'lb': groups.pop('lb')}
    ordered.update(groups)
    (inventory / 'hosts.yml').write_text(
        '# Generated by tests/harness/inventory.py for one harness run.\n'
        + yaml.safe_dump({'all': {'children': ordered}}, sort_keys=False))
    for host, host_vars in hosts.items():
        (inventory / 'host_vars' / (host + '.yml')).write_text(
            yaml.safe_dump(host_vars, sort_keys=False))
    (inventory / 'group_vars' / 'all.yml').write_text(
        yaml.safe_dump(group_vars(workdir, ssh_key, known_hosts, ssh_user, service_user),
                       sort_keys=False, width=1000))
    return inventory


def group_vars(workdir, ssh_key, known_hosts, ssh_user, service_user):
    # The project's venv (its own folder, not the interpreter it links to).
    venv_bin = os.path.join(os.path.realpath(os.path.dirname(os.path.dirname(sys.executable))),
                            'bin')
    python = os.path.join(venv_bin, 'python')
    workdir = pathlib.Path(workdir)
    return {
        'ansible_connection': 'ssh',
        'ansible_user': ssh_user,
        'ansible_become': True,
        'ansible_ssh_private_key_file': str(ssh_key),
        'ansible_ssh_common_args': ' '.join([
            '-o UserKnownHostsFile=%s' % known_hosts, '-o StrictHostKeyChecking=yes',
            '-o IdentitiesOnly=yes']),
        # Every machine has this one's checkout and virtualenv at the same path: its Python.
        'ansible_python_interpreter': python,
        'zopeops_pipeline': ['dev', 'beta', 'test', 'prod'],
        # Where every stage starts (dev follows main: host var of dev-dev1).
        'zopeops_revision': 'demo-v1',
        'zopeops_root': '/srv/zopeops',
        'zopeops_runtime_dir': '/run/zopeops',
        'zopeops_process_manager': 'systemd',
        'zopeops_load_balancer': 'haproxy',
        'zopeops_service_user': service_user,
        # The demo repository is built once, in the folder every machine has bound in.
        'zopeops_app_repo': str(workdir / 'shared' / 'app.git'),
        'zopeops_demo_app': True,
        'zopeops_tools_bin': venv_bin,
        'zope_client_environment': {'ZOPEOPS_FAULT_FILE': '{{ zopeops_instance_dir }}/var/FAULT'},
        # The wheel cache of this machine, shared: each machine builds its own releases fast.
        'app_release_cache_dir': WHEEL_CACHE,
        # The releases' virtualenvs: from the system Python, which the service user can run.
        'app_release_python': MACHINE_PYTHON,
        # The machines have no route out: releases install from that cache only.
        'app_release_installer_env': {'UV_OFFLINE': '1'},
        'zopeops_admin_password_file': str(workdir / 'secrets' / 'zope-admin-password'),
        'zope_client_admin_password': (
            "{{ lookup('ansible.builtin.password', zopeops_admin_password_file, "
            "chars=['ascii_letters', 'digits'], length=32) }}"),
        'zopeops_partners_path': '/partners',
        'zopeops_partners': [{'name': name, 'pages': ['', 'logo.png']}
                             for name in ('acme', 'globex', 'initech')],
    }
