"""Kept releases and rollback to any of them, on the session's local pipeline, under the read
and acknowledged-write loads (0 failed reads, 0 lost writes).

Runs after test_promote.py and test_push_branding.py in the same sandbox: prod runs demo-v2
there, promoted from demo-v1. A hotfix (a new tag, demo-v3) is promoted to prod with
zopeops_keep_releases=1 beside releases nothing uses, which the promotion prunes (but the newest
of them) while every release in use stays; then prod rolls back to demo-v1, the release before the previous one.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from support.promotion import assert_zero_loss, info, refused, run_under_load, said

pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]
GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@example.com',
               GIT_COMMITTER_NAME='t', GIT_COMMITTER_EMAIL='t@example.com')


def git(*args, cwd=None):
    return subprocess.run(['git', *args], cwd=cwd, env=GIT_ENV, check=True,
                          capture_output=True, text=True).stdout.strip()


def tag_a_hotfix(pipeline, tmp_path, tag):
    """A commit on demo-v2 (a changed README), tagged and pushed to the demo repository."""
    work = tmp_path / 'hotfix'
    git('clone', '-q', str(pipeline.sandbox / 'app.git'), str(work))
    git('checkout', '-q', 'demo-v2', cwd=work)
    (work / 'HOTFIX.txt').write_text('%s\n' % tag)
    git('add', 'HOTFIX.txt', cwd=work)
    git('commit', '-qm', tag, cwd=work)
    git('tag', tag, cwd=work)
    git('push', '-q', 'origin', tag, cwd=work)
    return git('rev-parse', 'HEAD', cwd=work)


def plant_unused_releases(pipeline):
    """Two old releases nothing uses (the second newer) and the folder of a build that died."""
    releases = pipeline.sandbox / 'releases'
    planted = []
    for number in (1, 2, 3):
        folder = releases / ('%040x' % (0xdead0000 + number))
        (folder / 'venv' / 'bin').mkdir(parents=True)
        if number < 3:
            (folder / 'release.json').write_text(json.dumps(
                {'revision': folder.name, 'built_at': '2000-01-0%dT00:00:00Z' % number}))
        planted.append(folder)
    return planted


def test_pruning_keeps_every_release_in_use_and_rollback_reaches_any_kept_one(pipeline, tmp_path):
    v1, v2 = pipeline.revision_of('demo-v1'), pipeline.revision_of('demo-v2')
    if info(pipeline, 'prod')['revision'] != v2:  # this file run on its own: prod had demo-v1
        run = run_under_load(pipeline, 'promote.yml', 'prod', {'promote_revision': 'demo-v2'})
        assert run.proc.returncode == 0, run.output
    v3 = tag_a_hotfix(pipeline, tmp_path, 'demo-v3')
    planted = plant_unused_releases(pipeline)

    run = run_under_load(pipeline, 'promote.yml', 'prod',
                         {'promote_revision': 'demo-v3', 'zopeops_keep_releases': 1})
    assert run.proc.returncode == 0, run.output
    print('hotfix prod: %s' % run.report())
    assert_zero_loss(pipeline, run, 'prod', 'upstream')
    assert info(pipeline, 'prod')['revision'] == v3
    # Pruned: what nothing used but the newest one of those; kept: every release an instance
    # links to or records.
    assert [folder.exists() for folder in planted] == [False, True, False], planted
    releases = pipeline.sandbox / 'releases'
    assert {v1, v2, v3} <= {p.name for p in releases.iterdir()}
    for instance in pipeline.sandbox.iterdir():
        if (instance / 'current').is_symlink():
            assert (instance / 'current' / 'release.json').exists(), instance

    # Not a kept release: refused before anything changed.
    refused(pipeline, 'prod', 'is no release kept', action='rollback',
            rollback_to='no-such-tag', watch=('prod',))

    # prod ran demo-v1, then demo-v2, then demo-v3: back to demo-v1, through the twin. Its
    # data pair of demo-v1 is not kept any more (promote_keep_previous_data=1): code only.
    run = run_under_load(pipeline, 'rollback.yml', 'prod', {'rollback_to': 'demo-v1'})
    assert run.proc.returncode == 0, run.output
    print('rollback prod to demo-v1: %s' % run.report())
    assert_zero_loss(pipeline, run, 'prod', 'self')
    after = info(pipeline, 'prod')
    assert after['revision'] == v1 and after['instance'] == 'prod', after
    assert 'Only the code goes back: no data pair of demo-v1 is kept on prod' in said(run.proc)
    entry = pipeline.ledger()[-1]
    assert (entry['stage'], entry['result'], entry['rollback_to'], entry['code_only']) == (
        'prod', 'rolled back', 'demo-v1', True), entry
    assert entry['from_revision'] == v3 and entry['to_revision'] == v1
