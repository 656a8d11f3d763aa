"""How a click reaches Ansible: the rulebook's webhook (Event-Driven Ansible) or AWX's API.

Only the standard library (urllib): the product runs in the application's release venv.
Secrets (the shared secret, the AWX token) go into the Authorization header and nowhere else:
not into an exception's message, not into a log line.
"""
import json
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 10


class EngineUnreachable(Exception):
    """The engine did not answer (refused, timed out, DNS): nothing was queued."""


class EngineRefused(Exception):
    """The engine answered with an error; ``status`` and the engine's own message."""

    def __init__(self, status, message):
        Exception.__init__(self, message)
        self.status = status


def _message(body):
    try:
        data = json.loads(body.decode('utf-8', 'replace'))
    except ValueError:
        return body.decode('utf-8', 'replace')[:300]
    if isinstance(data, dict):
        for key in ('error', 'detail', 'msg'):
            if data.get(key):
                return str(data[key])[:300]
        # AWX answers field errors as {"field": ["message"]}.
        return '; '.join('%s: %s' % (k, v if not isinstance(v, list) else ' '.join(map(str, v)))
                         for k, v in sorted(data.items()))[:300]
    return str(data)[:300]


def http_json(method, url, token, payload=None, timeout=TIMEOUT):
    """(status, decoded JSON or None); EngineUnreachable or EngineRefused (>= 400)."""
    data = None if payload is None else json.dumps(payload).encode('utf-8')
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header('Authorization', 'Bearer ' + token)
    request.add_header('Accept', 'application/json')
    if data is not None:
        request.add_header('Content-Type', 'application/json')
    where = safe_url(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raise EngineRefused(exc.code, '%s answered %s: %s' % (where, exc.code, _message(exc.read())))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, 'reason', exc)
        raise EngineUnreachable('%s is not reachable (%s)' % (where, reason))
    if not body:
        return status, None
    try:
        return status, json.loads(body.decode('utf-8'))
    except ValueError:
        raise EngineRefused(status, '%s answered %s with something that is not JSON' % (where, status))


def safe_url(url):
    """The URL without credentials or query (for messages)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ''
    if parts.port:
        host = '%s:%d' % (host, parts.port)
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, '', ''))


# -- Event-Driven Ansible: the rulebook's webhook --------------------------------------------

def eda_submit(url, secret, request, timeout=TIMEOUT):
    """POST the contract's request to the rulebook's webhook; the engine's JSON answer (202)."""
    payload = {key: request[key] for key in
               ('action', 'request_id', 'partner', 'from_stage', 'to_stage', 'user')}
    status, body = http_json('POST', url, secret, payload, timeout=timeout)
    if status != 202 or not isinstance(body, dict) or not body.get('accepted'):
        raise EngineRefused(status, '%s answered %s without accepting the request'
                            % (safe_url(url), status))
    return body


# -- AWX / Automation Controller ---------------------------------------------------------------

# AWX's job states (api/v2/jobs/<id>/ "status") as the page's states.
AWX_STATES = {
    'new': 'running', 'pending': 'running', 'waiting': 'running', 'running': 'running',
    'successful': 'done', 'failed': 'failed', 'error': 'failed', 'canceled': 'failed',
}


class AwxClient:
    """AWX's REST API v2 with an OAuth2 token: launch the "Push branding" job template and
    follow its job."""

    def __init__(self, url, token, timeout=TIMEOUT):
        self.base = url.rstrip('/')
        self.token = token
        self.timeout = timeout

    def api(self, path):
        return '%s/api/v2/%s' % (self.base, path.lstrip('/'))

    def template_id(self, template):
        """The job template's id: given as an id, or looked up by its exact name."""
        if isinstance(template, int) or str(template).isdigit():
            return int(template)
        query = urllib.parse.urlencode({'name': template})
        _unused, body = http_json('GET', self.api('job_templates/?' + query), self.token,
                                  timeout=self.timeout)
        results = (body or {}).get('results') or []
        if len(results) != 1:
            raise EngineRefused(404, 'AWX has %d job templates named %r (set '
                                'zopeops_push_awx_job_template to its id)' % (len(results), template))
        return int(results[0]['id'])

    def launch(self, template, request):
        """Launch the template for a push (job type run) or a check (job type check):
        (the job's id, the names of the fields AWX ignored). The survey's answers and the
        page's variables go in extra_vars."""
        extra_vars = {
            'partner': request['partner'],
            'from_stage': request['from_stage'],
            'to_stage': request['to_stage'],
            'push_branding_by': request['user'],
            'push_branding_request_id': request['request_id'],
            'push_branding_via': 'page',
        }
        payload = {'extra_vars': extra_vars}
        if request['action'] == 'check':
            payload['job_type'] = 'check'
        url = self.api('job_templates/%d/launch/' % self.template_id(template))
        status, body = http_json('POST', url, self.token, payload, timeout=self.timeout)
        job = (body or {}).get('job') or (body or {}).get('id')
        if status not in (200, 201) or not job:
            raise EngineRefused(status, 'AWX answered %s without a job' % status)
        # AWX drops what the template does not prompt for (ask_variables_on_launch,
        # ask_job_type_on_launch) and names it here: the job runs, the page warns.
        ignored = sorted((body or {}).get('ignored_fields') or {})
        return int(job), ignored

    def job(self, job_id):
        """(page state, AWX status, the job's JSON) of a job."""
        _unused, body = http_json('GET', self.api('jobs/%d/' % int(job_id)), self.token,
                                  timeout=self.timeout)
        status = (body or {}).get('status', 'unknown')
        return AWX_STATES.get(status, 'running'), status, body or {}

    def stdout_url(self, job_id):
        """The job's output as text (AWX's own page; AWX redacts its credentials there)."""
        return self.api('jobs/%d/stdout/?format=txt' % int(job_id))
