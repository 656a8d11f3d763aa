"""A second application from a copy of inventories/local with only documented variables
changed (docs/applications.md, section 7): plain Zope from a requirements file, no view and
no code for the collection, its site created by its own init script, its revision proven by
the default proof (release). The copy lives outside the checkout and finds its sandbox from
ZOPEOPS_SANDBOX. Only dev (and the balancer) is deployed: the other stages are named by
site.yml's warning for a frontend with no healthy backend.

No promotion runs here (a promotion test needs the example app's write view for its write
load), so no read or write load either: this test is about the contract, not the cutover.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import requests
import yaml

from support.ansible import playbook_command
from support.paths import REPO
from support.ports import free_port_block

pytestmark = [pytest.mark.integration, pytest.mark.pipeline,
              pytest.mark.xdist_group('second-app')]

CREATE_SITE = '''\
"""Creates the site: a folder /site with a page (run once by zopeops_init_script)."""
import sys

import transaction
from OFS.Folder import manage_addFolder
from Products.PageTemplates.ZopePageTemplate import manage_addPageTemplate

title = sys.argv[1]
manage_addFolder(app, 'site', title=title)  # noqa: F821 - zconsole binds app
manage_addPageTemplate(app.site, 'index_html', text='<p>%s is served</p>' % title)  # noqa: F821
transaction.commit()
print('site created: ' + title)
'''


def git(*args, cwd):
    return subprocess.run(['git', *args], cwd=cwd, capture_output=True, text=True,
                          check=True).stdout.strip()


def second_app(tmp_path):
    """A bare repository holding pins and an init script only; returns (url, commit)."""
    work = tmp_path / 'plain-zope'
    (work / 'scripts').mkdir(parents=True)
    pins = [line for line in (REPO / 'examples' / 'zopeapp' / 'requirements.txt')
            .read_text().splitlines() if line and not line.startswith('#')]
    (work / 'requirements.txt').write_text('\n'.join(pins) + '\n')
    (work / 'scripts' / 'create_site.py').write_text(CREATE_SITE)
    git('init', '-q', '-b', 'main', cwd=work)
    git('add', '-A', cwd=work)
    git('-c', 'user.name=t', '-c', 'user.email=t@example.org', 'commit', '-qm', 'Plain Zope',
        cwd=work)
    commit = git('rev-parse', 'HEAD', cwd=work)
    bare = tmp_path / 'plain-zope.git'
    subprocess.run(['git', 'clone', '-q', '--bare', str(work), str(bare)], check=True)
    return str(bare), commit


def copied_inventory(tmp_path, app_repo):
    """inventories/local without the demo, and the documented settings of the second app."""
    inventory = tmp_path / 'inventory'
    shutil.copytree(REPO / 'inventories' / 'local', inventory)
    (inventory / 'group_vars' / 'demo.yml').unlink()
    hosts = yaml.safe_load((inventory / 'hosts.yml').read_text())
    del hosts['all']['children']['demo']
    (inventory / 'hosts.yml').write_text(yaml.safe_dump(hosts))
    with open(inventory / 'group_vars' / 'all.yml', 'a') as handle:
        handle.write(yaml.safe_dump({
            'zopeops_app_repo': app_repo,
            'app_release_install_source': False,
            'zopeops_health_path': '/site/',
        }))
    with open(inventory / 'host_vars' / 'dev-local.yml', 'a') as handle:
        handle.write(yaml.safe_dump({
            'zopeops_init_script': 'scripts/create_site.py',
            'zopeops_init_when_missing': '/site',
            'zopeops_init_args': ['Plain Zope'],
        }))
    return inventory


def run(playbook, inventory, sandbox, port_base, *args):
    argv, env = playbook_command(playbook, inventory, {'zopeops_port_base': port_base},
                                 args=args)
    env = dict(env, ZOPEOPS_SANDBOX=str(sandbox))
    return subprocess.run(argv, cwd=str(inventory.parent), capture_output=True, text=True,
                          env=env, timeout=1200, check=False)


def said(proc):
    return ' '.join((proc.stdout + proc.stderr).split())


def test_a_copied_inventory_runs_a_second_application(tmp_path):
    sandbox = (tmp_path / 'sandbox').resolve()
    app_repo, commit = second_app(tmp_path)
    inventory = copied_inventory(tmp_path, app_repo)
    text = ''.join(p.read_text() for p in inventory.rglob('*.yml'))
    for demo_setting in ('zopeops_demo_app', 'ZOPEOPS_FAULT_FILE', 'seed_demo_content',
                         'zopeops-info', 'app.git'):
        assert demo_setting not in text, demo_setting
    # Between the pipelines' blocks and Plone's, below the ephemeral ports (support/ports.py).
    base = free_port_block(61, start=25000, stop=27400)  # 60: the push engine
    try:
        site = run('site.yml', inventory, sandbox, base, '--limit', 'dev-local:lb-local')
        out = said(site)
        assert site.returncode == 0, site.stdout[-8000:] + site.stderr[-3000:]
        assert (sandbox / 'dev' / 'current' / 'REVISION').read_text().strip() == commit
        assert 'site created: Plain Zope' in out and 'zopeops-init: ran ' in out
        # dev serves its site through HAProxy; the stages not deployed are named, with URLs.
        page = requests.get('http://127.0.0.1:%d/site/' % base, timeout=10)
        assert page.status_code == 200 and 'Plain Zope is served' in page.text
        assert 'Stage dev has no healthy backend' not in out
        for offset, stage in ((1, 'beta'), (2, 'test'), (3, 'prod')):
            assert ('Stage %s has no healthy backend' % stage) in out, out[-5000:]
            assert 'so http://127.0.0.1:%d/site/ answers 503' % (base + offset) in out

        # status.yml proves dev's revision by its release, with no -e.
        status_dir = tmp_path / 'status'
        status = run('status.yml', inventory, sandbox, base, '-e',
                     json.dumps({'status_dir': str(status_dir), 'status_fail_unhealthy': False}))
        assert status.returncode == 0, status.stdout[-8000:]
        report = json.loads((status_dir / 'status.json').read_text())
        dev = next(stage for stage in report['stages'] if stage['name'] == 'dev')
        live = next(side for side in dev['sides'] if side['side'] == 'live')
        assert [c['revision'] for c in live['clients']] == [commit], live
        assert all(c['ok'] for c in live['clients']), live
    finally:
        subprocess.run(['python3', str(REPO / 'scripts' / 'sandbox-stop'), str(sandbox)],
                       timeout=180, check=False)
