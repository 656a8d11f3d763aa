"""Products.ZopeOpsPush's logic without a Zope server: its configuration and checks, the
form key, the ZODB store (a real ZODB in memory, with two connections for two clicks at once),
the EDA webhook client and the AWX client (against tests/support's HTTP servers: there is no
AWX on these machines, FakeAwx answers as AWX's API v2 documentation says)."""
from __future__ import annotations

import json
import sys
import time

import pytest

from support.ports import free_port
from support.push_page import PRODUCT, Engine, FakeAwx

if str(PRODUCT) not in sys.path:
    sys.path.insert(0, str(PRODUCT))

from Products.ZopeOpsPush import config as cfg  # noqa: E402  # pylint: disable=wrong-import-position
from Products.ZopeOpsPush import engines  # noqa: E402  # pylint: disable=wrong-import-position
from Products.ZopeOpsPush import store  # noqa: E402  # pylint: disable=wrong-import-position

SECRET = 'unit-secret-0123456789'
RID = '0123456789abcdef' * 2


def write_config(tmp_path, **changes):
    data = {'stage': 'dev', 'downstream': ['beta', 'test', 'prod'], 'engine': 'eda',
            'engine_url': 'http://127.0.0.1:1/push', 'secret_file': str(tmp_path / 'secret')}
    data.update(changes)
    path = tmp_path / 'zopeops-push.json'
    path.write_text(json.dumps(data))
    return str(path)


# -- configuration and checks -----------------------------------------------------------------

def test_config_is_found_by_environment_or_instance_home(tmp_path):
    assert cfg.config_path({'ZOPEOPS_PUSH_CONFIG': '/x.json'}, '/inst') == '/x.json'
    assert cfg.config_path({}, '/inst') == '/inst/etc/zopeops-push.json'
    assert cfg.config_path({}) is None


def test_config_without_file_says_the_page_is_not_enabled(tmp_path):
    with pytest.raises(cfg.ConfigError, match='not enabled on this stage.*zopeops_push_page_stages'):
        cfg.load_config(str(tmp_path / 'missing.json'))


@pytest.mark.parametrize('changes, error', [
    ({'engine': 'jenkins'}, '"engine" must be one of eda, awx, none'),
    ({'engine_url': 'ftp://x'}, '"engine_url"'),
    ({'downstream': 'beta'}, '"downstream" must be a list'),
    ({'stage': ''}, '"stage" must be a stage name'),
    ({'engine': 'awx', 'awx': {'url': 'http://awx'}}, 'awx.token_file'),
    ({'partners': ['Acme!']}, '"partners" must be a list of partner names'),
    ({'pending_timeout': 0}, 'pending_timeout'),
    ({'silence_timeout': 'soon'}, 'silence_timeout'),
])
def test_config_errors_name_the_field(tmp_path, changes, error):
    with pytest.raises(cfg.ConfigError, match=error.replace('"', '.')):
        cfg.load_config(write_config(tmp_path, **changes))


def test_config_good(tmp_path):
    config = cfg.load_config(write_config(tmp_path, partners=['acme']))
    assert (config['stage'], cfg.next_stage(config), config['partners']) == ('dev', 'beta', ['acme'])
    assert config['pending_timeout'] == cfg.DEFAULT_PENDING_TIMEOUT
    assert config['silence_timeout'] == cfg.DEFAULT_SILENCE_TIMEOUT


def test_secret_file(tmp_path):
    (tmp_path / 's').write_text(SECRET + '\n')
    assert cfg.read_secret(str(tmp_path / 's')) == SECRET
    with pytest.raises(cfg.ConfigError, match='cannot be read') as err:
        cfg.read_secret(str(tmp_path / 'none'))
    assert SECRET not in str(err.value)


@pytest.mark.parametrize('partner, to_stage, user, error', [
    ('nobody', 'beta', 'webdev', "Unknown partner 'nobody'"),
    ('ACME', 'beta', 'webdev', 'is not a partner name'),
    ('acme', 'dev', 'webdev', "'dev' is not downstream of dev"),
    ('acme', 'qa', 'webdev', "'qa' is not downstream of dev"),
    ('acme', 'beta', 'web dev', 'cannot be recorded in the ledger'),
    ('acme', 'beta', 'webdev', None),
    ('acme', 'prod', 'jane.doe@example.org', None),
])
def test_push_request_checks(tmp_path, partner, to_stage, user, error):
    config = cfg.load_config(write_config(tmp_path))
    problem = cfg.check_push_request(config, ['acme', 'globex'], partner, to_stage, user)
    assert (problem is None) if error is None else (error in problem)


def good_report(**changes):
    data = {'request_id': RID, 'action': 'check', 'partner': 'acme', 'to_stage': 'beta',
            'state': 'done', 'step': 'Compared', 'at': '2026-12-07T12:00:00Z',
            'result': {'differs': True, 'lines': ['x'], 'last_push': None,
                       'target_locked_by': None}, 'log': 'ok'}
    data.update(changes)
    return data


@pytest.mark.parametrize('changes, error', [
    ({'request_id': 'x' * 32}, 'request_id'),
    ({'action': 'rollback'}, 'action'),
    ({'partner': '../x'}, 'partner'),
    ({'state': 'finished'}, 'state'),
    ({'result': None}, 'result is needed with state done'),
    ({'result': {'lines': []}}, 'result.differs'),
    ({'log': 5}, 'log must be a string'),
])
def test_report_checks_name_the_field(changes, error):
    with pytest.raises(ValueError, match=error):
        cfg.check_report(good_report(**changes))
    with pytest.raises(ValueError, match='JSON object'):
        cfg.check_report([1])


def test_report_log_keeps_its_tail():
    log = 'A' * 10 + 'B' * cfg.LOG_LIMIT
    assert cfg.check_report(good_report(log=log))['log'] == 'B' * cfg.LOG_LIMIT


# -- the form key -------------------------------------------------------------------------------

def test_last_push_is_the_newer_ledger_line_of_the_check_and_the_push_here():
    browser = pytest.importorskip('Products.ZopeOpsPush.browser')
    older = {'by': 'ben', 'result': 'done', 'finished_at': '2026-12-07T10:00:00Z'}
    newer = {'by': 'anna', 'via': 'page', 'result': 'done', 'finished_at': '2026-12-07T11:00:00Z'}
    pushed = {'state': 'done', 'result': newer}
    # A push from this page ended after the last check: its ledger line is the last push.
    assert browser.last_push(None, pushed) == newer
    assert browser.last_push(older, pushed) == newer
    # A check after that push read a newer ledger line (a push from elsewhere).
    later = dict(older, finished_at='2026-12-07T12:00:00Z')
    assert browser.last_push(later, pushed) == later
    # A refusal, or a push still running, has no ledger line: the check's stands.
    assert browser.last_push(older, {'state': 'refused', 'result': {'msg': 'held'}}) == older
    assert browser.last_push(older, {'state': 'running', 'result': {}}) == older
    assert browser.last_push(None, None) is None


def test_form_key_is_tied_to_user_secret_and_time():
    browser = pytest.importorskip('Products.ZopeOpsPush.browser')
    now = 1_800_000_000
    key = browser.form_token(SECRET, 'webdev', now)
    assert browser.token_ok(SECRET, 'webdev', key, now)
    assert browser.token_ok(SECRET, 'webdev', key, now + browser.TOKEN_LIFETIME)  # the next slot
    assert not browser.token_ok(SECRET, 'webdev', key, now + 2 * browser.TOKEN_LIFETIME)
    assert not browser.token_ok(SECRET, 'admin', key, now)
    assert not browser.token_ok(SECRET + 'x', 'webdev', key, now)
    assert not browser.token_ok(SECRET, 'webdev', '', now)
    assert SECRET not in key


# -- the ZODB store -----------------------------------------------------------------------------

@pytest.fixture
def db(tmp_path):
    """A FileStorage ZODB: conflict resolution (BTrees merging inserts) is the storage's."""
    import ZODB
    from ZODB.FileStorage import FileStorage
    database = ZODB.DB(FileStorage(str(tmp_path / 'Data.fs')))
    yield database
    database.close()


def request(rid, partner='acme', to_stage='beta', action='push'):
    return {'request_id': rid, 'action': action, 'partner': partner, 'from_stage': 'dev',
            'to_stage': to_stage, 'user': 'webdev', 'engine': 'eda'}


def test_two_clicks_at_once_conflict_on_the_pending_slot(db):
    """Two transactions take the same (partner, target): the second commit fails, as Zope's
    retry then sees the first push. Two partners at once both commit."""
    import transaction
    from persistent.mapping import PersistentMapping
    from ZODB.POSException import ConflictError
    setup = transaction.TransactionManager()
    conn = db.open(transaction_manager=setup)
    conn.root()['app'] = app = PersistentMapping()
    store.get_store(AttrRoot(app), create=True)
    setup.commit()
    conn.close()

    managers = [transaction.TransactionManager() for _unused in range(2)]
    conns = [db.open(transaction_manager=m) for m in managers]
    apps = [AttrRoot(c.root()['app']) for c in conns]
    now = time.time()
    for app_, rid in zip(apps, ('1' * 32, '2' * 32)):
        assert store.running_push(app_, 'acme', 'beta', now, 3600) is None
        store.add_request(app_, request(rid), now)
    managers[0].commit()
    with pytest.raises(ConflictError):
        managers[1].commit()
    managers[1].abort()
    conns[1].sync()
    assert store.running_push(apps[1], 'acme', 'beta', now, 3600)['request_id'] == '1' * 32
    # Different partners at once: BTrees merge the two inserts.
    store.add_request(apps[0], request('3' * 32, partner='globex'), now)
    store.add_request(apps[1], request('4' * 32, partner='initech'), now)
    managers[0].commit()
    managers[1].commit()
    for c in conns:
        c.close()


class AttrRoot:
    """The application root as store.py sees it: attributes on a persistent object."""

    def __init__(self, mapping):
        self.__dict__['_m'] = mapping

    def __getattr__(self, name):
        try:
            return self._m[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self._m[name] = value


def test_reports_free_the_target_and_drop_forgets():
    from persistent.mapping import PersistentMapping
    app = AttrRoot(PersistentMapping())
    now = time.time()
    store.add_request(app, request(RID), now)
    assert store.running_push(app, 'acme', 'beta', now, 3600)['request_id'] == RID
    assert store.running_push(app, 'acme', 'beta', now + 7200, 3600) is None   # lost: expired
    report = cfg.check_report(good_report(action='push', state='running', result=None))
    store.apply_report(app, report, now)
    assert store.running_push(app, 'acme', 'beta', now, 3600)['state'] == 'running'
    store.apply_report(app, cfg.check_report(good_report(action='push', state='failed',
                                                         result={'msg': 'pages failed'})), now)
    assert store.running_push(app, 'acme', 'beta', now, 3600) is None
    assert store.get_request(app, RID)['result'] == {'msg': 'pages failed'}
    store.add_request(app, request('9' * 32), now)
    store.drop_request(app, '9' * 32)
    assert store.get_request(app, '9' * 32) is None
    assert store.running_push(app, 'acme', 'beta', now, 3600) is None
    assert store.latest(app, 'acme', 'beta', 'push')['request_id'] == RID


def test_a_run_that_reported_then_fell_silent_is_lost_sooner_than_one_never_reported():
    from persistent.mapping import PersistentMapping
    app = AttrRoot(PersistentMapping())
    now = time.time()
    store.add_request(app, request(RID), now)
    queued = store.get_request(app, RID)
    # Accepted, no report yet: it may wait behind other runs of the engine (pending_timeout).
    assert not store.lost(queued, now + 600, 3600, 180)
    assert store.running_push(app, 'acme', 'beta', now + 600, 3600, 180)['request_id'] == RID
    assert store.lost(queued, now + 3601, 3600, 180)
    store.apply_report(app, cfg.check_report(good_report(action='push', state='running',
                                                         result=None)), now)
    # It reported: it says it lives every 30 s, so 180 s of silence means it was stopped.
    assert store.running_push(app, 'acme', 'beta', now + 170, 3600, 180)['state'] == 'running'
    assert store.running_push(app, 'acme', 'beta', now + 181, 3600, 180) is None
    assert store.lost(store.get_request(app, RID), now + 181, 3600, 180)
    # Without a silence timeout (an older caller) only the pending timeout counts.
    assert store.running_push(app, 'acme', 'beta', now + 181, 3600) is not None
    # A final report is never lost.
    store.apply_report(app, cfg.check_report(good_report(action='push', state='done',
                                                         result={'result': 'pushed'})), now)
    assert not store.lost(store.get_request(app, RID), now + 99999, 3600, 180)


def test_a_report_of_an_unknown_request_is_recorded():
    from persistent.mapping import PersistentMapping
    app = AttrRoot(PersistentMapping())
    store.apply_report(app, cfg.check_report(good_report()), time.time())
    assert store.latest(app, 'acme', 'beta', 'check')['result']['differs'] is True


def test_only_the_last_requests_of_a_partner_are_kept():
    from persistent.mapping import PersistentMapping
    app = AttrRoot(PersistentMapping())
    for number in range(store.KEEP + 5):
        store.add_request(app, request('%032x' % number, action='check'), 1000.0 + number)
    store.add_request(app, request('f' * 32, partner='globex', action='check'), 0.0)
    kept = store.get_store(app)['requests']
    assert len([r for r in kept.values() if r['partner'] == 'acme']) == store.KEEP
    assert '%032x' % 0 not in kept and 'f' * 32 in kept


# -- EDA: the rulebook's webhook ----------------------------------------------------------------

@pytest.fixture
def engine():
    stand_in = Engine()
    yield stand_in
    stand_in.close()


def test_eda_submit_posts_the_contract_request(engine):
    sent = dict(request(RID), extra='not sent')
    answer = engines.eda_submit(engine.url, SECRET, sent)
    assert answer['accepted'] is True
    got = engine.requests[0]
    assert got['headers']['Authorization'] == 'Bearer ' + SECRET
    fields = ('action', 'request_id', 'partner', 'from_stage', 'to_stage', 'user')
    assert got['json'] == {k: sent[k] for k in fields}


def test_eda_refusal_and_unreachable_name_the_engine_not_the_secret(engine):
    engine.status = 401
    with pytest.raises(engines.EngineRefused) as err:
        engines.eda_submit(engine.url, SECRET, request(RID))
    assert err.value.status == 401 and 'refused by test' in str(err.value)
    assert SECRET not in str(err.value)
    with pytest.raises(engines.EngineUnreachable, match='is not reachable') as err:
        engines.eda_submit('http://127.0.0.1:%d/push' % free_port(), SECRET, request(RID),
                           timeout=3)
    assert SECRET not in str(err.value)


# -- AWX ----------------------------------------------------------------------------------------

@pytest.fixture
def awx():
    server = FakeAwx('awx-token-abc')
    yield server
    server.close()


def test_awx_launch_by_template_name_with_the_page_variables(awx):
    client = engines.AwxClient(awx.url + '/', awx.token)
    job, ignored = client.launch('Push branding', request(RID))
    assert (job, ignored) == (42, [])
    lookup, launch = awx.requests
    assert lookup['method'] == 'GET' and lookup['path'] == '/api/v2/job_templates/?name=Push+branding'
    assert launch['method'] == 'POST' and launch['path'] == '/api/v2/job_templates/7/launch/'
    assert launch['headers']['Authorization'] == 'Bearer ' + awx.token
    assert launch['json'] == {'extra_vars': {
        'partner': 'acme', 'from_stage': 'dev', 'to_stage': 'beta', 'push_branding_by': 'webdev',
        'push_branding_request_id': RID, 'push_branding_via': 'page'}}
    assert client.stdout_url(job) == awx.url + '/api/v2/jobs/42/stdout/?format=txt'


def test_awx_check_launches_job_type_check_by_template_id(awx):
    client = engines.AwxClient(awx.url, awx.token)
    client.launch(7, request(RID, action='check'))
    (launch,) = awx.requests
    assert launch['json']['job_type'] == 'check'


def test_awx_says_what_it_ignored(awx):
    awx.ignored = {'extra_vars': {'push_branding_by': 'webdev'}, 'job_type': 'check'}
    _unused, ignored = engines.AwxClient(awx.url, awx.token).launch(7, request(RID))
    assert ignored == ['extra_vars', 'job_type']


def test_awx_errors(awx):
    with pytest.raises(engines.EngineRefused, match='0 job templates named'):
        engines.AwxClient(awx.url, awx.token).template_id('Nope')
    with pytest.raises(engines.EngineRefused, match='401.*Authentication credentials') as err:
        engines.AwxClient(awx.url, 'wrong-token').launch(7, request(RID))
    assert 'wrong-token' not in str(err.value)
    with pytest.raises(engines.EngineUnreachable):
        engines.AwxClient('http://127.0.0.1:%d' % free_port(), awx.token, timeout=3).job(42)


@pytest.mark.parametrize('status, state', [
    ('new', 'running'), ('pending', 'running'), ('waiting', 'running'), ('running', 'running'),
    ('successful', 'done'), ('failed', 'failed'), ('error', 'failed'), ('canceled', 'failed'),
])
def test_awx_job_states(awx, status, state):
    awx.job_status = status
    got_state, got_status, body = engines.AwxClient(awx.url, awx.token).job(42)
    assert (got_state, got_status, body['id']) == (state, status, 42)
    assert awx.requests[-1]['path'] == '/api/v2/jobs/42/'


def test_engines_use_only_the_standard_library():
    source = (PRODUCT / 'Products' / 'ZopeOpsPush' / 'engines.py').read_text()
    imports = {line.split()[1].split('.')[0] for line in source.splitlines()
               if line.startswith(('import ', 'from '))}
    assert imports <= {'json', 'urllib'}, imports


def test_the_role_copies_every_file_of_the_product():
    import yaml
    listed = yaml.safe_load((PRODUCT.parents[1] / 'vars' / 'main.yml').read_text())
    present = sorted(str(p.relative_to(PRODUCT)) for p in PRODUCT.rglob('*') if p.is_file()
                     and '__pycache__' not in p.parts and 'build' not in p.parts
                     and not any(part.endswith('.egg-info') for part in p.parts))
    assert sorted(listed['push_page_product_files']) == present
