# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP health checks: many URLs at once, each retried until an overall deadline.

A check passes when the status is one of its ``status_codes``, the body matches its
``body_regex`` (if any), the answer came within ``max_latency`` (if set) and the revision read
from the body equals ``expected_revision`` (if set). Failing checks are retried with backoff
(0.2 s doubling to 2 s) until they pass or the deadline is reached; all URLs run concurrently,
one thread each, so the whole check takes about as long as the slowest URL.

Secrets (basic-auth password, header values such as Authorization, credentials written into a
URL) never appear in results or error texts: URLs are shown without their user:password part
and every text is scrubbed of the secret values before it is returned.
"""
from __future__ import annotations

import base64
import importlib.util
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from ansible_collections.zopeops.stages.plugins.module_utils.redact import redact_url

# requests is imported on first use, not here: this file is also imported on the controller
# (through revision_proof, by the pipeline filters), where importing requests cost every
# forked worker about a quarter of a second for nothing (docs/benchmarks.md).
HAS_REQUESTS = importlib.util.find_spec('requests') is not None


def _requests():
    import requests  # pylint: disable=import-outside-toplevel
    return requests


MAX_BODY_BYTES = 1024 * 1024
MAX_WORKERS = 32


class CheckSpecError(ValueError):
    """The URL list cannot be checked; ``problems`` names every mistake."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__('; '.join(self.problems))


def basic_auth_token(username, password):
    raw = ('%s:%s' % (username or '', password or '')).encode('utf-8')
    return base64.b64encode(raw).decode('ascii')


class Check:
    """One URL to check, with its own expectations."""

    def __init__(self, url, name=None, host_header=None, status_codes=(200,), body_regex=None,
                 max_latency=None, expected_revision=None, revision_json_key=None,
                 revision_regex=None):
        self.url = url
        self.name = name or redact_url(url)
        self.host_header = host_header
        self.status_codes = [int(code) for code in status_codes]
        self.body_regex_text = body_regex
        self.body_regex = re.compile(body_regex) if body_regex else None
        self.max_latency = max_latency
        self.expected_revision = (str(expected_revision)
                                  if expected_revision not in (None, '') else None)
        self.revision_json_key = revision_json_key
        self.revision_regex = re.compile(revision_regex) if revision_regex else None

    @property
    def wants_revision(self):
        return bool(self.revision_json_key or self.revision_regex)


def build_checks(urls, status_codes=(200,), body_regex=None, max_latency=None,
                 expected_revision=None, revision_json_key=None, revision_regex=None):
    """Turn the module's ``urls`` (strings or dicts) into Checks; CheckSpecError lists all
    mistakes at once."""
    problems = []
    checks = []
    names = set()
    if expected_revision not in (None, '') and not (revision_json_key or revision_regex):
        problems.append('expected_revision needs revision_json_key or revision_regex to say '
                        'where the revision is in the body')
    if revision_regex:
        try:
            if re.compile(revision_regex).groups < 1:
                problems.append('revision_regex %r has no group: group 1 must capture the '
                                'revision' % revision_regex)
        except re.error as exc:
            problems.append('revision_regex %r is not a valid regular expression: %s'
                            % (revision_regex, exc))
    for index, item in enumerate(urls or []):
        spec = {'url': item} if isinstance(item, str) else item
        if not isinstance(spec, dict) or not spec.get('url'):
            problems.append('urls[%d] must be a URL string or a dict with a url key' % index)
            continue
        unknown = set(spec) - {'url', 'name', 'host_header', 'status_codes', 'body_regex',
                               'max_latency'}
        if unknown:
            problems.append('urls[%d] has unknown keys: %s (known: url, name, host_header, '
                            'status_codes, body_regex, max_latency)'
                            % (index, ', '.join(sorted(unknown))))
            continue
        url = str(spec['url'])
        if urlsplit(url).scheme not in ('http', 'https') or not urlsplit(url).hostname:
            problems.append('urls[%d] %r is not an http:// or https:// URL'
                            % (index, redact_url(url)))
            continue
        regex = spec.get('body_regex', body_regex)
        try:
            codes = spec.get('status_codes') or status_codes
            codes = [int(code) for code in codes]
            check = Check(url, name=spec.get('name'), host_header=spec.get('host_header'),
                          status_codes=codes, body_regex=regex,
                          max_latency=spec.get('max_latency', max_latency),
                          expected_revision=expected_revision,
                          revision_json_key=revision_json_key, revision_regex=revision_regex)
        except re.error as exc:
            problems.append('urls[%d] body_regex %r is not a valid regular expression: %s'
                            % (index, regex, exc))
            continue
        except (TypeError, ValueError):
            problems.append('urls[%d] status_codes must be a list of integers' % index)
            continue
        if check.name in names:
            problems.append('urls[%d]: the name %r is used twice; give each URL its own name'
                            % (index, check.name))
            continue
        names.add(check.name)
        checks.append(check)
    if not urls:
        problems.append('urls is empty: give at least one URL to check')
    if problems:
        raise CheckSpecError(problems)
    return checks


def lookup_dotted(document, key):
    """``{'a': {'b': 1}}`` + ``'a.b'`` -> 1 (list indexes allowed: ``items.0.id``)."""
    value = document
    for part in key.split('.'):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(key)
    return value


def read_revision(check, body):
    """The revision in ``body`` per the check's key/regex: (revision, problem)."""
    if check.revision_json_key:
        try:
            document = json.loads(body)
        except ValueError:
            return None, 'the body is not JSON, so revision_json_key %r cannot be read' % (
                check.revision_json_key)
        try:
            value = lookup_dotted(document, check.revision_json_key)
        except KeyError:
            return None, 'the JSON body has no key %r' % check.revision_json_key
        return (str(value) if value is not None else None), None
    match = check.revision_regex.search(body)
    if not match:
        return None, 'revision_regex %r does not match the body' % check.revision_regex.pattern
    return match.group(1), None


def fetch_with_requests(url, headers, auth, timeout, validate_certs, follow_redirects):
    """GET ``url`` with requests; return (status, body text)."""
    response = _requests().get(url, headers=headers, auth=auth, timeout=timeout,
                               verify=validate_certs, allow_redirects=follow_redirects,
                               stream=True)
    try:
        body = response.raw.read(MAX_BODY_BYTES, decode_content=True)
    finally:
        response.close()
    encoding = response.encoding or 'utf-8'
    return response.status_code, body.decode(encoding, errors='replace')


def fetch_with_ansible(url, headers, auth, timeout, validate_certs, follow_redirects):
    """GET ``url`` with ansible.module_utils.urls (when requests is missing)."""
    from urllib.error import HTTPError

    from ansible.module_utils.urls import open_url

    headers = dict(headers)
    if auth:
        headers['Authorization'] = 'Basic ' + basic_auth_token(*auth)
    try:
        response = open_url(url, headers=headers, timeout=timeout, validate_certs=validate_certs,
                            follow_redirects='safe' if follow_redirects else 'none',
                            force_basic_auth=False)
        status = response.status
    except HTTPError as exc:
        response = exc
        status = exc.code
    body = response.read(MAX_BODY_BYTES) if hasattr(response, 'read') else b''
    return status, (body or b'').decode('utf-8', errors='replace')


def describe_error(exc):
    """A short, secret-free reason for a failed request."""
    if HAS_REQUESTS:
        requests = _requests()
        if isinstance(exc, requests.exceptions.SSLError):
            return 'TLS error (certificate not trusted? set validate_certs: false only for ' \
                   'self-signed test certificates)'
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return 'connect timed out'
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return 'no answer within request_timeout'
        if isinstance(exc, requests.exceptions.ConnectionError):
            text = str(exc)
            if 'Connection refused' in text:
                return 'connection refused (nothing listens there)'
            if 'Name or service not known' in text or 'NameResolutionError' in text:
                return 'host name does not resolve'
            return 'connection failed: %s' % type(exc).__name__
    text = str(exc)
    if 'Connection refused' in text:
        return 'connection refused (nothing listens there)'
    if 'timed out' in text:
        return 'no answer within request_timeout'
    return '%s: %s' % (type(exc).__name__, text[:200])


def check_once(check, fetch, base_headers, auth, timeout, validate_certs,
               follow_redirects=False, clock=time.monotonic):
    """One attempt at one URL: the per-URL result dict (without ``attempts``)."""
    headers = dict(base_headers or {})
    if check.host_header:
        headers['Host'] = check.host_header
    result = {'url': redact_url(check.url), 'name': check.name, 'status': None,
              'latency': None, 'matched': None, 'revision': None, 'error': None, 'ok': False}
    started = clock()
    try:
        status, body = fetch(check.url, headers, auth, timeout, validate_certs,
                             follow_redirects)
    except Exception as exc:  # noqa: BLE001 - every failure is reported per URL
        result['latency'] = round(clock() - started, 4)
        result['error'] = describe_error(exc)
        return result
    latency = clock() - started
    result.update(status=status, latency=round(latency, 4))
    problems = []
    if status not in check.status_codes:
        problems.append('HTTP %d, expected %s' % (
            status, ' or '.join(str(code) for code in check.status_codes)))
    if check.body_regex is not None:
        result['matched'] = bool(check.body_regex.search(body))
        if not result['matched']:
            problems.append('body does not match %r' % check.body_regex_text)
    if check.max_latency is not None and latency > check.max_latency:
        problems.append('answered in %.3fs, more than max_latency %ss'
                        % (latency, check.max_latency))
    if check.wants_revision:
        revision, problem = read_revision(check, body)
        result['revision'] = revision
        if problem:
            problems.append(problem)
        elif check.expected_revision is not None and revision != check.expected_revision:
            problems.append('serves revision %s, expected %s'
                            % (revision, check.expected_revision))
    result['error'] = '; '.join(problems) or None
    result['ok'] = not problems
    return result


def check_until(check, deadline, request_timeout, stop, clock=time.monotonic,
                sleep=None, **attempt_args):
    """Retry one check with backoff until it passes or ``deadline`` (a clock value)."""
    sleep = sleep or stop.wait
    interval = 0.2
    attempts = 0
    answered = None
    while True:
        remaining = deadline - clock()
        attempts += 1
        timeout = max(0.1, min(request_timeout, remaining))
        result = check_once(check, timeout=timeout, clock=clock, **attempt_args)
        if result['status'] is None and timeout < request_timeout and (
                result['error'] or '').startswith('no answer'):
            # The deadline, not request_timeout, cut this attempt short. An earlier answer
            # says more about what is wrong than "no answer in the last few ms".
            result['error'] = 'no answer before the deadline (%.1fs were left)' % timeout
            if answered is not None:
                result = dict(answered, error='%s (the last retry was cut off by the '
                                              'deadline)' % answered['error'])
        elif result['status'] is not None:
            answered = result
        result['attempts'] = attempts
        remaining = deadline - clock()
        if result['ok'] or remaining <= 0 or stop.is_set():
            return result
        sleep(min(interval, remaining))
        interval = min(interval * 2, 2.0)
        if deadline - clock() <= 0:
            return result


def run_checks(checks, deadline_seconds, request_timeout, fetch=None, headers=None,
               auth=None, validate_certs=True, follow_redirects=False, clock=time.monotonic):
    """Check every URL concurrently until all pass or the deadline; results in input order."""
    fetch = fetch or (fetch_with_requests if HAS_REQUESTS else fetch_with_ansible)
    deadline = clock() + deadline_seconds
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, max(1, len(checks)))) as pool:
        futures = [pool.submit(check_until, check, deadline, request_timeout, stop,
                               clock=clock, fetch=fetch, base_headers=headers, auth=auth,
                               validate_certs=validate_certs,
                               follow_redirects=follow_redirects) for check in checks]
        try:
            return [future.result() for future in futures]
        finally:
            stop.set()


def failure_summary(results):
    """'name (url): why' (or 'url: why' for an unnamed URL) for every failed result."""
    lines = []
    for result in results:
        if result['ok']:
            continue
        where = result['url'] if result['name'] == result['url'] else '%s (%s)' % (
            result['name'], result['url'])
        lines.append('%s: %s' % (where, result['error'] or 'failed'))
    return lines
