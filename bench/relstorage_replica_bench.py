"""What a PostgreSQL streaming replica gives RelStorage clients, measured (issue 24, point 5;
docs/scaling.md).

A primary cluster of its own (tests/support/postgresql.py, stopped by its PID at the end) and a
hot standby made from it with `pg_basebackup -R` (streaming replication, asynchronous, as
PostgreSQL sets it up by default), on free ports of 127.0.0.1. Then, through RelStorage:

1. connections: a DB with --threads ZODB connections, each loading and committing at once,
   and the PostgreSQL sessions it holds (pg_stat_activity) on the primary, without and with
   `ro-replica-conf` naming the standby;
2. replication lag: a writer commits at --rate transactions/s on the primary for --seconds
   while a reader polls the standby for the newest tid; the delay until each commit is
   visible there;
3. read-your-writes through `ro-replica-conf`: a client commits a counter, then reads it back
   in a new transaction, --rounds times, back to back and 50 ms apart; how often a round
   fails (by exception type) or reads the old value, with RelStorage's `revert_when_stale`
   false (it raises when the replica is behind what the client has seen) and true.

    .venv/bin/python bench/relstorage_replica_bench.py [--rate 20] [--seconds 10] [--threads 4]

Prints a table and writes bench/results/relstorage_replica.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from zodb_benchlib import RESULTS  # noqa: F401  (sets up sys.path for support.*)

from support.postgresql import PG_BIN, Cluster, relstorage_python  # noqa: E402
from support.ports import free_port  # noqa: E402
from support.procs import ProcessGroup, wait_for  # noqa: E402

USER, PASSWORD, DATABASE = 'bench', 'bench-password', 'site'

CLIENT = textwrap.dedent('''\
    import json, sys, threading, time
    import psycopg2, transaction, ZODB.config
    from persistent.mapping import PersistentMapping
    from ZODB.POSException import ConflictError, ReadConflictError
    from ZODB.utils import u64

    args = json.loads(sys.argv[1])

    def conf(replica=None, revert=False):
        extra = ''
        if replica:
            extra = 'ro-replica-conf %s\\n revert_when_stale %s' % (
                replica, 'true' if revert else 'false')
        return ('%%import relstorage\\n<zodb>\\n<relstorage>\\n keep-history true\\n %s\\n'
                ' <postgresql>\\n  dsn %s\\n </postgresql>\\n</relstorage>\\n</zodb>\\n'
                % (extra, args['dsn']))

    def sessions(dsn):
        with psycopg2.connect(dsn) as c, c.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s"
                        " AND pid <> pg_backend_pid()", (args['user'],))
            return cur.fetchone()[0]

    def connections(replica):
        db = ZODB.config.databaseFromString(conf(replica))
        with db.transaction() as conn:
            conn.root().setdefault('counters', PersistentMapping())
        barrier = threading.Barrier(args['threads'] + 1)
        release = threading.Event()
        def work(number):
            tm = transaction.TransactionManager()
            conn = db.open(tm)
            for _ in range(5):
                try:
                    with tm:
                        conn.root()['counters'][number] = time.time()
                except ConflictError:
                    pass
            barrier.wait()
            release.wait()
            conn.close()
        threads = [threading.Thread(target=work, args=(n,)) for n in range(args['threads'])]
        for t in threads:
            t.start()
        barrier.wait()
        counted = {'primary': sessions(args['primary_dsn']),
                   'standby': sessions(args['standby_dsn'])}
        release.set()
        for t in threads:
            t.join()
        db.close()
        return counted

    def lag():
        db = ZODB.config.databaseFromString(conf())
        commits = []
        seen = {}
        stop = threading.Event()
        def watch():
            c = psycopg2.connect(args['standby_dsn'])
            c.autocommit = True
            cur = c.cursor()
            while not stop.is_set():
                cur.execute('SELECT max(tid) FROM transaction')
                newest = cur.fetchone()[0] or 0
                now = time.time()
                if newest not in seen:
                    seen[newest] = now
                time.sleep(0.002)
        watcher = threading.Thread(target=watch)
        watcher.start()
        interval = 1.0 / args['rate']
        end = time.time() + args['seconds']
        conn = db.open()
        while time.time() < end:
            started = time.time()
            with transaction.manager:
                conn.root()['stamp'] = started
            commits.append((u64(conn.root()._p_serial), time.time()))
            time.sleep(max(0.0, interval - (time.time() - started)))
        time.sleep(1.0)
        stop.set()
        watcher.join()
        conn.close()
        db.close()
        visible = sorted(seen.items())
        delays = []
        for tid, committed in commits:
            first = next((at for newest, at in visible if newest >= tid), None)
            if first is not None:
                delays.append(max(0.0, first - committed))
        delays.sort()
        return {'commits': len(commits), 'seen': len(delays),
                'median_ms': round(1000 * delays[len(delays) // 2], 2) if delays else None,
                'p99_ms': round(1000 * delays[int(len(delays) * 0.99) - 1], 2) if delays else None,
                'max_ms': round(1000 * delays[-1], 2) if delays else None}

    def read_your_writes(revert, pause):
        # Each round: commit the counter, then read it back in a new transaction. A round
        # that raises is counted by the exception's type, and the next round goes on.
        db = ZODB.config.databaseFromString(conf(args['replica_conf'], revert))
        conn = db.open()
        outcome = {'rounds': 0, 'ok': 0, 'stale_value': 0, 'errors': {}}
        for number in range(args['rounds']):
            outcome['rounds'] += 1
            try:
                with transaction.manager:
                    conn.root()['counter'] = number
                transaction.begin()
                if conn.root()['counter'] != number:
                    outcome['stale_value'] += 1
                else:
                    outcome['ok'] += 1
                transaction.abort()
            except Exception as err:  # pylint: disable=broad-except
                name = type(err).__name__
                outcome['errors'][name] = outcome['errors'].get(name, 0) + 1
                transaction.abort()
            time.sleep(pause)
        conn.close()
        db.close()
        return outcome

    def measured(func, *arguments):
        # A phase that fails is a result too (its exception's type and first line).
        try:
            return func(*arguments)
        except Exception as err:  # pylint: disable=broad-except
            return {'failed': type(err).__name__, 'message': str(err).split('\\n')[0][:300]}

    print(json.dumps({
        'connections_primary_only': measured(connections, None),
        'connections_with_replica': measured(connections, args['replica_conf']),
        'lag': measured(lag),
        'read_your_writes_raise_back_to_back': measured(read_your_writes, False, 0.0),
        'read_your_writes_revert_back_to_back': measured(read_your_writes, True, 0.0),
        'read_your_writes_raise_50ms_apart': measured(read_your_writes, False, 0.05),
        'read_your_writes_revert_50ms_apart': measured(read_your_writes, True, 0.05),
    }))
''')


def make_standby(primary, procs, work):
    """A hot standby of ``primary``: pg_basebackup -R, then postgres on a free port."""
    hba = primary.data / 'pg_hba.conf'
    # First: pg_hba.conf's first matching line wins, and initdb's own replication lines ask
    # for a password.
    hba.write_text('host replication replicator 127.0.0.1/32 trust\n' + hba.read_text())
    primary.sql("CREATE ROLE replicator REPLICATION LOGIN")
    primary.sql('SELECT pg_reload_conf()')
    data = work / 'standby'
    primary.run([str(PG_BIN / 'pg_basebackup'), '-h', '127.0.0.1', '-p', str(primary.port),
                 '-U', 'replicator', '-D', str(data), '-R', '-X', 'stream', '-c', 'fast', '-w'],
                stdin=subprocess.DEVNULL, timeout=300)
    port = free_port()
    proc = procs.start(primary._as_account(  # pylint: disable=protected-access
        [str(PG_BIN / 'postgres'), '-D', str(data), '-p', str(port), '-k', str(work),
         '-c', 'listen_addresses=127.0.0.1', '-c', 'hot_standby=on']),
        log_path=str(work / 'standby.log'))
    wait_for(lambda: proc.poll() is not None or subprocess.run(
        [str(PG_BIN / 'pg_isready'), '-h', str(work), '-p', str(port)],
        capture_output=True, check=False).returncode == 0, 120, interval=0.2,
        what='the standby on port %d' % port)
    assert proc.poll() is None, (work / 'standby.log').read_text()
    return proc, port


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--rate', type=float, default=20.0, help='commits per second')
    parser.add_argument('--seconds', type=float, default=10.0)
    parser.add_argument('--threads', type=int, default=4, help='ZODB connections at once')
    parser.add_argument('--rounds', type=int, default=200, help='read-your-writes rounds')
    args = parser.parse_args()
    # A `timeout` or a Ctrl-C still stops both clusters (the finally clauses below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit('stopped by SIGTERM'))
    python = relstorage_python()
    results = {'load_before': os.getloadavg(), 'args': vars(args)}
    with ProcessGroup() as procs:
        primary = Cluster(procs).start()
        work = Path(tempfile.mkdtemp(prefix='zopeops-replica-'))
        shutil.chown(work, primary.account)
        work.chmod(0o700)
        standby = None
        try:
            primary.sql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (USER, PASSWORD))
            primary.sql('CREATE DATABASE %s OWNER %s' % (DATABASE, USER))
            standby, standby_port = make_standby(primary, procs, work)
            client_work = Path(tempfile.mkdtemp(prefix='zopeops-replica-client-'))
            pgpass = client_work / 'pgpass'
            pgpass.write_text('127.0.0.1:*:*:%s:%s\n' % (USER, PASSWORD))
            pgpass.chmod(0o600)
            replicas = client_work / 'ro-replicas.conf'
            replicas.write_text('127.0.0.1:%d\n' % standby_port)
            base = "dbname='%s' user='%s' passfile='%s'" % (DATABASE, USER, pgpass)
            params = dict(
                vars(args), user=USER, replica_conf=str(replicas),
                dsn="%s host='127.0.0.1' port='%d'" % (base, primary.port),
                primary_dsn="%s host='127.0.0.1' port='%d'" % (base, primary.port),
                standby_dsn="%s host='127.0.0.1' port='%d'" % (base, standby_port))
            (client_work / 'client.py').write_text(CLIENT)
            proc = subprocess.run([str(python), str(client_work / 'client.py'),
                                   json.dumps(params)], capture_output=True, text=True,
                                  check=False, timeout=900)
            if proc.returncode:
                sys.exit('the client failed:\n' + proc.stderr[-3000:])
            results.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            shutil.rmtree(client_work, ignore_errors=True)
        finally:
            if standby is not None:
                procs.stop(standby, timeout=60)
            primary.stop()
            shutil.rmtree(work, ignore_errors=True)
    results['load_after'] = os.getloadavg()
    print(json.dumps(results, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'relstorage_replica.json').write_text(json.dumps(results, indent=2) + '\n')


if __name__ == '__main__':
    sys.exit(main())
