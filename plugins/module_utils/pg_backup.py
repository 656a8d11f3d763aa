# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backups of a RelStorage stage's PostgreSQL database: a consistent ``pg_dump -Fc``
(``backup``), the restore drill (``drill``) and the dump a restore installs
(``dump_to_restore``). One code path for a backup now and a scheduled one, as for ZEO
(zodb_backup.py): the module ``relstorage_backup`` calls ``run``; ``roles/backup`` copies this
file (with relstorage_pg.py, zodb_backup.py and files.py) onto the stage's first client host,
where ``zodb_backup.scheduled`` calls ``scheduled`` for a config of ``storage: relstorage``.
The scheduled run reads the account's password from the clients' own ``etc/pgpass``
(``relstorage_pg.pgpass_password``): its settings hold no password.

Only the standard library at import time (psycopg2 is imported where a connection is made)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

try:
    from ansible_collections.zopeops.stages.plugins.module_utils import zodb_backup as zb
    from ansible_collections.zopeops.stages.plugins.module_utils.files import atomic_write, read_json
    from ansible_collections.zopeops.stages.plugins.module_utils.relstorage_pg import (
        PgError, Session, check_names, dump_command, exported_snapshot, identifier,
        pgpass_password, restore_dump, tool)
except ImportError:  # run as a script (roles/backup): the files are installed beside this one
    import zodb_backup as zb  # type: ignore
    from files import atomic_write, read_json  # type: ignore
    from relstorage_pg import (  # type: ignore
        PgError, Session, check_names, dump_command, exported_snapshot, identifier,
        pgpass_password, restore_dump, tool)

DUMP = re.compile(r'^(\d{4}(?:-\d\d){5})\.dump$')
DRILL = '_drill'


def dumps(repository):
    """The dumps in ``repository``, oldest first: [(stamp, name)]."""
    try:
        names = sorted(os.listdir(repository))
    except FileNotFoundError:
        return []
    return [(m.group(1), name) for name in names for m in [DUMP.match(name)] if m]


def retention(repository, keep, check=False):
    """Remove the dumps older than the newest ``keep``, with their reports and blob copies."""
    found = dumps(repository)
    return zb.remove_backups(repository, [(stamp, [name]) for stamp, name
                                          in found[:max(0, len(found) - keep)]], check)


def _described(database):
    return '%s on %s:%s' % (database['name'], database['host'], database['port'])


def backup(params, session, check):
    started, started_at = time.monotonic(), zb.now_iso()
    database, repository = params['database'], params['repository']
    if params['keep'] < 1:
        raise PgError('keep is %s: keep at least 1 dump.' % params['keep'])
    if params.get('blob_dir') and not os.path.isdir(params['blob_dir']):
        raise PgError('The blob folder %s does not exist: name the shared blob folder, or none '
                      'where the clients keep blobs in the database.' % params['blob_dir'])
    latest = read_json(os.path.join(repository, 'latest.json')) or {}
    with exported_snapshot(session, database) as (snapshot, tid):
        if latest.get('last_tid') == tid and latest.get('files') and os.path.exists(
                os.path.join(repository, latest['files'][0])):
            if not check:
                latest['checked_at'] = zb.now_iso()
                atomic_write(os.path.join(repository, 'latest.json'),
                             json.dumps(latest, indent=2, sort_keys=True) + '\n', mode=0o600)
            return {'changed': False, 'kind': 'unchanged', 'report': latest, 'removed': [],
                    'msg': 'No backup needed: %s has no transaction since the last backup '
                           '(%s, last tid %s).' % (_described(database), latest['files'][0], tid)}
        if check:
            return {'changed': True, 'kind': 'full', 'report': None,
                    'removed': retention(repository, params['keep'] - 1, check=True),
                    'msg': 'Would dump %s (last tid %s) into %s.'
                           % (_described(database), tid, repository)}
        stamp = time.strftime('%Y-%m-%d-%H-%M-%S', time.gmtime())
        while os.path.exists(os.path.join(repository, stamp + '.dump')):
            time.sleep(0.2)  # one dump per second: the stamps name files by the second
            stamp = time.strftime('%Y-%m-%d-%H-%M-%S', time.gmtime())
        name = stamp + '.dump'
        part = os.path.join(repository, name + '.part')
        with open(part, 'wb') as out:
            proc = subprocess.run(
                dump_command(tool(params['pg_bin_dir'], 'pg_dump'), database, snapshot,
                             params['compress']),
                stdout=out, stderr=subprocess.PIPE, env=dict(os.environ, **session.env_update()),
                check=False)
        if proc.returncode:
            os.unlink(part)
            raise PgError('pg_dump of %s failed (exit %d), no backup was made: %s' % (
                _described(database), proc.returncode,
                ' '.join(proc.stderr.decode(errors='replace').split())[-1500:]))
        size = pg_size(session, database)
    os.rename(part, os.path.join(repository, name))
    blob_files = None
    if params['blob_dir']:
        blob_files = zb.link_tree(params['blob_dir'], os.path.join(repository, 'blobs', stamp))
    report = {
        'stamp': stamp, 'kind': 'full', 'reason': 'a pg_dump is always full', 'ok': True,
        'storage': 'relstorage', 'source': _described(database), 'source_size': size,
        'blob_dir': params['blob_dir'], 'files': [name],
        'size': os.path.getsize(os.path.join(repository, name)), 'full': name, 'chain': [name],
        'blob_backup': os.path.join('blobs', stamp) if blob_files is not None else None,
        'blob_files': blob_files, 'last_tid': tid, 'last_tid_time': zb.tid_time(tid),
        'started_at': started_at, 'finished_at': zb.now_iso(),
        'duration': round(time.monotonic() - started, 3),
    }
    report['checked_at'] = report['finished_at']
    zb.write_report(repository, report)
    removed = retention(repository, params['keep'])
    return {'changed': True, 'kind': 'full', 'report': report, 'removed': removed,
            'msg': 'Dumped %s into %s (%d bytes, last tid %s)%s.' % (
                _described(database), name, report['size'], tid,
                '; removed %d files of old backups' % len(removed) if removed else '')}


def pg_size(session, database):
    conn = session.connect(database)
    try:
        with conn.cursor() as cursor:
            cursor.execute('SELECT pg_database_size(current_database())')
            return cursor.fetchone()[0]
    finally:
        conn.close()


def dump_to_restore(repository, stamp=None, backup_at=None):
    """(stamp, name, its report) of the dump to restore: the latest, ``stamp``'s, or the last
    one made at or before ``backup_at`` (a date and time, UTC, as zodb_backup reads it)."""
    found = dumps(repository)
    if not found:
        raise PgError('There is no dump in %s: make a backup first (backup.yml -e stage=...).'
                      % repository)
    if stamp:
        found = [entry for entry in found if entry[0] == stamp]
        if not found:
            raise PgError('There is no dump %s.dump in %s (the dumps: %s).' % (
                stamp, repository, ', '.join(n for _s, n in dumps(repository))))
    if backup_at:
        try:
            when = zb.repozo_date(backup_at)
        except zb.BackupError as exc:
            raise PgError(str(exc)) from None
        first = found[0][0]
        found = [entry for entry in found if entry[0] <= when]
        if not found:
            raise PgError('No dump in %s at or before %s to restore: the first one is of %s '
                          '(UTC).' % (repository, backup_at, first))
    stamp, name = found[-1]
    report = read_json(os.path.join(repository, 'reports', stamp + '.json')) or {}
    if not report.get('last_tid'):
        raise PgError('%s has no report (reports/%s.json) naming its last transaction: it '
                      'cannot be verified. Make a new backup.'
                      % (os.path.join(repository, name), stamp))
    return stamp, name, report


def drill(params, session, admin, check):
    started, started_at = time.monotonic(), zb.now_iso()
    database, repository = params['database'], params['repository']
    stamp, name, backed_up = dump_to_restore(repository, params['backup'], params['backup_at'])
    path = os.path.join(repository, name)
    # What a restore installs (playbooks/restore.yml), in zodb_backup's shape.
    restored = {'files': [name], 'stamp': stamp, 'last_tid': backed_up['last_tid'],
                'last_tid_time': zb.tid_time(backed_up['last_tid']), 'blob_dir': None,
                'path': path}
    if check:
        return {'changed': False, 'kind': 'drill', 'report': None, 'removed': [],
                'verified': False, 'restored': restored,
                'msg': 'Would restore %s into a scratch database %s%s and check its last tid '
                       '(%s).' % (path, database['name'], DRILL, backed_up['last_tid'])}
    scratch = database['name'][:63 - len(DRILL)] + DRILL
    tid = restore_dump(session, admin, database, scratch, path, backed_up['last_tid'],
                       params['pg_bin_dir'], 'The restore drill refused the backup %s' % path)
    with admin.cursor() as cursor:
        cursor.execute('DROP DATABASE %s' % identifier(scratch))
    report = {'stamp': stamp, 'ok': True, 'files': [name], 'storage': 'relstorage',
              'restored_into': scratch, 'last_tid': tid, 'last_tid_time': zb.tid_time(tid),
              'started_at': started_at, 'finished_at': zb.now_iso(),
              'duration': round(time.monotonic() - started, 3)}
    atomic_write(os.path.join(repository, 'reports', 'drill-latest.json'),
                 json.dumps(report, indent=2, sort_keys=True) + '\n', mode=0o600)
    return {'changed': False, 'kind': 'drill', 'report': report, 'removed': [], 'verified': True,
            'restored': restored,
            'msg': 'The restore drill restored %s into a scratch database: its last '
                   'transaction is %s, as backed up.' % (name, tid)}


def run(params, check=False):
    """A backup, or with ``verify`` the drill (the module's options in ``params``)."""
    database = params['database']
    check_names(database)
    if params.get('compress') is not None and not 0 <= params['compress'] <= 9:
        raise PgError('compress is %s: give a level from 0 (none) to 9.' % params['compress'])
    if not check and not params.get('verify'):
        os.makedirs(params['repository'], mode=0o700, exist_ok=True)
    zb.repository_umask(params['repository'])
    with Session([(dict(database, name='*'), params['password'])],
                 params.get('timeout') or 30) as session:
        if not params.get('verify'):
            return backup(params, session, check)
        admin = session.admin(database)
        try:
            return drill(params, session, admin, check)
        finally:
            admin.close()


def scheduled_params(config, verify=False):
    """The options of a scheduled run from its settings (roles/backup): the password from
    the clients' passfile named by ``pgpass``."""
    database = dict(config['database'])
    return {'database': database, 'password': pgpass_password(config['pgpass'], database),
            'repository': config['repository'], 'keep': int(config.get('keep', 7)),
            'blob_dir': config.get('blob_dir'), 'compress': config.get('compress'),
            'verify': verify, 'backup': None, 'backup_at': None,
            'pg_bin_dir': config.get('pg_bin_dir'), 'timeout': 30}
