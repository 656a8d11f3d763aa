"""push_branding.yml on the local pipeline: one partner's branding from dev to beta.

In file order: the refusals (nothing changes), check mode (nothing written), the push under
read load while beta's twin runs (both sides get it; nothing else on beta changes), then a
push whose page fails (the previous version comes back). beta is seeded first (site.yml
seeds only the head); every stage serves as before at the end, the twin is stopped again.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid

import pytest
import requests

from support import brandings
from support.load import LoadGenerator
from support.procs import ProcessGroup, wait_for
from support.ports import port_is_free
from support.promotion import lost_writes
from support.writeload import WriteLoad

pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]

TWIN_PORT_OFFSET = 25  # inventories/local: beta_upgrade's ZEO server


def promotions(pipeline):
    return pipeline.sandbox / 'lb' / 'promotions'


def ledger(pipeline):
    path = promotions(pipeline) / 'ledger.jsonl'
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def push(pipeline, extra=None, check=False):
    return pipeline.playbook('push_branding.yml', dict({'partner': 'acme', 'from_stage': 'dev'},
                                                       **(extra or {})), check=check)


WRITES = '/_zopeops_writes'  # the demo's write container (examples/zopeapp writes.py)


def beta_tree(pipeline):
    return brandings.tree(brandings.python_of(pipeline, 'beta'), pipeline.port_base + 20,
                          paths=brandings.PATHS + (WRITES,))


def page(pipeline, stage, path='/partners/acme'):
    return requests.get('http://127.0.0.1:%d%s' % (pipeline.lb_port(stage), path), timeout=15)


@pytest.fixture(scope='module')
def seeded(pipeline):
    brandings.seed(pipeline, 'beta')
    return pipeline


def lock_of(pipeline, stage):
    owner = promotions(pipeline) / ('%s.lock' % stage) / 'owner.json'
    return owner.read_text() if owner.exists() else None


def refused(pipeline, extra, message):
    before = beta_tree(pipeline)['last_tid']
    lines = len(ledger(pipeline))
    locks = lock_of(pipeline, 'dev'), lock_of(pipeline, 'beta')
    proc = push(pipeline, extra)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-5000:]
    assert message in ' '.join(output.split()), output[-5000:]
    assert beta_tree(pipeline)['last_tid'] == before
    assert len(ledger(pipeline)) == lines
    assert (lock_of(pipeline, 'dev'), lock_of(pipeline, 'beta')) == locks  # none taken or freed


@pytest.mark.parametrize('extra, message', [
    ({'partner': 'hooli'}, "Partner 'hooli' is not in zopeops_partners"),
    ({'partner': 'hooli', 'zopeops_partners': [{'name': 'hooli'}]},
     'There is no object at /partners/hooli on this stage'),
    ({'from_stage': 'beta', 'to_stage': 'dev'}, "Stage 'dev' is not downstream of 'beta'"),
    ({'push_branding_max_bytes': 100}, 'more than max_bytes (100)'),
], ids=['unknown-partner', 'unknown-path', 'not-downstream', 'too-large'])
def test_refuses_and_changes_nothing(seeded, extra, message):
    refused(seeded, extra, message)


def plant_lock(pipeline, stage, run_id='run-42', action='promote', purpose='run',
               heartbeat_age=0, **extra):
    """A lock as another controller's live run leaves it (an AWX job: another host name),
    its heartbeat renewed ``heartbeat_age`` seconds ago."""
    lock = promotions(pipeline) / ('%s.lock' % stage)
    lock.mkdir(parents=True)
    (lock / 'owner.json').write_text(json.dumps(dict({
        'run_id': run_id, 'owner': 'alice@ci', 'action': action, 'purpose': purpose,
        'stage': stage, 'started_at': '2026-11-29T10:00:00Z', 'controller': 'awx-job-9',
        'controller_pid': 4242, 'taken_at': time.time() - heartbeat_age}, **extra), indent=2))
    (lock / 'heartbeat').touch()
    stamp = time.time() - heartbeat_age
    os.utime(lock / 'heartbeat', (stamp, stamp))
    return lock


@pytest.mark.parametrize('stage', ['dev', 'beta'])
def test_refuses_while_a_promotion_holds_the_source_or_target_lock(seeded, stage):
    lock = plant_lock(seeded, stage)
    try:
        refused(seeded, {}, 'promote of %s (run run-42) by alice@ci' % stage)
        refused(seeded, {}, 'Nothing was pushed.')
    finally:
        shutil.rmtree(lock)


def test_an_interrupted_promotion_is_named_and_not_taken_over_by_a_push(seeded):
    lock = plant_lock(seeded, 'beta', heartbeat_age=600, step='cutover_to_twin')
    try:
        refused(seeded, {}, 'was interrupted: its heartbeat stopped')
        refused(seeded, {}, 'at step cutover_to_twin')
        refused(seeded, {}, 'playbooks/promote.yml -e stage=beta -e action=resume')
    finally:
        shutil.rmtree(lock)


def test_site_yml_holds_its_stages_and_refuses_while_a_promotion_holds_one(seeded):
    # The session's site.yml runs took their locks and released them.
    assert not list(promotions(seeded).glob('*.lock'))
    lock = plant_lock(seeded, 'beta')
    try:
        proc = seeded.playbook('site.yml', args=('--limit', 'dev-local:beta-local'))
        said = ' '.join((proc.stdout + proc.stderr).split())
        assert proc.returncode != 0, said[-5000:]
        assert 'promote of beta (run run-42) by alice@ci' in said, said[-5000:]
        assert 'awx-job-9' in said and 'counts as interrupted' in said, said[-5000:]
        assert 'TASK [Ensure the stage runs its release.]' not in proc.stdout  # nothing ran
        assert sorted(p.name for p in promotions(seeded).glob('*.lock')) == ['beta.lock']
        assert json.loads((lock / 'owner.json').read_text())['run_id'] == 'run-42'
    finally:
        shutil.rmtree(lock)


def test_a_promotion_and_a_push_refuse_while_site_yml_holds_the_stage(seeded):
    locks = [plant_lock(seeded, stage, run_id='site-7', action='site', purpose='site',
                        stages=['dev', 'beta', 'test', 'prod'])
             for stage in ('dev', 'beta', 'test', 'prod')]
    try:
        refused(seeded, {}, 'site.yml run of beta (run site-7) by alice@ci')
        proc = seeded.playbook('promote.yml', {'stage': 'test'})
        said = ' '.join((proc.stdout + proc.stderr).split())
        assert proc.returncode != 0, said[-5000:]
        assert 'site.yml run of test (run site-7) by alice@ci' in said, said[-5000:]
        assert json.loads((locks[2] / 'owner.json').read_text())['run_id'] == 'site-7'
    finally:
        for lock in locks:
            shutil.rmtree(lock)


def test_check_mode_reports_the_difference_and_writes_nothing(seeded, tmp_path):
    brandings.edit_acme(seeded, 'dev', '<html><body><p>acme check %s</p></body></html>'
                        % uuid.uuid4().hex[:6], 'blob-for-check', tmp_path)
    data_fs = seeded.sandbox / 'beta' / 'var' / 'filestorage' / 'Data.fs'
    size, tid = data_fs.stat().st_size, beta_tree(seeded)['last_tid']
    lines = len(ledger(seeded))
    proc = push(seeded, check=True)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert 'beta: Would replace /partners/acme: 0 added, 2 replaced, 0 removed, 1 unchanged' \
        in ' '.join(proc.stdout.split()), proc.stdout[-6000:]
    assert data_fs.stat().st_size == size
    assert beta_tree(seeded)['last_tid'] == tid
    assert len(ledger(seeded)) == lines


@pytest.fixture
def beta_twin(seeded, tmp_path):
    """beta's twin ZEO server, serving a copy of beta's data (the twin as a promotion leaves
    it running for a fast rollback). Only what this fixture created is removed again."""
    port = seeded.port_base + TWIN_PORT_OFFSET
    assert port_is_free(port), 'beta_upgrade already runs'
    twin_dir = seeded.sandbox / 'beta_upgrade'
    created = [] if twin_dir.exists() else [twin_dir]
    twin_dir.mkdir(exist_ok=True)
    if not (twin_dir / 'current').exists():
        os.symlink(os.readlink(seeded.sandbox / 'beta' / 'current'), twin_dir / 'current')
        created.append(twin_dir / 'current')
    # A twin left by a promotion has a console configuration that shares its own blob folder;
    # this twin's data lives elsewhere, so the push reaches it by ZEO address (as a ZEO-only
    # host is reached). The configuration is put back afterwards.
    console = twin_dir / 'etc' / 'zope-console.conf'
    aside = twin_dir / 'etc' / 'zope-console.conf.push-branding-test'
    if console.exists():
        console.rename(aside)
    data = tmp_path / 'twin'
    data.mkdir()
    python = brandings.python_of(seeded, 'beta')
    copy = ('import sys; from ZEO.ClientStorage import ClientStorage; '
            'from ZODB.FileStorage import FileStorage; '
            "src = ClientStorage(('127.0.0.1', int(sys.argv[1])), read_only=True, "
            "blob_dir=sys.argv[2] + '/cache'); "
            "dst = FileStorage(sys.argv[2] + '/Data.fs', blob_dir=sys.argv[2] + '/blobs'); "
            'dst.copyTransactionsFrom(src); dst.close(); src.close()')
    subprocess.run([python, '-c', copy, str(seeded.port_base + 20), str(data)], check=True,
                   timeout=120)
    (data / 'zeo.conf').write_text(
        '<zeo>\n  address 127.0.0.1:%d\n</zeo>\n<filestorage 1>\n  path %s/Data.fs\n'
        '  blob-dir %s/blobs\n</filestorage>\n' % (port, data, data))
    with ProcessGroup() as procs:
        procs.start([str(twin_dir / 'current' / 'venv' / 'bin' / 'runzeo'), '-C',
                     str(data / 'zeo.conf')], log_path=str(data / 'zeo.log'))
        wait_for(lambda: not port_is_free(port), timeout=60, what='the twin ZEO server')
        yield port
    if aside.exists():
        aside.rename(console)
    for path in reversed(created):
        if path.is_symlink():
            path.unlink()
        else:
            shutil.rmtree(path)


def test_push_reaches_beta_and_its_twin_and_changes_nothing_else(seeded, beta_twin, tmp_path):
    text = '<html><body><p>acme v%s</p></body></html>' % uuid.uuid4().hex[:8]
    blob_text = 'blob-%s' % uuid.uuid4().hex
    brandings.edit_acme(seeded, 'dev', text, blob_text, tmp_path)
    base = 'http://127.0.0.1:%d' % seeded.lb_port('beta')
    with LoadGenerator(base + '/partners/acme', threads=2) as load, \
            WriteLoad(base, auth=seeded.admin_auth(), threads=2, max_seconds=600,
                      pause=0.15) as writes:
        # The write container exists before the comparison's first read (the first write
        # creates it, and that changes the application root).
        wait_for(lambda: writes.acknowledged, timeout=60, what='a first acknowledged write')
        before = beta_tree(seeded)
        proc = push(seeded)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert load.total > 0 and not load.failures, load.report()
    assert len(writes.acknowledged) >= 5 and not writes.failed, writes.report()
    lost = lost_writes(seeded, 'beta', set(writes.acknowledged))
    assert lost['missing_http'] == 0 and lost['missing_datafs'] == 0, lost

    # beta and its twin serve / hold the new branding, blob included.
    assert text in page(seeded, 'beta').text
    after = beta_tree(seeded)
    assert after['acme_text'] == text and after['acme_blob'] == blob_text
    twin = brandings.tree(brandings.python_of(seeded, 'beta'), beta_twin)
    assert twin['acme_text'] == text and twin['acme_blob'] == blob_text

    # Nothing outside acme's subtree changed: same records, same tids (the write load's own
    # container aside); acme kept its oid and its parent /partners was not written.
    old_acme, new_acme = set(before['subtrees']['/partners/acme']), set(
        after['subtrees']['/partners/acme'])
    written = set(after['subtrees'][WRITES])
    assert after['oids']['/partners/acme'] == before['oids']['/partners/acme']
    changed = {oid for oid, tid in before['tids'].items()
               if after['tids'].get(oid) != tid} - written
    assert changed and changed <= old_acme, changed - old_acme
    assert set(after['tids']) - set(before['tids']) - written <= new_acme
    for oid in before['subtrees']['/partners/globex'] + [before['oids']['/partners']]:
        assert after['tids'][oid] == before['tids'][oid], oid

    entry = ledger(seeded)[-1]
    assert entry['action'] == 'push_branding' and entry['result'] == 'done', entry
    assert (entry['stage'], entry['partner'], entry['from_stage']) == ('beta', 'acme', 'dev')
    assert entry['sides'] == ['beta', 'beta_upgrade'], entry
    assert (entry['replaced'], entry['added'], entry['removed']) == (2, 0, 0), entry
    assert entry['by'] and entry['started_at'] and entry['finished_at']
    assert not (promotions(seeded) / 'beta.lock').exists()


def test_a_failing_page_after_the_push_restores_the_previous_version(seeded, tmp_path):
    served = page(seeded, 'beta').text
    assert page(seeded, 'beta').status_code == 200
    broken = '<html><body><p tal:content="python: 1 / 0">boom</p></body></html>'
    previous = brandings.tree(brandings.python_of(seeded, 'dev'), seeded.port_base + 10)
    brandings.edit_acme(seeded, 'dev', broken, 'blob-broken', tmp_path)
    try:
        proc = push(seeded, {'push_branding_check_deadline': 3})
        output = ' '.join((proc.stdout + proc.stderr).split())
        assert proc.returncode != 0, output[-6000:]
        assert 'The previous version was restored on beta' in output, output[-6000:]
        assert "acme's pages fail on beta after the push" in output, output[-6000:]
        response = page(seeded, 'beta')
        assert response.status_code == 200 and response.text == served
        entry = ledger(seeded)[-1]
        assert entry['result'] == 'rolled_back' and entry['pages_after'] == 'fail', entry
        assert not (promotions(seeded) / 'beta.lock').exists()
    finally:  # dev serves its branding again
        brandings.edit_acme(seeded, 'dev', previous['acme_text'], previous['acme_blob'] or '',
                            tmp_path)
    assert page(seeded, 'dev').status_code == 200
