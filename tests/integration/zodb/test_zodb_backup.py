"""zodb_backup against real FileStorages with blobs: ZODB's own repozo, the blob backups, the
retention, the restore drill, check mode, and the script the scheduled runs call."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from support.modules import run_module
from support.paths import REPO
from zodbdata import md5, read_root, write_transactions

pytestmark = pytest.mark.integration


def listing(folder):
    return sorted(os.path.relpath(os.path.join(d, n), folder)
                  for d, _s, names in os.walk(folder) for n in names)


def test_full_incremental_packed_retention_and_drill(storage_factory, tmp_path):
    data, blobs = storage_factory(count=12, blobs_every=3, garbage=True)
    repo = str(tmp_path / 'backups')
    args = {'path': data, 'blob_dir': blobs, 'repository': repo, 'keep': 2}

    # Check mode on an empty repository: says full, writes nothing.
    checked = run_module('zodb_backup', args, check=True)
    assert checked['rc'] == 0 and checked['kind'] == 'full' and checked['changed'], checked
    assert not os.path.exists(repo)

    first = run_module('zodb_backup', args)
    assert first['rc'] == 0 and first['kind'] == 'full' and first['changed'], first
    report = first['report']
    tid, n, blob_contents = read_root(data, blobs)
    assert report['last_tid'] == tid.hex() and report['kind'] == 'full'
    assert report['files'][0] == report['stamp'] + '.fs' and report['size'] > 0
    assert report['blob_files'] == len(blob_contents) > 0
    assert os.path.isdir(os.path.join(repo, 'blobs', report['stamp']))
    with open(os.path.join(repo, 'latest.json')) as handle:
        assert json.load(handle)['stamp'] == report['stamp']

    again = run_module('zodb_backup', args)
    assert again['kind'] == 'unchanged' and not again['changed'], again

    write_transactions(data, blobs, count=4, start=100, blobs_every=2)
    before = listing(repo)
    checked = run_module('zodb_backup', args, check=True)
    assert checked['kind'] == 'incremental' and listing(repo) == before
    second = run_module('zodb_backup', args)
    assert second['kind'] == 'incremental', second
    assert second['report']['files'][0].endswith('.deltafs')
    assert second['report']['full'] == report['files'][0]
    assert second['report']['last_tid'] == read_root(data, blobs)[0].hex()

    # A pack shrinks the Data.fs: repozo's own check makes the next backup full.
    packed = run_module('zodb_pack', {'path': data, 'blob_dir': blobs})
    assert packed['changed'], packed
    write_transactions(data, blobs, count=1, start=200)
    checked = run_module('zodb_backup', args, check=True)
    assert checked['kind'] == 'full' and 'pack' in checked['reason']
    third = run_module('zodb_backup', args)
    assert third['kind'] == 'full' and 'pack' in third['reason'], third

    # One more full: keep=2 removes the first chain (full, incremental, blobs, reports).
    write_transactions(data, blobs, count=1, start=300)
    fourth = run_module('zodb_backup', dict(args, full=True))
    assert fourth['kind'] == 'full', fourth
    removed = fourth['removed']
    for name in (report['files'][0], second['report']['files'][0],
                 os.path.join('blobs', report['stamp']),
                 os.path.join('reports', report['stamp'] + '.json')):
        assert name in removed and not os.path.exists(os.path.join(repo, name)), name
    assert os.path.exists(os.path.join(repo, third['report']['files'][0]))

    # The drill restores the latest state and checks it with fstest and the blob backup.
    drill = run_module('zodb_backup', {'repository': repo, 'verify': True,
                                       'scratch_dir': str(tmp_path / 'scratch')})
    assert drill['rc'] == 0 and drill['verified'], drill
    assert drill['report']['last_tid'] == read_root(data, blobs)[0].hex()
    assert drill['report']['blob_records'] > 0
    assert not os.path.exists(tmp_path / 'scratch')

    # A damaged backup file: the drill refuses it and names it; the stage is untouched.
    digest = md5(data)
    damaged = os.path.join(repo, fourth['report']['files'][0])
    with open(damaged, 'r+b') as handle:
        handle.seek(200)
        handle.write(b'\xff' * 16)
    refused = run_module('zodb_backup', {'repository': repo, 'verify': True})
    assert refused['rc'] == 1 and refused['failed'], refused
    assert damaged in refused['msg'] and 'checksum' in refused['msg'], refused['msg']
    assert md5(data) == digest


def test_the_scheduled_script_writes_the_same_report(storage_factory, tmp_path):
    data, blobs = storage_factory(count=5, blobs_every=2)
    repo = str(tmp_path / 'backups')
    state_dir = tmp_path / 'promotions'
    state_dir.mkdir()
    config = tmp_path / 'backup.json'
    config.write_text(json.dumps({
        'path': data, 'blob_dir': blobs, 'repository': repo, 'keep': 3, 'stage': 'beta',
        'state_dir': str(state_dir), 'scratch_dir': str(tmp_path / 'scratch'),
        'drill_every': 604800}))
    # Installed as roles/backup installs it: the entry point beside the module's code.
    installed = tmp_path / 'bin'
    installed.mkdir()
    for source in (REPO / 'plugins' / 'module_utils' / 'zodb_backup.py',
                   REPO / 'plugins' / 'module_utils' / 'files.py',
                   REPO / 'roles' / 'backup' / 'files' / 'zopeops_backup.py'):
        shutil.copy(source, installed / source.name)
    script = [sys.executable, str(installed / 'zopeops_backup.py'), '--config', str(config)]
    env = dict(os.environ, PYTHONPATH='')  # as on the host: no collection importable

    # A promotion holds beta: the run refuses, says why, and writes nothing.
    (state_dir / 'beta.lock').mkdir()
    (state_dir / 'beta.lock' / 'owner.json').write_text(json.dumps(
        {'action': 'promote', 'run_id': 'r1', 'owner': 'ann'}))
    busy = subprocess.run(script, capture_output=True, text=True, env=env, check=False,
                          cwd=str(tmp_path))
    assert busy.returncode == 75, busy.stdout + busy.stderr
    assert 'promote holds the lock of beta' in busy.stdout and not os.path.exists(repo)
    (state_dir / 'beta.lock' / 'owner.json').unlink()
    (state_dir / 'beta.lock').rmdir()

    done = subprocess.run(script, capture_output=True, text=True, env=env, check=False,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result['kind'] == 'full' and result['drill']['verified']
    with open(os.path.join(repo, 'latest.json')) as handle:
        latest = json.load(handle)
    assert latest['stamp'] == result['report']['stamp']
    assert latest['last_tid'] == read_root(data, blobs)[0].hex()
    assert os.path.exists(os.path.join(repo, 'reports', 'drill-latest.json'))


def test_a_backup_is_as_private_as_its_repository(storage_factory, tmp_path):
    """The login's umask (022 here) does not make backup files readable by others."""
    data, blobs = storage_factory(count=3, blobs_every=2)
    repo = tmp_path / 'backups'
    repo.mkdir(mode=0o700)
    os.chmod(repo, 0o700)
    old = os.umask(0o022)
    try:
        result = run_module('zodb_backup', {'path': data, 'blob_dir': blobs, 'repository': str(repo)})
    finally:
        os.umask(old)
    assert result['rc'] == 0 and result['kind'] == 'full', result
    # repozo's files; the blob backups are hard links, which share the live blobs' inodes (and
    # so their modes, private under the services' umask).
    modes = {name: os.stat(repo / name).st_mode & 0o777 for name in listing(str(repo))
             if not name.startswith('blobs/')}
    assert len(modes) >= 3 and all(mode & 0o077 == 0 for mode in modes.values()), modes
