"""inventories/example, the documented template of a production pipeline, loads through the
pipeline model with the shape the README promises and every variable a real deployment sets."""
from __future__ import annotations

import pathlib

import pytest
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from ansible.vars.manager import VariableManager

from ansible_collections.zopeops.stages.plugins.module_utils.pipeline import (
    PipelineError, build_model)

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / 'inventories' / 'example'


@pytest.fixture(scope='module')
def example():
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(EXAMPLE)])
    variables = VariableManager(loader=loader, inventory=inventory)
    groups = {name: [host.name for host in group.get_hosts()]
              for name, group in inventory.groups.items()}
    hostvars = {}
    for host in inventory.get_hosts():
        found = variables.get_vars(host=host)
        hostvars[host.name] = Templar(loader=loader, variables=found).template(
            {key: found[key] for key in found if key.startswith(('zopeops_', 'ansible_'))
             and key != 'zopeops_app_python'})
        hostvars[host.name]['zopeops_app_python'] = found['zopeops_app_python']
    return groups, hostvars


def test_the_example_is_a_valid_pipeline_of_production_shape(example):
    groups, hostvars = example
    model = build_model(groups, hostvars, hostvars['lb1']['zopeops_pipeline'])
    assert model['pipeline'] == ['dev', 'beta', 'test', 'prod']
    assert model['lb_hosts'] == ['lb1', 'lb2']
    machines = {hostvars[h]['ansible_host'] for h in model['lb_hosts']}
    assert machines == {'lb1.example.com', 'lb2.example.com'}

    prod = model['stages']['prod']
    assert prod['live']['zeo']['machine'] == 'db1.example.com'
    assert prod['upgrade']['zeo']['machine'] == 'db2.example.com'
    assert len(prod['live']['clients']) == 8
    assert len({c['machine'] for c in prod['live']['clients']}) == 3
    twin_machines = {c['machine'] for c in prod['upgrade']['clients']}
    assert len(twin_machines) == 2
    assert twin_machines < {c['machine'] for c in prod['live']['clients']}
    # ZEO and Zope listen on the private addresses; peers reach them there.
    assert prod['live']['zeo']['address'] == '10.0.1.10'
    assert all(c['url'].startswith('http://10.0.2.') for c in prod['live']['clients'])

    for name in ('beta', 'test'):
        stage = model['stages'][name]
        assert len(stage['live']['clients']) < 8 and stage['upgrade'] is not None
    dev = model['stages']['dev']
    dev_machines = {dev['live']['zeo']['machine']} | {c['machine'] for c in dev['live']['clients']}
    others = {side['zeo']['machine'] for stage in model['stages'].values() if stage is not dev
              for side in (stage['live'], stage['upgrade']) if side} | {
        c['machine'] for stage in model['stages'].values() if stage is not dev
        for side in (stage['live'], stage['upgrade']) if side for c in side['clients']}
    assert dev_machines == {'dev1.example.com'} and not dev_machines & others


def test_the_example_sets_what_a_real_deployment_needs(example):
    _groups, hostvars = example
    for host, found in hostvars.items():
        assert found['ansible_user'] == 'deploy', host
        assert found['ansible_become'] is True, host
        assert found['ansible_python_interpreter'] == '/usr/bin/python3', host
        assert found['zopeops_service_user'] not in ('', 'root'), host
        assert found['zopeops_bind_address'].startswith('10.'), host
        assert 'zopeops_sandbox' not in found, host
        if host not in ('lb1', 'lb2'):
            assert 'current/venv/bin/python' in found['zopeops_app_python'], host


def test_the_example_with_root_as_service_user_is_refused(example):
    groups, hostvars = example
    hostvars = {host: dict(found, zopeops_service_user='root') for host, found in hostvars.items()}
    with pytest.raises(PipelineError, match='zopeops_service_user is root on beta-stage1, '):
        build_model(groups, hostvars, ['dev', 'beta', 'test', 'prod'])
