"""side_programs: one side of a stage on one host -> zeo_service's programs, in start and stop
order (the promotion's start and stop steps are one call per host)."""
from __future__ import annotations

from ansible_collections.zopeops.stages.plugins.filter.promotion import side_programs

SIDE = {'instance': 'test_upgrade',
        'zeo': {'host': 'a', 'address': '127.0.0.1', 'port': 8100},
        'clients': [{'id': 'test_upgrade-client1', 'name': 'client1', 'host': 'a',
                     'address': '127.0.0.1', 'port': 8101},
                    {'id': 'test_upgrade-client2', 'name': 'client2', 'host': 'b',
                     'address': '127.0.0.2', 'port': 8102}]}


def test_the_zeo_host_starts_zeo_first_and_stops_it_last():
    programs = side_programs(SIDE, 'a', 'supervisord', '/srv/z')
    assert programs['zeo'] == {'name': 'test_upgrade-zeo', 'kind': 'zeo',
                               'address': '127.0.0.1:8100',
                               'log_path': '/srv/z/test_upgrade/log/zeo.log'}
    assert [p['name'] for p in programs['start']] == ['test_upgrade-zeo',
                                                      'test_upgrade-client1']
    assert [p['name'] for p in programs['stop']] == ['test_upgrade-client1',
                                                     'test_upgrade-zeo']
    assert [p['kind'] for p in programs['start']] == ['zeo', 'zope']


def test_a_clients_only_host_and_systemd_names():
    programs = side_programs(SIDE, 'b', 'systemd', '/srv/z')
    assert programs['zeo'] is None
    assert programs['start'] == programs['stop'] == programs['clients'] == [
        {'name': 'zopeops-test_upgrade-client2', 'kind': 'zope', 'address': '127.0.0.2:8102',
         'log_path': '/srv/z/test_upgrade/log/client2.log'}]
