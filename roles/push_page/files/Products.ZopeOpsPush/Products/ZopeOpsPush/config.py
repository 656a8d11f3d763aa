"""The page's configuration (``<instance>/etc/zopeops-push.json``, written by the role
``push_page``) and the checks of what a request names: partner, stages, user, request id.

Nothing here imports Zope: the unit tests run it with the plain standard library.
"""
import json
import os
import re

CONFIG_ENV = 'ZOPEOPS_PUSH_CONFIG'
CONFIG_NAME = 'zopeops-push.json'
ENGINES = ('eda', 'awx', 'none')
# The contract's formats (docs/push_branding.md, "The push page").
PARTNER_RE = re.compile(r'^[a-z0-9][a-z0-9_-]{0,63}$')
USER_RE = re.compile(r'^[A-Za-z0-9@._-]{1,100}$')
REQUEST_ID_RE = re.compile(r'^[0-9a-f]{32}$')
STAGE_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$')
# A push the engine accepted but never reported on blocks its target this long, then the page
# says it is lost and allows a new one (the engine's own lock still guards the target).
DEFAULT_PENDING_TIMEOUT = 2 * 3600
# A run that reported and then fell silent this long was stopped by force (the engine's runs
# report at least every HEARTBEAT seconds): the page says it is lost and allows a new push.
DEFAULT_SILENCE_TIMEOUT = 180


class ConfigError(Exception):
    """The configuration file is missing or wrong; the message says what to fix."""


def config_path(environ=None, instance_home=None):
    """ZOPEOPS_PUSH_CONFIG, else <INSTANCE_HOME>/etc/zopeops-push.json, else None."""
    environ = os.environ if environ is None else environ
    if environ.get(CONFIG_ENV):
        return environ[CONFIG_ENV]
    home = instance_home or environ.get('INSTANCE_HOME')
    if home:
        return os.path.join(home, 'etc', CONFIG_NAME)
    return None


def _fail(path, what):
    raise ConfigError('%s: %s. The role zopeops.stages.push_page writes this file; run '
                      'site.yml again, or correct the inventory.' % (path, what))


def load_config(path):
    """The validated configuration as a dict, or ConfigError naming the problem."""
    if not path or not os.path.isfile(path):
        raise ConfigError('The push page is not enabled on this stage (no %s). A stage gets it '
                          'when the inventory lists it in zopeops_push_page_stages.'
                          % (path or CONFIG_NAME))
    try:
        with open(path, encoding='utf-8') as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        _fail(path, 'cannot be read as JSON (%s)' % exc)
    if not isinstance(data, dict):
        _fail(path, 'is not a JSON object')
    stage = data.get('stage')
    if not isinstance(stage, str) or not STAGE_RE.match(stage):
        _fail(path, '"stage" must be a stage name, not %r' % (stage,))
    downstream = data.get('downstream')
    if (not isinstance(downstream, list)
            or not all(isinstance(s, str) and STAGE_RE.match(s) for s in downstream)):
        _fail(path, '"downstream" must be a list of stage names')
    engine = data.get('engine', 'eda')
    if engine not in ENGINES:
        _fail(path, '"engine" must be one of %s, not %r' % (', '.join(ENGINES), engine))
    if engine == 'eda' and not str(data.get('engine_url') or '').startswith(('http://', 'https://')):
        _fail(path, '"engine_url" must be the rulebook webhook\'s http(s) URL')
    awx = data.get('awx') or {}
    if engine == 'awx':
        if not isinstance(awx, dict) or not str(awx.get('url') or '').startswith(('http://', 'https://')):
            _fail(path, '"awx.url" must be the AWX server\'s http(s) URL')
        if not awx.get('token_file') or not awx.get('job_template'):
            _fail(path, '"awx.token_file" and "awx.job_template" are needed with engine awx')
    if engine != 'none' and not data.get('secret_file'):
        _fail(path, '"secret_file" is needed')
    partners = data.get('partners') or []
    if not isinstance(partners, list) or not all(
            isinstance(p, str) and PARTNER_RE.match(p) for p in partners):
        _fail(path, '"partners" must be a list of partner names ([a-z0-9][a-z0-9_-]*)')
    timeout = data.get('pending_timeout', DEFAULT_PENDING_TIMEOUT)
    if not isinstance(timeout, int) or timeout <= 0:
        _fail(path, '"pending_timeout" must be a positive number of seconds')
    silence = data.get('silence_timeout', DEFAULT_SILENCE_TIMEOUT)
    if not isinstance(silence, int) or silence <= 0:
        _fail(path, '"silence_timeout" must be a positive number of seconds')
    return {
        'stage': stage,
        'downstream': list(downstream),
        'engine': engine,
        'engine_url': data.get('engine_url'),
        'secret_file': data.get('secret_file'),
        'awx': dict(awx) if engine == 'awx' else {},
        'log_url_base': data.get('log_url_base'),
        'partners_path': str(data.get('partners_path') or '/partners'),
        'partners': list(partners),
        'pending_timeout': timeout,
        'silence_timeout': silence,
        'path': path,
    }


def read_secret(path):
    """The first line of a secret file (never logged, never shown), or ConfigError."""
    try:
        with open(path, encoding='utf-8') as handle:
            value = handle.read().strip()
    except OSError as exc:
        raise ConfigError('The secret file %s cannot be read (%s): the role push_page writes '
                          'it for the Zope service user, mode 0600.' % (path, exc.strerror))
    if not value:
        raise ConfigError('The secret file %s is empty.' % path)
    return value


def next_stage(config):
    return config['downstream'][0] if config['downstream'] else None


def check_push_request(config, partners, partner, to_stage, user):
    """The problem with a push/check request as a sentence, or None when it is good."""
    if not isinstance(partner, str) or not PARTNER_RE.match(partner):
        return 'The partner name %r is not a partner name ([a-z0-9][a-z0-9_-], at most 64).' % (
            partner,)
    if partner not in partners:
        return ('Unknown partner %r: this stage (%s) knows %s.'
                % (partner, config['stage'], ', '.join(partners) or 'no partner'))
    if to_stage not in config['downstream']:
        return ('%r is not downstream of %s: a branding goes to %s.'
                % (to_stage, config['stage'], ', '.join(config['downstream']) or 'no stage'))
    if not isinstance(user, str) or not USER_RE.match(user):
        return ('Your user id %r cannot be recorded in the ledger (letters, digits, @ . _ -, '
                'at most 100): push with another account.' % (user,))
    return None


REPORT_STATES = ('running', 'done', 'failed', 'refused')
FINAL_STATES = ('done', 'failed', 'refused')
LOG_LIMIT = 200 * 1024


def check_report(report):
    """The report (the contract's engine -> page JSON) cleaned, or ValueError naming the field."""
    if not isinstance(report, dict):
        raise ValueError('the report must be a JSON object')
    rid = report.get('request_id')
    if not isinstance(rid, str) or not REQUEST_ID_RE.match(rid):
        raise ValueError('request_id must be 32 hex characters')
    action = report.get('action')
    if action not in ('push', 'check'):
        raise ValueError('action must be push or check')
    partner = report.get('partner')
    if not isinstance(partner, str) or not PARTNER_RE.match(partner):
        raise ValueError('partner must match [a-z0-9][a-z0-9_-]{0,63}')
    to_stage = report.get('to_stage')
    if not isinstance(to_stage, str) or not STAGE_RE.match(to_stage):
        raise ValueError('to_stage must be a stage name')
    state = report.get('state')
    if state not in REPORT_STATES:
        raise ValueError('state must be one of %s' % ', '.join(REPORT_STATES))
    for key in ('step', 'at', 'log'):
        if report.get(key) is not None and not isinstance(report[key], str):
            raise ValueError('%s must be a string' % key)
    result = report.get('result')
    if result is not None and not isinstance(result, dict):
        raise ValueError('result must be a JSON object')
    if state in FINAL_STATES and result is None:
        raise ValueError('result is needed with state %s' % state)
    if action == 'check' and state == 'done':
        if not isinstance(result.get('differs'), bool):
            raise ValueError('result.differs must be true or false for a check')
        if not isinstance(result.get('lines', []), list):
            raise ValueError('result.lines must be a list')
    log = report.get('log') or ''
    if len(log) > LOG_LIMIT:
        log = log[-LOG_LIMIT:]
    return {'request_id': rid, 'action': action, 'partner': partner, 'to_stage': to_stage,
            'state': state, 'step': (report.get('step') or '')[:500],
            'at': (report.get('at') or '')[:40], 'result': result, 'log': log}
