"""A Zope client under runwsgi on RelStorage, with a real PostgreSQL cluster: the zope.conf
is the zope_client role's own template (its <relstorage> section, the password only in the
libpq password file); objects written through Zope are read back through Zope after a
restart and through a second RelStorage client; blobs go through the client's blob cache;
history-preserving and history-free databases get their own schema."""
from __future__ import annotations

import subprocess
import textwrap

import jinja2
import pytest
import requests

from support.paths import REPO
from support.ports import free_port
from support.postgresql import Cluster, pg_missing, relstorage_python
from support.procs import ProcessGroup, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(bool(pg_missing()), reason=pg_missing() or 'ok')]

TEMPLATE = REPO / 'roles' / 'zope_client' / 'templates' / 'etc' / 'zope.conf.j2'
PASSWORD = 'pw:with\\odd chars'
ADMIN = ('admin', 'admin-secret')


def render_zope_conf(instance_dir, name, database, keep_history):
    """The role's zope.conf for client ``name``, with the role's defaults for RelStorage."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             loader=jinja2.FileSystemLoader(str(TEMPLATE.parent.parent)))
    env.filters['bool'] = lambda value: str(value).lower() in ('1', 'true', 'yes', 'on')
    pgpass = instance_dir / 'etc' / 'pgpass'
    dsn = ("dbname='%s' user='%s' host='127.0.0.1' port='%d' passfile='%s'"
           % (database['name'], database['user'], database['port'], pgpass))
    return env.get_template('etc/zope.conf.j2').render(
        ansible_managed='test', item={'name': name},
        zope_client_conf_persistent_cache=True, zope_client_dir=str(instance_dir),
        zope_client_debug_mode=False, zope_client_stage='test', zope_client_instance='test',
        zope_client_environment={}, zope_client_zodb_cache_size=1000, zope_client_threads=2,
        zope_client_storage='relstorage',
        zope_client_database={'keep_history': keep_history},
        zope_client_blob_cache_size='100MB', zope_client_relstorage_cache_mb=16,
        zope_client_relstorage_dsn=dsn)


def write_pgpass(path, database):
    """As the role writes it: host:port:database:user:password, ':' and '\\' escaped."""
    escaped = PASSWORD.replace('\\', '\\\\').replace(':', '\\:')
    path.write_text('127.0.0.1:%d:%s:%s:%s\n' % (
        database['port'], database['name'], database['user'], escaped))
    path.chmod(0o600)


@pytest.fixture(scope='module')
def cluster():
    with ProcessGroup() as procs:
        pg = Cluster(procs).start()
        try:
            yield pg
        finally:
            pg.stop()


@pytest.fixture(scope='module')
def python():
    return relstorage_python()


def make_instance(python, tmp_path, cluster, db_name, keep_history):
    database = {'name': db_name, 'user': 'zopeops_test', 'port': cluster.port}
    if 'zopeops_test' not in cluster.sql("SELECT rolname FROM pg_roles"):
        cluster.sql("CREATE ROLE zopeops_test LOGIN PASSWORD '%s'"
                    % PASSWORD.replace("'", "''"))
    cluster.sql('CREATE DATABASE %s OWNER zopeops_test' % db_name)
    instance = tmp_path / db_name
    subprocess.run([str(python), str(python.parent / 'mkwsgiinstance'), '-d', str(instance),
                    '-u', '%s:%s' % ADMIN], check=True, capture_output=True)
    write_pgpass(instance / 'etc' / 'pgpass', database)
    conf = instance / 'etc' / 'zope-client1.conf'
    conf.write_text(render_zope_conf(instance, 'client1', database, keep_history))
    (instance / 'var' / 'client1' / 'chameleon').mkdir(parents=True, exist_ok=True)
    return instance, conf


def start_zope(procs, python, instance, conf, port):
    ini = instance / 'etc' / 'zope.ini'
    text = (instance / 'etc' / 'zope.ini').read_text()
    text = text.replace('port = 8080', 'port = %d' % port)
    text = text.replace('%(here)s/zope.conf', str(conf))
    ini.write_text(text)
    proc = procs.start([str(python), str(python.parent / 'runwsgi'), str(ini)],
                       log_path=str(instance / 'runwsgi.log'), cwd=str(instance))
    url = 'http://127.0.0.1:%d' % port

    def up():
        assert proc.poll() is None, (instance / 'runwsgi.log').read_text()[-3000:]
        try:
            return requests.get(url + '/', timeout=5).status_code < 500
        except requests.RequestException:
            return False
    wait_for(up, 300, interval=0.5, what='Zope on RelStorage at %s' % url)
    return proc, url


RELSTORAGE_CLIENT = textwrap.dedent('''\
    import sys, ZODB.config, transaction
    from ZODB.blob import Blob
    conf, action = sys.argv[1], sys.argv[2]
    text = open(conf).read()
    section = text[text.index('<relstorage>'):text.index('</relstorage>') + 13]
    section = section.replace('$CLIENTHOME', sys.argv[3])
    db = ZODB.config.databaseFromString('%%import relstorage\\n<zodb>\\n%s\\n</zodb>' % section)
    with db.transaction() as conn:
        root = conn.root()
        if action == 'read':
            app = root['Application']
            print(app['from_zope'].title)
            with root['blob'].open() as handle:
                print(handle.read().decode())
        else:
            blob = Blob()
            with blob.open('w') as handle:
                handle.write(b'a blob through the cache')
            root['blob'] = blob
    db.close()
''')


def test_zope_on_relstorage_writes_and_reads_through_postgresql(cluster, python, tmp_path):
    instance, conf = make_instance(python, tmp_path, cluster, 'zopeops_test', True)
    assert "password=" not in conf.read_text() and PASSWORD not in conf.read_text()
    port = free_port()
    with ProcessGroup() as procs:
        proc, url = start_zope(procs, python, instance, conf, port)
        # A folder added through the ZMI as an editor would.
        answer = requests.post(url + '/manage_addProduct/OFSP/manage_addFolder',
                               data={'id': 'from_zope', 'title': 'written on RelStorage'},
                               auth=ADMIN, timeout=60)
        assert answer.status_code == 200, answer.text[:500]
        # Read back after a restart: the data is in PostgreSQL, not in the process.
        procs.stop(proc, timeout=60)
        proc, url = start_zope(procs, python, instance, conf, port)
        title = requests.get(url + '/from_zope/title_or_id', auth=ADMIN, timeout=60)
        assert title.text.strip() == 'written on RelStorage'
        # A second client writes a blob (through its own cache: shared-blob-dir false) ...
        script = tmp_path / 'client.py'
        script.write_text(RELSTORAGE_CLIENT)
        other = tmp_path / 'other-client'
        other.mkdir()
        subprocess.run([str(python), str(script), str(conf), 'write', str(other)],
                       check=True, capture_output=True, text=True, cwd=str(instance))
        procs.stop(proc, timeout=60)
    # ... and a third, with an empty cache, reads Zope's folder and the blob from the database.
    fresh = tmp_path / 'fresh-client'
    fresh.mkdir()
    read = subprocess.run([str(python), str(script), str(conf), 'read', str(fresh)],
                          check=True, capture_output=True, text=True, cwd=str(instance))
    assert read.stdout.split('\n')[:2] == ['written on RelStorage', 'a blob through the cache']
    assert list((fresh / 'blobcache').rglob('*.blob')), 'the blob came through the cache'
    # History-preserving: RelStorage's schema keeps the transaction log.
    tables = cluster.sql("SELECT table_name FROM information_schema.tables "
                         "WHERE table_schema = 'public'", database='zopeops_test').split()
    assert 'transaction' in tables and 'object_state' in tables
    count = int(cluster.sql('SELECT count(*) FROM object_state', database='zopeops_test'))
    assert count > 3


def test_a_history_free_database_gets_the_history_free_schema(cluster, python, tmp_path):
    instance, conf = make_instance(python, tmp_path, cluster, 'zopeops_test_free', False)
    assert 'keep-history false' in conf.read_text()
    script = tmp_path / 'client.py'
    script.write_text(RELSTORAGE_CLIENT)
    cache = tmp_path / 'cache'
    cache.mkdir()
    subprocess.run([str(python), str(script), str(conf), 'write', str(cache)], check=True,
                   capture_output=True, text=True, cwd=str(instance))
    tables = cluster.sql("SELECT table_name FROM information_schema.tables "
                         "WHERE table_schema = 'public'", database='zopeops_test_free').split()
    assert 'object_state' in tables and 'transaction' not in tables


def test_a_wrong_password_is_refused_by_the_server(cluster, python, tmp_path):
    instance, conf = make_instance(python, tmp_path, cluster, 'zopeops_test_wrong', True)
    (instance / 'etc' / 'pgpass').write_text(
        '127.0.0.1:%d:zopeops_test_wrong:zopeops_test:not-the-password\n' % cluster.port)
    script = tmp_path / 'client.py'
    script.write_text(RELSTORAGE_CLIENT)
    cache = tmp_path / 'cache'
    cache.mkdir()
    proc = subprocess.run([str(python), str(script), str(conf), 'write', str(cache)],
                          capture_output=True, text=True, cwd=str(instance), check=False)
    assert proc.returncode != 0
    assert 'password authentication failed for user "zopeops_test"' in proc.stderr
    assert 'not-the-password' not in proc.stderr + proc.stdout
