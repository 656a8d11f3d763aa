"""The data modules give what they write to the service user: owner, group and modes like
ansible.builtin.file's (0600/0700 for the user alone, 0640/0750 with a group)."""
from __future__ import annotations

import os
import pwd
import grp
import stat

import pytest

from support.modules import run_module

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason='giving files to another account needs root'),
]

# Accounts every Debian system has; the tests create none.
USER, GROUP = 'daemon', 'daemon'


def attributes(root):
    """{relative path: (owner, group, mode)} of ``root`` and everything below it."""
    found = {}
    for folder, dirs, names in os.walk(root):
        for name in ['.'] + dirs + names:
            path = os.path.normpath(os.path.join(folder, name))
            st = os.lstat(path)
            found[os.path.relpath(path, root)] = (pwd.getpwuid(st.st_uid).pw_name,
                                                  grp.getgrgid(st.st_gid).gr_name,
                                                  stat.S_IMODE(st.st_mode))
    return found


def kinds(found, root):
    """The set of (owner, group, mode) per kind: folders, blob files, other files."""
    out = {'dir': set(), 'blob': set(), 'file': set()}
    for rel, value in found.items():
        path = os.path.join(root, rel)
        kind = 'dir' if os.path.isdir(path) else 'blob' if rel.endswith('.blob') else 'file'
        out[kind].add(value)
    return out


def test_snapshot_restore_and_pack_give_the_data_to_the_service_user(storage_factory,
                                                                     tmp_path):
    data, blobs = storage_factory('source', count=12, blobs_every=3, garbage=True)
    owned = {'owner': USER, 'group': GROUP}
    snapshot = tmp_path / 'snapshots' / 'incoming'
    taken = run_module('zodb_snapshot', dict(owned, path=data, blob_dir=blobs,
                                             dest=str(snapshot)))
    assert taken['rc'] == 0, taken
    assert kinds(attributes(snapshot), snapshot) == {
        'dir': {(USER, GROUP, 0o750)}, 'blob': {(USER, GROUP, 0o440)},
        'file': {(USER, GROUP, 0o640)}}
    again = run_module('zodb_snapshot', dict(owned, path=data, blob_dir=blobs,
                                             dest=str(snapshot)))
    assert again['changed'] is False and again['attributes_changed'] == 0, again

    target = tmp_path / 'target'
    (target / 'filestorage').mkdir(parents=True)
    path, blob_dir = str(target / 'filestorage' / 'Data.fs'), str(target / 'blobstorage')
    args = dict(owned, snapshot=str(snapshot), path=path, blob_dir=blob_dir)
    checked = run_module('zodb_restore', args, check=True)
    assert checked['changed'] and not os.path.exists(path)
    installed = run_module('zodb_restore', args)
    assert installed['rc'] == 0, installed
    assert attributes(target / 'filestorage')['Data.fs'] == (USER, GROUP, 0o640)
    assert attributes(target / 'filestorage')['Data.fs.installed.json'] == (USER, GROUP, 0o640)
    # The lock file the install made: the service's ZEO server must open it for writing.
    assert attributes(target / 'filestorage')['Data.fs.lock'][:2] == (USER, GROUP)
    assert kinds(attributes(blob_dir), blob_dir) == {
        'dir': {(USER, GROUP, 0o750)}, 'blob': {(USER, GROUP, 0o440)}, 'file': {(USER, GROUP, 0o640)}}
    again = run_module('zodb_restore', args)
    assert again['changed'] is False, again

    # Without a group the data is the user's alone (the group stays the packer's); a mode
    # given wins.
    packed = run_module('zodb_pack', {'path': path, 'blob_dir': blob_dir, 'owner': USER})
    assert packed['rc'] == 0 and packed['bytes_freed'] > 0, packed
    assert attributes(target / 'filestorage')['Data.fs'] == (USER, 'root', 0o600)
    # (not the blob folder's tmp/ and .removed, which ZODB's pack makes for itself)
    assert {mode for rel, (_o, _g, mode) in attributes(blob_dir).items()
            if rel.split(os.sep)[0] not in ('tmp', '.removed')} <= {0o700, 0o600, 0o400}
    strict = run_module('zodb_pack', {'path': path, 'blob_dir': blob_dir, 'owner': USER,
                                      'file_mode': '0400'})
    assert strict['changed'] and strict['attributes_changed'] > 0
    assert attributes(target / 'filestorage')['Data.fs'][2] == 0o400


def test_data_is_private_by_default(storage_factory, tmp_path):
    data, blobs = storage_factory('source', count=4, blobs_every=2)
    snapshot = tmp_path / 'snap'
    taken = run_module('zodb_snapshot', {'path': data, 'blob_dir': blobs, 'dest': str(snapshot)})
    assert taken['rc'] == 0, taken
    found = kinds(attributes(snapshot), snapshot)
    assert {mode for _o, _g, mode in found['file']} == {0o600}
    assert {mode for _o, _g, mode in found['dir']} == {0o700}
    assert {mode for _o, _g, mode in found['blob']} == {0o400}


@pytest.mark.parametrize('options, message', [
    ({'owner': 'no-such-account-zopeops'},
     "The account 'no-such-account-zopeops' does not exist on this host: create it, or fix "
     "owner (zopeops_service_user)."),
    ({'group': 'no-such-group-zopeops'},
     "The group 'no-such-group-zopeops' does not exist on this host: create it, or fix group "
     "(zopeops_service_group)."),
    ({'file_mode': 'rw-r'}, "file_mode is 'rw-r'; give an octal mode"),
])
def test_a_bad_owner_group_or_mode_is_refused_before_anything_is_written(
        storage_factory, tmp_path, options, message):
    data, blobs = storage_factory('source', count=2, blobs_every=1)
    dest = tmp_path / 'snap'
    result = run_module('zodb_snapshot', dict(options, path=data, blob_dir=blobs,
                                              dest=str(dest)))
    assert result.get('failed') and message in result['msg'], result
    assert not dest.exists()
