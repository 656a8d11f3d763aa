"""The first copy of a twin between kinds (issue 24, points 3 and 4; docs/relstorage.md,
"Between kinds"): the zodb_convert module against the bare tool, RelStorage's zodbconvert,
both ways.

- FileStorage -> RelStorage: a Data.fs of --size megabytes (objects of ~100 KB, 10 per
  transaction, a blob every 10th transaction) into an empty history-preserving database:
  `zodbconvert` with a <filestorage source> and a <relstorage destination>, and zodb_convert
  (source, target_config), which calls the same copyTransactionsFrom and adds its checks.
- RelStorage -> FileStorage: that database into a new Data.fs: `zodbconvert` with a
  <relstorage source> and a <filestorage destination>, and zodb_convert (source_config, dest:
  the snapshot folder with its manifest that zodb_restore installs).

A cluster of its own (tests/support/postgresql.py, stopped by its PID), each copy --rounds
times into a new database or folder, checked (the same rows in object_state and transaction;
the same last tid). Prints a table with rows/s and the ratio to the bare tool; writes
bench/results/relstorage_convert-<stamp>.json.

    .venv/bin/python bench/relstorage_convert_bench.py [--size 100] [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import textwrap

from zodb_benchlib import RESULTS, save  # (zodb_benchlib sets up sys.path for support.*)

import ansible  # noqa: E402

from relstorage_copy_bench import PASSWORD, USER, counts, timed  # noqa: E402
from support.modules import run_module  # noqa: E402
from support.paths import COLLECTIONS  # noqa: E402
from support.postgresql import Cluster, relstorage_python  # noqa: E402
from support.procs import ProcessGroup  # noqa: E402

FILL = textwrap.dedent('''\
    import os, sys, ZODB, ZODB.FileStorage, transaction
    from persistent.mapping import PersistentMapping
    from ZODB.blob import Blob
    path, blobs, goal = sys.argv[1], sys.argv[2], int(sys.argv[3]) * 1024 * 1024
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path, blob_dir=blobs))
    n = t = 0
    while os.path.getsize(path) < goal:
        with db.transaction() as conn:
            root = conn.root()
            for i in range(10):
                root['o%d' % n] = PersistentMapping(data=os.urandom(50_000).hex())
                n += 1
            if t % 10 == 0:
                blob = Blob()
                with blob.open('w') as handle:
                    handle.write(os.urandom(200_000))
                root['b%d' % t] = blob
        t += 1
    print(db.storage.lastTransaction().hex())
    db.close()
''')


def relstorage_section(name, port, pgpass, role=''):
    return textwrap.dedent(f'''\
          <relstorage{role}>
            keep-history true
            blob-dir {pgpass.parent}/blobcache-{name}
            shared-blob-dir false
            <postgresql>
              dsn dbname='{name}' user='{USER}' host='127.0.0.1' port='{port}' passfile='{pgpass}'
            </postgresql>
          </relstorage>
        ''')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--size', type=int, default=100, help='megabytes of the Data.fs')
    parser.add_argument('--rounds', type=int, default=2)
    args = parser.parse_args()
    python = relstorage_python()
    work = RESULTS / 'relstorage-convert'
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    only = work / 'ansible-only'  # the release's Python has no Ansible of its own
    only.mkdir()
    (only / 'ansible').symlink_to(os.path.dirname(ansible.__file__))
    env = {'PYTHONPATH': os.pathsep.join([str(COLLECTIONS), str(only)])}
    results = {'size_mb': args.size, 'load_before': os.getloadavg(), 'methods': {}}
    data, blobs = work / 'src' / 'Data.fs', work / 'src' / 'blobs'
    data.parent.mkdir()
    (work / 'fill.py').write_text(FILL)
    fill = timed(lambda: subprocess.run([str(python), str(work / 'fill.py'), str(data),
                                         str(blobs), str(args.size)], check=True,
                                        capture_output=True))
    with ProcessGroup() as procs:
        cluster = Cluster(procs).start()
        try:
            pgpass = work / 'pgpass'
            pgpass.write_text('127.0.0.1:%d:*:%s:%s\n' % (cluster.port, USER, PASSWORD))
            pgpass.chmod(0o600)
            cluster.sql("CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s'" % (USER, PASSWORD))

            def new_database(name):
                cluster.sql('CREATE DATABASE %s OWNER %s' % (name, USER))
                conf = work / ('%s.conf' % name)
                conf.write_text('%import relstorage\n<zodb>\n'
                                + relstorage_section(name, cluster.port, pgpass) + '</zodb>\n')
                return conf

            def bare_in(name):
                new_database(name)
                conf = work / ('convert-%s.conf' % name)
                destination = relstorage_section(name, cluster.port, pgpass, ' destination')
                conf.write_text('%%import relstorage\n<filestorage source>\n  path %s\n'
                                '  blob-dir %s\n</filestorage>\n%s' % (data, blobs, destination))
                subprocess.run([str(python), str(python.parent / 'zodbconvert'), str(conf)],
                               check=True, capture_output=True)

            def module_in(name):
                result = run_module('zodb_convert', {
                    'source': str(data), 'source_blob_dir': str(blobs),
                    'target_config': str(new_database(name))}, python=str(python),
                    timeout=3600, env=env)
                assert result['rc'] == 0, result

            # The reference database both ways read from.
            module_in('reference')
            expected = counts(cluster, 'reference')
            size = int(cluster.sql("SELECT pg_database_size('reference')"))
            results.update(fill_seconds=round(fill, 1), datafs_bytes=data.stat().st_size,
                           database_bytes=size, rows=expected)
            print('Data.fs %.1f MB (filled in %.0f s); database %.1f MB, %d object_state rows, '
                  '%d transactions' % (data.stat().st_size / 1e6, fill, size / 1e6, *expected))

            def bare_out(name):
                folder = work / name
                folder.mkdir()
                conf = work / ('out-%s.conf' % name)
                conf.write_text('%%import relstorage\n%s<filestorage destination>\n  path %s\n'
                                '  blob-dir %s\n</filestorage>\n' % (
                                    relstorage_section('reference', cluster.port, pgpass,
                                                       ' source'),
                                    folder / 'Data.fs', folder / 'blobs'))
                subprocess.run([str(python), str(python.parent / 'zodbconvert'), str(conf)],
                               check=True, capture_output=True)

            def module_out(name):
                result = run_module('zodb_convert', {
                    'source_config': str(work / 'reference.conf'), 'dest': str(work / name)},
                    python=str(python), timeout=3600, env=env)
                assert result['rc'] == 0, result

            for method, func, into in (
                    ('zodbconvert FileStorage -> RelStorage', bare_in, 'database'),
                    ('zodb_convert FileStorage -> RelStorage', module_in, 'database'),
                    ('zodbconvert RelStorage -> FileStorage', bare_out, 'folder'),
                    ('zodb_convert RelStorage -> FileStorage', module_out, 'folder')):
                times = []
                for number in range(args.rounds):
                    name = '%s_%d' % (func.__name__, number)
                    times.append(timed(lambda: func(name)))
                    if into == 'database':
                        got = counts(cluster, name)
                        assert got == expected, (method, got, expected)
                        cluster.sql('DROP DATABASE %s' % name)
                    else:
                        assert (work / name / 'Data.fs').stat().st_size > 0
                        shutil.rmtree(work / name)
                best = min(times)
                results['methods'][method] = {
                    'seconds': [round(t, 2) for t in times],
                    'rows_per_second': round(expected[0] / best),
                    'transactions_per_second': round(expected[1] / best)}
                print('%-40s %s s; best %d object rows/s, %d transactions/s'
                      % (method, ', '.join('%.2f' % t for t in times),
                         expected[0] / best, expected[1] / best))
        finally:
            cluster.stop()
    methods = results['methods']
    for way in ('FileStorage -> RelStorage', 'RelStorage -> FileStorage'):
        ratio = (min(methods['zodbconvert ' + way]['seconds'])
                 / min(methods['zodb_convert ' + way]['seconds']))
        results['ratio ' + way] = round(ratio, 2)
        print('zodb_convert / zodbconvert speed, %s: %.2fx' % (way, ratio))
    # save() records the host and its load average after the run beside the one before.
    print('load average before %s; results in %s' % (
        ' '.join('%.1f' % x for x in results['load_before']), save('relstorage_convert', results)))
    # The data, and the link to Ansible's package, which linters would walk into.
    shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
