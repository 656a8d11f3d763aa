"""A web developer uses the push page in a real headless Chromium (Debian's chromium, driven
by Selenium through Debian's chromium-driver: no browser is downloaded).

The engine here is the stand-in of tests/support/push_page.py: it captures the page's request,
and the test posts the reports the engine would (``engine_reports``). The whole-pipeline test
with the real engine (helper eda's rulebook) replaces that one function's callers by waiting
for the real reports; everything the browser does stays the same.
"""
from __future__ import annotations

import os
import shutil

import pytest

from support.browser import browser, text_of
from support.paths import REPO
from support.procs import ProcessGroup, wait_for
from support.push_page import Engine, PushZope, report

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.xdist_group('push_page_browser')]

# The README's picture: written again when ZOPEOPS_UPDATE_SCREENSHOTS=1 (else to the test's
# folder only, so that a test run leaves the checkout as it was).
SCREENSHOT = REPO / 'docs' / 'images' / 'push-page.png'


@pytest.fixture
def zope(tmp_path):
    engine = Engine()
    try:
        with ProcessGroup() as processes:
            yield PushZope(tmp_path, engine, processes)
    finally:
        engine.close()


def engine_reports(zope, request_id, step_seen):
    """What the engine reports while it pushes: a step, then the ledger entry. ``step_seen``
    is called between them (the browser must show the step before the run ends)."""
    assert zope.report(report(request_id, 'running', step='Export acme from dev',
                              log='TASK [Export acme from dev] ok\n')) == 204
    step_seen()
    entry = {'stage': 'beta', 'action': 'push_branding', 'partner': 'acme', 'from_stage': 'dev',
             'result': 'pushed', 'by': 'webdev', 'via': 'page',
             'finished_at': '2026-12-07T12:00:00Z'}
    assert zope.report(report(request_id, 'done', step='Pushed', result=entry,
                              log='TASK [Export acme from dev] ok\nTASK [Import] changed\n')) == 204
    return entry


def engine_checks(zope, request_id, last_push):
    """What the engine reports for a check after the push: acme is the same on beta."""
    assert zope.report(report(request_id, 'done', action='check', step='Compared', result={
        'differs': False, 'lines': [], 'last_push': last_push, 'target_locked_by': None})) == 204


def test_web_developer_pushes_from_the_page(zope):
    from selenium.webdriver.common.by import By
    # The last check said acme differs (what the engine reported before).
    assert zope.report(report('b' * 32, 'done', action='check', step='Compared', result={
        'differs': True, 'lines': ['acme/index_html: changed', 'acme/logo.png: changed'],
        'last_push': None, 'target_locked_by': None})) == 204
    chrome = browser('webdev', zope.users['webdev'])
    try:
        chrome.get(zope.url + '/@@zopeops-push')
        row = chrome.find_element(By.ID, 'partner-acme')
        assert 'differs' in row.find_element(By.CSS_SELECTOR, '.compare').text
        assert 'acme/logo.png: changed' in row.text
        row.find_element(By.CSS_SELECTOR, 'button.push').click()
        confirm = chrome.find_element(By.CSS_SELECTOR, '#partner-acme form.confirm')
        assert "Push acme's branding from dev to beta?" in ' '.join(confirm.text.split())
        confirm.find_element(By.CSS_SELECTOR, 'button.confirm-push').click()
        sent = zope.engine.wait_requests(1, timeout=60)[0]['json']
        assert (sent['action'], sent['partner'], sent['user']) == ('push', 'acme', 'webdev')
        wait_for(lambda: 'request_id=' + sent['request_id'] in chrome.current_url,
                 timeout=60, what='the page after the push')

        def progress():
            return text_of(chrome, '#partner-acme .progress')

        assert 'queued' in progress()
        assert chrome.find_element(By.CSS_SELECTOR, '#partner-acme button.push').get_attribute(
            'disabled')

        def step_seen():
            wait_for(lambda: 'Export acme from dev' in progress(), timeout=60,
                     what='the running step on the page')
            assert 'running' in progress()

        entry = engine_reports(zope, sent['request_id'], step_seen)

        def compare():
            return text_of(chrome, '#partner-acme .compare')

        # The page reloads when the run ends: the result, and the comparison now out of date.
        wait_for(lambda: 'checked before the last push' in compare(), timeout=60,
                 what='the page after the run')
        assert 'done' in progress()
        chrome.find_element(By.CSS_SELECTOR, '#partner-acme button.check').click()
        sent_check = zope.engine.wait_requests(2, timeout=60)[1]['json']
        assert (sent_check['action'], sent_check['partner']) == ('check', 'acme')
        wait_for(lambda: 'checking' in compare(), timeout=60, what='the running check')
        engine_checks(zope, sent_check['request_id'], entry)
        wait_for(lambda: 'same as beta' in compare(), timeout=60, what='the check on the page')
        row = chrome.find_element(By.ID, 'partner-acme')
        assert 'same as beta' in row.find_element(By.CSS_SELECTOR, '.compare').text
        last = row.find_element(By.CSS_SELECTOR, '.last-push').text
        assert 'webdev' in last and 'pushed' in last
        assert not row.find_element(By.CSS_SELECTOR, 'button.push').get_attribute('disabled')
        log = row.find_element(By.CSS_SELECTOR, 'a.log').get_attribute('href')
        assert '/@@zopeops-push/log?request_id=' + sent['request_id'] in log
        shot = zope.dir / 'push-page.png'
        assert chrome.save_screenshot(str(shot)) and shot.stat().st_size > 10000
        if os.environ.get('ZOPEOPS_UPDATE_SCREENSHOTS') == '1':
            shutil.copyfile(shot, SCREENSHOT)
        chrome.get(log)
        assert 'TASK [Import] changed' in chrome.find_element(By.TAG_NAME, 'body').text
    finally:
        chrome.quit()
