"""instance_dirs: many folders in one call, with mode, check mode, diff and idempotency."""
from __future__ import annotations

import os
import stat

from support.modules import run_module


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_creates_sets_modes_and_is_idempotent(tmp_path):
    base = tmp_path / 'test'
    dirs = [{'path': str(base), 'mode': '0755'},
            {'path': str(base / 'var' / 'filestorage'), 'mode': '0750'},
            {'path': str(base / 'var' / 'blobstorage')},
            str(base / 'log')]
    first = run_module('instance_dirs', {'directories': dirs}, diff=True)
    assert first['rc'] == 0 and first['changed'] is True, first
    assert [d['created'] for d in first['directories']] == [True, True, True, True]
    assert mode_of(base) == 0o755 and mode_of(base / 'var' / 'filestorage') == 0o750
    assert first['diff'][0]['before']['state'] == 'absent'
    again = run_module('instance_dirs', {'directories': dirs})
    assert again['changed'] is False and not any(d['changed'] for d in again['directories'])


def test_check_mode_and_diff_show_a_mode_drift_without_fixing_it(tmp_path):
    (tmp_path / 'etc').mkdir()
    os.chmod(tmp_path / 'etc', 0o700)
    args = {'directories': [{'path': str(tmp_path / 'etc'), 'mode': '0755'},
                            {'path': str(tmp_path / 'new')}]}
    check = run_module('instance_dirs', args, check=True, diff=True)
    assert check['changed'] is True
    assert [d['changed'] for d in check['directories']] == [True, True]
    assert check['diff'][0]['before']['mode'] == '0700'
    assert check['diff'][0]['after']['mode'] == '0755'
    assert mode_of(tmp_path / 'etc') == 0o700 and not (tmp_path / 'new').exists()
    fixed = run_module('instance_dirs', args)
    assert fixed['changed'] and mode_of(tmp_path / 'etc') == 0o755


def test_a_file_in_the_way_and_bad_entries_are_named(tmp_path):
    (tmp_path / 'log').write_text('not a folder')
    result = run_module('instance_dirs', {'directories': [str(tmp_path / 'log')]})
    assert result['failed'] and 'is not a folder' in result['msg'] and 'log' in result['msg']
    result = run_module('instance_dirs', {'directories': [{'mode': '0755'},
                                                          {'path': '/x', 'size': 1}]})
    assert 'directories[0] must be a path' in result['msg']
    assert 'directories[1] (/x) has unknown keys size' in result['msg']
