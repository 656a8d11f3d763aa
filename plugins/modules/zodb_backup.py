#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zodb_backup
short_description: Back up a ZODB FileStorage and its blobs with ZODB's own repozo, or run the restore drill
description:
  - B(Backup) (the default). Runs C(repozo -B) from the release's virtualenv (the C(repozo)
    console script beside the Python that runs the module) into O(repository). repozo decides
    the kind itself. A B(full) backup when the repository holds none, when O(full) is set,
    or when the Data.fs no longer starts with what was backed up (it was packed since). An
    B(incremental) one (only the new transactions) otherwise. Nothing when nothing was
    committed since the last backup.
  - B(Blob backup.) Right after each Data.fs backup the blob folder is copied to
    C(blobs/<stamp>) in the repository, named like the repozo file it matches
    (C(<stamp>.fs) or C(<stamp>.deltafs)); files are hard-linked where the repository is on
    the same filesystem (committed blob files never change), else copied.
  - B(Report.) Each backup writes C(reports/<stamp>.json) and C(latest.json) (kind, reason,
    files, size, duration, last tid and its time, blob files). A run that finds nothing new
    sets C(checked_at) in C(latest.json), since the repository holds the data as of then.
    C(playbooks/status.yml) reads C(latest.json).
  - B(Retention.) After a backup, the backups older than the newest O(keep) full ones (each
    full backup with its incrementals, their C(.dat), C(.index), blob backups and reports) are
    removed.
  - B(Restore drill) (O(verify=true)). Restores the latest backup (or the state at
    O(backup_at)) into O(scratch_dir) with C(repozo -R -w) (every file checked against the
    size and md5 its C(.dat) records), checks the result with ZODB's C(fstest), and checks
    that every blob file a record names is in the matching blob backup. Touches no stage.
    A damaged backup is refused, naming the file. Writes C(reports/drill-latest.json).
  - B(Not during a pack.) The backup holds C(<path>.pack.lock) shared, as
    M(zopeops.stages.zodb_snapshot) does, so an offline M(zopeops.stages.zodb_pack) and a
    backup take turns. A promotion, restore or push of the stage is kept out by the stage's
    lock, which C(playbooks/backup.yml) takes on the conductor before it calls this module.
  - The same code runs the scheduled backups that C(roles/backup) installs (a systemd timer,
    or a supervisord program), so they write the same reports.
version_added: 0.1.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.zodb
  - zopeops.stages.zodb.storage
options:
  path:
    description:
      - The FileStorage to back up; it may be served by a running ZEO server. Needed unless
        O(verify=true).
  repository:
    description:
      - The stage's backup folder (created if missing). Holds only what this module writes.
    type: path
    required: true
  keep:
    description:
      - How many full backups to keep, with their incrementals and blob backups.
    type: int
    default: 7
  full:
    description:
      - Make a full backup even when an incremental one is possible (C(repozo -F)).
    type: bool
    default: false
  quick:
    description:
      - Let repozo compare only the last backed-up increment with the Data.fs (C(repozo -Q)),
        instead of all of it, to decide between full and incremental. Less reading, at the
        (small) risk of missing a change before that increment.
    type: bool
    default: false
  verify:
    description:
      - Run the restore drill instead of a backup (see the description).
    type: bool
    default: false
  backup_at:
    description:
      - With O(verify), restore the state at this time instead of the latest, UTC, as
        C(2026-12-07 05:10:00) (seconds, or the whole time, may be left out) or in repozo's
        format C(yyyy-mm-dd[-hh[-mm[-ss]]]). The state at a time is the last backup made at
        or before it. A time before the first backup, or no date, fails naming it.
    type: str
  scratch_dir:
    description:
      - With O(verify), the folder the drill restores into; emptied first and removed after
        (unless O(keep_restored)). Default C(<repository>/.drill).
    type: path
  keep_restored:
    description:
      - With O(verify), leave the verified C(Data.fs) in O(scratch_dir) instead of removing
        it, for C(playbooks/restore.yml) to install (RV(restored)). The caller removes it.
    type: bool
    default: false
  repozo:
    description:
      - A repozo executable to run. By default the module calls ZODB's own repozo
        (C(ZODB.scripts.repozo)) in its own process, with the Python running the module, which
        spares a second interpreter start and ZODB import per run.
    type: path
  lock_timeout:
    description:
      - Seconds to wait for C(<path>.pack.lock) while an offline pack holds it.
    type: float
    default: 60
attributes:
  check_mode:
    support: full
    details: Nothing is written. A backup says which kind repozo would make and why (it reads
      the Data.fs and the backups as repozo does without C(-Q)), and which old files the
      retention would remove. The drill says which files it would restore (RV(restored)
      without C(path)), and fails as it would when there is nothing to restore.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
seealso:
  - module: zopeops.stages.zodb_snapshot
  - module: zopeops.stages.zodb_pack
'''

EXAMPLES = r'''
- name: Back up prod's data (full or incremental, as repozo decides).
  zopeops.stages.zodb_backup:
    path: "{{ zopeops_instance_dir }}/var/filestorage/Data.fs"
    blob_dir: "{{ zopeops_instance_dir }}/var/blobstorage"
    repository: "{{ zopeops_root }}/backups/prod"
    keep: 7
  vars:
    ansible_python_interpreter: "{{ zopeops_instance_dir }}/current/venv/bin/python"
  register: backup

- name: Restore the latest backup into a scratch folder and check it.
  zopeops.stages.zodb_backup:
    repository: "{{ zopeops_root }}/backups/prod"
    verify: true

- name: Restore the state of 05:10 and keep it, verified, for an install (restore.yml).
  zopeops.stages.zodb_backup:
    repository: "{{ zopeops_root }}/backups/prod"
    verify: true
    backup_at: "2026-12-07 05:10:00"
    scratch_dir: "{{ zopeops_root }}/backups/.restore-prod"
    keep_restored: true
  vars:
    ansible_python_interpreter: "{{ zopeops_instance_dir }}/current/venv/bin/python"
'''

RETURN = r'''
kind:
  description: C(full), C(incremental) or C(unchanged) (in check mode, what repozo would do);
    C(drill) with O(verify).
  type: str
  returned: always
reason:
  description: Why that kind, e.g. C(file shrunk, packed since (full backup)).
  type: str
  returned: when not verify
report:
  description: The report written (C(reports/<stamp>.json), C(latest.json), or
    C(reports/drill-latest.json) for the drill), null in check mode. Keys C(stamp),
    C(kind), C(files), C(size), C(duration), C(last_tid), C(last_tid_time), C(blob_backup),
    C(blob_files), C(chain), C(started_at), C(finished_at), C(checked_at); the drill's
    C(files), C(restored_size), C(records), C(blob_records), C(last_tid).
  type: dict
  returned: success
removed:
  description: Files and folders of old backups the retention removed (in check mode, would remove).
  type: list
  elements: str
  returned: when not verify
verified:
  description: True when the drill restored and checked the backup.
  type: bool
  returned: when verify
restored:
  description: With O(verify), what the drill restores. C(files) (the repozo files, oldest
    first), C(stamp) (of the last one), C(last_tid) and C(last_tid_time) (the state restored),
    C(blob_dir) (the matching blob backup, absolute, or null) and, with O(keep_restored) and
    not in check mode, C(path), the verified Data.fs kept in O(scratch_dir).
  type: dict
  returned: when verify
repository:
  description: The backup folder.
  type: str
  returned: always
duration:
  description: Seconds the run took.
  type: float
  returned: success
msg:
  description: What happened, or would happen in check mode.
  type: str
  returned: always
'''

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_backup as zb


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path'),
            blob_dir=dict(type='path'),
            repository=dict(type='path', required=True),
            keep=dict(type='int', default=7),
            full=dict(type='bool', default=False),
            quick=dict(type='bool', default=False),
            verify=dict(type='bool', default=False),
            backup_at=dict(type='str'),
            scratch_dir=dict(type='path'),
            keep_restored=dict(type='bool', default=False),
            repozo=dict(type='path'),
            lock_timeout=dict(type='float', default=60),
        ),
        required_if=[('verify', False, ('path',))],
        supports_check_mode=True,
    )
    zu.import_zodb(module)
    params = module.params
    repository = params['repository']
    zb.repository_umask(repository)
    try:
        if params['verify']:
            scratch_dir = params['scratch_dir'] or os.path.join(repository, '.drill')
            chain = zb.chain_to_restore(repository, params['backup_at'])
            last = os.path.join(repository, chain[-1][2])
            blob_dir = os.path.join(repository, 'blobs', chain[-1][0])
            restored = {'files': [entry[2] for entry in chain], 'stamp': chain[-1][0],
                        'last_tid': zb.last_tid_of(last),
                        'blob_dir': blob_dir if os.path.isdir(blob_dir) else None}
            restored['last_tid_time'] = zb.tid_time(restored['last_tid'])
            if module.check_mode:
                module.exit_json(changed=False, kind='drill', repository=repository,
                                 report=None, verified=False, restored=restored,
                                 msg='Would restore %s into a scratch folder and check it.'
                                     % ' + '.join(restored['files']))
            result = zb.drill(repository, scratch_dir, backup_at=params['backup_at'],
                              repozo=params['repozo'], keep_scratch=params['keep_restored'])
            if params['keep_restored']:
                restored['path'] = os.path.join(scratch_dir, 'Data.fs')
            result.update(kind='drill', restored=restored)
        else:
            result = zb.backup(params['path'], repository, params['blob_dir'],
                               keep=params['keep'], full=params['full'], quick=params['quick'],
                               repozo=params['repozo'], lock_timeout=params['lock_timeout'],
                               check=module.check_mode)
            result.setdefault('report', None)
    except zb.BackupError as exc:
        module.fail_json(msg=str(exc), repository=repository, busy=isinstance(exc, zb.StageBusy))
    except OSError as exc:
        module.fail_json(msg=zu.os_error_message(
            exc, 'The backup into %s' % repository,
            'The stage was only read; the repository keeps the backups it had.'),
            repository=repository)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
