"""Benchmark: zodb_pack vs ZODB's own FileStorage.pack (offline) and zeopack (online).

The same generated Data.fs (real ZODB transactions: current objects plus rewritten ones whose
old revisions a pack removes) is copied fresh for every run; runs alternate, best of N counts.
Both sides run as a new process, as they would in a deployment: the module through the way
Ansible runs it, ZODB's pack as ``python -c``, zeopack as its console script.

    .venv/bin/python bench/zodb_pack_bench.py [--mb 160] [--rounds 3] [--keep]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from zodb_benchlib import REPO, mb, module, run, save, update_doc, write_data

ZODB_PACK = ('import sys, time; from ZODB.FileStorage import FileStorage; '
             'from ZODB.serialize import referencesf; '
             's = FileStorage(sys.argv[1], blob_dir=sys.argv[2], pack_keep_old=False); '
             's.pack(time.time(), referencesf); s.close()')


def fresh_copy(base, work, name):
    data = os.path.join(work, name, 'Data.fs')
    shutil.rmtree(os.path.join(work, name), ignore_errors=True)
    os.makedirs(os.path.dirname(data))
    shutil.copyfile(base + '/Data.fs', data)
    shutil.copytree(base + '/blobs', os.path.join(work, name, 'blobs'))
    return data, os.path.join(work, name, 'blobs')


class Zeo:
    def __init__(self, data, blobs, work):
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            self.port = sock.getsockname()[1]
        conf = os.path.join(work, 'zeo.conf')
        with open(conf, 'w', encoding='utf-8') as handle:
            handle.write('<zeo>\n address 127.0.0.1:%d\n</zeo>\n<filestorage 1>\n path %s\n '
                         'blob-dir %s\n</filestorage>\n' % (self.port, data, blobs))
        self.proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'runzeo'),
                                      '-C', conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(('127.0.0.1', self.port)) == 0:
                    return
            time.sleep(0.1)
        self.stop()
        raise SystemExit('runzeo did not start')

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--mb', type=int, default=160, help='size of the generated Data.fs')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--keep', action='store_true')
    options = parser.parse_args()
    work = tempfile.mkdtemp(prefix='zodb-pack-bench-', dir=os.environ.get('BENCH_DIR'))
    base = os.path.join(work, 'base')
    os.makedirs(base)
    try:
        half = options.mb * 1_000_000 // 2
        started = time.perf_counter()
        write_data(base + '/Data.fs', base + '/blobs', target_bytes=half, blobs=500)
        write_data(base + '/Data.fs', base + '/blobs', target_bytes=half, history=True,
                   start=10**6)
        generated = time.perf_counter() - started
        size = os.path.getsize(base + '/Data.fs')
        print('generated %s with ZODB in %.1fs' % (mb(size), generated))
        python = sys.executable
        offline = {'module_wall': [], 'module_duration': [], 'zodb_pack': [], 'freed': None}
        for round_number in range(options.rounds):
            data, blobs = fresh_copy(base, work, 'zodb')
            offline['zodb_pack'].append(run([python, '-c', ZODB_PACK, data, blobs]))
            zodb_after = os.path.getsize(data)
            data, blobs = fresh_copy(base, work, 'module')
            wall, result = module('zodb_pack', {'path': data, 'blob_dir': blobs})
            offline['module_wall'].append(wall)
            offline['module_duration'].append(result['duration'])
            offline['freed'] = result['bytes_freed']
            assert result['size_after'] == zodb_after, (result['size_after'], zodb_after)
        online = {'module_wall': [], 'zeopack': []}
        zeopack = os.path.join(os.path.dirname(python), 'zeopack')
        for round_number in range(options.rounds):
            for side in ('zeopack', 'module_wall'):
                data, blobs = fresh_copy(base, work, 'online')
                zeo = Zeo(data, blobs, work)
                try:
                    if side == 'zeopack':
                        online[side].append(run([zeopack, '127.0.0.1:%d' % zeo.port]))
                    else:
                        wall, result = module('zodb_pack', {'zeo_address': '127.0.0.1:%d'
                                                            % zeo.port})
                        online[side].append(wall)
                finally:
                    zeo.stop()
        best = {'offline_module_wall': min(offline['module_wall']),
                'offline_module_duration': min(offline['module_duration']),
                'zodb_pack': min(offline['zodb_pack']),
                'online_module_wall': min(online['module_wall']),
                'zeopack': min(online['zeopack'])}
        ratios = {'offline': best['offline_module_wall'] / best['zodb_pack'],
                  'online': best['online_module_wall'] / best['zeopack']}
        payload = {'data_fs_bytes': size, 'bytes_freed': offline['freed'], 'rounds':
                   options.rounds, 'offline': offline, 'online': online,
                   'best': best, 'ratio_module_over_reference': ratios}
        path = save('zodb_pack', payload)
        table = [
            '### Pack (`bench/zodb_pack_bench.py`)',
            '',
            'Data.fs of %s made with ZODB (half current objects, half old revisions), %s freed '
            'by a pack; best of %d fresh copies, each side a new process. Aim: ratio <= 1.1.'
            % (mb(size), mb(offline['freed']), options.rounds),
            '',
            '| pack | zodb_pack module | reference | ratio |',
            '| --- | --- | --- | --- |',
            '| offline (reference: `FileStorage.pack`) | %.2f s (in-module %.2f s) | %.2f s | '
            '%.2fx |' % (best['offline_module_wall'], best['offline_module_duration'],
                         best['zodb_pack'], ratios['offline']),
            '| online through runzeo (reference: `zeopack`) | %.2f s | %.2f s | %.2fx |'
            % (best['online_module_wall'], best['zeopack'], ratios['online']),
            '',
            'Raw numbers: `%s`.' % path.relative_to(REPO),
        ]
        markdown = '\n'.join(table)
        update_doc('zodb_pack_bench', markdown)
        print(markdown)
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
