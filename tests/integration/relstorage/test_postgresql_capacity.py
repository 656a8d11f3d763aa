"""The postgresql role refuses a server whose sessions cannot hold the clients of the sides it
serves (docs/scaling.md): RelStorage keeps two sessions per ZODB connection, a Zope client a
connection per thread, and a server refusing sessions fails the clients under load only, long
after site.yml said all was well.

The PostgreSQL part of site.yml alone (tests/integration/relstorage/playbooks/postgresql.yml)
on inventories/relstorage: the sandbox's own cluster under its supervisord, started with
postgresql_max_connections, then the role's check against what the server says it accepts.
The passing side runs in every RelStorage site.yml (test_relstorage_pipeline.py).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from support.ansible import run_playbook
from support.paths import REPO
from support.ports import free_port_block
from support.postgresql import pg_missing

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(bool(pg_missing()), reason=pg_missing() or 'ok')]

INVENTORY = REPO / 'inventories' / 'relstorage'
PLAYBOOK = '../tests/integration/relstorage/playbooks/postgresql.yml'


def test_a_server_too_small_for_its_clients_is_refused(tmp_path):
    sandbox = tmp_path / 'sandbox'
    base = free_port_block(51, start=25000, stop=27400)
    extra = {'zopeops_sandbox': str(sandbox), 'zopeops_port_base': base}
    try:
        # dev, beta (two clients) and beta's twin: 4 clients of 10 sessions; 12 - 3 reserved = 9.
        small = run_playbook(PLAYBOOK, INVENTORY, dict(extra, postgresql_max_connections=12))
        assert small.returncode != 0, small.stdout[-5000:]
        assert ('The PostgreSQL server pg-local (port %d) accepts 9 sessions for its users, '
                'and the 4 Zope clients of its sides (dev, beta, beta_upgrade) may open 40'
                % (base + 50)) in ' '.join(small.stdout.split()), small.stdout[-5000:]
        assert 'Raise postgresql_max_connections' in small.stdout
        # The check ran before any client could connect: none was configured.
        assert not (sandbox / 'dev' / 'etc').exists() or not list(
            (sandbox / 'dev' / 'etc').glob('zope-*.conf'))
    finally:
        subprocess.run([sys.executable, str(REPO / 'scripts' / 'sandbox-stop'), str(sandbox)],
                       timeout=180, check=False)
