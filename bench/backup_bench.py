"""Benchmark: backups through the collection against bare repozo, on the same files.

The collection's side is the ``zodb_backup`` module run as Ansible runs it on the ZEO host: a
new Python process with its JSON arguments (what ``playbooks/backup.yml`` and the scheduled
runs call; without the SSH hop and the playbook around it, which bench/promotion_bench.py
measures for the promotion). The bare side is what a human would type:

- full backup: ``repozo -B -r REPO -f Data.fs`` (no backup there yet) plus ``cp -al`` of the
  blob folder into the repository (committed blob files never change: hard links);
- incremental backup: the same two commands after the Data.fs has grown;
- restore: ``repozo -R -r REPO -o Data.fs``, against the module's restore drill
  (``verify=true``: ``repozo -R -w`` into a scratch folder, ZODB's ``fstest``, the blobs each
  record names checked), and against the like-for-like ``repozo -R -w`` plus ``fstest``.

Data.fs and blobs are made with ZODB (benchlib.write_data), grown by a day's worth of edits for
the incremental. Rounds alternate which side goes first; best of N counts; the load average is
recorded before and after.

    .venv/bin/python bench/backup_bench.py [--sizes 100M,1G] [--rounds 3] [--keep]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from zodb_benchlib import REPO, mb, module, save, update_doc, write_data

BIN = os.path.dirname(sys.executable)
REPOZO = os.path.join(BIN, 'repozo')
FSTEST = [sys.executable, '-m', 'ZODB.scripts.fstest']
# What is compared: (the collection's measure, the bare one).
PAIRS = {'full': ('full_module', 'full_bare'),
         'incremental': ('incremental_module', 'incremental_bare'),
         'restore': ('restore_module', 'restore_bare'),
         'restore_checked': ('restore_module', 'restore_checked_bare')}


def parse_size(text):
    units = {'M': 10**6, 'G': 10**9}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units \
        else int(text)


def next_second():
    """repozo names its files by the second: start each backup in a second of its own."""
    time.sleep(1.02 - (time.time() % 1))


def make_sources(work, size):
    """src0 (the Data.fs and blobs of the full backup) and src1 (src0 grown by a day's edits:
    2 % more data, 5 % more blobs), made with ZODB."""
    src0, src1 = os.path.join(work, 'src0'), os.path.join(work, 'src1')
    os.makedirs(src0)
    blobs = max(200, size // 50_000)
    started = time.perf_counter()
    write_data(src0 + '/Data.fs', src0 + '/blobs', target_bytes=size, blobs=blobs,
               blob_bytes=10_000)
    shutil.copytree(src0, src1, copy_function=os.link)
    os.unlink(src1 + '/Data.fs')
    shutil.copyfile(src0 + '/Data.fs', src1 + '/Data.fs')
    write_data(src1 + '/Data.fs', src1 + '/blobs', target_bytes=size // 50, blobs=blobs // 20,
               blob_bytes=10_000, start=10**7)
    print('generated %s (+%s for the incremental), %d blobs (+%d), in %.0fs'
          % (mb(os.path.getsize(src0 + '/Data.fs')),
             mb(os.path.getsize(src1 + '/Data.fs') - os.path.getsize(src0 + '/Data.fs')),
             blobs, blobs // 20, time.perf_counter() - started), flush=True)
    return src0, src1


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(times, key, func, *args):
    """Run ``func``; record its wall time as ``key`` and the CPU seconds of the processes it
    ran as ``key_cpu`` (robust on a loaded machine, where the wall time waits for a core)."""
    cpu, started = children_cpu(), time.perf_counter()
    value = func(*args)
    times[key] = time.perf_counter() - started
    times[key + '_cpu'] = children_cpu() - cpu
    return value


def bare_backup(src, repo):
    """repozo -B, then the blob folder hard-linked into the repository, as a human would."""
    stamp = time.strftime('%Y-%m-%d-%H-%M-%S', time.gmtime())
    subprocess.run([REPOZO, '-B', '-r', repo, '-f', src + '/Data.fs'], check=True)
    os.makedirs(repo + '/blobs', exist_ok=True)
    subprocess.run(['cp', '-al', src + '/blobs', repo + '/blobs/' + stamp], check=True)


def bare_checked_restore(repo, output):
    subprocess.run([REPOZO, '-R', '-w', '-r', repo, '-o', output], check=True)
    subprocess.run(FSTEST + [output], check=True)


def module_backup(src, repo):
    return module('zodb_backup', {'path': src + '/Data.fs', 'blob_dir': src + '/blobs',
                                  'repository': repo})[1]


def module_drill(repo, scratch):
    return module('zodb_backup', {'repository': repo, 'verify': True,
                                  'scratch_dir': scratch})[1]


def one_round(src0, src1, work, order):
    """Both sides once, in ``order``: {measure: seconds}."""
    times = {}
    for side in order:
        repo = os.path.join(work, 'repo-' + side)
        shutil.rmtree(repo, ignore_errors=True)
        os.makedirs(repo)
        scratch = os.path.join(work, 'scratch-' + side)
        shutil.rmtree(scratch, ignore_errors=True)
        next_second()
        if side == 'bare':
            measured(times, 'full_bare', bare_backup, src0, repo)
            next_second()
            measured(times, 'incremental_bare', bare_backup, src1, repo)
            os.makedirs(scratch)
            measured(times, 'restore_bare', subprocess.run,
                     [REPOZO, '-R', '-r', repo, '-o', scratch + '/Data.fs'])
            os.unlink(scratch + '/Data.fs')
            measured(times, 'restore_checked_bare', bare_checked_restore, repo,
                     scratch + '/Data.fs')
            shutil.rmtree(scratch)
        else:
            result = measured(times, 'full_module', module_backup, src0, repo)
            assert result['kind'] == 'full', result
            times['full_module_inside'] = result['duration']
            next_second()
            result = measured(times, 'incremental_module', module_backup, src1, repo)
            assert result['kind'] == 'incremental', result
            times['incremental_module_inside'] = result['duration']
            result = measured(times, 'restore_module', module_drill, repo, scratch)
            assert result['verified'], result
            times['restore_module_inside'] = result['duration']
        shutil.rmtree(repo)
    return times


def bench_size(work, size, rounds):
    src0, src1 = make_sources(work, size)
    runs = []
    for number in range(rounds):
        order = ('bare', 'module') if number % 2 == 0 else ('module', 'bare')
        runs.append(one_round(src0, src1, work, order))
        shown = ', '.join('%s %.2fs' % item for item in sorted(runs[-1].items()))
        print('round %d: %s' % (number + 1, shown), flush=True)
    best = {key: min(r[key] for r in runs) for key in runs[0]}
    ratios = {name: best[ours] / best[theirs] for name, (ours, theirs) in PAIRS.items()}
    ratios.update({name + '_cpu': best[ours + '_cpu'] / best[theirs + '_cpu']
                   for name, (ours, theirs) in PAIRS.items()})
    sizes = {'data_fs_bytes': os.path.getsize(src0 + '/Data.fs'),
             'grown_bytes': os.path.getsize(src1 + '/Data.fs') - os.path.getsize(src0 + '/Data.fs')}
    shutil.rmtree(src0)
    shutil.rmtree(src1)
    return dict(sizes, runs=runs, best=best, ratios=ratios)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--sizes', default='100M', help='Data.fs sizes, e.g. 100M,1G')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--keep', action='store_true', help='keep the work folder')
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix='backup-bench-', dir=os.environ.get('BENCH_DIR'))
    load_before = os.getloadavg()
    results = {}
    try:
        for text in options.sizes.split(','):
            folder = os.path.join(work, text)
            os.makedirs(folder)
            results[text] = bench_size(folder, parse_size(text), options.rounds)
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    path = save('backup', {'rounds': options.rounds, 'sizes': results,
                           'load_before': load_before, 'load_after': load_after})
    rows = []
    labels = {'full': 'full backup', 'incremental': 'incremental backup',
              'restore': 'restore: drill vs `repozo -R`',
              'restore_checked': 'restore: drill vs `repozo -R -w` + `fstest`'}
    for text, result in results.items():
        best, ratios = result['best'], result['ratios']
        for name, (ours, theirs) in PAIRS.items():
            inside = best.get(ours + '_inside')
            rows.append('| %s | %s | %.2f s%s | %.2f s | %.2fx | %.2f s / %.2f s | %.2fx |' % (
                text, labels[name], best[ours],
                ' (in-module %.2f s)' % inside if inside is not None and name != 'restore_checked'
                else '', best[theirs], ratios[name], best[ours + '_cpu'], best[theirs + '_cpu'],
                ratios[name + '_cpu']))
    markdown = '\n'.join([
        '### Backups (`bench/backup_bench.py`)',
        '',
        'The `zodb_backup` module run as Ansible runs it on the ZEO host (a new process with its '
        'JSON arguments; no SSH hop, no playbook) against bare `repozo -B` plus `cp -al` of the '
        'blob folder, on the same Data.fs and blobs made with ZODB (2 %% more data and 5 %% more '
        'blobs for the incremental). Restore: the module\'s drill (`verify=true`: '
        '`repozo -R -w`, `fstest`, every blob a record names) against bare `repozo -R`, and '
        'against `repozo -R -w` plus `fstest`. Best of %d alternated rounds; load average '
        '%.1f/%.1f/%.1f before, %.1f/%.1f/%.1f after, on %d cores. Aim: ratio <= 1.2. '
        'Wall times, and the CPU seconds of the processes each side ran (which a loaded '
        'machine does not inflate).'
        % ((options.rounds,) + load_before + load_after + (os.cpu_count(),)),
        '',
        '| Data.fs | run | zodb_backup module | bare | ratio | CPU module / bare | CPU ratio |',
        '| --- | --- | --- | --- | --- | --- | --- |',
        *rows,
        '',
        'Raw numbers: `%s`.' % path.relative_to(REPO),
    ])
    update_doc('backup_bench', markdown)
    print(markdown)


if __name__ == '__main__':
    main()
