"""Benchmark: zodb_replay through ZEO, the module of a given revision (before) against this
tree's (after), side by side in one run.

Both sides run as Ansible runs them (a new process per call), into a fresh copy of the same
target served by a real runzeo, alternating, so that both see the same load.

  throughput:  a 100 MB Data.fs (ZODB transactions) and a tail of small transactions like a
               site's writes (a new item in a BTree folder; every 50th a 20 kB blob) copied
               into the target's ZEO in one call; transactions/s from the module's own
               `seconds`
  busy site:   the source served by its own runzeo takes --rate commits/s from a writer while
               the cutover's gap replay runs (passes 6, settle 5, as roles/promote does); then
               the writes stop (the freeze) and the final replay copies what is left up to the
               source's last tid: does the gap converge, and how long is the frozen replay

--burn N starts N busy-loop processes for the whole run (killed by PID at the end) to load
the machine the way a loaded CI host is; the load average of every run is recorded.

    .venv/bin/python bench/zodb_replay_bench.py [--mb 100] [--tail 2000] [--rounds 2]
        [--rate 100] [--seconds 20] [--burn 0] [--before 07ed349]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from zodb_benchlib import REPO, mb, save, update_doc, write_data
from zodb_pack_bench import Zeo

COLLECTIONS = REPO / 'collections'


def run_replay(module_file, args):
    """One module call as Ansible makes it; (wall seconds, result)."""
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, handle)
    env = dict(os.environ, PYTHONPATH=str(COLLECTIONS))
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, module_file, handle.name], capture_output=True,
                              text=True, env=env, timeout=3600, check=False)
    finally:
        os.unlink(handle.name)
    wall = time.perf_counter() - started
    result = json.loads(proc.stdout)
    if result.get('failed'):
        raise SystemExit('zodb_replay (%s) failed: %s' % (module_file, result.get('msg')))
    return wall, result


def last_tid(path):
    from ZODB.FileStorage import FileStorage
    storage = FileStorage(path, read_only=True)
    try:
        return storage.lastTransaction().hex()
    finally:
        storage.close()


def add_folder(path, blobs):
    import ZODB
    from BTrees.OOBTree import OOBTree
    from ZODB.FileStorage import FileStorage
    db = ZODB.DB(FileStorage(path, blob_dir=blobs))
    try:
        with db.transaction() as conn:
            conn.root()['folder'] = OOBTree()
    finally:
        db.close()


def site_write(db, number):
    """One transaction like a site's write: a new item in a BTree folder, a blob now and then."""
    from persistent.mapping import PersistentMapping
    from ZODB.blob import Blob
    with db.transaction() as conn:
        folder = conn.root()['folder']
        if number % 50 == 7:
            blob = Blob()
            with blob.open('w') as handle:
                handle.write(os.urandom(20_000))
            folder['blob-%d' % number] = blob
        else:
            folder['item-%d' % number] = PersistentMapping({'title': 'x' * 200, 'n': number})


def fresh(base, work, name):
    shutil.rmtree(os.path.join(work, name), ignore_errors=True)
    os.makedirs(os.path.join(work, name))
    data = os.path.join(work, name, 'Data.fs')
    shutil.copyfile(os.path.join(base, 'Data.fs'), data)
    shutil.copytree(os.path.join(base, 'blobs'), os.path.join(work, name, 'blobs'))
    return data, os.path.join(work, name, 'blobs')


def fsync_rate(work, count=200):
    """Small appends fsynced one by one on the bench's filesystem, per second: the ceiling of
    any replay that commits each source transaction durably (FileStorage fsyncs every
    commit), measured beside each run because the shared disk's load changes it."""
    path = os.path.join(work, 'fsync-probe')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    started = time.perf_counter()
    try:
        for _number in range(count):
            os.write(fd, b'x' * 300)
            os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)
    return count / (time.perf_counter() - started)


def throughput(sides, base, source, work, rounds):
    runs = {side: [] for side in sides}
    after = last_tid(os.path.join(base, 'Data.fs'))
    for _round in range(rounds):
        for side, module_file in sides.items():
            data, blobs = fresh(base, work, 'target')
            zeo = Zeo(data, blobs, os.path.join(work, 'target'))
            try:
                load, fsyncs = os.getloadavg(), fsync_rate(work)
                wall, result = run_replay(module_file, {
                    'source': source + '/Data.fs', 'source_blob_dir': source + '/blobs',
                    'after_tid': after, 'zeo_address': '127.0.0.1:%d' % zeo.port})
            finally:
                zeo.stop()
            runs[side].append({'wall': wall, 'seconds': result['seconds'],
                               'transactions': result['transactions'],
                               'blobs': result['blobs'], 'load_average': load,
                               'fsync_per_second': fsyncs,
                               'per_second': result['transactions'] / result['seconds']})
            print('throughput %-6s %5d txns in %6.2f s = %7.1f/s (load %.1f, %.0f fsyncs/s)' % (
                side, result['transactions'], result['seconds'],
                runs[side][-1]['per_second'], load[0], fsyncs), flush=True)
    return runs


class Writer(threading.Thread):
    """Commits at a steady rate through the source's ZEO server until stopped."""

    def __init__(self, port, rate, blob_cache):
        threading.Thread.__init__(self, daemon=True)
        import ZEO
        self.db = ZEO.DB(('127.0.0.1', port), wait_timeout=30, blob_dir=blob_cache,
                         shared_blob_dir=False)
        self.rate, self.done, self.started = rate, 0, None
        self.halt = threading.Event()

    def run(self):
        self.started = time.perf_counter()
        while not self.halt.is_set():
            site_write(self.db, 10**6 + self.done)
            self.done += 1
            pause = self.started + self.done / self.rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)

    def stop(self):
        self.halt.set()
        self.join()
        self.db.close()


def busy_site(sides, base, work, rate, seconds):
    runs = {}
    after = last_tid(os.path.join(base, 'Data.fs'))
    for side, module_file in sides.items():
        source, source_blobs = fresh(base, work, 'source')
        target, target_blobs = fresh(base, work, 'target')
        source_zeo = Zeo(source, source_blobs, os.path.join(work, 'source'))
        target_zeo = Zeo(target, target_blobs, os.path.join(work, 'target'))
        writer = Writer(source_zeo.port, rate, os.path.join(work, 'source', 'client-blobs'))
        try:
            writer.start()
            time.sleep(seconds)  # the gap a twin's start leaves
            args = {'source': source, 'source_blob_dir': source_blobs,
                    'zeo_address': '127.0.0.1:%d' % target_zeo.port}
            load = os.getloadavg()
            gap_wall, gap = run_replay(module_file, dict(args, after_tid=after, passes=6,
                                                         settle=5))
            writer.stop()  # the freeze
            frozen_at = time.perf_counter()
            until = last_tid(source)
            final_wall, final = run_replay(module_file, dict(
                args, after_tid=gap['last_tid'], until_tid=until))
            frozen = time.perf_counter() - frozen_at
            achieved = writer.done / (frozen_at - writer.started)
        finally:
            if writer.is_alive():
                writer.stop()
            source_zeo.stop()
            target_zeo.stop()
        runs[side] = {'load_average': load, 'writes': writer.done, 'achieved_rate': achieved,
                      'gap_transactions': gap['transactions'], 'gap_passes': gap['passes'],
                      'gap_settled': gap['settled'], 'gap_wall': gap_wall,
                      'gap_seconds': gap['seconds'], 'final_transactions': final['transactions'],
                      'final_wall': final_wall, 'final_seconds': final['seconds'],
                      'frozen': frozen}
        print('busy site %-6s gap %5d txns in %d passes, %6.2f s, settled %s; frozen replay '
              '%d txns %.2f s (load %.1f, %.0f writes/s)' % (
                  side, gap['transactions'], gap['passes'], gap_wall, gap['settled'],
                  final['transactions'], final_wall, load[0], achieved), flush=True)
    return runs


def burners(count):
    return [subprocess.Popen([sys.executable, '-c', 'while True: pass'],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _number in range(count)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--mb', type=int, default=100)
    parser.add_argument('--tail', type=int, default=2000)
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--rate', type=int, default=100)
    parser.add_argument('--seconds', type=int, default=20)
    parser.add_argument('--burn', type=int, default=0)
    parser.add_argument('--before', default='07ed349',
                        help='the git revision whose zodb_replay is "before"')
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix='zodb-replay-bench-', dir=os.environ.get('BENCH_DIR'))
    before = os.path.join(work, 'zodb_replay_before.py')
    with open(before, 'w', encoding='utf-8') as handle:
        handle.write(subprocess.run(['git', 'show', '%s:plugins/modules/zodb_replay.py'
                                     % options.before], cwd=REPO, capture_output=True,
                                    text=True, check=True).stdout)
    sides = {'before': before, 'after': str(REPO / 'plugins' / 'modules' / 'zodb_replay.py')}
    base = os.path.join(work, 'base')
    os.makedirs(base)
    loaders = []
    try:
        write_data(base + '/Data.fs', base + '/blobs', target_bytes=options.mb * 1_000_000,
                   blobs=10)
        add_folder(base + '/Data.fs', base + '/blobs')
        source = os.path.join(work, 'tail')
        fresh(base, work, 'tail')
        import ZODB
        from ZODB.FileStorage import FileStorage
        db = ZODB.DB(FileStorage(source + '/Data.fs', blob_dir=source + '/blobs'))
        try:
            for number in range(options.tail):
                site_write(db, number)
        finally:
            db.close()
        size = os.path.getsize(base + '/Data.fs')
        loaders = burners(options.burn)
        time.sleep(5 if loaders else 0)
        started_load = os.getloadavg()
        rates = throughput(sides, base, source, work, options.rounds)
        busy = busy_site(sides, base, work, options.rate, options.seconds)
        ended_load = os.getloadavg()
    finally:
        for proc in loaders:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    best = {side: max(run['per_second'] for run in runs) for side, runs in rates.items()}
    payload = {'data_fs_bytes': size, 'tail': options.tail, 'rate': options.rate,
               'burners': options.burn, 'before': options.before, 'throughput': rates,
               'busy_site': busy, 'best_per_second': best,
               'load_average': {'start': started_load, 'end': ended_load}}
    path = save('zodb_replay', payload)
    report(payload, size, options, path)


def report(payload, size, options, path):
    rates, busy, best = payload['throughput'], payload['busy_site'], payload['best_per_second']
    lines = [
        '### Replay (`bench/zodb_replay_bench.py`)', '',
        'A %s Data.fs and a tail of %d site-like transactions (a new item in a BTree folder; '
        'every 50th a 20 kB blob) replayed into a real runzeo by `zodb_replay` of revision %s '
        '("before") and of this tree ("after"), alternating, each call a new process; %d '
        'busy-loop process(es) beside the run; load average %s at the start, %s at the end '
        '(2 shared cores).' % (mb(size), options.tail, options.before, options.burn,
                               fmt_load(payload['load_average']['start']),
                               fmt_load(payload['load_average']['end'])), '',
        '| side | transactions/s (each round) | load avg | fsyncs/s beside it | best | '
        'after / before |',
        '| --- | --- | --- | --- | --- | --- |']
    for side in ('before', 'after'):
        lines.append('| %s | %s | %s | %s | %.0f/s | %s |' % (
            side, ', '.join('%.0f' % run['per_second'] for run in rates[side]),
            ', '.join('%.1f' % run['load_average'][0] for run in rates[side]),
            ', '.join('%.0f' % run['fsync_per_second'] for run in rates[side]), best[side],
            '%.1fx' % (best['after'] / best['before']) if side == 'after' else ''))
    lines += [
        '', 'A busy site: the source takes %d commits/s through its own runzeo; after %d s the '
        'gap replay runs (passes 6, settle 5, as the cutover does) while writes go on, then '
        'the writes stop (the freeze) and the final replay copies up to the source\'s last '
        'tid. Wall times include the module\'s start.' % (options.rate, options.seconds), '',
        '| side | load avg | writes/s | gap: transactions (passes) | gap wall | settled | '
        'frozen: transactions | frozen replay wall |',
        '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for side in ('before', 'after'):
        run = busy[side]
        lines.append('| %s | %.1f | %.0f | %d (%d) | %.2f s | %s | %d | %.2f s |' % (
            side, run['load_average'][0], run['achieved_rate'], run['gap_transactions'],
            run['gap_passes'], run['gap_wall'], 'yes' if run['gap_settled'] else 'no',
            run['final_transactions'], run['final_wall']))
    lines += ['', 'Raw numbers: `bench/results/%s`.' % path.name]
    update_doc('zodb_replay_bench', '\n'.join(lines))
    print('\n'.join(lines))


def fmt_load(load):
    return '[%s]' % ', '.join('%.1f' % value for value in load)


if __name__ == '__main__':
    main()
