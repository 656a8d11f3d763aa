"""restore.yml on the local pipeline: beta restored to the state between two backups through
its twin, under the read and the acknowledged-write loads; the refusals (bad input, another
stage's backup without the flag, a damaged backup file) change nothing."""
from __future__ import annotations

import datetime
import hashlib
import json
import shutil

import pytest

from support.promotion import (info, lock_dir, map_file, output, run_under_load, said,
                               state_events)
from support.writeload import WriteLoad
from support.zodbcheck import write_ids_in_datafs, write_ids_over_http

pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]


def backup_now(pipeline, **extra):
    proc = pipeline.playbook('backup.yml', dict({'stage': 'beta'}, **extra))
    assert proc.returncode == 0, output(proc)
    return json.loads((pipeline.sandbox / 'backups' / 'beta' / 'latest.json').read_text())


def write_some(pipeline, count):
    """``count`` acknowledged writes through beta's balancer; their ids."""
    with WriteLoad(pipeline.lb_bases('beta')[0], auth=pipeline.admin_auth(), threads=1,
                   max_writes=count, max_seconds=120) as load:
        load.wait(150)
    assert len(load.acknowledged) == count and not load.failed, load.report()
    return set(load.acknowledged)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state_at(path, tid_hex=None):
    """{oid: (data, serial)} of every object of the FileStorage at ``path``, as of its end or
    as of the transaction ``tid_hex`` (ZODB's own loadBefore)."""
    from ZODB.FileStorage import FileStorage
    from ZODB.utils import p64, u64
    storage = FileStorage(str(path), read_only=True)
    try:
        oids = {record.oid for txn in storage.iterator() for record in txn}
        if tid_hex is None:
            return {oid: storage.load(oid) for oid in oids}
        before = p64(u64(bytes.fromhex(tid_hex)) + 1)
        return {oid: storage.loadBefore(oid, before)[:2] for oid in oids
                if storage.loadBefore(oid, before)}
    finally:
        storage.close()


def transactions_after(path, tid_hex):
    from ZODB.FileStorage import FileStorage
    from ZODB.utils import p64, u64
    storage = FileStorage(str(path), read_only=True)
    try:
        return sum(1 for _txn in storage.iterator(p64(u64(bytes.fromhex(tid_hex)) + 1)))
    finally:
        storage.close()


def refused_restore(pipeline, message, before_lock=True, **extra):
    """A refused restore: beta's Data.fs unchanged, no lock left; refused before the lock, no
    state and no ledger line either."""
    before = digest(pipeline.datafs('beta')), pipeline.state('beta'), len(pipeline.ledger())
    proc = pipeline.playbook('restore.yml', dict({'stage': 'beta'}, **extra))
    assert proc.returncode != 0 and message in said(proc), output(proc)
    assert 'Traceback' not in proc.stdout + proc.stderr
    assert digest(pipeline.datafs('beta')) == before[0]
    if before_lock:
        assert (pipeline.state('beta'), len(pipeline.ledger())) == before[1:]
    assert not lock_dir(pipeline, 'beta').exists()
    return proc


def test_restore_of_beta_at_a_time_between_two_backups_under_load(pipeline, tmp_path):
    repository = pipeline.sandbox / 'backups' / 'beta'
    assert info(pipeline, 'beta')['instance'] == 'beta'
    first = backup_now(pipeline, full=True)
    between = write_some(pipeline, 6)
    second = backup_now(pipeline)
    assert second['kind'] == 'incremental' and second['stamp'] > first['stamp'], second
    after = write_some(pipeline, 6)

    # Bad input is refused before the lock, naming what was wrong; nothing changes (a date
    # that is none: tests/unit/plugins/module_utils/test_zodb_backup_dates.py).
    refused_restore(pipeline, 'the first one is of', backup_at='2001-01-01 00:00:00')
    refused_restore(pipeline, 'give -e allow_other_stage=true', restore_from='prod')

    # A damaged backup file: the restore refuses it, naming the file; beta is untouched and
    # keeps serving (the twin it started is stopped again).
    damaged = repository / second['files'][0]
    kept = damaged.read_bytes()
    try:
        with open(damaged, 'r+b') as handle:
            handle.seek(100)
            handle.write(b'\xff' * 16)
        proc = refused_restore(pipeline, str(damaged), before_lock=False)
        assert 'Nothing moved: beta kept serving' in said(proc), output(proc)
    finally:
        damaged.write_bytes(kept)
    assert info(pipeline, 'beta')['instance'] == 'beta'
    assert 'beta be_beta_live' in map_file(pipeline, 'active.map').read_text()
    aborted = pipeline.ledger()[-1]
    assert aborted['action'] == 'restore' and aborted['result'].startswith('aborted'), aborted
    assert str(damaged) in aborted['message']
    assert pipeline.state('beta')['status'] == 'aborted'  # not unfinished: a restore may run

    # The state between the two backups is backup 1's: restored through the twin, under load.
    at = datetime.datetime.strptime(first['stamp'], '%Y-%m-%d-%H-%M-%S') + \
        datetime.timedelta(seconds=1)
    assert at.strftime('%Y-%m-%d-%H-%M-%S') < second['stamp']
    backup_at = at.strftime('%Y-%m-%d %H:%M:%S')
    # The one-off steps' stamps (planted: beta runs neither here) go with the data they record.
    stamps = [pipeline.sandbox / side / 'var' / name for side in ('beta', 'beta_upgrade')
              for name in ('zopeops-init.stamp', 'zopeops-push-grant.stamp')]
    for stamp in stamps:
        stamp.write_text('{}')
    run = run_under_load(pipeline, 'restore.yml', 'beta', {'backup_at': backup_at}, timeout=900)
    assert run.proc.returncode == 0, run.output
    print('restore beta: %s' % run.report())
    assert not run.reads.failures and run.reads.total > 20, run.report()
    assert not run.writes.failed and len(run.writes.acknowledged) >= 5, run.report()
    assert not [stamp for stamp in stamps if stamp.exists()]

    # Backup 1's state, compared with ZODB: every object of the backup as it was, in beta's
    # Data.fs as of the restored transaction; then only the twin's and later writes.
    state = pipeline.state('beta')
    assert state['status'] == 'done' and state['plan']['restore']['stamp'] == first['stamp']
    restored_tid = state['plan']['restore']['last_tid']
    assert restored_tid == first['last_tid']
    backup1 = tmp_path / 'backup1.fs'
    shutil.copyfile(repository / first['files'][0], backup1)
    assert state_at(backup1) == state_at(pipeline.datafs('beta'), restored_tid)

    # The writes: backup 1's, and every one acknowledged after the first switch (by the twin,
    # or by beta after the switch back), are there; those beta acknowledged after the backup
    # and before the first switch are dropped, as the restore says.
    acked = run.writes.acknowledged
    switch_back = state_events(pipeline, 'beta')[1][('cutover_to_live', 'start')]
    kept = {w for w, e in acked.items() if e['instance'] == 'beta_upgrade'
            or (e['instance'] == 'beta' and e['at'] > switch_back)}
    dropped = {w for w, e in acked.items() if e['instance'] == 'beta' and e['at'] <= switch_back}
    in_backup1 = write_ids_in_datafs(backup1)
    held = write_ids_in_datafs(pipeline.datafs('beta'))
    assert held == write_ids_over_http(pipeline.lb_bases('beta')[0], pipeline.admin_auth())
    assert kept and in_backup1 <= held and kept <= held, run.report()
    assert not held & (between | after | dropped)
    assert held - in_backup1 - kept <= set(run.writes.abandoned)

    # The count of dropped transactions: beta's transactions after the restored one, in the
    # Data.fs the restore replaced (kept as the pair a rollback would return to).
    pair = state['rollback_target']['data_pair']
    replaced = pipeline.datafs('beta').with_name('Data.fs.prev-' + pair)
    dropped_count = transactions_after(replaced, restored_tid)
    assert dropped_count >= len(between | after | dropped)
    assert state['replaced_transactions'] == dropped_count
    entry = pipeline.ledger()[-1]
    assert (entry['action'], entry['result']) == ('restore', 'success'), entry
    assert entry['backup']['stamp'] == first['stamp'] and entry['backup']['last_tid'] == restored_tid
    assert entry['dropped_transactions'] == dropped_count
    assert 'Restored beta to the backup %s of beta' % first['stamp'] in said(run.proc)
    assert 'Dropped %d transactions beta had after it' % dropped_count in said(run.proc)
    assert not lock_dir(pipeline, 'beta').exists()
    assert info(pipeline, 'beta')['instance'] == 'beta'
