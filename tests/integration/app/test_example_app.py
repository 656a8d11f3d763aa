"""The example application for real: its demo repository, its release, and a ZEO server and
a Zope client configured by the zeo_server and zope_client roles.

The release is installed into a fresh virtualenv with uv (sharing uv's cache, so it takes a
few seconds once the wheels are cached); the configuration is rendered by ansible-playbook
running the two roles with their start switched off; runzeo and runwsgi are then started with
the commands from the rendered supervisord program files, by this test, and stopped by PID.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from support.modules import run_module
from support.paths import ANSIBLE_PLAYBOOK, COLLECTIONS, REPO, VENV_BIN
from support.ports import free_port
from support.procs import wait_for
from support.supervisor import running_supervisor
from support.writeload import WriteLoad, admin_auth
from support.zodbcheck import write_entries_in_datafs, write_ids_over_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = REPO / 'examples' / 'zopeapp'
BUILD_REPO = APP / 'build_demo_repo.py'
UV = VENV_BIN / 'uv'
ADMIN_PASSWORD = 'not-a-secret-test-password'

PLAYBOOK = """\
- name: Render the configuration of the ZEO server and the Zope clients.
  hosts: all
  gather_facts: false
  tasks:
    - name: Ensure the ZEO server is configured.
      ansible.builtin.include_role:
        name: zopeops.stages.zeo_server
    - name: Ensure the Zope clients are configured.
      ansible.builtin.include_role:
        name: zopeops.stages.zope_client
"""


def git(*args, git_dir):
    return subprocess.run(['git', '--git-dir', str(git_dir), *args], capture_output=True,
                          text=True, check=True).stdout.strip()


def build_demo_repo(dest, source=None):
    argv = [sys.executable, str(BUILD_REPO)] + (['--source', str(source)] if source else [])
    proc = subprocess.run(argv + [str(dest)], capture_output=True,
                          text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def refs(git_dir):
    return {name: git('rev-parse', name, git_dir=git_dir)
            for name in ('refs/tags/demo-v1', 'refs/tags/demo-v2', 'refs/heads/main')}


def http_get(url, auth=None, timeout=10):
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(('%s:%s' % auth).encode()).decode()
        request.add_header('Authorization', 'Basic ' + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode('utf-8', 'replace')
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode('utf-8', 'replace')


def answers(url):
    try:
        status, _body = http_get(url, timeout=2)
    except OSError:
        return False
    return status < 500


def program_command(supervisor_file, program):
    """The argv of one [program:...] section of a rendered supervisord file."""
    section = None
    for line in supervisor_file.read_text().splitlines():
        header = re.match(r'^\[program:(.+)\]$', line.strip())
        if header:
            section = header.group(1)
        elif section == program and line.startswith('command ='):
            return shlex.split(line.split('=', 1)[1])
    raise AssertionError('no [program:%s] in %s' % (program, supervisor_file))


def run_playbook(workdir, extra_vars, password=ADMIN_PASSWORD):
    vars_file = workdir / 'vars.json'
    vars_file.write_text(json.dumps(extra_vars))
    playbook = workdir / 'render.yml'
    playbook.write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
               ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='0')
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), '-i', 'test-local,', '-e', '@%s' % vars_file,
                           str(playbook)], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert password not in proc.stdout + proc.stderr
    recap = re.search(r'test-local\s*:\s*ok=\d+\s+changed=(\d+)', proc.stdout)
    assert recap, proc.stdout[-2000:]
    return int(recap.group(1))


@pytest.mark.parametrize('source, banner_file', [
    (None, 'Products/ZopeOpsDemo/banner.py'),
    (APP.parent / 'plone', 'zopeops_plonedemo/banner.py'),
], ids=['zopeapp', 'plone'])
def test_demo_repository_is_deterministic_and_idempotent(tmp_path, source, banner_file):
    first, second = tmp_path / 'a' / 'app.git', tmp_path / 'b' / 'app.git'
    assert build_demo_repo(first, source) == 'created'
    assert build_demo_repo(second, source) == 'created'
    assert refs(first) == refs(second)
    shas = refs(first)
    assert shas['refs/heads/main'] == shas['refs/tags/demo-v2']
    assert shas['refs/tags/demo-v1'] != shas['refs/tags/demo-v2']
    assert git('rev-parse', 'demo-v2^', git_dir=first) == shas['refs/tags/demo-v1']
    assert git('symbolic-ref', 'HEAD', git_dir=first) == 'refs/heads/main'
    v1_banner = git('show', 'demo-v1:' + banner_file, git_dir=first)
    v2_banner = git('show', 'demo-v2:' + banner_file, git_dir=first)
    assert 'demo v1' in v1_banner and 'demo v2' in v2_banner
    # A second run changes nothing.
    assert build_demo_repo(first, source) == 'exists'
    assert refs(first) == shas


@pytest.fixture(scope='module')
def release(tmp_path_factory):
    """<root>/releases/<sha>/{src,venv,REVISION} of demo-v2, as app_release lays it out."""
    root = tmp_path_factory.mktemp('root')
    repo = root / 'app.git'
    build_demo_repo(repo)
    sha = git('rev-parse', 'demo-v2^{commit}', git_dir=repo)
    release_dir = root / 'releases' / sha
    src = release_dir / 'src'
    src.mkdir(parents=True)
    archive = subprocess.run(['git', '--git-dir', str(repo), 'archive', sha],
                             capture_output=True, check=True).stdout
    subprocess.run(['tar', '-x', '-C', str(src)], input=archive, check=True)
    subprocess.run([str(UV), 'venv', '-q', '--python', sys.executable, 'venv'],
                   cwd=release_dir, check=True, timeout=120)
    subprocess.run([str(UV), 'pip', 'install', '-q', '--python', 'venv/bin/python',
                    '-r', 'src/requirements.txt', './src'],
                   cwd=release_dir, check=True, timeout=600)
    (release_dir / 'REVISION').write_text(sha + '\n')
    return root, sha, release_dir


def instance_vars(root, release_dir, instance, password=ADMIN_PASSWORD):
    """A fresh instance folder on the release, and the variables the two roles need."""
    instance_dir = root / instance
    instance_dir.mkdir()
    (instance_dir / 'current').symlink_to(os.path.relpath(release_dir, instance_dir))
    zeo_port, client_port = free_port(), free_port()
    return instance_dir, client_port, {
        'ansible_connection': 'local',
        'ansible_host': '127.0.0.1',
        'ansible_python_interpreter': sys.executable,
        # The facts the pipeline role sets (docs/architecture.md).
        'zopeops_stage': instance,
        'zopeops_side': 'live',
        'zopeops_instance': instance,
        'zopeops_instance_dir': str(instance_dir),
        'zopeops_zeo_address': '127.0.0.1:%d' % zeo_port,
        'zopeops_bind_address': '127.0.0.1',
        'zopeops_side_model': {
            'instance': instance, 'side': 'live',
            'zeo': {'host': 'test-local', 'address': '127.0.0.1', 'machine': '127.0.0.1',
                    'port': zeo_port},
            'clients': [{'host': 'test-local', 'name': 'client1', 'address': '127.0.0.1',
                         'port': client_port, 'id': instance + '-client1'}]},
        'zopeops_clients': [{'name': 'client1', 'port': client_port}],
        'zopeops_process_manager': 'supervisord',
        'zopeops_service_user': '',
        'zopeops_supervisor_conf': str(root / 'supervisor' / 'supervisord.conf'),
        'zopeops_supervisorctl': str(VENV_BIN / 'supervisorctl'),
        # Only folders and configuration: this test starts the processes itself.
        'zeo_server_start': False,
        'zope_client_start': False,
        'zope_client_admin_password': password,
    }


def start_instance(instance_dir, client_port, processes):
    """Start the rendered ZEO server and client1 by PID; return client1's base URL."""
    instance = instance_dir.name
    etc, log = instance_dir / 'etc', instance_dir / 'log'
    processes.start(program_command(etc / 'supervisor-zeo.conf', instance + '-zeo'),
                    log_path=log / 'zeo-stdout.log', cwd=instance_dir)
    wait_for((instance_dir / 'var' / 'zeo.pid').exists, timeout=60,
             what='the ZEO server to write its pid file')
    client = processes.start(
        program_command(etc / 'supervisor-clients.conf', instance + '-client1'),
        log_path=log / 'client1-stdout.log', cwd=instance_dir)
    base = 'http://127.0.0.1:%d' % client_port
    try:
        wait_for(lambda: answers(base + '/@@zopeops-info'), timeout=120,
                 what='Zope client1 to answer HTTP')
    except TimeoutError:
        raise AssertionError('client1 did not answer (exit %s):\n%s' % (
            client.poll(), (log / 'client1.log').read_text()[-3000:])) from None
    return base


def test_zope_client_serves_the_app_through_zeo(release, tmp_path, processes):
    root, sha, release_dir = release
    instance_dir, client_port, extra_vars = instance_vars(root, release_dir, 'test')
    assert run_playbook(tmp_path, extra_vars) > 0
    etc, log = instance_dir / 'etc', instance_dir / 'log'
    base = start_instance(instance_dir, client_port, processes)

    status, body = http_get(base + '/@@zopeops-info')
    assert status == 200
    info = json.loads(body)
    assert info['revision'] == sha
    assert (info['stage'], info['instance'], info['client']) == ('test', 'test', 'client1')
    assert info['banner'].startswith('ZopeOps demo v2')
    assert info['zope_version'] == '6.3'
    assert re.fullmatch(r'[0-9a-f]{16}', info['last_tid'])
    assert info['marker'] is None
    assert (instance_dir / 'var' / 'client1' / 'test-client1-1.zec').exists()

    # The admin account from inituser exists; Zope consumed the file.
    assert http_get(base + '/manage_main')[0] == 401
    assert http_get(base + '/manage_main', auth=('admin', ADMIN_PASSWORD))[0] == 200
    assert not (instance_dir / 'inituser').exists()

    # A second run, after the processes made their files (ZEO re-creates the blob folder
    # with a new Data.fs; Zope consumed inituser), changes nothing.
    assert run_playbook(tmp_path, extra_vars) == 0, 'the second run must change nothing'

    # The seed script, through zconsole and the console configuration, while client1 runs.
    seed = [str(release_dir / 'venv' / 'bin' / 'zconsole'), 'run',
            str(etc / 'zope-console.conf'), str(release_dir / 'src' / 'seed_demo_content.py')]
    outputs = []
    for run_number in range(2):
        proc = subprocess.run(seed, cwd=instance_dir, capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs.append(proc.stdout.strip().splitlines()[-1])
    assert outputs == ['created', 'exists']

    seeded = wait_for(lambda: json.loads(http_get(base + '/@@zopeops-info')[1])['marker'],
                      timeout=20, what='client1 to see the seeded marker')
    assert seeded == 'seeded'
    info_after = json.loads(http_get(base + '/@@zopeops-info')[1])
    assert info_after['last_tid'] > info['last_tid']
    status, page = http_get(base + '/partners/globex/')
    assert status == 200 and 'Globex Corporation' in page
    assert http_get(base + '/partners/initech/logo.png')[0] == 200

    # A write through the demo's marker view reaches the ZODB.
    request = urllib.request.Request(base + '/@@zopeops-marker', data=b'value=written-in-test',
                                     method='POST')
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())['written'] is True
    assert http_get(base + '/marker') == (200, 'written-in-test')

    access_log = (log / 'client1-access.log').read_text()
    assert '/@@zopeops-info' in access_log or '%40%40zopeops-info' in access_log

    # The stamp that remembers the admin account holds a salted PBKDF2, not a bare hash.
    stamp = instance_dir / 'var' / 'inituser.applied'
    text = stamp.read_text()
    assert text.startswith('admin:pbkdf2-sha256$') and oct(stamp.stat().st_mode & 0o777) == '0o600'
    assert hashlib.sha256(ADMIN_PASSWORD.encode()).hexdigest() not in text
    # A stamp of the former format (an unsalted {SHA256}) of the same password is rewritten,
    # without writing inituser (no account reset, no restart); then nothing changes.
    stamp.write_text('admin:{SHA256}%s\n' % hashlib.sha256(ADMIN_PASSWORD.encode()).hexdigest())
    assert run_playbook(tmp_path, extra_vars) == 1
    assert stamp.read_text().startswith('admin:pbkdf2-sha256$')
    assert not (instance_dir / 'inituser').exists()
    assert run_playbook(tmp_path, extra_vars) == 0
    # A new password writes inituser for the next start (and a new stamp).
    new_password = 'another-test-password'
    assert run_playbook(tmp_path, dict(extra_vars, zope_client_admin_password=new_password),
                        password=new_password) > 0
    assert (instance_dir / 'inituser').exists() and stamp.read_text() != text


def http_post(url, data, auth=None, timeout=10):
    request = urllib.request.Request(url, data=data, method='POST')
    if auth:
        token = base64.b64encode(('%s:%s' % auth).encode()).decode()
        request.add_header('Authorization', 'Basic ' + token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode('utf-8', 'replace')
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode('utf-8', 'replace')


def test_every_acknowledged_write_is_in_the_zodb(release, tmp_path, processes):
    """The counted writes under a concurrent WriteLoad: each acknowledged id is stored."""
    root, sha, release_dir = release
    # Like the sandbox (inventories/local): a generated password in a 0600 file, read back.
    password_file = tmp_path / 'secrets' / 'zope-admin-password'
    password_file.parent.mkdir(mode=0o700)
    password_file.write_text(secrets.token_urlsafe(24) + '\n')
    password_file.chmod(0o600)
    auth = admin_auth(password_file)
    instance_dir, client_port, extra_vars = instance_vars(root, release_dir, 'beta',
                                                          password=auth[1])
    run_playbook(tmp_path, extra_vars, password=auth[1])
    base = start_instance(instance_dir, client_port, processes)
    write, writes = base + '/@@zopeops-write', base + '/@@zopeops-writes'

    # Refused without credentials, or with a wrong password; writes take POST only.
    assert http_post(write, b'id=w-anonymous')[0] == 401
    assert http_get(writes)[0] == 401
    assert http_post(write, b'id=w-wrong', auth=('admin', 'wrong'))[0] == 401
    assert http_get(write, auth=auth)[0] == 405
    assert http_post(write, b'id=no spaces', auth=auth)[0] == 400

    # A count, not a duration: on a loaded machine 4 s made as few as 5 writes.
    load = WriteLoad(base, auth, threads=4, max_seconds=300, max_writes=40,
                     log_path=tmp_path / 'writes.jsonl')
    with load:
        load.wait(300)
    print(load.report())
    assert not load.running
    assert load.failed == [] and load.abandoned == [], load.report()
    assert len(load.acknowledged) == 40, load.report()
    assert load.by_instance() == {'beta': len(load.acknowledged)}
    assert auth[1] not in load.report() + repr(load)
    logged = [json.loads(line) for line in (tmp_path / 'writes.jsonl').read_text().splitlines()]
    assert [entry['id'] for entry in logged] == list(load.acknowledged)

    # Writing an acknowledged id again is a success that changes nothing (client retries).
    again_id = next(iter(load.acknowledged))
    status, body = http_post(write, ('id=' + again_id).encode(), auth=auth)
    assert status == 200 and json.loads(body) == {
        'id': again_id, 'instance': 'beta', 'client': 'client1', 'created': False}

    acknowledged = set(load.acknowledged)
    over_http = write_ids_over_http(base, auth)
    assert acknowledged <= over_http
    assert over_http == acknowledged  # nothing else wrote, and every id sent was acknowledged
    stored = write_entries_in_datafs(instance_dir / 'var' / 'filestorage' / 'Data.fs')
    assert acknowledged <= set(stored), sorted(acknowledged - set(stored))[:5]
    assert {(e['instance'], e['client']) for e in stored.values()} == {('beta', 'client1')}

    for log_file in (instance_dir / 'log').iterdir():
        assert auth[1] not in log_file.read_text(errors='replace'), log_file


def test_revision_proofs_and_the_init_script(release, tmp_path, processes):
    """The application contract against the example app, under a real supervisord: each
    revision-proof mode (release, json, regex) proves the revision client1 runs, through
    zeo_service (readiness) and pipeline_status (status, preflight); the release proof follows
    the running process, not the current link; the init runner seeds once, through zconsole."""
    root, sha, release_dir = release
    instance_dir, client_port, extra_vars = instance_vars(root, release_dir, 'proof')
    run_playbook(tmp_path, extra_vars)
    etc = instance_dir / 'etc'
    assert 'directory = %s/current' % instance_dir in (etc / 'supervisor-clients.conf').read_text()
    processes.start(program_command(etc / 'supervisor-zeo.conf', 'proof-zeo'),
                    log_path=instance_dir / 'log' / 'zeo-stdout.log', cwd=instance_dir)
    wait_for((instance_dir / 'var' / 'zeo.pid').exists, timeout=60,
             what='the ZEO server to write its pid file')
    address = '127.0.0.1:%d' % client_port
    client = {'id': 'proof-client1', 'name': 'client1', 'port': client_port,
              'url': 'http://' + address}

    with running_supervisor(extra_includes=str(etc / 'supervisor-clients.conf')) as sup:
        manager = {'supervisor_config': str(sup.config),
                   'supervisorctl': str(VENV_BIN / 'supervisorctl')}

        def ensure(**proof):
            return run_module('zeo_service', dict(
                manager, kind='zope', state='started', timeout=120,
                programs=[{'name': 'proof-client1', 'address': address}], **proof))

        def status(**proof):
            result = run_module('pipeline_status', dict(manager, instances=[{
                'instance': 'proof', 'dir': str(instance_dir), 'clients': [client]}], **proof))
            assert not result.get('failed'), result
            return result['instances']['proof']['clients']['proof-client1']

        modes = {
            'release': {'revision_proof': 'release'},
            'json': {'revision_proof': 'json', 'revision_page': '/@@zopeops-info',
                     'revision_json_key': 'revision'},
            'regex': {'revision_proof': 'regex', 'revision_page': '/@@zopeops-info',
                      'revision_regex': r'"revision":\s*"([0-9a-f]{40})"'},
        }
        for mode, proof in modes.items():
            result = ensure(expected_revision=sha, **proof)
            assert not result.get('failed'), (mode, result.get('msg'))
            assert result['programs'][0]['revision'] == sha, mode
            seen = status(**proof)
            assert seen['ok'] and seen['revision'] == sha, (mode, seen)
        assert status(**modes['json'])['banner'].startswith('ZopeOps demo v2')

        # Another revision is refused at once, naming both.
        wrong = ensure(expected_revision='0' * 40, revision_proof='release')
        assert wrong['failed'] and 'serves revision %s, expected %s' % (sha, '0' * 40) in wrong['msg']

        # A misconfigured JSON proof is a proof error naming the variables, not ill health.
        unproven = status(revision_proof='json', revision_page='/@@no-such-view')
        assert unproven['health_error'] is None and not unproven['ok']
        assert 'zopeops_revision_json_path' in unproven['proof_error']

        # current now points at another release; the running process still runs its own.
        other = root / 'releases' / ('f' * 40)
        other.mkdir()
        (other / 'REVISION').write_text('f' * 40 + '\n')
        link = instance_dir / 'current'
        link.unlink()
        link.symlink_to(other)
        try:
            assert status(revision_proof='release')['revision'] == sha
        finally:
            link.unlink()
            link.symlink_to(release_dir)

        # Site initialisation: the runner the zope_client role copies, through zconsole and
        # the console configuration, while client1 runs: it seeds once, then finds /partners.
        runner = REPO / 'roles' / 'zope_client' / 'files' / 'zopeops_init.py'
        init = [str(release_dir / 'venv' / 'bin' / 'zconsole'), 'run', str(etc / 'zope-console.conf'),
                str(runner)]
        seed = str(release_dir / 'src' / 'seed_demo_content.py')
        outputs = []
        for argv in ([init + ['--check', '/partners', seed]], [init + ['/partners', seed]],
                     [init + ['/partners', seed]]):
            proc = subprocess.run(argv[0], cwd=instance_dir, capture_output=True, text=True,
                                  timeout=120, check=False)
            assert proc.returncode == 0, proc.stderr[-3000:]
            outputs.append(proc.stdout.strip().splitlines())
        assert outputs[0][-1] == 'zopeops-init: would run %s' % seed
        assert outputs[1][-2:] == ['created', 'zopeops-init: ran %s' % seed]
        assert outputs[2] == ['zopeops-init: /partners exists']
        assert http_get(client['url'] + '/partners/globex/')[0] == 200
        # A script that does not create what it should is caught.
        proc = subprocess.run(init + ['/not-created', seed], cwd=instance_dir,
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode != 0
        assert '/not-created still does not exist' in proc.stderr
        # A script path the release does not hold is named, with the variable to correct.
        proc = subprocess.run(init + ['/elsewhere', str(release_dir / 'src' / 'no_such.py')],
                              cwd=instance_dir, capture_output=True, text=True, timeout=120,
                              check=False)
        assert proc.returncode != 0 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
        assert 'no_such.py is not in the release' in proc.stderr
        assert 'zopeops_init_script' in proc.stderr
