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
