"""app_release against real git repositories and real uv builds."""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess

import pytest

from support.git_http import GitHTTPServer
from support.modules import run_module
from support.paths import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]
GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@example.com',
               GIT_COMMITTER_NAME='t', GIT_COMMITTER_EMAIL='t@example.com')


def git(cwd, *args):
    return subprocess.run(['git', *args], cwd=cwd, env=GIT_ENV, check=True,
                          capture_output=True, text=True).stdout.strip()


def write_package(folder, name, dependencies=''):
    """A tiny installable package ``<name>_pkg`` (VERSION = 1) in ``folder``."""
    (folder / ('%s_pkg' % name)).mkdir(parents=True)
    (folder / ('%s_pkg' % name) / '__init__.py').write_text('VERSION = 1\n')
    (folder / 'pyproject.toml').write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "%s-pkg"\nversion = "1.0"\n%s'
        '[tool.setuptools]\npackages = ["%s_pkg"]\n' % (name, dependencies, name))


@pytest.fixture
def repo(tmp_path):
    """A repository with a tiny installable package; tag v1, then a second commit on main."""
    work = tmp_path / 'work'
    write_package(work, 'demo')
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


# -- instance_dir: build (or reuse), relink current, record deployed.json, in one call -----

def deploy(root, bare, revision, instance, check=False, **extra):
    return run_module('app_release', dict(root=str(root), repo=str(bare), revision=revision,
                                          instance_dir=str(instance), deployed_by='tester',
                                          **extra), check=check)


def test_instance_dir_links_current_and_records_deployed_json(tmp_path, repo):
    work, bare = repo
    root, instance = tmp_path / 'root', tmp_path / 'root' / 'test'
    v1 = git(work, 'rev-parse', 'v1')
    first = deploy(root, bare, 'v1', instance)
    assert first['rc'] == 0, first
    assert first['code_changed'] is True and first['previous_revision'] is None
    assert os.readlink(instance / 'current') == first['release_dir']
    record = json.loads((instance / 'deployed.json').read_text())
    assert record['revision'] == v1 and record['requested'] == 'v1'
    assert record['previous_revision'] is None and record['deployed_by'] == 'tester'
    assert first['deployed'] == record
    assert not list(instance.glob('*.tmp*')) and not list(instance.glob('.deployed-*'))

    again = deploy(root, bare, 'v1', instance)
    assert again['changed'] is False and again['code_changed'] is False
    assert json.loads((instance / 'deployed.json').read_text()) == record   # untouched

    (work / 'demo_pkg' / '__init__.py').write_text('VERSION = 2\n')
    git(work, 'commit', '-qam', 'v2')
    git(work, 'push', '-q', str(bare), 'main')
    v2 = git(work, 'rev-parse', 'HEAD')
    check = deploy(root, bare, v2, instance, check=True, fetch=False)
    assert check['changed'] is True and check['code_changed'] is True
    assert os.readlink(instance / 'current') == first['release_dir']       # check: no change
    second = deploy(root, bare, 'main', instance)
    assert second['code_changed'] is True and second['previous_revision'] == v1
    record2 = json.loads((instance / 'deployed.json').read_text())
    assert (record2['revision'], record2['previous_revision']) == (v2, v1)
    third = deploy(root, bare, 'main', instance)
    assert third['changed'] is False
    assert json.loads((instance / 'deployed.json').read_text())['previous_revision'] == v1


def test_follow_deployed_keeps_what_a_promotion_deployed(tmp_path, repo):
    work, bare = repo
    root, instance = tmp_path / 'root', tmp_path / 'root' / 'prod'
    v1 = git(work, 'rev-parse', 'v1')
    deploy(root, bare, 'v1', instance)
    (instance / 'deployed.json').write_text(json.dumps(
        {'revision': v1, 'data_source': 'beta', 'last_tid': '03ab'}))
    (work / 'demo_pkg' / '__init__.py').write_text('VERSION = 2\n')
    git(work, 'commit', '-qam', 'v2')
    git(work, 'push', '-q', str(bare), 'main')
    result = deploy(root, bare, 'main', instance, follow_deployed=True)
    assert result['revision'] == v1 and result['changed'] is False
    moved = deploy(root, bare, 'main', instance)            # the head follows its revision
    record = json.loads((instance / 'deployed.json').read_text())
    assert moved['code_changed'] and record['previous_revision'] == v1
    assert record['data_source'] == 'beta' and record['last_tid'] == '03ab'   # kept


def test_release_is_installed_with_compiled_bytecode(tmp_path, repo):
    work, bare = repo
    result = build(tmp_path / 'root', bare, 'v1')
    assert any('--compile-bytecode' in argv for argv in result['steps'])
    site = next((tmp_path / 'root' / 'releases' / result['revision'] / 'venv').glob(
        'lib/python*/site-packages'))
    assert list((site / 'demo_pkg' / '__pycache__').glob('__init__.*.pyc'))


def test_credentials_in_the_repository_url_never_show(tmp_path, repo):
    work, bare = repo
    url = 'https://deployer:s3cret-Pw@git.example.invalid/site.git'
    # git rewrites the URL to the local bare repository, so the build really happens.
    # (The mirror is told the URL without its credentials, so that is the one to rewrite.)
    env = {'GIT_CONFIG_COUNT': '1', 'GIT_CONFIG_KEY_0': 'url.%s.insteadOf' % bare,
           'GIT_CONFIG_VALUE_0': 'https://git.example.invalid/site.git'}
    root = tmp_path / 'root'
    ok = run_module('app_release', dict(root=str(root), repo=url, revision='v1',
                                        instance_dir=str(root / 'test')), env=env)
    assert ok['rc'] == 0, ok
    release_json = (root / 'releases' / ok['revision'] / 'release.json').read_text()
    bad = run_module('app_release', dict(root=str(root), repo=url, revision='no-such-tag'),
                     env=env)
    refused = run_module('app_release', dict(
        root=str(tmp_path / 'other'), repo='https://deployer:s3cret-Pw@127.0.0.1:1/x.git',
        revision='v1', timeout=30))
    assert bad['failed'] and refused['failed']
    for text in (json.dumps(ok), release_json, json.dumps(bad), json.dumps(refused),
                 (root / 'test' / 'deployed.json').read_text()):
        assert 's3cret-Pw' not in text
    assert 'https://********@git.example.invalid/site.git' in release_json
    assert "Revision 'no-such-tag' is not in https://********@git.example.invalid" in bad['msg']


# -- credentials in the repository URL: never in the mirror's config, never in git's argv --

SECRET = 's3cret-Pw'


def _files_holding(folder, secret):
    return [str(path) for path in folder.rglob('*')
            if path.is_file() and secret.encode() in path.read_bytes()]


def test_credentials_reach_git_through_its_environment_only(tmp_path, repo):
    work, bare = repo
    served = tmp_path / 'served'
    served.mkdir()
    site = served / 'site.git'
    git(tmp_path, 'clone', '-q', '--bare', str(work), str(site))
    home = tmp_path / 'home'
    home.mkdir()
    # A "store" helper configured for the account would write what git is given to this file;
    # the module's empty helper must keep it from being asked.
    stored = tmp_path / 'stored-credentials'
    (home / '.gitconfig').write_text('[credential]\n\thelper = store --file %s\n' % stored)
    env = {'HOME': str(home), 'XDG_CONFIG_HOME': str(home / '.config')}
    root = tmp_path / 'root'
    mirror = root / 'releases' / '.mirror.git'
    with GitHTTPServer(served, 'deployer', SECRET) as server:
        bare_url = 'http://127.0.0.1:%d/site.git' % server.port
        url = 'http://deployer:%s@127.0.0.1:%d/site.git' % (SECRET, server.port)

        first = run_module('app_release', dict(root=str(root), repo=url, revision='v1',
                                               install_source=False, requirements=''), env=env)
        assert first['rc'] == 0, first
        assert first['revision'] == git(work, 'rev-parse', 'v1')
        # The server refuses anonymous requests: the clone got through with the credentials.
        assert server.refused >= 1 and server.authorized >= 2, vars(server)
        clone = [argv for argv in first['steps'] if 'clone' in argv]
        assert clone and clone[0][-2] == bare_url, first['steps']   # no userinfo, not even redacted

        # A mirror written before this change holds the token in its config: the next run
        # points it at the bare URL, and a new commit on a branch is fetched with the token.
        git(mirror, 'remote', 'set-url', 'origin', url)
        (work / 'demo_pkg' / '__init__.py').write_text('VERSION = 2\n')
        git(work, 'commit', '-qam', 'v2')
        git(work, 'push', '-q', str(site), 'main')
        before = server.authorized
        second = run_module('app_release', dict(root=str(root), repo=url, revision='main',
                                                install_source=False, requirements=''), env=env)
        assert second['rc'] == 0, second
        assert second['revision'] == git(work, 'rev-parse', 'HEAD')
        assert server.authorized > before
        assert any('fetch' in argv for argv in second['steps'])

        wrong = run_module('app_release', dict(
            root=str(tmp_path / 'other'), repo=url.replace(SECRET, 'wrong-' + SECRET),
            revision='v1', install_source=False, requirements=''), env=env)
        assert wrong.get('failed') and SECRET not in wrong['msg']

    assert git(mirror, 'config', 'remote.origin.url') == bare_url
    assert '@' not in (mirror / 'config').read_text()
    assert _files_holding(mirror, SECRET) == []
    assert _files_holding(root, SECRET) == []
    assert not stored.exists() and _files_holding(home, SECRET) == []
    # Read from /proc while every request was handled, with git and its helpers running.
    assert server.processes_seen >= server.requests > 0
    assert server.argv_hits == [], server.argv_hits
    for text in (json.dumps(first), json.dumps(second), json.dumps(wrong)):
        assert SECRET not in text


# -- provides: a release that cannot run what its host runs is refused when it is built -----

WHEEL_CACHE = os.path.expanduser('~/.cache/zopeops-stages')


def test_release_without_zeo_is_refused_for_a_zeo_host(tmp_path, repo):
    """A Plone-like project pins Zope (Plone does not depend on ZEO) and forgets ZEO: a host
    that runs runzeo gets a clear refusal, naming the program, the package and the file, and
    no release that looks complete; a client-only host gets the same release."""
    work, bare = repo
    zope_pin = next(line for line in (REPO / 'examples' / 'zopeapp' / 'requirements.txt')
                    .read_text().splitlines() if line.startswith('Zope'))
    (work / 'requirements.txt').write_text(zope_pin + '\n')
    git(work, 'commit', '-qam', 'Zope without ZEO')
    git(work, 'push', '-q', str(bare), 'main')
    sha = git(work, 'rev-parse', 'HEAD')
    root, instance = tmp_path / 'root', tmp_path / 'root' / 'dev'
    offline = dict(cache_dir=WHEEL_CACHE, installer_env={'UV_OFFLINE': '1'})
    refused = deploy(root, bare, 'main', instance, provides=['runzeo', 'runwsgi', 'zconsole'],
                     **offline)
    assert refused.get('failed'), refused
    assert 'does not provide runzeo (a ZEO host runs it; package ZEO)' in refused['msg'], refused
    assert 'add ZEO to the requirements file requirements.txt' in refused['msg']
    assert 'runwsgi' not in refused['msg'] and 'zconsole' not in refused['msg']
    assert not (root / 'releases' / sha).exists(), 'a refused release was left behind'
    assert not (instance / 'current').exists()
    client = deploy(root, bare, 'main', instance, provides=['runwsgi', 'zconsole'], **offline)
    assert client['rc'] == 0 and client['built'], client
    again = deploy(root, bare, 'main', instance, provides=['runzeo'], **offline)
    assert again.get('failed') and 'package ZEO' in again['msg'], again
    assert (root / 'releases' / sha / 'release.json').exists(), 'a release in use was removed'
    assert os.readlink(instance / 'current') == str(root / 'releases' / sha)


def test_extra_packages_join_a_built_release_once(tmp_path, repo):
    """The push page's way in (role push_page): a package folder installed after the
    application, recorded with its digest; a release built without it gets it (and the
    instance running it restarts), a second run changes nothing, a new version goes in again."""
    work, bare = repo
    root, instance = tmp_path / 'root', tmp_path / 'root' / 'dev'
    extra = tmp_path / 'extra'
    # A dependency that does not exist: installed without dependencies, as the role needs.
    write_package(extra, 'extra', 'dependencies = ["never-installed-dep"]\n')
    first = deploy(root, bare, 'v1', instance)
    assert first['rc'] == 0 and first['extras_installed'] == [], first
    python = str(root / 'releases' / first['revision'] / 'venv' / 'bin' / 'python')

    def version():
        return subprocess.run([python, '-c', 'import extra_pkg; print(extra_pkg.VERSION)'],
                              capture_output=True, text=True, check=False).stdout.strip()
    assert version() == ''
    check = deploy(root, bare, 'v1', instance, check=True, extra_packages=[str(extra)])
    assert check['changed'] and check['extras_installed'] == [str(extra)] and version() == ''
    added = deploy(root, bare, 'v1', instance, extra_packages=[str(extra)])
    assert added['changed'] and added['code_changed'] and not added['built'], added
    assert added['release_dir'] == first['release_dir'] and version() == '1'
    record = json.loads((root / 'releases' / first['revision'] / 'release.json').read_text())
    assert list(record['extra_packages']) == [str(extra)]
    again = deploy(root, bare, 'v1', instance, extra_packages=[str(extra)])
    assert not again['changed'] and not again['code_changed'] and again['extras_installed'] == []
    (extra / 'extra_pkg' / '__init__.py').write_text('VERSION = 2\n')
    newer = deploy(root, bare, 'v1', instance, extra_packages=[str(extra)])
    assert newer['extras_installed'] == [str(extra)] and version() == '2'
    # A folder that is not there fails before anything is built, naming it.
    missing = build(tmp_path / 'other', bare, 'v1', extra_packages=[str(tmp_path / 'nope')])
    assert missing['failed'] and 'is not a folder on this host' in missing['msg']
    assert not (tmp_path / 'other' / 'releases').exists()
