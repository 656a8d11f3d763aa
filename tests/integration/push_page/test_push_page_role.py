"""The role push_page for real (ansible-playbook): the product copied for app_release, the
page's configuration and secret beside an instance's clients, idempotent, the secret never in
the output; off where the inventory did not turn it on; a clear refusal when it lacks what its
engine needs. (The grant script it runs is the one tests/integration/push_page's Zope runs.)"""
from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess

import pytest

from support.ansible import recap
from support.paths import ANSIBLE_PLAYBOOK, REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAYBOOK = """\
- name: The push page's two entry points, as site.yml runs them.
  hosts: all
  gather_facts: false
  tasks:
    - name: Product.
      ansible.builtin.include_role:
        name: zopeops.stages.push_page
        tasks_from: product.yml
    - name: Show what app_release will install.
      ansible.builtin.debug:
        msg: "extras={{ zopeops_release_extra_packages | default([]) | to_json }}"
    - name: Configuration.
      ansible.builtin.include_role:
        name: zopeops.stages.push_page
"""


def run(tmp_path, **variables):
    secret = variables.setdefault('zopeops_push_secret', 'role-' + secrets.token_hex(16))
    base = {'ansible_connection': 'local', 'ansible_python_interpreter': os.sys.executable,
            'zopeops_root': str(tmp_path / 'root'), 'zopeops_stage': 'dev',
            'zopeops_side': 'live', 'zopeops_clients': [{'name': 'client1', 'port': 1}],
            'zopeops_model': {'pipeline': ['dev', 'beta', 'test', 'prod']},
            'zopeops_instance_dir': str(tmp_path / 'root' / 'dev'),
            'zopeops_push_engine_host': '127.0.0.1', 'zopeops_push_engine_port': 18460,
            'zopeops_partners': [{'name': 'acme', 'pages': ['']}, {'name': 'globex', 'pages': []}],
            'push_page_grant': False}
    base.update(variables)
    (tmp_path / 'root' / 'dev' / 'etc').mkdir(parents=True, exist_ok=True)   # zope_client's
    (tmp_path / 'play.yml').write_text(PLAYBOOK)
    (tmp_path / 'inventory.ini').write_text('dev-local\n')
    argv = [str(ANSIBLE_PLAYBOOK), '-v', '-i', str(tmp_path / 'inventory.ini'),
            str(tmp_path / 'play.yml'), '-e', json.dumps(base)]
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1')
    proc = subprocess.run(argv, cwd=str(REPO), capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert not secret or secret not in proc.stdout + proc.stderr
    return proc


def test_role_configures_the_page_once(tmp_path):
    secret = 'role-' + secrets.token_hex(16)
    first = run(tmp_path, zopeops_push_secret=secret)
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    product = tmp_path / 'root' / 'push_page' / 'Products.ZopeOpsPush'
    assert (product / 'Products' / 'ZopeOpsPush' / 'configure.zcml').is_file()
    assert 'extras=[\\"%s\\"]' % product in first.stdout or 'extras=["%s"]' % product in first.stdout
    etc = tmp_path / 'root' / 'dev' / 'etc'
    config = json.loads((etc / 'zopeops-push.json').read_text())
    assert config == {
        'stage': 'dev', 'downstream': ['beta', 'test', 'prod'], 'engine': 'eda',
        'engine_url': 'http://127.0.0.1:18460/push', 'secret_file': str(etc / 'zopeops-push.secret'),
        'awx': {}, 'log_url_base': None, 'partners': ['acme', 'globex'],
        'partners_path': '/partners', 'pending_timeout': 7200, 'silence_timeout': 180}
    assert (etc / 'zopeops-push.secret').read_text() == secret + '\n'
    assert stat.S_IMODE((etc / 'zopeops-push.secret').stat().st_mode) == 0o600
    assert stat.S_IMODE((etc / 'zopeops-push.json').stat().st_mode) == 0o640
    assert (etc / 'zopeops-push-grant.py').is_file()
    # The product reads this very file.
    import sys
    sys.path.insert(0, str(product))
    try:
        from Products.ZopeOpsPush import config as cfg
        assert cfg.load_config(str(etc / 'zopeops-push.json'))['downstream'][0] == 'beta'
    finally:
        sys.path.remove(str(product))
    again = run(tmp_path, zopeops_push_secret=secret)
    assert again.returncode == 0
    assert recap(again.stdout)['dev-local']['changed'] == 0, again.stdout[-5000:]


def test_role_writes_the_awx_token_for_engine_awx(tmp_path):
    token = 'awx-' + secrets.token_hex(12)
    proc = run(tmp_path, zopeops_push_engine='awx', zopeops_push_awx_url='https://awx.example.org',
               zopeops_push_awx_token=token, zopeops_stage='beta',
               zopeops_push_page_stages=['beta'])
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert token not in proc.stdout + proc.stderr
    etc = tmp_path / 'root' / 'dev' / 'etc'
    config = json.loads((etc / 'zopeops-push.json').read_text())
    assert config['engine'] == 'awx' and config['engine_url'] is None
    assert config['downstream'] == ['test', 'prod'] and config['stage'] == 'beta'
    assert config['awx'] == {'url': 'https://awx.example.org', 'job_template': 'Push branding',
                             'token_file': str(etc / 'zopeops-push-awx.token')}
    assert (etc / 'zopeops-push-awx.token').read_text() == token + '\n'


@pytest.mark.parametrize('variables', [
    {'zopeops_stage': 'beta'},                                  # not a page stage
    {'zopeops_push_secret': ''},                                # the inventory did not turn it on
])
def test_role_does_nothing_where_the_page_is_off(tmp_path, variables):
    proc = run(tmp_path, **variables)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert 'extras=[]' in proc.stdout
    assert not (tmp_path / 'root' / 'push_page').exists()
    assert not (tmp_path / 'root' / 'dev' / 'etc' / 'zopeops-push.json').exists()


def test_a_twin_gets_the_product_in_its_release_but_no_page(tmp_path):
    # The twin serves its stage during a promotion: its release holds the product (so that the
    # release the stage takes back has it), but only the live side is configured and granted.
    proc = run(tmp_path, zopeops_side='upgrade')
    assert proc.returncode == 0, proc.stdout[-5000:]
    product = tmp_path / 'root' / 'push_page' / 'Products.ZopeOpsPush'
    assert 'extras=[\\"%s\\"]' % product in proc.stdout or 'extras=["%s"]' % product in proc.stdout
    assert not (tmp_path / 'root' / 'dev' / 'etc' / 'zopeops-push.json').exists()


def test_role_refuses_an_engine_without_its_settings(tmp_path):
    proc = run(tmp_path, zopeops_push_engine='awx')
    assert proc.returncode != 0
    assert 'with awx zopeops_push_awx_url and zopeops_push_awx_token' in proc.stdout
    assert not (tmp_path / 'root' / 'dev' / 'etc' / 'zopeops-push.json').exists()
