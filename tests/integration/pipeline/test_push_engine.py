"""The push engine on the local pipeline: the real ansible-rulebook that site.yml started on the
conductor (role push_engine), its webhook, and the runs of push_branding.yml it makes.

The reports of each run go where site.yml's engine sends them: the push page on dev, the
source stage (its report endpoint records a request it did not start too), read back through
the page's status and log views.

In file order: the refusals of the webhook (nothing queued, nothing changed), a refusal of the
playbook (an unknown partner, reported as refused), a check (what would change, the last push,
the lock), then two pushes at once under the read and write loads on beta: one runs, the other
is refused by the target's lock, beta serves the new branding and the ledger names the user.
"""
from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import requests

from support import brandings
from support.load import LoadGenerator
from support.procs import wait_for
from support.promotion import assert_loads_clean
from support.writeload import WriteLoad

pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]

ENGINE_PORT_OFFSET = 60  # inventories/local: zopeops_push_engine_port
WRITES = '/_zopeops_writes'

FINAL = ('done', 'failed', 'refused')


class DevPage:
    """The reports of the engine's runs, as dev's push page keeps them (its status and log)."""

    def __init__(self, pipeline):
        self.base = 'http://127.0.0.1:%d/@@zopeops-push' % pipeline.lb_port('dev')
        self.auth = pipeline.admin_auth()

    def status(self, request_id):
        """What the page knows of a request (its last report), or None: no report came."""
        answer = requests.get(self.base + '/status', params={'request_id': request_id},
                              auth=self.auth, timeout=15)
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return answer.json()

    def log(self, request_id):
        answer = requests.get(self.base + '/log', params={'request_id': request_id},
                              auth=self.auth, timeout=15)
        answer.raise_for_status()
        return answer.text

    def final(self, request_id, timeout=0):
        """The request's final report (done/failed/refused), waiting up to timeout."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(request_id)
            if status and status['state'] in FINAL or time.monotonic() >= deadline:
                return status if status and status['state'] in FINAL else None
            time.sleep(0.5)


class Engine:
    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.page = DevPage(pipeline)
        self.url = 'http://127.0.0.1:%d/push' % (pipeline.port_base + ENGINE_PORT_OFFSET)
        self.secret = (pipeline.sandbox / 'secrets' / 'push_secret').read_text().strip()

    def post(self, body, token=None, path='/push'):
        return requests.post(self.url.replace('/push', path), json=body, timeout=15, headers={
            'Authorization': 'Bearer %s' % (self.secret if token is None else token)})

    def request(self, action='push', **fields):
        body = dict({'action': action, 'request_id': uuid.uuid4().hex, 'partner': 'acme',
                     'from_stage': 'dev', 'to_stage': 'beta', 'user': 'webdev.anna'}, **fields)
        return body

    def run(self, body, timeout=300):
        """Post an accepted request and wait for its final report."""
        answer = self.post(body)
        assert answer.status_code == 202, answer.text
        assert answer.json() == {'accepted': True, 'request_id': body['request_id']}
        report = self.page.final(body['request_id'], timeout=timeout)
        assert report is not None, (self.page.status(body['request_id']), self.log_tail())
        return report

    def log(self):
        log = self.pipeline.sandbox / 'lb' / 'push_engine' / 'engine.log'
        return log.read_text() if log.exists() else ''

    def log_tail(self):
        return self.log()[-6000:]


@pytest.fixture(scope='module')
def engine(pipeline):
    brandings.seed(pipeline, 'beta')
    return Engine(pipeline)


def beta_tid(pipeline):
    return brandings.tree(brandings.python_of(pipeline, 'beta'), pipeline.port_base + 20)['last_tid']


def unchanged(pipeline, before, lines):
    assert beta_tid(pipeline) == before
    assert len(pipeline.ledger()) == lines
    assert not list((pipeline.sandbox / 'lb' / 'promotions').glob('*.lock'))


def test_site_yml_runs_the_engine_as_a_supervisord_program(engine):
    # RUNNING once supervisord's startsecs passed.
    wait_for(lambda: engine.pipeline.program_states().get('zopeops-push-engine') == 'RUNNING',
             timeout=60, interval=0.5, what='the push engine RUNNING under supervisord')
    token = engine.pipeline.sandbox / 'lb' / 'push_engine' / 'token'
    assert oct(token.stat().st_mode & 0o777) == '0o600'
    settings = (engine.pipeline.sandbox / 'lb' / 'push_engine' / 'settings.yml').read_text()
    assert engine.secret not in settings and engine.secret not in engine.log_tail()


REFUSALS = [  # (what, change of the request or token/path, status, message)
    ('no token', {'token': ''}, 401, 'Missing or wrong bearer token.'),
    ('wrong token', {'token': 'wrong-' + 'x' * 30}, 401, 'Missing or wrong bearer token.'),
    ('unknown action', {'action': 'delete'}, 400,
     'Field action: must be one of push, check, not "delete"'),
    ('bad partner format', {'partner': '../../etc'}, 400, 'Field partner: must be a partner name'),
    ('bad user', {'user': 'anna\n- by: root'}, 400, 'Field user'),
    ('not downstream', {'from_stage': 'beta', 'to_stage': 'dev'}, 422,
     'Stage dev is not downstream of beta'),
    ('a stage without the page', {'from_stage': 'beta', 'to_stage': 'test'}, 422,
     'Stage test is not downstream of beta'),
    ('other path', {'path': '/hooks/push'}, 404, 'Not found'),
]


def test_the_webhook_refuses_and_nothing_runs(engine):
    before, lines = beta_tid(engine.pipeline), len(engine.pipeline.ledger())
    queued = engine.log().count('push_webhook: queued')
    sent = []
    for what, change, status, message in REFUSALS:
        change = dict(change)
        token, path = change.pop('token', None), change.pop('path', '/push')
        body = engine.request(**change)
        if token == '':
            answer = requests.post(engine.url, json=body, timeout=15)
        else:
            answer = engine.post(body, token=token, path=path)
        assert answer.status_code == status, (what, answer.status_code, answer.text)
        assert message in answer.json()['error'], (what, answer.text)
        sent.append(body['request_id'])
    time.sleep(2)
    assert [engine.page.status(request_id) for request_id in sent] == [None] * len(sent)  # no run
    assert engine.log().count('push_webhook: queued') == queued
    unchanged(engine.pipeline, before, lines)


def test_an_unknown_partner_is_refused_by_the_playbook_and_reported(engine):
    before, lines = beta_tid(engine.pipeline), len(engine.pipeline.ledger())
    body = engine.request(partner='hooli')
    report = engine.run(body)
    assert report['state'] == 'refused', report
    assert report['result']['msg'].startswith("Partner 'hooli' is not in zopeops_partners")
    assert report['step'] == 'Ensure the partner is one the inventory knows.'
    log = engine.page.log(body['request_id'])
    assert log.startswith('PLAY [') and 'TASK [' in log, log[:2000]
    assert engine.secret not in json.dumps(report) + log
    unchanged(engine.pipeline, before, lines)


def test_a_check_reports_the_difference_and_changes_nothing(engine, tmp_path):
    text = '<html><body><p>acme engine check %s</p></body></html>' % uuid.uuid4().hex[:6]
    brandings.edit_acme(engine.pipeline, 'dev', text, 'blob-engine-check', tmp_path)
    before, lines = beta_tid(engine.pipeline), len(engine.pipeline.ledger())
    report = engine.run(engine.request('check'))
    assert report['state'] == 'done' and report['action'] == 'check', report
    result = report['result']
    assert result['differs'] is True, result
    assert result['lines'] == ['beta: Would replace /partners/acme: 0 added, 2 replaced, '
                               '0 removed, 1 unchanged.'], result
    assert result['target_locked_by'] is None
    pushes = [e for e in engine.pipeline.ledger() if e.get('action') == 'push_branding'
              and e.get('partner') == 'acme' and e.get('stage') == 'beta']
    assert result['last_push'] == (pushes[-1] if pushes else None)
    unchanged(engine.pipeline, before, lines)


def test_two_pushes_at_once_one_runs_under_load_the_other_is_refused(engine, tmp_path):
    pipeline = engine.pipeline
    text = '<html><body><p>acme from the page %s</p></body></html>' % uuid.uuid4().hex[:8]
    blob_text = 'blob-page-%s' % uuid.uuid4().hex
    brandings.edit_acme(pipeline, 'dev', text, blob_text, tmp_path)
    lines = len(pipeline.ledger())
    first, second = engine.request(user='webdev.anna'), engine.request(user='webdev.ben')
    base = 'http://127.0.0.1:%d' % pipeline.lb_port('beta')
    with LoadGenerator(base + '/partners/acme', threads=2) as load, \
            WriteLoad(base, auth=pipeline.admin_auth(), threads=2, max_seconds=600,
                      pause=0.15) as writes:
        # The write container exists before the push compares (the first write creates it).
        deadline = time.monotonic() + 60
        while not writes.acknowledged and time.monotonic() < deadline:
            time.sleep(0.2)
        answers = {}
        threads = [threading.Thread(target=lambda b=b: answers.update(
            {b['request_id']: engine.post(b).status_code})) for b in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(answers.values()) == [202, 202], answers
        ends = [engine.page.final(b['request_id'], timeout=400) for b in (first, second)]
    assert all(ends), ([engine.page.status(b['request_id']) for b in (first, second)],
                       engine.log_tail())
    assert sorted(end['state'] for end in ends) == ['done', 'refused'], ends
    done, refused = (ends if ends[0]['state'] == 'done' else ends[::-1])
    by = first['user'] if done['request_id'] == first['request_id'] else second['user']
    said = refused['result']['msg']
    assert 'A branding push of acme of beta' in said and ('by %s' % by) in said, said
    assert 'holds the lock' in said and ('Nothing was pushed' in said or 'changed nothing' in said)

    assert_loads_clean(pipeline, 'beta', load, writes)

    # beta serves the new branding; one ledger line, naming the Zope user, via the page.
    page = requests.get(base + '/partners/acme', timeout=15)
    assert page.status_code == 200 and text in page.text
    tree = brandings.tree(brandings.python_of(pipeline, 'beta'), pipeline.port_base + 20)
    assert tree['acme_text'] == text and tree['acme_blob'] == blob_text
    new = pipeline.ledger()[lines:]
    assert len(new) == 1, new
    entry = new[0]
    assert (entry['action'], entry['result'], entry['partner'], entry['stage']) == (
        'push_branding', 'done', 'acme', 'beta'), entry
    assert (entry['by'], entry['via'], entry['request_id']) == (by, 'page', done['request_id'])
    assert done['result'] == entry, (done['result'], entry)
    log = engine.page.log(done['request_id'])
    assert log.startswith("PLAY [Validate the pipeline and derive each host's instance.]"), log[:500]
    assert len(set(line for line in log.splitlines() if line.startswith('TASK ['))) >= 3, log
    assert not list((pipeline.sandbox / 'lb' / 'promotions').glob('*.lock'))
    assert engine.secret not in json.dumps(ends) + log + engine.page.log(refused['request_id'])
