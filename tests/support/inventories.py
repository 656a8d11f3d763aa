"""Copies of the shipped inventories, changed for a test."""
from __future__ import annotations

import shutil

import yaml

from .paths import REPO

RELSTORAGE = REPO / 'inventories' / 'relstorage'

# The ZEO port of each side of inventories/relstorage that a test puts on ZEO (an offset from
# zopeops_port_base, beside its clients').
ZEO_PORTS = {'dev': 10, 'beta': 20, 'beta_upgrade': 25}


def mixed_relstorage_inventory(folder, zeo_sides=('dev',), history=None):
    """A copy of inventories/relstorage in which ``zeo_sides`` keep their data on ZEO (a mixed
    pipeline, docs/relstorage.md "Between kinds"): each leaves group ``relstorage`` and its
    clients' host is its ZEO host too. ``history`` sets zopeops_relstorage_history."""
    shutil.copytree(RELSTORAGE, folder)
    hosts = folder / 'hosts.yml'
    data = yaml.safe_load(hosts.read_text())
    groups = data['all']['children']
    for side in zeo_sides:
        del groups['relstorage']['children'][side]
        groups[side]['children'] = dict({'%s_zeo' % side: {'hosts': {'%s-local' % side: None}}},
                                        **groups[side]['children'])
        host = folder / 'host_vars' / ('%s-local.yml' % side)
        host.write_text(host.read_text()
                        + 'zopeops_zeo_port: "{{ zopeops_port_base | int + %d }}"\n'
                        % ZEO_PORTS[side])
    hosts.write_text(yaml.safe_dump(data, sort_keys=False))
    if history:
        group = folder / 'group_vars' / 'relstorage.yml'
        group.write_text(group.read_text().replace('zopeops_relstorage_history: preserving',
                                                   'zopeops_relstorage_history: %s' % history))
    return folder
