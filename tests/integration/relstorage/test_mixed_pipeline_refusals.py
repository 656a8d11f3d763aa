"""A promotion between kinds is refused before anything is locked or changed where it cannot be
consistent (docs/relstorage.md, "Between kinds"): a history-free RelStorage predecessor of a
ZEO stage. promote.yml's first play alone, on a copy of inventories/relstorage; no service
runs, nothing is written to the sandbox.
"""
from __future__ import annotations

import pytest

from support.ansible import run_playbook
from support.inventories import mixed_relstorage_inventory

pytestmark = pytest.mark.integration


def test_a_copy_between_kinds_from_a_history_free_database_is_refused(tmp_path):
    inventory = mixed_relstorage_inventory(tmp_path / 'inventory',
                                           zeo_sides=['beta', 'beta_upgrade'], history='free')
    sandbox = tmp_path / 'sandbox'
    proc = run_playbook('promote.yml', inventory, {
        'stage': 'beta', 'zopeops_sandbox': str(sandbox), 'zopeops_port_base': 25000})
    output = ' '.join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, output[-3000:]
    assert ('beta keeps its data with zeo, its predecessor dev in a history-free RelStorage '
            'database.') in output, output[-3000:]
    assert 'zopeops_relstorage_history: preserving' in output and 'Nothing was changed' in output
    assert not (sandbox / 'lb' / 'promotions').exists()


def test_a_move_to_an_unknown_kind_is_refused_before_any_lock(tmp_path):
    """promote.yml -e migrate_storage=<not a kind>: refused with the choices, before the lock
    (docs/relstorage.md, the move between kinds); no service runs. (Every side on ZEO: a
    RelStorage side's database would be asked for its account first.)"""
    inventory = mixed_relstorage_inventory(tmp_path / 'inventory',
                                           zeo_sides=['dev', 'beta', 'beta_upgrade'])
    sandbox = tmp_path / 'sandbox'
    proc = run_playbook('promote.yml', inventory, {
        'stage': 'beta', 'migrate_storage': 'postgres', 'zopeops_sandbox': str(sandbox),
        'zopeops_port_base': 25000})
    output = ' '.join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, output[-3000:]
    assert ("migrate_storage is 'postgres'; choose zeo or relstorage (the kind the stage moves "
            'to; docs/relstorage.md).') in output, output[-3000:]
    assert not (sandbox / 'lb' / 'promotions').exists()
