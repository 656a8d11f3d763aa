"""The promotion's modules on RelStorage, against a real PostgreSQL cluster (the
distribution's server, started by the test) and a Python with RelStorage:

- relstorage_copy: a database copied while a writer keeps committing to it holds exactly the
  transactions up to the tid the module returns (pg_dump's own snapshot); the replaced
  database is kept, pruned by count, swapped back, archived; a wrong password names the
  server and the account, never the password; a copy, a restore or a drill that holds
  another last tid than the expected one leaves no database behind;
- zodb_replay from and into a storage opened from its configuration (etc/relstorage.conf):
  the transactions after that tid, verified, idempotent, refused when the target diverged;
- zodb_pack with RelStorage's own pack;
- zodb_convert, the first copy of a twin whose source keeps its data the other way: a
  FileStorage snapshot (with blobs) into an emptied database (refused when not empty without
  clear; a re-run changes nothing), and a database a writer keeps committing to into a
  snapshot folder that zodb_restore installs and zodb_replay catches up; a history-free source
  is refused.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time

import ansible
import pytest

from support.modules import run_module
from support.paths import COLLECTIONS, REPO
from support.ports import free_port
from support.postgresql import PG_BIN, Cluster, pg_missing, relstorage_python
from support.procs import ProcessGroup

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(bool(pg_missing()), reason=pg_missing() or 'ok')]

MODULE_UTILS = REPO / 'plugins' / 'module_utils'
PASSWORD = 'stage:pw\\with odd chars'
SOURCE_PASSWORD = 'other-Secret-1'

# Commits transactions to the database of a relstorage.conf: ``write N``, or ``loop SECONDS``
# (one every 20 ms); ``tid`` prints the database's last tid; ``keys`` the root's keys.
CLIENT = textwrap.dedent('''\
    import sys, time, ZODB.config, transaction
    from ZODB.blob import Blob
    db = ZODB.config.databaseFromFile(open(sys.argv[1]))
    action = sys.argv[2]
    if action == 'tid':
        print(db.storage.lastTransaction().hex())
    elif action == 'keys':
        with db.transaction() as conn:
            print(' '.join(sorted(conn.root().keys())))
    else:
        count = int(sys.argv[3]) if action == 'write' else 10 ** 9
        until = time.time() + float(sys.argv[3]) if action == 'loop' else None
        n = 0
        while n < count and (until is None or time.time() < until):
            with db.transaction() as conn:
                root = conn.root()
                key = '%s-%d-%d' % (sys.argv[4] if len(sys.argv) > 4 else 'k', time.time_ns(), n)
                if n % 5 == 0:
                    blob = Blob()
                    with blob.open('w') as handle:
                        handle.write(key.encode() * 100)
                    root[key] = blob
                else:
                    root[key] = n
            n += 1
            if until is not None:
                time.sleep(0.02)
    db.close()
''')


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    with ProcessGroup() as procs:
        pg = Cluster(procs).start()
        try:
            quoted = PASSWORD.replace("'", "''")
            pg.sql("CREATE ROLE zopeops_t LOGIN CREATEDB PASSWORD '%s'" % quoted)
            pg.sql("CREATE ROLE zopeops_s LOGIN PASSWORD '%s'" % SOURCE_PASSWORD)
            pg.sql('CREATE DATABASE zopeops_s OWNER zopeops_s')
            pg.sql('CREATE DATABASE zopeops_t OWNER zopeops_t')
            root = tmp_path_factory.mktemp('rs')
            yield Env(pg, relstorage_python(), root)
        finally:
            pg.stop()


class Env:
    def __init__(self, pg, python, root):
        self.pg, self.python, self.root = pg, python, root
        (root / 'client.py').write_text(CLIENT)
        # The release's Python has no Ansible; a module run by Ansible gets its module_utils
        # in its AnsiballZ payload. Here: the project's ansible package alone on its path.
        (root / 'ansible-only').mkdir()
        (root / 'ansible-only' / 'ansible').symlink_to(os.path.dirname(ansible.__file__))

    def module(self, name, args, check=False):
        return run_module(name, args, check=check, python=str(self.python),
                          env={'PYTHONPATH': os.pathsep.join([
                              str(COLLECTIONS), str(self.root / 'ansible-only')])})

    def conf(self, name, user, password):
        """etc/relstorage.conf and etc/pgpass as the zope_client role writes them."""
        folder = self.root / name
        (folder / 'tools').mkdir(parents=True, exist_ok=True)
        escaped = password.replace('\\', '\\\\').replace(':', '\\:')
        pgpass = folder / 'pgpass'
        pgpass.write_text('127.0.0.1:%d:%s:%s:%s\n' % (self.pg.port, name, user, escaped))
        pgpass.chmod(0o600)
        conf = folder / 'relstorage.conf'
        conf.write_text(textwrap.dedent('''\
            %%import relstorage
            <zodb>
              <relstorage>
                keep-history true
                blob-dir %s/tools/blobcache
                shared-blob-dir false
                <postgresql>
                  dsn dbname='%s' user='%s' host='127.0.0.1' port='%d' passfile='%s'
                </postgresql>
              </relstorage>
            </zodb>
            ''' % (folder, name, user, self.pg.port, pgpass)))
        return conf

    def client(self, conf, *args):
        return subprocess.run([str(self.python), str(self.root / 'client.py'), str(conf)]
                              + [str(a) for a in args], capture_output=True, text=True,
                              check=True, timeout=300).stdout.strip()

    def db(self, name, user='zopeops_t'):
        return {'host': '127.0.0.1', 'port': self.pg.port, 'name': name, 'user': user}

    def databases(self):
        return set(self.pg.sql('SELECT datname FROM pg_database').split())


def copy_args(env, **extra):
    return dict({'database': env.db('zopeops_t'), 'password': PASSWORD,
                 'source': env.db('zopeops_s', 'zopeops_s'),
                 'source_password': SOURCE_PASSWORD}, **extra)


def test_copy_catch_up_keep_swap_and_pack(env):
    source = env.conf('zopeops_s', 'zopeops_s', SOURCE_PASSWORD)
    target = env.conf('zopeops_t', 'zopeops_t', PASSWORD)
    env.client(source, 'write', 12, 'first')
    # The copy while a writer commits to the source every 20 ms: exactly up to the tid said.
    writer = subprocess.Popen([str(env.python), str(env.root / 'client.py'), str(source),
                               'loop', '6', 'during'], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        result = env.module('relstorage_copy', copy_args(env))
        assert result['rc'] == 0 and result['changed'], result
        copied_tid = result['tid']
        assert env.client(target, 'tid') == copied_tid
        assert PASSWORD not in str(result) and SOURCE_PASSWORD not in str(result)
    finally:
        _out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    later = env.client(source, 'tid')
    assert later > copied_tid, 'the writer went on committing after the copy'

    # The catch-up through both configurations: every transaction after the copy's tid.
    replay = env.module('zodb_replay', {'source_config': str(source),
                                        'target_config': str(target),
                                        'after_tid': copied_tid, 'passes': 3})
    assert replay['rc'] == 0 and replay['changed'], replay
    assert replay['transactions'] > 5 and replay['blobs'] > 0, replay
    assert replay['last_tid'] == later == env.client(target, 'tid'), replay
    assert env.client(target, 'keys') == env.client(source, 'keys')
    again = env.module('zodb_replay', {'source_config': str(source),
                                       'target_config': str(target),
                                       'after_tid': copied_tid})
    assert again['rc'] == 0 and not again['changed'], again
    # A target that took a write of its own is refused, naming both tids; nothing written.
    env.client(target, 'write', 1, 'own')
    env.client(source, 'write', 2, 'more')
    diverged = env.module('zodb_replay', {'source_config': str(source),
                                          'target_config': str(target),
                                          'after_tid': later})
    assert diverged.get('failed') and 'diverged' in diverged['msg'], diverged
    assert later in diverged['msg']

    # A second copy keeps the replaced database; a swap puts it back; keep_previous prunes.
    second = env.module('relstorage_copy', copy_args(env, keep_previous=1, stamp='20260101000000'))
    assert second['rc'] == 0 and second['previous'] == 'zopeops_t_prev_20260101000000', second
    assert second['tid'] == env.client(source, 'tid') == env.client(target, 'tid')
    third = env.module('relstorage_copy', copy_args(env, keep_previous=1, stamp='20260102000000'))
    assert third['pruned'] == ['zopeops_t_prev_20260101000000'], third
    assert third['kept'] == ['zopeops_t_prev_20260102000000'], third
    swapped = env.module('relstorage_copy', {'database': env.db('zopeops_t'),
                                             'password': PASSWORD, 'state': 'swapped',
                                             'previous': 'zopeops_t_prev_20260102000000',
                                             'stamp': '20260103000000'})
    assert swapped['rc'] == 0 and swapped['previous'] == 'zopeops_t_rolledback_20260103000000'
    assert swapped['tid'] == second['tid'] == env.client(target, 'tid')
    assert {'zopeops_t', 'zopeops_t_rolledback_20260103000000'} <= env.databases()
    assert 'zopeops_t_prev_20260102000000' not in env.databases()

    # RelStorage's own pack, from the configuration, while nothing else changes.
    pack = env.module('zodb_pack', {'config': str(target), 'days': 0})
    assert pack['rc'] == 0 and pack['last_tid_after'] == swapped['tid'], pack
    assert env.client(target, 'keys')

    # Archived: the database is renamed away, never dropped.
    archived = env.module('relstorage_copy', {'database': env.db('zopeops_t'),
                                              'password': PASSWORD, 'state': 'archived',
                                              'stamp': '20260104000000'})
    assert archived['rc'] == 0 and 'zopeops_t_rolledback_20260104000000' in env.databases()
    assert 'zopeops_t' not in env.databases()


def test_a_wrong_password_names_the_server_and_account_but_not_the_password(env):
    wrong = 'Not-The-Password-42'
    result = env.module('relstorage_copy', copy_args(env, password=wrong))
    assert result.get('failed'), result
    assert '127.0.0.1:%d' % env.pg.port in result['msg'] and 'zopeops_t' in result['msg']
    assert 'password authentication failed' in result['msg'], result['msg']
    assert wrong not in str(result) and wrong not in result['_stderr']


def test_backup_while_writing_drill_by_last_tid_retention_and_a_damaged_dump(env, tmp_path):
    env.pg.sql('CREATE DATABASE zopeops_b OWNER zopeops_t')
    conf = env.conf('zopeops_b', 'zopeops_t', PASSWORD)
    env.client(conf, 'write', 6, 'before')
    repository = tmp_path / 'backups' / 'beta'
    args = {'database': env.db('zopeops_b'), 'password': PASSWORD,
            'repository': str(repository), 'keep': 2}
    # Check mode on an empty repository: it would dump, and writes nothing.
    would = env.module('relstorage_backup', args, check=True)
    assert would['rc'] == 0 and would['changed'] and would['kind'] == 'full', would
    assert not repository.exists()
    # A backup while a writer commits every 20 ms: the dump holds exactly up to the tid it
    # reports (the exported snapshot), which the drill finds in the restored database.
    writer = subprocess.Popen([str(env.python), str(env.root / 'client.py'), str(conf),
                               'loop', '4', 'during'], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        first = env.module('relstorage_backup', args)
    finally:
        _out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert first['rc'] == 0 and first['changed'] and first['kind'] == 'full', first
    report = first['report']
    assert env.client(conf, 'tid') > report['last_tid'], 'the writer went on after the dump'
    assert report['files'] == [report['stamp'] + '.dump'] and report['size'] > 0
    dump = repository / report['files'][0]
    assert dump.stat().st_mode & 0o777 == 0o600
    assert repository.stat().st_mode & 0o777 == 0o700
    assert (repository / 'latest.json').exists()
    assert PASSWORD not in str(first) and PASSWORD not in first['_stderr']
    drill = env.module('relstorage_backup', dict(args, verify=True))
    assert drill['rc'] == 0 and drill['verified'], drill
    assert drill['report']['last_tid'] == report['last_tid'], drill
    assert 'zopeops_b_drill' not in env.databases()

    # Nothing new since the last dump: no backup (idempotent); then three more, keep 2.
    second = env.module('relstorage_backup', args)
    assert second['rc'] == 0 and second['changed'], second  # the writer's later commits
    third = env.module('relstorage_backup', args)
    assert third['rc'] == 0 and not third['changed'] and third['kind'] == 'unchanged', third
    stamps = [report['stamp'], second['report']['stamp']]
    for number in range(2):
        env.client(conf, 'write', 1, 'more%d' % number)
        made = env.module('relstorage_backup', args)
        assert made['rc'] == 0 and made['changed'], made
        stamps.append(made['report']['stamp'])
    assert sorted(p.name for p in repository.glob('*.dump')) == [s + '.dump' for s in stamps[-2:]]
    assert made['removed'] == ['%s.dump' % stamps[1], 'reports/%s.json' % stamps[1]], made

    # A damaged dump: the drill refuses it naming the file, and drops its scratch database.
    latest = repository / (stamps[-1] + '.dump')
    data = bytearray(latest.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = b'\0' * 4096
    latest.write_bytes(bytes(data))
    refused = env.module('relstorage_backup', dict(args, verify=True))
    assert refused.get('failed') and str(latest) in refused['msg'], refused
    assert 'zopeops_b_drill' not in env.databases()
    # The one before it still restores (backup=<stamp>).
    older = env.module('relstorage_backup', dict(args, verify=True, backup=stamps[-2]))
    assert older['rc'] == 0 and older['verified'], older

    # A wrong password names the server and the account, never the password.
    wrong = 'Not-The-Password-43'
    failed = env.module('relstorage_backup', dict(args, password=wrong))
    assert failed.get('failed') and '127.0.0.1:%d' % env.pg.port in failed['msg'], failed
    assert 'zopeops_t' in failed['msg'] and wrong not in str(failed)


def test_a_restore_from_a_dump_by_its_last_tid_and_what_it_drops(env, tmp_path):
    """restore.yml's data steps on RelStorage: the dump chosen by stamp or by time
    (relstorage_backup's drill in check mode), restored into the twin's database by
    relstorage_copy (dump, tid: exactly the report's last tid, else nothing replaced), and the
    stage's database replaced by the twin's, counting the transactions it drops."""
    env.pg.sql('CREATE DATABASE zopeops_r OWNER zopeops_t')
    conf = env.conf('zopeops_r', 'zopeops_t', PASSWORD)
    env.client(conf, 'write', 4, 'kept')
    repository = tmp_path / 'backups' / 'r'
    made = env.module('relstorage_backup', {'database': env.db('zopeops_r'),
                                            'password': PASSWORD,
                                            'repository': str(repository)})
    assert made['rc'] == 0 and made['changed'], made
    report = made['report']
    env.client(conf, 'write', 3, 'dropped')  # after the backup: what the restore drops
    find = {'database': env.db('zopeops_r'), 'password': PASSWORD,
            'repository': str(repository), 'verify': True}
    found = env.module('relstorage_backup', dict(find, backup_at='2999-01-01 00:00'), check=True)
    assert found['rc'] == 0 and found['restored']['stamp'] == report['stamp'], found
    assert found['restored']['last_tid'] == report['last_tid'], found
    assert found['restored']['path'] == str(repository / report['files'][0])
    early = env.module('relstorage_backup', dict(find, backup_at='2000-01-01'), check=True)
    assert early.get('failed') and 'the first one is of %s' % report['stamp'] in early['msg']

    # The twin's database becomes the dump, checked by the report's last tid.
    twin = env.db('zopeops_r_upgrade')
    restore = {'database': twin, 'password': PASSWORD, 'dump': found['restored']['path'],
               'tid': report['last_tid']}
    would = env.module('relstorage_copy', restore, check=True)
    assert would['rc'] == 0 and would['changed'], would
    assert 'zopeops_r_upgrade' not in env.databases()
    # A dump that does not hold the tid its report says: refused, nothing replaced or left.
    wrong = env.module('relstorage_copy', dict(restore, tid='0' * 15 + '1'))
    assert wrong.get('failed') and 'does not restore as its report describes' in wrong['msg'], wrong
    assert not {'zopeops_r_upgrade', 'zopeops_r_upgrade_copy'} & env.databases()
    restored = env.module('relstorage_copy', restore)
    assert restored['rc'] == 0 and restored['tid'] == report['last_tid'], restored
    twin_conf = env.conf('zopeops_r_upgrade', 'zopeops_t', PASSWORD)
    assert env.client(twin_conf, 'tid') == report['last_tid']
    keys = env.client(twin_conf, 'keys')
    assert 'kept-' in keys and 'dropped-' not in keys
    assert PASSWORD not in str(restored) + restored['_stderr']

    # The stage's database becomes the twin's; the replaced one is kept, and the run says how
    # many transactions it had after the backup.
    live = env.module('relstorage_copy', {
        'database': env.db('zopeops_r'), 'password': PASSWORD, 'source': twin,
        'keep_previous': 1, 'replaced_after': report['last_tid'], 'stamp': '20260105000000'})
    assert live['rc'] == 0 and live['replaced_transactions'] == 3, live
    assert live['previous'] == 'zopeops_r_prev_20260105000000', live
    assert env.client(conf, 'tid') == report['last_tid']


def test_a_last_tid_other_than_expected_leaves_no_database_behind(env, tmp_path):
    """Each restore checked by its last tid (relstorage_pg.restore_checked) refuses one that
    holds another and drops what it restored into: the drill's scratch database, and the
    staging database of relstorage_copy from a dump and from a source database."""
    for name, count in (('zopeops_m', 2), ('zopeops_m_other', 3)):
        env.pg.sql('CREATE DATABASE %s OWNER zopeops_t' % name)
        env.client(env.conf(name, 'zopeops_t', PASSWORD), 'write', count, name)
    repository = tmp_path / 'backups' / 'm'
    args = {'database': env.db('zopeops_m'), 'password': PASSWORD,
            'repository': str(repository)}
    made = env.module('relstorage_backup', args)
    assert made['rc'] == 0 and made['changed'], made
    wrong_tid = '0' * 15 + '1'

    # The drill, of a backup whose report names another last tid.
    report = repository / 'reports' / (made['report']['stamp'] + '.json')
    report.write_text(report.read_text().replace(made['report']['last_tid'], wrong_tid))
    drill = env.module('relstorage_backup', dict(args, verify=True))
    assert drill.get('failed') and 'not %s' % wrong_tid in drill['msg'], drill
    assert 'zopeops_m_drill' not in env.databases()

    # relstorage_copy from that dump, told the wrong tid.
    dump = str(repository / made['report']['files'][0])
    restore = env.module('relstorage_copy', {'database': env.db('zopeops_m_twin'),
                                             'password': PASSWORD, 'dump': dump,
                                             'tid': wrong_tid})
    assert restore.get('failed') and 'not %s' % wrong_tid in restore['msg'], restore

    # relstorage_copy from a source database, through a pg_dump that dumps another one (the
    # only way its copy can end at another tid than the snapshot's).
    tools = tmp_path / 'bin'
    tools.mkdir()
    (tools / 'pg_restore').symlink_to(PG_BIN / 'pg_restore')
    (tools / 'pg_dump').write_text(
        '#!/bin/bash\nargs=()\nfor arg in "$@"; do case "$arg" in\n'
        '  --snapshot=*) ;;\n  zopeops_m) args+=(zopeops_m_other) ;;\n'
        '  *) args+=("$arg") ;;\nesac; done\nexec %s "${args[@]}"\n' % (PG_BIN / 'pg_dump'))
    (tools / 'pg_dump').chmod(0o755)
    copy = env.module('relstorage_copy', {'database': env.db('zopeops_m_twin'),
                                          'password': PASSWORD, 'source': env.db('zopeops_m'),
                                          'pg_bin_dir': str(tools)})
    assert copy.get('failed') and 'not %s' % made['report']['last_tid'] in copy['msg'], copy
    assert 'run again' in copy['msg'] and PASSWORD not in str(copy)
    assert not {'zopeops_m_twin', 'zopeops_m_twin_copy'} & env.databases()


def test_the_scheduled_backup_script_dumps_a_relstorage_stage(env, tmp_path):
    """roles/backup's script, installed as the role installs it (the module_utils files beside
    its entry point, no Ansible) and run with the release's Python: a config of storage
    relstorage makes relstorage_backup's dump, with the password read from the clients'
    passfile; a run with nothing new makes none; --verify runs the drill."""
    env.pg.sql('CREATE DATABASE zopeops_sch OWNER zopeops_t')
    conf = env.conf('zopeops_sch', 'zopeops_t', PASSWORD)
    env.client(conf, 'write', 2, 'scheduled')
    script = tmp_path / 'zopeops_backup'
    script.mkdir()
    for name in ('zodb_backup.py', 'files.py', 'pg_backup.py', 'relstorage_pg.py'):
        shutil.copy(MODULE_UTILS / name, script / name)
    shutil.copy(REPO / 'roles' / 'backup' / 'files' / 'zopeops_backup.py', script)
    repository = tmp_path / 'backups' / 'sch'
    config = tmp_path / 'backup.json'
    config.write_text(json.dumps({
        'stage': 'sch', 'storage': 'relstorage', 'path': None, 'blob_dir': None,
        'database': env.db('zopeops_sch'), 'pgpass': str(conf.parent / 'pgpass'),
        'repository': str(repository), 'scratch_dir': str(tmp_path / 'drill'), 'keep': 3,
        'interval': 86400, 'drill_every': 0, 'state_dir': str(tmp_path / 'promotions')}))

    def scheduled(*args):
        run = subprocess.run([str(env.python), str(script / 'zopeops_backup.py'), '--config',
                              str(config), *args], capture_output=True, text=True,
                             timeout=300, check=False, env={'PATH': os.environ['PATH']})
        assert run.returncode == 0 and PASSWORD not in run.stdout + run.stderr, run.stderr
        return json.loads(run.stdout)

    made = scheduled()
    assert made['kind'] == 'full' and made['report']['last_tid'] == env.client(conf, 'tid')
    assert (repository / made['report']['files'][0]).exists()
    assert scheduled()['kind'] == 'unchanged'
    assert scheduled('--verify')['verified']


def test_a_stopped_target_server_is_named_with_what_to_do(env):
    """The catch-up into a RelStorage target whose PostgreSQL server is not running: the
    message names the configuration and the server, says it is stopped and what to do."""
    source = env.conf('zopeops_s', 'zopeops_s', SOURCE_PASSWORD)
    target = env.conf('zopeops_gone', 'zopeops_t', PASSWORD)
    port = free_port()  # nothing listens there
    target.write_text(target.read_text().replace("port='%d'" % env.pg.port, "port='%d'" % port))
    result = env.module('zodb_replay', {'source_config': str(source),
                                        'target_config': str(target),
                                        'after_tid': '0' * 16})
    assert result.get('failed'), result
    assert 'Cannot open the target storage of %s' % target in result['msg'], result['msg']
    assert 'port %d' % port in result['msg'] and 'Connection refused' in result['msg']
    assert 'PostgreSQL server is stopped or does not accept connections: start it' \
        in result['msg'], result['msg']


# zodb_convert: between a FileStorage and RelStorage (docs/relstorage.md, "Between kinds").
# Writes a FileStorage with N transactions (every fifth a blob): python fs.py <Data.fs> <blobs> N
FILESTORAGE = textwrap.dedent('''\
    import sys, ZODB, ZODB.FileStorage, transaction
    from ZODB.blob import Blob
    db = ZODB.DB(ZODB.FileStorage.FileStorage(sys.argv[1], blob_dir=sys.argv[2]))
    for n in range(int(sys.argv[3])):
        with db.transaction() as conn:
            if n % 5 == 0:
                blob = Blob()
                with blob.open('w') as handle:
                    handle.write(b'blob %d' % n * 100)
                conn.root()['fs-%03d' % n] = blob
            else:
                conn.root()['fs-%03d' % n] = n
    print(db.storage.lastTransaction().hex())
    db.close()
''')

# Reads a storage: python read.py <Data.fs> <blobs>|<relstorage.conf> -> sorted keys, blob bytes
READ = textwrap.dedent('''\
    import sys, ZODB, ZODB.FileStorage, ZODB.config
    from ZODB.blob import Blob
    if sys.argv[1].endswith('.conf'):
        db = ZODB.config.databaseFromFile(open(sys.argv[1]))
    else:
        db = ZODB.DB(ZODB.FileStorage.FileStorage(sys.argv[1], blob_dir=sys.argv[2],
                                                  read_only=True))
    with db.transaction() as conn:
        root = conn.root()
        size = sum(len(v.open('r').read()) for v in root.values() if isinstance(v, Blob))
        print(db.storage.lastTransaction().hex(), len(root), size)
    db.close()
''')


def script(env, name, text, *args):
    path = env.root / name
    path.write_text(text)
    return subprocess.run([str(env.python), str(path)] + [str(a) for a in args],
                          capture_output=True, text=True, check=True, timeout=300).stdout.strip()


def test_a_filestorage_snapshot_into_relstorage_and_back(env):
    folder = env.root / 'convert'
    folder.mkdir()
    data, blobs = folder / 'Data.fs', folder / 'blobs'
    fs_tid = script(env, 'fs.py', FILESTORAGE, data, blobs, 40)
    env.pg.sql('CREATE DATABASE zopeops_conv OWNER zopeops_t')
    target = env.conf('zopeops_conv', 'zopeops_t', PASSWORD)
    env.client(target, 'write', 3, 'stale')  # the twin's old data, to be cleared
    args = {'source': str(data), 'source_blob_dir': str(blobs), 'target_config': str(target)}

    refused = env.module('zodb_convert', args)
    assert refused.get('failed') and 'is not empty' in refused['msg'], refused
    check = env.module('zodb_convert', dict(args, clear=True), check=True)
    # 40 transactions and the one that made the root
    assert check['changed'] and check['tid'] == fs_tid and check['transactions'] == 41, check
    assert env.client(target, 'tid') != fs_tid  # check mode wrote nothing

    copied = env.module('zodb_convert', dict(args, clear=True))
    assert copied['rc'] == 0 and copied['changed'] and copied['cleared'], copied
    assert copied['tid'] == fs_tid == env.client(target, 'tid'), copied
    assert copied['blobs'] == 8 and copied['transactions_per_second'] > 0, copied
    print('FileStorage -> RelStorage: %s'
          % {k: copied[k] for k in ('transactions', 'blobs', 'seconds')})
    want = script(env, 'read.py', READ, data, blobs)
    assert script(env, 'read.py', READ, target) == want
    again = env.module('zodb_convert', dict(args, clear=True))
    assert again['rc'] == 0 and not again['changed'], again

    # Back: the database, while a writer commits to it, into a snapshot that zodb_restore
    # installs; the replay then brings the rest.
    writer = subprocess.Popen([str(env.python), str(env.root / 'client.py'), str(target),
                               'loop', '4', 'during'], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        snap = env.root / 'snap'
        written = env.module('zodb_convert', {'source_config': str(target), 'dest': str(snap)})
        assert written['rc'] == 0 and written['changed'], written
        assert written['tid'] == written['snapshot_tid'] > fs_tid, written
        assert written['blobs'] >= 8, written
    finally:
        _out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    live = env.root / 'live'
    installed = env.module('zodb_restore', {'snapshot': str(snap), 'path': str(live / 'Data.fs'),
                                            'blob_dir': str(live / 'blobs'), 'keep_previous': 0})
    assert installed['rc'] == 0 and installed['tid'] == written['tid'], installed
    replay = env.module('zodb_replay', {'source_config': str(target),
                                        'path': str(live / 'Data.fs'),
                                        'target_blob_dir': str(live / 'blobs'),
                                        'after_tid': written['tid']})
    assert replay['rc'] == 0 and replay['transactions'] > 0, replay
    assert script(env, 'read.py', READ, live / 'Data.fs', live / 'blobs') \
        == script(env, 'read.py', READ, target)
    same = env.module('zodb_convert', {'source_config': str(target), 'dest': str(snap)})
    assert same['rc'] == 0 and same['changed'], 'the source moved on: a new snapshot'


def test_a_history_free_source_is_refused(env):
    free = env.conf('zopeops_free', 'zopeops_t', PASSWORD)
    free.write_text(free.read_text().replace('keep-history true', 'keep-history false'))
    env.pg.sql('CREATE DATABASE zopeops_free OWNER zopeops_t')
    env.client(free, 'write', 2, 'free')
    refused = env.module('zodb_convert', {'source_config': str(free),
                                          'dest': str(env.root / 'free-snap')})
    assert refused.get('failed') and 'history-free' in refused['msg'], refused
    assert not (env.root / 'free-snap').exists()
