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
  backup_at:
    description:
      - With O(verify), the state at a time (UTC, C(2026-12-07 05:10:00); the time may be left
        out), the last dump made at or before it, instead of the latest. As
        M(zopeops.stages.zodb_backup)'s O(zopeops.stages.zodb_backup#module:backup_at).
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
restored:
  description:
    - With O(verify) (also in check mode), the dump the drill restores, in the shape of
      M(zopeops.stages.zodb_backup)'s RV(zopeops.stages.zodb_backup#module:restored) (what
      C(playbooks/restore.yml) installs) - C(files), C(stamp), C(last_tid) and
      C(last_tid_time) (from its report), C(blob_dir) (null) and C(path) (the dump).
  type: dict
  returned: when O(verify) is true
msg:
  description: What happened.
  type: str
  returned: always
'''

import sys

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils.pg_backup import run
from ansible_collections.zopeops.stages.plugins.module_utils.relstorage_pg import (
    CONN_SPEC, fail_message, psycopg2_missing)


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
            backup_at=dict(type='str'),
            pg_bin_dir=dict(type='path'),
            timeout=dict(type='int', default=30),
        ),
        mutually_exclusive=[('backup', 'backup_at')],
        supports_check_mode=True,
    )
    repository = module.params['repository']
    missing = psycopg2_missing(sys.executable)
    if missing:
        module.fail_json(msg=missing, repository=repository)
    try:
        result = run(module.params, module.check_mode)
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
