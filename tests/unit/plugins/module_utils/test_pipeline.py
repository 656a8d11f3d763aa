"""The pipeline model: topology derived from groups and hostvars, and every mistake named."""
from __future__ import annotations

import copy

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils.pipeline import (
    PipelineError, build_model, host_places, instance_name, stages_changed)


def inventory():
    """dev -> test, test with a twin; two machines."""
    groups = {
        'lb': ['lb1'],
        'dev_zeo': ['dev-a'], 'dev_clients': ['dev-a'],
        'test_zeo': ['test-db'], 'test_clients': ['test-a', 'test-b'],
        'test_upgrade_zeo': ['test_upgrade-db'], 'test_upgrade_clients': ['test_upgrade-a'],
    }
    hostvars = {
        'lb1': {'ansible_host': 'lb'},
        'dev-a': {'ansible_host': 'm1', 'zopeops_zeo_port': 8100, 'zopeops_lb_port': 81,
                  'zopeops_clients': [{'name': 'client1', 'port': 8080}]},
        'test-db': {'ansible_host': 'm2', 'zopeops_zeo_port': '8100', 'zopeops_lb_port': 82,
                    'zopeops_data_policy': 'self'},
        'test-a': {'ansible_host': 'm2', 'zopeops_clients': [{'name': 'client1', 'port': 8080}]},
        'test-b': {'ansible_host': 'm3', 'zopeops_clients': [{'name': 'client2', 'port': 8080}]},
        'test_upgrade-db': {'ansible_host': 'm2', 'zopeops_zeo_port': 8200},
        'test_upgrade-a': {'ansible_host': 'm3',
                           'zopeops_clients': [{'name': 'client1', 'port': 8090}]},
    }
    for host_vars in hostvars.values():
        host_vars['zopeops_service_user'] = 'zope'
    return groups, hostvars


def problems_of(groups, hostvars, pipeline=('dev', 'test')):
    with pytest.raises(PipelineError) as info:
        build_model(groups, hostvars, list(pipeline))
    return info.value.problems


def test_model_derives_predecessors_addresses_and_twins():
    model = build_model(*inventory(), ['dev', 'test'])
    test = model['stages']['test']
    assert test['predecessor'] == 'dev' and test['successor'] is None
    assert model['stages']['dev']['predecessor'] is None
    assert test['lb_port'] == 82 and test['data_policy'] == 'self'
    assert test['live']['zeo'] == {'host': 'test-db', 'address': 'm2', 'machine': 'm2',
                                   'port': 8100}
    assert [(c['address'], c['port'], c['id']) for c in test['live']['clients']] == [
        ('m2', 8080, 'test-client1'), ('m3', 8080, 'test-client2')]
    assert test['upgrade']['instance'] == 'test_upgrade'
    assert test['upgrade']['clients'][0]['id'] == 'test_upgrade-client1'
    assert model['stages']['dev']['upgrade'] is None
    assert model['stages']['dev']['data_policy'] == 'upstream'


def test_instance_name():
    assert instance_name('prod', 'live') == 'prod'
    assert instance_name('prod', 'upgrade') == 'prod_upgrade'


def test_stage_without_hosts_is_named():
    groups, hostvars = inventory()
    problems = problems_of(groups, hostvars, ['dev', 'beta', 'test'])
    assert any("Stage 'beta'" in p and 'beta_zeo' in p for p in problems)


def test_twin_without_zeo_host_is_named():
    groups, hostvars = inventory()
    del groups['test_upgrade_zeo']
    problems = problems_of(groups, hostvars)
    assert problems == ["Group 'test_upgrade_zeo' must hold exactly one host "
                        "(the ZEO server of test_upgrade); it holds none."]


def test_duplicate_port_on_one_machine_names_both_owners():
    groups, hostvars = inventory()
    hostvars['test_upgrade-db']['zopeops_zeo_port'] = 8100  # same machine m2 as test's ZEO
    problems = problems_of(groups, hostvars)
    assert problems == ['Port 8100 on m2 is given twice: to the ZEO server of test and to the '
                        'ZEO server of test_upgrade.']


def test_same_port_on_different_machines_is_fine():
    groups, hostvars = inventory()
    hostvars['test-b']['zopeops_clients'][0]['port'] = 8080  # m3 vs m2: no clash
    build_model(groups, hostvars, ['dev', 'test'])


def test_every_problem_is_reported_at_once():
    groups, hostvars = inventory()
    hostvars = copy.deepcopy(hostvars)
    hostvars['dev-a']['zopeops_lb_port'] = 'eighty'
    hostvars['test-db']['zopeops_data_policy'] = 'mirror'
    hostvars['test-a']['zopeops_clients'] = [{'port': 8080}]
    problems = problems_of(groups, hostvars)
    assert len(problems) == 3
    assert "zopeops_lb_port of stage dev is 'eighty', not a port number." in problems
    assert any("'mirror'" in p and 'upstream, self, none' in p for p in problems)
    assert any('needs a name and a port' in p for p in problems)


@pytest.mark.parametrize('pipeline', [[], None, 'dev'])
def test_pipeline_must_be_a_list(pipeline):
    with pytest.raises(PipelineError, match='non-empty list'):
        build_model({}, {}, pipeline)


def test_twin_suffix_and_duplicates_in_pipeline_are_refused():
    groups, hostvars = inventory()
    problems = problems_of(groups, hostvars, ['dev', 'test', 'dev'])
    assert "Stage 'dev' appears twice in zopeops_pipeline." in problems
    problems = problems_of(groups, hostvars, ['dev', 'test', 'x_upgrade'])
    assert any("ends in '_upgrade'" in p for p in problems)


def test_check_urls_cover_every_frontend_and_live_client():
    from ansible_collections.zopeops.stages.plugins.module_utils.pipeline import check_urls
    model = build_model(*inventory(), ['dev', 'test'])
    assert check_urls(model, '10.0.0.1', '/@@ok') == [
        {'name': 'dev', 'url': 'http://10.0.0.1:81/@@ok'},
        {'name': 'test', 'url': 'http://10.0.0.1:82/@@ok'},
        {'name': 'dev-client1', 'url': 'http://m1:8080/@@ok'},
        {'name': 'test-client1', 'url': 'http://m2:8080/@@ok'},
        {'name': 'test-client2', 'url': 'http://m3:8080/@@ok'}]


def test_an_inventory_without_balancers_is_refused():
    groups, hostvars = inventory()
    del groups['lb']
    problems = problems_of(groups, hostvars)
    assert problems == [
        "Group 'lb' has no hosts: every promotion switches, freezes and verifies the traffic "
        "on the load balancers listed there, and without one it would do nothing. Add the "
        "HAProxy (or nginx) machines to group 'lb'."]
    groups['lb'] = []
    assert problems_of(groups, hostvars) == problems


def test_every_balancer_machine_claims_the_frontend_ports():
    groups, hostvars = inventory()
    groups['lb'] = ['lb1', 'lb2']
    hostvars['lb2'] = {'ansible_host': 'm1', 'zopeops_service_user': 'zope'}
    hostvars['dev-a']['zopeops_lb_port'] = 8080  # dev's client listens there on m1
    problems = problems_of(groups, hostvars)
    assert problems == ['Port 8080 on m1 is given twice: to the load-balancer frontend of dev '
                        'and to Zope client dev-client1.']


@pytest.mark.parametrize('user, shown', [('', 'empty'), (None, 'empty'), ('root', 'root'),
                                         (' root ', 'root'), ('0', 'root')])
def test_a_root_or_empty_service_user_is_refused_outside_the_sandbox(user, shown):
    groups, hostvars = inventory()
    hostvars['test-a']['zopeops_service_user'] = user
    hostvars['test-b'].pop('zopeops_service_user')
    problems = problems_of(groups, hostvars)
    hosts = 'test-a, test-b' if shown == 'empty' else 'test-a'  # test-b has none
    assert any(p.startswith('zopeops_service_user is %s on %s: on a real host ZEO and Zope '
                            'must not run as root.' % (shown, hosts)) for p in problems), problems
    assert all('zopeops_service_user' in p for p in problems)


def test_the_local_sandbox_may_run_as_the_connecting_user():
    groups, hostvars = inventory()
    for host_vars in hostvars.values():
        host_vars.pop('zopeops_service_user')
        host_vars['zopeops_sandbox'] = '/tmp/sandbox'
    build_model(groups, hostvars, ['dev', 'test'])


def test_the_bind_address_is_where_peers_connect_and_the_machine_keys_ports():
    groups, hostvars = inventory()
    hostvars['test-db']['zopeops_bind_address'] = '10.0.0.2'
    hostvars['test-a']['zopeops_bind_address'] = '10.0.0.2'
    hostvars['test_upgrade-db']['zopeops_bind_address'] = '10.0.0.2'
    model = build_model(groups, hostvars, ['dev', 'test'])
    test = model['stages']['test']
    assert test['live']['zeo'] == {'host': 'test-db', 'address': '10.0.0.2', 'machine': 'm2',
                                   'port': 8100}
    assert test['live']['clients'][0]['url'] == 'http://10.0.0.2:8080'
    # Ports collide per machine, whatever address each listener names.
    hostvars['test_upgrade-db']['zopeops_bind_address'] = '10.0.0.9'
    hostvars['test_upgrade-db']['zopeops_zeo_port'] = 8100
    assert problems_of(groups, hostvars) == [
        'Port 8100 on m2 is given twice: to the ZEO server of test and to the ZEO server of '
        'test_upgrade.']


def test_each_machine_is_led_by_its_first_host_by_name():
    from ansible_collections.zopeops.stages.plugins.filter.pipeline import machine_leaders
    hostvars = {'test-db': {'ansible_host': '10.0.0.2'},
                'test_upgrade-db': {'ansible_host': '10.0.0.2'},
                'beta-db': {'ansible_host': '10.0.0.2'},
                'prod-app1': {'ansible_host': '10.0.0.3'},
                'lb': {}}
    assert machine_leaders(list(hostvars), hostvars) == ['beta-db', 'lb', 'prod-app1']
    # A host outside the play (--limit) never leads: the first of the play's hosts does.
    assert machine_leaders(['test_upgrade-db', 'test-db'], hostvars) == ['test-db']


@pytest.mark.parametrize('hosts, stages', [
    (['dev-a', 'test-a', 'lb1'], ['dev', 'test']),   # a whole run: every stage
    (['lb1'], ['dev', 'test']),                      # the balancer holds every frontend
    (['dev-a'], ['dev']),                            # --limit dev-a
    (['test_upgrade-a'], ['test']),                  # a twin's host changes its stage
    ([], []),
])
def test_the_stages_a_run_changes_follow_its_hosts(hosts, stages):
    assert stages_changed(build_model(*inventory(), ['dev', 'test']), hosts) == stages


def test_host_places_once_for_every_host():
    model = build_model(*inventory(), ['dev', 'test'])
    places = host_places(model, {'lb1': (None, None), 'dev-a': ('dev', None),
                                 'test-b': ('test', 'live'),
                                 'test_upgrade-db': ('test', 'upgrade')})
    assert places['lb1'] == {}
    assert places['dev-a']['side'] == 'live' and places['dev-a']['is_head'] is True
    assert places['test-b']['instance'] == 'test' and places['test-b']['is_head'] is False
    assert places['test-b']['zeo_address'] == 'm2:8100'
    upgrade = places['test_upgrade-db']
    assert upgrade['instance'] == 'test_upgrade' and upgrade['zeo_address'] == 'm2:8200'
    assert upgrade['side_model'] is model['stages']['test']['upgrade']


def test_host_places_names_every_misplaced_host():
    model = build_model(*inventory(), ['dev', 'test'])
    with pytest.raises(PipelineError) as info:
        host_places(model, {'test-a': ('test', 'upgrade'), 'dev-a': ('staging', None),
                            'test-b': ('test', 'blue'), 'test-db': ('test', 'live')})
    assert info.value.problems == [
        'Host dev-a says it belongs to stage staging (live side), but the pipeline dev -> test '
        'has no such host there: put it into the groups staging_zeo or ..._clients, or fix '
        'zopeops_stage / zopeops_side.',
        'Host test-a says it belongs to stage test (upgrade side), but the pipeline dev -> test '
        'has no such host there: put it into the groups test_upgrade_zeo or ..._clients, or fix '
        'zopeops_stage / zopeops_side.',
        'Host test-b says it belongs to stage test (blue side), but the pipeline dev -> test '
        'has no such host there: put it into the groups test_zeo or ..._clients, or fix '
        'zopeops_stage / zopeops_side.']


def test_a_client_port_that_is_not_a_number_is_a_problem_not_a_crash():
    groups, hostvars = inventory()
    hostvars = copy.deepcopy(hostvars)
    hostvars['test-a']['zopeops_clients'][0]['port'] = 'http'
    problems = problems_of(groups, hostvars)
    assert any("is 'http', not a port number." in p for p in problems), problems
