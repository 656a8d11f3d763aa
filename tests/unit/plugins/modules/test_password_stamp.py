"""password_stamp through the real module entry point: a salted PBKDF2 stamp, kept while
the account and password stay, rewritten (with a new salt) when they change; the former
unsalted {SHA256} stamp migrates without counting as an account change."""
from __future__ import annotations

import hashlib
import json
import os

from support.modules import run_module

PASSWORD = 'Sup3r-secret-pw'
FAST = 1000   # iterations for the tests; the default is checked once below


def stamp(path, password=PASSWORD, account='admin', check=False, iterations=FAST):
    result = run_module('password_stamp', dict(path=str(path), account=account,
                                               password=password, iterations=iterations),
                        check=check)
    assert result['rc'] == 0, result
    assert PASSWORD not in json.dumps(result)
    return result


def test_first_run_writes_a_salted_stamp_and_a_second_changes_nothing(tmp_path):
    path = tmp_path / 'inituser.applied'
    first = stamp(path)
    assert (first['changed'], first['account_changed'], first['migrated']) == (True, True, False)
    text = path.read_text()
    assert oct(os.stat(path).st_mode & 0o777) == '0o600'
    assert os.stat(path).st_uid == os.geteuid()
    assert text.startswith('admin:pbkdf2-sha256$1000$') and text.endswith('\n')
    assert PASSWORD not in text
    assert hashlib.sha256(PASSWORD.encode()).hexdigest() not in text
    again = stamp(path)
    assert (again['changed'], again['account_changed']) == (False, False)
    assert path.read_text() == text                       # the salt is kept
    assert not [p for p in tmp_path.iterdir() if p.name != 'inituser.applied']


def test_the_same_password_gets_another_salt_in_another_stamp(tmp_path):
    stamp(tmp_path / 'a')
    stamp(tmp_path / 'b')
    assert (tmp_path / 'a').read_text() != (tmp_path / 'b').read_text()


def test_a_new_password_or_account_is_an_account_change(tmp_path):
    path = tmp_path / 'inituser.applied'
    stamp(path)
    before = path.read_text()
    checked = stamp(path, password='another-one', check=True)
    assert checked['changed'] and checked['account_changed']
    assert path.read_text() == before                     # check mode writes nothing
    new_password = stamp(path, password='another-one')
    assert new_password['changed'] and new_password['account_changed']
    assert path.read_text() != before
    assert not stamp(path, password='another-one')['changed']
    new_account = stamp(path, password='another-one', account='root-admin')
    assert new_account['account_changed'] and path.read_text().startswith('root-admin:')


def test_the_former_unsalted_stamp_migrates_without_an_account_change(tmp_path):
    path = tmp_path / 'inituser.applied'
    path.write_text('admin:{SHA256}%s\n' % hashlib.sha256(PASSWORD.encode()).hexdigest())
    os.chmod(path, 0o600)
    checked = stamp(path, check=True)
    assert checked['changed'] and not checked['account_changed'] and checked['migrated']
    assert '{SHA256}' in path.read_text()
    migrated = stamp(path)
    assert migrated['changed'] and not migrated['account_changed'] and migrated['migrated']
    assert path.read_text().startswith('admin:pbkdf2-sha256$')
    assert not stamp(path)['changed']
    # A former stamp of another password is an account change.
    path.write_text('admin:{SHA256}%s\n' % hashlib.sha256(b'old').hexdigest())
    assert stamp(path)['account_changed']


def test_fewer_iterations_than_asked_are_upgraded_and_garbage_is_rewritten(tmp_path):
    path = tmp_path / 'inituser.applied'
    stamp(path, iterations=500)
    more = stamp(path, iterations=FAST)
    assert more['changed'] and more['migrated'] and not more['account_changed']
    assert '$1000$' in path.read_text()
    assert not stamp(path, iterations=FAST)['changed']
    path.write_text('admin:pbkdf2-sha256$1000$!!$??\n')
    assert stamp(path)['account_changed']


def test_a_loose_mode_is_tightened_without_an_account_change(tmp_path):
    path = tmp_path / 'inituser.applied'
    stamp(path)
    os.chmod(path, 0o644)
    fixed = stamp(path)
    assert fixed['changed'] and not fixed['account_changed']
    assert oct(os.stat(path).st_mode & 0o777) == '0o600'


def test_the_default_is_a_slow_hash(tmp_path):
    path = tmp_path / 'inituser.applied'
    result = run_module('password_stamp', dict(path=str(path), account='admin',
                                               password=PASSWORD))
    assert result['rc'] == 0 and result['account_changed'], result
    assert int(path.read_text().split('$')[1]) >= 600000
