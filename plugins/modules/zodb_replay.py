#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zodb_replay
short_description: Copy the transactions a source committed after a tid into a target storage
description:
  - Catch-up after a snapshot. Reads the transactions of the source FileStorage committed after
    O(after_tid) (or the tid of a snapshot manifest, O(after_manifest)) and writes them, with
    their tids, user, description and blobs, into the target with the storage API's
    C(restore()) / C(restoreBlob()).
  - The target is a stopped FileStorage (O(path)), or a running ZEO server (O(zeo_address)).
    ZEO's client API has no C(restoreBlob), so transactions with blobs can only be replayed
    offline; the module refuses such an online replay before it writes anything.
  - The source may be live (served by a running ZEO server). It is read, never locked or
    written, and only fully committed transactions are copied.
  - B(Safety.) C(restore()) does not check the order of tids, so the target must have taken no
    writes of its own after O(after_tid). The module refuses a target whose last transaction
    is older than O(after_tid) (it lacks history) or which has transactions after it that the
    source does not have (diverged).
  - B(Idempotence.) A target that already has some or all of the source's later transactions
    (an earlier replay) is resumed after its last one; C(changed) is false when there is
    nothing left to copy.
version_added: 0.1.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.zodb
  - zopeops.stages.zodb.storage
  - zopeops.stages.zodb.zeo
options:
  source:
    description:
      - The source FileStorage.
    type: path
    required: true
  source_blob_dir:
    description:
      - The source's blob directory. Needed when the replayed transactions store blobs.
    type: path
  after_tid:
    description:
      - Replay the transactions after this tid (16 hex digits).
    type: str
  after_manifest:
    description:
      - Take O(after_tid) from this JSON file's C(tid) (a snapshot C(manifest.json), a
        C(Data.fs.installed.json) written by M(zopeops.stages.zodb_restore), or a snapshot
        directory).
    type: path
  path:
    description:
      - The target FileStorage (stopped). Exactly one of O(path) and O(zeo_address) is needed.
  blob_dir:
    description:
      - The target's blob directory.
  zeo_address:
    description:
      - Replay through the target's running ZEO server instead.
attributes:
  check_mode:
    support: full
    details: Reads both sides and says how many transactions would be copied; writes nothing.
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
- name: Copy what beta committed since the snapshot into the stopped test twin.
  zopeops.stages.zodb_replay:
    source: "{{ zopeops_root }}/beta/var/filestorage/Data.fs"
    source_blob_dir: "{{ zopeops_root }}/beta/var/blobstorage"
    after_manifest: "{{ zopeops_root }}/test_upgrade/var/filestorage/Data.fs.installed.json"
    path: "{{ zopeops_root }}/test_upgrade/var/filestorage/Data.fs"
    blob_dir: "{{ zopeops_root }}/test_upgrade/var/blobstorage"
'''

RETURN = r'''
transactions_replayed:
  description: Transactions copied (would be copied, in check mode).
  type: int
  returned: always
first_tid:
  description: The first copied transaction id, or null.
  type: str
  returned: always
last_tid:
  description: The last copied transaction id, or null.
  type: str
  returned: always
after_tid:
  description: The tid the replay started after, as given.
  type: str
  returned: always
resumed_after:
  description: The tid the copy really started after (later than RV(after_tid) when the target
    already had some of the transactions).
  type: str
  returned: always
target_last_tid:
  description: The target's last transaction id after the replay.
  type: str
  returned: always
blobs_replayed:
  description: Blob files copied.
  type: int
  returned: always
duration:
  description: Seconds the module spent.
  type: float
  returned: always
'''

import json
import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu


def after_tid_from(params):
    if params['after_tid']:
        try:
            return zu.hex_to_tid(params['after_tid'])
        except ValueError as exc:
            raise zu.ZODBDataError('after_tid: %s.' % exc) from None
    path = params['after_manifest']
    if os.path.isdir(path):
        path = zu.manifest_path(path)
    try:
        with open(path, encoding='utf-8') as handle:
            return zu.hex_to_tid(json.load(handle)['tid'])
    except (OSError, ValueError, KeyError) as exc:
        raise zu.ZODBDataError('Cannot read a tid from %s: %s. Give after_tid, or the manifest '
                               'of the snapshot the target was installed from.' % (path, exc))


def source_transactions(source, after, limit_tid):
    """(tid, has_blobs) of the source's committed transactions after ``after``."""
    from ZODB.FileStorage import FileIterator
    from ZODB.blob import is_blob_record
    found = []
    # stop= keeps the iterator off a transaction being committed after the walk's end
    iterator = FileIterator(source, start=zu.int_to_tid(zu.tid_to_int(after) + 1),
                            stop=limit_tid)
    try:
        for txn in iterator:
            if txn.tid > limit_tid:
                break
            found.append((txn.tid, any(is_blob_record(r.data) for r in txn if r.data)))
    finally:
        iterator.close()
    return found


def target_tids_after(target, after):
    tids = []
    iterator = target.iterator(zu.int_to_tid(zu.tid_to_int(after) + 1))
    try:
        for txn in iterator:
            tids.append(txn.tid)
    finally:
        close = getattr(iterator, 'close', None)
        if close:
            close()
    return tids


def open_target(params, read_only):
    if params['path']:
        zu.check_filestorage(params['path'], 'target')
        zu.refuse_if_locked(params['path'], 'replay into')
        from ZODB.FileStorage import FileStorage
        import zc.lockfile
        kwargs = {'blob_dir': params['blob_dir']} if params['blob_dir'] else {}
        if read_only:  # check mode: no lock, no index written, no tail truncated
            kwargs['read_only'] = True
        try:
            return FileStorage(params['path'], **kwargs), params['path']
        except zc.lockfile.LockError:
            raise zu.ZODBDataError('Cannot replay into %s: it was locked just now (its ZEO '
                                   'server started?). Stop it, or use zeo_address.'
                                   % params['path']) from None
    return zu.open_zeo(params['zeo_address'], params['storage'], read_only=read_only,
                       timeout=params['zeo_timeout']), params['zeo_address']


def copy_transaction(txn, target, source_blobs, counters):
    from ZODB.blob import is_blob_record
    target.tpc_begin(txn, txn.tid, txn.status)
    for record in txn:
        if record.data and source_blobs is not None and is_blob_record(record.data):
            blob_path = source_blobs.getBlobFilename(record.oid, record.tid)
            if not os.path.exists(blob_path):
                raise zu.ZODBDataError(
                    'The source blob file %s of object %s in transaction %s is missing. '
                    'Check source_blob_dir.' % (blob_path, zu.tid_to_hex(record.oid),
                                                zu.tid_to_hex(txn.tid)))
            temp = os.path.join(target.temporaryDirectory(),
                                'replay-%s-%s.blob' % (record.oid.hex(), record.tid.hex()))
            shutil.copyfile(blob_path, temp)
            target.restoreBlob(record.oid, record.tid, record.data, temp, record.data_txn, txn)
            counters['blobs'] += 1
        else:
            target.restore(record.oid, record.tid, record.data, '', record.data_txn, txn)
    target.tpc_vote(txn)
    target.tpc_finish(txn)


def replay(module, result):
    params = module.params
    source = params['source']
    zu.check_filestorage(source, 'source')
    after = after_tid_from(params)
    result['after_tid'] = zu.tid_to_hex(after)
    state = zu.storage_state(source)
    source_last = state['tid'] or zu.Z64
    pending = source_transactions(source, after, source_last)
    target, where = open_target(params, module.check_mode)
    try:
        target_last = target.lastTransaction() or zu.Z64
        resume = after
        if target_last < after:
            raise zu.ZODBDataError(
                'Refusing to replay into %s: its last transaction %s is older than %s, so it '
                'lacks history the replay builds on. Install the snapshot of %s first.'
                % (where, zu.tid_to_hex(target_last), zu.tid_to_hex(after),
                   zu.tid_to_hex(after)))
        if target_last > after:
            own = target_tids_after(target, after)
            theirs = [tid for tid, _blobs in pending[:len(own)]]
            if own != theirs:
                raise zu.ZODBDataError(
                    'Refusing to replay into %s: it has transactions after %s that the source '
                    '%s does not have (first: %s), so it took writes of its own and the '
                    'histories diverged. Install a new snapshot instead.'
                    % (where, zu.tid_to_hex(after), source,
                       zu.tid_to_hex(next(t for i, t in enumerate(own)
                                          if i >= len(theirs) or theirs[i] != t))))
            resume = target_last
            pending = pending[len(own):]
        result['resumed_after'] = zu.tid_to_hex(resume)
        if params['zeo_address'] and any(has_blobs for _tid, has_blobs in pending):
            raise zu.ZODBDataError(
                'Refusing to replay into the ZEO server at %s: transactions to copy store blobs '
                'and ZEO clients cannot restore blobs. Stop the target and replay offline with '
                'path and blob_dir.' % where)
        if any(has_blobs for _tid, has_blobs in pending) and not (
                params['source_blob_dir'] and params['blob_dir']):
            raise zu.ZODBDataError(
                'Refusing to replay into %s: transactions to copy store blobs; give '
                'source_blob_dir and blob_dir.' % where)
        result.update(transactions_replayed=len(pending),
                      first_tid=zu.tid_to_hex(pending[0][0]) if pending else None,
                      last_tid=zu.tid_to_hex(pending[-1][0]) if pending else None,
                      changed=bool(pending))
        if module.check_mode or not pending:
            result['target_last_tid'] = zu.tid_to_hex(target_last)
            result['msg'] = '%s %d transactions from %s into %s after %s.' % (
                'Would copy' if module.check_mode else 'Nothing to copy:', len(pending),
                source, where, zu.tid_to_hex(resume))
            return
        from ZODB.FileStorage import FileIterator
        from ZODB.blob import FilesystemHelper
        source_blobs = None
        if params['source_blob_dir']:
            source_blobs = FilesystemHelper(params['source_blob_dir'])
        counters = {'blobs': 0, 'txns': 0}
        last_tid = pending[-1][0]
        iterator = FileIterator(source, start=pending[0][0], stop=last_tid)
        try:
            for txn in iterator:
                if txn.tid > last_tid:
                    break
                copy_transaction(txn, target, source_blobs, counters)
                counters['txns'] += 1
        finally:
            iterator.close()
        result.update(transactions_replayed=counters['txns'], blobs_replayed=counters['blobs'],
                      target_last_tid=zu.tid_to_hex(target.lastTransaction()))
        result['msg'] = 'Copied %d transactions (%s .. %s) from %s into %s.' % (
            counters['txns'], result['first_tid'], result['last_tid'], source, where)
    finally:
        target.close()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            source=dict(type='path', required=True),
            source_blob_dir=dict(type='path'),
            after_tid=dict(type='str'),
            after_manifest=dict(type='path'),
            path=dict(type='path'),
            blob_dir=dict(type='path'),
            zeo_address=dict(type='str'),
            storage=dict(type='str', default='1'),
            zeo_timeout=dict(type='float', default=30),
        ),
        required_one_of=[('path', 'zeo_address'), ('after_tid', 'after_manifest')],
        mutually_exclusive=[('path', 'zeo_address'), ('after_tid', 'after_manifest')],
        supports_check_mode=True,
    )
    zu.import_zodb(module)
    started = time.monotonic()
    result = {'changed': False, 'transactions_replayed': 0, 'first_tid': None, 'last_tid': None,
              'blobs_replayed': 0}
    try:
        replay(module, result)
    except zu.ZODBDataError as exc:
        module.fail_json(msg=str(exc), **result)
    result['duration'] = zu.elapsed(started)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
