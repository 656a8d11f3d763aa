"""zope_healthcheck against a real Zope 6 client and a tiny local HTTP server."""
from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support.modules import run_module
from support.paths import VENV_BIN
from support.ports import free_port, port_is_free
from support.procs import ProcessGroup, wait_for

from .conftest import make_zope

pytestmark = pytest.mark.integration

PASSWORD = 'pw-' + secrets.token_hex(12)


class Handler(BaseHTTPRequestHandler):
    counts = {}

    def log_message(self, *args):
        pass

    def _send(self, status, body, content_type='text/plain'):
        data = body.encode()
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass                                     # the client gave up: that is the test

    def do_GET(self):
        path = self.path
        count = self.counts[path] = self.counts.get(path, 0) + 1
        if path == '/ok':
            self._send(200, 'OK all good')
        elif path == '/info':
            self._send(200, json.dumps({'revision': 'abc123', 'build': {'revision': 'def456'}}),
                       'application/json')
        elif path == '/html':
            self._send(200, '<meta name="revision" content="r-789">')
        elif path.startswith('/slow'):
            time.sleep(1.0)
            self._send(200, 'slow but fine')
        elif path == '/hang':
            time.sleep(8)
            self._send(200, 'too late')
        elif path == '/down':
            self._send(503, 'Service Unavailable')
        elif path == '/flaky':
            self._send(200 if count >= 3 else 503, 'attempt %d' % count)
        elif path == '/echo-auth':
            # A server that reflects credentials: they must still not reach our results.
            self._send(500, 'you sent %s' % self.headers.get('Authorization'))
        else:
            self._send(404, 'not found')


@pytest.fixture(scope='module')
def web():
    server = ThreadingHTTPServer(('127.0.0.1', free_port()), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield 'http://127.0.0.1:%d' % server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope='module')
def zope(tmp_path_factory):
    """A real Zope 6 WSGI client on a local filestorage, started and stopped by PID."""
    port = free_port()
    ini = make_zope(tmp_path_factory.mktemp('zope') / 'instance', port, password=PASSWORD)
    with ProcessGroup() as group:
        proc = group.start([str(VENV_BIN / 'runwsgi'), str(ini)],
                           log_path=str(ini.parent / 'runwsgi.out'))
        wait_for(lambda: proc.poll() is not None or not port_is_free(port), timeout=60,
                 what='Zope to listen on %d' % port)
        assert proc.poll() is None, (ini.parent / 'runwsgi.out').read_text()
        yield 'http://127.0.0.1:%d' % port


def check(args, check_mode=False):
    result = run_module('zope_healthcheck', args, check=check_mode)
    assert result['changed'] is False
    return result


def test_real_zope_root_and_manage_page_with_basic_auth(zope):
    result = check({'urls': [
        {'url': zope + '/', 'name': 'root', 'body_regex': '(?i)zope'},
        {'url': zope + '/manage_main', 'name': 'zmi'},
    ], 'url_username': 'admin', 'url_password': PASSWORD, 'deadline': 30}, check_mode=True)
    assert result['rc'] == 0, result
    by_name = {item['name']: item for item in result['results']}
    assert by_name['root']['ok'] and by_name['root']['matched'] is True
    assert by_name['zmi']['status'] == 200
    assert PASSWORD not in json.dumps(result) and PASSWORD not in result['_stderr']


def test_real_zope_refuses_without_auth_and_is_named(zope):
    result = check({'urls': [{'url': zope + '/manage_main', 'name': 'zmi'}], 'deadline': 1})
    assert result['failed']
    assert result['results'][0]['status'] == 401
    assert 'zmi' in result['msg'] and 'HTTP 401, expected 200' in result['msg']


def test_urls_are_checked_concurrently(web):
    result = check({'urls': [web + '/slow%d' % n for n in range(5)], 'deadline': 20})
    assert result['rc'] == 0, result
    assert all(item['ok'] for item in result['results'])
    assert result['elapsed'] < 3, 'five 1-second URLs took %.1fs: not concurrent' % (
        result['elapsed'])


def test_body_regex_and_max_latency(web):
    result = check({'urls': [
        {'url': web + '/ok', 'name': 'good'},
        {'url': web + '/ok', 'name': 'wrong-body', 'body_regex': 'nope'},
        {'url': web + '/slow-latency', 'name': 'slow', 'body_regex': 'fine'},
    ], 'body_regex': '^OK', 'max_latency': 0.5, 'deadline': 2})
    by_name = {item['name']: item for item in result['results']}
    assert by_name['good']['ok'] and by_name['good']['matched'] is True
    assert by_name['wrong-body']['matched'] is False
    assert "does not match 'nope'" in by_name['wrong-body']['error']
    assert 'max_latency' in by_name['slow']['error']
    assert result['failed'] and 'wrong-body' in result['msg'] and 'slow' in result['msg']
    assert 'good' not in ' '.join(result['failed_urls'])


def test_revision_from_json_key_and_regex(web):
    ok = check({'urls': [web + '/info'], 'revision_json_key': 'revision',
                'expected_revision': 'abc123'})
    assert ok['rc'] == 0 and ok['results'][0]['revision'] == 'abc123'
    dotted = check({'urls': [web + '/info'], 'revision_json_key': 'build.revision'})
    assert dotted['results'][0]['revision'] == 'def456'
    regex = check({'urls': [web + '/html'], 'revision_regex': 'content="([^"]+)"',
                   'expected_revision': 'r-789'})
    assert regex['rc'] == 0 and regex['results'][0]['revision'] == 'r-789'
    wrong = check({'urls': [{'url': web + '/info', 'name': 'client9'}],
                   'revision_json_key': 'revision', 'expected_revision': 'ffff', 'deadline': 1})
    assert wrong['failed']
    assert 'client9' in wrong['msg'] and 'serves revision abc123, expected ffff' in wrong['msg']


def test_every_failing_url_is_named_with_its_reason(web):
    closed = 'http://127.0.0.1:%d/' % free_port()
    result = check({'urls': [web + '/ok', web + '/down', closed], 'deadline': 1.5})
    assert result['failed']
    assert len(result['failed_urls']) == 2
    assert web + '/down' in result['msg'] and 'HTTP 503' in result['msg']
    assert closed in result['msg'] and 'connection refused' in result['msg']
    down = result['results'][1]
    assert down['attempts'] >= 2                     # retried until the deadline


def test_failing_url_is_retried_until_it_passes(web):
    result = check({'urls': [web + '/flaky'], 'deadline': 20})
    assert result['rc'] == 0, result
    assert result['results'][0]['attempts'] >= 3


def test_deadline_is_honoured(web):
    started = time.monotonic()
    result = check({'urls': [web + '/hang'], 'deadline': 2, 'request_timeout': 30})
    elapsed = time.monotonic() - started
    assert result['failed'] and 'no answer before the deadline' in result['results'][0]['error']
    assert 1.9 <= result['elapsed'] < 3, 'deadline 2s, the checks took %.1fs' % result['elapsed']
    assert elapsed < 15                              # the module process as a whole, on a busy host


def test_credentials_never_appear_in_the_output(web):
    token = 'tok-' + secrets.token_hex(12)
    url_secret = 'urlpw-' + secrets.token_hex(8)
    host = web.split('//', 1)[1]
    result = check({'urls': [web + '/echo-auth',
                             'http://admin:%s@%s/down' % (url_secret, host)],
                    'url_username': 'admin', 'url_password': PASSWORD,
                    'headers': {'X-Api-Key': token}, 'deadline': 1})
    assert result['failed']
    whole = json.dumps(result)
    for secret in (PASSWORD, token, url_secret):
        assert secret not in whole
    assert '********@' in whole                      # the URL is shown, its password is not
