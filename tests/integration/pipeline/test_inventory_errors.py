"""A bad inventory is refused by the first play with a message naming the mistake."""
from __future__ import annotations

import shutil

import pytest
import yaml

from support.ansible import run_playbook
from support.paths import REPO

pytestmark = pytest.mark.integration


@pytest.fixture
def inventory(tmp_path):
    dest = tmp_path / 'inventory'
    shutil.copytree(REPO / 'inventories' / 'local', dest)
    return dest


def edit_hosts(inventory, change):
    path = inventory / 'hosts.yml'
    data = yaml.safe_load(path.read_text())
    change(data['all']['children'])
    path.write_text(yaml.safe_dump(data))


def refused(inventory, tmp_path, **extra):
    extra.setdefault('zopeops_sandbox', str(tmp_path / 'sandbox'))
    proc = run_playbook('site.yml', inventory, extra_vars=extra, check=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert 'Traceback' not in output, output
    assert not (tmp_path / 'sandbox').exists(), 'a refused run wrote to the sandbox'
    return output


def test_stage_without_hosts(inventory, tmp_path):
    output = refused(inventory, tmp_path, zopeops_pipeline=['dev', 'beta', 'staging', 'prod'])
    assert ("Stage 'staging' is in zopeops_pipeline but the inventory has no hosts for it"
            in output)


def test_duplicate_port(inventory, tmp_path):
    host_vars = inventory / 'host_vars' / 'test_upgrade-local.yml'
    host_vars.write_text(host_vars.read_text().replace('+ 35', '+ 30'))
    output = refused(inventory, tmp_path, zopeops_port_base=30000)
    assert ('Port 30030 on 127.0.0.1 is given twice: to the ZEO server of test and to the ZEO '
            'server of test_upgrade.') in output


def test_twin_without_zeo_host(inventory, tmp_path):
    edit_hosts(inventory, lambda groups: groups['test_upgrade']['children'].pop(
        'test_upgrade_zeo'))
    output = refused(inventory, tmp_path)
    assert "Group 'test_upgrade_zeo' must hold exactly one host" in output


def test_hosts_in_the_wrong_stage_or_side_are_named_at_once(inventory, tmp_path):
    for name, old, new in (('test-local', 'zopeops_stage: test', 'zopeops_stage: prod'),
                           ('beta-local', 'zopeops_side: live', 'zopeops_side: upgrade')):
        host_vars = inventory / 'host_vars' / ('%s.yml' % name)
        host_vars.write_text(host_vars.read_text().replace(old, new))
    output = ' '.join(refused(inventory, tmp_path).split())
    assert ('Host beta-local says it belongs to stage beta (upgrade side), but the pipeline '
            'dev -> beta -> test -> prod has no such host there: put it into the groups '
            'beta_upgrade_zeo or ..._clients') in output
    assert 'Host test-local says it belongs to stage prod (live side)' in output
