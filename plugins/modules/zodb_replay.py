#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zodb_replay
short_description: Copy the transactions a source committed after a tid into a target storage
description:
  - The catch-up of a cutover (see C(docs/promotion.md)) and after a snapshot. Reads the
    transactions the source committed after O(after_tid) (up to O(until_tid)) and
    writes them, with their tids, status, user, description, extension and blobs, into the
    target, a running ZEO server (O(zeo_address)), a stopped FileStorage (O(path)) or a
    storage opened from its configuration (O(target_config), a RelStorage database).
  - "The source is a FileStorage (O(source)) or a storage opened from its configuration
    (O(source_config), for example a RelStorage stage's C(etc/relstorage.conf)): its
    transactions after O(after_tid) are then found through the storage's own iterator and its
    blobs read through the storage."
  - B(RelStorage targets) (O(target_config)) take each transaction with C(restore()) /
    C(restoreBlob()) under the source's tid and the target's commit lock; its running clients
    see the new transactions at their next poll, as any other commit. The same checks hold
    (the target's last tid before, the last replayed tid after, read from the database).
  - B(The source may be live.) It is read, never locked or written. The transactions to copy
    are found by walking the transaction headers back from the end of the file (cost in
    proportion to the tail, not to the file); a last transaction still marked C(c) (being
    committed) is never copied.
  - B(The target must be exactly where the caller says.) Before anything is written the
    target's last transaction must be O(target_tid) (default O(after_tid)); otherwise the
    module refuses, naming both tids, because the target diverged or took writes of its own.
    The source must hold O(after_tid) itself, so that its history continues the target's.
  - B(Online, with running clients.) Through ZEO each transaction is written with
    C(tpc_begin(txn, tid, status)) and C(store()) / C(storeBlob()) under the source's tid,
    each record with the object's previous serial from the source, not with C(restore()),
    because ZEO's server does not invalidate restored objects in its other clients, so running Zope
    clients would keep serving the old state from their caches. Before each store the server
    checks (C(checkCurrentSerialInTransaction)) that the target holds exactly the source's
    previous revision, so a target that does not is refused before a conflict could be
    resolved; a conflict the server resolves anyway is refused as well.
  - B(Batched.) Through ZEO the transactions are sent in windows of up to 64 (or 4 MiB), the
    next window sent while the server commits the one before, instead of waiting for two
    replies per transaction; blobs are streamed from the source's files. Each transaction
    also checks one object the transaction before it wrote, so when one fails, every one sent
    after it fails too and the target keeps a prefix of the tail, never one with a hole.
  - B(Offline) (O(path), the target's ZEO server stopped) the records are written with
    C(restore()) / C(restoreBlob()), byte for byte, backpointers included.
  - Each transaction is voted and finished or, on any error, aborted (C(tpc_abort)), so a
    failed transaction leaves nothing in the target; the target then holds a prefix of the
    tail (as its server reports it) and the error says which tid to give as O(target_tid) to
    go on.
  - B(Verified.) After the replay the target must report the last replayed tid (ZEO is asked
    by the server's own C(lastTransaction)), else the module fails.
  - B(Idempotence.) A re-run after a replay that succeeded (the target's last tid is the
    tail's last one and it holds exactly the tail's tids after O(target_tid)) reports
    C(changed) false.
version_added: 0.1.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.zodb
  - zopeops.stages.zodb.zeo
options:
  source:
    description:
      - The source FileStorage (a ZEO server may be serving it). It is only read. One of
        O(source) and O(source_config) is required.
    type: path
  source_config:
    description:
      - A ZConfig file that describes the source storage, a C(<zodb>) section around the
        storage's section or the storage's section alone (a RelStorage side's
        C(etc/relstorage.conf), whose C(dsn) names a passfile, never a password). Only the
        storage is opened, never written; its blobs come through it (no O(source_blob_dir)).
    type: path
  source_blob_dir:
    description:
      - The source's blob directory. Needed when a transaction to copy stores a blob; the
        module refuses before writing anything if one does and this is not given.
    type: path
  after_tid:
    description:
      - Replay the transactions with a tid greater than this one (16 hex digits), usually the
        target's last tid when it was installed or last caught up. One of O(after_tid) and
        O(after_manifest) is required.
    type: str
  after_manifest:
    description:
      - Take O(after_tid) from this JSON file's C(tid) (a snapshot C(manifest.json), a
        C(Data.fs.installed.json) written by M(zopeops.stages.zodb_restore), or a snapshot
        directory).
    type: path
  until_tid:
    description:
      - Stop after this tid (16 hex digits), the source's last tid read while writes are
        frozen. The source must hold it as a committed transaction after O(after_tid), else
        the module fails before writing. Omitted, every committed transaction is copied.
    type: str
  target_tid:
    description:
      - The last tid the target must report before anything is written. Defaults to
        O(after_tid). Give it to go on after a replay that stopped part way (the error names
        it).
    type: str
  not_after:
    description:
      - "Epoch seconds (this host's clock) after which no transaction is written any more: the
        deadline of the write freeze's lease minus its margin, for the replay of a cutover. A
        transaction not begun (sent) by then is not written and the module fails, naming the tid
        the target holds; one begun before it is finished. Omitted, no deadline."
    type: float
  passes:
    description:
      - Replay again what the source committed while a pass ran, up to this many passes in all,
        until a pass copies at most O(settle) transactions. For the catch-up before a write
        freeze, so that the frozen part of a cutover copies only what arrived meanwhile.
    type: int
    default: 1
  settle:
    description: With O(passes), stop once a pass copied at most this many transactions.
    type: int
    default: 5
  zeo_address:
    description:
      - The target's RUNNING ZEO server, C(host:port) or a unix socket path. Exactly one of
        O(zeo_address), O(path) and O(target_config) is required, except in check mode (see
        attributes).
  path:
    description:
      - The target FileStorage, stopped (its C(.lock) must not be held).
    type: path
  target_config:
    description:
      - A ZConfig file that describes the target storage (as O(source_config)), usually a
        RelStorage side's C(etc/relstorage.conf); its clients may be running. Exactly one of
        O(zeo_address), O(path) and O(target_config) is required, except in check mode.
    type: path
  target_blob_dir:
    description:
      - The stopped target's blob directory (with O(path)); needed when blobs are copied.
        Through ZEO the server's own blob directory is used.
    type: path
    aliases: [blob_dir]
attributes:
  check_mode:
    support: full
    details: Counts the source's transactions after O(after_tid) (in RV(transactions)) and, when
      a target is given, checks it as a run would (RV(target_tid_before)); writes nothing.
      Without O(path) and O(zeo_address) only the source is read.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
notes:
  - Speed. The module opens no index of either file and connects once. Through ZEO what is
    left is the target server's own work, above all the C(fsync) of each commit, which keeps
    each source transaction durable under its own tid (see C(docs/benchmarks.md), "Replay").
seealso:
  - module: zopeops.stages.zodb_snapshot
  - module: zopeops.stages.zodb_restore
'''

EXAMPLES = r'''
- name: Close the gap while beta still serves (writes keep coming).
  zopeops.stages.zodb_replay:
    source: "{{ zopeops_root }}/beta/var/filestorage/Data.fs"
    source_blob_dir: "{{ zopeops_root }}/beta/var/blobstorage"
    after_tid: "{{ twin_installed_tid }}"
    zeo_address: "127.0.0.1:8200"
  register: gap

- name: With writes frozen, replay exactly up to the source's last tid.
  zopeops.stages.zodb_replay:
    source: "{{ zopeops_root }}/beta/var/filestorage/Data.fs"
    source_blob_dir: "{{ zopeops_root }}/beta/var/blobstorage"
    after_tid: "{{ gap.last_tid or twin_installed_tid }}"
    until_tid: "{{ source_last_tid }}"
    zeo_address: "127.0.0.1:8200"

- name: Count what the stage committed since it was installed (no target, nothing written).
  zopeops.stages.zodb_replay:
    source: "{{ zopeops_root }}/test/var/filestorage/Data.fs"
    after_manifest: "{{ zopeops_root }}/test/var/filestorage/Data.fs.installed.json"
  check_mode: true
  register: since_install
'''

RETURN = r'''
transactions:
  description: Transactions copied (in check mode, that would be copied; 0 on a re-run that
    finds them already there).
  type: int
  returned: always
first_tid:
  description: The first copied transaction id, or null.
  type: str
  returned: always
last_tid:
  description: The last copied transaction id, or null. After a replay the target reports it
    as its last transaction.
  type: str
  returned: always
after_tid:
  description: The tid the replay started after.
  type: str
  returned: always
target_tid_before:
  description: The target's last transaction id before anything was written (null without a
    target).
  type: str
  returned: always
blobs:
  description: Blob files copied.
  type: int
  returned: always
bytes:
  description: Bytes of the source's transaction records copied (that would be copied).
  type: int
  returned: always
passes:
  description: How many passes the replay made (see O(passes)).
  returned: when something was copied
  type: int
  sample: 2
settled:
  description: Whether the last pass copied at most O(settle) transactions, or the source had
    nothing new after it, that is whether the replay caught up with a source that keeps
    writing.
  returned: when something was copied
  type: bool
  sample: true
seconds:
  description: Seconds the module spent, from its start to its result.
  type: float
  returned: always
msg:
  description: What happened.
  type: str
  returned: always
'''

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils.zodb_replay_core import (
    REPLAY_ARGUMENT_SPEC, new_result, replay)


def main():
    module = AnsibleModule(
        argument_spec=REPLAY_ARGUMENT_SPEC,
        required_one_of=[('after_tid', 'after_manifest'), ('source', 'source_config')],
        mutually_exclusive=[('path', 'zeo_address', 'target_config'),
                            ('after_tid', 'after_manifest'), ('source', 'source_config'),
                            ('source_config', 'source_blob_dir')],
        supports_check_mode=True,
    )
    started = time.monotonic()
    params = module.params
    if not module.check_mode and not (params['path'] or params['zeo_address'] or
                                      params['target_config']):
        module.fail_json(msg='one of the following is required: path, zeo_address, '
                             'target_config (only check mode, which counts the source\'s '
                             'transactions, works without a target)')
    zu.import_zodb(module)
    result = new_result()
    try:
        replay(params, module.check_mode, result)
    except zu.ZODBDataError as exc:
        module.fail_json(msg=str(exc), seconds=zu.elapsed(started), **result)
    except OSError as exc:
        module.fail_json(msg=zu.os_error_message(
            exc, 'Replaying %s into %s' % (
                params['source'] or params['source_config'],
                params['path'] or params['zeo_address'] or params['target_config']),
            'A transaction that failed was aborted, so the target holds a prefix of the '
            'source; fix the cause and run the replay again.'),
            seconds=zu.elapsed(started), **result)
    result['seconds'] = zu.elapsed(started)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
