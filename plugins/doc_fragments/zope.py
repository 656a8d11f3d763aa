# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Option docs shared by the zope_object_* modules."""
from __future__ import annotations


class ModuleDocFragment:

    # How the module reaches the site: Zope started against a stage's ZEO server.
    DOCUMENTATION = r'''
options:
  zope_conf:
    description:
      - A Zope configuration to start Zope with, usually the instance's
        C(etc/zope-console.conf) (the same database as its clients, without a persistent
        ZEO cache, so it works while the clients run). Its C(<environment>) and
        C(<product-config>) sections then apply, as they do for the site.
      - Exactly one of O(zope_conf) and O(zeo_address) is needed.
    type: path
  zeo_address:
    description:
      - Start Zope against the ZEO server at this address (C(host:port) or a unix socket) with
        a minimal generated configuration (blobs through a private cache). For a ZEO host
        that runs no Zope client and so has no C(zope-console.conf).
    type: str
  storage:
    description:
      - The storage name on the ZEO server, with O(zeo_address) (the C(<filestorage NAME>) of
        zeo.conf).
    type: str
    default: '1'
requirements:
  - "Zope 4 or newer, ZODB and ZEO, and the site's own code importable by the Python that runs
    the module: run it with the release virtualenv's interpreter on the ZEO host, for example
    C(ansible_python_interpreter: <instance>/current/venv/bin/python) on the task. The module
    starts Zope in its own process, as C(zconsole) does (products, ZCML), so that every object
    of the site can be read and written."
notes:
  - An item is the subtree's root or an object one of its folders lists (C(objectItems)); its
    path is relative to the root (C('') is the root). Persistent parts an item holds (the data
    chunks of a File, a BTree, blobs) count as part of it.
  - Items are compared by fingerprint, since their oids differ between databases (the pickled
    state with child items replaced by their ids, other persistent parts by their own
    fingerprints and blobs by the sha256 of their bytes). Item sizes are the bytes of those
    pickles plus blob bytes, close to what the storage holds.
'''
