"""Issue 25 end to end: a web developer pushes acme's branding from dev's push page, in a real
headless Chromium, through the real engine site.yml started (ansible-rulebook on the
conductor, role push_engine), which runs push_branding.yml and reports back to the page on dev
(push_report callback -> zopeops_push_report through dev's balancer).

The developer edits acme on dev, opens the page, asks for a check and sees "differs", pushes,
follows the run to its end on the page; beta, under the read and acknowledged-write loads
through its balancer, then serves the new branding (0 failed reads, 0 lost writes) and the
ledger names the Zope user who clicked, via the page.
"""
from __future__ import annotations

import textwrap
import uuid

import pytest
import requests

from support import brandings
from support.browser import browser, text_of
from support.load import LoadGenerator
from support.procs import wait_for
from support.promotion import assert_loads_clean
from support.writeload import WriteLoad

pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]

# A web developer of dev: a Zope user with the role the inventory gives the page's permission
# (zopeops_push_role: Manager in inventories/local).
ADD_USER = textwrap.dedent('''\
    import sys, transaction
    name, password = sys.argv[-2], sys.argv[-1]
    if name not in app.acl_users.getUserNames():
        app.acl_users._doAddUser(name, password, ['Manager'], [])
    transaction.commit()
    ''')


def test_web_developer_pushes_acme_from_devs_page_under_load_on_beta(pipeline, tmp_path):
    from selenium.webdriver.common.by import By
    user, password = 'webdev.anna', uuid.uuid4().hex
    brandings.zconsole(pipeline, 'dev', ADD_USER, user, password, tmp_path=tmp_path)
    brandings.seed(pipeline, 'beta')
    text = '<html><body><p>acme, from the page %s</p></body></html>' % uuid.uuid4().hex[:8]
    blob_text = 'blob-from-the-page-%s' % uuid.uuid4().hex
    brandings.edit_acme(pipeline, 'dev', text, blob_text, tmp_path)
    lines = len(pipeline.ledger())
    chrome = browser(user, password)
    beta = 'http://127.0.0.1:%d' % pipeline.lb_port('beta')
    try:
        chrome.get('http://127.0.0.1:%d/@@zopeops-push' % pipeline.lb_port('dev'))

        def compare():
            return text_of(chrome, '#partner-acme .compare')

        def progress():
            return text_of(chrome, '#partner-acme .progress')

        # A check through the engine: the push's own check mode says acme differs on beta.
        chrome.find_element(By.CSS_SELECTOR, '#partner-acme button.check').click()
        wait_for(lambda: 'differs' in compare(), timeout=300, interval=1,
                 what='the check saying acme differs')
        with LoadGenerator(beta + '/partners/acme', threads=2) as reads, \
                WriteLoad(beta, auth=pipeline.admin_auth(), threads=2, max_seconds=600,
                          pause=0.15) as writes:
            wait_for(lambda: writes.acknowledged, timeout=60, what='a first acknowledged write')
            chrome.find_element(By.CSS_SELECTOR, '#partner-acme button.push').click()
            chrome.find_element(By.CSS_SELECTOR,
                                '#partner-acme form.confirm button.confirm-push').click()
            wait_for(lambda: 'running' in progress() or 'done' in progress(), timeout=120,
                     interval=0.5, what='the push running on the page')
            wait_for(lambda: 'done' in progress() or 'failed' in progress()
                     or 'refused' in progress(), timeout=400, interval=1,
                     what='the end of the push on the page')
        assert 'done' in progress(), progress()
        assert_loads_clean(pipeline, 'beta', reads, writes)
        # beta serves the new branding; the ledger names the developer, via the page.
        page = requests.get(beta + '/partners/acme', timeout=15)
        assert page.status_code == 200 and text in page.text
        entry = pipeline.ledger()[lines:]
        assert len(entry) == 1, entry
        assert (entry[0]['action'], entry[0]['result'], entry[0]['by'], entry[0]['via']) == (
            'push_branding', 'done', user, 'page'), entry
        # The progress says done from the page's poll; the row's last push is the page's
        # after the reload that poll triggers when a push ends.
        wait_for(lambda: user in text_of(chrome, '#partner-acme .last-push'), timeout=60,
                 interval=0.5, what='the last push naming %s after the page reloaded' % user)
        row = chrome.find_element(By.ID, 'partner-acme')
        log = row.find_element(By.CSS_SELECTOR, 'a.log').get_attribute('href')
        chrome.get(log)
        body = chrome.find_element(By.TAG_NAME, 'body').text
        assert 'Take the target' in body or 'TASK' in body, body[:2000]
        secret = (pipeline.sandbox / 'secrets' / 'push_secret').read_text().strip()
        assert secret not in body and password not in body
    finally:
        chrome.quit()
