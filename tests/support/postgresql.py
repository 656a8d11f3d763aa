"""A real PostgreSQL cluster for a test (the distribution's server, Debian 12: 15), and a
Python with RelStorage for the Zope that talks to it.

The cluster is the test's own: initdb into a folder of its own, `postgres` started on a free
port of 127.0.0.1 through ProcessGroup (stopped by its PID, also when the test fails).
PostgreSQL refuses to run as root; a root test runs it as the distribution's `postgres`
account (runuser), with its folder outside pytest's (mode 0700) temporary folders.
"""
from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from support.paths import REPO, VENV_BIN
from support.ports import free_port
from support.procs import wait_for

PG_BIN = Path(os.environ.get('ZOPEOPS_PG_BIN', '/usr/lib/postgresql/15/bin'))
# The wheel cache app_release uses in the sandbox (inventories/local): no download twice.
CACHE = Path.home() / '.cache' / 'zopeops-stages'


def pg_missing():
    """Why no cluster can be started here, or ''."""
    if not (PG_BIN / 'postgres').exists():
        return ('PostgreSQL is not installed (%s/postgres): make deps installs it as root '
                '(scripts/ensure-system-packages)' % PG_BIN)
    if os.geteuid() == 0:
        try:
            pwd.getpwnam('postgres')
        except KeyError:
            return 'running as root and there is no postgres account to run PostgreSQL as'
    return ''


class Cluster:
    """One PostgreSQL cluster: ``superuser`` connects through the socket folder (peer), every
    other account through 127.0.0.1 with a password (scram-sha-256)."""

    def __init__(self, procs, port=None):
        self.procs = procs
        self.port = port or free_port()
        self.account = 'postgres' if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.dir = Path(tempfile.mkdtemp(prefix='zopeops-pg-'))
        self.data = self.dir / 'data'
        self.proc = None
        if os.geteuid() == 0:
            shutil.chown(self.dir, self.account)

    def _as_account(self, argv):
        return (['runuser', '-u', self.account, '--'] + argv) if os.geteuid() == 0 else argv

    def run(self, argv, **kwargs):
        return subprocess.run(self._as_account(argv), check=True, capture_output=True,
                              text=True, **kwargs)

    def start(self, timeout=120):
        self.run([str(PG_BIN / 'initdb'), '-D', str(self.data), '-U', self.account,
                  '--auth-local=peer', '--auth-host=scram-sha-256', '-E', 'UTF8',
                  '--locale=C'])
        return self.resume(timeout)

    def halt(self):
        """Stop the server as an operator would (pg_ctl stop -m fast: every session ended),
        keeping its data for ``resume``."""
        self.run([str(PG_BIN / 'pg_ctl'), '-D', str(self.data), 'stop', '-m', 'fast', '-w'])
        self.proc.wait(timeout=60)

    def resume(self, timeout=120):
        """Start the server on its data (after ``start`` made it, or ``halt`` stopped it)."""
        self.proc = self.procs.start(
            self._as_account([str(PG_BIN / 'postgres'), '-D', str(self.data),
                              '-p', str(self.port), '-k', str(self.dir),
                              '-c', 'listen_addresses=127.0.0.1']),
            log_path=str(self.dir / 'postgres.log'))
        wait_for(lambda: self.proc.poll() is not None or self._ready(), timeout,
                 interval=0.2, what='PostgreSQL on port %d' % self.port)
        assert self.proc.poll() is None, (self.dir / 'postgres.log').read_text()
        return self

    def _ready(self):
        proc = subprocess.run([str(PG_BIN / 'pg_isready'), '-h', str(self.dir), '-p',
                               str(self.port)], capture_output=True, check=False)
        return proc.returncode == 0

    def sql(self, statement, database='postgres'):
        return self.run(['psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h',
                         str(self.dir), '-p', str(self.port), '-d', database, '-c',
                         statement]).stdout.strip()

    def create_database(self, name, user, password):
        self.sql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (user, password))
        self.sql('CREATE DATABASE %s OWNER %s' % (name, user))

    def stop(self):
        if self.proc is not None:
            self.procs.stop(self.proc, timeout=60)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def relstorage_python():
    """A Python with the example application's release pins (Zope, ZODB, RelStorage,
    psycopg2): a virtualenv built once with uv from the shared wheel cache, as app_release
    builds a release, and kept for later runs (rebuilt when the pins change). It is built in
    a folder of its own and renamed, so run its scripts as ``python <bin/script>``."""
    requirements = REPO / 'examples' / 'zopeapp' / 'requirements.txt'
    key = hashlib.sha1(requirements.read_bytes()).hexdigest()[:12]
    venv = CACHE / ('test-relstorage-' + key)
    python = venv / 'bin' / 'python'
    if (venv / '.complete').exists():
        return python
    CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix='test-relstorage-', dir=CACHE))
    env = dict(os.environ, UV_CACHE_DIR=str(CACHE / 'uv'), UV_LINK_MODE='hardlink',
               UV_PYTHON_DOWNLOADS='never')
    uv = str(VENV_BIN / 'uv')
    base = subprocess.run([str(VENV_BIN / 'python'), '-c',
                           'import sys, os; print(os.path.realpath(sys._base_executable))'],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        for argv in ([uv, 'venv', '--quiet', '--python', base, str(building)],
                     [uv, 'pip', 'install', '--quiet', '--python',
                      str(building / 'bin' / 'python'), '-r', str(requirements)]):
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900,
                                  check=False)
            if proc.returncode:
                pytest.fail('cannot build a Python with RelStorage from the wheel cache and the '
                            'package index (the project installs it): %s' % proc.stderr[-1500:])
        (building / '.complete').touch()
        try:
            building.rename(venv)
        except OSError:  # another session built it meanwhile
            shutil.rmtree(building, ignore_errors=True)
    finally:
        if building.exists() and not (venv / '.complete').exists():
            shutil.rmtree(building, ignore_errors=True)
    return python
