#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: app_release
short_description: Build an immutable code release of a Zope application, once per revision
version_added: 0.1.0
description:
  - Resolves O(revision) (a commit, tag or branch) in a git repository to its commit id and
    makes sure C(<root>/releases/<commit>) holds that exact tree in C(src/) and a virtualenv
    with its requirements in C(venv/).
  - Releases are content-addressed and shared by every stage on the machine; a revision that
    is already built is reused, not rebuilt. Concurrent builds on one machine (several stages
    deployed in parallel) are serialised by a lock; the second finds the release ready.
  - A release is only complete once its C(release.json) is written; a half-built one (an
    interrupted run) is removed and built again. C(release.json) is written last, after the
    virtualenv was checked to provide O(provides).
  - With O(installer=uv), a rebuild whose dependencies did not change takes seconds, because uv's
    cache under C(<root>/releases/.cache) holds every wheel already installed once.
  - Bytecode is compiled once, when the release is installed (C(uv pip install
    --compile-bytecode); pip compiles by default), so no process that runs it compiles again.
  - With O(instance_dir), the same call also deploys the release to an instance (under the
    releases' lock, so that M(zopeops.stages.release_prune) sees the new link); it points
    C(<instance_dir>/current) at it (a new symlink renamed over the old one, atomic) and writes
    C(<instance_dir>/deployed.json) (atomically, a temporary file renamed into place) with
    C(revision), C(previous_revision), C(requested), C(deployed_at) and C(deployed_by); other
    keys of the file (what the data modules record) are kept.
  - Credentials in O(repo) (C(https://user:password@host/...)) never appear in the result, an
    error message or C(release.json); the URL is shown as C(https://********@host/...).
  - Nor on disk or in a command line. The mirror's config holds the URL without them (a mirror
    that still holds them is set to the bare URL on the next run), and they reach git only
    through the environment of the git process that clones or fetches, where a credential
    helper given as C(git -c) answers them for that URL's protocol and host. Any credential
    helper configured for the account is disabled for that process, so none stores them.
    This applies to C(http) and C(https) URLs; other URLs and paths are used as given.
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  root:
    description: The machine's zopeops folder; releases go to C(<root>/releases).
    type: path
    required: true
  repo:
    description:
      - The application's git repository (a URL or a local path). It is mirrored under
        C(<root>/releases/.mirror.git) and fetched from there.
    type: str
    required: true
  revision:
    description:
      - What to build, a commit id, tag or branch. A branch is resolved at every run (after a
        fetch), so a host that follows a branch gets its head.
    type: str
    required: true
  requirements:
    description: Requirements file inside the source tree, installed first; empty for none.
    type: str
    default: requirements.txt
  install_source:
    description: Install the source tree itself into the virtualenv (it must be a package).
    type: bool
    default: true
  installer:
    description: C(uv) (fast, cached) or C(pip) (the virtualenv's own pip).
    type: str
    choices: [uv, pip]
    default: uv
  uv:
    description: Path of the uv executable; default is the one beside this module's Python.
    type: path
  python:
    description: The Python the release's virtualenv is made from; default this module's.
    type: path
  cache_dir:
    description:
      - The installer's cache (wheels already built or downloaded). Default
        C(<root>/releases/.cache); a folder shared by several roots on one machine (the
        sandboxes of a test run) makes their first builds cheap too.
    type: path
  installer_env:
    description:
      - Environment variables for the installer, on top of the module's own (for example
        C(UV_INDEX_URL) or C(PIP_INDEX_URL) for a private package index, or C(UV_OFFLINE=1)
        on a machine without access to an index, installing from O(cache_dir) only).
    type: dict
    default: {}
  extra_packages:
    description:
      - Folders of Python packages on the managed host installed into the release's virtualenv
        after the application (without their dependencies, so the application's pins stay as
        they are), e.g. the collection's push page product (role C(push_page)).
      - Each is recorded in C(release.json) with a digest of its files. A release that exists
        without one of them, or with another version of it, gets it installed (under the
        releases' lock) and its record updated, so the release is still reused for the
        revision; RV(code_changed) is then true for an instance running that release, so its
        services restart and load it.
    type: list
    elements: path
    default: []
  fetch:
    description: Fetch the repository before resolving a revision that is not a known commit.
    type: bool
    default: true
  timeout:
    description: Seconds one build step (fetch, install) may take before it is abandoned.
    type: int
    default: 900
  instance_dir:
    description:
      - An instance folder (C(<root>/<instance>)) to deploy the release to, created if missing;
        see the description. Without it, the release is only built (or found).
    type: path
  follow_deployed:
    description:
      - With O(instance_dir), deploy the revision recorded in C(deployed.json) when there is one
        (what a promotion deployed), instead of O(revision). O(revision) is used for an
        instance that has no C(deployed.json) yet.
      - True for every stage but the pipeline's head, which follows its configured revision.
    type: bool
    default: false
  deployed_by:
    description: Who deploys, recorded in C(deployed.json) (with O(instance_dir)).
    type: str
    default: ansible
  storage:
    description:
      - The kind of storage the instance's configuration runs (C(zeo) or C(relstorage), the
        inventory's), recorded in C(deployed.json) as C(storage) (with O(instance_dir)) when the
        record names none yet. A record written before this option existed gets the kind its
        client configuration files name (C(etc/zope-*.conf) - C(%import relstorage) or
        C(<zeoclient>); C(etc/zeo.conf) alone - C(zeo)), else this one.
      - An existing record keeps its kind, whatever the inventory says, unless
        O(storage_change) - site.yml leaves a stage on the kind it runs until a move between
        kinds (C(promote.yml -e migrate_storage)) changes it (docs/relstorage.md).
    type: str
    choices: [zeo, relstorage]
  storage_change:
    description: Record O(storage) even when C(deployed.json) names another kind (the move's
      step live_code).
    type: bool
    default: false
  provides:
    description:
      - The programs the release's virtualenv must hold in C(venv/bin), because the host runs
        them - C(runzeo) on a ZEO host (package C(ZEO)), C(runwsgi) and C(zconsole) on a Zope
        client host (package C(Zope)). The roles pass what the host runs.
      - Checked after a build, before the release is marked complete - a build that lacks one
        fails, naming the program, the package that provides it and the file to add it to, and
        leaves no release behind. A release built earlier that lacks one fails the same way, and
        O(instance_dir)'s C(current) is not pointed at it.
    type: list
    elements: str
    choices: [runzeo, runwsgi, zconsole]
    default: []
attributes:
  check_mode:
    support: full
    details: Resolves the revision from the mirror as it is (no fetch) and says whether a build
      would happen and whether O(instance_dir)'s C(current) would change; writes nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
notes:
  - Builds happen on the managed host, never on the controller.
seealso:
  - module: zopeops.stages.zeo_service
"""

EXAMPLES = r"""
- name: Ensure the release of beta's revision exists.
  zopeops.stages.app_release:
    root: /srv/zopeops
    repo: https://git.example.com/site.git
    revision: 3f2c1a9e0b7d4c55a1e2f3b4c5d6e7f8a9b0c1d2
  register: release

- name: Ensure test runs beta's revision (built once, current relinked, deployed.json written).
  zopeops.stages.app_release:
    root: /srv/zopeops
    repo: https://git.example.com/site.git
    revision: 3f2c1a9e0b7d4c55a1e2f3b4c5d6e7f8a9b0c1d2
    instance_dir: /srv/zopeops/test
    deployed_by: "{{ lookup('ansible.builtin.env', 'USER') }}"
  register: test_code

- name: Ensure a stage that is not the pipeline's head keeps what a promotion deployed.
  zopeops.stages.app_release:
    root: /srv/zopeops
    repo: https://git.example.com/site.git
    revision: demo-v1            # only for a first deployment
    instance_dir: /srv/zopeops/prod
    follow_deployed: true

- name: Ensure a ZEO and Zope client host gets a release that can run both.
  zopeops.stages.app_release:
    root: /srv/zopeops
    repo: https://git.example.com/site.git
    revision: main
    instance_dir: /srv/zopeops/dev
    provides: [runzeo, runwsgi, zconsole]
"""

RETURN = r"""
revision:
  description: The full commit id that was resolved and built.
  returned: success
  type: str
  sample: 3f2c1a9e0b7d4c55a1e2f3b4c5d6e7f8a9b0c1d2
release_dir:
  description: The release's folder.
  returned: success
  type: str
  sample: /srv/zopeops/releases/3f2c1a9e0b7d4c55a1e2f3b4c5d6e7f8a9b0c1d2
built:
  description: Whether this run built the release (false when it existed already).
  returned: success
  type: bool
build_seconds:
  description: How long the build took (0 when nothing was built).
  returned: success
  type: float
steps:
  description: The commands the build ran, as the argv lists they ran with (no credentials;
    those of O(repo) are passed in the environment).
  returned: success
  type: list
  elements: list
extras_installed:
  description: The O(extra_packages) this call installed into a release that existed without
    them (or with another version); empty when none (would, in check mode).
  returned: success
  type: list
  elements: str
code_changed:
  description: Whether O(instance_dir)'s C(current) now points at another release than before,
    or O(extra_packages) were installed into the release it runs (would, in check mode). The
    roles restart the services when it is true.
  returned: with O(instance_dir)
  type: bool
previous_revision:
  description: The revision the instance ran before this call (from C(deployed.json), else
    from its C(current) link); null for a new instance.
  returned: with O(instance_dir)
  type: str
  sample: 9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b
deployed:
  description: The content of C(deployed.json) after the call (predicted in check mode).
  returned: with O(instance_dir)
  type: dict
  sample: {revision: 3f2c1a9e0b7d4c55a1e2f3b4c5d6e7f8a9b0c1d2, previous_revision: null,
           requested: demo-v1, deployed_at: "2026-11-29T12:00:00Z", deployed_by: alice}
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from urllib.parse import unquote, urlsplit, urlunsplit

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zopeops.stages.plugins.module_utils.redact import (
    module_scrubber, redact_url)
from ansible_collections.zopeops.stages.plugins.module_utils.releases import (
    LOCK_NAME, SHA_RE, linked_release)


class BuildError(Exception):
    pass


def run(argv, steps, timeout, env=None, cwd=None, stdout=None, check=True):
    """Run ``argv`` (a list, no shell); with ``check``, a non-zero exit raises BuildError."""
    steps.append(list(argv))
    try:
        proc = subprocess.run(argv, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, cwd=cwd, timeout=timeout, check=False)
    except FileNotFoundError:
        raise BuildError('%s is not installed or not on PATH.' % argv[0]) from None
    except subprocess.TimeoutExpired:
        raise BuildError('%s took longer than %ds.' % (' '.join(argv[:3]), timeout)) from None
    if check and proc.returncode != 0:
        tail = (proc.stderr or b'').decode('utf-8', 'replace').strip().splitlines()[-25:]
        raise BuildError('%s failed (exit %d):\n%s'
                         % (' '.join(argv[:4]), proc.returncode, '\n'.join(tail)))
    return proc


@contextlib.contextmanager
def locked(path):
    with open(path, 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def git(mirror, *args):
    return ['git', '--git-dir', mirror] + list(args)


def resolve(mirror, revision, steps, timeout):
    """The commit id of ``revision`` in the mirror, or None if the mirror does not know it."""
    try:
        proc = run(git(mirror, 'rev-parse', '--verify', '--quiet', revision + '^{commit}'),
                   steps, timeout)
    except BuildError:
        return None
    return proc.stdout.decode().strip()


# Credentials of an http(s) repository URL reach git through the environment of the git
# process only: the mirror's config holds the URL without them and no argv holds them. A
# credential helper given on git's command line (top-level -c, which is never written to a
# config) answers git's "get" from these variables, for the URL's own protocol and host only;
# the empty helper before it drops any configured helper, so that no "store" helper (say
# ~/.git-credentials) is asked to keep them.
CREDENTIAL_ENV = ('ZOPEOPS_GIT_PROTOCOL', 'ZOPEOPS_GIT_HOST', 'ZOPEOPS_GIT_USERNAME',
                  'ZOPEOPS_GIT_PASSWORD')
CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || return 0; p=; h=; '
    'while IFS= read -r line; do case "$line" in '
    'protocol=*) p="${line#protocol=}";; host=*) h="${line#host=}";; esac; done; '
    'test "$p" = "$ZOPEOPS_GIT_PROTOCOL" && test "$h" = "$ZOPEOPS_GIT_HOST" || return 0; '
    'printf "username=%s\\n" "$ZOPEOPS_GIT_USERNAME"; '
    'test -z "${ZOPEOPS_GIT_PASSWORD+set}" || printf "password=%s\\n" "$ZOPEOPS_GIT_PASSWORD"; '
    '}; f')


class Remote:
    """A repository as git is told about it: ``url`` (what the mirror's config holds, without
    credentials), ``options`` (the top-level ``git -c`` arguments) and ``env`` (the variables
    of the git process that talks to the remote; None: the module's own environment)."""

    def __init__(self, repo, environ=None):
        self.url, self.options, self.env = repo, [], None
        try:
            parts = urlsplit(repo)
        except ValueError:
            return
        if parts.scheme.lower() not in ('http', 'https') or '@' not in parts.netloc:
            return  # a path, file://, ssh:// (its user is no secret) or no credentials
        userinfo, hostport = parts.netloc.rsplit('@', 1)
        username, has_password, password = userinfo.partition(':')
        self.url = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
        self.options = ['-c', 'credential.helper=', '-c', 'credential.helper=' + CREDENTIAL_HELPER]
        self.env = dict(os.environ if environ is None else environ)
        self.env.update(ZOPEOPS_GIT_PROTOCOL=parts.scheme.lower(), ZOPEOPS_GIT_HOST=hostport,
                        ZOPEOPS_GIT_USERNAME=unquote(username), GIT_TERMINAL_PROMPT='0')
        self.env.pop('ZOPEOPS_GIT_PASSWORD', None)
        if has_password:
            self.env['ZOPEOPS_GIT_PASSWORD'] = unquote(password)

    def git(self, *args):
        """The argv of a git command that talks to this remote."""
        return ['git'] + self.options + list(args)


def ensure_mirror(mirror, remote, steps, timeout):
    """Clone the mirror, or point the existing one at ``remote.url``: a mirror whose config
    still holds credentials (written before they moved to the environment) loses them here."""
    if not os.path.isdir(mirror):
        tmp = mirror + '.tmp-%d' % os.getpid()
        shutil.rmtree(tmp, ignore_errors=True)
        run(remote.git('clone', '--quiet', '--mirror', remote.url, tmp), steps, timeout,
            env=remote.env)
        os.rename(tmp, mirror)
        return True
    run(git(mirror, 'remote', 'set-url', 'origin', remote.url), steps, timeout)
    return False


def fetch(mirror, remote, steps, timeout):
    run(remote.git('--git-dir', mirror, 'fetch', '--quiet', '--prune', '--tags', 'origin',
                   '+refs/heads/*:refs/heads/*'), steps, timeout, env=remote.env)


def export_tree(mirror, sha, dest, steps, timeout):
    """Write the tree of ``sha`` into ``dest``: git archive to a temporary tar file beside
    ``dest`` (an argv list, no shell), extracted with tarfile, then removed."""
    handle, tar_path = tempfile.mkstemp(prefix='.archive-', suffix='.tar',
                                        dir=os.path.dirname(os.path.abspath(dest)))
    os.close(handle)
    try:
        proc = run(git(mirror, 'archive', '--format=tar', '-o', tar_path, sha), steps, timeout,
                   check=False)
        if proc.returncode != 0:
            err = (proc.stderr or b'').decode('utf-8', 'replace')
            raise BuildError('git archive %s failed (exit %d): %s'
                             % (sha, proc.returncode, err.strip()))
        with tarfile.open(tar_path, mode='r:') as archive:
            if hasattr(tarfile, 'data_filter'):
                archive.extractall(dest, filter='data')
            else:  # Python before 3.11.4: git archive of our own mirror only
                archive.extractall(dest)
    finally:
        os.unlink(tar_path)


def _installer_env(params):
    return {str(key): str(value) for key, value in params['installer_env'].items()}


def installer(params, venv):
    """(environment, argv prefix) that installs into ``venv`` with uv or the venv's pip."""
    cache = params['cache_dir'] or os.path.join(params['root'], 'releases', '.cache')
    if params['installer'] == 'uv':
        uv = params['uv'] or os.path.join(os.path.dirname(sys.executable), 'uv')
        if not os.path.exists(uv):
            uv = shutil.which('uv') or uv
        env = dict(os.environ, UV_CACHE_DIR=os.path.join(cache, 'uv'),
                   UV_LINK_MODE='hardlink', UV_PYTHON_DOWNLOADS='never',
                   **_installer_env(params))
        return env, [uv, 'pip', 'install', '--quiet', '--compile-bytecode', '--python',
                     os.path.join(venv, 'bin', 'python')]
    env = dict(os.environ, PIP_CACHE_DIR=os.path.join(cache, 'pip'), **_installer_env(params))
    return env, [os.path.join(venv, 'bin', 'pip'), 'install', '--quiet']


# Build leftovers in a package folder that are not part of what it installs.
DIGEST_SKIP_DIRS = ('build', 'dist', '__pycache__')


def tree_digest(path):
    """sha256 over a package folder's files (relative names and contents), build leftovers
    aside: what release.json records for an extra package."""
    if not os.path.isdir(path):
        raise BuildError('The extra package %s is not a folder on this host (extra_packages '
                         'names package folders copied to the host first).' % path)
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs
                         if d not in DIGEST_SKIP_DIRS and not d.endswith('.egg-info'))
        for name in sorted(files):
            if name.endswith(('.pyc', '.pyo')):
                continue
            full = os.path.join(folder, name)
            digest.update(os.path.relpath(full, path).encode('utf-8') + b'\0')
            with open(full, 'rb') as handle:
                digest.update(handle.read())
            digest.update(b'\0')
    return digest.hexdigest()


def extras_missing(release_dir, wanted):
    """The extra packages (path -> digest) a built release lacks or holds another version of."""
    try:
        with open(os.path.join(release_dir, 'release.json')) as handle:
            recorded = json.load(handle).get('extra_packages') or {}
    except (OSError, ValueError):
        recorded = {}
    return [path for path, digest in wanted.items() if recorded.get(path) != digest]


def install_extras(params, release_dir, paths, wanted, steps):
    """Install ``paths`` into an existing release and record them in its release.json."""
    env, install = installer(params, os.path.join(release_dir, 'venv'))
    again = '--reinstall' if params['installer'] == 'uv' else '--force-reinstall'
    for path in paths:
        run(install + ['--no-deps', again, path], steps, params['timeout'], env=env)
    marker = os.path.join(release_dir, 'release.json')
    with open(marker) as handle:
        info = json.load(handle)
    info['extra_packages'] = dict(info.get('extra_packages') or {}, **{p: wanted[p] for p in paths})
    tmp = marker + '.tmp'
    with open(tmp, 'w') as handle:
        json.dump(info, handle, indent=2, sort_keys=True)
    os.rename(tmp, marker)


def build(params, sha, release_dir, steps):
    timeout = params['timeout']
    src = os.path.join(release_dir, 'src')
    venv = os.path.join(release_dir, 'venv')
    os.makedirs(src)
    export_tree(params['_mirror'], sha, src, steps, timeout)
    python = params['python'] or sys.executable
    req = params['requirements']
    req_path = os.path.join(src, req) if req else None
    if req_path and not os.path.isfile(req_path):
        raise BuildError('The source at %s has no %s; set requirements to the right file or '
                         'to an empty string.' % (sha[:12], req))
    installs = ([['-r', req_path]] if req_path else []) + (
        [[src]] if params['install_source'] else []) + (
        [['--no-deps', path] for path in params['extra_packages']])
    env, install = installer(params, venv)
    if params['installer'] == 'uv':
        run([install[0], 'venv', '--quiet', '--python', python, venv], steps, timeout, env=env)
    else:
        run([python, '-m', 'venv', venv], steps, timeout, env=env)
    for extra in installs:
        run(install + extra, steps, timeout, env=env)
    with open(os.path.join(release_dir, 'REVISION'), 'w') as handle:
        handle.write(sha + '\n')


# The programs a host runs from its release, and the distribution that installs each.
PROGRAM_PACKAGES = {'runzeo': ('ZEO', 'a ZEO host'), 'runwsgi': ('Zope', 'a Zope client host'),
                    'zconsole': ('Zope', 'a Zope client host')}


def missing_programs(release_dir, provides):
    """The programs of ``provides`` that the release's virtualenv does not hold, in order."""
    return [name for name in provides
            if not os.access(os.path.join(release_dir, 'venv', 'bin', name), os.X_OK)]


def provides_problem(params, sha, release_dir, missing):
    """One sentence naming each missing program, its package and the file to add it to."""
    packages = []
    for name in missing:
        if PROGRAM_PACKAGES[name][0] not in packages:
            packages.append(PROGRAM_PACKAGES[name][0])
    where = ('the requirements file %s of the application repository (app_release_requirements)'
             % params['requirements'] if params['requirements'] else
             "the project's dependencies (pyproject.toml or setup.py) in the application "
             "repository")
    return ('The release of %s at %s does not provide %s, which this host runs: add %s to %s, '
            'commit, and run again. A release must install ZEO on a ZEO host and Zope on a '
            'client host (docs/applications.md).' % (
                sha[:12], release_dir,
                ', '.join('%s (%s runs it; package %s)' % (name, PROGRAM_PACKAGES[name][1],
                                                           PROGRAM_PACKAGES[name][0])
                          for name in missing),
                ' and '.join(packages), where))


def read_deployed(instance_dir):
    """The instance's deployed.json as a dict ({} when missing); ValueError when unreadable."""
    path = os.path.join(instance_dir, 'deployed.json')
    try:
        with open(path) as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return {}
    if not isinstance(record, dict):
        raise ValueError('%s is not a JSON object' % path)
    return record


def relink(current, release_dir):
    """Point ``current`` at ``release_dir`` atomically: a new link renamed over the old one."""
    tmp = '%s.tmp-%d' % (current, os.getpid())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(release_dir, tmp)
    os.replace(tmp, current)


def write_json_atomically(module, path, record):
    handle, tmp = tempfile.mkstemp(prefix='.deployed-', suffix='.json', dir=os.path.dirname(path))
    with os.fdopen(handle, 'w') as out:
        json.dump(record, out, indent=2, sort_keys=True)
        out.write('\n')
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o644)
    module.atomic_move(tmp, path)


def configured_storage(instance_dir):
    """The kind of storage an instance's configuration files name, or None (no files yet)."""
    etc = os.path.join(instance_dir, 'etc')
    try:
        names = sorted(os.listdir(etc))
    except OSError:
        return None
    for name in names:
        if name.startswith('zope-') and name.endswith('.conf'):
            try:
                with open(os.path.join(etc, name)) as handle:
                    text = handle.read()
            except OSError:
                continue
            if '%import relstorage' in text:
                return 'relstorage'
            if '<zeoclient>' in text:
                return 'zeo'
    return 'zeo' if 'zeo.conf' in names else None


def recorded_storage(params, previous):
    """The kind deployed.json records after this call (None: the option was not given)."""
    wanted = params.get('storage')
    if not wanted:
        return previous.get('storage')
    if previous.get('storage') and not params.get('storage_change'):
        return previous['storage']
    if params.get('storage_change'):
        return wanted
    return configured_storage(params['instance_dir']) or wanted


def deploy(module, params, sha, release_dir, requested, previous, result):
    """Point the instance at the release and record it in deployed.json."""
    instance_dir = params['instance_dir']
    current = os.path.join(instance_dir, 'current')
    before = linked_release(current)
    previous_revision = previous.get('revision') or (
        os.path.basename(before) if before else None)
    code_changed = before != os.path.normpath(release_dir)
    storage = recorded_storage(params, previous)
    storage_changed = storage != previous.get('storage')
    record_changed = code_changed or previous.get('revision') != sha
    # Extra packages installed into the release it runs: its services restart to load them.
    code_changed = code_changed or bool(result.get('extras_installed'))
    if record_changed:
        record = dict(previous, revision=sha, previous_revision=previous_revision,
                      requested=requested,
                      deployed_at=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                      deployed_by=params['deployed_by'])
    else:
        record = dict(previous)
    if storage:
        record['storage'] = storage
    record_changed = record_changed or storage_changed
    result.update(code_changed=code_changed, previous_revision=previous_revision,
                  deployed=record, changed=result['changed'] or record_changed)
    if module.check_mode:
        return
    os.makedirs(instance_dir, mode=0o755, exist_ok=True)
    if code_changed:
        relink(current, release_dir)
    if record_changed:
        write_json_atomically(module, os.path.join(instance_dir, 'deployed.json'), record)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type='path', required=True),
            repo=dict(type='str', required=True),
            revision=dict(type='str', required=True),
            requirements=dict(type='str', default='requirements.txt'),
            install_source=dict(type='bool', default=True),
            installer=dict(type='str', choices=['uv', 'pip'], default='uv'),
            uv=dict(type='path'),
            python=dict(type='path'),
            cache_dir=dict(type='path'),
            installer_env=dict(type='dict', default={}),
            fetch=dict(type='bool', default=True),
            timeout=dict(type='int', default=900),
            instance_dir=dict(type='path'),
            follow_deployed=dict(type='bool', default=False),
            deployed_by=dict(type='str', default='ansible'),
            storage=dict(type='str', choices=['zeo', 'relstorage']),
            storage_change=dict(type='bool', default=False),
            provides=dict(type='list', elements='str', default=[],
                          choices=sorted(PROGRAM_PACKAGES)),
            extra_packages=dict(type='list', elements='path', default=[]),
        ),
        supports_check_mode=True,
    )
    params = dict(module.params)
    # Credentials in the repository URL: Ansible masks the password in everything it prints,
    # the scrubber covers texts we build (git's own errors), release.json gets the redacted URL.
    scrub = module_scrubber(module, urls=[params['repo']])
    shown_repo = redact_url(params['repo'])

    def fail(msg, **extra):
        module.fail_json(msg=scrub.text(msg.replace(params['repo'], shown_repo)),
                         **scrub.deep(extra))

    releases = os.path.join(params['root'], 'releases')
    mirror = params['_mirror'] = os.path.join(releases, '.mirror.git')
    revision = params['revision'].strip()
    previous = {}
    if params['instance_dir']:
        try:
            previous = read_deployed(params['instance_dir'])
        except ValueError as exc:
            fail('%s. Fix or remove that file (it records what the instance runs), then run '
                 'again.' % exc)
        if params['follow_deployed'] and previous.get('revision'):
            revision = str(previous['revision']).strip()
    steps = []
    result = dict(changed=False, built=False, build_seconds=0.0, steps=steps, extras_installed=[])
    try:
        wanted = {path: tree_digest(path) for path in params['extra_packages']}
    except (BuildError, OSError) as exc:
        fail(str(exc), **result)

    if module.check_mode:
        sha = resolve(mirror, revision, steps, params['timeout']) if os.path.isdir(mirror) else None
        if sha is None:
            sha = revision if SHA_RE.match(revision) else None
        ready = sha and os.path.isfile(os.path.join(releases, sha, 'release.json'))
        missing = missing_programs(os.path.join(releases, sha), params['provides']) if ready else []
        if missing:
            fail(provides_problem(params, sha, os.path.join(releases, sha), missing), **result)
        extras = extras_missing(os.path.join(releases, sha), wanted) if ready else []
        result.update(revision=sha or revision, release_dir=os.path.join(releases, sha or revision),
                      changed=not ready or bool(extras), extras_installed=extras,
                      msg='would build' if not ready else 'release exists')
        if params['instance_dir']:
            deploy(module, params, sha or revision, result['release_dir'], revision, previous,
                   result)
        module.exit_json(**scrub.deep(result))

    try:
        os.makedirs(releases, exist_ok=True)
        with locked(os.path.join(releases, LOCK_NAME)):
            remote = Remote(params['repo'])
            ensure_mirror(mirror, remote, steps, params['timeout'])
            sha = resolve(mirror, revision, steps, params['timeout'])
            if (sha is None or not SHA_RE.match(revision)) and params['fetch']:
                fetch(mirror, remote, steps, params['timeout'])
                sha = resolve(mirror, revision, steps, params['timeout'])
            if sha is None:
                raise BuildError('Revision %r is not in %s: name a commit, tag or branch that '
                                 'exists there.' % (revision, shown_repo))
            release_dir = os.path.join(releases, sha)
            marker = os.path.join(release_dir, 'release.json')
            if not os.path.isfile(marker):
                if os.path.exists(release_dir):
                    shutil.rmtree(release_dir)  # an interrupted build: never half-use it
                started = time.monotonic()
                try:
                    build(params, sha, release_dir, steps)
                    missing = missing_programs(release_dir, params['provides'])
                    if missing:
                        raise BuildError(provides_problem(params, sha, release_dir, missing))
                except BaseException:
                    shutil.rmtree(release_dir, ignore_errors=True)
                    raise
                info = dict(revision=sha, requested=revision, repo=shown_repo,
                            installer=params['installer'], extra_packages=wanted,
                            built_at=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
                tmp = marker + '.tmp'
                with open(tmp, 'w') as handle:
                    json.dump(info, handle, indent=2, sort_keys=True)
                os.rename(tmp, marker)
                result.update(built=True, changed=True,
                              build_seconds=round(time.monotonic() - started, 3))
            else:
                missing = missing_programs(release_dir, params['provides'])
                if missing:  # built before, for a host that runs other programs
                    raise BuildError(provides_problem(params, sha, release_dir, missing))
                extras = extras_missing(release_dir, wanted)
                if extras:  # built before the extra packages were wanted (or changed)
                    install_extras(params, release_dir, extras, wanted, steps)
                    result.update(extras_installed=extras, changed=True)
            result.update(revision=sha, release_dir=release_dir)
            if params['instance_dir']:
                # Under the lock: release_prune never sees a release about to be linked as unused.
                deploy(module, params, sha, release_dir, revision, previous, result)
    except BuildError as exc:
        fail('Building the release of %r under %s failed: %s' % (revision, releases, exc),
             **result)
    except OSError as exc:
        fail('Deploying the release of %r to %s failed: %s. Check that the folder is writable '
             'by this account.' % (revision, params['instance_dir'] or releases, exc), **result)
    module.exit_json(**scrub.deep(
        dict(result, steps=[[redact_url(arg) for arg in argv] for argv in steps])))


if __name__ == '__main__':
    main()
