"""The push page in a real Zope (runwsgi) with Products.ZopeOpsPush installed from the
collection's files, and a small HTTP server standing in for the engine's webhook, capturing
what the page sends (tests/support/push_page.py)."""
from __future__ import annotations

import base64
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from support.ports import free_port
from support.procs import ProcessGroup
from support.push_page import Engine, FakeAwx, PushZope, report

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group('push_page_zope')]

HEX32 = re.compile(r'^[0-9a-f]{32}$')


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


@pytest.fixture(scope='module')
def engine():
    stand_in = Engine()
    yield stand_in
    stand_in.close()


@pytest.fixture(scope='module')
def zope(tmp_path_factory, engine):
    with ProcessGroup() as processes:
        yield PushZope(tmp_path_factory.mktemp('pushzope'), engine, processes)


def call(zope, path, user=None, data=None, method=None):
    """(status, headers, body) of a request to the Zope, as ``user`` (basic auth)."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    request = urllib.request.Request(zope.url + path, data=body, method=method)
    if user:
        pair = '%s:%s' % (user, zope.users[user])
        request.add_header('Authorization', 'Basic ' + base64.b64encode(pair.encode()).decode())
    try:
        with OPENER.open(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def token(zope, user='webdev'):
    _unused, _unused, page = call(zope, '/@@zopeops-push', user)
    return re.search(r'name="_authenticator" value="([0-9a-f]+)"', page).group(1)


def message(page):
    found = re.search(r'<div id="message"[^>]*>(.*?)</div>', page, re.S)
    return found.group(1) if found else ''


def test_grant_is_idempotent(zope):
    first, second = zope.grant
    assert first.strip().endswith('zopeops-push-grant: granted WebDeveloper'), first
    assert second.strip().endswith('zopeops-push-grant: WebDeveloper has it'), second


def test_page_renders_for_a_permitted_user(zope):
    status, _unused, page = call(zope, '/@@zopeops-push', 'webdev')
    assert status == 200
    assert 'Push brandings from dev to beta' in page
    assert 'id="partner-acme"' in page and 'id="partner-globex"' in page
    assert 'not checked yet' in page
    assert zope.secret not in page


@pytest.mark.parametrize('user', ['viewer', None])
def test_page_refuses_a_user_without_the_permission(zope, user):
    status, _unused, page = call(zope, '/@@zopeops-push', user)
    assert status == 401, page[:500]
    assert 'id="partners"' not in page
    status, _unused, _unused = call(zope, '/@@zopeops-push/push', user,
                                    {'partner': 'acme', 'to_stage': 'beta', '_authenticator': 'x'})
    assert status == 401
    status, _unused, _unused = call(zope, '/@@zopeops-push/status?request_id=' + '0' * 32, user)
    assert status == 401


def test_report_endpoint_refuses_a_wrong_secret_and_stores_a_right_one(zope):
    rid = 'a' * 32
    check = report(rid, 'done', action='check', partner='globex',
                   result={'differs': True, 'lines': ['globex/index.html: changed'],
                           'last_push': {'by': 'alice', 'via': 'page', 'result': 'pushed',
                                         'finished_at': '2026-12-01T09:00:00Z'},
                           'target_locked_by': None})
    assert zope.report(check, secret='wrong-' + zope.secret) == 401
    assert zope.report(check, secret='') == 401
    assert zope.report(dict(check, request_id='nothex')) == 400
    assert zope.report(dict(check, state='finished')) == 400
    _unused, _unused, page = call(zope, '/@@zopeops-push', 'webdev')
    assert 'globex/index.html: changed' not in page          # nothing stored by the refusals
    assert zope.report(check) == 204
    _unused, _unused, page = call(zope, '/@@zopeops-push', 'webdev')
    row = page[page.index('id="partner-globex"'):]
    assert 'class="differs">differs' in row and 'globex/index.html: changed' in row
    assert 'alice' in row and 'pushed' in row


def test_push_click_posts_the_contract_request(zope, engine):
    before = len(engine.requests)
    status, headers, page = call(zope, '/@@zopeops-push/push', 'webdev',
                                 {'partner': 'acme', 'to_stage': 'beta',
                                  '_authenticator': token(zope)})
    assert status == 303, message(page)
    sent = engine.wait_requests(before + 1)[before]
    assert sent['path'] == '/push'
    assert sent['headers']['Authorization'] == 'Bearer ' + zope.secret
    assert sent['headers']['Content-Type'] == 'application/json'
    body = sent['json']
    assert set(body) == {'action', 'request_id', 'partner', 'from_stage', 'to_stage', 'user'}
    assert body['action'] == 'push' and body['partner'] == 'acme'
    assert (body['from_stage'], body['to_stage'], body['user']) == ('dev', 'beta', 'webdev')
    assert HEX32.match(body['request_id'])
    assert body['request_id'] in headers['Location']
    rid = body['request_id']
    # The push runs: a second click is told so, and the button is disabled.
    status, _unused, page = call(zope, '/@@zopeops-push/push', 'webdev',
                                 {'partner': 'acme', 'to_stage': 'beta', '_authenticator': token(zope)})
    assert status == 409 and 'runs already' in message(page)
    assert len(engine.requests) == before + 1
    # The engine reports; the status view and the page follow.
    assert zope.report(report(rid, 'running', step='Export acme from dev')) == 204
    status, _unused, data = call(zope, '/@@zopeops-push/status?request_id=' + rid, 'webdev')
    assert status == 200 and '"state": "running"' in data and 'Export acme from dev' in data
    entry = {'stage': 'beta', 'partner': 'acme', 'by': 'webdev', 'via': 'page',
             'result': 'pushed', 'finished_at': '2026-12-07T12:00:00Z'}
    assert zope.report(report(rid, 'done', step='done', result=entry,
                              log='TASK [push] ok\nsecret: ********\n')) == 204
    status, _unused, data = call(zope, '/@@zopeops-push/status?request_id=' + rid, 'webdev')
    assert '"state": "done"' in data and '"final": true' in data
    status, _unused, log = call(zope, '/@@zopeops-push/log?request_id=' + rid, 'webdev')
    assert status == 200 and 'TASK [push] ok' in log
    # Done: the target is free again.
    _unused, _unused, page = call(zope, '/@@zopeops-push', 'webdev')
    row = page[page.index('id="partner-acme"'):page.index('id="partner-globex"')]
    assert 'state-done' in row and 'disabled' not in row


def test_a_push_whose_run_falls_silent_is_shown_lost_and_frees_the_button(zope, engine):
    # The engine's run reported once, then was SIGKILLed: no final report ever comes.
    zope.configure(silence_timeout=2)
    try:
        before = len(engine.requests)
        status, _unused, page = call(zope, '/@@zopeops-push/push', 'webdev',
                                     {'partner': 'globex', 'to_stage': 'prod',
                                      '_authenticator': token(zope)})
        assert status == 303, message(page)
        rid = engine.wait_requests(before + 1)[before]['json']['request_id']
        assert zope.report(report(rid, 'running', partner='globex', to_stage='prod',
                                  step='Import globex into prod')) == 204
        status, _unused, data = call(zope, '/@@zopeops-push/status?request_id=' + rid, 'webdev')
        assert '"state": "running"' in data and '"final": false' in data
        time.sleep(3)
        status, _unused, data = call(zope, '/@@zopeops-push/status?request_id=' + rid, 'webdev')
        assert status == 200 and '"state": "lost"' in data and '"final": true' in data, data
        assert 'Import globex into prod' in data and 'stopped before it ended' in data
        _unused, _unused, page = call(zope, '/@@zopeops-push?to=prod', 'webdev')
        row = page[page.index('id="partner-globex"'):]
        row = row[:row.index('</tr>')]
        assert 'state-lost' in row and 'A push runs' not in row, row
    finally:
        zope.configure(silence_timeout=180)


def test_bad_requests_change_nothing(zope, engine):
    before = len(engine.requests)
    good = {'partner': 'acme', 'to_stage': 'beta', '_authenticator': token(zope)}
    cases = [
        (dict(good, partner='nobody'), 400, "Unknown partner 'nobody'"),
        (dict(good, partner='../etc'), 400, 'is not a partner name'),
        (dict(good, to_stage='dev'), 400, "'dev' is not downstream of dev"),
        (dict(good, _authenticator='0' * 64), 403, 'stale or was not sent by the push page'),
        (dict(good, _authenticator=token(zope, 'admin')), 403, 'stale'),   # another user's
    ]
    for form, status_wanted, text in cases:
        status, _unused, page = call(zope, '/@@zopeops-push/push', 'webdev', form)
        assert status == status_wanted, (form, message(page))
        assert text in message(page), (form, message(page))
    status, _unused, _unused = call(zope, '/@@zopeops-push/push?partner=acme&to_stage=beta', 'webdev')
    assert status == 405                                      # a GET changes nothing either
    assert len(engine.requests) == before


def test_two_clicks_at_once_start_one_push(zope, engine):
    before = len(engine.requests)
    engine.delay = 1.5
    form = {'partner': 'globex', 'to_stage': 'test', '_authenticator': token(zope)}
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(
        call(zope, '/@@zopeops-push/push', 'webdev', form))) for _unused in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        engine.delay = 0.0
    statuses = sorted(status for status, _unused, _unused in answers)
    assert statuses == [303, 409], [(s, message(p)) for s, _unused, p in answers]
    told = [p for s, _unused, p in answers if s == 409][0]
    assert 'A push of globex to test runs already' in message(told)
    assert len(engine.requests) == before + 1


def test_engine_unreachable_is_said_and_nothing_is_queued(zope, engine):
    before = len(engine.requests)
    zope.configure(engine_url='http://127.0.0.1:%d/push' % free_port())   # nobody listens
    try:
        form = {'partner': 'acme', 'to_stage': 'prod', '_authenticator': token(zope)}
        status, _unused, page = call(zope, '/@@zopeops-push/push', 'webdev', form)
        assert status == 503
        assert 'The push was not started: the engine (eda) is not reachable' in message(page)
        assert 'Nothing is queued' in message(page)
        assert zope.secret not in page
        # Nothing holds the target: the same click fails for the same reason, not as "runs".
        status, _unused, page = call(zope, '/@@zopeops-push/push', 'webdev', form)
        assert status == 503, message(page)
    finally:
        zope.configure(engine_url=engine.url)
    _unused, _unused, page = call(zope, '/@@zopeops-push?to=prod', 'webdev')
    row = page[page.index('id="partner-acme"'):page.index('id="partner-globex"')]
    assert 'state-queued' not in row and 'disabled=' not in row
    assert len(engine.requests) == before


def test_awx_path_launches_the_job_template_and_follows_the_job(zope, tmp_path):
    awx = FakeAwx('awx-' + zope.secret[-8:])
    token_file = tmp_path / 'awx-token'
    token_file.write_text(awx.token + '\n')
    zope.configure(engine='awx', awx={'url': awx.url, 'token_file': str(token_file),
                                      'job_template': 'Push branding'})
    try:
        form = {'partner': 'globex', 'to_stage': 'beta', '_authenticator': token(zope)}
        status, headers, page = call(zope, '/@@zopeops-push/push', 'webdev', form)
        assert status == 303, message(page)
        launch = [r for r in awx.requests if r['method'] == 'POST'][0]
        assert launch['path'] == '/api/v2/job_templates/7/launch/'
        assert launch['json']['extra_vars']['push_branding_by'] == 'webdev'
        rid = launch['json']['extra_vars']['push_branding_request_id']
        assert rid in headers['Location']
        awx.job_status = 'running'
        _unused, _unused, data = call(zope, '/@@zopeops-push/status?request_id=' + rid, 'webdev')
        assert '"state": "running"' in data and 'AWX job 42: running' in data
        assert awx.url + '/api/v2/jobs/42/stdout/?format=txt' in data
        awx.job_status = 'successful'
        _unused, _unused, data = call(zope, '/@@zopeops-push/status?request_id=' + rid, 'webdev')
        assert '"state": "done"' in data and '"final": true' in data
        _unused, _unused, page = call(zope, '/@@zopeops-push', 'webdev')
        assert awx.token not in page and zope.secret not in page
    finally:
        zope.configure(engine='eda', awx={})
        awx.close()


def test_a_target_held_by_a_promotion_disables_the_push(zope, engine):
    before = len(engine.requests)
    held = {'action': 'promote', 'run_id': 'promote-20261207T120000Z-42', 'by': 'ops'}
    assert zope.report(report('d' * 32, 'done', action='check', partner='acme', to_stage='test',
                              result={'differs': True, 'lines': ['acme/index_html: changed'],
                                      'last_push': None, 'target_locked_by': held})) == 204
    _status, _unused, page = call(zope, '/@@zopeops-push?to=test', 'webdev')
    row = page[page.index('id="partner-acme"'):page.index('id="partner-globex"')]
    assert 'test is held by a promote (run promote-20261207T120000Z-42, by ops)' in row
    assert 'disabled="disabled"' in row
    status, _unused, page = call(zope, '/@@zopeops-push/push', 'webdev',
                                 {'partner': 'acme', 'to_stage': 'test',
                                  '_authenticator': token(zope)})
    assert status == 409 and 'test is held by a promote' in message(page)
    assert len(engine.requests) == before
    # The next check says it is free again: the button comes back.
    assert zope.report(report('e' * 32, 'done', action='check', partner='acme', to_stage='test',
                              result={'differs': True, 'lines': [], 'last_push': None,
                                      'target_locked_by': None})) == 204
    _status, _unused, page = call(zope, '/@@zopeops-push?to=test', 'webdev')
    row = page[page.index('id="partner-acme"'):page.index('id="partner-globex"')]
    assert 'disabled="disabled"' not in row
