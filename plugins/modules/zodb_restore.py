#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zodb_restore
short_description: Install a verified ZODB snapshot as an instance's Data.fs and blobs
description:
  - Installs a snapshot made by M(zopeops.stages.zodb_snapshot) onto a stopped instance, its
    C(Data.fs) at O(path) and its blobs at O(blob_dir).
  - B(Refuses while the target runs), that is when C(<path>.lock) is held (its ZEO server, or any
    process, has the storage open) or, with O(zeo_address), when something answers there.
  - B(Verifies the snapshot first), before anything of the target is touched. It checks the
    magic C(FS30), size equal to the manifest, the last committed transaction equal to the
    manifest tid and ending at the end of the file, the checksum (md5 by default) of every
    span the manifest records as hashed, the blob count, and with O(fstest) a full
    C(ZODB.scripts.fstest) run. A mismatch fails the task; the target's data stays as it was.
  - What the checksums cover is what the snapshot recorded (its
    O(zopeops.stages.zodb_snapshot#module:verify)). For a snapshot taken with C(verify=full),
    every byte. For one taken with C(verify=spans) (the default), the first and the last span
    (1 MiB by default) of each copied range. That catches a truncated, wrong or replaced file
    and a changed head or tail, but not a flipped bit in the middle of a range. Take the
    snapshot with C(verify=full) where that matters; O(fstest) catches damage to the record
    structure in the middle, not a changed byte inside an object's data. RV(verify) and
    RV(bytes_verified) say what was checked.
  - B(Keeps the previous data for rollback.) The current C(Data.fs) gets a second name,
    C(Data.fs.prev-<stamp>) (a hard link), and the blob directory becomes
    C(<blob_dir>.prev-<stamp>), a I(pair) whose size, last tid, transaction count and blob
    count are recorded in C(Data.fs.installed.json.prev-<stamp>) as they were when it was kept.
    The newest O(keep_previous) pairs are kept, older ones removed. RV(previous_pair) is the
    stamp, the rollback target to record.
  - B(Never a moment without a Data.fs.) The new C(Data.fs) is renamed over the current one
    (C(os.replace)) after the current one got its second name; the blob directories are
    exchanged in one C(renameat2(RENAME_EXCHANGE)) where the filesystem offers it. The storage's
    lock C(Data.fs.lock) is taken (C(zc.lockfile), as ZEO takes it) for the whole change and never
    removed. The swap is written down first (C(Data.fs.swap.json)); a run that was killed part
    way is finished by the next run of the module (RV(resumed)).
  - B(Takes the snapshot's files.) With O(keep_snapshot=false) (the default) and the snapshot on
    the same filesystem, the snapshot's C(Data.fs) is installed by a hard link and its C(blobs/)
    by a rename, so nothing is copied. Once the installed data is verified (size and last tid) the
    snapshot directory is removed. With O(keep_snapshot=true) the C(Data.fs) is copied (the
    installed file is appended to by ZEO, so it cannot share the snapshot's inode) and the blob
    files are hard-linked (they never change).
  - The stale C(Data.fs.index) and C(Data.fs.tmp) are removed, and the ZEO client caches
    (C(*.zec)) named by O(cache_dirs) and O(cache_globs) are deleted, since clients with a
    persistent cache refuse to connect to a storage whose history changed.
  - B(Swap a kept pair back in) (O(previous), without O(snapshot)). The pair is verified first
    (magic, size, last tid and blob count against what was recorded when it was kept); a
    missing or unverifiable pair fails and changes nothing. Then it is swapped in as one unit,
    like an install, and the current pair is archived as C(Data.fs.rolledback-<stamp>) +
    C(<blob_dir>.rolledback-<stamp>) (with a C(.json) beside saying how many transactions it
    holds), which is never removed or pruned by this module. The client caches are cleared.
  - B(Idempotence.) C(<path>.installed.json) records what was installed (the manifest's tid,
    size and range checksums, or the kept pair's stamp). An install is C(changed) false when
    the target's last transaction is still the snapshot's tid and either that record names the
    same snapshot or, without a record, the target's Data.fs has the snapshot's size and
    checksums. A swap is C(changed) false when the record names the asked pair as installed.
  - "B(Ownership): The installed Data.fs and the files named after it beside it (index,
      manifests, kept pairs), the blob folder and its kept pairs get O(owner), O(group) and
      O(file_mode) (C(0600) by default: the data is the service's alone)."
version_added: 0.1.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.zodb
  - zopeops.stages.zodb.storage
  - zopeops.stages.zodb.ownership
  - zopeops.stages.zodb.reserve
options:
  snapshot:
    description:
      - The snapshot directory (with C(manifest.json), C(Data.fs), C(blobs/)) to install.
        Exactly one of O(snapshot) and O(previous) is required.
    type: path
  previous:
    description:
      - Swap a kept pair back in instead of installing a snapshot, the data part of a rollback.
        V(newest) takes the newest kept pair, or a C(<stamp>) (as RV(previous_pair) returned
        it) names one.
    type: str
  path:
    description:
      - The target instance's FileStorage, e.g. C(<instance>/var/filestorage/Data.fs).
    required: true
  blob_dir:
    description:
      - The target's blob directory. Needed when the snapshot has blobs; with O(previous), the
        blob directory of the pair is swapped as well.
  replaced_after:
    description:
      - With O(snapshot), count in RV(replaced_transactions) the transactions of the replaced
        Data.fs with a tid greater than this one (16 hex digits) instead of those since its
        recorded install. A restore gives the tid of the state it restores, so that the
        count is what the restore drops.
    type: str
  keep_previous:
    description:
      - How many previous Data.fs (+ blob directory) pairs to keep for rollback. C(0) removes
        the previous data once the new data is in place. Archived (C(rolledback-*)) pairs are
        never counted nor removed.
    type: int
    default: 1
  keep_snapshot:
    description:
      - Keep the snapshot directory after the install. V(false) takes its files (a hard link
        and a rename, no copy, when it is on the same filesystem as O(path)) and removes it once
        the install is verified; V(true) copies the C(Data.fs) so that the snapshot stays
        valid, for example to install it on a second instance.
    type: bool
    default: false
  cache_dirs:
    description:
      - Directories whose ZEO client cache files (C(*.zec), C(*.zec.lock)) are removed after the
        install, e.g. each client's C(var/<client>) directory.
    type: list
    elements: path
    default: []
  cache_globs:
    description:
      - Further glob patterns of cache files to remove.
    type: list
    elements: str
    default: []
  zeo_address:
    description:
      - The target's ZEO address. When something answers there, the change is refused, in
        addition to the lock check.
    type: str
  fstest:
    description:
      - Also check the snapshot with C(python -m ZODB.scripts.fstest) (reads every record,
        about 0.4 GB/s) before installing.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: The snapshot (or the kept pair) is verified and the target checked; the result
      says what would be installed, kept or archived; nothing is written and no lock taken.
  diff_mode:
    support: full
    details: Shows the target's tid and size before and after (install only).
  platform:
    support: full
    platforms: posix
seealso:
  - module: zopeops.stages.zodb_snapshot
  - module: zopeops.stages.zodb_replay
'''

EXAMPLES = r'''
- name: Install the snapshot of the twin on the stopped stage; record the rollback target.
  zopeops.stages.zodb_restore:
    snapshot: "{{ zopeops_instance_dir }}/var/snapshots/incoming"
    path: "{{ zopeops_instance_dir }}/var/filestorage/Data.fs"
    blob_dir: "{{ zopeops_instance_dir }}/var/blobstorage"
    zeo_address: "{{ zopeops_zeo_address }}"
    cache_dirs: "{{ zopeops_clients | map(attribute='name') | map('regex_replace', '^', zopeops_instance_dir ~ '/var/') | list }}"
    keep_previous: 1
  register: installed

- name: Rollback, data part - swap the kept pair back in (the current pair is archived).
  zopeops.stages.zodb_restore:
    previous: "{{ rollback_pair | default('newest') }}"
    path: "{{ zopeops_instance_dir }}/var/filestorage/Data.fs"
    blob_dir: "{{ zopeops_instance_dir }}/var/blobstorage"
    cache_dirs: "{{ zopeops_clients | map(attribute='name') | map('regex_replace', '^', zopeops_instance_dir ~ '/var/') | list }}"
'''

RETURN = r'''
attributes_changed:
  description: How many of the installed Data.fs, its install record, the kept pairs and the blob folders
    got (in check mode, would get) the owner, group or mode of
    O(owner), O(group) and O(file_mode); 0 when they had them already.
  type: int
  returned: success
  sample: 3
tid:
  description: The installed last transaction id (the manifest's, or the kept pair's), 16 hex
    digits.
  type: str
  returned: always
size:
  description: Size of the installed Data.fs.
  type: int
  returned: always
previous:
  description: Where the replaced Data.fs and blob directory were kept, or null.
  type: dict
  returned: when snapshot is given
previous_pair:
  description: The stamp of the pair kept by this install (C(Data.fs.prev-<stamp>)), the value
    to give O(previous) to roll back, or null when there was no previous Data.fs.
  type: str
  returned: when snapshot is given
snapshot_removed:
  description: Whether the snapshot directory was removed after the install.
  type: bool
  returned: when snapshot is given
data_copied:
  description: Whether the Data.fs was copied (O(keep_snapshot), or another filesystem) instead
    of taken by a hard link.
  type: bool
  returned: when a snapshot is installed
pair:
  description: The stamp of the kept pair swapped in (or that would be).
  type: str
  returned: when previous is given
archived:
  description: Where the pair that was replaced went, C(path) and C(blob_dir)
    (C(*.rolledback-<stamp>)).
  type: dict
  returned: when previous is given
replaced_transactions:
  description:
    - With O(snapshot), how many transactions the Data.fs that the install replaced had got
      since it was itself installed (the tid in C(<path>.installed.json)), that is the writes
      that the new data replaces, for a promotion's report; with O(replaced_after), how many
      it had after that tid. Null when there was no such record or the
      file no longer holds that transaction; 0 when the file already was the snapshot.
  type: int
  returned: with O(snapshot), when it was installed or already in place
  sample: 12
archived_transactions:
  description: How many transactions the archived Data.fs holds.
  type: int
  returned: when previous is given
archived_last_tid:
  description: The last transaction id of the archived Data.fs.
  type: str
  returned: when previous is given
resumed:
  description: The stamp of an interrupted swap this run finished first, else null.
  type: str
  returned: always
removed_previous:
  description: Older previous copies removed to honour O(keep_previous).
  type: list
  returned: always
removed_files:
  description: Stale index/lock/temp files and cache files removed.
  type: list
  returned: always
blobs_installed:
  description: Blob files put into the target blob directory.
  type: int
  returned: always
verify:
  description: What the snapshot's checksums cover, as its manifest records it. C(full) (every
    byte) or C(spans) (the head and tail spans of each copied range).
  type: str
  returned: always
bytes_verified:
  description: Bytes of the snapshot's Data.fs whose checksums were checked.
  type: int
  returned: always
duration:
  description: Seconds the module spent.
  type: float
  returned: always
'''

import ctypes
import errno
import glob
import json
import os
import sys
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_format as zfmt
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_copy as zcopy
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_manifest as zman
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_blobs as zblob
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_locks as zlock
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_zeo as zzeo
from ansible_collections.zopeops.stages.plugins.module_utils import files


def verify_snapshot(params, manifest):
    snap = params['snapshot']
    data = os.path.join(snap, manifest.get('data_file') or zman.SNAPSHOT_DATA_NAME)
    problems = zman.verify_data_against_manifest(data, manifest)
    blob_rel = manifest.get('blob_dir')
    blob_src = os.path.join(snap, blob_rel) if blob_rel else None
    if blob_src:
        found = len(zblob.committed_blobs(blob_src, zfmt.hex_to_tid(manifest['tid'])))
        if found != manifest.get('blob_count', found):
            problems.append('the snapshot blob directory %s holds %d blob files, the manifest '
                            'says %d' % (blob_src, found, manifest['blob_count']))
        if not params['blob_dir']:
            problems.append('the snapshot has blobs but no blob_dir was given for the target')
    if params['fstest'] and not problems:
        ok, output = zfmt.run_fstest(sys.executable, data)
        if not ok:
            problems.append('fstest found damage in %s: %s' % (data, output[-500:]))
    if problems:
        raise zu.ZODBDataError(
            'Refusing to install the snapshot %s: it does not match its manifest: %s. The target '
            '%s was not touched. Take the snapshot again.' % (snap, '; '.join(problems),
                                                              params['path']))
    return data, blob_src


def target_state(path, blob_dir):
    if not os.path.isfile(path):
        return None
    try:
        state = zfmt.storage_state(path)
    except zu.ZODBDataError:
        return {'size': os.path.getsize(path), 'tid': None}
    return {'size': state['file_size'], 'tid': zfmt.tid_to_hex(state['tid']),
            'blobs': len(zblob.committed_blobs(blob_dir, b'\xff' * 8)) if blob_dir else 0}


def same_snapshot(record, manifest):
    keys = ('tid', 'size', 'ranges')
    return all(record.get(key) == manifest.get(key) for key in keys)


def already_installed(path, blob_dir, manifest, state):
    if not state or state['tid'] != manifest['tid']:
        return False
    try:
        with open(path + '.installed.json', encoding='utf-8') as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and same_snapshot(record, manifest):
        # This snapshot was installed and no transaction was added since (maybe packed).
        return True
    if state['size'] != manifest['size']:
        return False
    if blob_dir and state['blobs'] < manifest.get('blob_count', 0):
        return False
    return not zman.verify_data_against_manifest(path, manifest)


def refuse_if_running(params):
    path = params['path']
    holder = zlock.lock_holder(path)
    if holder is not None:
        raise zu.ZODBDataError(
            'Refusing to install into %s: its storage is locked (%s.lock held by %s), so its '
            'ZEO server or another process has it open. Stop the instance first.'
            % (path, path, holder))
    if params['zeo_address'] and zzeo.zeo_answers(params['zeo_address']):
        raise zu.ZODBDataError(
            'Refusing to install into %s: something answers at its ZEO address %s, so its ZEO '
            'server seems to run. Stop it first.' % (path, params['zeo_address']))


def prune_previous(path, blob_dir, keep):
    prefix = os.path.basename(path) + '.prev-'
    folder = os.path.dirname(path)
    stamps = sorted(
        (name[len(prefix):] for name in os.listdir(folder)
         if name.startswith(prefix) and not name.endswith('.json')), reverse=True)
    removed = []
    for old in stamps[keep:]:
        for victim in (os.path.join(folder, prefix + old),
                       os.path.join(folder, os.path.basename(path) + '.installed.json.prev-'
                                    + old),
                       blob_dir + '.prev-' + old if blob_dir else None):
            if victim and os.path.lexists(victim):
                zcopy.remove_path(victim)
                removed.append(victim)
    return removed


def clear_caches(params):
    removed = []
    patterns = [os.path.join(d, pattern) for d in params['cache_dirs']
                for pattern in ('*.zec', '*.zec.lock')]
    patterns += params['cache_globs']
    for pattern in patterns:
        for found in sorted(glob.glob(pattern)):
            if os.path.isfile(found):
                os.unlink(found)
                removed.append(found)
    return removed


# ----------------------------------------------------------------------------- the swap
#
# A swap puts a complete new pair (a Data.fs file and a blob directory, both already beside
# the targets) in place of the current pair, which is kept under another name. It is written
# down first (the journal <path>.swap.json), then applied by steps that each check by inode
# whether they were done, so a run that was killed part way is finished by the next run.
# The Data.fs is never missing: the current one gets a second name by a hard link, then the
# new one is renamed over it (os.replace, atomic). The blob directories are exchanged in one
# renameat2(RENAME_EXCHANGE) where the kernel and filesystem offer it, else by two renames.
# The storage's own lock (<path>.lock, zc.lockfile, as FileStorage and ZEO take it) is held
# throughout, so no ZEO server can open the storage half way; the lock file is never removed.

FAIL_AT_ENV = 'ZOPEOPS_ZODB_RESTORE_FAIL_AT'  # tests: die (os._exit) before the named step


def step(name):
    if os.environ.get(FAIL_AT_ENV) == name:
        os._exit(137)


def exchange_dirs(a, b):
    """Swap two paths in one step (renameat2 RENAME_EXCHANGE); False if not offered here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), a, None, b)


def inode(path):
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def journal_path(path):
    return path + '.swap.json'


def take_lock(path):
    import zc.lockfile
    try:
        return zc.lockfile.LockFile(path + '.lock')
    except zc.lockfile.LockError:
        raise zu.ZODBDataError(
            'Cannot change %s: its lock %s.lock is held (%s), so its ZEO server or another '
            'install runs. Stop the instance first.'
            % (path, path, zlock.lock_holder(path) or 'by another process')) from None


class Guard:
    """Refuses a running instance and holds its lock from the first write on."""

    def __init__(self, params):
        self.params = params
        self.lock = None

    def hold(self):
        if self.lock is None:
            refuse_if_running(self.params)
            self.lock = take_lock(self.params['path'])

    def release(self):
        if self.lock is not None:
            self.lock.close()  # unlocks; the lock file itself stays, as ZEO leaves it
            self.lock = None


def apply_swap(path, blob_dir, plan):
    """Carry out (or finish) the swap ``plan``; every step can be repeated."""
    folder = os.path.dirname(path)
    step('keep-data')
    if plan['data_old_ino'] and not os.path.exists(plan['data_keep']) and \
            inode(path) == plan['data_old_ino']:
        os.link(path, plan['data_keep'])
    if plan.get('blob_new'):
        step('swap-blobs')
        if inode(blob_dir) != plan['blob_new_ino']:
            if os.path.exists(blob_dir):
                if not exchange_dirs(plan['blob_new'], blob_dir):
                    os.rename(blob_dir, plan['blob_keep'])
                    step('blobs-half-swapped')
                    os.rename(plan['blob_new'], blob_dir)
            else:
                os.rename(plan['blob_new'], blob_dir)
        step('keep-blobs')
        if os.path.exists(plan['blob_new']) and inode(plan['blob_new']) != plan['blob_new_ino']:
            os.rename(plan['blob_new'], plan['blob_keep'])  # it holds the old directory now
    step('replace-data')
    if inode(path) != plan['data_new_ino']:
        os.replace(plan['data_new'], path)
    zcopy.fsync_dir(folder)
    step('records')
    if plan.get('keep_record') and plan['data_old_ino']:
        zman.write_json_atomic(plan['keep_record_path'], plan['keep_record'])
    zman.write_json_atomic(path + '.installed.json', plan['record'])
    for suffix in ('.index', '.tmp'):  # the old file's; never .lock
        if os.path.lexists(path + suffix):
            os.unlink(path + suffix)
    step('journal')
    os.unlink(journal_path(path))
    zcopy.fsync_dir(folder)


def finish_interrupted(path, blob_dir):
    """If a swap was interrupted, finish it; returns the plan or None."""
    try:
        with open(journal_path(path), encoding='utf-8') as handle:
            plan = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise zu.ZODBDataError('The swap journal %s cannot be read (%s). Inspect %s and its '
                               'neighbours by hand.' % (journal_path(path), exc, path)) from None
    if inode(path) != plan['data_new_ino'] and not os.path.exists(plan['data_new']):
        raise zu.ZODBDataError('An interrupted swap (%s) cannot be finished: %s is gone. '
                               'Inspect %s by hand.' % (journal_path(path), plan['data_new'],
                                                        path))
    apply_swap(path, blob_dir, plan)
    return plan


def kept_state(path, blob_dir):
    """What a pair being kept holds: recorded now, checked before it is swapped back in."""
    state = zfmt.storage_state(path)
    return {'size': state['file_size'], 'end': state['end'], 'tid': zfmt.tid_to_hex(state['tid']),
            'transactions': state['transactions'],
            'blob_count': len(zblob.committed_blobs(blob_dir, b'\xff' * 8)) if blob_dir and
            os.path.isdir(blob_dir) else None,
            'kept_at': zu.now_iso()}


def swap_plan(path, blob_dir, data_new, blob_new, keep_prefix, when, record, keep=True):
    folder = os.path.dirname(path)
    base = os.path.basename(path)
    plan = {
        'stamp': when,
        'data_new': data_new, 'data_new_ino': inode(data_new),
        'data_old_ino': inode(path),
        'data_keep': os.path.join(folder, '%s.%s-%s' % (base, keep_prefix, when)),
        'blob_new': blob_new, 'blob_new_ino': inode(blob_new) if blob_new else None,
        'blob_keep': '%s.%s-%s' % (blob_dir.rstrip('/'), keep_prefix, when) if blob_dir else None,
        'record': record,
        'keep_record_path': os.path.join(folder, '%s.installed.json.%s-%s'
                                         % (base, keep_prefix, when)),
    }
    if keep and plan['data_old_ino']:
        kept = {}
        try:
            with open(path + '.installed.json', encoding='utf-8') as handle:
                kept = json.load(handle)
        except (OSError, ValueError):
            pass
        kept['kept'] = kept_state(path, blob_dir)
        plan['keep_record'] = kept
    zman.write_json_atomic(journal_path(path), plan)
    return plan


# ----------------------------------------------------------------------------- install


def install(module, result, guard, resumed=None):
    params = module.params
    path, blob_dir, snap = params['path'], params['blob_dir'], params['snapshot']
    manifest = zman.read_manifest(snap)
    if manifest is None:
        raise zu.ZODBDataError('%s holds no manifest.json, so it is not a snapshot made by '
                               'zodb_snapshot. Check the snapshot path.' % snap)
    result.update(tid=manifest['tid'], size=manifest['size'],
                  verify=zman.manifest_verify(manifest), bytes_verified=zman.hashed_bytes(manifest))
    if resumed and resumed['record'].get('installed_from') == os.path.abspath(snap):
        # An install of this snapshot was killed part way and has just been finished; its
        # files were taken already, so the snapshot is no longer whole to verify again.
        after_install(params, result, manifest, resumed)
        return
    data_src, blob_src = verify_snapshot(params, manifest)
    before = target_state(path, blob_dir)
    result['diff'] = {'before': {'path': path, 'tid': before and before['tid'],
                                 'size': before and before['size']},
                      'after': {'path': path, 'tid': manifest['tid'], 'size': manifest['size']}}
    if already_installed(path, blob_dir, manifest, before):
        result['diff']['after'] = result['diff']['before']
        result['replaced_transactions'] = 0  # the file is the snapshot: nothing is replaced
        result['msg'] = '%s already holds the snapshot %s (tid %s).' % (path, snap,
                                                                        manifest['tid'])
        return
    if module.check_mode:
        refuse_if_running(params)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        guard.hold()
    blobs = zblob.committed_blobs(blob_src, zfmt.hex_to_tid(manifest['tid'])) if blob_src else []
    folder = os.path.dirname(os.path.abspath(path))
    take_files = not params['keep_snapshot'] and zcopy.same_filesystem(data_src, folder)
    link_blobs = bool(blob_src and zcopy.same_filesystem(blob_src, blob_dir))
    needed = (0 if take_files else manifest['size']) + \
        (0 if link_blobs else sum(size for _r, size in blobs))
    zcopy.require_free(path, needed, params['reserve_bytes'], 'install the snapshot %s' % snap)
    result.update(changed=True, blobs_installed=len(blobs),
                  data_copied=not take_files)
    if module.check_mode:
        result['msg'] = 'Would install the snapshot %s (tid %s, %d bytes, %d blobs) at %s%s.' % (
            snap, manifest['tid'], manifest['size'], len(blobs), path,
            ', taking its files' if take_files else ', copying its Data.fs')
        return
    os.makedirs(folder, exist_ok=True)
    new_data = '%s.new-%d' % (path, os.getpid())
    new_blobs = '%s.new-%d' % (blob_dir.rstrip('/'), os.getpid()) if blob_dir else None
    try:
        if take_files:
            # The snapshot's own file by a second name; the snapshot goes once installed.
            # (Not with keep_snapshot: ZEO appends to the installed file, which would change
            # the kept snapshot through the shared inode.)
            os.link(data_src, new_data)
        else:
            src_fd = os.open(data_src, os.O_RDONLY)
            try:
                dst_fd = os.open(new_data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    zcopy.copy_range(src_fd, dst_fd, 0, manifest['size'])
                    os.fsync(dst_fd)
                finally:
                    os.close(dst_fd)
            finally:
                os.close(src_fd)
        if new_blobs:
            zcopy.remove_path(new_blobs)
            if blob_src and take_files and link_blobs:
                os.rename(blob_src, new_blobs)
            elif blob_src:
                zblob.copy_blobs(blob_src, new_blobs, blobs, link_blobs)
            else:
                os.makedirs(new_blobs)
            zcopy.fsync_dir(new_blobs)
    except BaseException:
        if new_blobs and blob_src and not os.path.exists(blob_src) and \
                os.path.exists(new_blobs):
            os.rename(new_blobs, blob_src)  # give the snapshot its blobs back
        for leftover in (new_data, new_blobs):
            if leftover and os.path.lexists(leftover):
                zcopy.remove_path(leftover)
        raise
    when = zu.stamp()
    previous = {}
    result['replaced_transactions'] = transactions_since_install(path, params['replaced_after'])
    if os.path.exists(path):
        previous['path'] = '%s.prev-%s' % (path, when)
        if blob_dir and os.path.isdir(blob_dir):
            previous['blob_dir'] = '%s.prev-%s' % (blob_dir.rstrip('/'), when)
    record = dict(manifest)
    record.update(installed_from=os.path.abspath(snap), installed_at=zu.now_iso(), pair=None,
                  previous=previous or None)
    record.pop('history', None)
    plan = swap_plan(path, blob_dir, new_data, new_blobs, 'prev', when, record)
    apply_swap(path, blob_dir, plan)
    after_install(params, result, manifest, plan)


def transactions_since_install(path, after_tid=None):
    """How many transactions the Data.fs at ``path`` got after its recorded install (the tid
    of ``<path>.installed.json``): what an install over it replaces. None when there is no
    such record, or the file no longer holds that transaction (packed, or another file).
    With ``after_tid`` (a restore: the tid of the state restored), how many it has with a
    greater tid, held or not."""
    try:
        if after_tid:
            since = zfmt.hex_to_tid(after_tid)
        else:
            with open(path + '.installed.json', encoding='utf-8') as handle:
                since = zfmt.hex_to_tid(json.load(handle)['tid'])
        fd = os.open(path, os.O_RDONLY)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        found, tail = zfmt.transactions_after(fd, since)
    except (OSError, ValueError, zu.ZODBDataError):
        return None
    finally:
        os.close(fd)
    return len(tail) if found or after_tid else None


def after_install(params, result, manifest, plan):
    """Verify the installed Data.fs, then clear caches, remove the snapshot, prune."""
    path, blob_dir, snap = params['path'], params['blob_dir'], params['snapshot']
    previous = plan['record'].get('previous') or {}
    installed = zfmt.storage_state(path)
    if installed['file_size'] != manifest['size'] or \
            zfmt.tid_to_hex(installed['tid']) != manifest['tid']:
        raise zu.ZODBDataError(
            'After the install %s is %d bytes with last tid %s, the snapshot says %d and %s. '
            'The previous data is kept as %s; the snapshot %s was left in place.'
            % (path, installed['file_size'], zfmt.tid_to_hex(installed['tid']), manifest['size'],
               manifest['tid'], previous.get('path'), snap))
    removed = clear_caches(params)
    if not params['keep_snapshot']:
        zcopy.remove_path(snap)
        result['snapshot_removed'] = True
    result.update(changed=True, previous=previous or None,
                  previous_pair=plan['stamp'] if previous else None, removed_files=removed,
                  removed_previous=prune_previous(path, blob_dir, params['keep_previous']))
    result['msg'] = 'Installed the snapshot %s (tid %s, %d bytes, %d blobs) at %s.' % (
        snap, manifest['tid'], manifest['size'], manifest.get('blob_count') or 0, path)


# ----------------------------------------------------------------------------- rollback


def kept_pairs(path):
    """Stamps of the kept pairs (``<path>.prev-<stamp>``), newest first."""
    prefix = os.path.basename(path) + '.prev-'
    folder = os.path.dirname(path)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted((n[len(prefix):] for n in names if n.startswith(prefix)), reverse=True)


def installed_record(path):
    try:
        with open(path + '.installed.json', encoding='utf-8') as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def verify_pair(path, blob_dir, when):
    """The kept pair ``when`` against what was recorded when it was kept; its record."""
    data = '%s.prev-%s' % (path, when)
    record_path = '%s.installed.json.prev-%s' % (path, when)
    blobs = '%s.prev-%s' % (blob_dir.rstrip('/'), when) if blob_dir else None
    try:
        with open(record_path, encoding='utf-8') as handle:
            kept = json.load(handle)['kept']
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise zu.ZODBDataError(
            'The kept pair %s cannot be verified: its record %s is missing or unreadable (%s). '
            'Nothing was changed.' % (when, record_path, exc)) from None
    problems = []
    if not os.path.isfile(data):
        problems.append('%s does not exist' % data)
    elif zfmt.read_magic(data) != zfmt.MAGIC:
        problems.append('%s does not start with %r' % (data, zfmt.MAGIC))
    else:
        state = zfmt.storage_state(data)
        if state['file_size'] != kept['size'] or state['end'] != kept['size']:
            problems.append('%s is %d bytes (committed up to %d), it was %d when kept' % (
                data, state['file_size'], state['end'], kept['size']))
        if zfmt.tid_to_hex(state['tid']) != kept['tid']:
            problems.append('the last transaction of %s is %s, it was %s when kept' % (
                data, zfmt.tid_to_hex(state['tid']), kept['tid']))
    if blob_dir and kept.get('blob_count') is not None:
        if not os.path.isdir(blobs):
            problems.append('the kept blob directory %s does not exist' % blobs)
        else:
            count = len(zblob.committed_blobs(blobs, b'\xff' * 8))
            if count != kept['blob_count']:
                problems.append('%s holds %d blob files, %d when kept' % (
                    blobs, count, kept['blob_count']))
    if problems:
        raise zu.ZODBDataError('Refusing to swap in the kept pair %s: %s. Nothing was changed.'
                               % (when, '; '.join(problems)))
    return data, blobs, kept


def rollback(module, result, guard):
    params = module.params
    path, blob_dir = params['path'], params['blob_dir']
    pairs = kept_pairs(path)
    current = installed_record(path).get('pair')
    wanted = params['previous']
    if wanted == 'newest':
        candidates = sorted(pairs + ([current] if current else []), reverse=True)
        if not candidates:
            raise zu.ZODBDataError('There is no kept pair (%s.prev-*) to swap in at %s. Nothing '
                                   'was changed.' % (os.path.basename(path),
                                                     os.path.dirname(path)))
        wanted = candidates[0]
    result['pair'] = wanted
    if current == wanted and wanted not in pairs:
        state = zfmt.storage_state(path)
        result.update(tid=zfmt.tid_to_hex(state['tid']),
                      msg='The kept pair %s is already the installed one at %s.' % (wanted, path))
        return
    if wanted not in pairs:
        raise zu.ZODBDataError('There is no kept pair %s at %s (kept: %s). Nothing was changed.'
                               % (wanted, path, ', '.join(pairs) or 'none'))
    data, blobs, kept = verify_pair(path, blob_dir, wanted)
    running = None
    if module.check_mode:  # a run refuses a running instance in guard.hold()
        # Check mode verifies the pair also while the instance runs (a rollback's preflight
        # does, before the stage is stopped); it says what a real run would need first.
        try:
            refuse_if_running(params)
        except zu.ZODBDataError as exc:
            running = str(exc)
    when = zu.stamp()
    archived = {'path': '%s.rolledback-%s' % (path, when)}
    if blob_dir:
        archived['blob_dir'] = '%s.rolledback-%s' % (blob_dir.rstrip('/'), when)
    now = zfmt.storage_state(path) if os.path.isfile(path) else None
    result.update(changed=True, tid=kept['tid'], archived=archived,
                  archived_transactions=now and now['transactions'],
                  archived_last_tid=now and zfmt.tid_to_hex(now['tid']))
    if module.check_mode:
        result['msg'] = ('Would swap in the kept pair %s (tid %s) at %s and archive the current '
                         'pair (%s transactions, last tid %s) as %s.'
                         % (wanted, kept['tid'], path, result['archived_transactions'],
                            result['archived_last_tid'], archived['path']))
        if running:
            result['msg'] += ' The instance runs now; a real run refuses until it is stopped.'
        return
    guard.hold()
    try:
        with open('%s.installed.json.prev-%s' % (path, wanted), encoding='utf-8') as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        record = {}
    record.update(pair=wanted, installed_at=zu.now_iso(), tid=kept['tid'], size=kept['size'])
    # the archive is not a kept pair: no record of one, never pruned nor swapped back
    plan = swap_plan(path, blob_dir, data, blobs, 'rolledback', when, record, keep=False)
    apply_swap(path, blob_dir, plan)
    with open(archived['path'] + '.json', 'w', encoding='utf-8') as handle:
        json.dump({'archived_at': zu.now_iso(), 'replaced_by_pair': wanted,
                   'transactions': result['archived_transactions'],
                   'last_tid': result['archived_last_tid']}, handle, indent=2)
    os.unlink('%s.installed.json.prev-%s' % (path, wanted))
    state = zfmt.storage_state(path)
    if zfmt.tid_to_hex(state['tid']) != kept['tid']:
        raise zu.ZODBDataError('After the swap %s reports last tid %s, not %s. The current pair '
                               'was archived as %s.' % (path, zfmt.tid_to_hex(state['tid']),
                                                        kept['tid'], archived['path']))
    result['removed_files'] = clear_caches(params)
    result['msg'] = ('Swapped in the kept pair %s (tid %s) at %s; the pair it replaced (%s '
                     'transactions, last tid %s) is archived as %s.'
                     % (wanted, kept['tid'], path, result['archived_transactions'],
                        result['archived_last_tid'], archived['path']))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            snapshot=dict(type='path'),
            previous=dict(type='str'),
            path=dict(type='path', required=True),
            blob_dir=dict(type='path'),
            keep_previous=dict(type='int', default=1),
            keep_snapshot=dict(type='bool', default=False),
            cache_dirs=dict(type='list', elements='path', default=[]),
            cache_globs=dict(type='list', elements='str', default=[]),
            zeo_address=dict(type='str'),
            fstest=dict(type='bool', default=False),
            reserve_bytes=dict(type='int', default=0),
            replaced_after=dict(type='str'),
            **files.OWNERSHIP_ARGS
        ),
        required_one_of=[('snapshot', 'previous')],
        mutually_exclusive=[('snapshot', 'previous')],
        supports_check_mode=True,
    )
    zu.import_zodb(module)
    ownership = zu.ownership_of(module)
    params = module.params
    if params['keep_previous'] < 0:
        module.fail_json(msg='keep_previous is %d; use 0 or more.' % params['keep_previous'])
    started = time.monotonic()
    result = {'changed': False, 'previous': None, 'previous_pair': None, 'removed_previous': [],
              'removed_files': [], 'blobs_installed': 0, 'verify': None, 'bytes_verified': 0,
              'snapshot_removed': False, 'resumed': None}
    if params['previous']:
        result = {'changed': False, 'pair': None, 'tid': None, 'archived': None,
                  'archived_transactions': None, 'archived_last_tid': None,
                  'removed_files': [], 'resumed': None}
    guard = Guard(params)
    try:
        resumed = None
        if not module.check_mode and os.path.exists(journal_path(params['path'])):
            guard.hold()
            resumed = finish_interrupted(params['path'], params['blob_dir'])
            result['resumed'] = resumed['stamp']
        if params['previous']:
            rollback(module, result, guard)
        else:
            install(module, result, guard, resumed)
        zu.apply_ownership(module, ownership,
                           zu.storage_paths(params['path'], params['blob_dir']), result)
    except zu.ZODBDataError as exc:
        result.pop('diff', None)
        module.fail_json(msg=str(exc), **result)
    except OSError as exc:
        result.pop('diff', None)
        module.fail_json(msg=zu.os_error_message(
            exc, 'Changing the data at %s' % params['path'],
            'The current Data.fs is in place (it is never removed); a swap that was under way '
            'is finished by the next run.'), **result)
    finally:
        guard.release()
    if not module._diff:
        result.pop('diff', None)
    result['duration'] = zu.elapsed(started)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
