"""pack.yml and the scheduled pack on the local pipeline (beta): the pack through ZEO under
beta's lock, its report beside the data, acknowledged writes kept, and both refused (nothing
packed) while another run holds the stage. Runs after the promotions and pushes of group
pipeline (file order): beta's data then holds the admin the write load logs in as.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import time

import pytest

from support.promotion import lock_dir, lost_writes, output, said
from support.writeload import WriteLoad

pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]


def report(pipeline, stage='beta'):
    path = pipeline.datafs(stage).parent / 'pack-report.json'
    return json.loads(path.read_text()) if path.exists() else None


def scheduled_command(pipeline, instance='beta'):
    """The command the supervisord program of the scheduled pack loops around."""
    text = (pipeline.sandbox / instance / 'etc' / 'supervisor-pack.conf').read_text()
    line = [l for l in text.splitlines() if l.startswith('command = ')][0]
    loop = shlex.split(line[len('command = '):])[-1]
    return shlex.split(loop.split('; do ', 1)[1].rsplit('; done', 1)[0])


def hold_lock(pipeline, stage):
    folder = lock_dir(pipeline, stage)
    folder.mkdir(parents=True)
    (folder / 'owner.json').write_text(json.dumps({
        'run_id': 'promotion-in-test', 'owner': 'alice', 'action': 'run', 'stage': stage,
        'started_at': '2026-12-07T01:00:00Z', 'controller_pid': os.getpid(),
        'taken_at': time.time()}))
    return folder


def test_pack_now_and_on_schedule_never_under_another_runs_lock(pipeline):
    # Writes make history to pack: each rewrites the demo's write container.
    with WriteLoad('http://127.0.0.1:%d' % pipeline.lb_port('beta'), auth=pipeline.admin_auth(),
                   threads=2, max_writes=30, max_seconds=60) as writes:
        writes.wait(90)
    assert len(writes.acknowledged) == 30 and not writes.failed, writes.report()
    assert 'beta-pack' in pipeline.program_states()  # the schedule, under supervisord

    folder = hold_lock(pipeline, 'beta')
    try:
        datafs = pipeline.datafs('beta').stat()
        proc = pipeline.playbook('pack.yml', {'stage': 'beta'})
        assert proc.returncode != 0, output(proc)
        assert 'A run of beta (run promotion-in-test) by alice' in said(proc), output(proc)
        assert 'Nothing was packed.' in said(proc)
        scheduled = subprocess.run(scheduled_command(pipeline), capture_output=True, text=True,
                                   timeout=120, check=False)
        assert scheduled.returncode == 0, scheduled.stderr
        skipped = report(pipeline)
        assert skipped['result'] == 'skipped' and skipped['how'] == 'schedule', skipped
        assert 'held by the run of beta (run promotion-in-test by alice' in skipped['reason']
        assert (pipeline.datafs('beta').stat().st_size, pipeline.datafs('beta').stat().st_mtime) \
            == (datafs.st_size, datafs.st_mtime)
        assert (folder / 'owner.json').exists()  # the other run's lock is left alone
    finally:
        (folder / 'owner.json').unlink()
        folder.rmdir()

    proc = pipeline.playbook('pack.yml', {'stage': 'beta', 'zopeops_pack_days': 0})
    assert proc.returncode == 0, output(proc)
    packed = report(pipeline)
    assert packed['result'] == 'packed' and packed['how'] == 'playbook', packed
    assert packed['days'] == 0 and packed['duration'] > 0, packed
    assert packed['size_after'] < packed['size_before'], packed
    assert pipeline.datafs('beta').stat().st_size == packed['size_after']
    assert not lost_writes(pipeline, 'beta', set(writes.acknowledged))['missing_datafs']
    entry = [e for e in pipeline.ledger() if e.get('action') == 'pack'][-1]
    assert entry['stage'] == 'beta' and entry['result'] == 'packed', entry
    assert not lock_dir(pipeline, 'beta').exists()

    # The scheduled command itself, with nothing holding the stage: it packs (nothing is
    # left to free right after a pack) and releases its lock.
    scheduled = subprocess.run(scheduled_command(pipeline), capture_output=True, text=True,
                               timeout=120, check=False)
    assert scheduled.returncode == 0, scheduled.stdout + scheduled.stderr
    again = report(pipeline)
    assert again['result'] == 'packed' and again['how'] == 'schedule', again
    assert again['size_after'] == again['size_before'] == packed['size_after'], again
    assert (pipeline.datafs('beta').parent / 'pack-report.json').stat().st_mode & 0o777 == 0o600
    assert not lock_dir(pipeline, 'beta').exists()
