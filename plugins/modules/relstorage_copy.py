#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: relstorage_copy
short_description: Copy, swap and prune the PostgreSQL databases of a RelStorage side
version_added: 0.3.0
description:
  - The data steps of a promotion of a RelStorage stage (C(docs/relstorage.md)). With
    O(state=copied) the side's database becomes a consistent copy of another RelStorage
    database that keeps serving, by C(pg_dump -Fc) of the source piped into C(pg_restore) into a
    fresh database made by the side's own account, then put in place of the side's database by
    rename. The source's last transaction id at the copy is returned exactly (RV(tid)), read
    in the same snapshot as the dump (a C(REPEATABLE READ) transaction exports its
    snapshot and C(pg_dump --snapshot) dumps that one). A copy that holds another last
    transaction id is dropped and nothing is replaced.
  - With O(dump) instead of O(source) (a restore, C(playbooks/restore.yml)), the fresh database
    is filled from a C(pg_dump -Fc) archive (a backup of M(zopeops.stages.relstorage_backup)) by
    C(pg_restore --exit-on-error), must hold exactly O(tid) (the backup report's last
    transaction id) as its last one (else it is dropped and nothing is replaced), and is then
    put in place the same way.
  - The database replaced is dropped, or kept for a rollback under
    C(<database>_prev_<stamp>) (O(keep_previous)), and the kept ones beyond O(keep_previous)
    are dropped, oldest first.
  - With O(state=swapped) a kept database (O(previous)) takes the side's database's place and
    the side's database is kept as C(<database>_rolledback_<stamp>) (the rollback of a
    promotion, never a deletion).
  - With O(state=archived) the side's database is kept as C(<database>_rolledback_<stamp>) and
    the side has none until its next copy (the data a twin served during a rollback, never
    deleted).
  - With O(state=pruned) only the kept databases beyond O(keep_previous) are dropped.
  - With O(state=present) nothing changes; the database's last transaction id is returned.
  - B(The side's clients must be stopped) for C(copied) and C(swapped) (a database cannot be
    renamed while sessions use it); sessions of the side's own account left on it are ended.
  - The account needs C(CREATEDB) (the C(postgresql) role grants it to each stage's account).
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.relstorage
attributes:
  check_mode:
    support: full
    details: Reads the databases and the source's last transaction id; creates, renames and
      drops nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
notes:
  - O(state=copied) needs C(pg_dump) and C(pg_restore).
options:
  source:
    description: The database to copy (O(state=copied)), which may be serving.
    type: dict
    suboptions:
      host: {description: The server's address., type: str, required: true}
      port: {description: The server's port., type: int, default: 5432}
      name: {description: The database's name., type: str, required: true}
      user: {description: An account that may read it., type: str, required: true}
  source_password:
    description: The password of O(source.user) (defaults to O(password)).
    type: str
  dump:
    description:
      - With O(state=copied), a C(pg_dump -Fc) archive on this machine to restore instead of
        copying O(source) (the one or the other). Needs O(tid).
    type: path
  tid:
    description:
      - With O(dump), the last transaction id (16 hex digits) the restored database must hold,
        from the backup's report; otherwise nothing is replaced.
    type: str
  replaced_after:
    description:
      - With O(state=copied), count the transactions of the replaced database after this
        transaction id (16 hex digits) before it is replaced (RV(replaced_transactions)), what a
        restore drops.
    type: str
  state:
    description: What to do (see the description).
    type: str
    choices: [copied, swapped, archived, pruned, present]
    default: copied
  keep_previous:
    description:
      - How many replaced databases to keep for rollbacks (C(<database>_prev_<stamp>)); 0
        drops the replaced database.
    type: int
    default: 0
  previous:
    description: With O(state=swapped), the kept database that takes the side's place.
    type: str
  stamp:
    description: The stamp of the names made now (default the current UTC time, C(YYYYmmddHHMMSS)).
    type: str
'''

EXAMPLES = r'''
- name: The twin's database becomes a copy of the predecessor's (which keeps serving).
  zopeops.stages.relstorage_copy:
    database: {host: 127.0.0.1, port: 5432, name: zopeops_beta_upgrade, user: zopeops_beta}
    password: "{{ zopeops_postgresql_password }}"
    source: {host: 127.0.0.1, port: 5432, name: zopeops_dev, user: zopeops_dev}
    source_password: "{{ hostvars['dev-1'].zopeops_postgresql_password }}"
  vars:
    ansible_python_interpreter: "{{ zopeops_app_python }}"
  register: copy

- name: A restore - the twin's database becomes a backup's dump, checked by its last tid.
  zopeops.stages.relstorage_copy:
    database: {host: 127.0.0.1, port: 5432, name: zopeops_beta_upgrade, user: zopeops_beta}
    password: "{{ zopeops_postgresql_password }}"
    dump: /srv/zopeops/backups/beta/2026-12-07-05-00-01.dump
    tid: 03f1c2d4e5f60718

- name: A rollback puts the kept database back.
  zopeops.stages.relstorage_copy:
    database: {host: 127.0.0.1, port: 5432, name: zopeops_beta, user: zopeops_beta}
    password: "{{ zopeops_postgresql_password }}"
    state: swapped
    previous: zopeops_beta_prev_20261207120000
'''

RETURN = r'''
tid:
  description: The source's last transaction id at the copy (C(copied)), which the side's
    database holds as its last one now; the side's last transaction id otherwise.
  type: str
  returned: always
  sample: 03f1c2d4e5f60718
previous:
  description: The name the replaced database is kept under, or null (dropped, or nothing
    replaced).
  type: str
  returned: always
kept:
  description: The kept databases of the side after the run, oldest first.
  type: list
  elements: str
  returned: always
pruned:
  description: The kept databases dropped.
  type: list
  elements: str
  returned: always
replaced_transactions:
  description:
    - With O(replaced_after), the transactions of the replaced database after that transaction
      id (history-preserving - its C(transaction) rows; history-free - the distinct
      transactions of its current object states, a lower bound); null otherwise.
  type: int
  returned: always
seconds:
  description: Seconds the module spent.
  type: float
  returned: always
msg:
  description: What happened.
  type: str
  returned: always
'''

import contextlib
import os
import re
import shlex
import sys
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils.relstorage_pg import (
    CONN_SPEC, PgError, Session, check_names, database_tid, dump_command, exported_snapshot,
    fail_message, identifier, psycopg2_missing, restore_checked, restore_command, restore_dump,
    tool)

PREV = '_prev_'
ROLLEDBACK = '_rolledback_'
COPY = '_copy'
TID = re.compile(r'^[0-9a-f]{16}$')
CopyError = PgError


def databases(admin, name):
    """The side's database (or None) and its kept ones (oldest first)."""
    with admin.cursor() as cursor:
        cursor.execute('SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s',
                       (name, name.replace('_', r'\_') + r'\_prev\_%'))
        names = [row[0] for row in cursor.fetchall()]
    kept = sorted(n for n in names if n.startswith(name + PREV))
    return (name if name in names else None), kept


def _end_sessions(cursor, name):
    cursor.execute('SELECT pg_terminate_backend(pid) FROM pg_stat_activity '
                   'WHERE datname = %s AND pid <> pg_backend_pid()', (name,))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cursor.execute('SELECT count(*) FROM pg_stat_activity WHERE datname = %s', (name,))
        if not cursor.fetchone()[0]:
            return
        time.sleep(0.1)


def prune(cursor, kept, keep, result):
    """Drop the kept databases beyond ``keep``, oldest first."""
    extra = kept[:max(0, len(kept) - keep)]
    for name in extra:
        _end_sessions(cursor, name)
        cursor.execute('DROP DATABASE %s' % identifier(name))
        result['pruned'].append(name)
    return kept[len(extra):]


def _quoted(args):
    return ' '.join(shlex.quote(a) for a in args)


def transactions_after(session, database, tid):
    """The transactions of ``database`` after ``tid`` (history-free: the distinct ones of its
    current object states, a lower bound)."""
    conn = session.connect(database)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT to_regclass('transaction') IS NOT NULL, "
                           "to_regclass('object_state') IS NOT NULL")
            preserving, schema = cursor.fetchone()
            if not schema:
                return 0
            cursor.execute('SELECT count(*) FROM transaction WHERE tid > %s' if preserving else
                           'SELECT count(DISTINCT tid) FROM object_state WHERE tid > %s',
                           (int(tid, 16),))
            return cursor.fetchone()[0]
    finally:
        conn.close()


def _pipe(module, session, source, snapshot, staging):
    """pg_dump of ``source`` in ``snapshot`` piped into pg_restore into ``staging``: (exit
    code, stderr). One pipe, through bash for pipefail (no secret on it: the passwords are in
    the passfile). -Z0: no compression through the pipe (measured faster,
    bench/relstorage_copy_bench.py)."""
    bin_dir, target = module.params['pg_bin_dir'], module.params['database']
    command = 'set -o pipefail; %s | %s' % (
        _quoted(dump_command(tool(bin_dir, 'pg_dump'), source, snapshot, compress=0)),
        _quoted(restore_command(tool(bin_dir, 'pg_restore'), target, staging)))
    rc, _out, err = module.run_command(command, use_unsafe_shell=True, executable='/bin/bash',
                                       environ_update=session.env_update())
    return rc, err


@contextlib.contextmanager
def _from_dump(params):
    """(None, tid) for a copy from a dump: the tid its report gives."""
    if not os.path.isfile(params['dump']):
        raise CopyError('There is no dump %s to restore on this machine.' % params['dump'])
    yield None, params['tid']


def copy(module, session, admin, result):
    params = module.params
    target, source, dump_file = params['database'], params['source'], params['dump']
    name = target['name']
    stamp = params['stamp'] or time.strftime('%Y%m%d%H%M%S', time.gmtime())
    staging = name + COPY
    what = dump_file if dump_file else source['name']
    with (_from_dump(params) if dump_file else exported_snapshot(session, source)) \
            as (snapshot, tid):
        result['tid'] = tid
        current, kept = databases(admin, name)
        if module.check_mode:
            result['kept'] = kept
            result['msg'] = ('Would %s %s (last transaction %s) into %s%s.'
                             % ('restore' if dump_file else 'copy', what, tid, name,
                                ', keeping %s under %s%s%s' % (name, name, PREV, stamp)
                                if current and params['keep_previous'] else ''))
            result['changed'] = True
            return
        if dump_file:
            restore_dump(session, admin, target, staging, dump_file, tid, params['pg_bin_dir'],
                         'Restoring %s into %s (%s:%s) failed, nothing was replaced'
                         % (dump_file, name, target['host'], target['port']))
        else:
            restore_checked(session, admin, target, staging, tid,
                            lambda into: _pipe(module, session, source, snapshot, into),
                            'Copying %s (%s:%s) into %s (%s:%s) failed, nothing was replaced'
                            % (source['name'], source['host'], source['port'], name,
                               target['host'], target['port']), 'run again')
    if current and params['replaced_after']:
        result['replaced_transactions'] = transactions_after(session, target,
                                                             params['replaced_after'])
    with admin.cursor() as cursor:
        if current:
            _end_sessions(cursor, name)
            if params['keep_previous'] > 0:
                result['previous'] = name + PREV + stamp
                cursor.execute('ALTER DATABASE %s RENAME TO %s'
                               % (identifier(name), identifier(result['previous'])))
                kept.append(result['previous'])
            else:
                cursor.execute('DROP DATABASE %s' % identifier(name))
        cursor.execute('ALTER DATABASE %s RENAME TO %s' % (identifier(staging),
                                                           identifier(name)))
        result['kept'] = prune(cursor, kept, params['keep_previous'], result)
    result.update(changed=True, msg='%s is a copy of %s up to its transaction %s%s.' % (
        name, what, tid,
        '; the replaced database is kept as %s' % result['previous'] if result['previous']
        else ''))


def swap(module, session, admin, result):
    params = module.params
    target = params['database']
    name, previous = target['name'], params['previous']
    stamp = params['stamp'] or time.strftime('%Y%m%d%H%M%S', time.gmtime())
    current, kept = databases(admin, name)
    if previous not in kept:
        raise CopyError('There is no kept database %s of %s on %s:%s to put back (kept: %s).'
                        % (previous, name, target['host'], target['port'],
                           ', '.join(kept) or 'none'))
    result['kept'] = kept
    if module.check_mode:
        result.update(changed=True, msg='Would put %s in place of %s.' % (previous, name))
        return
    with admin.cursor() as cursor:
        if current:
            _end_sessions(cursor, name)
            result['previous'] = name + ROLLEDBACK + stamp
            cursor.execute('ALTER DATABASE %s RENAME TO %s' % (identifier(name),
                                                               identifier(result['previous'])))
        _end_sessions(cursor, previous)
        cursor.execute('ALTER DATABASE %s RENAME TO %s' % (identifier(previous),
                                                           identifier(name)))
    result['kept'] = [n for n in kept if n != previous]
    result['tid'] = database_tid(session, target)
    result.update(changed=True, msg='%s holds the kept database %s again (up to %s); the one '
                  'it replaced is kept as %s.' % (name, previous, result['tid'],
                                                  result['previous']))


def archive(module, session, admin, result):
    params = module.params
    target = params['database']
    name = target['name']
    stamp = params['stamp'] or time.strftime('%Y%m%d%H%M%S', time.gmtime())
    current, result['kept'] = databases(admin, name)
    if not current:
        result['msg'] = 'There is no database %s to archive on %s:%s.' % (name, target['host'],
                                                                          target['port'])
        return
    result['tid'] = database_tid(session, target)
    result.update(changed=True, previous=name + ROLLEDBACK + stamp)
    if not module.check_mode:
        with admin.cursor() as cursor:
            _end_sessions(cursor, name)
            cursor.execute('ALTER DATABASE %s RENAME TO %s' % (identifier(name),
                                                               identifier(result['previous'])))
    result['msg'] = '%s%s kept as %s (last transaction %s).' % (
        'Would have ' if module.check_mode else '', name, result['previous'], result['tid'])


def run(module, result):
    params = module.params
    target, source = params['database'], params['source']
    check_names(target, *([source] if source else []))
    if params['state'] == 'copied' and not (source or params['dump']):
        raise CopyError('state=copied needs the source database (source) or a dump (dump).')
    for option in ('tid', 'replaced_after'):
        if params[option] is not None and not TID.match(params[option]):
            raise CopyError('%s is %r: give a transaction id as 16 hex digits.'
                            % (option, params[option]))
    if params['dump'] and not params['tid']:
        raise CopyError('dump needs tid: the last transaction id of its backup report.')
    if params['state'] == 'swapped' and not params['previous']:
        raise CopyError('state=swapped needs the kept database to put back (previous).')
    accounts = ([(source, params['source_password'] or params['password'])] if source else []) \
        + [(dict(target, name='*'), params['password'])]
    with Session(accounts, params['timeout']) as session:
        admin = session.admin(target)
        try:
            if params['state'] == 'copied':
                copy(module, session, admin, result)
            elif params['state'] == 'swapped':
                swap(module, session, admin, result)
            elif params['state'] == 'archived':
                archive(module, session, admin, result)
            else:
                current, kept = databases(admin, target['name'])
                if params['state'] == 'pruned' and not module.check_mode:
                    with admin.cursor() as cursor:
                        kept = prune(cursor, kept, params['keep_previous'], result)
                elif params['state'] == 'pruned':
                    result['pruned'] = kept[:max(0, len(kept) - params['keep_previous'])]
                result.update(kept=kept, changed=bool(result['pruned']))
                if current:
                    result['tid'] = database_tid(session, target)
                result['msg'] = '%s: last transaction %s; kept %s%s.' % (
                    target['name'], result['tid'], ', '.join(kept) or 'none',
                    '; dropped %s' % ', '.join(result['pruned']) if result['pruned'] else '')
        finally:
            admin.close()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            database=dict(type='dict', required=True, options=CONN_SPEC),
            password=dict(type='str', required=True, no_log=True),
            source=dict(type='dict', options=CONN_SPEC),
            source_password=dict(type='str', no_log=True),
            dump=dict(type='path'),
            tid=dict(type='str'),
            replaced_after=dict(type='str'),
            state=dict(type='str', default='copied',
                       choices=['copied', 'swapped', 'archived', 'pruned', 'present']),
            keep_previous=dict(type='int', default=0, no_log=False),
            previous=dict(type='str'),
            stamp=dict(type='str'),
            pg_bin_dir=dict(type='path'),
            timeout=dict(type='int', default=30),
        ),
        mutually_exclusive=[('source', 'dump')],
        supports_check_mode=True,
    )
    started = time.monotonic()
    result = {'changed': False, 'tid': None, 'previous': None, 'kept': [], 'pruned': [],
              'replaced_transactions': None}
    missing = psycopg2_missing(sys.executable)
    if missing:
        module.fail_json(msg=missing, **result)
    try:
        run(module, result)
    except Exception as exc:  # PgError, psycopg2.Error: SQL failures (privileges, a busy database)
        message = fail_message(exc, module.params['database'])
        if message is None:
            raise
        module.fail_json(msg=message, seconds=round(time.monotonic() - started, 3), **result)
    result['seconds'] = round(time.monotonic() - started, 3)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
