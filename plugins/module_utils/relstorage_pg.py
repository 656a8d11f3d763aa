# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the RelStorage modules (relstorage_copy, relstorage_backup) share about PostgreSQL:
connections whose passwords are in a temporary libpq passfile (mode 0600, removed after the
run; never on a command line, in the environment, a result or a message), RelStorage's last
transaction id read in a snapshot that pg_dump can dump, the PostgreSQL tools' paths, and
the refusals as clear messages. psycopg2 is imported where a connection is made (the module
checks first that the release's Python has it)."""
from __future__ import annotations

import contextlib
import glob
import os
import re
import subprocess
import tempfile

NAME = re.compile(r'^[a-z_][a-z0-9_]{0,62}$')

# An account's connection, as the modules' options give it.
CONN_SPEC = dict(host=dict(type='str', required=True), port=dict(type='int', default=5432),
                 name=dict(type='str', required=True), user=dict(type='str', required=True))


class PgError(Exception):
    """A clear message for the run's output (no password in it)."""


def identifier(name):
    return '"%s"' % name.replace('"', '""')


def check_names(*conns):
    for conn in conns:
        if not NAME.match(conn['name']) or not NAME.match(conn['user']):
            raise PgError('%r / %r: database and account names are lower-case letters, '
                          'digits and _.' % (conn['name'], conn['user']))


def _pgpass_line(conn, password):
    fields = [conn['host'], str(conn['port']), conn['name'], conn['user'], password]
    return ':'.join(field.replace('\\', '\\\\').replace(':', '\\:') for field in fields)


def _pgpass_fields(line):
    """The fields of a libpq passfile line (``:`` and ``\\`` escaped by a backslash)."""
    fields, current, chars = [], [], iter(line)
    for char in chars:
        if char == '\\':
            current.append(next(chars, ''))
        elif char == ':':
            fields.append(''.join(current))
            current = []
        else:
            current.append(char)
    fields.append(''.join(current))
    return fields


def pgpass_password(path, conn):
    """The password of ``conn`` in the libpq passfile ``path`` (the clients' etc/pgpass, which
    a scheduled backup reads so that its settings hold none); PgError naming the file, never
    a password, when there is none."""
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise PgError('Cannot read the passfile %s: %s.' % (path, exc.strerror)) from None
    wanted = [conn['host'], str(conn['port']), conn['name'], conn['user']]
    for line in lines:
        fields = _pgpass_fields(line)
        if len(fields) == 5 and all(f in ('*', w) for f, w in zip(fields, wanted)):
            return fields[4]
    raise PgError('The passfile %s has no line for %s on %s:%s as %s: run site.yml, which '
                  'writes it for the clients.' % (path, conn['name'], conn['host'],
                                                  conn['port'], conn['user']))


class Session:
    """Connections with the passwords in a temporary passfile (mode 0600). ``accounts``:
    (connection, password) pairs; a connection whose name is ``*`` covers every database of
    its server (the account's own, ``postgres`` for CREATE/DROP DATABASE, a scratch one)."""

    def __init__(self, accounts, timeout=30):
        self.timeout = timeout
        self.dir = tempfile.mkdtemp(prefix='zopeops-pg-')
        self.passfile = os.path.join(self.dir, 'pgpass')
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w') as handle:
            handle.write('\n'.join(_pgpass_line(conn, password)
                                   for conn, password in accounts) + '\n')

    def connect(self, conn, dbname=None):
        import psycopg2  # pylint: disable=import-outside-toplevel
        try:
            return psycopg2.connect(host=conn['host'], port=conn['port'],
                                    dbname=dbname or conn['name'], user=conn['user'],
                                    passfile=self.passfile, connect_timeout=self.timeout)
        except psycopg2.Error as exc:
            raise PgError('Cannot connect to database %s on %s:%s as %s: %s'
                          % (dbname or conn['name'], conn['host'], conn['port'], conn['user'],
                             ' '.join(str(exc).replace(self.passfile, 'the passfile')
                                      .split()))) from None

    def admin(self, conn):
        """A session on the server's ``postgres`` database in autocommit (CREATE, DROP and
        ALTER DATABASE run outside a transaction)."""
        admin = self.connect(conn, 'postgres')
        admin.autocommit = True
        return admin

    def env_update(self):
        """What the tools' environment gets: the passfile, never a password (PGPASSWORD
        is emptied, so that one set outside does not take its place)."""
        return {'PGPASSFILE': self.passfile, 'PGCONNECT_TIMEOUT': str(self.timeout),
                'PGPASSWORD': ''}

    def close(self):
        with contextlib.suppress(OSError):
            os.unlink(self.passfile)
        os.rmdir(self.dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def last_tid(cursor):
    """RelStorage's last tid in this transaction's snapshot: history-preserving databases
    log transactions in ``transaction``, history-free ones have object_state's newest tid.
    None where the database has no RelStorage schema."""
    cursor.execute("SELECT to_regclass('transaction') IS NOT NULL, "
                   "to_regclass('object_state') IS NOT NULL")
    preserving, schema = cursor.fetchone()
    if not schema:
        return None
    cursor.execute('SELECT MAX(tid) FROM %s' % ('transaction' if preserving else 'object_state'))
    value = cursor.fetchone()[0] or 0
    return '%016x' % value


def database_tid(session, database, name=None):
    """The last tid of ``database`` (or of the database ``name`` on its server), read in a
    session of its own."""
    conn = session.connect(database, name)
    try:
        with conn.cursor() as cursor:
            return last_tid(cursor)
    finally:
        conn.close()


@contextlib.contextmanager
def exported_snapshot(session, conn):
    """(snapshot, tid): a ``REPEATABLE READ`` transaction on ``conn`` exports its snapshot
    for ``pg_dump --snapshot`` and reads RelStorage's last tid in it; the snapshot lives
    until the block ends. PgError when the database is not a RelStorage one."""
    source = session.connect(conn)
    try:
        source.set_session(isolation_level='REPEATABLE READ', readonly=True)
        with source.cursor() as cursor:
            cursor.execute('SELECT pg_export_snapshot()')
            snapshot = cursor.fetchone()[0]
            tid = last_tid(cursor)
        if tid is None:
            raise PgError('The database %s on %s:%s has no RelStorage schema: it is not a '
                          'RelStorage database (or it was never opened by its clients).'
                          % (conn['name'], conn['host'], conn['port']))
        yield snapshot, tid
    finally:
        source.close()


def dump_command(bin_path, conn, snapshot=None, compress=None):
    """``pg_dump -Fc`` of ``conn`` to stdout, without a password prompt (-w)."""
    return ([bin_path, '-Fc'] + (['-Z%d' % compress] if compress is not None else [])
            + ['--no-owner', '--no-privileges']
            + (['--snapshot=' + snapshot] if snapshot else [])
            + ['-h', conn['host'], '-p', str(conn['port']), '-U', conn['user'],
               '-d', conn['name'], '-w'])


def restore_command(bin_path, conn, dbname):
    """``pg_restore`` from stdin into the database ``dbname`` on ``conn``'s server."""
    return [bin_path, '--no-owner', '--no-privileges', '--exit-on-error',
            '-h', conn['host'], '-p', str(conn['port']), '-U', conn['user'], '-d', dbname, '-w']


def restore_checked(session, admin, conn, dbname, tid, fill, refused, hint):
    """Make the database ``dbname`` afresh on ``conn``'s server, fill it by ``fill(dbname)``
    (a pg_restore, which returns (exit code, its output)) and check that its last transaction
    is ``tid``. On any failure, a last transaction other than ``tid`` included, the database
    is dropped before the PgError (``refused``: what was refused; ``hint``: what to do) goes
    on: a refused restore leaves nothing behind. ``admin``: a session of Session.admin."""
    with admin.cursor() as cursor:
        cursor.execute('DROP DATABASE IF EXISTS %s' % identifier(dbname))
        cursor.execute('CREATE DATABASE %s' % identifier(dbname))
    try:
        code, output = fill(dbname)
        if code:
            raise PgError('%s (exit %d): %s; %s.'
                          % (refused, code, ' '.join(output.split())[-1500:], hint))
        restored = database_tid(session, conn, dbname)
        if restored != tid:
            raise PgError('%s: the restored database holds %s as its last transaction, not %s; '
                          '%s.' % (refused, restored, tid, hint))
    except BaseException:
        with admin.cursor() as cursor:
            cursor.execute('DROP DATABASE IF EXISTS %s' % identifier(dbname))
        raise
    return restored


def restore_dump(session, admin, conn, dbname, path, tid, pg_bin_dir, refused):
    """restore_checked of the ``pg_dump -Fc`` archive ``path`` (a backup whose report names
    ``tid``) into ``dbname``: what a restore (relstorage_copy) and the drill (pg_backup) do."""
    def fill(name):
        with open(path, 'rb') as dump:
            proc = subprocess.run(restore_command(tool(pg_bin_dir, 'pg_restore'), conn, name),
                                  stdin=dump, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, **session.env_update()), check=False)
        return proc.returncode, proc.stdout.decode(errors='replace')
    return restore_checked(session, admin, conn, dbname, tid, fill, refused,
                           'that dump does not restore as its report describes it: restore '
                           'another one (backup=<stamp>) or make a new backup')


def tool(pg_bin_dir, name):
    """A PostgreSQL tool: in ``pg_bin_dir``, else the newest /usr/lib/postgresql/<v>/bin,
    else the PATH."""
    if pg_bin_dir:
        return os.path.join(pg_bin_dir, name)
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/' + name),
                   key=lambda path: int(path.split('/')[4]) if path.split('/')[4].isdigit() else 0)
    return found[-1] if found else name


def fail_message(exc, conn):
    """The message of a failure, or None where ``exc`` is not PostgreSQL's (to re-raise)."""
    if isinstance(exc, PgError):
        return str(exc)
    if type(exc).__module__.split('.', maxsplit=1)[0] != 'psycopg2':
        return None
    return 'PostgreSQL refused on %s:%s (%s): %s' % (
        conn['host'], conn['port'], conn['name'], ' '.join(str(exc).split()))


def psycopg2_missing(executable):
    """The message for a Python without psycopg2, or None."""
    try:
        import psycopg2  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
    except ImportError:
        return ('psycopg2 is not importable by %s: run this module with a RelStorage '
                'release\'s Python (ansible_python_interpreter: '
                '<instance>/current/venv/bin/python).' % executable)
    return None
