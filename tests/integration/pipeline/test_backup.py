"""backup.yml on the local pipeline under the read and the acknowledged-write loads: a backup
now, then the restore drill; the schedule site.yml installed; the age in status.yml."""
from __future__ import annotations

import datetime
import json
import os
import socket
import time

import pytest

from support.promotion import assert_zero_loss, lock_dir, run_under_load, said
from support.zodbcheck import write_ids_in_datafs

pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]


def test_backup_and_drill_of_beta_under_load_and_its_age_in_the_status(pipeline, tmp_path):
    # site.yml installed the schedule: a supervisord loop with the stage's settings.
    assert pipeline.program_states().get('beta-backup') == 'RUNNING'
    config = json.loads((pipeline.sandbox / 'beta' / 'etc' / 'backup.json').read_text())
    assert config['repository'] == str(pipeline.sandbox / 'backups' / 'beta')

    # While a promotion holds beta, a backup is refused, naming it, and writes nothing.
    repository = pipeline.sandbox / 'backups' / 'beta'
    before = sorted(repository.rglob('*')) if repository.exists() else []
    folder = lock_dir(pipeline, 'beta')
    folder.mkdir(parents=True)
    (folder / 'owner.json').write_text(json.dumps({
        'run_id': 'other-run', 'owner': 'alice', 'action': 'run', 'stage': 'beta',
        'started_at': '2026-11-29T12:00:00Z', 'step': 'twin_data',
        'controller': socket.gethostname(), 'controller_pid': os.getpid(),
        'taken_at': time.time()}))
    try:
        refused = pipeline.playbook('backup.yml', {'stage': 'beta'})
    finally:
        (folder / 'owner.json').unlink()
        folder.rmdir()
    assert refused.returncode != 0 and 'A run of beta (run other-run) by alice' in \
        said(refused), refused.stdout[-3000:]
    assert (sorted(repository.rglob('*')) if repository.exists() else []) == before

    run = run_under_load(pipeline, 'backup.yml', 'beta', timeout=300)
    assert run.proc.returncode == 0, run.output
    print('backup beta: %s' % run.report())
    assert_zero_loss(pipeline, run, 'beta', 'self')
    latest = json.loads((repository / 'latest.json').read_text())
    # The first backup of the session is full; the writes make any later one incremental.
    assert latest['kind'] in ('full', 'incremental')
    assert latest['blob_backup'] == 'blobs/' + latest['stamp']
    assert (repository / latest['files'][0]).exists()
    assert ('Made a full backup of' if latest['kind'] == 'full' else
            'Made an incremental backup of') in said(run.proc)
    assert not lock_dir(pipeline, 'beta').exists()

    # The drill, while the loads go on: it restores into a scratch folder and touches no stage.
    drill = run_under_load(pipeline, 'backup.yml', 'beta', {'verify': True}, timeout=300)
    assert drill.proc.returncode == 0, drill.output
    assert_zero_loss(pipeline, drill, 'beta', 'self')
    assert 'fstest passed' in said(drill.proc)
    report = json.loads((repository / 'reports' / 'drill-latest.json').read_text())
    assert report['last_tid'] == latest['last_tid'] and report['records'] > 0
    # Every write acknowledged before the backup started is in it.
    restored = tmp_path / 'Data.fs'
    with open(restored, 'wb') as out:
        for name in latest['chain']:
            out.write((repository / name).read_bytes())
    began = datetime.datetime.fromisoformat(latest['started_at'].replace('Z', '+00:00'))
    before = {w for w, e in run.writes.acknowledged.items() if e['at'] < began.timestamp()}
    assert before and not before - write_ids_in_datafs(restored)

    status = pipeline.playbook('status.yml')
    assert status.returncode == 0, status.stdout[-5000:]
    page = json.loads((pipeline.sandbox / 'lb' / 'status' / 'status.json').read_text())
    beta = next(s for s in page['stages'] if s['name'] == 'beta')
    assert beta['backup']['ok'] and beta['backup']['age_hours'] < 1
    assert beta['backup']['stamp'] == latest['stamp']
    dev = next(s for s in page['stages'] if s['name'] == 'dev')
    assert not dev['backup']['ok'] and 'dev: its last good backup is missing' in \
        page['backups_late']
