"""roles/promote/tasks/side_files.yml in a move between kinds: a side moved to ZEO keeps no
RelStorage configuration (etc/relstorage.conf, the passfile etc/pgpass), and a side moved to
RelStorage keeps its own. Real ansible-playbook on a local host; the side has no clients here,
so only the removal (and, to RelStorage, the programs' forgetting) runs."""
from __future__ import annotations

import json

import pytest

from support.ansible import recap, run_playbook
from support.paths import VENV_BIN

PLAYBOOK = '''
- name: A side's files written for the kind it moves to.
  hosts: side
  gather_facts: false
  tasks:
    - name: Write them.
      ansible.builtin.include_role: {name: zopeops.stages.promote, tasks_from: side_files.yml}
'''


@pytest.mark.parametrize('kind', ['zeo', 'relstorage'])
def test_a_side_moved_to_zeo_keeps_no_relstorage_configuration(tmp_path, kind):
    instance = tmp_path / 'beta'
    (instance / 'etc').mkdir(parents=True)
    for name in ('relstorage.conf', 'pgpass', 'zope-client1.conf'):
        (instance / 'etc' / name).write_text(name)
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(json.dumps({'all': {'children': {'side': {'hosts': {'app1': {
        'ansible_connection': 'local', 'ansible_python_interpreter': str(VENV_BIN / 'python'),
        'zopeops_instance': 'beta', 'zopeops_instance_dir': str(instance),
        'zopeops_clients': [], 'zopeops_process_manager': 'none',
        'zopeops_side_model': {'storage': kind, 'zeo': {'host': 'zeo1'}}}}}}}}))
    playbook = tmp_path / 'side.yml'
    playbook.write_text(PLAYBOOK)
    proc = run_playbook(str(playbook), inventory, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    left = sorted(path.name for path in (instance / 'etc').iterdir())
    if kind == 'zeo':
        assert left == ['zope-client1.conf']
        assert recap(proc.stdout)['app1']['changed'] == 1, proc.stdout[-4000:]
        again = run_playbook(str(playbook), inventory, timeout=120)
        assert recap(again.stdout)['app1']['changed'] == 0, again.stdout[-4000:]
    else:
        assert left == ['pgpass', 'relstorage.conf', 'zope-client1.conf']
