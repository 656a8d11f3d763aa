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
  - B(Keeps the previous data for rollback.) The current C(Data.fs) becomes
    C(Data.fs.prev-<UTC timestamp>) and the blob directory C(<blob_dir>.prev-<same timestamp>),
    beside the originals (same directory, so same filesystem, so the renames are atomic). The
    newest O(keep_previous) such pairs are kept, older ones removed. Rolling back is renaming
    them back (with the instance stopped).
  - The new files are first copied to C(<path>.new-<pid>) / C(<blob_dir>.new-<pid>) beside the
    targets, then renamed into place. The stale C(Data.fs.index), C(Data.fs.tmp) and
    C(Data.fs.lock) are removed, and the ZEO client caches (C(*.zec)) named by O(cache_dirs)
    and O(cache_globs) are deleted, since clients with a persistent cache refuse to connect to
    a storage whose history changed.
  - B(Idempotence.) C(<path>.installed.json) records what was installed (the manifest's tid,
    size and range checksums). The result is C(changed) false when the target's last
    transaction is still the snapshot's tid and either that record names the same snapshot
    (so the target took no writes since the install; packing it afterwards does not count) or,
    without a record, the target's Data.fs has the snapshot's size and checksums and its blob
    directory at least the snapshot's blob count. That check only reads, so a re-run after the
    target's ZEO server was started on the installed data (and took no writes yet) reports
    C(ok) instead of refusing.
  - The previous install record is kept as C(<path>.installed.json.prev-<stamp>), so that a
    glob for C(Data.fs.prev-*) finds only the kept data files.
version_added: 0.1.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.zodb
  - zopeops.stages.zodb.storage
  - zopeops.stages.zodb.reserve
options:
  snapshot:
    description:
      - The snapshot directory (with C(manifest.json), C(Data.fs), C(blobs/)).
    type: path
    required: true
  path:
    description:
      - The target instance's FileStorage, e.g. C(<instance>/var/filestorage/Data.fs).
    required: true
  blob_dir:
    description:
      - The target's blob directory. Needed when the snapshot has blobs.
  keep_previous:
    description:
      - How many previous Data.fs (+ blob directory) pairs to keep for rollback. C(0) removes
        the previous data once the new data is in place.
    type: int
    default: 1
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
      - The target's ZEO address. When something answers there, the install is refused, in
        addition to the lock check.
    type: str
  fstest:
    description:
      - Also check the snapshot with C(python -m ZODB.scripts.fstest) (reads every record,
        about 0.4 GB/s) before installing.
    type: bool
    default: false
  blob_link:
    description:
      - Hard-link the snapshot's blob files into O(blob_dir) when both are on one filesystem,
        instead of copying them. ZODB never changes a blob file in place, so the snapshot stays
        intact. The Data.fs is always copied, because the target's ZEO server appends to it.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: The snapshot is verified and the target checked; nothing is written.
  diff_mode:
    support: full
    details: Shows the target's tid and size before and after.
  platform:
    support: full
    platforms: posix
seealso:
  - module: zopeops.stages.zodb_snapshot
  - module: zopeops.stages.zodb_replay
'''

EXAMPLES = r'''
- name: Install beta's snapshot on the stopped test twin.
  zopeops.stages.zodb_restore:
    snapshot: "{{ zopeops_instance_dir }}/var/snapshots/incoming"
    path: "{{ zopeops_instance_dir }}/var/filestorage/Data.fs"
    blob_dir: "{{ zopeops_instance_dir }}/var/blobstorage"
    zeo_address: "{{ zopeops_zeo_address }}"
    cache_dirs: "{{ zopeops_clients | map(attribute='name') | map('regex_replace', '^', zopeops_instance_dir ~ '/var/') | list }}"
    keep_previous: 1
'''

RETURN = r'''
tid:
  description: The installed last transaction id (the manifest's), 16 hex digits.
  type: str
  returned: always
size:
  description: Size of the installed Data.fs.
  type: int
  returned: always
previous:
  description: Where the replaced Data.fs and blob directory were moved, or null.
  type: dict
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

import glob
import json
import os
import sys
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu


def verify_snapshot(params, manifest):
    snap = params['snapshot']
    data = os.path.join(snap, manifest.get('data_file') or zu.SNAPSHOT_DATA_NAME)
    problems = zu.verify_data_against_manifest(data, manifest)
    blob_rel = manifest.get('blob_dir')
    blob_src = os.path.join(snap, blob_rel) if blob_rel else None
    if blob_src:
        found = len(zu.committed_blobs(blob_src, zu.hex_to_tid(manifest['tid'])))
        if found != manifest.get('blob_count', found):
            problems.append('the snapshot blob directory %s holds %d blob files, the manifest '
                            'says %d' % (blob_src, found, manifest['blob_count']))
        if not params['blob_dir']:
            problems.append('the snapshot has blobs but no blob_dir was given for the target')
    if params['fstest'] and not problems:
        ok, output = zu.run_fstest(sys.executable, data)
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
        state = zu.storage_state(path)
    except zu.ZODBDataError:
        return {'size': os.path.getsize(path), 'tid': None}
    return {'size': state['file_size'], 'tid': zu.tid_to_hex(state['tid']),
            'blobs': len(zu.committed_blobs(blob_dir, b'\xff' * 8)) if blob_dir else 0}


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
    return not zu.verify_data_against_manifest(path, manifest)


def refuse_if_running(params):
    path = params['path']
    holder = zu.lock_holder(path)
    if holder is not None:
        raise zu.ZODBDataError(
            'Refusing to install into %s: its storage is locked (%s.lock held by %s), so its '
            'ZEO server or another process has it open. Stop the instance first.'
            % (path, path, holder))
    if params['zeo_address'] and zu.zeo_answers(params['zeo_address']):
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
                zu.remove_path(victim)
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


def install(module, result):
    params = module.params
    path, blob_dir, snap = params['path'], params['blob_dir'], params['snapshot']
    manifest = zu.read_manifest(snap)
    if manifest is None:
        raise zu.ZODBDataError('%s holds no manifest.json, so it is not a snapshot made by '
                               'zodb_snapshot. Check the snapshot path.' % snap)
    result.update(tid=manifest['tid'], size=manifest['size'],
                  verify=zu.manifest_verify(manifest), bytes_verified=zu.hashed_bytes(manifest))
    data_src, blob_src = verify_snapshot(params, manifest)
    before = target_state(path, blob_dir)
    result['diff'] = {'before': {'path': path, 'tid': before and before['tid'],
                                 'size': before and before['size']},
                      'after': {'path': path, 'tid': manifest['tid'], 'size': manifest['size']}}
    if already_installed(path, blob_dir, manifest, before):
        result['diff']['after'] = result['diff']['before']
        result['msg'] = '%s already holds the snapshot %s (tid %s).' % (path, snap,
                                                                        manifest['tid'])
        return
    refuse_if_running(params)
    blobs = zu.committed_blobs(blob_src, zu.hex_to_tid(manifest['tid'])) if blob_src else []
    link = bool(params['blob_link'] and blob_src and zu.same_filesystem(blob_src, blob_dir))
    needed = manifest['size'] + (0 if link else sum(size for _r, size in blobs))
    zu.require_free(path, needed, params['reserve_bytes'], 'install the snapshot %s' % snap)
    result['changed'] = True
    result['blobs_installed'] = len(blobs)
    if module.check_mode:
        result['msg'] = 'Would install the snapshot %s (tid %s, %d bytes, %d blobs) at %s.' % (
            snap, manifest['tid'], manifest['size'], len(blobs), path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    new_data = '%s.new-%d' % (path, os.getpid())
    new_blobs = '%s.new-%d' % (blob_dir.rstrip('/'), os.getpid()) if blob_dir else None
    try:
        src_fd = os.open(data_src, os.O_RDONLY)
        try:
            dst_fd = os.open(new_data, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                zu.copy_range(src_fd, dst_fd, 0, manifest['size'])
                os.fsync(dst_fd)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
        if new_blobs:
            zu.remove_path(new_blobs)
            if blob_src:
                zu.copy_blobs(blob_src, new_blobs, blobs, link)
            else:
                os.makedirs(new_blobs)
    except BaseException:
        for leftover in (new_data, new_blobs):
            if leftover and os.path.lexists(leftover):
                zu.remove_path(leftover)
        raise
    # Point of no return, kept short: rotate the old data away, rename the new in.
    when = zu.stamp()
    previous = {}
    record = path + '.installed.json'
    if os.path.exists(path):
        previous['path'] = '%s.prev-%s' % (path, when)
        os.rename(path, previous['path'])
        if os.path.exists(record):
            # named so that a glob for Data.fs.prev-* finds only the data files
            os.rename(record, '%s.prev-%s' % (record, when))
    if blob_dir and os.path.exists(blob_dir):
        previous['blob_dir'] = '%s.prev-%s' % (blob_dir.rstrip('/'), when)
        os.rename(blob_dir, previous['blob_dir'])
    try:
        os.rename(new_data, path)
        if new_blobs:
            os.rename(new_blobs, blob_dir)
    except OSError:
        if previous.get('path') and not os.path.exists(path):
            os.rename(previous['path'], path)
        if previous.get('blob_dir') and not os.path.exists(blob_dir):
            os.rename(previous['blob_dir'], blob_dir)
        raise
    zu.fsync_dir(folder)
    removed = []
    for suffix in ('.index', '.tmp', '.lock'):
        stale = path + suffix
        if os.path.lexists(stale):
            os.unlink(stale)
            removed.append(stale)
    removed += clear_caches(params)
    installed = dict(manifest)
    installed.update(installed_from=os.path.abspath(snap), installed_at=zu.now_iso(),
                     previous=previous or None)
    installed.pop('history', None)
    zu.write_json_atomic(record, installed)
    result.update(previous=previous or None, removed_files=removed,
                  removed_previous=prune_previous(path, blob_dir, params['keep_previous']))
    result['msg'] = 'Installed the snapshot %s (tid %s, %d bytes, %d blobs) at %s.' % (
        snap, manifest['tid'], manifest['size'], len(blobs), path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            snapshot=dict(type='path', required=True),
            path=dict(type='path', required=True),
            blob_dir=dict(type='path'),
            keep_previous=dict(type='int', default=1),
            cache_dirs=dict(type='list', elements='path', default=[]),
            cache_globs=dict(type='list', elements='str', default=[]),
            zeo_address=dict(type='str'),
            fstest=dict(type='bool', default=False),
            blob_link=dict(type='bool', default=True),
            reserve_bytes=dict(type='int', default=0),
        ),
        supports_check_mode=True,
    )
    zu.import_zodb(module)
    if module.params['keep_previous'] < 0:
        module.fail_json(msg='keep_previous is %d; use 0 or more.' % module.params['keep_previous'])
    started = time.monotonic()
    result = {'changed': False, 'previous': None, 'removed_previous': [], 'removed_files': [],
              'blobs_installed': 0, 'verify': None, 'bytes_verified': 0}
    try:
        install(module, result)
    except zu.ZODBDataError as exc:
        result.pop('diff', None)
        module.fail_json(msg=str(exc), **result)
    except OSError as exc:
        result.pop('diff', None)
        module.fail_json(msg='Installing the snapshot %s at %s failed: %s. Check permissions and '
                             'free space; the previous data is kept as reported in previous.'
                         % (module.params['snapshot'], module.params['path'], exc), **result)
    if not module._diff:
        result.pop('diff', None)
    result['duration'] = zu.elapsed(started)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
