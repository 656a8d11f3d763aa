"""How to copy a RelStorage database for a twin (issue 24, point 2): zodbconvert through
RelStorage, `pg_dump | pg_restore`, and `CREATE DATABASE ... TEMPLATE` (PostgreSQL copies
the files itself; it refuses while any other session is connected to the source); and the
promotion's own copy, the relstorage_copy module (pg_dump -Fc -Z0 of an exported snapshot |
pg_restore --single-transaction into a new database, the tid checked, renamed in place),
against the bare `pg_dump | pg_restore` (issue 24's aim: at least 0.8x the bare tool).

A cluster of its own (tests/support/postgresql.py: initdb + postgres on a free port, stopped
by its PID at the end), a history-preserving source database filled through RelStorage to
--size megabytes (pg_database_size), then each copy --rounds times into a new database, the
copy checked (same rows in object_state and, history-preserving, transaction). Prints a table
and writes bench/results/relstorage_copy.json.

    .venv/bin/python bench/relstorage_copy_bench.py [--size 100] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

from zodb_benchlib import RESULTS  # noqa: F401  (sets up sys.path for support.*)

import ansible  # noqa: E402

from support.modules import run_module  # noqa: E402
from support.paths import COLLECTIONS  # noqa: E402
from support.postgresql import PG_BIN, Cluster, relstorage_python  # noqa: E402
from support.procs import ProcessGroup  # noqa: E402

USER, PASSWORD = 'bench', 'bench-password'

FILL = textwrap.dedent('''\
    import os, sys, ZODB.config, transaction, psycopg2
    from persistent.mapping import PersistentMapping
    conf, goal = sys.argv[1], int(sys.argv[2]) * 1024 * 1024
    db = ZODB.config.databaseFromString(open(conf).read())
    dsn = open(conf).read().split('dsn ', 1)[1].split('\\n', 1)[0]
    size = psycopg2.connect(dsn)
    size.autocommit = True
    cur = size.cursor()
    n = 0
    while True:
        cur.execute('SELECT pg_database_size(current_database())')
        if cur.fetchone()[0] >= goal:
            break
        with db.transaction() as conn:
            root = conn.root()
            for i in range(10):
                root['o%d' % n] = PersistentMapping(data=os.urandom(50_000).hex())
                n += 1
    db.close()
    print(n)
''')


def storage_conf(name, port, pgpass):
    return textwrap.dedent(f'''\
        %import relstorage
        <zodb>
          <relstorage>
            keep-history true
            <postgresql>
              dsn dbname='{name}' user='{USER}' host='127.0.0.1' port='{port}' passfile='{pgpass}'
            </postgresql>
          </relstorage>
        </zodb>
        ''')


def counts(cluster, database):
    return tuple(int(cluster.sql('SELECT count(*) FROM %s' % table, database=database))
                 for table in ('object_state', 'transaction'))


METHODS = ('template', 'dump_restore', 'relstorage_copy', 'zodbconvert')


def timed(func):
    start = time.monotonic()
    func()
    return time.monotonic() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--size', type=int, default=100, help='megabytes of the source')
    parser.add_argument('--rounds', type=int, default=2)
    parser.add_argument('--skip', action='append', default=[], choices=METHODS,
                        help='leave a method out (zodbconvert takes long at 1 GB)')
    args = parser.parse_args()
    python = relstorage_python()
    work = RESULTS / 'relstorage-copy'
    work.mkdir(parents=True, exist_ok=True)
    results = {'size_mb': args.size, 'load_before': os.getloadavg(), 'methods': {}}
    with ProcessGroup() as procs:
        cluster = Cluster(procs).start()
        try:
            pgpass = work / 'pgpass'
            pgpass.write_text('127.0.0.1:%d:*:%s:%s\n' % (cluster.port, USER, PASSWORD))
            pgpass.chmod(0o600)
            cluster.sql("CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s'" % (USER, PASSWORD))
            cluster.sql('CREATE DATABASE src OWNER %s' % USER)
            (work / 'src.conf').write_text(storage_conf('src', cluster.port, pgpass))
            (work / 'fill.py').write_text(FILL)
            fill = timed(lambda: subprocess.run(
                [str(python), str(work / 'fill.py'), str(work / 'src.conf'), str(args.size)],
                check=True, capture_output=True))
            size = int(cluster.sql("SELECT pg_database_size('src')"))
            expected = counts(cluster, 'src')
            results.update(fill_seconds=round(fill, 1), source_bytes=size,
                           source_rows=expected)
            print('source: %.1f MB, %d objects, %d transactions (filled in %.0f s)'
                  % (size / 1e6, expected[0], expected[1], fill))
            sock = ['-h', str(cluster.dir), '-p', str(cluster.port)]

            def zodbconvert(target):
                cluster.sql('CREATE DATABASE %s OWNER %s' % (target, USER))
                conf = work / ('convert-%s.conf' % target)
                source = storage_conf('src', cluster.port, pgpass)
                dest = storage_conf(target, cluster.port, pgpass)
                conf.write_text('%import relstorage\n'
                                + source.split('<zodb>')[1].split('</zodb>')[0]
                                .replace('<relstorage>', '<relstorage source>', 1)
                                + dest.split('<zodb>')[1].split('</zodb>')[0]
                                .replace('<relstorage>', '<relstorage destination>', 1))
                subprocess.run([str(python), str(python.parent / 'zodbconvert'), str(conf)],
                               check=True, capture_output=True)

            def dump_restore(target):
                cluster.sql('CREATE DATABASE %s OWNER %s' % (target, USER))
                dump = subprocess.Popen(cluster._as_account(
                    [str(PG_BIN / 'pg_dump'), '-Fc', '-Z0', *sock, 'src']),
                    stdout=subprocess.PIPE)
                subprocess.run(cluster._as_account(
                    [str(PG_BIN / 'pg_restore'), '--no-owner', '--role', USER, *sock,
                     '-d', target]), stdin=dump.stdout, check=True, capture_output=True)
                dump.stdout.close()
                assert dump.wait() == 0

            def template(target):
                cluster.sql('CREATE DATABASE %s TEMPLATE src OWNER %s' % (target, USER))

            only = work / 'ansible-only'  # the release's Python has no Ansible of its own
            only.mkdir(exist_ok=True)
            if not (only / 'ansible').exists():
                (only / 'ansible').symlink_to(os.path.dirname(ansible.__file__))

            def relstorage_copy(target):
                conn = {'host': '127.0.0.1', 'port': cluster.port, 'user': USER}
                result = run_module('relstorage_copy', {
                    'database': dict(conn, name=target), 'password': PASSWORD,
                    'source': dict(conn, name='src'), 'pg_bin_dir': str(PG_BIN)},
                    python=str(python), timeout=3600,
                    env={'PYTHONPATH': os.pathsep.join([str(COLLECTIONS), str(only)])})
                assert result['rc'] == 0, result

            for method, func in (('CREATE DATABASE ... TEMPLATE', template),
                                 ('pg_dump -Fc -Z0 | pg_restore', dump_restore),
                                 ('relstorage_copy (the promotion\'s copy)', relstorage_copy),
                                 ('zodbconvert (RelStorage to RelStorage)', zodbconvert)):
                if func.__name__ in args.skip:
                    continue
                times = []
                for number in range(args.rounds):
                    target = 'copy_%s_%d' % (func.__name__, number)
                    times.append(timed(lambda: func(target)))
                    got = counts(cluster, target)
                    assert got == expected, (method, got, expected)
                    cluster.sql('DROP DATABASE %s' % target)
                results['methods'][method] = [round(t, 2) for t in times]
                print('%-42s %s s' % (method, ', '.join('%.2f' % t for t in times)))
        finally:
            cluster.stop()
    results['load_after'] = os.getloadavg()
    print('load average before %s, after %s' % (
        ' '.join('%.1f' % x for x in results['load_before']),
        ' '.join('%.1f' % x for x in results['load_after'])))
    (RESULTS / 'relstorage_copy.json').write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
    sys.exit(main())
