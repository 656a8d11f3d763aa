"""The plan of a promotion: which revision and data go where, and where a resume starts."""
from __future__ import annotations

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils.promotion_plan import (
    PlanRefused, describe, kept_pair_stamp, make_plan, serving_side)


def model(policy='upstream'):
    side = {'instance': 'test', 'hosts': ['t'], 'zeo': {'host': 't'}, 'clients': []}
    return {'pipeline': ['dev', 'beta', 'test'], 'stages': {
        'test': {'name': 'test', 'predecessor': 'beta', 'data_policy': policy,
                 'live': side, 'upgrade': dict(side, instance='test_upgrade')}}}


LIVE = [{'active': 'live', 'frozen': False}]
TWIN = [{'active': 'upgrade', 'frozen': False}]


def plan(policy='upstream', action='run', previous=None, views=None, **kwargs):
    return make_plan(model(policy), 'test', action, previous or {}, {'revision': 'new'},
                     {'revision': 'old'}, views or LIVE, **kwargs)


@pytest.mark.parametrize('policy,data_from,catch_up,live_data', [
    ('upstream', 'beta', False, 'from_twin'),
    ('self', 'test', True, 'own'),
    ('none', 'test', True, 'own'),
])
def test_a_promotion_by_policy(policy, data_from, catch_up, live_data):
    p = plan(policy)
    assert (p['data_from'], p['catch_up_to_twin'], p['live_data']) == (data_from, catch_up, live_data)
    assert p['twin_revision'] == p['live_revision'] == 'new' and p['start'] == 'twin_code'


def test_a_hotfix_revision_wins_over_the_predecessor():
    assert plan(revision='hotfix')['live_revision'] == 'hotfix'


def test_a_run_is_refused_after_an_unfinished_one_and_when_traffic_is_on_the_twin():
    with pytest.raises(PlanRefused, match='action=resume'):
        plan(previous={'status': 'failed', 'step': 'live_start', 'plan': {}})
    with pytest.raises(PlanRefused, match='sends the traffic of test to its twin'):
        plan(views=TWIN)


def test_resume_trusts_the_balancer():
    previous = {'status': 'interrupted', 'run_id': 'r1', 'step': 'cutover_to_twin',
                'plan': plan('self')}
    # the state said nothing moved, but the balancer serves the twin: the stage's half starts
    on_twin = plan('self', 'resume', previous, TWIN)
    assert on_twin['start'] == 'live_stop' and on_twin['live_data'] == 'from_twin'
    assert on_twin['resumed_run'] == 'r1'
    # nothing moved: start over, after stopping a twin that may run
    on_live = plan('self', 'resume', previous, LIVE)
    assert on_live['start'] == 'twin_code' and on_live['stop_twin_first']
    # traffic came back to the stage after the twin had it: only the twin is left to stop
    back = plan('self', 'resume', dict(previous, twin_took_traffic=True), LIVE)
    assert back['start'] == 'twin_stop'


def test_resume_needs_something_unfinished():
    with pytest.raises(PlanRefused, match='nothing|no unfinished'):
        plan(action='resume', previous={'status': 'done', 'plan': {}})


def test_rollback_after_a_finished_promotion():
    previous = {'status': 'done', 'rollback_target': {'revision': 'old0', 'data_pair': 'p1'}}
    p = plan('upstream', 'rollback', previous)
    assert (p['twin_revision'], p['live_revision'], p['live_data'], p['rollback_pair']) == (
        'old', 'old0', 'previous_pair', 'p1')
    assert p['data_from'] == 'test' and p['catch_up_to_twin']
    code_only = plan('upstream', 'rollback', previous, rollback_data=False)
    assert code_only['live_data'] == 'own' and code_only['rollback_pair'] is None


def test_rollback_refusals_name_the_way_out():
    with pytest.raises(PlanRefused, match='nothing to roll back'):
        plan(action='rollback', previous={'status': 'done'})
    with pytest.raises(PlanRefused, match='rollback_data=false'):
        plan(action='rollback', previous={'status': 'done',
                                          'rollback_target': {'revision': 'x', 'data_pair': None}})


def test_rollback_of_a_failed_promotion_with_traffic_on_the_twin():
    failed = {'status': 'failed', 'run_id': 'r9', 'plan': dict(plan(), from_revision='old0'),
              'rollback_target': {'revision': 'old0', 'data_pair': 'p2'}}
    replaced = plan('upstream', 'rollback', dict(failed, live_data_done=True), TWIN)
    assert (replaced['start'], replaced['live_data'], replaced['rollback_pair'],
            replaced['live_revision']) == ('live_stop', 'previous_pair', 'p2', 'old0')
    untouched = plan('upstream', 'rollback', failed, TWIN)
    assert untouched['live_data'] == 'keep'


def test_disagreeing_balancers_follow_the_unfrozen_one():
    assert serving_side([{'active': 'live', 'frozen': True},
                         {'active': 'upgrade', 'frozen': False}]) == ('upgrade', False)
    assert serving_side([{'active': 'live', 'frozen': True}]) == ('live', True)


def test_none_policy_with_the_code_in_place_is_nothing_to_do_unless_forced():
    same = {'revision': 'old'}
    with pytest.raises(PlanRefused, match='Nothing to do'):
        make_plan(model('none'), 'test', 'run', {}, same, same, LIVE)
    forced = make_plan(model('none'), 'test', 'run', {}, same, same, LIVE, force=True)
    assert forced['code_only_refresh'] and forced['live_data'] == 'own'


# --- rollback to any kept release (-e rollback_to) ---------------------------------------

HISTORY = {'status': 'done',
           'rollback_history': [{'revision': 'v1', 'data_pair': 'S1', 'recorded_by': 'r1'},
                                {'revision': 'v2', 'data_pair': 'S2', 'recorded_by': 'r2'}],
           'rollback_target': {'revision': 'v3', 'data_pair': 'S3', 'recorded_by': 'r3'}}


def test_a_run_records_every_rollback_target_in_the_history():
    history = plan(previous=HISTORY)['rollback_history']
    assert [e['revision'] for e in history] == ['v1', 'v2', 'v3']
    # A state from before the history: its one target starts it.
    assert plan(previous={'rollback_target': {'revision': 'v0'}})['rollback_history'] == [
        {'revision': 'v0'}]


def test_rollback_to_a_kept_release_with_its_pair():
    p = plan(action='rollback', previous=HISTORY, rollback_to={'name': 'demo-v1', 'revision': 'v1'},
             kept_pairs=['S1', 'S3'])
    assert (p['live_revision'], p['twin_revision'], p['start']) == ('v1', 'old', 'twin_code')
    assert (p['live_data'], p['rollback_pair']) == ('previous_pair', 'S1')
    assert 'code_only_reason' not in p and p['rollback_to'] == 'demo-v1'


def test_rollback_to_finds_a_kept_datafs_by_its_file_name():
    """The ZEO host lists its kept pairs as files (Data.fs.prev-<stamp>); the history names
    them by stamp. (The prefix was once stripped by a regex in a folded YAML scalar, where
    Ansible 2.19 left the backslashes in and nothing matched: only the code went back.)"""
    p = plan(action='rollback', previous=HISTORY, rollback_to={'name': 'demo-v1', 'revision': 'v1'},
             kept_pairs=['Data.fs.prev-S1', 'Data.fs.prev-S3'])
    assert (p['live_data'], p['rollback_pair']) == ('previous_pair', 'S1')
    assert kept_pair_stamp('zopeops_beta_prev_S1') == 'zopeops_beta_prev_S1'


def test_rollback_to_a_release_whose_pair_is_gone_takes_the_code_only_and_says_so():
    p = plan(action='rollback', previous=HISTORY, rollback_to={'name': 'demo-v2', 'revision': 'v2'},
             kept_pairs=['S3'])
    assert (p['live_revision'], p['live_data'], p['rollback_pair']) == ('v2', 'own', None)
    assert p['code_only_reason'].startswith('Only the code goes back: no data pair of demo-v2')
    assert p['code_only_reason'] in describe(p)
    never = plan(action='rollback', previous={}, rollback_to={'name': 'x', 'revision': 'vx'})
    assert never['live_data'] == 'own' and never['catch_up_to_twin']
    asked = plan(action='rollback', previous=HISTORY, rollback_data=False,
                 rollback_to={'name': 'demo-v1', 'revision': 'v1'}, kept_pairs=['S1'])
    assert asked['live_data'] == 'own' and 'rollback_data=false' in asked['code_only_reason']


def test_rollback_to_refuses_the_running_release_and_an_unfinished_run():
    with pytest.raises(PlanRefused, match='runs demo-v9 .* already'):
        plan(action='rollback', rollback_to={'name': 'demo-v9', 'revision': 'old'})
    with pytest.raises(PlanRefused, match='finish it'):
        plan(action='rollback', previous={'status': 'failed', 'run_id': 'r'},
             rollback_to={'name': 'demo-v1', 'revision': 'v1'})


BACKUP = {'stamp': '2026-12-07-05-10-28', 'last_tid': '03f0aa', 'files': ['2026-12-07-05-10-28.fs'],
          'repository': '/r/backups/test'}


def test_a_restore_is_a_plan_with_the_backup_as_data_and_no_catch_up_at_the_first_switch():
    p = plan('self', 'restore', restore=dict(BACKUP))
    # The code stays the stage's; the data comes from its own backup; nothing of the stage is
    # caught up into the twin (the restore drops it), the twin's writes come back.
    assert p['twin_revision'] == p['live_revision'] == 'old'
    assert (p['data_from'], p['catch_up_to_twin'], p['live_data'], p['start']) == (
        'test', False, 'from_twin', 'twin_code')
    assert p['restore']['from'] == 'test' and p['restore']['last_tid'] == '03f0aa'
    assert "test's backup 2026-12-07-05-10-28" in ' '.join(describe(p))


def test_a_restore_of_another_stages_backup_needs_the_flag():
    with pytest.raises(PlanRefused, match='allow_other_stage=true'):
        plan('self', 'restore', restore=dict(BACKUP, **{'from': 'beta'}))
    p = plan('self', 'restore', restore=dict(BACKUP, allow_other_stage=True, **{'from': 'beta'}))
    assert p['data_from'] == 'beta' and p['restore']['from'] == 'beta'


def test_a_restore_is_refused_like_a_run_and_without_a_backup():
    with pytest.raises(PlanRefused, match='action=resume'):
        plan('self', 'restore', {'status': 'failed', 'step': 'live_start', 'plan': {}},
             restore=dict(BACKUP))
    with pytest.raises(PlanRefused, match='to its twin'):
        plan('self', 'restore', views=TWIN, restore=dict(BACKUP))
    with pytest.raises(PlanRefused, match='No backup'):
        plan('self', 'restore', restore={})


def test_a_resumed_restore_keeps_its_backup_and_its_catch_up_rule():
    previous = {'status': 'interrupted', 'run_id': 'r1', 'step': 'live_data',
                'plan': plan('self', 'restore', restore=dict(BACKUP))}
    on_twin = plan('self', 'resume', previous, TWIN)
    assert on_twin['action'] == 'restore' and on_twin['restore']['stamp'] == BACKUP['stamp']
    assert on_twin['start'] == 'live_stop' and on_twin['live_data'] == 'from_twin'
    on_live = plan('self', 'resume', previous, LIVE)
    assert on_live['start'] == 'twin_code' and not on_live['catch_up_to_twin']
    assert on_live['restore']['last_tid'] == '03f0aa'


def moving_model(to='relstorage', other=True, history=True):
    """test moving to ``to``: the inventory names it for both sides; ``other`` is the stage as
    the inventory still describes it on the old kind."""
    database = {'host': 'db', 'port': 5432, 'name': 'zopeops_test', 'user': 'zopeops_test',
                'keep_history': history}
    on = {'zeo': {'storage': 'zeo', 'zeo': {'host': 't'}, 'database': None, 'data_host': 't'},
          'relstorage': {'storage': 'relstorage', 'zeo': None, 'database': database,
                         'data_host': 't'}}
    old = 'zeo' if to == 'relstorage' else 'relstorage'
    side = dict(on[to], instance='test', hosts=['t'], clients=[])
    side['other'] = dict(side, other=None, **on[old]) if other else None
    result = model('upstream')
    twin = dict(side, instance='test_upgrade', other=None)
    result['stages']['test'].update(live=side, upgrade=twin)
    return result


def move(to='relstorage', running='zeo', previous=None, views=None, **kwargs):
    deployed = {'revision': 'old', 'storage': running} if running else {'revision': 'old'}
    return make_plan(kwargs.pop('the_model', None) or moving_model(to), 'test',
                     kwargs.pop('action', 'run'), previous or {}, {'revision': 'new'}, deployed,
                     views or LIVE, migrate=to, **kwargs)


@pytest.mark.parametrize('to,running', [('relstorage', 'zeo'), ('zeo', 'relstorage')])
def test_a_move_between_kinds_copies_the_stage_itself_and_keeps_its_code(to, running):
    p = move(to, running)
    assert (p['policy'], p['data_from'], p['catch_up_to_twin'], p['live_data']) == (
        'self', 'test', True, 'from_twin')
    assert p['twin_revision'] == p['live_revision'] == 'old' and p['start'] == 'twin_code'
    assert p['migrate'] == {'from': running, 'to': to}
    assert p['live_before']['storage'] == running and p['live']['storage'] == to
    assert p['twin']['storage'] == to
    lines = describe(p)
    assert lines[-1].startswith('Storage: test moves from %s to %s' % (running, to))
    assert ('Data.fs on t' if running == 'zeo' else 'database zopeops_test on db:5432') in \
        lines[-1]


def test_a_move_is_refused_with_what_to_do():
    with pytest.raises(PlanRefused, match='runs on relstorage already'):
        move('relstorage', 'relstorage')
    with pytest.raises(PlanRefused, match="does not say which kind.*site.yml --limit test"):
        move('relstorage', None)
    # the inventory still names the old kind
    with pytest.raises(PlanRefused, match='The inventory names zeo for test, not relstorage: '
                                          'set zopeops_storage: relstorage'):
        move('relstorage', 'zeo', the_model=moving_model('zeo'))
    with pytest.raises(PlanRefused, match='keep group test_zeo'):
        move('relstorage', 'zeo', the_model=moving_model('relstorage', other=False))
    with pytest.raises(PlanRefused, match='keep its PostgreSQL settings'):
        move('zeo', 'relstorage', the_model=moving_model('zeo', other=False))
    with pytest.raises(PlanRefused, match='history-free'):
        move('zeo', 'relstorage', the_model=moving_model('zeo', history=False))
    with pytest.raises(PlanRefused, match="migrate_storage is 'postgres'"):
        move('postgres', 'zeo', the_model=moving_model())
    with pytest.raises(PlanRefused, match='leave out promote_revision'):
        move(revision='hotfix')
    with pytest.raises(PlanRefused, match='action=resume'):
        move(previous={'status': 'failed', 'step': 'live_start', 'plan': {}})
    with pytest.raises(PlanRefused, match='takes no migrate_storage'):
        move(action='resume')


def test_an_interrupted_move_resumes_as_a_move_and_is_not_rolled_back():
    previous = {'status': 'failed', 'run_id': 'r1', 'step': 'live_data', 'plan': move()}
    resumed = make_plan(moving_model(), 'test', 'resume', previous, {}, {'revision': 'old'},
                        TWIN)
    assert resumed['start'] == 'live_stop' and resumed['migrate'] == {'from': 'zeo',
                                                                      'to': 'relstorage'}
    assert resumed['live_before']['storage'] == 'zeo' and resumed['policy'] == 'self'
    with pytest.raises(PlanRefused, match='moved it from zeo to relstorage.*action=resume.*'
                                          'migrate_storage=zeo'):
        make_plan(moving_model(), 'test', 'rollback', previous, {}, {'revision': 'old'}, TWIN)
    # The refusal says where the traffic is: on the twin here, on the stage before the switch.
    with pytest.raises(PlanRefused, match='The traffic is on test_upgrade, which holds every'):
        make_plan(moving_model(), 'test', 'rollback', previous, {}, {'revision': 'old'}, TWIN)
    early = dict(previous, step='twin_data')
    with pytest.raises(PlanRefused, match='The traffic is on test, which still runs on zeo'):
        make_plan(moving_model(), 'test', 'rollback', early, {}, {'revision': 'old'}, LIVE)
