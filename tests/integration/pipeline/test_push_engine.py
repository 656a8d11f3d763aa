"""The push engine on the local pipeline: the real ansible-rulebook that site.yml started on the
conductor (role push_engine), its webhook, and the runs of push_branding.yml it makes.

The reports of each run go to a stand-in for the push page (support/push_reports.py): the
engine is given its URL through its environment (push_branding_report_url, the local
inventory) for this module, and put back as site.yml left it at the end.

In file order: the refusals of the webhook (nothing queued, nothing changed), a refusal of the
playbook (an unknown partner, reported as refused), a check (what would change, the last push,
the lock), then two pushes at once under the read and write loads on beta: one runs, the other
is refused by the target's lock, beta serves the new branding and the ledger names the user.
"""
from __future__ import annotations

import json
import textwrap
import threading
import time
import uuid

import pytest
import requests

from support import brandings
from support.ansible import run_playbook
from support.load import LoadGenerator
from support.procs import wait_for
from support.promotion import assert_loads_clean
from support.push_reports import ReportSink
from support.writeload import WriteLoad

pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.xdist_group('pipeline')]

ENGINE_PORT_OFFSET = 60  # inventories/local: zopeops_push_engine_port
WRITES = '/_zopeops_writes'

# The push engine alone, as site.yml's play runs it (the pipeline's facts first).
ENGINE_PLAYBOOK = textwrap.dedent('''\
    - name: Validate the pipeline and derive each host's instance.
      hosts: all
      gather_facts: false
      roles:
        - zopeops.stages.pipeline

    - name: Ensure the push engine runs on the conductor.
      hosts: lb[0]
      gather_facts: false
      roles:
        - zopeops.stages.push_engine
    ''')


class Engine:
    def __init__(self, pipeline, sink):
        self.pipeline = pipeline
        self.sink = sink
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
        report = self.sink.final(body['request_id'], timeout=timeout)
        assert report is not None, (self.sink.of(body['request_id']), self.log_tail())
        return report

    def log(self):
        log = self.pipeline.sandbox / 'lb' / 'push_engine' / 'engine.log'
        return log.read_text() if log.exists() else ''

    def log_tail(self):
        return self.log()[-6000:]


def apply_engine(pipeline, tmp_path, environment):
    book = tmp_path / 'engine.yml'
    book.write_text(ENGINE_PLAYBOOK)
    proc = run_playbook(str(book), pipeline.inventory, dict(pipeline.extra_vars, **{
        'push_engine_environment': dict({'ZOPEOPS_SANDBOX': str(pipeline.sandbox),
                                         'ZOPEOPS_PORT_BASE': str(pipeline.port_base)},
                                        **environment)}))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope='module')
def engine(pipeline, tmp_path_factory):
    brandings.seed(pipeline, 'beta')
    tmp_path = tmp_path_factory.mktemp('engine')
    secret = (pipeline.sandbox / 'secrets' / 'push_secret').read_text().strip()
    with ReportSink(secret) as sink:
        apply_engine(pipeline, tmp_path, {'ZOPEOPS_PUSH_REPORT_URL': sink.url})
        try:
            yield Engine(pipeline, sink)
        finally:
            apply_engine(pipeline, tmp_path, {})


def beta_tid(pipeline):
    return brandings.tree(brandings.python_of(pipeline, 'beta'), pipeline.port_base + 20)['last_tid']


def unchanged(pipeline, before, lines):
    assert beta_tid(pipeline) == before
    assert len(pipeline.ledger()) == lines
    assert not list((pipeline.sandbox / 'lb' / 'promotions').glob('*.lock'))


def test_site_yml_runs_the_engine_as_a_supervisord_program(engine):
    # RUNNING once supervisord's startsecs passed (the module's fixture has just restarted it).
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
    assert [engine.sink.of(request_id) for request_id in sent] == [[]] * len(sent)  # no run
    assert engine.log().count('push_webhook: queued') == queued
    unchanged(engine.pipeline, before, lines)


def test_an_unknown_partner_is_refused_by_the_playbook_and_reported(engine):
    before, lines = beta_tid(engine.pipeline), len(engine.pipeline.ledger())
    body = engine.request(partner='hooli')
    report = engine.run(body)
    assert report['state'] == 'refused', report
    assert report['result']['msg'].startswith("Partner 'hooli' is not in zopeops_partners")
    assert report['step'] == 'Ensure the partner is one the inventory knows.'
    reports = engine.sink.of(body['request_id'])
    assert reports[0]['state'] == 'running' and len(reports) >= 2
    assert engine.secret not in json.dumps(reports)
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
        ends = [engine.sink.final(b['request_id'], timeout=400) for b in (first, second)]
    assert all(ends), ([engine.sink.of(b['request_id']) for b in (first, second)],
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
    steps = [r['step'] for r in engine.sink.of(done['request_id'])]
    assert len(set(steps)) >= 3 and steps[0] == "Validate the pipeline and derive each host's instance.", steps
    assert not list((pipeline.sandbox / 'lb' / 'promotions').glob('*.lock'))
    assert engine.secret not in json.dumps(engine.sink.reports)
