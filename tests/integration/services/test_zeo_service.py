"""zeo_service against a real supervisord running a real runzeo and a real Zope 6 client."""
from __future__ import annotations

import json

import pytest

from support.modules import run_module
from support.paths import VENV_BIN
from support.ports import free_port, port_is_free

from .conftest import make_zope

pytestmark = pytest.mark.integration


def zeo_args(supervisor, zeo, **args):
    base = dict(name=zeo['name'], kind='zeo', address=zeo['address'],
                log_path=zeo['log_path'], timeout=30)
    base.update(args)
    return supervisor.module_args(**base)


def test_zeo_starts_new_program_and_reports_last_tid(supervisor, zeo):
    result = run_module('zeo_service', zeo_args(supervisor, zeo, expected_tid=zeo['tid']))
    assert result['rc'] == 0, result
    assert result['changed'] is True
    assert result['state_before'] == 'ABSENT'      # supervisord did not know the file yet
    assert result['state_after'] == 'RUNNING'
    assert result['actions'][0] == 'update'
    assert result['last_tid'] == zeo['tid']
    assert isinstance(result['pid'], int)
    assert 0 <= result['ready_seconds'] < 30
    assert not port_is_free(zeo['port'])


def test_zeo_second_start_changes_nothing(supervisor, zeo):
    first = run_module('zeo_service', zeo_args(supervisor, zeo))
    second = run_module('zeo_service', zeo_args(supervisor, zeo))
    assert second['rc'] == 0, second
    assert second['changed'] is False
    assert second['actions'] == []
    assert second['pid'] == first['pid']
    assert second['last_tid'] == zeo['tid']


def test_zeo_wrong_expected_tid_fails_naming_both_tids(supervisor, zeo):
    wrong = '03' + 'f' * 14
    result = run_module('zeo_service', zeo_args(supervisor, zeo, expected_tid=wrong))
    assert result['rc'] != 0 and result['failed']
    assert wrong in result['msg'] and zeo['tid'] in result['msg']
    assert zeo['name'] in result['msg'] and zeo['address'] in result['msg']
    assert 'expected' in result['msg']


def test_check_mode_changes_nothing(supervisor, zeo):
    before = run_module('zeo_service', zeo_args(supervisor, zeo))
    assert before['state_after'] == 'RUNNING'
    stop = run_module('zeo_service', zeo_args(supervisor, zeo, state='stopped'), check=True)
    assert stop['rc'] == 0, stop
    assert stop['changed'] is True and stop['actions'] == ['stop']
    assert stop['state_after'] == 'STOPPED'
    restart = run_module('zeo_service', zeo_args(supervisor, zeo, state='restarted'), check=True)
    assert restart['changed'] is True and restart['actions'] == ['restart']
    after = run_module('zeo_service', zeo_args(supervisor, zeo))
    assert after['changed'] is False
    assert after['pid'] == before['pid']            # neither stopped nor restarted


def test_restart_gives_a_new_ready_process(supervisor, zeo):
    before = run_module('zeo_service', zeo_args(supervisor, zeo))
    result = run_module('zeo_service', zeo_args(supervisor, zeo, state='restarted'))
    assert result['rc'] == 0, result
    assert result['changed'] is True and result['actions'] == ['restart']
    assert result['pid'] != before['pid']
    assert result['state_after'] == 'RUNNING'
    assert result['last_tid'] == zeo['tid']


def test_stop_closes_the_port_and_is_idempotent(supervisor, zeo):
    run_module('zeo_service', zeo_args(supervisor, zeo))
    result = run_module('zeo_service', zeo_args(supervisor, zeo, state='stopped'))
    assert result['rc'] == 0, result
    assert result['changed'] is True
    assert result['state_before'] == 'RUNNING' and result['state_after'] == 'STOPPED'
    assert result['pid'] is None
    assert port_is_free(zeo['port'])
    again = run_module('zeo_service', zeo_args(supervisor, zeo, state='stopped'))
    assert again['rc'] == 0 and again['changed'] is False
    # Check mode on a stopped program: would start, starts nothing.
    check = run_module('zeo_service', zeo_args(supervisor, zeo), check=True)
    assert check['changed'] is True and check['actions'] == ['start']
    assert port_is_free(zeo['port'])
    assert 'STOPPED' in supervisor.ctl('status', zeo['name'])


def test_program_that_exits_at_once_fails_with_its_log(supervisor):
    port = free_port()
    supervisor.add_program(
        't-crash', '/bin/sh -c "echo zeo-config-broken-on-purpose >&2; exit 3"',
        startretries=0)
    result = run_module('zeo_service', supervisor.module_args(
        name='t-crash', kind='zeo', address=f'127.0.0.1:{port}', timeout=20))
    assert result['rc'] != 0 and result['failed']
    assert 't-crash' in result['msg']
    assert any('State now: %s' % state in result['msg']
               for state in ('FATAL', 'BACKOFF', 'EXITED')), result['msg']
    assert 'zeo-config-broken-on-purpose' in result['msg']
    assert any('zeo-config-broken-on-purpose' in line for line in result['log_tail'])


def test_unknown_program_fails_clearly(supervisor):
    result = run_module('zeo_service', supervisor.module_args(
        name='t-nowhere', kind='zeo', address='127.0.0.1:1', timeout=5))
    assert result['failed']
    assert "no program 't-nowhere'" in result['msg'] and '[program:t-nowhere]' in result['msg']


def test_zope_client_on_zeo_starts_answers_and_stops(supervisor, zeo, tmp_path):
    run_module('zeo_service', zeo_args(supervisor, zeo))
    port = free_port()
    ini = make_zope(supervisor.root / 'client1', port, zeo_address=zeo['address'])
    supervisor.add_program('t-client1', f'{VENV_BIN}/runwsgi {ini}')
    args = supervisor.module_args(name='t-client1', kind='zope', address=f'127.0.0.1:{port}',
                                  timeout=60)
    result = run_module('zeo_service', args)
    assert result['rc'] == 0, result
    assert result['changed'] is True and result['state_after'] == 'RUNNING'
    assert 'answered HTTP' in result['ready_detail']
    assert 'last_tid' not in result
    again = run_module('zeo_service', args)
    assert again['changed'] is False and again['pid'] == result['pid']
    stopped = run_module('zeo_service', dict(args, state='stopped'))
    assert stopped['rc'] == 0 and stopped['state_after'] == 'STOPPED'
    assert port_is_free(port)


def test_zope_that_never_becomes_ready_times_out_with_its_log(supervisor):
    # A Zope client whose ZEO server does not exist waits for it and never serves HTTP.
    port = free_port()
    ini = make_zope(supervisor.root / 'client-stuck', port,
                    zeo_address=f'127.0.0.1:{free_port()}')
    supervisor.add_program('t-stuck', f'{VENV_BIN}/runwsgi {ini}')
    result = run_module('zeo_service', supervisor.module_args(
        name='t-stuck', kind='zope', address=f'127.0.0.1:{port}', timeout=4))
    try:
        assert result['failed']
        assert 'not ready after 4 seconds' in result['msg']
        assert 't-stuck' in result['msg'] and f'127.0.0.1:{port}' in result['msg']
        assert 'State: RUNNING' in result['msg']
        assert result['log_tail']
    finally:
        supervisor.ctl('stop', 't-stuck')
    json.dumps(result)


# -- programs: a side's programs in one call, readiness from probes (startsecs = 0) ---------

@pytest.mark.slow
def test_programs_start_two_clients_together_then_stop_them_in_one_call(supervisor, zeo):
    run_module('zeo_service', zeo_args(supervisor, zeo))
    programs = []
    for name in ('t-pc1', 't-pc2'):
        port = free_port()
        ini = make_zope(supervisor.root / name, port, zeo_address=zeo['address'])
        # As the roles write them: readiness comes from the probes, not from startsecs.
        supervisor.add_program(name, f'{VENV_BIN}/runwsgi {ini}', startsecs=0,
                               autorestart='true')
        programs.append({'name': name, 'address': f'127.0.0.1:{port}'})
    args = supervisor.module_args(kind='zope', programs=programs, timeout=90)
    try:
        # Zope creates its root objects at its first start, and two first starts on an empty
        # database conflict (ConflictError). The data a promotion starts always holds them;
        # so this database gets them first, from one client alone.
        first = run_module('zeo_service', dict(args, programs=programs[:1]))
        assert first['rc'] == 0, first.get('msg')
        supervisor.ctl('stop', 't-pc1')
        result = run_module('zeo_service', args)
        assert result['rc'] == 0, result.get('msg')
        assert result['changed'] is True and result['actions'][-1] == 'start'
        assert [p['name'] for p in result['programs']] == ['t-pc1', 't-pc2']
        assert all(p['state_after'] == 'RUNNING' and p['ready_seconds'] > 0
                   for p in result['programs'])
        starts = [argv for argv in result['commands'] if 'start' in argv]
        assert len(starts) == 1 and starts[0][-2:] == ['t-pc1', 't-pc2']
        again = run_module('zeo_service', args)
        assert again['changed'] is False
        assert [p['pid'] for p in again['programs']] == [p['pid'] for p in result['programs']]
        stopped = run_module('zeo_service', dict(args, state='stopped'))
        assert stopped['rc'] == 0 and stopped['actions'] == ['stop']
        assert [argv[-3:] for argv in stopped['commands'] if 'stop' in argv] == [
            ['stop', 't-pc1', 't-pc2']]
        assert all(port_is_free(int(p['address'].rsplit(':', 1)[1])) for p in programs)
    finally:
        supervisor.ctl('stop', 't-pc1', 't-pc2')


@pytest.mark.parametrize('form', ['name', 'programs'])
def test_program_that_exits_after_a_second_fails_with_its_log(supervisor, form):
    # startsecs = 0: supervisord calls it RUNNING at once and, with autorestart, starts it
    # again when it exits, so no FATAL ever shows. The probes must still catch it.
    name = 't-dies-' + form
    address = f'127.0.0.1:{free_port()}'
    supervisor.add_program(name, '/bin/sh -c "echo dying-on-purpose; sleep 1; exit 3"',
                           startsecs=0, autorestart='true')
    args = (dict(name=name, address=address) if form == 'name'
            else dict(programs=[{'name': name, 'address': address}]))
    try:
        result = run_module('zeo_service', supervisor.module_args(kind='zope', timeout=60,
                                                                  **args))
        assert result['rc'] != 0 and result['failed']
        assert name in result['msg']
        assert ('exited and was started again' in result['msg']
                or 'the process is' in result['msg']), result['msg']
        assert 'not ready after 60' not in result['msg']          # found early, not timed out
        assert any('dying-on-purpose' in line for line in result['log_tail'])
    finally:
        supervisor.ctl('stop', name)
