"""The status report and its renderings, on fixed data."""
from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.zopeops.stages.plugins.filter.status import (
    merge_hosts, resolve, status_render, status_report)
from ansible_collections.zopeops.stages.plugins.module_utils.status_report import (
    human_size, refs_from_ls_remote, tid_time)

V1 = '8c270e68a84f7dd537f3cae6c545b684c72b06a4'
V2 = '4eccdb109f82fdcf900cc5ec8cd5e54788e26c93'
LS_REMOTE = [V2 + '\trefs/heads/main', V1 + '\trefs/tags/demo-v1',
             'f' * 40 + '\trefs/tags/demo-v2', V2 + '\trefs/tags/demo-v2^{}']


def side(stage, kind, clients):
    inst = stage + ('_upgrade' if kind == 'upgrade' else '')
    return {'instance': inst, 'side': kind,
            'zeo': {'host': inst + '-h', 'address': '127.0.0.1', 'port': 1},
            'clients': [{'host': inst + '-h', 'name': c, 'id': '%s-%s' % (inst, c),
                         'address': '127.0.0.1', 'port': 2,
                         'url': 'http://127.0.0.1:2%d' % i} for i, c in enumerate(clients)],
            'hosts': [inst + '-h']}


MODEL = {'pipeline': ['dev', 'test'], 'lb_hosts': ['lb'], 'stages': {
    'dev': {'name': 'dev', 'index': 0, 'predecessor': None, 'data_policy': 'upstream',
            'lb_port': 100, 'live': side('dev', 'live', ['client1']), 'upgrade': None},
    'test': {'name': 'test', 'index': 1, 'predecessor': 'dev', 'data_policy': 'upstream',
             'lb_port': 101, 'live': side('test', 'live', ['client1', 'client2']),
             'upgrade': side('test', 'upgrade', ['client1'])}}}


def client(revision, ok=True, tid='040d572da9edc633', latency=0.012):
    return {'ok': ok, 'status': 200 if ok else None, 'latency': latency, 'revision': revision,
            'last_tid': tid, 'marker': 'seeded', 'error': None if ok else 'no answer: refused'}


def hosts(test_client2_ok=True, twin_runs=False):
    found = [
        {'instances': {'dev': {
            'zeo_host': True, 'deployed': {'revision': V2, 'deployed_at': '2026-11-29T12:30:39Z'},
            'current': V2, 'zeo_running': True, 'drift': [],
            'data': {'size': 5 * 1024 * 1024, 'last_tid': '040d572da9edc633'},
            'clients': {'dev-client1': client(V2)}}}},
        {'instances': {'test': {
            'zeo_host': True, 'deployed': {'revision': V1}, 'current': V1, 'zeo_running': True,
            'drift': [], 'data': {'size': 2048, 'last_tid': '040d5727eb115822'},
            'clients': {'test-client1': client(V1, latency=0.02),
                        'test-client2': client(V1, ok=test_client2_ok)}}}},
        {'instances': {'test_upgrade': {
            'zeo_host': True, 'deployed': {'revision': V2} if twin_runs else None,
            'zeo_running': twin_runs, 'drift': [],
            'data': {'missing': True, 'path': '/x/Data.fs'} if not twin_runs else {'size': 9},
            'clients': {'test_upgrade-client1': client(V2) if twin_runs
                        else {'ok': False, 'status': None, 'error': 'no answer'}}}}},
    ]
    return found


LB = [{'item': 'dev', 'before': {'active': 'live', 'frozen': False}},
      {'item': 'test', 'before': {'active': 'live', 'frozen': False}}]
CONDUCTOR = {
    'probes': {'dev': {'url': 'http://lb:100/', 'ok': True, 'status': 200, 'latency': 0.03},
               'test': {'url': 'http://lb:101/', 'ok': True, 'status': 200, 'latency': 0.04}},
    'promotions': {'test': {
        'last': {'stage': 'test', 'action': 'promote', 'result': 'success', 'by': 'alice',
                 'finished_at': '2026-11-29T13:00:05+00:00',
                 'phases': [{'phase': 'preflight', 'seconds': 2.5},
                            {'phase': 'twin_code', 'seconds': 10}],
                 'freeze_windows': [{'frozen_seconds': 0.25}, {'frozen_seconds': 0.5}]},
        'state': {'status': 'done', 'step': 'finish', 'traffic': 'live'}}}}


def report(**kwargs):
    return status_report(MODEL, hosts(**kwargs), LB, CONDUCTOR, LS_REMOTE,
                         {'dev': 'main'}, '2026-11-29T13:01:00Z')


def test_tid_time_without_zodb_matches_persistent():
    assert tid_time('040d572da9edc633').startswith('2026-11-29T12:')
    persistent = pytest.importorskip('persistent.timestamp')
    raw = bytes.fromhex('040d572da9edc633')
    seconds = persistent.TimeStamp(raw).timeTime()
    import datetime
    expected = datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc)
    assert tid_time('040d572da9edc633') == expected.isoformat()
    assert tid_time(None) is None and tid_time('0' * 16) is None and tid_time('zz') is None


def test_refs_name_tags_first_and_peel_annotated_tags():
    refs = refs_from_ls_remote(LS_REMOTE)
    assert refs[V2] == ['demo-v2', 'main'] and refs[V1] == ['demo-v1']
    assert 'f' * 40 not in refs
    assert resolve('demo-v2', LS_REMOTE) == V2 and resolve('main', LS_REMOTE) == V2
    assert resolve(V1, []) == V1 and resolve('nope', LS_REMOTE) is None


def test_report_of_a_healthy_pipeline():
    rep = report()
    assert rep['healthy'] and rep['problems'] == [] and rep['drift'] == []
    dev, test = rep['stages']
    assert dev['revision']['names'] == ['demo-v2', 'main'] and dev['revision']['short'] == '4eccdb1'
    live = test['sides'][0]
    assert live['data']['last_tid'] == '040d5727eb115822' and live['data']['size_text'] == '2.0 KB'
    assert live['data']['last_time'].startswith('2026-11-29T12:')
    assert live['clients_ok'] == 2 and live['max_latency_ms'] == 20 and live['serving']
    twin = test['sides'][1]
    assert not twin['running'] and not twin['exists'] and twin['health'] == 'ok'
    run = test['last_run']
    assert run['by'] == 'alice' and run['seconds'] == 12.5 and run['frozen_seconds'] == 0.75


def test_text_table_has_a_column_per_stage_and_the_headline():
    lines = status_render(report(), 'text')
    assert lines[0].split() == ['dev', 'test']
    assert any(line.startswith('revision') and 'demo-v2 main 4eccdb1' in line
               and 'demo-v1 8c270e6' in line for line in lines)
    assert any(line.startswith('Data.fs') and '5.0 MB' in line for line in lines)
    assert any(line.startswith('traffic') for line in lines)
    assert any(line.startswith('last run') and 'promote success' in line for line in lines)
    assert any('2026-11-29 13:00 by alice' in line for line in lines)
    assert 'pipeline: dev [ok] -> test [ok]' in lines
    assert status_render(report(), 'headline') == \
        'dev runs demo-v2 (4eccdb1); test runs demo-v1 (8c270e6).'


def test_failed_client_turns_the_stage_red_and_is_named():
    rep = report(test_client2_ok=False)
    assert not rep['healthy'] and rep['stages'][1]['health'] == 'failed'
    assert rep['problems'] == ['test-client2: no answer: refused']
    lines = status_render(rep, 'text')
    assert 'test (FAILED)' in lines[0] and 'problem: test-client2: no answer: refused' in lines
    page = status_render(rep, 'html')
    assert 'data-stage="test" data-health="failed"' in page
    assert 'data-stage="dev" data-health="ok"' in page


def test_drift_a_twin_running_outside_a_promotion_and_the_head_behind_its_branch():
    found = hosts(twin_runs=True)
    found[0]['instances']['dev']['deployed']['revision'] = V1
    found[0]['instances']['dev']['clients']['dev-client1']['revision'] = V1
    rep = status_report(MODEL, found, LB, CONDUCTOR, LS_REMOTE, {'dev': 'main'})
    assert 'test: test_upgrade runs, but no promotion of test is under way' in rep['drift']
    assert any('inventory asks for main, which is 4eccdb1' in d for d in rep['drift'])
    assert status_render(rep, 'text')[0].split() == ['dev', 'test']


def test_the_marker_row_appears_only_for_an_application_that_reports_one():
    assert any(line.startswith('marker') and 'seeded' in line
               for line in status_render(report(), 'text'))
    assert '>marker<' in status_render(report(), 'html')
    found = hosts()
    for host in found:
        for instance in host['instances'].values():
            for answer in instance['clients'].values():
                answer.pop('marker', None)  # e.g. Plone: the revision comes from REVISION
    plain = status_report(MODEL, found, LB, CONDUCTOR, LS_REMOTE, {'dev': 'main'},
                          '2026-11-29T13:01:00Z')
    assert not any(line.startswith('marker') for line in status_render(plain, 'text'))
    assert '>marker<' not in status_render(plain, 'html')


def test_html_is_self_contained_left_to_right_and_escaped():
    rep = report()
    rep['stages'][0]['drift'] = ['<script>alert(1)</script>']
    page = status_render(rep, 'html')
    assert page.startswith('<!DOCTYPE html>') and '<script>' not in page
    assert '&lt;script&gt;' in page
    assert 'http' not in page.split('<body>')[0].replace('http-equiv', '')  # nothing fetched
    assert page.index('data-stage="dev"') < page.index('data-stage="test"')
    assert 'class="arrow"' in page and '#1f9d55' in page and '#d64545' in page


def test_merge_hosts_takes_files_from_the_zeo_host_and_clients_from_all():
    merged = merge_hosts([
        {'instances': {'prod': {'zeo_host': False, 'deployed': None, 'clients': {'a': {}},
                                'drift': ['x']}}},
        {'instances': {'prod': {'zeo_host': True, 'deployed': {'revision': V1},
                                'zeo_running': True, 'clients': {}, 'drift': []}}},
        {'instances': {'prod': {'zeo_host': False, 'deployed': {'revision': V2},
                                'clients': {'b': {}}, 'drift': []}}}])
    assert merged['prod']['deployed'] == {'revision': V1} and merged['prod']['zeo_running']
    assert sorted(merged['prod']['clients']) == ['a', 'b'] and merged['prod']['drift'] == ['x']


def test_render_refuses_an_unknown_form_and_sizes_read_well():
    from ansible.errors import AnsibleFilterError
    with pytest.raises(AnsibleFilterError):
        status_render(report(), 'pdf')
    assert human_size(512) == '512 B' and human_size(3 * 1024 ** 3) == '3.0 GB'
    assert human_size(None) is None


def test_a_twin_coming_up_during_a_promotion_is_not_a_failure():
    found = hosts(twin_runs=True)
    found[2]['instances']['test_upgrade']['clients']['test_upgrade-client1'] = {
        'ok': False, 'status': None, 'error': 'no answer: refused'}
    conductor = dict(CONDUCTOR, promotions={'test': {'lock': {'owner': 'alice'},
                                                     'state': {'status': 'running'}}})
    rep = status_report(MODEL, found, LB, conductor, LS_REMOTE)
    assert rep['healthy'] and rep['stages'][1]['sides'][1]['health'] == 'starting'
    assert 'promotion under way' in status_render(rep, 'html')
    assert rep['stages'][1]['promotion']['locked_by'] == 'alice'
    assert any(line.startswith('promotion') and 'running at' in line
               for line in status_render(rep, 'text'))
    rep = status_report(MODEL, found, LB, CONDUCTOR, LS_REMOTE)
    assert not rep['healthy'] and rep['problems'] == ['test_upgrade-client1: no answer: refused']


def test_the_status_report_and_its_page_hold_no_credentials():
    conductor = copy.deepcopy(CONDUCTOR)
    conductor['probes']['dev']['url'] = 'http://admin:tok3n-s3cret@lb:100/'
    conductor['probes']['dev']['error'] = 'no answer from http://admin:tok3n-s3cret@lb:100/'
    report = status_report(MODEL, hosts(), LB, conductor, LS_REMOTE, {'dev': 'main'},
                           '2026-11-29T13:01:00Z')
    assert 'tok3n-s3cret' not in json.dumps(report)
    assert 'tok3n-s3cret' not in status_render(report, 'html')
    assert 'http://********@lb:100/' in json.dumps(report)


FROZEN_AT = 1_800_000_030  # 2027-01-15 08:00:30Z


def _lb_test(**before):
    return [LB[0], {'item': 'test', 'before': dict({'active': 'live', 'frozen': False}, **before)}]


def _conductor(promotion):
    return dict(CONDUCTOR, promotions={'test': promotion})


def test_writes_frozen_with_a_deadline_and_no_live_run_make_the_stage_unhealthy():
    rep = status_report(MODEL, hosts(), _lb_test(active='upgrade', frozen=True,
                                                 frozen_until=FROZEN_AT),
                        _conductor({'state': {'status': 'failed', 'step': 'live_start',
                                              'traffic': 'upgrade'}}), LS_REMOTE)
    test = rep['stages'][1]
    assert not rep['healthy'] and test['health'] == 'failed'
    assert test['frozen'] and test['frozen_until'] == FROZEN_AT and not test['frozen_held']
    assert rep['problems'][0] == (
        'test: writes FROZEN until 2027-01-15 08:00:30Z, and no promotion runs. Next: '
        'ansible-playbook playbooks/promote.yml -e stage=test -e action=resume (or -e '
        'action=rollback).')
    text = status_render(rep, 'text')
    traffic = next(line for line in text if line.startswith('traffic'))
    assert traffic.split()[-4:] == ['twin,', 'FROZEN', 'until', '08:00:30Z']
    assert 'test [FAILED]' in text[text.index(next(l for l in text if l.startswith('pipeline')))]
    assert 'FROZEN until 08:00:30Z' in status_render(rep, 'html')


def test_a_held_freeze_during_a_live_run_is_not_a_failure_and_shows_the_current_step():
    rep = status_report(MODEL, hosts(twin_runs=True), _lb_test(frozen=True, frozen_held=True),
                        _conductor({'lock': {'owner': 'alice', 'alive': True},
                                    'state': {'status': 'running', 'step': 'twin_start',
                                              'current_step': 'cutover_to_twin'}}), LS_REMOTE)
    test = rep['stages'][1]
    assert rep['healthy'] and test['frozen_held'] and test['frozen_until'] is None
    assert test['promotion']['step'] == 'cutover_to_twin'
    assert test['promotion']['recorded_step'] == 'twin_start'
    assert test['promotion']['live'] and test['promotion']['next'] is None
    text = status_render(rep, 'text')
    assert next(l for l in text if l.startswith('promotion')).split()[-3:] == [
        'running', 'at', 'cutover_to_twin']
    assert next(l for l in text if l.startswith('traffic')).endswith('live, FROZEN (held)')


def test_a_lock_whose_heartbeat_is_old_is_an_interrupted_run_with_what_to_run():
    rep = status_report(MODEL, hosts(twin_runs=True), _lb_test(active='upgrade'),
                        _conductor({'lock': {'owner': 'alice', 'alive': False,
                                             'heartbeat_age': 600},
                                    'state': {'status': 'running', 'step': 'live_stop',
                                              'traffic': 'upgrade'}}), LS_REMOTE)
    test = rep['stages'][1]
    assert test['promotion']['interrupted'] and not test['promotion']['live']
    assert test['promotion']['status'] == 'interrupted'
    assert rep['problems'] == [
        'test: the promotion stopped at step live_stop (interrupted: its lock is left without '
        'a live run). Next: ansible-playbook playbooks/promote.yml -e stage=test -e '
        'action=resume (or -e action=rollback).']
    text = status_render(rep, 'text')
    assert next(l for l in text if l.startswith('promotion')).endswith('INTERRUPTED at live_stop')
    assert 'action=resume' in status_render(rep, 'html')
    # A state left "running" without any lock is interrupted too; a frozen stage then fails.
    rep = status_report(MODEL, hosts(), _lb_test(frozen=True),
                        _conductor({'state': {'status': 'running', 'step': 'twin_code'}}),
                        LS_REMOTE)
    assert rep['stages'][1]['promotion']['interrupted'] and not rep['healthy']
    assert rep['problems'][0].startswith('test: writes FROZEN, and no promotion runs. Next:')


def test_backup_age_against_the_stages_limit():
    found = hosts()
    found[0]['instances']['dev']['backup'] = {
        'checked_at': '2026-11-29T10:01:00Z', 'stamp': '2026-11-29-10-00-58',
        'kind': 'incremental', 'size': 4096, 'max_age_hours': 26}
    found[1]['instances']['test']['backup'] = {
        'checked_at': '2026-11-27T13:01:00Z', 'kind': 'full', 'max_age_hours': 26}
    rep = status_report(MODEL, found, LB, CONDUCTOR, LS_REMOTE, {'dev': 'main'},
                        '2026-11-29T13:01:00Z')
    dev, test = rep['stages']
    assert dev['backup']['age_hours'] == 3.0 and dev['backup']['ok']
    assert test['backup']['age_hours'] == 48.0 and not test['backup']['ok']
    assert rep['backups_late'] == ['test: its last good backup is 48.0 hours old (the limit is 26)']
    assert rep['healthy']  # a late backup is shown red; the stage still serves
    lines = status_render(rep, 'text')
    assert any(line.startswith('backup') and '3.0 h ago' in line and 'LATE 48.0 h' in line
               for line in lines), lines
    page = status_render(rep, 'html')
    assert 'data-backup-ok="false"' in page and 'data-backup-ok="true"' in page
    # No backup yet: red, "NONE".
    found[0]['instances']['dev']['backup'] = {'checked_at': None, 'max_age_hours': 26}
    rep = status_report(MODEL, found, LB, CONDUCTOR, LS_REMOTE, {'dev': 'main'},
                        '2026-11-29T13:01:00Z')
    assert not rep['stages'][0]['backup']['ok'] and 'dev: its last good backup is missing' in \
        rep['backups_late']


def test_a_stage_the_inventory_moves_shows_the_kind_it_runs_and_says_so():
    """deployed.json says ZEO, the inventory RelStorage (before promote.yml -e migrate_storage):
    the row shows ZEO and a drift line says how to move it; once both agree, nothing."""
    found = hosts()
    found[1]['instances']['test']['deployed']['storage'] = 'zeo'
    model = copy.deepcopy(MODEL)
    model['stages']['test']['live'].update(storage='relstorage', zeo=None, database={
        'host': 'db', 'port': 5432, 'name': 'zopeops_test', 'user': 'zopeops_test',
        'history': 'preserving'})
    rep = status_report(model, found, LB, CONDUCTOR, LS_REMOTE, {'dev': 'main'})
    test = [s for s in rep['stages'] if s['name'] == 'test'][0]
    live = [side for side in test['sides'] if side['side'] == 'live'][0]
    assert live['storage'] == 'zeo', live
    assert ('test: test runs on zeo (deployed.json) and the inventory names relstorage: move it '
            'with promote.yml -e stage=test -e migrate_storage=relstorage') in rep['drift']
    found[1]['instances']['test']['deployed']['storage'] = 'relstorage'
    rep = status_report(model, found, LB, CONDUCTOR, LS_REMOTE, {'dev': 'main'})
    assert not any('migrate_storage' in d for d in rep['drift'])
