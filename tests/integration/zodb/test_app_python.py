"""The modules that import ZODB run with the host's application Python (zopeops_app_python),
set by the roles' tasks themselves: a host's default interpreter need not have ZODB."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from support.paths import ANSIBLE_PLAYBOOK, REPO

pytestmark = pytest.mark.integration

SYSTEM_PYTHON = shutil.which('python3', path='/usr/bin:/bin')


def _without_zodb(python):
    return python and subprocess.run([python, '-c', 'import ZODB'], capture_output=True,
                                     check=False).returncode != 0


def run_archive(tmp_path, data, blobs, app_python):
    """The promote role's twin_archive step on one local host whose instance holds ``data``;
    the inventory's own interpreter is the project's venv, the task must use ``app_python``."""
    instance = tmp_path / 'root' / 'test_upgrade'
    (instance / 'var' / 'filestorage').mkdir(parents=True, exist_ok=True)
    shutil.copy(data, instance / 'var' / 'filestorage' / 'Data.fs')
    if not (instance / 'var' / 'blobstorage').exists():
        shutil.copytree(blobs, instance / 'var' / 'blobstorage')
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(yaml.safe_dump({'all': {
        'vars': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable},
        'children': {'lb': {'hosts': {'zeo-host': {'zopeops_app_python': app_python}}}}}}))
    playbook = tmp_path / 'archive.yml'
    playbook.write_text(yaml.safe_dump([{
        'hosts': 'zeo-host', 'gather_facts': False,
        'vars': {'zopeops_instance_dir': str(instance), 'promote_plan': {'run_id': 'r1'}},
        'tasks': [{'ansible.builtin.include_role': {'name': 'zopeops.stages.promote',
                                                    'tasks_from': 'twin_archive.yml'}}]}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1')
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), '-i', str(inventory), str(playbook)],
                          cwd=str(REPO), capture_output=True, text=True, env=env, timeout=300,
                          check=False)
    return proc, instance / 'var' / 'archive' / 'rolledback-r1'


@pytest.mark.skipif(not _without_zodb(SYSTEM_PYTHON),
                    reason='needs a python3 in /usr/bin without ZODB to stand for a host\'s '
                           'default interpreter')
def test_a_python_without_zodb_fails_clearly_naming_it(tmp_path, storage_factory):
    data, blobs = storage_factory(count=3)
    proc, archive = run_archive(tmp_path, data, blobs, SYSTEM_PYTHON)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert 'TASK [zopeops.stages.promote : Ensure the twin\'s data is archived.]' in output
    assert ('ZODB is not importable by the Python interpreter that runs this module (%s)'
            % SYSTEM_PYTHON) in output, output[-4000:]
    assert 'Traceback' not in output
    assert not archive.exists()


def test_the_step_runs_with_the_app_python(tmp_path, storage_factory):
    data, blobs = storage_factory(count=3)
    proc, archive = run_archive(tmp_path, data, blobs, sys.executable)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert 'changed=1' in proc.stdout
    assert (archive / 'Data.fs').is_file()
