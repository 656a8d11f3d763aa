"""app_release's git invocation for a repository URL with credentials: the URL git is told
(and the mirror's config keeps) has none, no argv element holds them, only the environment of
the git process does; and the credential helper on that argv answers them to git for the
URL's own protocol and host only (run here with a real shell, the way git runs it)."""
from __future__ import annotations

import subprocess

import pytest

from ansible_collections.zopeops.stages.plugins.modules import app_release


def test_credentials_go_to_the_environment_not_to_the_url_or_argv():
    remote = app_release.Remote('https://deploy%20er:to%3Ak%2Fen%40%40x@git.example.com:8443/site.git',
                                environ={'PATH': '/usr/bin:/bin', 'ZOPEOPS_GIT_PASSWORD': 'old'})
    assert remote.url == 'https://git.example.com:8443/site.git'
    argv = remote.git('clone', '--mirror', remote.url, '/tmp/m')
    assert not any('to:k' in arg or '%3A' in arg or 'deploy' in arg or '@git' in arg
                   for arg in argv), argv
    assert argv[:5] == ['git', '-c', 'credential.helper=', '-c', argv[4]]
    assert argv[4].startswith('credential.helper=!')
    assert remote.env['ZOPEOPS_GIT_USERNAME'] == 'deploy er'
    assert remote.env['ZOPEOPS_GIT_PASSWORD'] == 'to:k/en@@x'
    assert remote.env['ZOPEOPS_GIT_HOST'] == 'git.example.com:8443'
    assert remote.env['ZOPEOPS_GIT_PROTOCOL'] == 'https'
    assert remote.env['GIT_TERMINAL_PROMPT'] == '0'
    assert remote.env['PATH'] == '/usr/bin:/bin'


def test_a_user_without_password_gives_no_password():
    remote = app_release.Remote('http://token123@git.example.com/site.git',
                                environ={'ZOPEOPS_GIT_PASSWORD': 'leftover'})
    assert remote.url == 'http://git.example.com/site.git'
    assert remote.env['ZOPEOPS_GIT_USERNAME'] == 'token123'
    assert 'ZOPEOPS_GIT_PASSWORD' not in remote.env


@pytest.mark.parametrize('repo', [
    '/srv/git/site.git', 'file:///srv/git/site.git', 'https://git.example.com/site.git',
    'ssh://git@git.example.com/site.git', 'git@git.example.com:site.git',
])
def test_paths_and_urls_without_credentials_are_used_as_given(repo):
    remote = app_release.Remote(repo)
    assert remote.url == repo and remote.env is None
    assert remote.git('fetch') == ['git', 'fetch']


def _helper(remote, action, request):
    """Run the helper the way git runs a '!' helper: sh -c '<helper> "$@"' <helper> <action>."""
    helper = remote.options[-1][len('credential.helper=!'):]
    return subprocess.run(['sh', '-c', helper + ' "$@"', helper, action], input=request,
                          env=remote.env, capture_output=True, text=True, check=True).stdout


def test_the_helper_answers_its_own_host_only_and_only_to_get():
    remote = app_release.Remote('https://deployer:pa%24%24%20w%22rd@git.example.com/site.git',
                                environ={'PATH': '/usr/bin:/bin'})
    request = 'protocol=https\nhost=git.example.com\npath=site.git\n\n'
    assert _helper(remote, 'get', request) == 'username=deployer\npassword=pa$$ w"rd\n'
    assert _helper(remote, 'get', request.replace('git.example.com', 'evil.example.com')) == ''
    assert _helper(remote, 'get', request.replace('https', 'http')) == ''
    assert _helper(remote, 'store', request + 'username=x\npassword=y\n') == ''
    assert _helper(remote, 'erase', request) == ''
