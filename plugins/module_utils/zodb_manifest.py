# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshot manifests (``manifest.json``): what a snapshot holds, written atomically, and the
check of a Data.fs against one.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.zopeops.stages.plugins.module_utils import files
from ansible_collections.zopeops.stages.plugins.module_utils.zodb import ZODBDataError
from ansible_collections.zopeops.stages.plugins.module_utils.zodb_copy import (
    CHECKSUMS, VERIFY_MODES, digest_of_range, fsync_dir)
from ansible_collections.zopeops.stages.plugins.module_utils.zodb_format import (
    MAGIC, committed_end, hex_to_tid, read_magic, tid_to_hex)


MANIFEST_NAME = 'manifest.json'


# 2: each range entry is a copied range with the spans hashed in it ({'start', 'end', 'verify',
# 'spans': [{'start', 'end', <checksum>}]}); 1: each entry was itself a hashed piece (read still).
MANIFEST_FORMAT = 2


SNAPSHOT_DATA_NAME = 'Data.fs'


SNAPSHOT_BLOB_NAME = 'blobs'


def checksum_of(manifest):
    algorithm = manifest.get('checksum') or 'md5'
    if algorithm not in CHECKSUMS:
        raise ZODBDataError('unknown checksum %r in the manifest (known: %s)'
                            % (algorithm, ', '.join(CHECKSUMS)))
    return algorithm


def range_spans(entry):
    """The hashed spans of a manifest range entry (format 1: the entry is its own span)."""
    if isinstance(entry, dict) and 'spans' in entry:
        return entry['spans']
    return [entry]


def range_verify(entry):
    """``full`` if every byte of the range entry was hashed, else ``spans``."""
    if isinstance(entry, dict) and 'spans' in entry:
        return entry.get('verify') if entry.get('verify') in VERIFY_MODES else 'spans'
    return 'full'


def manifest_verify(manifest):
    """``full`` if every range of the manifest was hashed in full, else ``spans``."""
    ranges = manifest.get('ranges')
    if isinstance(ranges, list) and ranges and all(range_verify(e) == 'full' for e in ranges):
        return 'full'
    return 'spans'


def last_span(manifest):
    """The last hashed span of the manifest: the tail of the snapshot file, or None."""
    if not manifest.get('ranges'):
        return None
    spans = range_spans(manifest['ranges'][-1])
    return spans[-1] if spans else None


def hashed_bytes(manifest):
    """Bytes covered by the manifest's hashed spans (0 for a malformed manifest; what is wrong
    with it is for ``verify_data_against_manifest`` to report)."""
    try:
        return sum(span['end'] - span['start'] for entry in manifest.get('ranges') or []
                   for span in range_spans(entry))
    except (KeyError, TypeError):
        return 0


def range_problems(manifest, size, algorithm):
    """Problems with the manifest's range list itself: gaps, malformed entries, spans that do
    not cover a range's head and tail (or all of it, when it claims ``full``)."""
    covered = 0
    for entry in manifest['ranges']:
        if not isinstance(entry, dict) or not {'start', 'end'} <= set(entry):
            return ['the manifest has a malformed range entry %r' % (entry,)]
        if entry['start'] != covered:
            return ['the manifest ranges leave a gap at byte %d' % covered]
        spans = range_spans(entry)
        if not isinstance(spans, list) or not spans:
            return ['the manifest range [%d, %d) lists no hashed spans'
                    % (entry['start'], entry['end'])]
        at = entry['start']
        for span in spans:
            if not isinstance(span, dict) or not {'start', 'end', algorithm} <= set(span):
                return ['the manifest has a malformed range entry %r' % (entry,)]
            if not at <= span['start'] < span['end'] <= entry['end'] or (
                    range_verify(entry) == 'full' and span['start'] != at):
                return ['the manifest range [%d, %d) has a misplaced span [%d, %d)' % (
                    entry['start'], entry['end'], span['start'], span['end'])]
            at = span['end']
        if spans[0]['start'] != entry['start'] or spans[-1]['end'] != entry['end']:
            return ['the hashed spans of the manifest range [%d, %d) miss its head or tail' % (
                entry['start'], entry['end'])]
        covered = entry['end']
    if covered != size:
        return ['the manifest ranges cover %d bytes, not %d' % (covered, size)]
    return []


def manifest_path(snapshot_dir):
    return os.path.join(snapshot_dir, MANIFEST_NAME)


def read_manifest(snapshot_dir):
    """The snapshot's manifest dict, or None if it has none; ZODBDataError if unreadable."""
    path = manifest_path(snapshot_dir)
    try:
        with open(path, encoding='utf-8') as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ZODBDataError('The snapshot manifest %s cannot be read: %s. Take the snapshot '
                            'again.' % (path, exc)) from None
    missing = [key for key in ('size', 'tid', 'ranges') if key not in manifest]
    if missing or not isinstance(manifest.get('ranges'), list):
        raise ZODBDataError('The snapshot manifest %s lacks %s. Take the snapshot again.'
                            % (path, ', '.join(missing) or 'a list of ranges'))
    try:
        hex_to_tid(manifest['tid'])
        int(manifest['size'])
    except (TypeError, ValueError) as exc:
        raise ZODBDataError('The snapshot manifest %s is damaged (%s). Take the snapshot '
                            'again.' % (path, exc)) from None
    return manifest


def write_json_atomic(path, data):
    """Replace ``path`` with ``data`` as JSON through the collection's one atomic writer, then
    fsync the folder so that the rename lasts."""
    files.atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + '\n')
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def snapshot_paths(snapshot_dir):
    """What a snapshot folder holds that the snapshot consists of (for its owner and modes):
    its Data.fs, its manifest and its blob folder; not an index or lock a reader left."""
    return [os.path.join(snapshot_dir, name) for name in
            (SNAPSHOT_DATA_NAME, MANIFEST_NAME, SNAPSHOT_BLOB_NAME)]


def write_manifest(snapshot_dir, manifest):
    manifest = dict(manifest)
    manifest.setdefault('format', MANIFEST_FORMAT)
    write_json_atomic(manifest_path(snapshot_dir), manifest)
    return manifest


def verify_data_against_manifest(data_path, manifest, hashes=True):
    """Problems (a list of sentences) found comparing a Data.fs with a manifest; [] if none.

    Checks: magic FS30, file size equals the manifest size, the committed end is the whole file
    and its last tid is the manifest tid, and (``hashes``) the checksum of every span the
    manifest records: every byte for ranges taken with ``verify: full``, the head and tail
    spans for ranges taken with ``verify: spans``.
    """
    problems = []
    try:
        algorithm = checksum_of(manifest)
    except ZODBDataError as exc:
        return [str(exc)]
    if not os.path.isfile(data_path):
        return ['%s does not exist' % data_path]
    if read_magic(data_path) != MAGIC:
        return ['%s does not start with the FileStorage magic %r' % (data_path, MAGIC)]
    fd = os.open(data_path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size != manifest['size']:
            problems.append('%s is %d bytes, the manifest says %d' % (
                data_path, size, manifest['size']))
            return problems
        end, tid, _count = committed_end(fd, 4, size)
        if end != size:
            problems.append('%s has committed data only up to byte %d of %d' % (
                data_path, end, size))
        if tid_to_hex(tid) != manifest['tid']:
            problems.append('the last transaction of %s is %s, the manifest says %s' % (
                data_path, tid_to_hex(tid), manifest['tid']))
        malformed = range_problems(manifest, size, algorithm)
        if malformed:
            return problems + malformed
        if hashes and not problems:
            spans = [span for entry in manifest['ranges'] for span in range_spans(entry)]
            with ThreadPoolExecutor(max_workers=2) as pool:
                digests = list(pool.map(
                    lambda s: digest_of_range(fd, s['start'], s['end'], algorithm), spans))
            for span, digest in zip(spans, digests):
                if digest != span[algorithm]:
                    problems.append('bytes [%d, %d) of %s have %s %s, the manifest says %s' % (
                        span['start'], span['end'], data_path, algorithm, digest,
                        span[algorithm]))
    finally:
        os.close(fd)
    return problems
