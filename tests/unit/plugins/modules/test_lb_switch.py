"""lb_switch's logic against a simulated HAProxy CLI (the real client and parsers, a fake
socket end), and its argument handling through the real module entry point."""
from __future__ import annotations

import time

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils import haproxy as hx
from ansible_collections.zopeops.stages.plugins.module_utils import nginx as ngx
from ansible_collections.zopeops.stages.plugins.modules import lb_switch

from support.haproxy_sim import SimulatedHAProxy
from support.modules import run_module


def params(**overrides):
    values = {name: spec.get('default') for name, spec in lb_switch.ARGUMENT_SPEC.items()}
    values.update(overrides)
    return values


@pytest.fixture
def haproxy(tmp_path):
    api = SimulatedHAProxy(tmp_path)
    (tmp_path / 'active.map').write_text('# keep me\ndev be_dev_live\ntest be_test_live\n')
    (tmp_path / 'frozen.map').write_text('dev 0\ntest 0\n')
    return api


def run(api, check=False, **args):
    args.setdefault('map_file', api.map_path)
    return lb_switch.run(params(socket=api.address, **args), check, api_factory=lambda *a, **k: api)


def writes(api):
    return [c for c in api.sent if c.startswith(('set ', 'add '))]


def test_switch_sets_verifies_persists_and_drains(haproxy, tmp_path):
    result = run(haproxy, stage='test', active='upgrade')
    assert result['changed'] is True
    assert result['before']['active'] == 'live' and result['after']['active'] == 'upgrade'
    assert writes(haproxy) == ['set map %s test be_test_upgrade' % haproxy.map_path]
    # read back after the write
    assert haproxy.sent[haproxy.sent.index(writes(haproxy)[0]) + 1].startswith('get map')
    assert (tmp_path / 'active.map').read_text() == (
        '# keep me\ndev be_dev_live\ntest be_test_upgrade\n')
    assert result['drained'] is True and 0 <= result['drain_seconds'] < 1
    assert result['files'] == [haproxy.map_path]
    assert result['diff'][0]['after'].endswith('test be_test_upgrade\n')


def test_already_active_is_unchanged_and_does_not_wait(haproxy):
    haproxy.map_data[haproxy.map_path]['test'] = 'be_test_upgrade'
    with open(haproxy.map_path, 'w') as handle:
        handle.write('test be_test_upgrade\n')
    haproxy.backend_scur['be_test_live'] = 5  # would never drain
    result = run(haproxy, stage='test', active='upgrade')
    assert result['changed'] is False and result['drain_seconds'] is None
    assert writes(haproxy) == []


def test_runtime_right_but_file_stale_rewrites_only_the_file(haproxy, tmp_path):
    haproxy.map_data[haproxy.map_path]['test'] = 'be_test_upgrade'
    result = run(haproxy, stage='test', active='upgrade')
    assert result['changed'] is True and writes(haproxy) == []
    assert 'test be_test_upgrade' in (tmp_path / 'active.map').read_text()
    assert result['drain_seconds'] is None


def test_gate_refuses_when_a_target_server_is_not_up(haproxy, tmp_path):
    haproxy.servers['be_test_upgrade']['test_upgrade-client1'][0] = 'DOWN 1/2'
    before = (tmp_path / 'active.map').read_text()
    with pytest.raises(lb_switch.SwitchError) as info:
        run(haproxy, stage='test', active='upgrade', gate_timeout=0.3)
    assert 'test_upgrade-client1 (DOWN 1/2, check L7OK)' in str(info.value)
    assert info.value.result['before']['active'] == 'live'
    assert writes(haproxy) == []
    assert (tmp_path / 'active.map').read_text() == before


def test_gate_refuses_a_server_not_checked_yet(haproxy):
    haproxy.check_status = 'INI'
    with pytest.raises(lb_switch.SwitchError, match=r'test_upgrade-client1 \(UP, check INI\)'):
        run(haproxy, stage='test', active='upgrade', gate_timeout=0)


def test_gate_waits_for_a_twin_that_is_coming_up(haproxy):
    haproxy.check_status = 'INI'
    stat_calls = []
    original = haproxy.execute

    def execute(command):
        if command == 'show stat':
            stat_calls.append(command)
            if len(stat_calls) >= 4:  # the first checks pass after a moment
                haproxy.check_status = 'L7OK'
        return original(command)
    haproxy.execute = execute
    result = run(haproxy, stage='test', active='upgrade', gate_timeout=10)
    assert result['changed'] is True and len(stat_calls) >= 4


def test_gate_can_be_turned_off(haproxy):
    haproxy.servers['be_test_upgrade']['test_upgrade-client1'][0] = 'DOWN'
    assert run(haproxy, stage='test', active='upgrade', gate=False)['changed'] is True


def test_gate_refuses_an_empty_backend(haproxy):
    with pytest.raises(lb_switch.SwitchError, match='be_dev_upgrade has no servers'):
        run(haproxy, stage='dev', active='upgrade')


def test_check_mode_runs_the_gate_and_writes_nothing(haproxy, tmp_path):
    before = (tmp_path / 'active.map').read_text()
    result = run(haproxy, check=True, stage='test', active='upgrade')
    assert result['changed'] is True and result['after']['active'] == 'upgrade'
    assert writes(haproxy) == [] and (tmp_path / 'active.map').read_text() == before
    assert result['drain_seconds'] is None
    haproxy.servers['be_test_upgrade']['test_upgrade-client1'][0] = 'MAINT'
    with pytest.raises(lb_switch.SwitchError, match='waited 0s'):
        run(haproxy, check=True, stage='test', active='upgrade')  # no wait in check mode


def test_missing_entry_is_added(haproxy, tmp_path):
    del haproxy.map_data[haproxy.map_path]['test']
    (tmp_path / 'active.map').write_text('dev be_dev_live\n')
    result = run(haproxy, stage='test', active='upgrade')
    assert writes(haproxy) == ['add map %s test be_test_upgrade' % haproxy.map_path]
    assert result['before']['active'] == 'live'
    assert (tmp_path / 'active.map').read_text() == 'dev be_dev_live\ntest be_test_upgrade\n'


def leased(writes_sent, frozen_path, lease=30.0):
    """The sent writes with a freeze's deadline, checked to be ``lease`` seconds from now,
    replaced by 'LEASE'."""
    out = []
    for command in writes_sent:
        prefix = 'set map %s test ' % frozen_path
        if command.startswith(prefix) and command[len(prefix):] not in ('0',):
            until = int(command[len(prefix):])
            assert abs(until - (time.time() + lease)) < 3, command
            command = prefix + 'LEASE'
        out.append(command)
    return out


def test_freeze_before_switch_and_thaw_after(haproxy):
    run(haproxy, stage='test', frozen=True, frozen_map_file=haproxy.frozen_path)
    assert leased(writes(haproxy), haproxy.frozen_path) == [
        'set map %s test LEASE' % haproxy.frozen_path]
    haproxy.sent.clear()
    result = run(haproxy, stage='test', active='upgrade', frozen=False,
                 frozen_map_file=haproxy.frozen_path)
    assert writes(haproxy) == ['set map %s test be_test_upgrade' % haproxy.map_path,
                               'set map %s test 0' % haproxy.frozen_path]
    assert result['before']['frozen'] is True and result['after']['frozen'] is False
    haproxy.sent.clear()
    run(haproxy, stage='test', active='live', frozen=True, frozen_map_file=haproxy.frozen_path)
    assert leased(writes(haproxy), haproxy.frozen_path) == [
        'set map %s test LEASE' % haproxy.frozen_path,
        'set map %s test be_test_live' % haproxy.map_path]


def test_unfreeze_comes_before_the_drain(haproxy):
    run(haproxy, stage='test', frozen=True, frozen_map_file=haproxy.frozen_path)
    haproxy.backend_scur['be_test_live'] = 3  # never drains
    haproxy.sent.clear()
    result = run(haproxy, stage='test', active='upgrade', frozen=False, drain_timeout=0.3,
                 frozen_map_file=haproxy.frozen_path)
    thaw = haproxy.sent.index('set map %s test 0' % haproxy.frozen_path)
    switch = haproxy.sent.index('set map %s test be_test_upgrade' % haproxy.map_path)
    assert switch < thaw < len(haproxy.sent) - 1
    assert all(c in ('show stat', 'get map %s test' % haproxy.frozen_path)
               for c in haproxy.sent[thaw + 1:])
    assert result['drained'] is False
    assert result['switched_at'] <= result['unfrozen_at']
    assert result['frozen_at'] is None


def test_wait_writes_waits_for_unsafe_methods_only(haproxy):
    haproxy.sessions = [(1, 'be_test_live'), (3, 'be_test_live')]  # a GET and a POST
    polls = []
    original = haproxy.execute

    def execute(command):
        if command == 'show sess all':
            polls.append(command)
            if len(polls) == 3:
                haproxy.sessions = [(1, 'be_test_live')]  # the POST is answered
        return original(command)
    haproxy.execute = execute
    result = run(haproxy, stage='test', frozen=True, frozen_map_file=haproxy.frozen_path,
                 wait_writes=5)
    assert len(polls) == 3 and result['writes_in_flight'] == []
    assert 0 < result['writes_in_flight_seconds'] < 5
    assert result['frozen_at'] is not None
    sent = leased(haproxy.sent, haproxy.frozen_path)
    assert sent.index('set map %s test LEASE' % haproxy.frozen_path) < sent.index('show sess all')
    # the lease is renewed once the writes in flight were answered: it counts from then
    assert int(haproxy.map_data[haproxy.frozen_path]['test']) >= int(time.time()) + 29


def test_wait_writes_fails_and_leaves_the_freeze(haproxy):
    haproxy.sessions = [(8, 'be_test_upgrade'), (3, 'be_dev_live')]  # OTHER (e.g. LOCK), dev
    with pytest.raises(lb_switch.SwitchError, match=r'1 write\(s\) were still in flight.*'
                                                    r'OTHER on be_test_upgrade') as info:
        run(haproxy, stage='test', frozen=True, frozen_map_file=haproxy.frozen_path,
            wait_writes=0.2)
    assert info.value.result['changed'] is True
    assert info.value.result['after']['frozen'] is True
    assert info.value.result['writes_in_flight'][0]['backend'] == 'be_test_upgrade'
    assert int(haproxy.map_data[haproxy.frozen_path]['test']) > time.time() + 20


def test_query_reads_without_writing(haproxy):
    haproxy.map_data[haproxy.frozen_path]['test'] = str(int(time.time()) + 20)
    result = run(haproxy, stage='test', frozen_map_file=haproxy.frozen_path)
    assert result['changed'] is False and writes(haproxy) == []
    assert result['before'] == result['after']
    assert result['after']['active'] == 'live' and result['after']['frozen'] is True
    assert set(result['after']['servers']) == {'be_test_live', 'be_test_upgrade'}
    bare = run(haproxy, stage='test', map_file=None)
    assert bare['after']['active'] is None and bare['after']['frozen'] is None


def test_query_reports_the_healthy_servers_of_the_active_side(haproxy):
    result = run(haproxy, stage='test', wait_healthy=5, frontend_url='http://127.0.0.1:8002/')
    assert result['healthy_servers'] == ['test-client1', 'test-client2']
    assert result['warnings'] == []


def test_query_warns_naming_the_stage_and_url_when_no_server_passes(haproxy):
    haproxy.servers['be_dev_live'] = {'dev-client1': ['DOWN', 0]}
    haproxy.check_status = 'L7STS'
    started = time.monotonic()
    result = run(haproxy, stage='dev', wait_healthy=30, frontend_url='http://127.0.0.1:8000/')
    assert time.monotonic() - started < 5, 'every server was checked and DOWN: no wait'
    assert result['healthy_servers'] == []
    assert result['warnings'] == [
        "Stage dev has no healthy backend: no server of be_dev_live passes HAProxy's health "
        "check (dev-client1 DOWN L7STS), so http://127.0.0.1:8000/ answers 503. Check its Zope "
        "clients (playbooks/status.yml), the health page (zopeops_health_path) and whether the "
        "site exists (an init script: zopeops_init_script)."]
    # Without wait_healthy the query only reports.
    assert run(haproxy, stage='dev')['warnings'] == []


def test_query_waits_for_a_server_whose_first_check_is_pending(haproxy):
    haproxy.check_status = 'INI'
    original = haproxy.execute

    def execute(command):
        if command == 'show stat' and haproxy.sent.count('show stat') >= 2:
            haproxy.check_status = 'L7OK'
        return original(command)
    haproxy.execute = execute
    result = run(haproxy, stage='dev', wait_healthy=5)
    assert result['healthy_servers'] == ['dev-client1'] and result['warnings'] == []


def test_unknown_stage_names_the_known_ones(haproxy):
    with pytest.raises(lb_switch.SwitchError, match=r"no backend be_prod_live.*Stages it serves: "
                                                    r"dev, test"):
        run(haproxy, stage='prod', active='upgrade')


def test_options_that_belong_together(haproxy):
    with pytest.raises(lb_switch.SwitchError, match='wait_writes .* with frozen=true'):
        run(haproxy, stage='test', wait_writes=1, frozen_map_file=haproxy.frozen_path)
    with pytest.raises(lb_switch.SwitchError, match='frozen needs frozen_map_file'):
        run(haproxy, stage='test', frozen=True)
    with pytest.raises(lb_switch.SwitchError, match='active needs map_file'):
        lb_switch.run(params(socket='x', stage='test', active='live'), False,
                      api_factory=lambda *a, **k: haproxy)


def test_per_server_states(haproxy):
    server = dict(backend='be_test_live', server='test-client2', map_file=None)
    result = run(haproxy, state='drain', **server)
    assert result['changed'] and result['after'] == {
        'backend': 'be_test_live', 'server': 'test-client2', 'state': 'drain', 'status': 'DRAIN'}
    assert result['drained'] is True
    assert run(haproxy, state='drain', **server)['changed'] is False
    assert run(haproxy, state='maint', **server)['after']['status'] == 'MAINT'
    ready = run(haproxy, state='ready', **server)
    assert ready['before']['state'] == 'maint' and ready['drain_seconds'] is None
    with pytest.raises(lb_switch.SwitchError, match='has no server ghost; it has: test-client1, '
                                                    'test-client2'):
        run(haproxy, state='drain', backend='be_test_live', server='ghost', map_file=None)
    with pytest.raises(hx.HAProxyError, match='no backend be_ghost'):
        run(haproxy, state='drain', backend='be_ghost', server='x', map_file=None)


def test_a_drained_server_that_is_down_is_known_as_drained(haproxy):
    """A client restarted while drained fails its checks (DOWN): putting it back still sends
    the command, and the last healthy server is never taken out."""
    two = dict(backend='be_test_live', server='test-client2', map_file=None)
    one = dict(backend='be_test_live', server='test-client1', map_file=None)
    run(haproxy, state='drain', **two)
    haproxy.failing.add('test-client2')
    with pytest.raises(lb_switch.SwitchError, match='has not passed its health checks within'):
        run(haproxy, state='ready', wait_up=0.3, **two)
    assert haproxy.admin[('be_test_live', 'test-client2')] == 'ready'
    assert 'set server be_test_live/test-client2 state ready' in writes(haproxy)
    haproxy.admin[('be_test_live', 'test-client2')] = 'drain'
    with pytest.raises(lb_switch.SwitchError, match='only 0 other server.s. of be_test_live pass '
                                                    'their health checks and take traffic .none.'):
        run(haproxy, state='drain', min_others_up=1, **one)
    assert haproxy.admin.get(('be_test_live', 'test-client1'), 'ready') == 'ready'
    haproxy.failing.clear()
    haproxy.admin[('be_test_live', 'test-client2')] = 'ready'
    result = run(haproxy, state='drain', min_others_up=1, **one)
    assert result['changed'] and result['healthy_servers'] == ['test-client1', 'test-client2']


def test_per_server_on_a_socket_below_admin(tmp_path):
    api = SimulatedHAProxy(tmp_path, level='operator')
    with pytest.raises(hx.HAProxyError, match='Permission denied .this socket is at level '
                                              'operator'):
        run(api, state='drain', backend='be_test_live', server='test-client1', map_file=None)


def test_nginx_render_and_side_detection():
    text = ngx.render_upstream('beta', 'upgrade', ['127.0.0.1:8081', '10.0.0.2:8080'],
                               'max_fails=1')
    assert ngx.active_side(text) == 'upgrade'
    assert 'upstream zopeops_beta {\n    server 127.0.0.1:8081 max_fails=1;\n' in text
    assert ngx.normalize_servers([{'address': 'a', 'port': 1}, 'b:2']) == ['a:1', 'b:2']
    assert ngx.active_side('upstream x {}') is None


def test_nginx_refuses_freeze_and_per_server():
    with pytest.raises(lb_switch.SwitchError, match='needs balancer=haproxy'):
        lb_switch.run(params(balancer='nginx', stage='t', frozen=True), False)
    with pytest.raises(lb_switch.SwitchError, match='Per-server mode'):
        lb_switch.run(params(balancer='nginx', backend='b', server='s', state='drain'), False)


def test_module_entry_point_validates_arguments():
    result = run_module('lb_switch', {'stage': 'test', 'active': 'upgrade'})
    assert result['failed'] and 'socket' in result['msg']
    result = run_module('lb_switch', {'socket': '/x', 'stage': 't', 'backend': 'b',
                                      'server': 's', 'state': 'drain'})
    assert result['failed'] and 'mutually exclusive' in result['msg']
    result = run_module('lb_switch', {'socket': '/nonexistent/h.sock', 'stage': 'test',
                                      'active': 'live', 'map_file': '/x.map'})
    assert result['failed'] and 'does not exist' in result['msg']


def test_documentation_parses_and_matches_the_argument_spec():
    import yaml
    from ansible_collections.zopeops.stages.plugins.doc_fragments.lb import ModuleDocFragment
    doc = yaml.safe_load(lb_switch.DOCUMENTATION)
    yaml.safe_load(lb_switch.EXAMPLES)
    returned = yaml.safe_load(lb_switch.RETURN)
    options = dict(doc['options'], **yaml.safe_load(ModuleDocFragment.DOCUMENTATION)['options'])
    assert set(options) == set(lb_switch.ARGUMENT_SPEC)
    for name, spec in lb_switch.ARGUMENT_SPEC.items():
        assert options[name]['type'] == spec['type'], name
        assert options[name].get('default') == spec.get('default'), name
        assert options[name].get('choices') == spec.get('choices'), name
    assert {'before', 'after', 'drain_seconds', 'drained', 'commands', 'files'} <= set(returned)


# --- the freeze as a lease -------------------------------------------------------------------

def test_a_lease_of_zero_holds_the_freeze_without_deadline(haproxy):
    result = run(haproxy, stage='test', frozen=True, lease=0,
                 frozen_map_file=haproxy.frozen_path)
    assert haproxy.map_data[haproxy.frozen_path]['test'] == str(hx.HELD)
    assert result['after']['frozen'] is True and result['after']['frozen_held'] is True
    assert result['frozen_until'] is None


def test_an_ended_lease_is_not_frozen_and_its_lift_dates_from_the_deadline(haproxy):
    ended = int(time.time()) - 4
    haproxy.map_data[haproxy.frozen_path]['test'] = str(ended)
    query = run(haproxy, stage='test', frozen_map_file=haproxy.frozen_path)
    assert query['before']['frozen'] is False and query['before']['frozen_until'] is None
    haproxy.map_data[haproxy.frozen_path]['test'] = str(ended)
    lift = run(haproxy, stage='test', frozen=False, frozen_map_file=haproxy.frozen_path)
    assert lift['changed'] is True and lift['unfrozen_at'] == float(ended)
    assert haproxy.map_data[haproxy.frozen_path]['test'] == '0'
    # the old format's "1" is a second long past: not frozen either
    assert hx.freeze_state('1') == {'frozen': False, 'until': None, 'held': False}


def test_query_reports_the_deadline_of_a_freeze_in_force(haproxy):
    until = int(time.time()) + 25
    haproxy.map_data[haproxy.frozen_path]['test'] = str(until)
    result = run(haproxy, stage='test', frozen_map_file=haproxy.frozen_path)
    assert result['after']['frozen'] is True and result['after']['frozen_until'] == until
    assert result['after']['frozen_held'] is False and result['frozen_until'] == until


@pytest.mark.parametrize('left', [None, 2])
def test_a_switch_under_a_freeze_without_margin_is_refused_and_changes_nothing(haproxy, left):
    value = '0' if left is None else str(int(time.time()) + left)
    haproxy.map_data[haproxy.frozen_path]['test'] = value
    with pytest.raises(lb_switch.SwitchError, match='traffic stays where it is') as info:
        run(haproxy, stage='test', active='upgrade', under_freeze=True, lease_margin=5,
            frozen_map_file=haproxy.frozen_path)
    assert ('not in force' if left is None else 'less than lease_margin') in str(info.value)
    assert writes(haproxy) == []
    assert haproxy.map_data[haproxy.map_path]['test'] == 'be_test_live'
    assert haproxy.map_data[haproxy.frozen_path]['test'] == value


def test_a_switch_under_a_freeze_renews_the_lease_first_and_keeps_the_freeze(haproxy):
    haproxy.map_data[haproxy.frozen_path]['test'] = str(int(time.time()) + 12)
    result = run(haproxy, stage='test', active='upgrade', under_freeze=True, lease=40,
                 frozen_map_file=haproxy.frozen_path)
    assert leased(writes(haproxy), haproxy.frozen_path, lease=40) == [
        'set map %s test LEASE' % haproxy.frozen_path,
        'set map %s test be_test_upgrade' % haproxy.map_path]
    assert result['after']['frozen'] is True and result['frozen_until'] >= time.time() + 37
    assert result['frozen_at'] is None and result['unfrozen_at'] is None


def test_a_switch_under_a_held_freeze_may_hold_it(haproxy):
    haproxy.map_data[haproxy.frozen_path]['test'] = str(hx.HELD)
    run(haproxy, stage='test', active='upgrade', under_freeze=True, lease=0,
        frozen_map_file=haproxy.frozen_path)
    assert haproxy.map_data[haproxy.frozen_path]['test'] == str(hx.HELD)
    assert haproxy.map_data[haproxy.map_path]['test'] == 'be_test_upgrade'


def test_gate_side_gates_before_the_freeze_and_refuses_without_freezing(haproxy):
    haproxy.servers['be_test_upgrade'] = {'test_upgrade-client1': ['DOWN', 0]}
    haproxy.check_status = 'L7STS'
    with pytest.raises(lb_switch.SwitchError, match='not every server of be_test_upgrade'):
        run(haproxy, stage='test', frozen=True, gate_side='upgrade', gate_timeout=0.3,
            frozen_map_file=haproxy.frozen_path)
    assert writes(haproxy) == []
    haproxy.servers['be_test_upgrade'] = {'test_upgrade-client1': ['UP', 0]}
    haproxy.check_status = 'L7OK'
    result = run(haproxy, stage='test', frozen=True, gate_side='upgrade',
                 frozen_map_file=haproxy.frozen_path)
    assert result['after']['frozen'] is True


def test_drain_other_drains_after_a_switch_made_earlier(haproxy):
    haproxy.map_data[haproxy.map_path]['test'] = 'be_test_upgrade'
    with open(haproxy.map_path, 'w') as handle:
        handle.write('test be_test_upgrade\n')
    haproxy.backend_scur['be_test_live'] = 2
    result = run(haproxy, stage='test', active='upgrade', drain_other=True, drain_timeout=0.3)
    assert result['changed'] is False and result['drained'] is False


@pytest.mark.parametrize('args,match', [
    ({'lease': -1, 'frozen': True}, 'lease must be 0 or a number of seconds'),
    ({'lease': 3, 'lease_margin': 5, 'active': 'upgrade', 'under_freeze': True},
     'must be longer than lease_margin'),
    ({'drain_timeout': -2}, 'drain_timeout must be 0'),
    ({'under_freeze': True}, 'under_freeze is a switch under the write freeze'),
    ({'gate_side': 'upgrade', 'active': 'upgrade'}, 'gate_side gates a side before a freeze'),
    ({'gate_side': 'upgrade', 'frozen': False}, 'gate_side gates a side before a freeze'),
])
def test_bad_lease_arguments_are_refused(haproxy, args, match):
    if 'frozen' in args:
        args = dict(args, frozen_map_file=haproxy.frozen_path)
    with pytest.raises(lb_switch.SwitchError, match=match):
        run(haproxy, stage='test', **args)
    assert writes(haproxy) == []


def test_every_request_returns_every_documented_key(haproxy, tmp_path):
    """One result-building function (module_utils/balancer.py): a read, a freeze, a switch, a
    server's state and an nginx read all return the keys RETURN documents (elapsed_seconds is
    the module's own) and no other."""
    import yaml
    documented = set(yaml.safe_load(lb_switch.RETURN)) - {'elapsed_seconds'}
    include = tmp_path / 'upstream-beta.conf'
    include.write_text(ngx.render_upstream('beta', 'live', ['127.0.0.1:1']))
    results = [
        run(haproxy, stage='test', frozen_map_file=haproxy.frozen_path),
        run(haproxy, stage='test', frozen=True, frozen_map_file=haproxy.frozen_path),
        run(haproxy, stage='test', active='upgrade', frozen=False,
            frozen_map_file=haproxy.frozen_path),
        run(haproxy, state='drain', backend='be_test_live', server='test-client1', map_file=None,
            drain_timeout=0),
        lb_switch.run(params(balancer='nginx', stage='beta', nginx_include=str(include)), False),
    ]
    for result in results:
        assert set(result) - {'changed', 'diff', 'warnings'} == documented, sorted(result)
    assert results[1]['frozen_at'] and results[2]['switched_at'] and results[2]['unfrozen_at']
    assert results[4]['before']['active'] == 'live' and results[4]['changed'] is False
