"""Benchmark: zodb_snapshot vs cp, incremental refreshes, and blob trees.

Every Data.fs is written with ZODB itself (real transactions). Runs alternate with their
reference and the best of N counts; the page cache is warm for both (the same file is read).

  full:        snapshot (mode full) of a 100 MB and a 1 GB Data.fs vs `cp` of the same file,
               with verify: spans (the default) and verify: full (md5 of every byte) in the
               same rounds; ratio = cp time / snapshot time (aim >= 0.8)
  incremental: after appending 1 MB and 10 MB with ZODB, the refresh's time and bytes moved
  blobs:       1,000 and 20,000 blob files, full snapshot (hard links / copies) and a repeat

    .venv/bin/python bench/zodb_snapshot_bench.py [--sizes 100,1000] [--blobs 1000,20000]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

from zodb_benchlib import REPO, mb, module, run, save, update_doc, write_data


def snapshot(data, dest, blob_dir=None, **extra):
    args = {'path': data, 'dest': dest}
    if blob_dir:
        args['blob_dir'] = blob_dir
    args.update(extra)
    return module('zodb_snapshot', args)


def bench_full(work, size_mb, rounds):
    data = os.path.join(work, 'fs%d' % size_mb, 'Data.fs')
    os.makedirs(os.path.dirname(data))
    started = time.perf_counter()
    write_data(data, target_bytes=size_mb * 1_000_000)
    generated = time.perf_counter() - started
    size = os.path.getsize(data)
    print('generated %s with ZODB in %.1fs' % (mb(size), generated))
    copy = os.path.join(work, 'cp-copy.fs')
    dest = os.path.join(work, 'snap%d' % size_mb)
    subprocess.run(['cat', data], stdout=subprocess.DEVNULL, check=True)  # warm the cache
    cp_times, cp_sync_times = [], []
    walls = {'spans': [], 'full': []}
    durations = {'spans': [], 'full': []}
    for _round in range(rounds):
        subprocess.run(['sync'], check=True)
        cp_times.append(run(['cp', data, copy]))
        os.unlink(copy)
        subprocess.run(['sync'], check=True)
        # the module fsyncs its copy: the same durability as cp followed by sync of the file
        cp_sync_times.append(run(['cp', data, copy]) + run(['sync', copy]))
        os.unlink(copy)
        for verify in ('spans', 'full'):
            shutil.rmtree(dest, ignore_errors=True)
            subprocess.run(['sync'], check=True)
            wall, result = snapshot(data, dest, mode='full', verify=verify)
            walls[verify].append(wall)
            durations[verify].append(result['duration'])
            assert result['size'] == size and result['verify'] == verify, result
    row = {'size': size, 'cp': min(cp_times), 'cp_sync': min(cp_sync_times),
           'cp_all': cp_times, 'cp_sync_all': cp_sync_times, 'generate_seconds': generated}
    for verify in ('spans', 'full'):
        wall, duration = min(walls[verify]), min(durations[verify])
        row[verify] = {'module_wall': wall, 'module_duration': duration,
                       'module_all': walls[verify], 'module_duration_all': durations[verify],
                       'ratio_wall': row['cp'] / wall, 'ratio_in_module': row['cp'] / duration,
                       'ratio_in_module_vs_cp_sync': row['cp_sync'] / duration}
    incremental = []
    for grow_mb in (1, 10):
        write_data(data, target_bytes=grow_mb * 1_000_000, start=10**6 * grow_mb)
        wall, result = snapshot(data, dest)
        assert result['mode_used'] == 'incremental', result
        incremental.append({'appended_mb': grow_mb, 'module_wall': wall,
                            'module_duration': result['duration'],
                            'bytes_copied': result['bytes_copied']})
    row['incremental'] = incremental
    shutil.rmtree(os.path.dirname(data))
    shutil.rmtree(dest, ignore_errors=True)
    return row


def bench_blobs(work, count):
    base = os.path.join(work, 'blobs%d' % count)
    data, blobs = os.path.join(base, 'Data.fs'), os.path.join(base, 'blobs')
    os.makedirs(base)
    started = time.perf_counter()
    write_data(data, blobs, blobs=count)
    generated = time.perf_counter() - started
    print('generated %d blobs with ZODB in %.1fs' % (count, generated))
    row = {'blobs': count, 'generate_seconds': generated}
    for link in (True, False):
        dest = os.path.join(work, 'snap-blobs-%s' % link)
        wall, result = snapshot(data, dest, blobs, blob_link=link)
        assert result['blobs_copied'] == count, result
        again_wall, again = snapshot(data, dest, blobs, blob_link=link)
        assert again['changed'] is False
        key = 'link' if link else 'copy'
        row[key] = {'full_wall': wall, 'full_duration': result['duration'],
                    'repeat_wall': again_wall, 'repeat_duration': again['duration']}
        shutil.rmtree(dest)
    ref = os.path.join(work, 'cp-blobs')
    row['cp_a'] = run(['cp', '-a', blobs, ref])
    shutil.rmtree(ref)
    row['cp_al'] = run(['cp', '-al', blobs, ref])
    shutil.rmtree(ref)
    shutil.rmtree(base)
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--sizes', default='100,1000', help='Data.fs sizes in MB')
    parser.add_argument('--blobs', default='1000,20000', help='blob tree sizes')
    parser.add_argument('--rounds', type=int, default=3)
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix='zodb-snapshot-bench-', dir=os.environ.get('BENCH_DIR'))
    try:
        full = [bench_full(work, int(s), options.rounds) for s in options.sizes.split(',') if s]
        blobs = [bench_blobs(work, int(n)) for n in options.blobs.split(',') if n]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = save('zodb_snapshot', {'full': full, 'blobs': blobs, 'rounds': options.rounds})
    lines = [
        '### Snapshot (`bench/zodb_snapshot_bench.py`)',
        '',
        'Data.fs files written with ZODB; best of %d alternating runs, warm page cache, same '
        'filesystem. "module" is the whole module process as Ansible runs it (interpreter start, '
        'imports); "in module" is its own `duration` (the copy, the md5 of the hashed spans, '
        'the manifest, the fsync). `verify: spans` (the default) hashes the first and last MiB '
        'of the copied range, `verify: full` every byte (md5). Ratio = `cp` time / snapshot time, '
        'aim >= 0.8; "vs `cp`+`sync`" compares with a copy made as durable as the '
        'snapshot\'s.' % options.rounds,
        '',
        '| Data.fs | verify | `cp` | `cp` + `sync` | snapshot (module) | ratio | in module | ratio '
        '| vs `cp`+`sync` |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ]
    for row in full:
        for verify in ('spans', 'full'):
            mine = row[verify]
            lines.append('| %s | %s | %.2f s | %.2f s | %.2f s | %.2fx | %.2f s | %.2fx | %.2fx |'
                         % (mb(row['size']), verify, row['cp'], row['cp_sync'],
                            mine['module_wall'], mine['ratio_wall'], mine['module_duration'],
                            mine['ratio_in_module'], mine['ratio_in_module_vs_cp_sync']))
    lines += ['', '| Data.fs | appended | bytes copied | refresh (module) | refresh (in module) |',
              '| --- | --- | --- | --- | --- |']
    for row in full:
        for inc in row['incremental']:
            lines.append('| %s | %d MB | %s | %.2f s | %.3f s |' % (
                mb(row['size']), inc['appended_mb'], mb(inc['bytes_copied']),
                inc['module_wall'], inc['module_duration']))
    lines += ['', '| blob files | full, hard links | repeat | full, copies | repeat | `cp -al` | '
              '`cp -a` |', '| --- | --- | --- | --- | --- | --- | --- |']
    for row in blobs:
        lines.append('| %d | %.2f s | %.2f s | %.2f s | %.2f s | %.2f s | %.2f s |' % (
            row['blobs'], row['link']['full_wall'], row['link']['repeat_wall'],
            row['copy']['full_wall'], row['copy']['repeat_wall'], row['cp_al'], row['cp_a']))
    lines += ['', 'Raw numbers: `%s`.' % path.relative_to(REPO)]
    markdown = '\n'.join(lines)
    update_doc('zodb_snapshot_bench', markdown)
    print(markdown)


if __name__ == '__main__':
    main()
