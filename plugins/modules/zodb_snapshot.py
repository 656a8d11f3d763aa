#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zodb_snapshot
short_description: Take a consistent snapshot of a ZODB FileStorage, also while its ZEO server runs
description:
  - Copies the committed part of a FileStorage, and then its committed blobs, into a snapshot
    directory O(dest) holding C(Data.fs), C(blobs/) and C(manifest.json).
  - B(Consistency.) A FileStorage only appends. The module finds the end of the last committed
    transaction (the C(getSize()) a read-only open reports; a transaction still being
    committed, or a torn tail, is left out) and copies exactly the bytes before it with
    C(copy_file_range) (C(sendfile) where that is not possible). Blob files are copied after
    the data, and only those of transactions up to the snapshot's last tid. The source is
    never opened for writing and never locked, so a running ZEO server keeps serving.
  - B(Incremental refresh) (O(mode=auto)). If O(dest) already holds a snapshot of the same
    source and it is still a prefix of the source (same size, the checksum of its last hashed
    span matches in the snapshot and in the source at that offset, and the source has a
    committed transaction with the snapshot's tid ending exactly there), only the new tail
    and the new blobs are copied. Otherwise the module takes a full snapshot and says why in
    RV(fallback_reason), for example because the source was packed.
  - B(Verification) (O(verify)). The manifest records, for each copied range, the spans of it
    that were hashed (start, end, digest); M(zopeops.stages.zodb_restore) checks exactly those,
    besides the magic C(FS30), the size (equal to the committed end), the last transaction id
    at the end of the file and the blob count. With the default O(verify=spans) only the first
    and the last O(span_bytes) of each copied range are hashed, so a full snapshot costs about
    what C(cp) costs; with O(verify=full) every copied byte is hashed (about 0.2-0.35x of the
    speed of C(cp) on a 2-core host, see C(docs/benchmarks.md)).
  - Why spans are enough for the copy. The copy is a local C(copy_file_range) of bytes that
    no longer change (a FileStorage only appends), which the kernel copies exactly; what goes
    wrong in practice is caught by spans and the other checks. Truncation or an interrupted
    refresh (size, tail span, last tid); a source that was packed, replaced or whose history
    diverged (tail span and last tid, on refresh also the tail span in the source); a wrong or
    foreign file (magic, head span, tid); a changed head or tail.
  - What spans do B(not) catch. A flipped bit or a damaged block in the middle of a range,
    for example bit rot on the disk that holds the snapshot. Use O(verify=full) where that
    matters. O(zopeops.stages.zodb_restore#module:fstest=true) reads every record and catches
    damage to the record structure (headers, lengths) anywhere, but not a changed byte inside
    an object's data, which only O(verify=full) detects.
  - A refresh keeps the spans each earlier range was hashed with and hashes the new tail as
    O(verify) says. A refresh with O(verify=spans) extends a snapshot taken with
    O(verify=full) (the manifest then says C(verify=spans)). A refresh with O(verify=full) of
    a snapshot that has ranges hashed only in spans takes a full snapshot, with
    RV(fallback_reason) saying so, because the old part could not be vouched for byte by
    byte.
  - A full snapshot is built beside O(dest) and renamed into place, so an existing snapshot
    is replaced only by a complete one. Free space is checked before anything is written.
  - B(Idempotence.) C(changed) is false when the source has no new committed transaction
    since the snapshot in O(dest).
  - Do not pack the source while a snapshot of it is taken.
version_added: 0.1.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.zodb
  - zopeops.stages.zodb.storage
  - zopeops.stages.zodb.reserve
options:
  path:
    description:
      - The source FileStorage. It may be served by a running ZEO server.
    required: true
  blob_dir:
    description:
      - The source's blob directory; omit it for a storage without blobs.
  dest:
    description:
      - The snapshot directory. Created if missing; an existing directory must be empty or
        hold a snapshot (a C(manifest.json)).
    type: path
    required: true
  mode:
    description:
      - V(auto) refreshes an existing snapshot incrementally when it can, else copies in full.
      - V(full) always copies in full.
    type: str
    choices: [auto, full]
    default: auto
  checksum:
    description:
      - The digest recorded in the manifest for every hashed span (see O(verify)) and checked
        by M(zopeops.stages.zodb_restore). Hashing reads the hashed bytes once more; with
        O(verify=full) that costs about as much CPU as the copy, and V(sha1) costs less than
        V(md5) on CPUs with SHA extensions (2.5x on the sandbox). A snapshot refreshed with
        another checksum is taken in full.
    type: str
    choices: [md5, sha1, sha256]
    default: md5
  verify:
    description:
      - What of each copied range is hashed into the manifest.
      - V(spans) hashes its first and last O(span_bytes) (a range of at most twice that is
        hashed whole). Catches truncation, a packed, replaced or diverged source, a wrong
        file, a changed head or tail; not a flipped bit in the middle.
      - V(full) hashes every copied byte (in pieces of at most 64 MiB, beside the copy). Also
        catches damage in the middle, at the cost of the hashing CPU.
    type: str
    choices: [spans, full]
    default: spans
  span_bytes:
    description:
      - Size of the head and tail spans hashed with O(verify=spans). The tail span is also what
        an incremental refresh compares in the source and in the snapshot.
    type: int
    default: 1048576
  blob_link:
    description:
      - Hard-link blob files instead of copying them when O(dest) is on the same filesystem as
        O(blob_dir). Blob files are never changed in place, so a link is as good as a copy
        and costs no space.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: Nothing is written; the result says which mode would be used, why, and how many
      bytes and blob files would be copied.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
seealso:
  - module: zopeops.stages.zodb_restore
  - module: zopeops.stages.zodb_replay
  - module: zopeops.stages.zodb_pack
'''

EXAMPLES = r'''
- name: Snapshot beta's live data for the test twin.
  zopeops.stages.zodb_snapshot:
    path: "{{ zopeops_root }}/beta/var/filestorage/Data.fs"
    blob_dir: "{{ zopeops_root }}/beta/var/blobstorage"
    dest: "{{ zopeops_root }}/beta/var/snapshots/current"
  register: snapshot

- name: Show what the snapshot holds.
  ansible.builtin.debug:
    msg: "{{ snapshot.mode_used }} snapshot at tid {{ snapshot.tid }}, {{ snapshot.size }} bytes"
'''

RETURN = r'''
mode_used:
  description: C(full), C(incremental), or C(unchanged) when nothing new was committed.
  type: str
  returned: always
fallback_reason:
  description: Why an incremental refresh was not possible (O(mode=auto) with an existing
    snapshot), else null.
  type: str
  returned: always
bytes_copied:
  description: Bytes of Data.fs copied (in check mode, that would be copied).
  type: int
  returned: always
bytes_hashed:
  description: Bytes of the copied data hashed into the manifest in this run (all of them with
    O(verify=full), the head and tail spans with O(verify=spans)).
  type: int
  returned: always
verify:
  description: C(full) if every byte of the snapshot is covered by a recorded checksum, else
    C(spans) (also after a O(verify=spans) refresh of a O(verify=full) snapshot).
  type: str
  returned: always
size:
  description: Size of the snapshot's Data.fs, the committed end of the source when copied.
  type: int
  returned: always
tid:
  description: The snapshot's last transaction id, 16 hex digits.
  type: str
  returned: always
tid_time:
  description: When that transaction was committed, ISO 8601 UTC.
  type: str
  returned: always
blobs_copied:
  description: Blob files copied or linked in this run.
  type: int
  returned: always
blobs_linked:
  description: Of those, how many were hard links.
  type: int
  returned: always
blob_count:
  description: Blob files in the snapshot.
  type: int
  returned: always
manifest:
  description: Path of the snapshot's manifest.json.
  type: str
  returned: always
duration:
  description: Seconds the module spent.
  type: float
  returned: always
'''

import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu


def incremental_problem(src_fd, src_size, src_path, dest, manifest, checksum, verify='spans'):
    """None if ``dest`` is a verified prefix of the source, else the reason it is not."""
    if os.path.abspath(manifest.get('source_path', '')) != os.path.abspath(src_path):
        return 'the snapshot in %s was taken from %s, not %s' % (
            dest, manifest.get('source_path'), src_path)
    old_size = manifest['size']
    data = os.path.join(dest, zu.SNAPSHOT_DATA_NAME)
    if not manifest['ranges']:
        return 'the snapshot manifest lists no ranges'
    if not os.path.isfile(data) or os.path.getsize(data) < old_size:
        return 'the snapshot file %s is missing or shorter than its manifest says' % data
    if src_size < old_size:
        return ('the source is now %d bytes, smaller than the snapshot (%d): it was packed or '
                'replaced' % (src_size, old_size))
    found = zu.txn_header_before(src_fd, old_size)
    if found is None or zu.tid_to_hex(found[0]) != manifest['tid'] or found[1] == b'c':
        return ('the source has no committed transaction %s ending at byte %d: it was packed '
                'or its history diverged' % (manifest['tid'], old_size))
    if zu.checksum_of(manifest) != checksum:
        return 'the snapshot uses checksum %s, %s was asked for' % (zu.checksum_of(manifest),
                                                                    checksum)
    if verify == 'full' and zu.manifest_verify(manifest) != 'full':
        return ('the snapshot in %s has ranges hashed only in spans (verify: spans) and '
                'verify: full was asked for' % dest)
    last = zu.last_span(manifest)
    if not isinstance(last, dict) or not {'start', 'end', checksum} <= set(last) or \
            last['end'] != old_size:
        return 'the snapshot manifest in %s has no hashed tail span' % dest
    if zu.digest_of_range(src_fd, last['start'], last['end'], checksum) != last.get(checksum):
        return ('bytes [%d, %d) of the source differ from the snapshot: it was packed or its '
                'history diverged' % (last['start'], last['end']))
    dst_fd = os.open(data, os.O_RDONLY)
    try:
        if zu.digest_of_range(dst_fd, last['start'], last['end'], checksum) != last.get(checksum):
            return 'the snapshot file %s does not match its manifest (damaged)' % data
    finally:
        os.close(dst_fd)
    return None


def plan_snapshot(params):
    """Decide what to copy; read only. Returns a dict the copy step and the result use."""
    src, dest = params['path'], params['dest']
    zu.check_filestorage(src, 'source')
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise zu.ZODBDataError('The snapshot destination %s exists and is not a directory. '
                               'Choose another dest.' % dest)
    manifest = zu.read_manifest(dest) if os.path.isdir(dest) else None
    if manifest is None and os.path.isdir(dest) and os.listdir(dest):
        raise zu.ZODBDataError(
            'The snapshot destination %s is not empty and holds no manifest.json, so it is not '
            'a snapshot this module made; refusing to replace it. Choose an empty or new '
            'directory.' % dest)
    plan = {'manifest': manifest, 'fallback_reason': None}
    src_fd = os.open(src, os.O_RDONLY)
    try:
        src_size = os.fstat(src_fd).st_size
        if manifest is not None and params['mode'] == 'auto':
            reason = incremental_problem(src_fd, src_size, src, dest, manifest,
                                         params['checksum'], params['verify'])
            if reason is None:
                end, tid, _n = zu.committed_end(src_fd, manifest['size'], src_size)
                plan.update(kind='incremental', start=manifest['size'], end=end,
                            tid=tid or zu.hex_to_tid(manifest['tid']))
                if end == manifest['size']:
                    plan['kind'] = 'unchanged'
                return plan
            plan['fallback_reason'] = reason
        elif manifest is not None:
            plan['fallback_reason'] = 'mode is full'
        end, tid, _n = zu.committed_end(src_fd, 4, src_size)
    finally:
        os.close(src_fd)
    if tid is None:
        raise zu.ZODBDataError('The source FileStorage %s holds no committed transaction; there '
                               'is nothing to snapshot. Check the path.' % src)
    plan.update(kind='full', start=0, end=end, tid=tid)
    return plan


def planned_verify(params, plan):
    """(bytes hashed in this run, the snapshot's verify afterwards) for ``plan``."""
    spans = zu.spans_of(plan['start'], plan['end'], params['verify'], params['span_bytes'])
    hashed = sum(b - a for a, b in spans)
    covered = sum(b - a for a, b in spans) == plan['end'] - plan['start']
    old = plan['manifest']
    if plan['kind'] == 'full':
        return hashed, 'full' if covered else 'spans'
    if plan['kind'] == 'unchanged':
        return 0, zu.manifest_verify(old)
    return hashed, 'full' if covered and zu.manifest_verify(old) == 'full' else 'spans'


def plan_blobs(params, plan):
    """The blob files to copy for ``plan``: all committed ones (full) or the new ones."""
    blob_dir = params['blob_dir']
    if not blob_dir:
        return []
    if not os.path.isdir(blob_dir):
        raise zu.ZODBDataError('The source blob directory %s does not exist. Check blob_dir, or '
                               'omit it for a storage without blobs.' % blob_dir)
    blobs = zu.committed_blobs(blob_dir, plan['tid'])
    if plan['kind'] != 'full':
        after = zu.tid_to_int(zu.hex_to_tid(plan['manifest']['tid']))
        blobs = [(rel, size) for rel, size in blobs
                 if zu.blob_tid(os.path.basename(rel)) > after]
    return blobs


def take_snapshot(module, result):
    params = module.params
    src, dest, blob_dir = params['path'], params['dest'], params['blob_dir']
    plan = plan_snapshot(params)
    blobs = plan_blobs(params, plan)
    will_link = bool(params['blob_link'] and blob_dir and zu.same_filesystem(blob_dir, dest))
    blob_bytes = 0 if will_link else sum(size for _rel, size in blobs)
    data_bytes = plan['end'] - plan['start']
    old = plan['manifest']
    bytes_hashed, verify = planned_verify(params, plan)
    result.update(
        mode_used=plan['kind'], fallback_reason=plan['fallback_reason'], bytes_copied=data_bytes,
        bytes_hashed=bytes_hashed, verify=verify,
        size=plan['end'], tid=zu.tid_to_hex(plan['tid']), tid_time=zu.tid_to_iso(plan['tid']),
        blobs_copied=len(blobs), blobs_linked=len(blobs) if will_link else 0,
        blob_count=len(blobs) + (old.get('blob_count', 0) if old and plan['kind'] != 'full'
                                 else 0),
        manifest=zu.manifest_path(dest), changed=plan['kind'] != 'unchanged')
    if plan['kind'] == 'unchanged':
        result['msg'] = 'The snapshot in %s is up to date at tid %s.' % (dest, result['tid'])
        return
    zu.require_free(dest, data_bytes + blob_bytes, params['reserve_bytes'],
                    'take a %s snapshot of %s' % (plan['kind'], src))
    if module.check_mode:
        result['msg'] = 'Would take a %s snapshot of %s into %s: %d bytes and %d blob files.' % (
            plan['kind'], src, dest, data_bytes, len(blobs))
        return
    manifest = {
        'format': zu.MANIFEST_FORMAT,
        'source_path': os.path.abspath(src),
        'source_blob_dir': os.path.abspath(blob_dir) if blob_dir else None,
        'blob_layout': zu.blob_layout(blob_dir) if blob_dir else None,
        'size': plan['end'],
        'tid': result['tid'],
        'tid_time': result['tid_time'],
        'created': zu.now_iso(),
        'blob_count': result['blob_count'],
        'data_file': zu.SNAPSHOT_DATA_NAME,
        'checksum': params['checksum'],
        'verify': verify,
        'span_bytes': params['span_bytes'],
        'blob_dir': zu.SNAPSHOT_BLOB_NAME if blob_dir else None,
    }
    if plan['kind'] == 'incremental':
        data = os.path.join(dest, zu.SNAPSHOT_DATA_NAME)
        copied_range = zu.copy_and_hash(src, data, plan['start'], plan['end'],
                                        truncate_to=plan['start'], algorithm=params['checksum'],
                                        verify=params['verify'],
                                        span_bytes=params['span_bytes'])
        if blob_dir:
            copied, linked, _moved = zu.copy_blobs(
                blob_dir, os.path.join(dest, zu.SNAPSHOT_BLOB_NAME), blobs, will_link)
            result.update(blobs_copied=copied + linked, blobs_linked=linked)
        manifest['ranges'] = old['ranges'] + [copied_range]
        manifest['verify'] = zu.manifest_verify(manifest)
        manifest['history'] = (old.get('history') or [])[-19:] + [
            {'mode': 'incremental', 'start': plan['start'], 'end': plan['end'],
             'tid': result['tid'], 'created': manifest['created'],
             'verify': copied_range['verify']}]
        zu.write_manifest(dest, manifest)
        result['msg'] = 'Appended %d bytes and %d blob files to the snapshot in %s (tid %s).' % (
            data_bytes, result['blobs_copied'], dest, result['tid'])
        return
    # Full: build beside dest, then swap, so dest holds either the old or the new snapshot.
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    building = '%s.new-%d' % (os.path.abspath(dest), os.getpid())
    zu.remove_path(building)
    os.makedirs(building)
    try:
        copied_range = zu.copy_and_hash(src, os.path.join(building, zu.SNAPSHOT_DATA_NAME),
                                        0, plan['end'], algorithm=params['checksum'],
                                        verify=params['verify'],
                                        span_bytes=params['span_bytes'])
        if blob_dir:
            copied, linked, _moved = zu.copy_blobs(
                blob_dir, os.path.join(building, zu.SNAPSHOT_BLOB_NAME), blobs, will_link)
            result.update(blobs_copied=copied + linked, blobs_linked=linked)
        manifest['ranges'] = [copied_range]
        manifest['verify'] = zu.manifest_verify(manifest)
        manifest['history'] = [{'mode': 'full', 'start': 0, 'end': plan['end'],
                                'tid': result['tid'], 'created': manifest['created'],
                                'verify': copied_range['verify']}]
        zu.write_manifest(building, manifest)
        retired = None
        if os.path.exists(dest):
            retired = '%s.old-%d' % (os.path.abspath(dest), os.getpid())
            os.rename(dest, retired)
        os.rename(building, dest)
        zu.fsync_dir(parent)
        if retired:
            shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    result['msg'] = 'Took a full snapshot of %s into %s: %d bytes, %d blob files, tid %s.%s' % (
        src, dest, data_bytes, result['blobs_copied'], result['tid'],
        ' (%s)' % plan['fallback_reason'] if plan['fallback_reason'] else '')


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            blob_dir=dict(type='path'),
            dest=dict(type='path', required=True),
            mode=dict(type='str', choices=['auto', 'full'], default='auto'),
            blob_link=dict(type='bool', default=True),
            reserve_bytes=dict(type='int', default=0),
            checksum=dict(type='str', choices=list(zu.CHECKSUMS), default='md5'),
            verify=dict(type='str', choices=list(zu.VERIFY_MODES), default='spans'),
            span_bytes=dict(type='int', default=zu.DEFAULT_SPAN_BYTES),
        ),
        supports_check_mode=True,
    )
    zu.import_zodb(module)
    if module.params['span_bytes'] < 1:
        module.fail_json(msg='span_bytes is %d; use a positive number of bytes (default %d).'
                         % (module.params['span_bytes'], zu.DEFAULT_SPAN_BYTES))
    started = time.monotonic()
    result = {'changed': False}
    try:
        take_snapshot(module, result)
    except (zu.ZODBDataError, OSError) as exc:
        module.fail_json(msg='Snapshot of %s into %s failed: %s' % (
            module.params['path'], module.params['dest'], exc), **result)
    result['duration'] = zu.elapsed(started)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
