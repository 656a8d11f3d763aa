"""The password a scheduled backup of a RelStorage stage reads from the clients' libpq
passfile (etc/pgpass): libpq's escapes, the line of its connection, and a refusal that names
the file and never a password."""
from __future__ import annotations

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils.relstorage_pg import (
    PgError, _pgpass_line, pgpass_password)

CONN = {'host': '127.0.0.1', 'port': 5432, 'name': 'zopeops_beta', 'user': 'zopeops_beta'}


def test_the_line_of_the_connection_with_libpq_escapes(tmp_path):
    passfile = tmp_path / 'pgpass'
    secret = 'a:b\\c d'
    passfile.write_text('\n'.join([
        _pgpass_line(dict(CONN, name='zopeops_dev'), 'other'),
        _pgpass_line(CONN, secret),
        '*:*:*:*:fallback']) + '\n')
    assert pgpass_password(passfile, CONN) == secret
    assert pgpass_password(passfile, dict(CONN, user='someone')) == 'fallback'


def test_no_line_names_the_file_and_what_to_do(tmp_path):
    passfile = tmp_path / 'pgpass'
    passfile.write_text(_pgpass_line(dict(CONN, port=5433), 'Secret-1') + '\n')
    with pytest.raises(PgError) as raised:
        pgpass_password(passfile, CONN)
    assert str(passfile) in str(raised.value) and 'site.yml' in str(raised.value)
    assert 'Secret-1' not in str(raised.value)
    with pytest.raises(PgError, match='Cannot read the passfile'):
        pgpass_password(tmp_path / 'missing', CONN)
