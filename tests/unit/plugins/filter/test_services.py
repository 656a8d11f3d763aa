"""client_programs: zopeops_clients -> zeo_service's programs; host_port."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.zopeops.stages.plugins.filter.services import client_programs, host_port

CLIENTS = [{'name': 'client1', 'port': '18431'}, {'name': 'client2', 'port': 18432}]


def test_supervisord_names_addresses_and_logs():
    assert client_programs(CLIENTS, 'test', '127.0.0.1', '/srv/z/test/log') == [
        {'name': 'test-client1', 'address': '127.0.0.1:18431',
         'log_path': '/srv/z/test/log/client1.log'},
        {'name': 'test-client2', 'address': '127.0.0.1:18432',
         'log_path': '/srv/z/test/log/client2.log'}]


def test_systemd_units_and_ipv6():
    programs = client_programs(CLIENTS[:1], 'prod_upgrade', '::1', '/l/', 'systemd')
    assert programs == [{'name': 'zopeops-prod_upgrade-client1', 'address': '[::1]:18431',
                         'log_path': '/l/client1.log'}]


def test_a_client_without_port_is_refused():
    with pytest.raises(AnsibleFilterError, match='name and a numeric port'):
        client_programs([{'name': 'client1'}], 'test', '127.0.0.1', '/l')


def test_host_port_joins_and_brackets_an_ipv6_host():
    assert host_port('127.0.0.1', '5000') == '127.0.0.1:5000'
    assert host_port('::1', 5000) == '[::1]:5000'


def test_host_port_refuses_a_port_that_is_not_a_number():
    with pytest.raises(AnsibleFilterError, match='port must be a number'):
        host_port('127.0.0.1', 'http')
