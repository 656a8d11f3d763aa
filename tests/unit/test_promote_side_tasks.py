"""Task files of the promotion that change a side's files on each of its hosts, run by a real
ansible-playbook on a local host:

- side_files.yml in a move between kinds: a side moved to ZEO keeps no RelStorage
  configuration (etc/relstorage.conf, the passfile etc/pgpass), a side moved to RelStorage
  keeps its own (the side has no clients here, so only the removal, and to RelStorage the
  programs' forgetting, runs);
- forget_stamps.yml in a restore: the stamps of the site's initialisation and of the push
  page's grant go, so that the next site.yml runs both again on the restored data.
"""
from __future__ import annotations

import json

import pytest

from support.ansible import recap, run_playbook
from support.paths import VENV_BIN

PLAYBOOK = '''
- name: A task file of the promotion on one side's host.
  hosts: side
  gather_facts: false
  tasks:
    - name: Run it.
      ansible.builtin.include_role: {name: zopeops.stages.promote, tasks_from: %s}
'''


def side_with_files(tmp_path, files):
    """A side's instance folder holding ``files`` (paths below it)."""
    instance = tmp_path / 'beta'
    for name in files:
        (instance / name).parent.mkdir(parents=True, exist_ok=True)
        (instance / name).write_text(name)
    return instance


def run_on_side(tmp_path, instance, tasks_from, **host):
    """``tasks_from`` of the promote role on a local host of the side ``instance``: the number
    of changed tasks of the run and of a second one."""
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(json.dumps({'all': {'children': {'side': {'hosts': {'app1': dict({
        'ansible_connection': 'local', 'ansible_python_interpreter': str(VENV_BIN / 'python'),
        'zopeops_instance': instance.name, 'zopeops_instance_dir': str(instance)}, **host)}}}}}))
    playbook = tmp_path / 'side.yml'
    playbook.write_text(PLAYBOOK % tasks_from)
    changed = []
    for _run in range(2):
        proc = run_playbook(str(playbook), inventory, timeout=120)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        changed.append(recap(proc.stdout)['app1']['changed'])
    return changed


@pytest.mark.parametrize('kind', ['zeo', 'relstorage'])
def test_a_side_moved_to_zeo_keeps_no_relstorage_configuration(tmp_path, kind):
    instance = side_with_files(tmp_path, ['etc/relstorage.conf', 'etc/pgpass',
                                          'etc/zope-client1.conf'])
    changed = run_on_side(tmp_path, instance, 'side_files.yml', zopeops_clients=[],
                          zopeops_process_manager='none',
                          zopeops_side_model={'storage': kind, 'zeo': {'host': 'zeo1'}})
    left = sorted(path.name for path in (instance / 'etc').iterdir())
    if kind == 'zeo':
        assert left == ['zope-client1.conf'] and changed == [1, 0], (left, changed)
    else:
        assert left == ['pgpass', 'relstorage.conf', 'zope-client1.conf'], left


def test_a_restore_removes_the_stamps_of_the_one_off_steps(tmp_path):
    instance = side_with_files(tmp_path, ['var/zopeops-init.stamp',
                                          'var/zopeops-push-grant.stamp', 'var/inituser.applied'])
    changed = run_on_side(tmp_path, instance, 'forget_stamps.yml')
    assert sorted(path.name for path in (instance / 'var').iterdir()) == ['inituser.applied']
    assert changed == [1, 0], changed
