#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zodb_pack
short_description: Pack a ZODB FileStorage, offline on its file or online through its ZEO server
description:
  - Removes old object revisions (older than O(days)) and, with O(gc), unreachable objects and
    their blobs from a FileStorage.
  - B(Offline) (O(path)) the module opens the file itself. Refuses, without opening it read-write, while
    the storage is locked by a running process (a ZEO server holds C(Data.fs.lock)).
  - B(Online) (O(zeo_address)) it asks the running ZEO server to pack, as C(zeopack) does.
  - B(RelStorage) (O(config), a RelStorage side's C(etc/relstorage.conf)) it opens the storage
    from its configuration and runs RelStorage's own pack (C(storage.pack) with ZODB's
    reference finder, as RelStorage's C(zodbpack) does) while the clients keep serving; the
    sizes are the database's (C(pg_database_size)).
  - B(Idempotence.) The result is C(changed) only if the pack removed something, that is if
    the storage file got smaller or blob files were removed. A second pack with the same
    O(days) finds the history already packed (ZODB marks packed transactions) and does nothing.
  - B(Not during a snapshot.) Offline, the module packs under an exclusive lock on
    C(<path>.pack.lock), next to the Data.fs. M(zopeops.stages.zodb_snapshot) holds the same
    lock (shared) while it reads the file, so a pack waits for the snapshots of its file, up
    to O(lock_timeout), and fails without packing if they take longer. Online the ZEO server
    packs and this lock is not taken, so do not pack online while a snapshot is taken.
  - B(Errors.) A failure, a full disk (C(ENOSPC)) included, is reported with the path and
    what to do. ZODB renames the packed file in only once it is complete, so the storage is
    as it was after a failed pack.
  - "B(Ownership): The packed Data.fs and the files named after it beside it, and the blob
      folder get O(owner), O(group) and O(file_mode) (C(0600) by default: the data is the
      service's alone)."
version_added: 0.1.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.zodb
  - zopeops.stages.zodb.storage
  - zopeops.stages.zodb.ownership
  - zopeops.stages.zodb.zeo
options:
  path:
    description:
      - The FileStorage to pack offline. Exactly one of O(path) and O(zeo_address) is needed.
  zeo_address:
    description:
      - Pack online through the ZEO server at this address instead.
  config:
    description:
      - Pack the storage this ZConfig file describes instead (a RelStorage side's
        C(etc/relstorage.conf); its C(dsn) names a passfile). Exactly one of O(path),
        O(zeo_address) and O(config) is needed.
    type: path
  days:
    description:
      - Days of history to keep; fractions allowed. C(0) keeps only the current revisions.
    type: float
    default: 0
  gc:
    description:
      - Also remove objects (and their blobs) that are no longer reachable from the root.
      - Online, the server's own C(pack-gc) setting decides; C(false) is refused online
        because a client cannot turn it off.
    type: bool
    default: true
  lock_timeout:
    description:
      - Offline, seconds to wait for C(<path>.pack.lock) while snapshots of the file are taken,
        before failing without packing.
    type: float
    default: 60
  keep_old:
    description:
      - Keep the pre-pack file as C(Data.fs.old) (offline only). It costs the old file's size
        on disk; C(false) removes it after a successful pack.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Nothing is packed and no lock is taken. Offline the module reads the transaction
      headers and says
      whether a pack would run or find the history already packed; online it says which
      server would be asked.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
seealso:
  - module: zopeops.stages.zodb_snapshot
  - module: zopeops.stages.zodb_restore
'''

EXAMPLES = r'''
- name: Pack the twin's storage before its ZEO server starts.
  zopeops.stages.zodb_pack:
    path: "{{ zopeops_instance_dir }}/var/filestorage/Data.fs"
    blob_dir: "{{ zopeops_instance_dir }}/var/blobstorage"
    days: 0
  vars:
    ansible_python_interpreter: "{{ zopeops_instance_dir }}/current/venv/bin/python"

- name: Pack a running storage through its ZEO server, keeping a week of history.
  zopeops.stages.zodb_pack:
    zeo_address: "127.0.0.1:8100"
    storage: "1"
    days: 7
'''

RETURN = r'''
attributes_changed:
  description: How many of the packed Data.fs, a kept C(.old) and the blob folder (offline packs) got (in
    check mode, would get) the owner, group or mode of
    O(owner), O(group) and O(file_mode); 0 when they had them already.
  type: int
  returned: success
  sample: 3
mode:
  description: C(offline) or C(online).
  type: str
  returned: always
size_before:
  description: Size of the storage in bytes before the pack (online, as the server reports it).
  type: int
  returned: always
size_after:
  description: Size after the pack (the same as RV(size_before) in check mode).
  type: int
  returned: always
bytes_freed:
  description: RV(size_before) - RV(size_after).
  type: int
  returned: always
blobs_before:
  description: Blob files before the pack (offline with O(blob_dir) only).
  type: int
  returned: when blob_dir is set
blobs_after:
  description: Blob files after the pack.
  type: int
  returned: when blob_dir is set
last_tid_before:
  description: Last transaction id before the pack, 16 hex digits.
  type: str
  returned: always
last_tid_after:
  description: Last transaction id after the pack (a pack does not add transactions).
  type: str
  returned: always
pack_time:
  description: The pack time as ISO 8601 UTC; history before it was removed.
  type: str
  returned: always
duration:
  description: Seconds the module spent.
  type: float
  returned: always
msg:
  description: What happened, or would happen in check mode.
  type: str
  returned: always
'''

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_format as zfmt
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_blobs as zblob
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_locks as zlock
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_zeo as zzeo
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_storage as zstore
from ansible_collections.zopeops.stages.plugins.module_utils import files


def count_blobs(blob_dir):
    if not blob_dir or not os.path.isdir(blob_dir):
        return None
    return len(zblob.committed_blobs(blob_dir, b'\xff' * 8))


def pack_would_run(path, pack_tid):
    """What a pack up to ``pack_tid`` would do, read from the transaction headers alone.

    'empty' (no transactions), 'nothing-old' (none before the pack time), 'packed' (the last
    transaction before the pack time is already marked packed, so ZODB skips the pack) or 'run'.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        end, last_tid, _count = zfmt.committed_end(fd)
        pos, last_status = 4, None
        while pos < end:
            header = os.pread(fd, zfmt.TXN_HEADER_LEN, pos)
            tid, tlen, status, _u, _d, _e = zfmt.TXN_HEADER.unpack(header)
            if tid >= pack_tid:
                break
            last_status = status
            pos += tlen + 8
    finally:
        os.close(fd)
    if last_tid is None:
        return 'empty'
    if last_status is None:
        return 'nothing-old'
    return 'run' if last_status in (b' ', b'u') else 'packed'


def pack_offline(module, result):
    path, blob_dir = module.params['path'], module.params['blob_dir']
    zfmt.check_filestorage(path, 'storage')
    zlock.refuse_if_locked(path, 'pack')
    state = zfmt.storage_state(path)
    pack_t = time.time() - module.params['days'] * 86400
    from persistent.timestamp import TimeStamp
    pack_tid = TimeStamp(*time.gmtime(pack_t)[:5] + (pack_t % 60,)).raw()
    result.update(size_before=state['file_size'], last_tid_before=zfmt.tid_to_hex(state['tid']),
                  pack_time=zfmt.tid_to_iso(pack_tid))
    blobs_before = count_blobs(blob_dir)
    if blobs_before is not None:
        result['blobs_before'] = blobs_before
    if module.check_mode:
        verdict = pack_would_run(path, pack_tid)
        result.update(size_after=state['file_size'], bytes_freed=0,
                      last_tid_after=result['last_tid_before'], changed=verdict == 'run')
        if blobs_before is not None:
            result['blobs_after'] = blobs_before
        result['msg'] = {
            'empty': 'Would not pack %s: it holds no transactions.' % path,
            'nothing-old': 'Would not pack %s: no transaction is older than %s.' % (
                path, result['pack_time']),
            'packed': 'Would not pack %s: its history up to %s is already packed.' % (
                path, result['pack_time']),
            'run': 'Would pack %s (%d bytes) up to %s%s; how much it frees is known only by '
                   'packing.' % (path, state['file_size'], result['pack_time'],
                                 ', with garbage collection' if module.params['gc'] else ''),
        }[verdict]
        return
    from ZODB.FileStorage import FileStorage
    from ZODB.serialize import referencesf
    import zc.lockfile
    kwargs = {'pack_gc': module.params['gc'], 'pack_keep_old': module.params['keep_old']}
    if blob_dir:
        kwargs['blob_dir'] = blob_dir
    with zlock.pack_lock(path, False, module.params['lock_timeout'], 'pack'):
        try:
            storage = FileStorage(path, **kwargs)
        except zc.lockfile.LockError:
            raise zu.ZODBDataError('Cannot pack %s: it was locked by another process just now '
                                   '(its ZEO server started?). Stop it and run again.' % path)
        try:
            storage.pack(pack_t, referencesf, gc=module.params['gc'])
            last_after = storage.lastTransaction()
        finally:
            storage.close()
    size_after = os.path.getsize(path)
    result.update(size_after=size_after, bytes_freed=state['file_size'] - size_after,
                  last_tid_after=zfmt.tid_to_hex(last_after))
    blobs_after = count_blobs(blob_dir)
    if blobs_after is not None:
        result['blobs_after'] = blobs_after
    removed_blobs = (blobs_before or 0) - (blobs_after or 0)
    result['changed'] = result['bytes_freed'] > 0 or removed_blobs > 0
    result['msg'] = ('Packed %s up to %s: %d bytes and %d blob files freed.'
                     % (path, result['pack_time'], result['bytes_freed'], removed_blobs)
                     if result['changed'] else
                     'Packed %s up to %s: nothing to remove.' % (path, result['pack_time']))


def pack_online(module, result):
    params = module.params
    address, storage_name = params['zeo_address'], params['storage']
    if not params['gc']:
        raise zu.ZODBDataError(
            'Cannot pack %s without garbage collection online: the ZEO server decides that '
            'with "pack-gc" in its zeo.conf. Set pack-gc false there and use gc: true, or pack '
            'offline with path.' % address)
    pack_t = time.time() - params['days'] * 86400
    from persistent.timestamp import TimeStamp
    pack_tid = TimeStamp(*time.gmtime(pack_t)[:5] + (pack_t % 60,)).raw()
    client = zzeo.open_zeo(address, storage_name, read_only=module.check_mode,
                           timeout=params['zeo_timeout'])
    try:
        size_before = client.getSize()
        last_before = client.lastTransaction()
        result.update(size_before=size_before, last_tid_before=zfmt.tid_to_hex(last_before),
                      pack_time=zfmt.tid_to_iso(pack_tid))
        if module.check_mode:
            result.update(size_after=size_before, bytes_freed=0,
                          last_tid_after=result['last_tid_before'], changed=True,
                          msg='Would ask the ZEO server at %s to pack storage %r up to %s.'
                              % (address, storage_name, result['pack_time']))
            return
        client.pack(t=pack_t, wait=True)
    finally:
        client.close()
    # A new connection reports the size the server has after the pack.
    client = zzeo.open_zeo(address, storage_name, read_only=True, timeout=params['zeo_timeout'])
    try:
        size_after = client.getSize()
        last_after = client.lastTransaction()
    finally:
        client.close()
    result.update(size_after=size_after, bytes_freed=size_before - size_after,
                  last_tid_after=zfmt.tid_to_hex(last_after),
                  changed=size_after < size_before)
    result['msg'] = ('The ZEO server at %s packed storage %r up to %s: %d bytes freed.'
                     % (address, storage_name, result['pack_time'], result['bytes_freed']))


def database_size(storage):
    """The size of a RelStorage database in bytes (PostgreSQL's word), or 0 elsewhere."""
    adapter = getattr(storage, '_adapter', None)
    if adapter is None or 'postgresql' not in type(adapter).__module__:
        return 0
    conn, cursor = adapter.connmanager.open()
    try:
        cursor.execute('SELECT pg_database_size(current_database())')
        return int(cursor.fetchone()[0])
    finally:
        adapter.connmanager.close(conn, cursor)


def pack_configured(module, result):
    """RelStorage's own pack of the storage opened from its configuration (zodbpack's way)."""
    params = module.params
    pack_t = time.time() - params['days'] * 86400
    from persistent.timestamp import TimeStamp
    import ZODB.serialize
    pack_tid = TimeStamp(*time.gmtime(pack_t)[:5] + (pack_t % 60,)).raw()
    storage = zstore.open_from_config(params['config'], 'pack')
    try:
        size_before = database_size(storage)
        result.update(size_before=size_before,
                      last_tid_before=zfmt.tid_to_hex(zstore.last_tid(storage)),
                      pack_time=zfmt.tid_to_iso(pack_tid))
        if module.check_mode:
            result.update(size_after=size_before, bytes_freed=0,
                          last_tid_after=result['last_tid_before'], changed=True,
                          msg='Would pack the storage of %s up to %s.'
                              % (params['config'], result['pack_time']))
            return
        storage.pack(pack_t, ZODB.serialize.referencesf)
        size_after = database_size(storage)
        result.update(size_after=size_after, bytes_freed=size_before - size_after,
                      last_tid_after=zfmt.tid_to_hex(zstore.last_tid(storage)),
                      changed=size_after < size_before)
    finally:
        storage.close()
    result['msg'] = ('Packed the storage of %s up to %s (RelStorage\'s pack): the database '
                     'holds %d bytes, %d before (PostgreSQL reuses the space freed; its '
                     'autovacuum returns it).' % (params['config'], result['pack_time'],
                                                  result['size_after'], result['size_before']))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path'),
            blob_dir=dict(type='path'),
            zeo_address=dict(type='str'),
            config=dict(type='path'),
            storage=dict(type='str', default='1'),
            zeo_timeout=dict(type='float', default=30),
            days=dict(type='float', default=0),
            gc=dict(type='bool', default=True),
            keep_old=dict(type='bool', default=False),
            lock_timeout=dict(type='float', default=zlock.DEFAULT_LOCK_TIMEOUT),
            **files.OWNERSHIP_ARGS
        ),
        required_one_of=[('path', 'zeo_address', 'config')],
        mutually_exclusive=[('path', 'zeo_address', 'config')],
        supports_check_mode=True,
    )
    zu.import_zodb(module)
    ownership = zu.ownership_of(module)
    if module.params['days'] < 0:
        module.fail_json(msg='days is %s; it must be 0 or more (days of history to keep).'
                         % module.params['days'])
    started = time.monotonic()
    result = {'changed': False, 'mode': 'offline' if module.params['path'] else 'online'}
    try:
        if module.params['path']:
            pack_offline(module, result)
            zu.apply_ownership(module, ownership, zu.storage_paths(
                module.params['path'], module.params['blob_dir']), result)
        elif module.params['config']:
            pack_configured(module, result)
        else:
            pack_online(module, result)
    except zu.ZODBDataError as exc:
        module.fail_json(msg=str(exc), duration=zu.elapsed(started), **result)
    except OSError as exc:
        where = module.params['path'] or module.params['zeo_address'] or module.params['config']
        if exc.filename is None:  # a write through an open file: the packed file's
            exc.filename = where + '.pack' if module.params['path'] else where
        module.fail_json(msg=zu.os_error_message(
            exc, 'Packing %s' % where,
            'The storage is as it was: ZODB renames the packed file in only once it is '
            'complete (a leftover %s.pack can be removed).' % where),
            duration=zu.elapsed(started), **result)
    result['duration'] = zu.elapsed(started)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
