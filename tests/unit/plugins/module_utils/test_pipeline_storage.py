"""The storage kind of a stage (zopeops_storage): ZEO by default, RelStorage on PostgreSQL
with a database per side; every mistake named with what to do."""
from __future__ import annotations

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils.pipeline import (
    PipelineError, build_model, databases_on_server)


def inventory():
    """dev on ZEO; test on RelStorage with a twin, both on one PostgreSQL server."""
    groups = {
        'lb': ['lb1'],
        'dev_zeo': ['dev-a'], 'dev_clients': ['dev-a'],
        'test_clients': ['test-a', 'test-b'],
        'test_upgrade_clients': ['test_upgrade-a'],
    }
    relstorage = {'zopeops_storage': 'relstorage', 'zopeops_postgresql_host': 'db1'}
    hostvars = {
        'lb1': {'ansible_host': 'lb'},
        'dev-a': {'ansible_host': 'm1', 'zopeops_zeo_port': 8100, 'zopeops_lb_port': 81,
                  'zopeops_clients': [{'name': 'client1', 'port': 8080}]},
        'test-a': dict(relstorage, ansible_host='m2', zopeops_lb_port=82,
                       zopeops_clients=[{'name': 'client1', 'port': 8080}]),
        'test-b': dict(relstorage, ansible_host='m3', zopeops_lb_port=82,
                       zopeops_clients=[{'name': 'client2', 'port': 8080}]),
        'test_upgrade-a': dict(relstorage, ansible_host='m3',
                               zopeops_clients=[{'name': 'client1', 'port': 8090}]),
    }
    for host_vars in hostvars.values():
        host_vars['zopeops_service_user'] = 'zope'
    return groups, hostvars


def problems_of(groups, hostvars):
    with pytest.raises(PipelineError) as info:
        build_model(groups, hostvars, ['dev', 'test'])
    return info.value.problems


def test_a_relstorage_stage_has_a_database_per_side_and_no_zeo_server():
    model = build_model(*inventory(), ['dev', 'test'])
    dev, test = model['stages']['dev'], model['stages']['test']
    assert dev['live']['storage'] == 'zeo' and dev['live']['database'] is None
    assert dev['live']['data_host'] == 'dev-a'
    live, twin = test['live'], test['upgrade']
    assert live['storage'] == twin['storage'] == 'relstorage'
    assert live['zeo'] is None and live['data_host'] == 'test-a'
    assert live['database'] == {'host': 'db1', 'port': 5432, 'user': 'zopeops_test',
                                'name': 'zopeops_test', 'history': 'preserving',
                                'keep_history': True, 'client_host': 'test-a'}
    assert twin['database']['name'] == 'zopeops_test_upgrade'
    assert twin['database']['user'] == 'zopeops_test'
    assert test['lb_port'] == 82


def test_history_free_and_named_database_and_account():
    groups, hostvars = inventory()
    for host in ('test-a', 'test-b'):
        hostvars[host].update(zopeops_relstorage_history='free', zopeops_postgresql_port='6543',
                              zopeops_postgresql_user='site', zopeops_postgresql_database='site')
    database = build_model(groups, hostvars, ['dev', 'test'])['stages']['test']['live']['database']
    assert (database['history'], database['keep_history'], database['port'],
            database['user'], database['name']) == ('free', False, 6543, 'site', 'site')


def test_an_unknown_storage_kind_is_named_with_the_choices():
    groups, hostvars = inventory()
    hostvars['dev-a']['zopeops_storage'] = 'postgres'
    assert problems_of(groups, hostvars) == [
        "zopeops_storage of dev is 'postgres'; choose one of zeo, relstorage (set it in the "
        "group vars of the stage and of its twin)."]


def test_every_relstorage_mistake_is_named_at_once():
    groups, hostvars = inventory()
    groups['test_zeo'] = ['test-a', 'test-b']
    del hostvars['test_upgrade-a']['zopeops_postgresql_host']
    hostvars['test_upgrade-a'].update(zopeops_relstorage_history='keep',
                                      zopeops_postgresql_database='Test-Twin',
                                      zopeops_postgresql_port='none')
    problems = problems_of(groups, hostvars)
    assert any("group 'test_zeo' may only name the one ZEO server it ran before a move, but "
               "holds test-a, test-b" in p for p in problems)
    assert any('test_upgrade' in p and 'zopeops_postgresql_host' in p for p in problems)
    assert any("zopeops_relstorage_history of test_upgrade is 'keep'" in p for p in problems)
    assert any("zopeops_postgresql_database of test_upgrade is 'Test-Twin'" in p
               for p in problems)
    assert any('zopeops_postgresql_port of test_upgrade' in p for p in problems)


def test_a_twin_on_another_storage_or_the_same_database_is_refused():
    groups, hostvars = inventory()
    hostvars['test_upgrade-a']['zopeops_storage'] = 'zeo'
    groups['test_upgrade_zeo'] = ['test_upgrade-a']
    hostvars['test_upgrade-a']['zopeops_zeo_port'] = 8200
    assert problems_of(groups, hostvars) == [
        'Stage test stores its data with relstorage but its twin test_upgrade with zeo: set '
        'the same zopeops_storage for both (a move between kinds changes both in the '
        'inventory, then runs promote.yml -e migrate_storage; docs/relstorage.md).']
    groups, hostvars = inventory()
    hostvars['test_upgrade-a']['zopeops_postgresql_database'] = 'zopeops_test'
    assert problems_of(groups, hostvars) == [
        'Stage test and its twin test_upgrade use the same database zopeops_test on '
        'db1:5432: each needs one of its own (leave zopeops_postgresql_database unset for '
        'the defaults).']


def test_a_side_on_the_other_kind_where_the_inventory_still_describes_it():
    """A move between kinds runs the live side from ``other`` until its data is moved: a
    RelStorage side whose S_zeo group still names its ZEO server, a ZEO side whose hosts still
    name their PostgreSQL server. Nothing else has one."""
    groups, hostvars = inventory()
    model = build_model(groups, hostvars, ['dev', 'test'])
    assert model['stages']['dev']['live']['other'] is None
    assert model['stages']['test']['live']['other'] is None
    groups['test_zeo'] = ['test-a']
    hostvars['test-a']['zopeops_zeo_port'] = 8300
    hostvars['dev-a']['zopeops_postgresql_host'] = 'db1'
    model = build_model(groups, hostvars, ['dev', 'test'])
    test, dev = model['stages']['test']['live'], model['stages']['dev']['live']
    assert test['storage'] == 'relstorage' and test['zeo'] is None
    assert test['other']['storage'] == 'zeo' and test['other']['database'] is None
    assert test['other']['zeo'] == {'host': 'test-a', 'address': 'm2', 'machine': 'm2',
                                    'port': 8300}
    assert test['other']['data_host'] == 'test-a' and test['other']['other'] is None
    assert test['other']['clients'] == test['clients']
    assert dev['other']['storage'] == 'relstorage' and dev['other']['zeo'] is None
    assert dev['other']['database']['name'] == 'zopeops_dev'
    assert dev['other']['data_host'] == 'dev-a'


def test_the_hosts_of_one_side_must_agree_on_the_storage():
    groups, hostvars = inventory()
    hostvars['test-b']['zopeops_storage'] = 'zeo'
    problems = problems_of(groups, hostvars)
    assert any('The hosts of test disagree on zopeops_storage (relstorage on test-a; zeo on '
               'test-b)' in p for p in problems)


def test_a_server_holds_the_databases_that_name_it_on_its_port():
    groups, hostvars = inventory()
    model = build_model(groups, hostvars, ['dev', 'test'])
    found = databases_on_server(model, ['pg1', 'db1'], 5432)
    assert [(d['instance'], d['name'], d['user'], d['data_host'], d['client_machines'],
             d['clients']) for d in found] == [
        ('test', 'zopeops_test', 'zopeops_test', 'test-a', ['m2', 'm3'], 2),
        ('test_upgrade', 'zopeops_test_upgrade', 'zopeops_test', 'test_upgrade-a', ['m3'], 1)]
    assert databases_on_server(model, ['db1'], 5433) == []
    assert databases_on_server(model, ['db2'], 5432) == []


def test_a_stage_the_inventory_moves_to_zeo_keeps_its_database_on_its_server():
    """Until the move is done the stage runs on its database: the server keeps holding it
    (account, database, access), from the side's ``other``."""
    groups, hostvars = inventory()
    groups.update(test_zeo=['test-a'], test_upgrade_zeo=['test_upgrade-a'])
    for host in ('test-a', 'test-b', 'test_upgrade-a'):
        hostvars[host].update(zopeops_storage='zeo', zopeops_zeo_port=8300)
    model = build_model(groups, hostvars, ['dev', 'test'])
    assert model['stages']['test']['live']['storage'] == 'zeo'
    found = databases_on_server(model, ['db1'], 5432)
    assert [(d['instance'], d['name']) for d in found] == [
        ('test', 'zopeops_test'), ('test_upgrade', 'zopeops_test_upgrade')]
