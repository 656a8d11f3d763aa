"""One redaction for every module: user:password@ of a URL never reaches an output, an error
or a file (status.json/html, the promotion's state and ledger, pipeline_status's result)."""
from __future__ import annotations

import json

from ansible_collections.zopeops.stages.plugins.module_utils import promotion
from ansible_collections.zopeops.stages.plugins.module_utils.redact import (
    Scrubber, redact_deep, redact_text, redact_url)

from support.modules import run_module

SECRET = 'tok3n-s3cret'


def test_redact_text_finds_every_url_with_credentials():
    text = ("fatal: could not read from https://deploy:%s@git.example.com/site.git and "
            "ssh://git@host:22/x.git; mail a@b.example; http://h/x stays" % SECRET)
    assert redact_text(text) == (
        'fatal: could not read from https://********@git.example.com/site.git and '
        'ssh://********@host:22/x.git; mail a@b.example; http://h/x stays')
    assert redact_url('https://u:%s@h:8443/p?q=1' % SECRET) == 'https://********@h:8443/p?q=1'
    assert redact_deep({'a': ['x https://u:%s@h/' % SECRET, 3], 'b': None}) == {
        'a': ['x https://********@h/', 3], 'b': None}
    assert Scrubber([SECRET]).text('token %s in https://u:p@h/' % SECRET) == \
        'token ******** in https://********@h/'


def test_pipeline_status_never_returns_the_credentials_of_a_probe():
    result = run_module('pipeline_status', {'probes': [
        {'name': 'dev', 'url': 'http://admin:%s@127.0.0.1:9/' % SECRET}], 'timeout': 0.5})
    assert result['rc'] == 0, result
    assert SECRET not in json.dumps(result)
    assert result['probes']['dev']['url'] == 'http://********@127.0.0.1:9/'


def test_the_promotion_state_and_ledger_hold_no_credentials(tmp_path):
    owner = {'run_id': 'r1', 'by': 'alice', 'controller': 'c', 'pid': 1}
    promotion.acquire(str(tmp_path), 'test', owner)
    failure = 'git clone https://deploy:%s@git.example.com/site.git failed' % SECRET
    promotion.start_state(str(tmp_path), 'test', {}, {'status': 'running', 'why': failure}, 'r1')
    promotion.update_state(str(tmp_path), 'test', 'r1', {'failure': {'message': failure}})
    promotion.append_ledger(str(tmp_path), {'stage': 'test', 'message': failure})
    for path in tmp_path.rglob('*'):
        if path.is_file():
            assert SECRET not in path.read_text(), path
    assert 'https://********@git.example.com' in (tmp_path / 'ledger.jsonl').read_text()
