"""http_checks: building checks, judging answers, retrying, and keeping secrets out."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils import http_checks as hc
from ansible_collections.zopeops.stages.plugins.module_utils import redact


def fake_fetch(answers):
    """A fetch answering ``url -> (status, body)`` or raising an exception instance."""
    def fetch(url, headers, auth, timeout, validate_certs, follow_redirects):
        answer = answers[url]
        if callable(answer):
            answer = answer(headers=headers, auth=auth, timeout=timeout)
        if isinstance(answer, Exception):
            raise answer
        return answer
    return fetch


def one(url='http://h/', **kwargs):
    return hc.build_checks([url], **kwargs)[0]


def test_redact_url():
    assert redact.redact_url('http://u:secret@h:8080/x?y=1') == 'http://********@h:8080/x?y=1'
    assert redact.redact_url('http://h/x') == 'http://h/x'


def test_scrubber_removes_secrets_everywhere():
    secrets = redact.secrets_of('pw123', {'Authorization': 'Bearer tok999'},
                                ['http://a:urlpw@h/'])
    scrub = redact.Scrubber(secrets)
    data = {'a': ['x pw123 y', {'b': 'Bearer tok999'}], 'c': 'urlpw and tok999', 'n': 3}
    assert json.dumps(scrub.deep(data)).count('********') == 4
    assert 'pw123' not in json.dumps(scrub.deep(data))


def test_build_checks_names_every_mistake():
    with pytest.raises(hc.CheckSpecError) as info:
        hc.build_checks(['ftp://x/', {'name': 'no-url'}, {'url': 'http://h/', 'body_regex': '('},
                         {'url': 'http://h/', 'colour': 'red'}, 'http://a/', 'http://a/'],
                        expected_revision='abc')
    problems = info.value.problems
    assert len(problems) == 6
    assert any('revision_json_key or revision_regex' in p for p in problems)
    assert any("'ftp://x/' is not an http" in p for p in problems)
    assert any('urls[1] must be' in p for p in problems)
    assert any('not a valid regular expression' in p for p in problems)
    assert any('unknown keys: colour' in p for p in problems)
    assert any('used twice' in p for p in problems)


def test_revision_regex_needs_a_group():
    with pytest.raises(hc.CheckSpecError, match='no group'):
        hc.build_checks(['http://h/'], revision_regex='rev-[0-9]+')


def test_per_url_settings_override_the_global_ones():
    checks = hc.build_checks([{'url': 'http://h/a', 'status_codes': [401], 'name': 'a',
                               'body_regex': 'x', 'host_header': 'site.example'},
                              'http://h/b'], status_codes=[200, 204], body_regex='y')
    assert checks[0].status_codes == [401] and checks[0].body_regex_text == 'x'
    assert checks[0].host_header == 'site.example' and checks[0].name == 'a'
    assert checks[1].status_codes == [200, 204] and checks[1].name == 'http://h/b'


def test_check_once_judges_status_body_latency_and_revision():
    check = one(body_regex='ok', expected_revision='r1', revision_json_key='app.rev')
    body = '{"app": {"rev": "r1"}, "s": "ok"}'
    good = hc.check_once(check, fake_fetch({'http://h/': (200, body)}), {}, None, 5, True)
    assert good['ok'] and good['matched'] and good['revision'] == 'r1' and not good['error']
    bad = hc.check_once(check, fake_fetch({'http://h/': (503, '{"app": {"rev": "r0"}}')}),
                        {}, None, 5, True)
    assert not bad['ok'] and bad['status'] == 503 and bad['revision'] == 'r0'
    assert bad['error'] == ("HTTP 503, expected 200; body does not match 'ok'; "
                            "serves revision r0, expected r1")


def test_revision_problems_are_explained():
    check = one(revision_json_key='revision')
    not_json = hc.check_once(check, fake_fetch({'http://h/': (200, '<html>')}), {}, None, 5,
                             True)
    assert 'not JSON' in not_json['error']
    no_key = hc.check_once(check, fake_fetch({'http://h/': (200, '{"x": 1}')}), {}, None, 5,
                           True)
    assert "no key 'revision'" in no_key['error']


def test_host_header_is_sent():
    seen = {}

    def answer(headers, auth, timeout):
        seen.update(headers)
        return 200, ''
    check = hc.build_checks([{'url': 'http://h/', 'host_header': 'www.example.org'}])[0]
    hc.check_once(check, fake_fetch({'http://h/': answer}), {'X-A': '1'}, None, 5, True)
    assert seen == {'X-A': '1', 'Host': 'www.example.org'}


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_check_until_retries_with_backoff_until_it_passes():
    clock = FakeClock()
    answers = iter([(503, ''), (503, ''), (200, '')])
    result = hc.check_until(one(), deadline=30, request_timeout=5, stop=threading.Event(),
                            clock=clock, sleep=clock.sleep,
                            fetch=lambda *a: next(answers), base_headers={}, auth=None,
                            validate_certs=True)
    assert result['ok'] and result['attempts'] == 3
    assert clock.now == pytest.approx(0.2 + 0.4)


def test_check_until_stops_at_the_deadline_and_keeps_the_informative_error():
    clock = FakeClock()

    def fetch(url, headers, auth, timeout, *rest):
        if timeout < 1:
            clock.now += timeout
            raise TimeoutError('timed out')
        return 503, ''
    result = hc.check_until(one(), deadline=1, request_timeout=1, stop=threading.Event(),
                            clock=clock, sleep=clock.sleep, fetch=fetch, base_headers={},
                            auth=None, validate_certs=True)
    assert not result['ok'] and clock.now <= 1
    assert result['status'] == 503 and result['attempts'] == 2
    assert 'HTTP 503' in result['error'] and 'cut off by the deadline' in result['error']


def test_run_checks_keeps_the_order_and_runs_concurrently():
    def slow(headers, auth, timeout):
        time.sleep(0.3)
        return 200, ''
    urls = ['http://h/%d' % n for n in range(6)]
    started = time.monotonic()
    results = hc.run_checks(hc.build_checks(urls), 5, 5,
                            fetch=fake_fetch({url: slow for url in urls}))
    assert time.monotonic() - started < 1.5                  # 1.8 s one after the other
    assert [r['url'] for r in results] == urls and all(r['ok'] for r in results)


def test_failure_summary_lists_every_failure():
    results = [{'name': 'a', 'url': 'u1', 'ok': True, 'error': None},
               {'name': 'b', 'url': 'u2', 'ok': False, 'error': 'HTTP 500, expected 200'},
               {'name': 'u3', 'url': 'u3', 'ok': False, 'error': 'connection refused'}]
    assert hc.failure_summary(results) == ['b (u2): HTTP 500, expected 200',
                                           'u3: connection refused']


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        status = 200 if self.headers.get('Authorization') == 'Basic ' + hc.basic_auth_token(
            'admin', 'pw') else 401
        body = json.dumps({'revision': 'r5'}).encode()
        self.send_response(status)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize('fetch', [hc.fetch_with_requests, hc.fetch_with_ansible])
def test_both_fetchers_speak_http_with_basic_auth(fetch):
    server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = 'http://127.0.0.1:%d/x' % server.server_address[1]
    try:
        assert fetch(url, {}, ('admin', 'pw'), 5, True, False) == (200, '{"revision": "r5"}')
        assert fetch(url, {}, ('admin', 'wrong'), 5, True, False)[0] == 401
    finally:
        server.shutdown()
        server.server_close()
