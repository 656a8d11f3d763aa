"""A RelStorage pipeline (inventories/relstorage: dev, beta and beta's twin, one PostgreSQL
cluster of the sandbox's own) brought up by site.yml twice: the second run changes nothing.

Opt-in (marker relstorage_pipeline, `make test-relstorage`): one site.yml of a fresh sandbox
takes 4-5.5 minutes on this 2-core machine under the other sessions' load (two releases
built, a PostgreSQL cluster initialised, three Zope clients started), far over the ~2 minutes
make test can spare (docs/relstorage.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import requests

from support.ansible import assert_no_changes, run_playbook
from support.load import LoadGenerator
from support.paths import REPO, VENV_BIN
from support.ports import free_port_block
from support.postgresql import PG_BIN, pg_missing
from support.writeload import WriteLoad, admin_auth
from support.zodbcheck import write_ids_over_http

pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.relstorage_pipeline,
              pytest.mark.skipif(bool(pg_missing()), reason=pg_missing() or 'ok'),
              pytest.mark.xdist_group('relstorage-pipeline')]

INVENTORY = REPO / 'inventories' / 'relstorage'


def test_site_brings_up_a_relstorage_pipeline_and_changes_nothing_the_second_time(
        tmp_path_factory):
    sandbox = tmp_path_factory.mktemp('relstorage') / 'sandbox'
    base = free_port_block(51, start=25000, stop=27400)
    extra = {'zopeops_sandbox': str(sandbox), 'zopeops_port_base': base}
    try:
        first = run_playbook('site.yml', INVENTORY, extra)
        assert first.returncode == 0, first.stdout[-15000:] + first.stderr[-3000:]
        # The second run under a read load and an acknowledged-write load through beta's
        # balancer: the writes land in PostgreSQL and every acknowledged one is served.
        beta = 'http://127.0.0.1:%d' % (base + 1)
        auth = admin_auth(sandbox / 'secrets' / 'zope-admin-password')
        with LoadGenerator(beta + '/@@zopeops-info', threads=2, max_seconds=900) as reads, \
                WriteLoad(beta, auth=auth, threads=2, max_seconds=900, pause=0.15) as writes:
            second = run_playbook('site.yml', INVENTORY, extra)
        assert_no_changes(second)
        assert not reads.failures and reads.total > 20, reads.report()
        assert not writes.failed and len(writes.acknowledged) >= 5, writes.report()
        missing = set(writes.acknowledged) - write_ids_over_http(beta, auth)
        assert not missing, (sorted(missing)[:20], writes.report())
        # No ZEO server anywhere; the stages' clients and PostgreSQL under supervisord.
        conf = sandbox / 'supervisor' / 'supervisord.conf'
        programs = subprocess.run([str(VENV_BIN / 'supervisorctl'), '-c', str(conf), 'status'],
                                  capture_output=True, text=True, check=False).stdout
        assert 'postgresql' in programs and 'zeo' not in programs
        # dev's demo content was made on RelStorage by the init script; each stage serves.
        dev = requests.get('http://127.0.0.1:%d/partners/acme/' % base, timeout=30)
        assert dev.status_code == 200 and 'acme' in dev.text
        assert requests.get('http://127.0.0.1:%d/@@zopeops-info' % (base + 1),
                            timeout=30).status_code == 200
        # Each live side has its own database with RelStorage's schema; the twin's exists.
        run_dir = '/tmp/zopeops-' + hashlib.sha1(str(sandbox).encode()).hexdigest()[:10] + '-pg'
        psql = ['runuser', '-u', 'postgres', '--'] if os.geteuid() == 0 else []
        names = subprocess.run(psql + ['psql', '-X', '-A', '-t', '-h', run_dir, '-p',
                                       str(base + 50), '-d', 'postgres', '-c',
                                       'SELECT datname FROM pg_database'],
                               capture_output=True, text=True, check=True).stdout.split()
        assert {'zopeops_dev', 'zopeops_beta', 'zopeops_beta_upgrade'} <= set(names)
        # status.yml shows the storage kind, and the pipeline healthy without ZEO.
        status = run_playbook('status.yml', INVENTORY, extra)
        assert status.returncode == 0, status.stdout[-8000:]
        report = json.loads((sandbox / 'lb' / 'status' / 'status.json').read_text())
        sides = [side for stage in report['stages'] for side in stage['sides']]
        assert {side['storage'] for side in sides} == {'relstorage'}
        assert 'storage' in status.stdout and 'RelStorage' in status.stdout
        assert (PG_BIN / 'postgres').exists()
    finally:
        subprocess.run([sys.executable, str(REPO / 'scripts' / 'sandbox-stop'), str(sandbox)],
                       timeout=180, check=False)
