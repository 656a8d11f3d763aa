"""Shared by bench/zodb_*_bench.py: data made with ZODB itself, timing, result files.

Not part of the test suite. Run a bench with the project's venv python from the repo root.
"""
from __future__ import annotations

import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / 'tests'), str(REPO / 'collections')]

from support.modules import run_module  # noqa: E402  (after the path setup above)

RESULTS = REPO / 'bench' / 'results'
DOC = REPO / 'docs' / 'benchmarks.md'


def write_data(path, blob_dir=None, target_bytes=0, object_bytes=100_000, objects_per_txn=10,
               blobs=0, blobs_per_txn=500, blob_bytes=1024, history=False, start=0):
    """Grow a FileStorage with real ZODB transactions until it has ``target_bytes`` more bytes
    (``history``: rewrite the same objects, leaving old revisions for a pack to remove) and
    ``blobs`` more blob files. Returns the number of transactions committed."""
    import ZODB
    import ZODB.FileStorage
    from persistent.mapping import PersistentMapping
    from ZODB.blob import Blob
    storage = ZODB.FileStorage.FileStorage(path, blob_dir=blob_dir)
    db = ZODB.DB(storage, cache_size=100)
    goal = storage.getSize() + target_bytes
    txns = 0
    counter = start
    try:
        while storage.getSize() < goal:
            with db.transaction() as conn:
                root = conn.root()
                for j in range(objects_per_txn):
                    key = 'obj-%d' % (j if history else counter)
                    root[key] = PersistentMapping({'data': os.urandom(object_bytes)})
                    counter += 1
            txns += 1
        made = 0
        while made < blobs:
            with db.transaction() as conn:
                root = conn.root()
                for blob_number in range(min(blobs_per_txn, blobs - made)):
                    blob = Blob()
                    with blob.open('w') as handle:
                        handle.write(os.urandom(blob_bytes))
                    root['blob-%d-%d' % (start, made)] = blob
                    made += 1
            txns += 1
    finally:
        db.close()
    return txns


def timed(func, *args, **kwargs):
    started = time.perf_counter()
    value = func(*args, **kwargs)
    return time.perf_counter() - started, value


def run(argv):
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - started


def module(name, args, check=False):
    started = time.perf_counter()
    result = run_module(name, args, check=check)
    wall = time.perf_counter() - started
    if result.get('failed'):
        raise SystemExit('%s failed: %s' % (name, result.get('msg')))
    return wall, result


def host_info():
    return {'python': sys.version.split()[0], 'machine': platform.machine(),
            'cpus': os.cpu_count(), 'kernel': platform.release(),
            'load_average': os.getloadavg()}


def save(name, payload):
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
    payload = dict(payload, bench=name, when=stamp, host=host_info())
    path = RESULTS / ('%s-%s.json' % (name, stamp))
    path.write_text(json.dumps(payload, indent=2) + '\n')
    return path


def update_doc(marker, markdown):
    """Put ``markdown`` between this bench's markers under "## ZODB data" in docs/benchmarks.md,
    leaving every other section of the file alone."""
    start, end = '<!-- %s:start -->' % marker, '<!-- %s:end -->' % marker
    block = '%s\n%s\n%s' % (start, markdown.strip(), end)
    text = DOC.read_text() if DOC.exists() else '# Benchmarks\n'
    if start in text:
        text = re.sub(re.escape(start) + '.*?' + re.escape(end), lambda _m: block, text,
                      flags=re.S)
    else:
        if '## ZODB data' not in text:
            text = text.rstrip() + '\n\n## ZODB data\n'
        head, sep, tail = text.partition('## ZODB data\n')
        # append at the end of the ZODB data section (before the next "## " heading)
        nxt = re.search(r'^## ', tail, flags=re.M)
        cut = nxt.start() if nxt else len(tail)
        tail = tail[:cut].rstrip() + '\n\n' + block + '\n\n' + tail[cut:]
        text = head + sep + tail
    DOC.write_text(text.rstrip() + '\n')


def mb(nbytes):
    return '%.1f MB' % (nbytes / 1e6)
