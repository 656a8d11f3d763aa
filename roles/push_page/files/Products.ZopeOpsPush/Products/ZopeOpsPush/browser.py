"""The push page (``@@zopeops-push`` on the application root) and the engines' report endpoint
(``zopeops_push_report``).

    GET  @@zopeops-push                      the page (permission "ZopeOps: Push branding")
    GET  @@zopeops-push?confirm=P&to=S       the page asking to confirm the push of P to S
    POST @@zopeops-push/push   partner, to_stage, _authenticator
    POST @@zopeops-push/check  partner, to_stage, _authenticator
    GET  @@zopeops-push/status?request_id=   the request's state as JSON (the page polls it)
    GET  @@zopeops-push/log?request_id=      the run's log (redacted by the engine), text
    POST zopeops_push_report                 the engine's report (public, bearer secret)
"""
import hashlib
import hmac
import json
import time
import uuid

import transaction
from AccessControl import getSecurityManager
from Products.Five.browser import BrowserView
from Products.Five.browser.pagetemplatefile import ViewPageTemplateFile
from zope.interface import implementer
from zope.publisher.interfaces import IPublishTraverse
from zope.publisher.interfaces import NotFound

from . import config as cfg
from . import engines
from . import store

TOKEN_FIELD = '_authenticator'
TOKEN_LIFETIME = 8 * 3600


def load_config():
    """The stage's configuration (config.py), found as the contract says."""
    from App.config import getConfiguration  # Zope's, at run time
    home = getattr(getConfiguration(), 'instancehome', None)
    return cfg.load_config(cfg.config_path(instance_home=home))


def form_token(secret, user, now=None, bucket=None):
    """The push/check forms' hidden key: an HMAC of the user id and a time slot, keyed by the
    stage's secret. A page of another user, or older than TOKEN_LIFETIME, does not match."""
    if bucket is None:
        bucket = int((now or time.time()) // TOKEN_LIFETIME)
    message = ('zopeops-push-form\0%s\0%d' % (user, bucket)).encode('utf-8')
    key = hashlib.sha256(b'zopeops-push-form-key\0' + secret.encode('utf-8')).digest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def token_ok(secret, user, token, now=None):
    now = now or time.time()
    bucket = int(now // TOKEN_LIFETIME)
    return any(hmac.compare_digest(form_token(secret, user, bucket=b), str(token or ''))
               for b in (bucket, bucket - 1))


def utc(seconds):
    return time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(seconds)) if seconds else ''


def last_push(from_check, push):
    """The last push to show: the ledger line the last check read, or the ledger line a push
    requested here reported at its end (``result``, with ``finished_at``), whichever is newer.
    A refusal carries no ledger line (only ``msg``) and changes nothing."""
    ended = dict((push or {}).get('result') or {})
    if not (push and push['state'] in cfg.FINAL_STATES and ended.get('finished_at')):
        return from_check
    if from_check and (from_check.get('finished_at') or '') > ended['finished_at']:
        return from_check
    return ended


@implementer(IPublishTraverse)
class PushPage(BrowserView):
    template = ViewPageTemplateFile('templates/push.pt')
    subpath = None
    message = None
    message_kind = 'info'

    # -- traversal: @@zopeops-push/<push|check|status|log> --------------------------------
    def publishTraverse(self, request, name):
        if self.subpath is None and name in ('push', 'check', 'status', 'log'):
            self.subpath = name
            return self
        raise NotFound(self, name, request)

    def __call__(self):
        try:
            self.config = load_config()
        except cfg.ConfigError as exc:
            return self.answer(404, str(exc), 'error', render=False)
        if self.subpath in ('push', 'check'):
            return self.submit(self.subpath)
        if self.subpath == 'status':
            return self.status()
        if self.subpath == 'log':
            return self.log()
        return self.template()

    # -- helpers for the template --------------------------------------------------------
    @property
    def app(self):
        return self.context.getPhysicalRoot()

    def user_id(self):
        user = getSecurityManager().getUser()
        return user.getId() or user.getUserName()

    def secret(self):
        try:
            return cfg.read_secret(self.config['secret_file'])
        except cfg.ConfigError:
            return None

    def token(self):
        secret = self.secret()
        return form_token(secret, self.user_id()) if secret else ''

    def partners(self):
        if self.config['partners']:
            return list(self.config['partners'])
        folder = self.app.unrestrictedTraverse(self.config['partners_path'].strip('/'), None)
        if folder is None or not hasattr(folder, 'objectIds'):
            return []
        return sorted(i for i in folder.objectIds() if cfg.PARTNER_RE.match(i))

    def target(self):
        wanted = self.request.form.get('to')
        if wanted in self.config['downstream']:
            return wanted
        return cfg.next_stage(self.config)

    def base_url(self):
        return self.app.absolute_url() + '/@@zopeops-push'

    def engine_label(self):
        return {'eda': 'Event-Driven Ansible', 'awx': 'AWX',
                'none': 'none (pushing is off on this stage)'}[self.config['engine']]

    def rows(self):
        now = time.time()
        to_stage = self.target()
        confirm = self.request.form.get('confirm')
        rows = []
        for partner in self.partners():
            check = store.latest(self.app, partner, to_stage, 'check')
            push = store.latest(self.app, partner, to_stage, 'push')
            running = store.running_push(self.app, partner, to_stage, now,
                                         self.config['pending_timeout'],
                                         self.config['silence_timeout'])
            result = (check or {}).get('result') or {}
            checked = check is not None and check['state'] == 'done'
            locked_by = result.get('target_locked_by') if checked else None
            disabled = None
            if self.config['engine'] == 'none':
                disabled = 'Pushing is off on this stage (zopeops_push_engine: none).'
            elif running is not None:
                disabled = 'A push runs (since %s, by %s).' % (
                    utc(running['created']), running['user'] or 'the engine')
            elif locked_by:
                disabled = '%s is held by a %s (run %s, by %s).' % (
                    to_stage, locked_by.get('action', 'promotion'), locked_by.get('run_id', '?'),
                    locked_by.get('by', '?'))
            # A push that ended after the last check: the comparison is out of date.
            stale = (checked and push is not None and push['state'] in cfg.FINAL_STATES
                     and push.get('updated', 0) > check.get('updated', 0))
            rows.append({
                'partner': partner,
                'stale': stale,
                'to_stage': to_stage,
                'check': self.describe(check),
                'differs': result.get('differs') if checked else None,
                'lines': list(result.get('lines') or []) if checked else [],
                'last_push': last_push(result.get('last_push') if checked else None, push),
                'push': self.describe(push),
                'running': self.describe(running),
                'locked_by': locked_by,
                'disabled': disabled,
                'confirm': confirm == partner and not disabled,
            })
        return rows

    def describe(self, record):
        """A request record as the template and the status JSON show it."""
        if record is None:
            return None
        result = record.get('result') or {}
        state, msg = record['state'], result.get('msg') or record.get('warning') or ''
        if store.lost(record, time.time(), self.config['pending_timeout'],
                      self.config['silence_timeout']):
            # Its run was stopped by force (or never started): no report will come.
            state = 'lost'
            msg = ('No report since %s (%s): the run was stopped before it ended. Its '
                   'lock, if it took one, still guards %s until it expires; see the ledger '
                   'and the log, check again, then push again.' % (
                       utc(record.get('updated')), record.get('step') or record['state'],
                       record['to_stage']))
        return {
            'request_id': record['request_id'],
            'action': record['action'],
            'partner': record['partner'],
            'to_stage': record['to_stage'],
            'user': record.get('user') or '',
            'state': state,
            'step': record.get('step') or '',
            'created': utc(record['created']),
            'updated': utc(record.get('updated')),
            'final': state in cfg.FINAL_STATES or state == 'lost',
            'msg': msg,
            'result': dict(result),
            'log_url': self.log_url(record),
            'has_log': bool(record.get('log')),
        }

    def log_url(self, record):
        if record.get('awx_job'):
            return record.get('awx_stdout_url')
        if self.config.get('log_url_base'):
            return '%s/%s' % (self.config['log_url_base'].rstrip('/'), record['request_id'])
        return '%s/log?request_id=%s' % (self.base_url(), record['request_id'])

    # -- answers -------------------------------------------------------------------------
    def answer(self, status, message, kind='error', render=True):
        self.request.response.setStatus(status)
        self.message, self.message_kind = message, kind
        if render:
            return self.template()
        self.request.response.setHeader('Content-Type', 'text/plain; charset=utf-8')
        return message + '\n'

    def json(self, status, data):
        response = self.request.response
        response.setStatus(status)
        response.setHeader('Content-Type', 'application/json')
        response.setHeader('Cache-Control', 'no-store')
        return json.dumps(data)

    # -- push / check --------------------------------------------------------------------
    def submit(self, action):
        request = self.request
        if request.get('REQUEST_METHOD', 'GET').upper() != 'POST':
            request.response.setHeader('Allow', 'POST')
            return self.answer(405, 'A %s is a POST from the page\'s button.' % action)
        secret = self.secret()
        if self.config['engine'] == 'none' or secret is None:
            return self.answer(409, 'Pushing is off on this stage: the inventory sets no '
                                    'engine (zopeops_push_engine) or no secret for it.')
        user = self.user_id()
        if not token_ok(secret, user, request.form.get(TOKEN_FIELD)):
            return self.answer(403, 'This form is stale or was not sent by the push page '
                                    '(its key does not match): reload the page and click again.')
        partner = request.form.get('partner')
        to_stage = request.form.get('to_stage')
        problem = cfg.check_push_request(self.config, self.partners(), partner, to_stage, user)
        if problem:
            return self.answer(400, problem)
        now = time.time()
        if action == 'push':
            running = store.running_push(self.app, partner, to_stage, now,
                                         self.config['pending_timeout'],
                                         self.config['silence_timeout'])
            if running is not None:
                return self.answer(409, 'A push of %s to %s runs already (by %s, since %s): '
                                        'nothing more was started; its progress is below.' % (
                                            partner, to_stage, running['user'] or 'the engine',
                                            utc(running['created'])), 'warning')
            check = store.latest(self.app, partner, to_stage, 'check')
            locked = (((check or {}).get('result') or {}).get('target_locked_by')
                      if check is not None and check['state'] == 'done' else None)
            if locked:
                return self.answer(409, '%s is held by a %s (run %s): push when it is over.' % (
                    to_stage, locked.get('action', 'promotion'), locked.get('run_id', '?')))
        rid = uuid.uuid4().hex
        record = {'request_id': rid, 'action': action, 'partner': partner,
                  'from_stage': self.config['stage'], 'to_stage': to_stage, 'user': user,
                  'engine': self.config['engine']}
        store.add_request(self.app, record, now)
        # Commit the pending slot before the engine is asked: a second click's transaction
        # conflicts here (and Zope retries it, to be told that this push runs), never after
        # the engine started a run.
        transaction.commit()
        try:
            extra = self.send(record, secret)
        except (engines.EngineUnreachable, engines.EngineRefused, cfg.ConfigError) as exc:
            store.drop_request(self.app, rid)
            status = 503 if isinstance(exc, engines.EngineUnreachable) else 502
            return self.answer(status, 'The %s was not started: the engine (%s) %s. Nothing is '
                                       'queued; try again later or tell the operators.' % (
                                           action, self.config['engine'],
                                           'is not reachable' if status == 503 else
                                           'refused it') + ' (%s)' % exc)
        store.update_request(self.app, rid, time.time(), state='queued',
                             step='accepted by the engine', **extra)
        request.response.redirect('%s?to=%s&request_id=%s#partner-%s' % (
            self.base_url(), to_stage, rid, partner), status=303)
        return ''

    def send(self, record, secret):
        """Hand the request to the engine; the fields to record (AWX's job)."""
        if self.config['engine'] == 'eda':
            engines.eda_submit(self.config['engine_url'], secret, record)
            return {}
        awx = self.config['awx']
        client = engines.AwxClient(awx['url'], cfg.read_secret(awx['token_file']))
        job, ignored = client.launch(awx['job_template'], record)
        extra = {'awx_job': job, 'awx_stdout_url': client.stdout_url(job)}
        if ignored:
            extra['warning'] = ('AWX ignored %s: the job template must prompt on launch for '
                                'variables and job type.' % ', '.join(ignored))
        return extra

    # -- progress ------------------------------------------------------------------------
    def record(self):
        rid = self.request.form.get('request_id', '')
        if not cfg.REQUEST_ID_RE.match(str(rid)):
            return None
        return store.get_request(self.app, rid)

    def status(self):
        record = self.record()
        if record is None:
            return self.json(404, {'error': 'no such request (request_id: 32 hex characters)'})
        if record.get('awx_job') and record['state'] not in cfg.FINAL_STATES and not record.get(
                'reports'):
            self.follow_awx(record)
        return self.json(200, self.describe(record))

    def follow_awx(self, record):
        """No report yet: ask AWX how the job goes (the job's state, not its steps)."""
        awx = self.config['awx']
        try:
            client = engines.AwxClient(awx['url'], cfg.read_secret(awx['token_file']))
            state, awx_status, _unused = client.job(record['awx_job'])
        except (engines.EngineUnreachable, engines.EngineRefused, cfg.ConfigError) as exc:
            record_step = 'AWX cannot be asked now (%s)' % exc
            if record.get('step') != record_step:
                store.update_request(self.app, record['request_id'], time.time(), step=record_step)
            return
        fields = {'state': state, 'step': 'AWX job %s: %s' % (record['awx_job'], awx_status)}
        if state in cfg.FINAL_STATES:
            fields['result'] = {'msg': 'AWX job %s ended %s; its output is at the log link.'
                                % (record['awx_job'], awx_status)}
        if fields['state'] != record['state'] or fields['step'] != record.get('step'):
            store.update_request(self.app, record['request_id'], time.time(), **fields)

    def log(self):
        record = self.record()
        response = self.request.response
        if record is None:
            return self.answer(404, 'No such request.', render=False)
        if record.get('awx_job') and not record.get('log'):
            response.redirect(record['awx_stdout_url'])
            return ''
        response.setHeader('Content-Type', 'text/plain; charset=utf-8')
        response.setHeader('Cache-Control', 'no-store')
        return record.get('log') or '(no output reported yet)\n'


class ReportView(BrowserView):
    """``POST zopeops_push_report``: the engine's progress and result (the contract's JSON).
    Public for Zope; guarded by the stage's shared secret, compared in constant time."""

    def __call__(self):
        request, response = self.request, self.request.response
        response.setHeader('Content-Type', 'application/json')
        if request.get('REQUEST_METHOD', 'GET').upper() != 'POST':
            response.setHeader('Allow', 'POST')
            return self.error(405, 'reports are POSTed')
        try:
            config = load_config()
            secret = cfg.read_secret(config['secret_file']) if config['secret_file'] else None
        except cfg.ConfigError:
            return self.error(404, 'the push page is not enabled on this stage')
        # ZPublisher takes the header out of the environment and keeps it in request._auth.
        header = getattr(request, '_auth', None) or ''
        scheme, _unused, given = str(header).partition(' ')
        if (secret is None or scheme.lower() != 'bearer'
                or not hmac.compare_digest(given.strip().encode('utf-8'), secret.encode('utf-8'))):
            return self.error(401, 'missing or wrong bearer secret')
        body = request.get('BODY') or b''
        try:
            report = cfg.check_report(json.loads(body))
        except ValueError as exc:
            return self.error(400, 'malformed report: %s' % exc)
        store.apply_report(self.context.getPhysicalRoot(), report, time.time())
        response.setStatus(204)
        return ''

    def error(self, status, message):
        self.request.response.setStatus(status)
        return json.dumps({'error': message})
