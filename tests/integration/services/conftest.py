"""A real supervisord, ZEO server and Zope client for the service modules' tests.

One supervisord per test module (started here, stopped by its PID at teardown, also when a
test fails), with its unix socket in a short /tmp/zt-XXXX directory: socket paths are limited
to 108 bytes. Programs are written as include files, as the roles do, so that the modules'
reread/update path is exercised.
"""
from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from support.paths import VENV_BIN
from support.ports import free_port
from support.supervisor import running_supervisor


@pytest.fixture(scope='module')
def supervisor():
    with running_supervisor() as sup:
        yield sup


def make_filestorage(path, value='hello'):
    """A Data.fs with one committed transaction; return its last tid as hex."""
    import transaction
    import ZODB
    from ZODB.FileStorage import FileStorage

    storage = FileStorage(str(path))
    db = ZODB.DB(storage)
    try:
        with db.transaction() as conn:
            conn.root()['value'] = value
        return storage.lastTransaction().hex()
    finally:
        db.close()
        transaction.abort()


def write_zeo(directory, port):
    directory = Path(directory)
    (directory / 'var').mkdir(parents=True, exist_ok=True)
    conf = directory / 'zeo.conf'
    conf.write_text(textwrap.dedent(f'''\
        <zeo>
          address 127.0.0.1:{port}
        </zeo>
        <filestorage 1>
          path {directory}/var/Data.fs
        </filestorage>
        <eventlog>
          <logfile>
            path {directory}/zeo.log
          </logfile>
        </eventlog>
        '''))
    return conf


def make_zope(directory, port, zeo_address=None, password='secret'):
    """A Zope 6 WSGI instance (mkwsgiinstance) on ``port``, on ZEO or a local Data.fs."""
    directory = Path(directory)
    subprocess.run([str(VENV_BIN / 'mkwsgiinstance'), '-d', str(directory), '-u',
                    'admin:' + password], check=True, capture_output=True)
    ini = directory / 'etc' / 'zope.ini'
    ini.write_text(ini.read_text().replace('port = 8080', f'port = {port}'))
    if zeo_address:
        conf = directory / 'etc' / 'zope.conf'
        text = conf.read_text()
        start = text.index('<zodb_db main>')
        end = text.index('</zodb_db>') + len('</zodb_db>')
        text = text[:start] + textwrap.dedent(f'''\
            <zodb_db main>
              <zeoclient>
                server {zeo_address}
                storage 1
                name zeostorage
                var $INSTANCE/var
                cache-size 20MB
              </zeoclient>
              mount-point /
            </zodb_db>''') + text[end:]
        conf.write_text(text)
    return ini


@pytest.fixture(scope='module')
def zeo(supervisor):
    """A ZEO program ``<prefix>-zeo`` (defined, not started) with a known last tid."""
    directory = supervisor.root / 'zeo'
    directory.mkdir()
    port = free_port()
    conf = write_zeo(directory, port)
    tid = make_filestorage(directory / 'var' / 'Data.fs')
    supervisor.add_program('t-zeo', f'{VENV_BIN}/runzeo -C {conf}')
    return {'name': 't-zeo', 'address': f'127.0.0.1:{port}', 'port': port, 'tid': tid,
            'log_path': str(directory / 'zeo.log'), 'dir': directory}
