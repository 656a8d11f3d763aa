"""zodb_snapshot pack: true (one pass) against a plain snapshot followed by zodb_pack.

A ~100 MB Data.fs with history (rewritten objects), live objects and blobs. For each way:
the wall time, the modules' own durations and the bytes the processes wrote (the kernel's
per-process write accounting, ``ru_oublock`` of the children: bytes sent to the storage
layer). Two rounds, alternating, with a warm page cache for both. Not part of the tests.
"""
from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time

from zodb_benchlib import mb, module, save, update_doc, write_data


def written_by_children():
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock * 512


def measured(steps):
    """Run ``steps`` (module name, args) one after the other; (wall s, in-module s, bytes)."""
    os.sync()
    before, started = written_by_children(), time.perf_counter()
    inside = 0.0
    results = []
    for name, args in steps:
        _wall, result = module(name, args)
        inside += result['duration']
        results.append(result)
    wall = time.perf_counter() - started
    os.sync()
    return wall, inside, written_by_children() - before, results


def main():
    base = tempfile.mkdtemp(prefix='zodb-pack-snap-', dir=os.environ.get('BENCH_DIR'))
    try:
        src = os.path.join(base, 'src')
        os.makedirs(src)
        data, blobs = os.path.join(src, 'Data.fs'), os.path.join(src, 'blobs')
        write_data(data, blobs, target_bytes=40_000_000, object_bytes=20_000, blobs=1000,
                   blob_bytes=8192)
        write_data(data, blobs, target_bytes=60_000_000, object_bytes=20_000, history=True,
                   start=10_000)
        rows = []
        for round_number in range(2):
            for way in ('one pass', 'copy + pack'):
                dest = os.path.join(base, 'snap-%d-%s' % (round_number, way[0]))
                if way == 'one pass':
                    steps = [('zodb_snapshot', {'path': data, 'blob_dir': blobs, 'dest': dest,
                                                'mode': 'full', 'pack': True})]
                else:
                    steps = [('zodb_snapshot', {'path': data, 'blob_dir': blobs, 'dest': dest,
                                                'mode': 'full'}),
                             ('zodb_pack', {'path': os.path.join(dest, 'Data.fs'),
                                            'blob_dir': os.path.join(dest, 'blobs')})]
                wall, inside, written, results = measured(steps)
                final = os.path.getsize(os.path.join(dest, 'Data.fs'))
                rows.append({'round': round_number, 'way': way, 'wall_s': round(wall, 2),
                             'in_module_s': round(inside, 2), 'bytes_written': written,
                             'source_bytes': os.path.getsize(data), 'packed_bytes': final,
                             'transactions': results[0].get('transactions')})
                print(rows[-1], flush=True)
                shutil.rmtree(dest)
        path = save('zodb_snapshot_pack', {'rows': rows})
        table = ['| way | source | packed | wall | in module | written by the modules |',
                 '| --- | --- | --- | --- | --- | --- |']
        for row in rows:
            table.append('| %s (round %d) | %s | %s | %.2f s | %.2f s | %s |' % (
                row['way'], row['round'] + 1, mb(row['source_bytes']), mb(row['packed_bytes']),
                row['wall_s'], row['in_module_s'], mb(row['bytes_written'])))
        update_doc('zodb_snapshot_pack', '### Packed snapshot: one pass vs snapshot + zodb_pack\n\n'
                   'Raw numbers: `%s`.\n\n%s' % (path.relative_to(path.parents[2]),
                                                 '\n'.join(table)))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == '__main__':
    main()
