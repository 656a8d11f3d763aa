#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: relstorage_backup
short_description: Back up a RelStorage stage's PostgreSQL database with pg_dump, or run the restore drill
version_added: 0.3.0
description:
  - B(Backup) (the default). A consistent C(pg_dump -Fc) of the side's database (RelStorage on
    PostgreSQL) into O(repository), as C(<stamp>.dump) (C(yyyy-mm-dd-hh-mm-ss), UTC, the
    stamps of M(zopeops.stages.zodb_backup)). A C(REPEATABLE READ) transaction exports its
    snapshot and reads RelStorage's last transaction id in it, and C(pg_dump --snapshot) dumps
    that snapshot, so the report's last tid is exactly the dump's while the clients keep
    writing. Every backup is full (PostgreSQL's dump has no increments). Nothing is made when
    the database's last transaction is the last backup's (C(changed) is false and
    C(checked_at) in C(latest.json) is set).
  - B(Blobs.) The collection's RelStorage clients keep blobs in the database
    (C(shared-blob-dir false)), so the dump holds them. With O(blob_dir) (a C(shared-blob-dir true)
    setup) the blob folder is copied to C(blobs/<stamp>) right after the dump, hard-linked
    where possible, as M(zopeops.stages.zodb_backup) does.
  - B(Report.) Each backup writes C(reports/<stamp>.json) and C(latest.json) in the shape of
    M(zopeops.stages.zodb_backup)'s (kind C(full), files, size, duration, last tid and its
    time), which C(playbooks/status.yml) reads.
  - B(Retention.) After a backup only the newest O(keep) dumps are kept, with their reports
    and blob copies.
  - B(Restore drill) (O(verify=true)). Restores the latest dump (or the one named by
    O(backup)) with C(pg_restore --exit-on-error) into a scratch database C(<name>_drill)
    made by the side's account on the same server, checks that its last transaction id is
    exactly the one the backup's report records, and drops the scratch database. Touches no
    stage. A damaged dump is refused, naming the file. Writes C(reports/drill-latest.json).
  - The drill needs C(CREATEDB) for the account (the C(postgresql) role grants it to each
    stage's account).
  - C(playbooks/backup.yml) runs this module for a RelStorage stage, on the stage's first
    client host, under the stage's lock.
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.relstorage
attributes:
  check_mode:
    support: full
    details: Reads the database's last transaction id and the repository; says whether a
      backup would be made and which old files the retention would remove. The drill says
      which dump it would restore. Nothing is written.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  repository:
    description: The stage's backup folder (created if missing, mode 0700). Holds only what this module writes.
    type: path
    required: true
  keep:
    description: How many dumps to keep, with their reports and blob copies.
    type: int
    default: 7
  blob_dir:
    description:
      - The shared blob folder, where the clients do not keep blobs in the database
        (C(shared-blob-dir true)). Leave unset for the collection's clients.
    type: path
  compress:
    description:
      - C(pg_dump)'s compression level (C(-Z)) of the dump, 0 (none) to 9. Unset, C(pg_dump)'s
        default (zlib at its default level).
    type: int
  verify:
    description: Run the restore drill instead of a backup (see the description).
    type: bool
    default: false
  backup:
    description: With O(verify), the stamp of the dump to restore instead of the latest.
    type: str
seealso:
  - module: zopeops.stages.zodb_backup
  - module: zopeops.stages.relstorage_copy
'''

EXAMPLES = r'''
- name: Back up prod's database (a RelStorage stage).
  zopeops.stages.relstorage_backup:
    database: {host: 127.0.0.1, port: 5432, name: zopeops_prod, user: zopeops_prod}
    password: "{{ zopeops_postgresql_password }}"
    repository: "{{ zopeops_root }}/backups/prod"
    keep: 7
  vars:
    ansible_python_interpreter: "{{ zopeops_app_python }}"

- name: The restore drill of the latest dump.
  zopeops.stages.relstorage_backup:
    database: {host: 127.0.0.1, port: 5432, name: zopeops_prod, user: zopeops_prod}
    password: "{{ zopeops_postgresql_password }}"
    repository: "{{ zopeops_root }}/backups/prod"
    verify: true
'''

RETURN = r'''
kind:
  description: C(full) (a dump was made), C(unchanged) (nothing committed since the last one),
    or C(drill).
  type: str
  returned: always
report:
  description: The backup's report (C(latest.json)), or the drill's (C(reports/drill-latest.json));
    null in check mode.
  type: dict
  returned: always
  sample: {stamp: 2026-12-07-15-40-02, kind: full, files: [2026-12-07-15-40-02.dump],
           size: 1048576, last_tid: 03f1c2d4e5f60718, last_tid_time: "2026-12-07T15:40:01Z",
           duration: 1.2, ok: true}
removed:
  description: The files of old backups the retention removed (would remove, in check mode).
  type: list
  elements: str
  returned: always
repository:
  description: The repository.
  type: str
  returned: always
verified:
  description: With O(verify), whether the drill restored the dump and found its last tid.
  type: bool
  returned: always
msg:
  description: What happened.
  type: str
  returned: always
'''

import json
import os
import re
import subprocess
import sys
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_backup as zb
from ansible_collections.zopeops.stages.plugins.module_utils.files import atomic_write, read_json
from ansible_collections.zopeops.stages.plugins.module_utils.relstorage_pg import (
    CONN_SPEC, PgError, Session, check_names, database_tid, dump_command, exported_snapshot,
    fail_message, identifier, psycopg2_missing, restore_command, tool)

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
    if params['blob_dir'] and not os.path.isdir(params['blob_dir']):
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


def dump_to_restore(repository, stamp=None):
    """(stamp, name, its report) of the dump to restore: the latest, or ``stamp``'s."""
    found = dumps(repository)
    if not found:
        raise PgError('There is no dump in %s: make a backup first (backup.yml -e stage=...).'
                      % repository)
    if stamp:
        found = [entry for entry in found if entry[0] == stamp]
        if not found:
            raise PgError('There is no dump %s.dump in %s (the dumps: %s).' % (
                stamp, repository, ', '.join(n for _s, n in dumps(repository))))
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
    stamp, name, backed_up = dump_to_restore(repository, params['backup'])
    path = os.path.join(repository, name)
    if check:
        return {'changed': False, 'kind': 'drill', 'report': None, 'removed': [],
                'verified': False,
                'msg': 'Would restore %s into a scratch database %s%s and check its last tid '
                       '(%s).' % (path, database['name'], DRILL, backed_up['last_tid'])}
    scratch = database['name'][:63 - len(DRILL)] + DRILL
    with admin.cursor() as cursor:
        cursor.execute('DROP DATABASE IF EXISTS %s' % identifier(scratch))
        cursor.execute('CREATE DATABASE %s' % identifier(scratch))
    try:
        with open(path, 'rb') as dump:
            proc = subprocess.run(
                restore_command(tool(params['pg_bin_dir'], 'pg_restore'), database, scratch),
                stdin=dump, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=dict(os.environ, **session.env_update()), check=False)
        if proc.returncode:
            raise PgError('The restore drill refused the backup %s: pg_restore failed (exit '
                          '%d): %s. That dump cannot be restored; make a new backup.' % (
                              path, proc.returncode,
                              ' '.join(proc.stdout.decode(errors='replace').split())[-1000:]))
        tid = database_tid(session, database, scratch)
        if tid != backed_up['last_tid']:
            raise PgError('The restore drill refused the backup %s: the restored database\'s '
                          'last transaction is %s, its report says %s.'
                          % (path, tid, backed_up['last_tid']))
    finally:
        with admin.cursor() as cursor:
            cursor.execute('DROP DATABASE IF EXISTS %s' % identifier(scratch))
    report = {'stamp': stamp, 'ok': True, 'files': [name], 'storage': 'relstorage',
              'restored_into': scratch, 'last_tid': tid, 'last_tid_time': zb.tid_time(tid),
              'started_at': started_at, 'finished_at': zb.now_iso(),
              'duration': round(time.monotonic() - started, 3)}
    atomic_write(os.path.join(repository, 'reports', 'drill-latest.json'),
                 json.dumps(report, indent=2, sort_keys=True) + '\n', mode=0o600)
    return {'changed': False, 'kind': 'drill', 'report': report, 'removed': [], 'verified': True,
            'msg': 'The restore drill restored %s into a scratch database: its last '
                   'transaction is %s, as backed up.' % (name, tid)}


def run(module):
    params = module.params
    database = params['database']
    check_names(database)
    if params['compress'] is not None and not 0 <= params['compress'] <= 9:
        raise PgError('compress is %s: give a level from 0 (none) to 9.' % params['compress'])
    if not module.check_mode and not params['verify']:
        os.makedirs(params['repository'], mode=0o700, exist_ok=True)
    zb.repository_umask(params['repository'])
    with Session([(dict(database, name='*'), params['password'])],
                 params['timeout']) as session:
        if not params['verify']:
            return backup(params, session, module.check_mode)
        admin = session.admin(database)
        try:
            return drill(params, session, admin, module.check_mode)
        finally:
            admin.close()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            database=dict(type='dict', required=True, options=CONN_SPEC),
            password=dict(type='str', required=True, no_log=True),
            repository=dict(type='path', required=True),
            keep=dict(type='int', default=7),
            blob_dir=dict(type='path'),
            compress=dict(type='int'),
            verify=dict(type='bool', default=False),
            backup=dict(type='str'),
            pg_bin_dir=dict(type='path'),
            timeout=dict(type='int', default=30),
        ),
        supports_check_mode=True,
    )
    repository = module.params['repository']
    missing = psycopg2_missing(sys.executable)
    if missing:
        module.fail_json(msg=missing, repository=repository)
    try:
        result = run(module)
    except OSError as exc:
        module.fail_json(msg='The backup into %s failed: %s. The database was only read.'
                         % (repository, exc), repository=repository)
    except Exception as exc:  # PgError, psycopg2.Error
        message = fail_message(exc, module.params['database'])
        if message is None:
            raise
        module.fail_json(msg=message, repository=repository)
    result.setdefault('verified', False)
    module.exit_json(repository=repository, **result)


if __name__ == '__main__':
    main()
