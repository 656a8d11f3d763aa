"""The scheduled pack's script (roles/pack/files/zopeops-pack) takes and releases the stage's
lock as promotion_state does, so that a promotion refuses while it packs and it skips a stage
another run holds. ZEO itself is not needed here: the pack is replaced by a stand-in."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import pathlib

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils import promotion

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / 'roles' / 'pack' / 'files' / 'zopeops-pack'


@pytest.fixture
def script():
    loader = importlib.machinery.SourceFileLoader('zopeops_pack', str(SCRIPT))
    spec = importlib.util.spec_from_loader('zopeops_pack', loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def args(tmp_path, state_dir):
    data = tmp_path / 'Data.fs'
    data.write_bytes(b'FS21' + b'x' * 100)
    data.chmod(0o600)
    return ['--stage', 'beta', '--instance', 'beta', '--zeo', '127.0.0.1:1', '--data', str(data),
            '--report', str(tmp_path / 'pack-report.json'), '--state-dir', str(state_dir)]


def test_the_scheduled_pack_holds_the_stage_and_skips_a_held_one(script, tmp_path, monkeypatch):
    state_dir = tmp_path / 'promotions'
    state_dir.mkdir()
    seen = {}

    def pack(parsed, report):
        # While it packs, a promotion of the stage is refused, naming the pack.
        with pytest.raises(promotion.PromotionRefused, match='A pack of beta .run pack-'):
            promotion.acquire(str(state_dir), 'beta', {'run_id': 'promo', 'owner': 'alice'})
        seen['owner'] = json.loads((state_dir / 'beta.lock' / 'owner.json').read_text())
        report.update(size_before=104, size_after=50, bytes_freed=54, last_tid='00' * 8)

    monkeypatch.setattr(script, 'pack', pack)
    assert script.main(args(tmp_path, state_dir)) == 0
    written = json.loads((tmp_path / 'pack-report.json').read_text())
    assert written['result'] == 'packed' and written['how'] == 'schedule', written
    assert seen['owner']['purpose'] == 'pack' and seen['owner']['owner'] == 'schedule'
    assert not (state_dir / 'beta.lock').exists()  # released
    assert (tmp_path / 'pack-report.json').stat().st_mode & 0o777 == 0o600

    promotion.acquire(str(state_dir), 'beta', {'run_id': 'promo', 'owner': 'alice',
                                               'action': 'run', 'started_at': 'now'})
    monkeypatch.setattr(script, 'pack', lambda *a: pytest.fail('packed a held stage'))
    assert script.main(args(tmp_path, state_dir)) == 0
    written = json.loads((tmp_path / 'pack-report.json').read_text())
    assert written['result'] == 'skipped', written
    assert 'held by the run of beta (run promo by alice' in written['reason']
    assert json.loads((state_dir / 'beta.lock' / 'owner.json').read_text())['run_id'] == 'promo'
