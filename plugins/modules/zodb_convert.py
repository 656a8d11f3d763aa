#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zodb_convert
short_description: Copy a storage's history into one of the other kind (FileStorage, RelStorage)
version_added: 0.3.0
description:
  - The first copy of a twin whose data source keeps its data the other way (a mixed pipeline,
    or the move of a stage between ZEO and RelStorage; C(docs/relstorage.md)). The target
    storage's own C(copyTransactionsFrom()) copies every transaction of the source with its
    tid, user, description, extension and blobs, which is what RelStorage's C(zodbconvert)
    does; this module adds the checks and the record a promotion needs.
  - "Into a RelStorage database (O(target_config)): the source is a FileStorage that nobody
    writes (O(source), usually a packed snapshot of a live Data.fs taken by
    M(zopeops.stages.zodb_snapshot)), copied by RelStorage's own copier. The database must be
    empty, or O(clear) empties it first (RelStorage's C(zap_all()), C(zodbconvert --clear))."
  - "Into a snapshot folder (O(dest)): the source is a storage opened from its configuration
    (O(source_config), a RelStorage side's C(etc/relstorage.conf)), which may be serving. A
    new FileStorage C(Data.fs) and its C(blobs) are written beside O(dest) and renamed in
    place with a C(manifest.json), so that M(zopeops.stages.zodb_restore) verifies and installs
    it as any snapshot. The copy holds a prefix of the source's history that ends at its last
    transaction when the copy was read (RV(tid)); a catch-up goes on from there."
  - B(Verified.) After the copy the target must report the source's last transaction as its
    own last one; a blob the source could not give fails the copy (the copiers only log it,
    or skip it; a written snapshot's blob records must each have their file).
  - "B(History-free databases) are refused as a source: their iterator does not give a
    consistent history of a database that serves writes."
  - B(Idempotence.) A target that already holds the source's last transaction as its own is
    left alone (C(changed) false).
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.zodb
  - zopeops.stages.zodb.ownership
attributes:
  check_mode:
    support: full
    details: Opens both storages and reports what would be copied (RV(transactions), RV(tid));
      copies, clears and writes no transaction (RelStorage creates its schema in a database
      that has none when it is opened, as any of its clients does).
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  source:
    description:
      - A FileStorage that nobody writes while it is copied (a snapshot). One of O(source) and
        O(source_config) is required.
    type: path
  source_blob_dir:
    description: The blob folder of O(source), if it has blobs.
    type: path
  source_config:
    description:
      - A ZConfig file describing the source storage (a RelStorage side's
        C(etc/relstorage.conf), whose C(dsn) names a passfile, never a password). It is only
        read; its blobs come through it.
    type: path
  target_config:
    description:
      - A ZConfig file describing the target storage, a RelStorage database (its clients
        stopped). One of O(target_config) and O(dest) is required.
    type: path
  clear:
    description:
      - With O(target_config), empty the target first (RelStorage's C(zap_all())) when it
        holds anything; without it a target that is not empty is refused.
    type: bool
    default: false
  dest:
    description:
      - A snapshot folder to write (C(Data.fs), C(blobs/), C(manifest.json)), replaced whole
        when the copy is complete; the folder M(zopeops.stages.zodb_restore) installs from.
    type: path
  span_bytes:
    description: Bytes hashed at the head and the tail of the written Data.fs for its manifest.
    type: int
    default: 1048576
seealso:
  - module: zopeops.stages.zodb_snapshot
  - module: zopeops.stages.zodb_restore
  - module: zopeops.stages.zodb_replay
  - module: zopeops.stages.relstorage_copy
'''

EXAMPLES = r'''
- name: A RelStorage twin gets the packed snapshot of a ZEO stage's Data.fs.
  zopeops.stages.zodb_convert:
    source: /srv/zopeops/prod_upgrade/var/snapshots/incoming/Data.fs
    source_blob_dir: /srv/zopeops/prod_upgrade/var/snapshots/incoming/blobs
    target_config: /srv/zopeops/prod_upgrade/etc/relstorage.conf
    clear: true
  vars:
    ansible_python_interpreter: /srv/zopeops/prod_upgrade/current/venv/bin/python

- name: A ZEO twin's snapshot is written from a RelStorage stage's database.
  zopeops.stages.zodb_convert:
    source_config: /srv/zopeops/prod/etc/relstorage.conf
    dest: /srv/zopeops/prod_upgrade/var/snapshots/incoming
    owner: zope
'''

RETURN = r'''
tid:
  description: The last transaction copied, which the target holds as its last one now (in
    check mode, the source's last transaction).
  type: str
  returned: always
  sample: 03f1c2d4e5f60718
snapshot_tid:
  description: The same tid, under the name the snapshot steps give it (where a catch-up goes
    on from).
  type: str
  returned: always
transactions:
  description: Transactions the target holds after the copy (would hold, in check mode).
  type: int
  returned: always
blobs:
  description: Blob files in the written snapshot (O(dest)), or in the source's blob folder
    up to RV(tid) (O(target_config)).
  type: int
  returned: always
cleared:
  description: Whether the target was emptied first (O(clear)).
  type: bool
  returned: always
seconds:
  description: Seconds the copy took (opening, copying and verifying).
  type: float
  returned: always
transactions_per_second:
  description: RV(transactions) / RV(seconds), the copy's rate.
  type: float
  returned: always
manifest:
  description: The written snapshot's manifest path (O(dest)), else null.
  type: str
  returned: always
attributes_changed:
  description: Files and folders of the written snapshot (O(dest)) that got (in check mode,
    would get) the owner, group or mode of O(owner), O(group) and O(file_mode); 0 when they
    had them already.
  type: int
  returned: with O(dest)
msg:
  description: What happened.
  type: str
  returned: always
'''

import logging
import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils import files
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_blobs as zblob
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_copy as zcopy
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_format as zfmt
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_manifest as zman
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_storage as zstore


class CopyLog(logging.Handler):
    """The errors the storages' copiers only log (a blob that could not be opened)."""

    def __init__(self):
        logging.Handler.__init__(self, logging.ERROR)
        self.errors = []

    def emit(self, record):
        self.errors.append(record.getMessage())

    def __enter__(self):
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self)


def open_file_source(params):
    from ZODB.FileStorage import FileStorage
    zfmt.check_filestorage(params['source'], 'source')
    kwargs = {'read_only': True}
    if params['source_blob_dir']:
        kwargs['blob_dir'] = params['source_blob_dir']
    return FileStorage(params['source'], **kwargs)


def refuse_history_free(storage, where):
    if getattr(storage, 'keep_history', True) is False:
        raise zu.ZODBDataError(
            'The source %s is a history-free RelStorage database: its iterator does not give a '
            'consistent history of a database that serves writes, so it cannot be copied into '
            'a storage of the other kind here. Use zopeops_relstorage_history: preserving for '
            'a stage whose data moves between kinds.' % where)


def source_facts(source):
    """(last tid, transaction count) of an opened source storage."""
    count, last = 0, zfmt.Z64
    for txn in zstore.iterate(source):
        count += 1
        last = txn.tid
    return last, count


def copy_into(target, source, log):
    with log:
        target.copyTransactionsFrom(source)
    if log.errors:
        raise zu.ZODBDataError('the copy logged errors: %s' % '; '.join(log.errors[:5]))


def into_database(module, result):
    """A FileStorage (a snapshot) into a RelStorage database."""
    params = module.params
    source = open_file_source(params)
    try:
        last, count = source_facts(source)
        result.update(tid=zfmt.tid_to_hex(last), transactions=count,
                      blobs=len(zblob.committed_blobs(params['source_blob_dir'], last))
                      if params['source_blob_dir'] else 0)
        target = zstore.open_from_config(params['target_config'], 'target')
        try:
            before = zstore.last_tid(target)
            if before == last and before != zfmt.Z64:
                result['msg'] = 'The storage of %s holds %s up to %s already.' % (
                    params['target_config'], params['source'], result['tid'])
                return
            if before != zfmt.Z64 and not params['clear']:
                raise zu.ZODBDataError(
                    'The target %s is not empty (its last transaction is %s); nothing was '
                    'written. Give clear: true to empty it first (its data is then dropped).'
                    % (params['target_config'], zfmt.tid_to_hex(before)))
            result['changed'] = True
            if module.check_mode:
                result['msg'] = 'Would copy %d transactions of %s (up to %s) into %s%s.' % (
                    count, params['source'], result['tid'], params['target_config'],
                    ', emptied first' if before != zfmt.Z64 else '')
                return
            if before != zfmt.Z64:
                target.zap_all()
                result['cleared'] = True
            copy_into(target, source, CopyLog())
            copied = zstore.last_tid(target)
        finally:
            target.close()
    finally:
        source.close()
    if copied != last:
        raise zu.ZODBDataError(
            'After the copy %s reports %s as its last transaction, not %s. Run it again '
            '(with clear: true).' % (params['target_config'], zfmt.tid_to_hex(copied),
                                     result['tid']))
    result['msg'] = 'Copied %d transactions and %d blobs of %s (up to %s) into %s.' % (
        count, result['blobs'], params['source'], result['tid'], params['target_config'])


def into_snapshot(module, result):
    """A storage opened from its configuration (RelStorage) into a new FileStorage snapshot."""
    from ZODB.FileStorage import FileStorage
    params = module.params
    dest = os.path.abspath(params['dest'])
    source = zstore.open_from_config(params['source_config'], 'source')
    try:
        refuse_history_free(source, params['source_config'])
        old = zman.read_manifest(dest) if os.path.isdir(dest) else None
        current = zstore.last_tid(source)
        if old and old.get('source_path') == os.path.abspath(params['source_config']) \
                and old['tid'] == zfmt.tid_to_hex(current) and \
                not zman.verify_data_against_manifest(os.path.join(dest, zman.SNAPSHOT_DATA_NAME),
                                                      old, hashes=False):
            result.update(tid=old['tid'], transactions=old.get('transactions') or 0,
                          blobs=old.get('blob_count', 0), manifest=zman.manifest_path(dest),
                          msg='The snapshot in %s holds %s up to %s already.' % (
                              dest, params['source_config'], old['tid']))
            return
        result['changed'] = True
        if module.check_mode:
            last, count = source_facts(source)
            result.update(tid=zfmt.tid_to_hex(last), transactions=count,
                          msg='Would write %d transactions of %s (up to %s) into %s.' % (
                              count, params['source_config'], zfmt.tid_to_hex(last), dest))
            return
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        building = '%s.new-%d' % (dest, os.getpid())
        zcopy.remove_path(building)
        os.makedirs(building)
        try:
            data = os.path.join(building, zman.SNAPSHOT_DATA_NAME)
            blobs = os.path.join(building, zman.SNAPSHOT_BLOB_NAME)
            target = FileStorage(data, create=True, blob_dir=blobs)
            try:
                copy_into(target, source, CopyLog())
            finally:
                target.close()
            write_snapshot_manifest(params, building, result)
            for leftover in ('.index', '.lock', '.tmp'):
                zcopy.remove_path(data + leftover)
            zcopy.put_folder_in_place(building, dest)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    finally:
        source.close()
    result.update(manifest=zman.manifest_path(dest),
                  msg='Wrote %d transactions and %d blobs of %s (up to %s) into the snapshot %s.'
                  % (result['transactions'], result['blobs'], params['source_config'],
                     result['tid'], dest))


def write_snapshot_manifest(params, building, result):
    """The manifest zodb_restore verifies: the new file's size, last tid and hashed spans."""
    data = os.path.join(building, zman.SNAPSHOT_DATA_NAME)
    blob_dir = os.path.join(building, zman.SNAPSHOT_BLOB_NAME)
    fd = os.open(data, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        end, last, count = zfmt.committed_end(fd, 4, size)
    finally:
        os.close(fd)
    if end != size or not count:
        raise zu.ZODBDataError('the written %s has committed data up to byte %d of %d (%d '
                               'transactions)' % (data, end, size, count))
    # Every blob record's file must be there: ZODB's copy skips a blob the source cannot give.
    blob_count = len(zblob.blob_records(data, blob_dir)) if os.path.isdir(blob_dir) else 0
    copied_range = zcopy.range_entry(0, size, zcopy.hash_spans(
        data, zcopy.spans_of(0, size, 'spans', params['span_bytes']), 2, 'md5'))
    tid = zfmt.tid_to_hex(last)
    result.update(tid=tid, transactions=count, blobs=blob_count)
    manifest = {
        'source_path': os.path.abspath(params['source_config']), 'source_blob_dir': None,
        'blob_layout': zblob.blob_layout(blob_dir) if os.path.isdir(blob_dir) else None,
        'size': size, 'source_size': None, 'tid': tid, 'tid_time': zfmt.tid_to_iso(last),
        'snapshot_tid': tid, 'transactions': count, 'packed': None, 'created': zu.now_iso(),
        'blob_count': blob_count, 'data_file': zman.SNAPSHOT_DATA_NAME, 'checksum': 'md5',
        'verify': copied_range['verify'], 'span_bytes': params['span_bytes'],
        'blob_dir': zman.SNAPSHOT_BLOB_NAME if os.path.isdir(blob_dir) else None,
        'ranges': [copied_range], 'converted_from': 'storage',
        'history': [{'mode': 'converted', 'start': 0, 'end': size, 'tid': tid,
                     'snapshot_tid': tid, 'transactions': count}],
    }
    zman.write_manifest(building, manifest)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            source=dict(type='path'),
            source_blob_dir=dict(type='path'),
            source_config=dict(type='path'),
            target_config=dict(type='path'),
            clear=dict(type='bool', default=False),
            dest=dict(type='path'),
            span_bytes=dict(type='int', default=zcopy.DEFAULT_SPAN_BYTES),
            **files.OWNERSHIP_ARGS
        ),
        required_one_of=[('source', 'source_config'), ('target_config', 'dest')],
        mutually_exclusive=[('source', 'source_config'), ('target_config', 'dest'),
                            ('source_config', 'source_blob_dir')],
        required_together=[('source', 'target_config'), ('source_config', 'dest')],
        supports_check_mode=True,
    )
    zu.import_zodb(module)
    ownership = zu.ownership_of(module)
    params = module.params
    started = time.monotonic()
    result = {'changed': False, 'tid': None, 'transactions': 0, 'blobs': 0, 'cleared': False,
              'manifest': None}
    try:
        if params['target_config']:
            into_database(module, result)
        else:
            into_snapshot(module, result)
            zu.apply_ownership(module, ownership, zman.snapshot_paths(params['dest']), result,
                               folders=[params['dest']])
    except zu.ZODBDataError as exc:
        module.fail_json(msg='Copying %s into %s failed, nothing was replaced: %s' % (
            params['source'] or params['source_config'], params['target_config'] or params['dest'],
            exc), seconds=zu.elapsed(started), **result)
    except OSError as exc:
        module.fail_json(msg=zu.os_error_message(
            exc, 'Copying %s into %s' % (params['source'] or params['source_config'],
                                         params['target_config'] or params['dest']),
            'The source was only read; a snapshot folder is built beside dest and removed on '
            'failure.'), seconds=zu.elapsed(started), **result)
    result['snapshot_tid'] = result['tid']
    result['seconds'] = zu.elapsed(started)
    result['transactions_per_second'] = round(result['transactions'] / result['seconds'], 1) \
        if result['seconds'] else 0.0
    module.exit_json(**result)


if __name__ == '__main__':
    main()
