"""lb_health: every stage's active side and healthy servers in one call, against the simulated
HAProxy CLI (support/haproxy_sim.py) (the real client and parsers), and through the real entry point."""
from __future__ import annotations

import time

from ansible_collections.zopeops.stages.plugins.modules import lb_health

from support.haproxy_sim import SimulatedHAProxy
from support.modules import run_module


def run(api, check=False, **args):
    values = dict(socket=api.address, timeout=1.0, map_file=api.map_path, wait_healthy=0.0,
                  stages=['dev', 'test'], frontend_urls={'dev': 'http://127.0.0.1:8000/'})
    values.update(args)
    return lb_health.run(values, check, api_factory=lambda *a, **k: api)


def test_reads_every_stage_and_warns_for_each_without_a_healthy_server(tmp_path):
    api = SimulatedHAProxy(tmp_path, maps={'test': 'be_test_upgrade'})
    api.servers['be_dev_live'] = {'dev-client1': ['DOWN', 0]}
    api.servers['be_test_upgrade'] = {'test_upgrade-client1': ['DOWN', 0]}
    api.check_status = 'L7STS'
    started = time.monotonic()
    stages, unhealthy, warnings = run(api, wait_healthy=30)
    assert time.monotonic() - started < 5, 'every server was checked and DOWN: no wait'
    assert stages == {'dev': {'active': 'live', 'healthy_servers': []},
                      'test': {'active': 'upgrade', 'healthy_servers': []}}
    assert unhealthy == ['dev', 'test']
    assert warnings[0].startswith("Stage dev has no healthy backend: no server of be_dev_live "
                                  "passes HAProxy's health check (dev-client1 DOWN L7STS), so "
                                  "http://127.0.0.1:8000/ answers 503.")
    assert 'so its frontend answers 503' in warnings[1]
    assert not [c for c in api.sent if c.startswith(('set ', 'add '))], 'a query wrote'


def test_without_wait_healthy_it_reports_and_does_not_warn(tmp_path):
    api = SimulatedHAProxy(tmp_path)
    stages, unhealthy, warnings = run(api)
    assert stages['test']['healthy_servers'] == ['test-client1', 'test-client2']
    assert stages['dev'] == {'active': 'live', 'healthy_servers': ['dev-client1']}
    assert unhealthy == [] and warnings == []
    api.servers['be_dev_live'] = {'dev-client1': ['DOWN', 0]}
    api.check_status = 'L7STS'
    stages, unhealthy, warnings = run(api, wait_healthy=5)
    assert unhealthy == ['dev'] and len(warnings) == 1 and warnings[0].startswith('Stage dev ')


def test_bad_input_is_named(tmp_path):
    result = run_module('lb_health', dict(socket=str(tmp_path / 'none.sock'),
                                          map_file=str(tmp_path / 'active.map'),
                                          stages=['dev'], wait_healthy=-1))
    assert result['failed'] and 'wait_healthy must be 0 or a number of seconds' in result['msg']
    result = run_module('lb_health', dict(socket=str(tmp_path / 'none.sock'), timeout=0.5,
                                          map_file=str(tmp_path / 'active.map'),
                                          stages=['dev']))
    assert result['failed'] and 'none.sock' in result['msg'], result
