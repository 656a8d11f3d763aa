"""The kind of storage deployed.json records (app_release's storage): the inventory's for a new
instance, what an older instance's configuration files name, and never another kind than the
record's unless a move between kinds says so (site.yml keeps a stage on the kind it runs)."""
from __future__ import annotations

from ansible_collections.zopeops.stages.plugins.modules import app_release


def params(folder, storage='relstorage', change=False):
    return {'instance_dir': str(folder), 'storage': storage, 'storage_change': change}


def test_a_new_instance_records_the_inventory_kind(tmp_path):
    assert app_release.recorded_storage(params(tmp_path), {}) == 'relstorage'
    assert app_release.recorded_storage(params(tmp_path, storage=None), {}) is None


def test_an_older_record_gets_the_kind_its_configuration_runs(tmp_path):
    etc = tmp_path / 'etc'
    etc.mkdir()
    (etc / 'zope-client1.conf').write_text('<zodb_db main>\n  <zeoclient>\n  </zeoclient>\n')
    assert app_release.recorded_storage(params(tmp_path), {'revision': 'a'}) == 'zeo'
    (etc / 'zope-client1.conf').write_text('%import relstorage\n<zodb_db main>\n')
    assert app_release.recorded_storage(params(tmp_path, 'zeo'), {'revision': 'a'}) == \
        'relstorage'
    (etc / 'zope-client1.conf').unlink()
    (etc / 'zeo.conf').write_text('<zeo>\n</zeo>\n')
    assert app_release.configured_storage(str(tmp_path)) == 'zeo'


def test_a_record_keeps_its_kind_until_a_move_changes_it(tmp_path):
    record = {'revision': 'a', 'storage': 'zeo'}
    assert app_release.recorded_storage(params(tmp_path), record) == 'zeo'
    assert app_release.recorded_storage(params(tmp_path, change=True), record) == 'relstorage'
    assert app_release.recorded_storage(params(tmp_path, storage=None), record) == 'zeo'
