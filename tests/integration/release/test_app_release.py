"""app_release against real git repositories and real uv builds."""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess

import pytest

from support.modules import run_module

pytestmark = pytest.mark.integration
GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@example.com',
               GIT_COMMITTER_NAME='t', GIT_COMMITTER_EMAIL='t@example.com')


def git(cwd, *args):
    return subprocess.run(['git', *args], cwd=cwd, env=GIT_ENV, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A repository with a tiny installable package; tag v1, then a second commit on main."""
    work = tmp_path / 'work'
    (work / 'demo_pkg').mkdir(parents=True)
    (work / 'demo_pkg' / '__init__.py').write_text('VERSION = 1\n')
    (work / 'pyproject.toml').write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "demo-pkg"\nversion = "1.0"\n'
        '[tool.setuptools]\npackages = ["demo_pkg"]\n')
    (work / 'requirements.txt').write_text('six==1.16.0\n')
    git(work, 'init', '-q', '-b', 'main')
    git(work, 'add', '.')
    git(work, 'commit', '-qm', 'v1')
    git(work, 'tag', 'v1')
    bare = tmp_path / 'repo.git'
    git(tmp_path, 'clone', '-q', '--bare', str(work), str(bare))
    return work, bare


def build(root, bare, revision, **extra):
    return run_module('app_release', dict(root=str(root), repo=str(bare), revision=revision,
                                          **extra))


def test_builds_once_and_reuses(tmp_path, repo):
    work, bare = repo
    root = tmp_path / 'root'
    first = build(root, bare, 'v1')
    assert first['changed'] and first['built'], first
    sha = git(work, 'rev-parse', 'v1')
    assert first['revision'] == sha
    release = root / 'releases' / sha
    assert (release / 'REVISION').read_text().strip() == sha
    assert json.loads((release / 'release.json').read_text())['requested'] == 'v1'
    out = subprocess.run([str(release / 'venv' / 'bin' / 'python'), '-c',
                          'import demo_pkg, six; print(demo_pkg.VERSION)'],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '1'
    again = build(root, bare, sha)
    assert not again['changed'] and not again['built'] and again['release_dir'] == str(release)


def test_branch_is_followed_after_a_new_commit(tmp_path, repo):
    work, bare = repo
    root = tmp_path / 'root'
    assert build(root, bare, 'main')['revision'] == git(work, 'rev-parse', 'HEAD')
    (work / 'demo_pkg' / '__init__.py').write_text('VERSION = 2\n')
    git(work, 'commit', '-qam', 'v2')
    git(work, 'push', '-q', str(bare), 'main')
    second = build(root, bare, 'main')
    assert second['built'] and second['revision'] == git(work, 'rev-parse', 'HEAD')


def test_parallel_builds_of_one_revision_build_once(tmp_path, repo):
    work, bare = repo
    root = tmp_path / 'root'
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: build(root, bare, 'v1'), range(3)))
    assert all(r['rc'] == 0 for r in results), results
    assert sum(r['built'] for r in results) == 1
    assert len({r['release_dir'] for r in results}) == 1


def test_interrupted_build_is_redone(tmp_path, repo):
    work, bare = repo
    root = tmp_path / 'root'
    sha = git(work, 'rev-parse', 'v1')
    half = root / 'releases' / sha
    (half / 'src').mkdir(parents=True)  # a build that died: no release.json
    result = build(root, bare, 'v1')
    assert result['built'] and (half / 'release.json').exists()
    assert (half / 'venv' / 'bin' / 'python').exists()


def test_check_mode_builds_nothing(tmp_path, repo):
    work, bare = repo
    root = tmp_path / 'root'
    result = run_module('app_release', dict(root=str(root), repo=str(bare), revision='v1'),
                        check=True)
    assert result['changed'] and result['msg'] == 'would build'
    assert not (root / 'releases').exists()


def test_unknown_revision_and_missing_requirements_fail_clearly(tmp_path, repo):
    work, bare = repo
    root = tmp_path / 'root'
    result = build(root, bare, 'no-such-tag')
    assert result.get('failed') and "Revision 'no-such-tag' is not in" in result['msg']
    result = build(root, bare, 'v1', requirements='missing.txt')
    assert result.get('failed') and 'has no missing.txt' in result['msg']
    assert not any((root / 'releases').glob('[0-9a-f]*')), 'a failed build left a release'


def test_failing_install_leaves_no_release(tmp_path, repo):
    work, bare = repo
    (work / 'requirements.txt').write_text('this-package-does-not-exist-zopeops==0.0.1\n')
    git(work, 'commit', '-qam', 'broken requirement')
    git(work, 'push', '-q', str(bare), 'main')
    root = tmp_path / 'root'
    result = build(root, bare, 'main')
    assert result.get('failed') and 'uv pip install' in result['msg']
    assert not (root / 'releases' / git(work, 'rev-parse', 'HEAD')).exists()
