"""The revision proof (docs/applications.md): release, json and regex, with a fake HTTP fetch
and a fake /proc; a failed health page and a misconfigured proof are told apart, and every
mistake names the inventory variable to change."""
from __future__ import annotations

import json
import os

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.zopeops.stages.plugins.filter.pipeline import revision_check
from ansible_collections.zopeops.stages.plugins.module_utils.revision_proof import (
    RevisionProof, proof_problems, release_revision)

REV = 'c0ffee' * 6 + 'abcd'


def fake_fetch(pages):
    """pages: {path: (status, body)}; anything else is 404."""
    def fetch(url, headers, auth, timeout, validate_certs, follow_redirects):
        path = '/' + url.split('/', 3)[3] if url.count('/') >= 3 else '/'
        return pages.get(path, (404, 'not found'))
    return fetch


def fake_proc(tmp_path, pid, cwd):
    (tmp_path / 'proc' / str(pid)).mkdir(parents=True)
    os.symlink(cwd, tmp_path / 'proc' / str(pid) / 'cwd')
    return str(tmp_path / 'proc')


def release(tmp_path, revision=REV):
    folder = tmp_path / 'releases' / revision
    folder.mkdir(parents=True)
    (folder / 'REVISION').write_text(revision + '\n')
    return folder


def test_release_proof_reads_the_release_the_process_started_in(tmp_path):
    proc = fake_proc(tmp_path, 42, release(tmp_path))
    proof = RevisionProof('/', 'release')
    seen = proof.prove('http://127.0.0.1:1', fake_fetch({'/': (200, 'ok')}), expected=REV,
                       pid_of=lambda: 42, proc=proc)
    assert seen['ok'] and seen['revision'] == REV and seen['error'] is None


def test_release_proof_fails_for_a_process_started_outside_a_release(tmp_path):
    (tmp_path / 'instance').mkdir()
    proc = fake_proc(tmp_path, 7, tmp_path / 'instance')
    seen = RevisionProof('/', 'release').prove(
        'http://127.0.0.1:1', fake_fetch({'/': (200, 'ok')}), pid_of=lambda: 7, proc=proc)
    assert not seen['ok'] and seen['health_error'] is None
    assert 'holds no REVISION file' in seen['proof_error']
    assert 'zopeops_revision_proof' in seen['proof_error']


def test_release_proof_names_a_deleted_release_and_a_missing_pid(tmp_path):
    assert 'no pid' in release_revision(None)[1]
    proc = fake_proc(tmp_path, 9, '/srv/releases/abc (deleted)')
    assert 'deleted since it started' in release_revision(9, proc)[1]


def test_a_mismatch_is_not_a_misconfiguration(tmp_path):
    proc = fake_proc(tmp_path, 42, release(tmp_path))
    seen = RevisionProof('/', 'release').prove(
        'http://127.0.0.1:1', fake_fetch({'/': (200, 'ok')}), expected='0' * 40,
        pid_of=lambda: 42, proc=proc)
    assert seen['mismatch'] and seen['proof_error'] == 'serves revision %s, expected %s' % (
        REV, '0' * 40)


def test_json_proof_on_its_own_page_and_the_health_page_separately():
    pages = {'/': (200, '<html/>'), '/@@info': (200, json.dumps({'build': {'rev': REV}}))}
    proof = RevisionProof('/', 'json', '/@@info', json_key='build.rev')
    seen = proof.prove('http://127.0.0.1:1', fake_fetch(pages), expected=REV)
    assert seen['ok'] and seen['revision'] == REV and json.loads(seen['body'])['build']


def test_a_missing_revision_page_is_a_proof_error_naming_the_variables():
    proof = RevisionProof('/', 'json', '/@@zopeops-info', json_key='revision')
    seen = proof.prove('http://127.0.0.1:1', fake_fetch({'/': (200, 'Plone')}))
    assert seen['health_error'] is None and not seen['ok']
    assert seen['proof_error'].startswith('the revision page /@@zopeops-info answers HTTP 404, not 200; set')
    assert 'set zopeops_revision_json_path and zopeops_revision_json_key' in seen['proof_error']
    assert 'zopeops_revision_proof to release' in seen['proof_error']


def test_an_unhealthy_client_is_a_health_error():
    seen = RevisionProof('/Plone', 'release').prove('http://127.0.0.1:1', fake_fetch({}))
    assert seen['health_error'] == '/Plone: HTTP 404, expected 200'
    assert seen['proof_error'] is None and 'zopeops_health_path' in seen['error']


def test_regex_proof_on_the_health_page_asks_once():
    asked = []
    fetch = fake_fetch({'/': (200, '<meta name="revision" content="%s">' % REV)})

    def counting(url, *args):
        asked.append(url)
        return fetch(url, *args)
    proof = RevisionProof('/', 'regex', None, regex=r'name="revision" content="(\w+)"')
    seen = proof.prove('http://127.0.0.1:1', counting, expected=REV)
    assert seen['ok'] and seen['revision'] == REV and asked == ['http://127.0.0.1:1/']


@pytest.mark.parametrize('args, message', [
    (('git', '/'), 'zopeops_revision_proof is \'git\'; choose one of release, json, regex'),
    (('release', 'Plone'), 'zopeops_health_path is \'Plone\''),
    (('json', '/', ''), 'zopeops_revision_proof is json, so zopeops_revision_json_path'),
    (('json', '/', '/@@info', ''), 'so zopeops_revision_json_key must name the key'),
    (('regex', '/', '', None, 'r(.*)'), 'so zopeops_revision_page must be the path'),
    (('regex', '/', '/x', None, ''), 'so zopeops_revision_regex must be a regular expression'),
])
def test_every_mistake_names_its_variable(args, message):
    assert any(message in problem for problem in proof_problems(*args))


def test_the_filter_gives_the_module_options_and_refuses_a_bad_setting():
    settings = {'proof': 'json', 'health_path': '/', 'json_path': '/@@zopeops-info',
                'json_key': 'revision', 'page': '', 'regex': ''}
    assert revision_check(settings) == {
        'health_path': '/', 'revision_proof': 'json', 'revision_page': '/@@zopeops-info',
        'revision_json_key': 'revision', 'revision_regex': None}
    assert revision_check(dict(settings, proof='release'))['revision_page'] is None
    with pytest.raises(AnsibleFilterError, match='zopeops_revision_json_path'):
        revision_check(dict(settings, json_path=''))
