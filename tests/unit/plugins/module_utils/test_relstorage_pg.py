"""The password a scheduled backup of a RelStorage stage reads from the clients' libpq
passfile (etc/pgpass): libpq's escapes, the line of its connection, and a refusal that names
the file and never a password. The restore checked by its last tid (the drill's, a restore's
and a copy's): kept when it holds the tid, dropped when not or when pg_restore failed."""
from __future__ import annotations

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils import relstorage_pg
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


class FakeServer:
    """The databases of a server, as the admin session's cursor and database_tid see them."""

    def __init__(self, tid):
        self.databases, self.tid = set(), tid

    def cursor(self):
        server = self

        class Cursor:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def execute(self, statement):
                verb, name = statement.split(' ')[0], statement.split('"')[1]
                if verb == 'CREATE':
                    server.databases.add(name)
                else:
                    server.databases.discard(name)
        return Cursor()


@pytest.fixture
def server(monkeypatch):
    fake = FakeServer('03f1c2d4e5f60718')
    monkeypatch.setattr(relstorage_pg, 'database_tid', lambda _s, _c, name: (
        fake.tid if name in fake.databases else None))
    return fake


def test_a_restore_that_holds_the_tid_keeps_its_database(server):
    tid = relstorage_pg.restore_checked(None, server, CONN, 'scratch', server.tid,
                                        lambda _name: (0, ''), 'Refused', 'do this')
    assert tid == server.tid and server.databases == {'scratch'}


@pytest.mark.parametrize('fill, tid, says', [
    (lambda _name: (0, ''), '0000000000000001',
     'Refused: the restored database holds 03f1c2d4e5f60718 as its last transaction, not '
     '0000000000000001; do this.'),
    (lambda _name: (1, 'pg_restore: error:\n  damaged'), '03f1c2d4e5f60718',
     'Refused (exit 1): pg_restore: error: damaged; do this.'),
])
def test_a_refused_restore_drops_its_database(server, fill, tid, says):
    server.databases.add('scratch')  # one an interrupted run left is made afresh
    with pytest.raises(PgError) as raised:
        relstorage_pg.restore_checked(None, server, CONN, 'scratch', tid, fill, 'Refused',
                                      'do this')
    assert str(raised.value) == says
    assert server.databases == set()
