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
  - B(Packed snapshots) (O(pack=true)), for a twin whose copy must be packed before its ZEO
    server starts. ZODB's own C(FileStoragePacker) reads the committed range of the source
    and writes the packed transactions straight into the snapshot, so the data is written
    once (a snapshot followed by M(zopeops.stages.zodb_pack) writes it twice). Old revisions
    (older than O(pack_days) before the snapshot's last transaction) and objects no longer
    reachable from the root are left out, and only the blob files that the packed records
    refer to are copied. The source and its blob directory are only read. The result is the
    same file, byte for byte, as a copy packed by M(zopeops.stages.zodb_pack) with O(pack_days)
    days; C(docs/benchmarks.md) has the measurements.
  - A pack may drop whole transactions, so a packed snapshot has two tids. RV(snapshot_tid)
    is the source's last transaction at the snapshot, where a catch-up
    (M(zopeops.stages.zodb_replay)) goes on from. RV(tid) is the last transaction of the
    packed copy, what its ZEO server reports once it is installed. The manifest records both,
    and the checksums of the packed file, so M(zopeops.stages.zodb_restore) verifies and
    installs it as any other snapshot.
  - A packed snapshot is always taken in full; it is C(unchanged) when O(dest) already holds
    a packed snapshot of the source with the same settings and the source has no new
    committed transaction. A snapshot without O(pack) of a packed one is taken in full.
  - B(One source file.) The source is opened once; the plan (header walk), the copy or pack
    and the hashing all read that one descriptor. If the path names another file by the time
    the copy starts (a pack or an install renamed a new file in), the module refuses and
    writes nothing.
  - B(Checked before the manifest.) The copy's transaction headers are walked again (headers
    only, cheap); they must end exactly at the copied size with the expected last tid and
    transaction count, or the module fails without writing the manifest.
  - B(Blob files) are hard-linked, or copied and fsynced, in ZODB's layout, with folders made
    as ZODB makes them and committed blob files not writable (as
    C(ZODB.blob.set_not_writable) leaves them). Every
    folder that got a new entry is fsynced before the manifest is written.
  - A full snapshot is built beside O(dest) and renamed into place, so an existing snapshot
    is replaced only by a complete one. Free space is checked before anything is written
    (for O(pack=true), room for the unpacked size, since the packed size is known only by
    packing).
  - B(No pack at the same time.) The module holds a shared lock on C(<path>.pack.lock) (next
    to the Data.fs) while it reads the source; M(zopeops.stages.zodb_pack) takes the same lock
    exclusively, so a pack of the file waits for its snapshots and they for it (up to
    O(lock_timeout)), while two snapshots of one source run together. A pack through a running
    ZEO server (C(zeopack), the online M(zopeops.stages.zodb_pack)) is not held back by this
    lock, so do not start one while a snapshot is taken.
  - B(Errors.) Every failure, a full disk (C(ENOSPC)) included, is reported with the path and
    what to do. The source is never changed, and O(dest) keeps the snapshot it held (a
    cut-off refresh is cut back to what its manifest describes).
  - B(Idempotence.) C(changed) is false when the source has no new committed transaction
    since the snapshot in O(dest).
  - "B(Ownership): The snapshot folder O(dest) and everything in it get O(owner), O(group)
      and O(file_mode) (C(0600) by default: the data is the service's alone)."
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
  pack:
    description:
      - Write the snapshot packed, in one pass (see the description). The manifest and the
        result then carry RV(snapshot_tid) (the source's last tid) beside RV(tid) (the packed
        copy's last tid).
    type: bool
    default: false
  pack_days:
    description:
      - With O(pack), days of history to keep, counted back from the time of the snapshot's
        last transaction (so the same snapshot always packs the same way); fractions
        allowed. C(0) keeps only the current revisions.
    type: float
    default: 0
  lock_timeout:
    description:
      - Seconds to wait for C(<path>.pack.lock) while M(zopeops.stages.zodb_pack) packs the
        source, before failing without writing anything.
    type: float
    default: 60
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
    details: Nothing is written and no lock is taken; the result says which mode would be
      used, why, and how many bytes and blob files would be copied. With O(pack=true) the
      sizes, RV(tid) and RV(transactions) are those of the source before the pack (an upper
      bound), since what a pack keeps is known only by packing.
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

- name: Take a packed snapshot of beta for the test twin, in one pass.
  zopeops.stages.zodb_snapshot:
    path: "{{ zopeops_root }}/beta/var/filestorage/Data.fs"
    blob_dir: "{{ zopeops_root }}/beta/var/blobstorage"
    dest: "{{ zopeops_root }}/test_upgrade/var/snapshots/incoming"
    mode: full
    pack: true
  register: twin_snapshot

- name: Say where the catch-up starts and what the twin's ZEO server will report.
  ansible.builtin.debug:
    msg: >-
      source at {{ twin_snapshot.snapshot_tid }}, packed copy ends at {{ twin_snapshot.tid }}
      ({{ twin_snapshot.transactions }} transactions, {{ twin_snapshot.size }} bytes)
'''

RETURN = r'''
attributes_changed:
  description: How many of the snapshot's files and folders (O(dest), its Data.fs, manifest and blobs) got
    (in check mode, would get) the owner, group or mode of
    O(owner), O(group) and O(file_mode); 0 when they had them already.
  type: int
  returned: success
  sample: 3
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
  description: Bytes of Data.fs written into the snapshot (in check mode, that would be
    copied; for O(pack) the packed size, in check mode the unpacked one).
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
  description: Size of the snapshot's Data.fs; for a packed snapshot the packed size (in check
    mode the source's committed size).
  type: int
  returned: always
source_size:
  description: The committed end of the source at the snapshot (the bytes the snapshot was
    taken from; the same as RV(size) without O(pack)).
  type: int
  returned: always
tid:
  description: The last transaction id of the snapshot's Data.fs, 16 hex digits. For a
    packed snapshot this may be older than RV(snapshot_tid), since a pack can drop whole
    transactions; it is what the installed copy's ZEO server reports.
  type: str
  returned: always
snapshot_tid:
  description: The source's last committed transaction id at the snapshot, 16 hex digits;
    where a catch-up of the copy goes on from. Equal to RV(tid) without O(pack).
  type: str
  returned: always
tid_time:
  description: When RV(tid) was committed, ISO 8601 UTC.
  type: str
  returned: always
transactions:
  description: How many transactions the snapshot's Data.fs holds (null for an unchanged
    snapshot taken by an older version that did not record it).
  type: int
  returned: always
packed:
  description: Whether the snapshot is packed (O(pack)).
  type: bool
  returned: always
pack_time:
  description: With O(pack), the pack time as ISO 8601 UTC (history before it was left out),
    else null.
  type: str
  returned: always
blobs_copied:
  description: Blob files copied or linked in this run (for O(pack), those the packed
    records refer to; in check mode an upper bound).
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
msg:
  description: What happened, or would happen in check mode.
  type: str
  returned: always
'''

import os
import shutil
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_format as zfmt
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_copy as zcopy
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_manifest as zman
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_blobs as zblob
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_locks as zlock
from ansible_collections.zopeops.stages.plugins.module_utils import files


def incremental_problem(src_fd, src_size, src_path, dest, manifest, checksum, verify='spans'):
    """None if ``dest`` is a verified prefix of the source, else the reason it is not."""
    if os.path.abspath(manifest.get('source_path', '')) != os.path.abspath(src_path):
        return 'the snapshot in %s was taken from %s, not %s' % (
            dest, manifest.get('source_path'), src_path)
    if manifest.get('packed'):
        return 'the snapshot in %s is packed, so it is no prefix of the source' % dest
    old_size = manifest['size']
    data = os.path.join(dest, zman.SNAPSHOT_DATA_NAME)
    if not manifest['ranges']:
        return 'the snapshot manifest lists no ranges'
    if not os.path.isfile(data) or os.path.getsize(data) < old_size:
        return 'the snapshot file %s is missing or shorter than its manifest says' % data
    if src_size < old_size:
        return ('the source is now %d bytes, smaller than the snapshot (%d): it was packed or '
                'replaced' % (src_size, old_size))
    found = zfmt.txn_header_before(src_fd, old_size)
    if found is None or zfmt.tid_to_hex(found[0]) != manifest['tid'] or found[1] == b'c':
        return ('the source has no committed transaction %s ending at byte %d: it was packed '
                'or its history diverged' % (manifest['tid'], old_size))
    if zman.checksum_of(manifest) != checksum:
        return 'the snapshot uses checksum %s, %s was asked for' % (zman.checksum_of(manifest),
                                                                    checksum)
    if verify == 'full' and zman.manifest_verify(manifest) != 'full':
        return ('the snapshot in %s has ranges hashed only in spans (verify: spans) and '
                'verify: full was asked for' % dest)
    if zcopy.digest_of_range(src_fd, *tail_span(manifest, checksum)) != \
            zman.last_span(manifest).get(checksum):
        last = zman.last_span(manifest)
        return ('bytes [%d, %d) of the source differ from the snapshot: it was packed or its '
                'history diverged' % (last['start'], last['end']))
    return snapshot_damage(dest, manifest, checksum)


def tail_span(manifest, checksum):
    """(start, end, checksum) of the manifest's tail span; ZODBDataError if it has none."""
    last = zman.last_span(manifest)
    if not isinstance(last, dict) or not {'start', 'end', checksum} <= set(last) or \
            last['end'] != manifest['size']:
        raise zu.ZODBDataError('the snapshot manifest has no hashed tail span')
    return last['start'], last['end'], checksum


def snapshot_damage(dest, manifest, checksum):
    """None if the snapshot's Data.fs has its manifest's size and tail span, else what differs."""
    data = os.path.join(dest, zman.SNAPSHOT_DATA_NAME)
    try:
        start, end, _c = tail_span(manifest, checksum)
    except zu.ZODBDataError:
        return 'the snapshot manifest in %s has no hashed tail span' % dest
    if not os.path.isfile(data) or os.path.getsize(data) < manifest['size']:
        return 'the snapshot file %s is missing or shorter than its manifest says' % data
    dst_fd = os.open(data, os.O_RDONLY)
    try:
        recorded = zman.last_span(manifest)[checksum]
        if zcopy.digest_of_range(dst_fd, start, end, checksum) != recorded:
            return 'the snapshot file %s does not match its manifest (damaged)' % data
    finally:
        os.close(dst_fd)
    return None


def packed_problem(src_fd, src_size, src_path, dest, manifest, params):
    """None if ``dest`` holds a packed snapshot of the source as it is now, with the asked
    pack and checksum settings; else why a new packed snapshot is needed."""
    if not manifest.get('packed'):
        return 'the snapshot in %s is not packed and pack: true was asked for' % dest
    if os.path.abspath(manifest.get('source_path', '')) != os.path.abspath(src_path):
        return 'the snapshot in %s was taken from %s, not %s' % (
            dest, manifest.get('source_path'), src_path)
    if manifest['packed'].get('days') != params['pack_days'] or \
            zman.checksum_of(manifest) != params['checksum'] or \
            (params['verify'] == 'full' and zman.manifest_verify(manifest) != 'full'):
        return 'the packed snapshot in %s was taken with other pack_days, checksum or verify' % dest
    source_size = manifest.get('source_size')
    found = zfmt.txn_header_before(src_fd, source_size) if source_size else None
    if found is None or zfmt.tid_to_hex(found[0]) != manifest.get('snapshot_tid') or \
            found[1] == b'c':
        return ('the source has no committed transaction %s ending at byte %s: it was packed '
                'or its history diverged' % (manifest.get('snapshot_tid'), source_size))
    end, _tid, _n = zfmt.committed_end(src_fd, source_size, src_size)
    if end != source_size:
        return 'the source has new transactions since the packed snapshot in %s' % dest
    return snapshot_damage(dest, manifest, params['checksum'])


def plan_snapshot(params):
    """Decide what to copy, reading only. The returned plan holds the source's one open
    descriptor (``fd``, with its ``stat``), which the copy and the hashing use; the caller
    closes it."""
    src, dest = params['path'], params['dest']
    zfmt.check_filestorage(src, 'source')
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise zu.ZODBDataError('The snapshot destination %s exists and is not a directory. '
                               'Choose another dest.' % dest)
    manifest = zman.read_manifest(dest) if os.path.isdir(dest) else None
    if manifest is None and os.path.isdir(dest) and os.listdir(dest):
        raise zu.ZODBDataError(
            'The snapshot destination %s is not empty and holds no manifest.json, so it is not '
            'a snapshot this module made; refusing to replace it. Choose an empty or new '
            'directory.' % dest)
    src_fd = os.open(src, os.O_RDONLY)
    plan = {'manifest': manifest, 'fallback_reason': None, 'fd': src_fd,
            'stat': os.fstat(src_fd)}
    try:
        src_size = plan['stat'].st_size
        if manifest is not None and params['mode'] == 'auto':
            if params['pack']:
                reason = packed_problem(src_fd, src_size, src, dest, manifest, params)
                if reason is None:
                    plan.update(kind='unchanged', start=manifest['source_size'],
                                end=manifest['source_size'], count=0,
                                tid=zfmt.hex_to_tid(manifest['snapshot_tid']))
                    return plan
            else:
                reason = incremental_problem(src_fd, src_size, src, dest, manifest,
                                             params['checksum'], params['verify'])
                if reason is None:
                    end, tid, count = zfmt.committed_end(src_fd, manifest['size'], src_size)
                    plan.update(kind='incremental', start=manifest['size'], end=end,
                                count=count, tid=tid or zfmt.hex_to_tid(manifest['tid']))
                    if end == manifest['size']:
                        plan['kind'] = 'unchanged'
                    return plan
            plan['fallback_reason'] = reason
        elif manifest is not None:
            plan['fallback_reason'] = 'mode is full'
        end, tid, count = zfmt.committed_end(src_fd, 4, src_size)
        if tid is None:
            raise zu.ZODBDataError('The source FileStorage %s holds no committed transaction; '
                                   'there is nothing to snapshot. Check the path.' % src)
    except BaseException:
        os.close(src_fd)
        raise
    plan.update(kind='full', start=0, end=end, tid=tid, count=count)
    return plan


def between_plan_and_copy(plan):
    """Nothing; the tests replace it to change the source between the plan and the copy."""


def refuse_if_replaced(path, plan):
    """The copy reads the descriptor opened for the plan. If ``path`` now names another file
    (a pack or an install renamed a new one in), the snapshot would not be of what ``path``
    serves: refuse, before anything is written."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        now = None
    then = plan['stat']
    if now is None or (now.st_ino, now.st_dev) != (then.st_ino, then.st_dev):
        raise zu.ZODBDataError(
            'The source %s was replaced while the snapshot was planned (inode %d on device %d '
            'then, %s now): a pack or an install renamed another file in. Nothing was written; '
            'the snapshot in %s is as it was. Run the snapshot again once the source is '
            'settled (never pack a source while it is snapshotted).' % (
                path, then.st_ino, then.st_dev,
                'no such file' if now is None else 'inode %d on device %d' % (
                    now.st_ino, now.st_dev), plan['dest']))


def check_copy(data_path, start, end, tid, count=None):
    """Walk the copy's transaction headers from ``start`` again (headers only): they must end
    exactly at ``end`` (the file's size) with the last tid ``tid`` (or, for ``tid=None``, any
    tid) and, given ``count``, hold that many transactions. Returns (last tid, count)."""
    fd = os.open(data_path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        found_end, found_tid, found = zfmt.committed_end(fd, start, size)
    finally:
        os.close(fd)
    if size != end or found_end != end or (tid is not None and found_tid != tid) or \
            (count is not None and found != count) or found_tid is None:
        raise zu.ZODBDataError(
            'The copy %s does not hold what was written: its transaction headers from byte %d '
            'end at byte %d of %d with last tid %s (%d transactions), expected the end %d, tid '
            '%s%s. Its manifest was not written; check the disk holding it and run the '
            'snapshot again.' % (data_path, start, found_end, size, zfmt.tid_to_hex(found_tid),
                                 found, end, zfmt.tid_to_hex(tid) if tid else 'any',
                                 '' if count is None else ' and %d transactions' % count))
    return found_tid, found


def planned_verify(params, plan):
    """(bytes hashed in this run, the snapshot's verify afterwards) for ``plan``."""
    spans = zcopy.spans_of(plan['start'], plan['end'], params['verify'], params['span_bytes'])
    hashed = sum(b - a for a, b in spans)
    covered = sum(b - a for a, b in spans) == plan['end'] - plan['start']
    old = plan['manifest']
    if plan['kind'] == 'full':
        return hashed, 'full' if covered else 'spans'
    if plan['kind'] == 'unchanged':
        return 0, zman.manifest_verify(old)
    return hashed, 'full' if covered and zman.manifest_verify(old) == 'full' else 'spans'


def plan_blobs(params, plan):
    """The blob files to copy for ``plan``: all committed ones (full) or the new ones. For a
    packed copy an upper bound: the copy takes those its records refer to."""
    blob_dir = params['blob_dir']
    if not blob_dir:
        return []
    if not os.path.isdir(blob_dir):
        raise zu.ZODBDataError('The source blob directory %s does not exist. Check blob_dir, or '
                               'omit it for a storage without blobs.' % blob_dir)
    blobs = zblob.committed_blobs(blob_dir, plan['tid'])
    if plan['kind'] == 'incremental':
        after = zfmt.tid_to_int(zfmt.hex_to_tid(plan['manifest']['tid']))
        blobs = [(rel, size) for rel, size in blobs
                 if zblob.blob_tid(os.path.basename(rel)) > after]
    return blobs


def take_snapshot(module, result):
    params = module.params
    src, dest = params['path'], params['dest']
    if module.check_mode:
        plan = plan_snapshot(params)
        try:
            describe(module, result, plan)
        finally:
            os.close(plan['fd'])
        return
    with zlock.pack_lock(src, True, params['lock_timeout'], 'take a snapshot of'):
        plan = plan_snapshot(params)
        plan['dest'] = dest
        try:
            blobs = describe(module, result, plan)
            if plan['kind'] == 'unchanged':
                return
            between_plan_and_copy(plan)
            refuse_if_replaced(src, plan)
            if plan['kind'] == 'incremental':
                refresh(params, result, plan, blobs)
            else:
                build_full(params, result, plan, blobs)
        finally:
            os.close(plan['fd'])


def describe(module, result, plan):
    """Fill ``result`` with what the plan does (what check mode reports); check free space.
    Returns the blob files to copy."""
    params = module.params
    src, dest, blob_dir = params['path'], params['dest'], params['blob_dir']
    blobs = plan_blobs(params, plan) if plan['kind'] != 'unchanged' else []
    will_link = bool(params['blob_link'] and blob_dir and zcopy.same_filesystem(blob_dir, dest))
    plan['link'] = will_link
    blob_bytes = 0 if will_link else sum(size for _rel, size in blobs)
    data_bytes = plan['end'] - plan['start']
    old = plan['manifest']
    bytes_hashed, verify = planned_verify(params, plan)
    packing = params['pack'] and plan['kind'] == 'full'
    pack_tid = zcopy.pack_time_tid(plan['tid'], params['pack_days']) if params['pack'] else None
    result.update(
        mode_used=plan['kind'], fallback_reason=plan['fallback_reason'], bytes_copied=data_bytes,
        bytes_hashed=bytes_hashed, verify=verify, packed=bool(params['pack']),
        pack_time=zfmt.tid_to_iso(pack_tid) if pack_tid else None,
        size=plan['end'], source_size=plan['end'],
        tid=zfmt.tid_to_hex(plan['tid']), snapshot_tid=zfmt.tid_to_hex(plan['tid']),
        tid_time=zfmt.tid_to_iso(plan['tid']),
        transactions=plan['count'] + (old.get('transactions') or 0
                                      if plan['kind'] == 'incremental' else 0),
        blobs_copied=len(blobs), blobs_linked=len(blobs) if will_link else 0,
        blob_count=len(blobs) + (old.get('blob_count', 0) if old and plan['kind'] != 'full'
                                 else 0),
        manifest=zman.manifest_path(dest), changed=plan['kind'] != 'unchanged')
    if plan['kind'] == 'unchanged':
        for key in ('size', 'tid', 'tid_time', 'verify', 'source_size'):
            result[key] = old.get(key, result[key])
        result['transactions'] = old.get('transactions')
        result.update(bytes_copied=0, blob_count=old.get('blob_count', 0),
                      snapshot_tid=old.get('snapshot_tid', old['tid']),
                      pack_time=(old.get('packed') or {}).get('pack_time'),
                      packed=bool(old.get('packed')))
        result['msg'] = 'The snapshot in %s is up to date at tid %s.' % (
            dest, result['snapshot_tid'])
        return blobs
    zcopy.require_free(dest, data_bytes + blob_bytes, params['reserve_bytes'],
                       'take a %s snapshot of %s' % (plan['kind'], src))
    if module.check_mode:
        result['msg'] = 'Would take a %s%s snapshot of %s into %s: %d bytes and %d blob ' \
            'files%s.' % (
            'packed ' if packing else '', plan['kind'], src, dest, data_bytes, len(blobs),
            ' before the pack, which writes only what it keeps' if packing else '')
    return blobs


def new_manifest(params, result):
    src, blob_dir = params['path'], params['blob_dir']
    return {
        'format': zman.MANIFEST_FORMAT,
        'source_path': os.path.abspath(src),
        'source_blob_dir': os.path.abspath(blob_dir) if blob_dir else None,
        'blob_layout': zblob.blob_layout(blob_dir) if blob_dir else None,
        'size': result['size'],
        'source_size': result['source_size'],
        'tid': result['tid'],
        'tid_time': result['tid_time'],
        'snapshot_tid': result['snapshot_tid'],
        'transactions': result['transactions'],
        'packed': None,
        'created': zu.now_iso(),
        'blob_count': result['blob_count'],
        'data_file': zman.SNAPSHOT_DATA_NAME,
        'checksum': params['checksum'],
        'verify': result['verify'],
        'span_bytes': params['span_bytes'],
        'blob_dir': zman.SNAPSHOT_BLOB_NAME if blob_dir else None,
    }


def refresh(params, result, plan, blobs):
    """Append the new tail ``[start, end)`` to the snapshot in dest, then its new blobs."""
    dest, blob_dir = params['dest'], params['blob_dir']
    old = plan['manifest']
    data = os.path.join(dest, zman.SNAPSHOT_DATA_NAME)
    try:
        copied_range = zcopy.copy_and_hash(plan['fd'], data, plan['start'], plan['end'],
                                           truncate_to=plan['start'], algorithm=params['checksum'],
                                           verify=params['verify'],
                                           span_bytes=params['span_bytes'])
        _tid, count = check_copy(data, plan['start'], plan['end'], plan['tid'], plan['count'])
        if 'transactions' not in old:  # taken before the count was recorded: count it once
            _tid, result['transactions'] = check_copy(data, 4, plan['end'], plan['tid'])
        if blob_dir:
            copied, linked, _moved = zblob.copy_blobs(
                blob_dir, os.path.join(dest, zman.SNAPSHOT_BLOB_NAME), blobs, plan['link'])
            result.update(blobs_copied=copied + linked, blobs_linked=linked)
    except BaseException:
        # The manifest still describes [0, start): cut the half-appended tail off again.
        if os.path.exists(data):
            os.truncate(data, plan['start'])
        raise
    manifest = new_manifest(params, result)
    manifest['ranges'] = old['ranges'] + [copied_range]
    manifest['verify'] = zman.manifest_verify(manifest)
    manifest['history'] = (old.get('history') or [])[-19:] + [
        {'mode': 'incremental', 'start': plan['start'], 'end': plan['end'],
         'tid': result['tid'], 'created': manifest['created'],
         'verify': copied_range['verify'], 'transactions': count}]
    zman.write_manifest(dest, manifest)
    result['msg'] = 'Appended %d bytes and %d blob files to the snapshot in %s (tid %s).' % (
        result['bytes_copied'], result['blobs_copied'], dest, result['tid'])


def build_full(params, result, plan, blobs):
    """Build a full (or packed) snapshot beside dest, then swap it in, so dest holds either
    the old or the new snapshot."""
    src, dest, blob_dir = params['path'], params['dest'], params['blob_dir']
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    building = '%s.new-%d' % (os.path.abspath(dest), os.getpid())
    zcopy.remove_path(building)
    os.makedirs(building)
    data = os.path.join(building, zman.SNAPSHOT_DATA_NAME)
    try:
        packed_size = None
        if params['pack']:
            pack_tid = zcopy.pack_time_tid(plan['tid'], params['pack_days'])
            packed_size = zcopy.pack_copy(plan['fd'], plan['end'], data, pack_tid)
        if packed_size is None:  # no pack asked, or ZODB found the range packed already
            copied_range = zcopy.copy_and_hash(plan['fd'], data, 0, plan['end'],
                                               algorithm=params['checksum'],
                                               verify=params['verify'],
                                               span_bytes=params['span_bytes'])
            check_copy(data, 4, plan['end'], plan['tid'], plan['count'])
        else:
            last_tid, count = check_copy(data, 4, packed_size, None)
            if last_tid > plan['tid'] or count > plan['count']:
                raise zu.ZODBDataError(
                    'The packed copy %s ends with tid %s after %d transactions, beyond the '
                    'snapshot (tid %s, %d transactions). Its manifest was not written.' % (
                        data, zfmt.tid_to_hex(last_tid), count, zfmt.tid_to_hex(plan['tid']),
                        plan['count']))
            copied_range = zcopy.range_entry(0, packed_size, zcopy.hash_spans(
                data, zcopy.spans_of(0, packed_size, params['verify'], params['span_bytes']),
                2, params['checksum']))
            result.update(size=packed_size, bytes_copied=packed_size, transactions=count,
                          tid=zfmt.tid_to_hex(last_tid), tid_time=zfmt.tid_to_iso(last_tid),
                          bytes_hashed=zman.hashed_bytes({'ranges': [copied_range]}),
                          verify=copied_range['verify'])
        if params['pack'] and blob_dir:
            blobs = zblob.blob_records(data, blob_dir)
            result['blob_count'] = len(blobs)
        if blob_dir:
            copied, linked, _moved = zblob.copy_blobs(
                blob_dir, os.path.join(building, zman.SNAPSHOT_BLOB_NAME), blobs, plan['link'])
            result.update(blobs_copied=copied + linked, blobs_linked=linked)
        manifest = new_manifest(params, result)
        if params['pack']:
            manifest['packed'] = {'days': params['pack_days'], 'gc': True,
                                  'pack_time': result['pack_time'],
                                  'source_size': plan['end'],
                                  'source_transactions': plan['count']}
        manifest['ranges'] = [copied_range]
        manifest['verify'] = zman.manifest_verify(manifest)
        manifest['history'] = [{'mode': 'packed' if params['pack'] else 'full', 'start': 0,
                                'end': result['size'], 'tid': result['tid'],
                                'snapshot_tid': result['snapshot_tid'],
                                'created': manifest['created'],
                                'verify': copied_range['verify'],
                                'transactions': result['transactions']}]
        zman.write_manifest(building, manifest)
        zcopy.put_folder_in_place(building, dest)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    result['msg'] = 'Took a %s snapshot of %s into %s: %d bytes, %d transactions, %d blob ' \
        'files, tid %s (source at %s).%s' % (
            'packed' if params['pack'] else 'full', src, dest, result['size'],
            result['transactions'], result['blobs_copied'], result['tid'],
            result['snapshot_tid'],
            ' (%s)' % plan['fallback_reason'] if plan['fallback_reason'] else '')


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            blob_dir=dict(type='path'),
            dest=dict(type='path', required=True),
            mode=dict(type='str', choices=['auto', 'full'], default='auto'),
            pack=dict(type='bool', default=False),
            pack_days=dict(type='float', default=0),
            blob_link=dict(type='bool', default=True),
            reserve_bytes=dict(type='int', default=0),
            checksum=dict(type='str', choices=list(zcopy.CHECKSUMS), default='md5'),
            verify=dict(type='str', choices=list(zcopy.VERIFY_MODES), default='spans'),
            span_bytes=dict(type='int', default=zcopy.DEFAULT_SPAN_BYTES),
            lock_timeout=dict(type='float', default=zlock.DEFAULT_LOCK_TIMEOUT),
            **files.OWNERSHIP_ARGS
        ),
        supports_check_mode=True,
    )
    zu.import_zodb(module)
    ownership = zu.ownership_of(module)
    params = module.params
    if params['span_bytes'] < 1:
        module.fail_json(msg='span_bytes is %d; use a positive number of bytes (default %d).'
                         % (params['span_bytes'], zcopy.DEFAULT_SPAN_BYTES))
    if params['pack_days'] < 0:
        module.fail_json(msg='pack_days is %s; it must be 0 or more (days of history before '
                         'the snapshot to keep).' % params['pack_days'])
    started = time.monotonic()
    result = {'changed': False}
    try:
        take_snapshot(module, result)
        zu.apply_ownership(module, ownership, zman.snapshot_paths(params['dest']), result,
                           folders=[params['dest']])
    except zu.ZODBDataError as exc:
        module.fail_json(msg='Snapshot of %s into %s failed: %s' % (
            params['path'], params['dest'], exc), duration=zu.elapsed(started), **result)
    except OSError as exc:
        if exc.filename is None:  # a write through a descriptor: the destination's
            exc.filename = params['dest']
        module.fail_json(msg=zu.os_error_message(
            exc, 'The snapshot of %s into %s' % (params['path'], params['dest']),
            'The source was only read. %s holds the snapshot it held before, if any (a full '
            'snapshot is built beside it and removed on failure; a cut-off refresh is cut back '
            'to its manifest).' % params['dest']), duration=zu.elapsed(started), **result)
    result['duration'] = zu.elapsed(started)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
