"""release_prune: what is in use is kept (links, records, processes, promotions, the caller's
names), the newest N others too, the rest removed through a trash folder; check mode removes
nothing; a build holding the lock makes it remove nothing."""
from __future__ import annotations

import json
import os
import subprocess
import threading

from ansible_collections.zopeops.stages.plugins.module_utils import releases as rel
from ansible_collections.zopeops.stages.plugins.module_utils.files import file_lock

from support.modules import run_module


def sha(n):
    return ('%x' % n) * 40 if n < 16 else ('%040x' % n)


def make_release(root, number, built_at, requested='v%d', complete=True):
    folder = root / 'releases' / sha(number)
    (folder / 'venv' / 'bin').mkdir(parents=True)
    if complete:
        (folder / 'release.json').write_text(json.dumps(
            {'revision': sha(number), 'built_at': built_at, 'requested': requested % number
             if '%' in requested else requested}))
    return folder


def instance(root, name, current=None, revision=None, previous=None):
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    if current is not None:
        os.symlink(root / 'releases' / sha(current), folder / 'current')
    record = {}
    if revision is not None:
        record['revision'] = sha(revision)
    if previous is not None:
        record['previous_revision'] = sha(previous)
    if record:
        (folder / 'deployed.json').write_text(json.dumps(record))


def prune(root, check=False, **extra):
    return run_module('release_prune', dict(root=str(root), **extra), check=check)


def test_choose_keeps_in_use_and_the_newest_others():
    builds = {sha(n): '2026-12-0%dT00:00:00Z' % n for n in range(1, 9)}
    kept, removed = rel.choose(builds, {sha(1): ['prod/current']}, 2)
    assert kept == [sha(1), sha(8), sha(7)]
    assert removed == [sha(6), sha(5), sha(4), sha(3), sha(2)]
    assert rel.choose(builds, {}, 0) == ([], sorted(builds, reverse=True))


def test_promotion_revisions_names_plans_and_rollback_targets():
    named = rel.promotion_revisions([
        {'status': 'running', 'plan': {'stage': 'test', 'twin_revision': 'a' * 40,
                                       'live_revision': 'hotfix', 'from_revision': 'b' * 40}},
        {'status': 'finished', 'plan': {'stage': 'prod'}, 'rollback_target': {'revision': 'c' * 40}},
        'not a state'])
    assert [entry[0] for entry in named] == ['a' * 40, 'hotfix', 'b' * 40, 'c' * 40]
    assert named[3][1] == 'rollback target of prod'


def test_release_of_ignores_what_is_not_a_release(tmp_path):
    releases = tmp_path / 'releases'
    (releases / sha(1) / 'venv').mkdir(parents=True)
    assert rel.release_of(str(releases / sha(1) / 'venv'), str(releases)) == sha(1)
    assert rel.release_of(str(releases / '.mirror.git'), str(releases)) is None
    assert rel.release_of(str(tmp_path / 'elsewhere'), str(releases)) is None
    assert rel.release_of(None, str(releases)) is None


def test_processes_working_in_a_release_keep_it(tmp_path):
    releases = tmp_path / 'releases'
    folder = releases / sha(3)
    folder.mkdir(parents=True)
    proc = subprocess.Popen(['sleep', '30'], cwd=folder)
    try:
        found = rel.processes_in_use(str(releases))
    finally:
        proc.kill()
        proc.wait()
    assert found == {sha(3): ['process %d runs in it' % proc.pid]}


def test_prune_keeps_every_release_in_use_and_the_newest_others(tmp_path):
    root = tmp_path / 'root'
    for n in range(1, 10):
        make_release(root, n, '2026-12-0%dT00:00:00Z' % n)
    make_release(root, 10, '', complete=False)                  # a build that died
    (root / 'releases' / (rel.TRASH_PREFIX + sha(11))).mkdir()  # a prune that died
    instance(root, 'prod', current=1, revision=1, previous=2)   # the previous: a code rollback
    instance(root, 'prod_upgrade', current=3)                   # a twin
    os.symlink(root / 'releases' / sha(4), root / 'prod_upgrade' / 'current.tmp-99')
    (root / 'lb').mkdir()
    promotions = [{'status': 'running', 'plan': {'stage': 'test', 'twin_revision': sha(5)}},
                  {'status': 'finished', 'rollback_target': {'revision': sha(6)}}]
    would = prune(root, check=True, keep_count=1, promotions=promotions, keep=['v7'])
    assert would['changed'] and would['removed'] == [sha(8), sha(10)], would
    assert sorted(would['kept']) == sorted(sha(n) for n in (1, 2, 3, 4, 5, 6, 7, 9))
    assert would['in_use'][sha(1)] == ['prod/current', 'prod/deployed.json revision']
    assert would['in_use'][sha(7)] == ['kept by the caller']      # matched by its tag
    assert (root / 'releases' / sha(8)).exists(), 'check mode removed a release'

    done = prune(root, keep_count=1, promotions=promotions, keep=['v7'])
    assert done['changed'] and done['removed'] == would['removed'] and not done['busy']
    left = sorted(set(os.listdir(root / 'releases')) - {rel.LOCK_NAME})
    assert left == sorted(sha(n) for n in (1, 2, 3, 4, 5, 6, 7, 9)), left
    again = prune(root, keep_count=1, promotions=promotions, keep=['v7'])
    assert not again['changed'] and again['removed'] == []


def test_prune_waits_for_a_build_and_then_removes_nothing(tmp_path):
    root = tmp_path / 'root'
    for n in range(1, 4):
        make_release(root, n, '2026-12-0%dT00:00:00Z' % n)
    held, done = threading.Event(), threading.Event()

    def build():
        with file_lock(str(root / 'releases' / rel.LOCK_NAME)):
            held.set()
            done.wait(30)

    builder = threading.Thread(target=build)
    builder.start()
    try:
        held.wait(10)
        busy = prune(root, keep_count=0, lock_timeout=1)
    finally:
        done.set()
        builder.join()
    assert busy['busy'] and not busy['changed'] and 'Nothing was removed' in busy['msg'], busy
    assert len(os.listdir(root / 'releases')) == 4   # three releases and the lock file


def test_no_releases_and_a_bad_count(tmp_path):
    assert prune(tmp_path / 'none')['changed'] is False
    bad = prune(tmp_path, keep_count=-1)
    assert bad.get('failed') and 'keep_count is -1' in bad['msg']
