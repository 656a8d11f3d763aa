"""zope_healthcheck: arguments are validated with every mistake named; read-only results."""
from __future__ import annotations

import json
import socket

import pytest

from support.modules import run_module


def closed_url():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return 'http://127.0.0.1:%d/' % port


@pytest.mark.parametrize('args, message', [
    ({'urls': []}, 'urls is empty'),
    ({'urls': ['http://h/'], 'expected_revision': 'x'}, 'needs revision_json_key'),
    ({'urls': ['http://h/'], 'revision_json_key': 'a', 'revision_regex': '(a)'},
     'mutually exclusive'),
    ({'urls': ['http://h/'], 'deadline': 0}, 'must be positive'),
    ({'urls': [{'url': 'http://h/', 'body_regex': '['}]}, 'not a valid regular expression'),
])
def test_bad_arguments_are_refused(args, message):
    result = run_module('zope_healthcheck', args)
    assert result['failed'] and message in result['msg']


def test_failure_is_reported_with_url_and_reason_and_no_secret():
    url = closed_url()
    result = run_module('zope_healthcheck', {
        'urls': [{'url': url, 'name': 'client7'}], 'deadline': 0.5,
        'url_username': 'admin', 'url_password': 'hunter2-secret',
        'headers': {'Authorization': 'Bearer abc-token-xyz'}}, check=True)
    assert result['failed'] and result['changed'] is False
    assert 'client7 (%s): connection refused' % url in result['msg']
    assert result['failed_urls'] == ['client7 (%s): connection refused (nothing listens '
                                     'there)' % url]
    whole = json.dumps(result)
    assert 'hunter2-secret' not in whole and 'abc-token-xyz' not in whole
