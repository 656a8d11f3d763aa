"""replay_ends: the one place that chooses what a cutover's replays read and write."""
from __future__ import annotations

from ansible_collections.zopeops.stages.plugins.filter.promotion import replay_ends

ZEO_SIDE = {'instance': 'test_upgrade', 'zeo': {'address': '127.0.0.1', 'port': 18431}}


def test_a_zeo_stage_is_read_from_its_file_and_written_through_the_twins_server():
    ends = replay_ends({'instance': 'test'}, ZEO_SIDE, '/srv/test', '/srv/test_upgrade')
    assert ends == {'source': {'file': '/srv/test/var/filestorage/Data.fs',
                               'blob_dir': '/srv/test/var/blobstorage'},
                    'target': {'zeo_address': '127.0.0.1:18431'}}


def test_relstorage_sides_go_through_their_configuration():
    side = {'storage': 'relstorage'}
    ends = replay_ends(side, dict(ZEO_SIDE, storage='relstorage'), '/srv/a', '/srv/b')
    assert ends == {'source': {'config': '/srv/a/etc/relstorage.conf'},
                    'target': {'config': '/srv/b/etc/relstorage.conf'}}
    # a RelStorage stage's copy in a ZEO twin (or back): each end by its own kind
    mixed = replay_ends(side, ZEO_SIDE, '/srv/a', '/srv/b')
    assert mixed['source'] == {'config': '/srv/a/etc/relstorage.conf'}
    assert mixed['target'] == {'zeo_address': '127.0.0.1:18431'}
