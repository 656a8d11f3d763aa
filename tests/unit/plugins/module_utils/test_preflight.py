"""A promotion's preflight judgements: the inputs before any lock, the reads after the plan."""
from __future__ import annotations

from ansible_collections.zopeops.stages.plugins.module_utils.preflight import (
    input_problems, predecessor_problem, twin_problem)

MODEL = {'pipeline': ['dev', 'beta', 'test'],
         'stages': {'dev': {'predecessor': None, 'upgrade': None},
                    'beta': {'predecessor': 'dev', 'upgrade': None},
                    'test': {'predecessor': 'beta', 'upgrade': {'instance': 'test_upgrade'}}}}


def problems(stage='test', action='run', rollback_data=True, revision='', rollback_to='',
             migrate=''):
    return input_problems(MODEL, stage, action, rollback_data, revision, rollback_to, migrate)


def test_valid_inputs_have_no_problem():
    assert problems() == []
    assert problems(action='rollback', rollback_data='no', rollback_to='demo-v1') == []
    assert problems(revision='release/1.2_fix') == []


def test_stage_named_known_not_head_with_a_twin():
    assert problems(stage='') == ['Name the stage to promote: -e stage=<one of beta, test>.']
    assert problems(stage='staging') == [
        "Stage 'staging' is not in the pipeline dev -> beta -> test; promote one of beta, test."]
    assert problems(stage='dev') == [
        "Stage 'dev' is the head of the pipeline: nothing comes before it to promote from. "
        'Deploy to it instead: set zopeops_revision for its hosts and run playbooks/site.yml '
        '--limit dev.',
        "Stage 'dev' has no upgrade twin: add the groups dev_upgrade_zeo (one ZEO host) and "
        'dev_upgrade_clients to the inventory.']
    assert problems(stage='beta') == [
        "Stage 'beta' has no upgrade twin: add the groups beta_upgrade_zeo (one ZEO host) and "
        'beta_upgrade_clients to the inventory.']


def test_action_rollback_data_and_revision_names():
    assert problems(action='undo', rollback_data='sometimes', revision='a b',
                    rollback_to='x;y') == [
        "action is 'undo'; choose run (the default), resume or rollback.",
        "rollback_data is 'sometimes'; give true or false.",
        "promote_revision 'a b' is not a revision name (letters, digits, . _ / -).",
        "rollback_to 'x;y' is not a revision name (letters, digits, . _ / -).",
        'rollback_to goes with a rollback: use playbooks/rollback.yml -e stage=test '
        '-e rollback_to=x;y (or -e action=rollback).']
    assert problems(rollback_data=False) == [] and problems(rollback_data='Yes') == []


def test_a_move_between_kinds_names_a_kind_goes_with_run_and_needs_no_predecessor():
    assert problems(migrate='relstorage') == [] and problems(migrate='zeo') == []
    # the head moves too (it copies its own data); it still needs a twin
    assert problems(stage='dev', migrate='zeo') == [
        "Stage 'dev' has no upgrade twin: add the groups dev_upgrade_zeo (one ZEO host) and "
        'dev_upgrade_clients to the inventory.']
    assert problems(migrate='postgres') == [
        "migrate_storage is 'postgres'; choose zeo or relstorage (the kind the stage moves to; "
        'docs/relstorage.md).']
    assert problems(action='resume', migrate='zeo') == [
        'migrate_storage moves a stage with action run; leave it out of -e action=resume (a '
        'resume or rollback reads the move from the last run).']


PLAN = {'predecessor': 'beta', 'twin_revision': '0123456789abcdef'}


def health(**clients):
    return [{'instances': {'beta': {'clients': clients}}}]


def test_predecessor_healthy_and_proven():
    ok = {'ok': True, 'revision': '0123456789abcdef'}
    assert predecessor_problem(PLAN, health(**{'beta-client1': ok})) == ''
    assert predecessor_problem(PLAN, []) == ''


def test_predecessor_unhealthy_first_then_unproven_then_other_revision():
    sick = {'health_error': True, 'error': 'connection refused'}
    unproven = {'ok': False, 'error': 'no REVISION'}
    other = {'ok': True, 'revision': 'fedcba'}
    assert predecessor_problem(PLAN, health(**{'beta-client1': sick, 'beta-client2': unproven})) == (
        'The predecessor beta is not healthy, so what it runs cannot be promoted: '
        'beta-client1: connection refused. Fix beta first (playbooks/status.yml shows every '
        'stage).')
    assert predecessor_problem(PLAN, health(**{'beta-client2': unproven, 'beta-client3': other})) == (
        'The predecessor beta answers, but which revision it runs cannot be proven: '
        'beta-client2: no REVISION.')
    assert predecessor_problem(PLAN, health(**{'beta-client3': other})) == (
        'The predecessor beta does not run its deployed revision 0123456789ab: beta-client3 runs '
        'fedcba. Re-run playbooks/site.yml for beta (or restart its clients), then promote again.')


def test_twin_idle_busy_or_unanswered():
    idle = {'programs': [{'name': 'test_upgrade-zeo', 'actions': []}]}
    busy = {'programs': [{'name': 'test_upgrade-client1', 'actions': ['stop']}]}
    lost = {'failed': True, 'msg': 'supervisord does not answer'}
    assert twin_problem('test', [idle, {'skipped': True}], '/s/supervisord.conf') == ''
    assert twin_problem('test', [], '/s/supervisord.conf') == ''
    assert twin_problem('test', [busy, lost], '/s/supervisord.conf') == (
        'The twin test_upgrade is running: supervisord does not answer; test_upgrade-client1 runs. '
        'Another run, a person or a fast-rollback window may be using it. See why with '
        "`supervisorctl -c /s/supervisord.conf status` (or systemctl status 'zopeops-test_upgrade-*') "
        'on its hosts, and stop it when it is free.')


def test_the_filter_judges_only_what_the_plan_starts():
    from ansible_collections.zopeops.stages.plugins.filter.promotion import preflight_problem
    sick = {'health_error': True, 'error': 'refused'}
    busy = {'programs': [{'name': 'test_upgrade-zeo', 'actions': ['stop']}]}
    run = dict(PLAN, action='run', start='twin_code')
    reads = [{'health': health(c1=sick)[0]}, {'idle': busy}, {'balancer': {'before': {}}}]
    assert preflight_problem(run, reads, 'test', 'c').startswith(
        'The predecessor beta is not healthy')
    assert preflight_problem(run, reads[1:], 'test', 'c').startswith(
        'The twin test_upgrade is running: test_upgrade-zeo runs.')
    # check mode: the health is judged (would_start), the twin is not (nothing starts it)
    check = dict(run, start='check', would_start='twin_code')
    assert preflight_problem(check, reads, 'test', 'c').startswith('The predecessor beta')
    assert preflight_problem(check, reads[1:], 'test', 'c') == ''
    # a resume stops the twin first; a rollback promotes nothing of the predecessor's
    assert preflight_problem(dict(run, stop_twin_first=True), reads[1:], 'test', 'c') == ''
    assert preflight_problem(dict(run, action='rollback'), reads, 'test', 'c').startswith(
        'The twin test_upgrade is running')
    assert preflight_problem(dict(run, start='live_stop'), reads, 'test', 'c') == ''
    assert preflight_problem(run, [{}, None], 'test', 'c') == ''


def test_reads_name_every_host_that_did_not_answer_then_the_first_failed_read():
    from ansible_collections.zopeops.stages.plugins.module_utils.preflight import reads_problem
    hosts = ['lb-1', 'app-2', 'app-3']
    addresses = {'lb-1': '10.0.0.1', 'app-2': '10.0.0.2'}
    ok = {'reached': True, 'balancer': {'before': {}}, 'health': None}
    assert reads_problem(hosts, dict.fromkeys(hosts, ok), addresses) == ''
    lost = {'unreachable': True, 'msg': 'ssh: connect refused'}
    assert reads_problem(hosts, {'lb-1': ok, 'app-2': lost}, addresses) == (
        'Refused before anything changed: app-2 on machine 10.0.0.2, app-3 on machine ? did not '
        'answer. Bring the machine back (or fix its SSH access) and run again.')
    socket_gone = dict(ok, balancer={'failed': True, 'msg': 'HAProxy socket /x: no such file'})
    crashed = {'failed': True, 'msg': 'boom'}
    assert reads_problem(hosts, {'lb-1': socket_gone, 'app-2': crashed, 'app-3': ok},
                         addresses) == 'HAProxy socket /x: no such file'
    assert reads_problem(hosts, {'lb-1': ok, 'app-2': crashed, 'app-3': ok},
                         addresses) == 'app-2 could not be read: boom'
    # a twin that is busy is an answer for the plan's judgement, not a failed read
    busy = dict(ok, idle={'failed': True, 'msg': 'port 8080 answers'})
    assert reads_problem(hosts, {'lb-1': ok, 'app-2': busy, 'app-3': ok}, addresses) == ''
