"""A real Zope (runwsgi) with Products.ZopeOpsPush installed, and a small HTTP server standing
in for the push engine: the tests' observer of what the page sends (it answers as the
contract's webhook does) and the sender of the reports the engine would post.

The product is installed from the collection's files (roles/push_page/files/...) with uv into
a folder of its own, put on the Zope's PYTHONPATH: Products is a namespace package, so Zope
finds it beside the .venv's products, and the packaging (zcml, templates) is what is tested.
"""
from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from support.paths import REPO, VENV_BIN
from support.ports import free_port
from support.procs import wait_for

PRODUCT = REPO / 'roles' / 'push_page' / 'files' / 'Products.ZopeOpsPush'
GRANT_SCRIPT = REPO / 'roles' / 'push_page' / 'files' / 'zopeops_push_grant.py'
PARTNERS = ('acme', 'globex')
ROLE = 'WebDeveloper'

USERS_SCRIPT = '''
import sys, transaction
from OFS.Folder import manage_addFolder
users = app.acl_users
for spec in sys.argv[4:]:
    name, password, roles = spec.split(':')
    if name not in users.getUserNames():
        users._doAddUser(name, password, [r for r in roles.split(',') if r], [])
if 'partners' not in app.objectIds():
    manage_addFolder(app, 'partners')
for partner in %r:
    if partner not in app.partners.objectIds():
        manage_addFolder(app.partners, partner)
transaction.commit()
''' % (PARTNERS,)


def install_product(target):
    """uv installs the product (no dependencies: Zope is the .venv's) into ``target``, from a
    copy: a build writes build/ and *.egg-info beside the sources, and tests run in parallel."""
    source = Path(str(target) + '-src')
    shutil.copytree(PRODUCT, source, ignore=shutil.ignore_patterns('build', '*.egg-info'))
    subprocess.run([str(VENV_BIN / 'uv'), 'pip', 'install', '--quiet', '--no-deps', '--target',
                    str(target), str(source)], check=True, capture_output=True, text=True)
    return target


class Engine:
    """The engine's webhook as the contract has it: captures each request (headers and JSON)
    and answers 202 {"accepted": true} (or ``status``), after ``delay`` seconds."""

    def __init__(self):
        self.requests = []
        self.status = 202
        self.delay = 0.0
        self.lock = threading.Lock()
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                with engine.lock:
                    engine.requests.append({'path': self.path, 'headers': dict(self.headers),
                                            'json': json.loads(body or b'null')})
                time.sleep(engine.delay)
                payload = json.loads(body or b'{}')
                answer = (json.dumps({'accepted': True, 'request_id': payload.get('request_id')})
                          if engine.status == 202 else json.dumps({'error': 'refused by test'}))
                data = answer.encode()
                self.send_response(engine.status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.port = free_port()
        self.server = ThreadingHTTPServer(('127.0.0.1', self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = 'http://127.0.0.1:%d/push' % self.port

    def wait_requests(self, count, timeout=20):
        return wait_for(lambda: len(self.requests) >= count and list(self.requests),
                        timeout=timeout, what='%d request(s) at the engine' % count)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class PushZope:
    """The instance: its URL, users (name -> password), secret, and the engine stand-in."""

    def __init__(self, directory, engine, processes):
        self.dir = Path(directory)
        self.engine = engine
        self.port = free_port()
        self.url = 'http://127.0.0.1:%d' % self.port
        self.secret = 'push-' + secrets.token_hex(16)
        self.users = {'admin': 'adm-' + secrets.token_hex(6),
                      'webdev': 'wd-' + secrets.token_hex(6),
                      'viewer': 'vw-' + secrets.token_hex(6)}
        site = install_product(self.dir / 'site')
        inst = self.dir / 'inst'
        subprocess.run([str(VENV_BIN / 'mkwsgiinstance'), '-d', str(inst), '-u',
                        'admin:' + self.users['admin']], check=True, capture_output=True)
        ini = inst / 'etc' / 'zope.ini'
        ini.write_text(ini.read_text().replace('port = 8080', 'port = %d' % self.port))
        secret_file = inst / 'etc' / 'zopeops-push.secret'
        secret_file.write_text(self.secret + '\n')
        secret_file.chmod(0o600)
        self.config = {'stage': 'dev', 'downstream': ['beta', 'test', 'prod'], 'engine': 'eda',
                       'engine_url': engine.url, 'secret_file': str(secret_file),
                       'awx': {}, 'log_url_base': None, 'partners_path': '/partners'}
        self.config_file = inst / 'etc' / 'zopeops-push.json'
        self.configure()
        env = {'PYTHONPATH': str(site), 'PATH': '/usr/bin:/bin'}
        conf = str(inst / 'etc' / 'zope.conf')
        users_script = self.dir / 'users.py'
        users_script.write_text(USERS_SCRIPT)
        # Zope's first start creates the root user folder; zconsole opens the same Data.fs.
        self.zconsole(conf, env, users_script, 'webdev:%s:%s' % (self.users['webdev'], ROLE),
                      'viewer:%s:' % self.users['viewer'])
        # The role's grant, twice: the second run changes nothing (and says so).
        self.grant = [self.zconsole(conf, env, GRANT_SCRIPT, ROLE) for _unused in range(2)]
        self.proc = processes.start([str(VENV_BIN / 'runwsgi'), str(ini)],
                                    log_path=self.dir / 'zope.out', env=env, cwd=str(self.dir))
        wait_for(self.ready, timeout=60, what='Zope on %s' % self.url)

    def configure(self, **changes):
        """Write the page's configuration (the page reads it at each request)."""
        self.config.update(changes)
        self.config_file.write_text(json.dumps(self.config))

    @staticmethod
    def zconsole(conf, env, script, *args):
        proc = subprocess.run([str(VENV_BIN / 'zconsole'), 'run', conf, str(script), *args],
                              env=env, capture_output=True, text=True, check=False, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout

    def ready(self):
        try:
            urllib.request.urlopen(self.url + '/', timeout=2).read()
            return True
        except (urllib.error.URLError, OSError):
            return False

    def report(self, payload, secret=None):
        """POST a report as the engine does; the HTTP status."""
        request = urllib.request.Request(
            self.url + '/zopeops_push_report', data=json.dumps(payload).encode(), method='POST',
            headers={'Authorization': 'Bearer ' + (self.secret if secret is None else secret),
                     'Content-Type': 'application/json'})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code


def report(request_id, state, action='push', partner='acme', to_stage='beta', step='',
           result=None, log=''):
    """A report as the contract's engine sends it."""
    payload = {'request_id': request_id, 'action': action, 'partner': partner,
               'to_stage': to_stage, 'state': state, 'step': step,
               'at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'log': log}
    if result is not None:
        payload['result'] = result
    return payload


class FakeAwx:
    """AWX's API v2 as its documentation describes the calls the page makes (there is no AWX
    on these machines): job templates looked up by name, launched with extra_vars (and
    job_type), jobs followed by id. Captures each request; ``job_status`` is what
    /api/v2/jobs/<id>/ answers; ``ignored`` the fields a launch reports as ignored."""

    TEMPLATE = {'id': 7, 'name': 'Push branding'}

    def __init__(self, token):
        self.token = token
        self.requests = []
        self.job_status = 'pending'
        self.ignored = {}
        awx = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, data):
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def handle_any(self, method):
                length = int(self.headers.get('Content-Length') or 0)
                body = json.loads(self.rfile.read(length) or b'null') if length else None
                awx.requests.append({'method': method, 'path': self.path,
                                     'headers': dict(self.headers), 'json': body})
                if self.headers.get('Authorization') != 'Bearer ' + awx.token:
                    return self.answer(401, {'detail': 'Authentication credentials were not provided.'})
                path, _unused, query = self.path.partition('?')
                if method == 'GET' and path == '/api/v2/job_templates/':
                    name = urllib.parse.parse_qs(query).get('name', [''])[0]
                    found = [awx.TEMPLATE] if name == awx.TEMPLATE['name'] else []
                    return self.answer(200, {'count': len(found), 'results': found})
                if method == 'POST' and path == '/api/v2/job_templates/7/launch/':
                    if not isinstance((body or {}).get('extra_vars'), dict):
                        return self.answer(400, {'extra_vars': ['Must be a valid JSON or YAML dictionary.']})
                    return self.answer(201, {'job': 42, 'id': 42, 'type': 'job',
                                             'ignored_fields': awx.ignored})
                if method == 'GET' and path == '/api/v2/jobs/42/':
                    return self.answer(200, {'id': 42, 'type': 'job', 'status': awx.job_status})
                return self.answer(404, {'detail': 'Not found.'})

            def do_GET(self):
                self.handle_any('GET')

            def do_POST(self):
                self.handle_any('POST')

        self.port = free_port()
        self.server = ThreadingHTTPServer(('127.0.0.1', self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = 'http://127.0.0.1:%d' % self.port

    def close(self):
        self.server.shutdown()
        self.server.server_close()
