from __future__ import annotations

from ansible_collections.zopeops.stages.plugins.filter.report import (
    phase_durations, summary_table)


def test_phase_durations_in_start_order_and_unfinished_phase():
    timeline = [{'phase': 'twin', 'event': 'start', 'at': 10.0},
                {'phase': 'twin', 'event': 'end', 'at': 22.5},
                {'phase': 'switch', 'event': 'start', 'at': 22.5},
                {'phase': 'switch', 'event': 'end', 'at': 23.0},
                {'phase': 'live', 'event': 'start', 'at': 23.0}]
    assert phase_durations(timeline) == [{'phase': 'twin', 'seconds': 12.5},
                                         {'phase': 'switch', 'seconds': 0.5},
                                         {'phase': 'live', 'seconds': None}]
    assert phase_durations(None) == []


def test_summary_table_aligns_columns():
    lines = summary_table([{'phase': 'twin', 'seconds': 12.5}, {'phase': 'live'}],
                          ['phase', 'seconds'])
    assert lines == ['phase  seconds', 'twin   12.5', 'live   -']


def test_status_rows_shorten_revision_and_say_why_it_failed():
    from ansible_collections.zopeops.stages.plugins.filter.report import status_rows
    rows = status_rows([
        {'name': 'dev', 'url': 'http://x/', 'status': 200, 'revision': 'a' * 40, 'ok': True},
        {'url': 'http://y/', 'status': None, 'revision': None, 'ok': False,
         'error': 'connection refused'}])
    assert rows[0]['revision'] == 'a' * 12 and rows[0]['health'] == 'ok'
    assert rows[1]['name'] == 'http://y/' and rows[1]['health'] == 'FAILED: connection refused'


def test_revision_name_names_tags_then_branches_with_the_hash():
    from ansible_collections.zopeops.stages.plugins.filter.status import revision_name
    commit = '1b12ef333cbf' + '0' * 28
    lines = ['%s\trefs/heads/main' % commit, 'ffff%s\trefs/tags/v2' % ('0' * 36),
             '%s\trefs/tags/v2^{}' % commit]
    assert revision_name(commit, lines) == 'v2 main 1b12ef3'
    assert revision_name('abcdef1' + '0' * 33, lines) == 'abcdef1'
    assert revision_name('', lines) == '-' and revision_name(None) == '-'
