"""pipeline_status's readers on real files: the last tid from the end of a FileStorage (checked
against ZODB itself), the ledger, state and lock of the promotions folder, and drift."""
from __future__ import annotations

import json

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils.revision_proof import (
    RevisionProof)
from ansible_collections.zopeops.stages.plugins.modules.pipeline_status import (
    ask, data_fs_state, instance_status, promotions_status)


def test_last_tid_is_read_from_the_end_of_data_fs(tmp_path):
    fs = pytest.importorskip('ZODB.FileStorage')
    import transaction
    import ZODB
    path = str(tmp_path / 'Data.fs')
    db = ZODB.DB(fs.FileStorage(path))
    with db.transaction() as conn:
        conn.root()['x'] = 1
    with db.transaction() as conn:
        conn.root()['y'] = 2
    last = db.storage.lastTransaction().hex()
    db.close()
    transaction.abort()
    state = data_fs_state(path)
    assert state['last_tid'] == last and state['size'] == (tmp_path / 'Data.fs').stat().st_size
    assert data_fs_state(str(tmp_path / 'none.fs'))['missing']
    (tmp_path / 'junk.fs').write_bytes(b'nope' * 20)
    assert data_fs_state(str(tmp_path / 'junk.fs'))['error'] == 'not a FileStorage'


def test_promotions_folder_gives_last_ledger_line_state_and_lock(tmp_path):
    (tmp_path / 'ledger.jsonl').write_text(
        json.dumps({'stage': 'test', 'result': 'failed'}) + '\n' + 'torn{\n'
        + json.dumps({'stage': 'test', 'result': 'success', 'by': 'alice'}) + '\n')
    (tmp_path / 'test.json').write_text(json.dumps({'status': 'done', 'step': 'finish',
                                                   'traffic': 'live', 'plan': {'big': 1}}))
    (tmp_path / 'prod.lock').mkdir()
    (tmp_path / 'prod.lock' / 'owner.json').write_text(json.dumps({'by': 'bob'}))
    now = (tmp_path / 'test.json').stat().st_mtime + 5
    found = promotions_status(str(tmp_path), now=now)
    assert found['test']['last']['by'] == 'alice'
    assert found['test']['state'] == {'status': 'done', 'step': 'finish', 'traffic': 'live',
                                      'run_id': None, 'current_step': 'finish', 'age': 5.0}
    # A lock without a heartbeat file counts from when it was taken (its owner.json), as the
    # lock itself decides: alive within the lease.
    lock = found['prod']['lock']
    assert lock['by'] == 'bob' and lock['alive'] is True and lock['heartbeat_age'] <= 6
    assert promotions_status(str(tmp_path), lease=60, now=now + 100)['prod']['lock'][
        'alive'] is False
    assert promotions_status(str(tmp_path / 'missing')) == {}


def test_a_lock_with_an_old_heartbeat_is_not_alive_and_the_step_is_the_current_one(tmp_path):
    (tmp_path / 'test.json').write_text(json.dumps({
        'status': 'running', 'step': 'twin_start', 'events': [
            {'phase': 'twin_start', 'event': 'end', 'at': 1},
            {'phase': 'cutover_to_twin', 'event': 'start', 'at': 2}]}))
    (tmp_path / 'test.lock').mkdir()
    (tmp_path / 'test.lock' / 'owner.json').write_text(json.dumps({'owner': 'carol'}))
    (tmp_path / 'test.lock' / 'heartbeat').write_text('')
    beat = (tmp_path / 'test.lock' / 'heartbeat').stat().st_mtime
    fresh = promotions_status(str(tmp_path), lease=120, now=beat + 10)['test']
    assert fresh['state']['current_step'] == 'cutover_to_twin'
    assert fresh['lock']['alive'] is True and fresh['lock']['heartbeat_age'] == 10.0
    old = promotions_status(str(tmp_path), lease=120, now=beat + 121)['test']['lock']
    assert old['alive'] is False and old['heartbeat_age'] == 121.0


def test_instance_drift_current_link_and_ports(tmp_path):
    inst = tmp_path / 'test'
    (inst / 'etc').mkdir(parents=True)
    (tmp_path / 'releases' / 'aaa').mkdir(parents=True)
    (inst / 'current').symlink_to(tmp_path / 'releases' / 'aaa')
    (inst / 'deployed.json').write_text(json.dumps({'revision': 'bbbbbbbbbb'}))
    (inst / 'etc' / 'zeo.conf').write_text('<zeo>\n  address 127.0.0.1:9001\n</zeo>\n')
    (inst / 'etc' / 'zope-client1.ini').write_text('[server:main]\nport = 9002\n')
    found = instance_status({'instance': 'test', 'dir': str(inst), 'zeo_host': True,
                             'zeo_address': '127.0.0.1:1', 'clients': [
                                 {'id': 'test-client1', 'name': 'client1', 'port': 2,
                                  'url': 'http://127.0.0.1:1'}]}, 0.5,
                            RevisionProof('/', 'release'), manager=None)
    assert found['drift'] == [
        'test/current points at aaa, deployed.json says bbbbbbb',
        'test: zeo.conf listens on port 9001, the inventory says 1',
        'test-client1: zope-client1.ini listens on port 9002, the inventory says 2']
    assert found['zeo_running'] is False and found['data']['missing']
    answer = found['clients']['test-client1']
    assert not answer['ok'] and answer['status'] is None
    assert answer['health_error'] == '/: connection refused (nothing listens there)'
    assert answer['proof_error'] is None
    assert ask('http://127.0.0.1:1/', 0.5)['latency'] is not None
