# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which code revision a running Zope client serves, proven one of three ways.

The application contract (docs/applications.md) lets an application choose how the revision
it runs is proven, with the inventory variable ``zopeops_revision_proof``:

``release`` (the default; needs no code in the application)
    The ``REVISION`` file of the release the running process was started from. The process
    managers start every client with its working directory at ``<instance>/current``; the
    kernel resolves that link once, at the start, so ``/proc/<pid>/cwd`` names the release
    the process really runs even after ``current`` was switched to another one. The pid
    comes from the process manager, so this proof is made on the client's own host.
``json``
    A page (``zopeops_revision_json_path``) answers JSON; a dotted key
    (``zopeops_revision_json_key``) holds the revision.
``regex``
    A page (``zopeops_revision_page``) is searched with ``zopeops_revision_regex``; group 1
    is the revision.

Whatever the proof, the client must also answer ``zopeops_health_path`` with HTTP 200.
A failed health check and a proof that cannot be read are told apart (``health_error`` and
``proof_error``): a client that answers its health page but whose revision page is missing
is not unhealthy, its proof is misconfigured, and the message names the variable to set.
"""
from __future__ import annotations

import os

from ansible_collections.zopeops.stages.plugins.module_utils.http_checks import (
    Check, check_once)

PROOFS = ('release', 'json', 'regex')

# The inventory variables, for messages that say what to change.
VARIABLE = {
    'proof': 'zopeops_revision_proof',
    'health_path': 'zopeops_health_path',
    'json_path': 'zopeops_revision_json_path',
    'json_key': 'zopeops_revision_json_key',
    'page': 'zopeops_revision_page',
    'regex': 'zopeops_revision_regex',
}


def proof_problems(proof, health_path, page=None, json_key=None, regex=None):
    """Every mistake in a revision-proof setting, each naming the inventory variable."""
    problems = []
    if proof not in PROOFS:
        problems.append('%s is %r; choose one of %s (release needs no code in the application)'
                        % (VARIABLE['proof'], proof, ', '.join(PROOFS)))
        return problems
    if not str(health_path or '').startswith('/'):
        problems.append('%s is %r; set it to a path (starting with /) that every Zope client '
                        'answers with HTTP 200, e.g. / or /Plone'
                        % (VARIABLE['health_path'], health_path))
    if proof == 'json':
        if not str(page or '').startswith('/'):
            problems.append('%s is json, so %s must be the path of a page answering JSON '
                            '(e.g. /@@zopeops-info); it is %r'
                            % (VARIABLE['proof'], VARIABLE['json_path'], page or ''))
        if not json_key:
            problems.append('%s is json, so %s must name the key holding the revision '
                            '(e.g. revision)' % (VARIABLE['proof'], VARIABLE['json_key']))
    if proof == 'regex':
        if not str(page or '').startswith('/'):
            problems.append('%s is regex, so %s must be the path of the page showing the '
                            'revision; it is %r' % (VARIABLE['proof'], VARIABLE['page'],
                                                    page or ''))
        if not regex:
            problems.append('%s is regex, so %s must be a regular expression whose group 1 '
                            'is the revision' % (VARIABLE['proof'], VARIABLE['regex']))
    return problems


def release_revision(pid, proc='/proc'):
    """(revision, problem): the REVISION file of the folder process ``pid`` was started in."""
    if not pid:
        return None, ('the process manager reports no pid for it, so the release it runs '
                      'cannot be read (%s=release)' % VARIABLE['proof'])
    try:
        cwd = os.readlink(os.path.join(proc, str(pid), 'cwd'))
    except OSError as exc:
        return None, ('the working folder of pid %s cannot be read (%s): run the check as '
                      'the account that runs the clients, or root (%s=release)'
                      % (pid, exc.strerror or exc, VARIABLE['proof']))
    if cwd.endswith(' (deleted)'):
        return None, ('pid %s runs from %s, a release that was deleted since it started'
                      % (pid, cwd[:-len(' (deleted)')]))
    try:
        with open(os.path.join(cwd, 'REVISION')) as handle:
            revision = handle.read().strip()
    except OSError:
        return None, ('pid %s was started in %s, which holds no REVISION file, so it was '
                      'not started from a release: its process-manager program must start it '
                      'in <instance>/current (re-run site.yml and restart it), or set %s to '
                      'json or regex' % (pid, cwd, VARIABLE['proof']))
    return revision or None, (None if revision else 'the REVISION file in %s is empty' % cwd)


class RevisionProof:
    """How to prove the revision of a Zope client, from the module options of that name.

    ``health_path`` must answer 200; ``proof`` is release, json or regex (None: health only);
    ``page`` is the json or regex page (default: the health path).
    """

    def __init__(self, health_path='/', proof=None, page=None, json_key=None, regex=None):
        self.health_path = health_path or '/'
        self.proof = proof or None
        self.page = page or self.health_path
        self.json_key = json_key if proof == 'json' else None
        self.regex = regex if proof == 'regex' else None

    @classmethod
    def from_params(cls, params):
        """From a module's health_path, revision_proof, revision_page, revision_json_key and
        revision_regex; an older call giving only a key or regex means json or regex."""
        proof = params.get('revision_proof')
        if not proof and params.get('revision_json_key'):
            proof = 'json'
        elif not proof and params.get('revision_regex'):
            proof = 'regex'
        return cls(params.get('health_path'), proof, params.get('revision_page'),
                   params.get('revision_json_key'), params.get('revision_regex'))

    def problems(self):
        if self.proof is None:
            return []
        return proof_problems(self.proof, self.health_path, self.page, self.json_key,
                              self.regex)

    @property
    def page_variable(self):
        return VARIABLE['json_path'] if self.proof == 'json' else VARIABLE['page']

    def prove(self, base_url, fetch, headers=None, timeout=3.0, expected=None, pid_of=None,
              proc='/proc'):
        """One attempt: {ok, status, latency, revision, health_error, proof_error, mismatch,
        error, body}. ``pid_of`` (no argument, returns the pid) serves the release proof;
        ``body`` is the text of the revision page (json, regex) or of the health page."""
        base = base_url.rstrip('/')
        bodies = {}

        def fetch_kept(url, *args):
            status, body = fetch(url, *args)
            bodies[url] = body
            return status, body

        on_health_page = self.proof in ('json', 'regex') and self.page == self.health_path
        health = Check(base + self.health_path, status_codes=(200,),
                       revision_json_key=self.json_key if on_health_page else None,
                       revision_regex=self.regex if on_health_page else None)
        answer = check_once(health, fetch_kept, headers or {}, None, timeout, True)
        result = {'ok': False, 'status': answer['status'], 'latency': answer['latency'],
                  'revision': None, 'health_error': None, 'proof_error': None,
                  'mismatch': False, 'error': None, 'body': bodies.get(health.url)}
        if answer['status'] != 200:
            result['health_error'] = '%s: %s' % (self.health_path, answer['error'])
            result['error'] = '%s (%s)' % (result['health_error'], VARIABLE['health_path'])
            return result
        revision, problem = None, None
        if self.proof == 'release':
            revision, problem = release_revision(pid_of() if pid_of else None, proc)
        elif on_health_page:
            revision, problem = answer['revision'], (None if answer['ok'] else answer['error'])
        elif self.proof in ('json', 'regex'):
            page = Check(base + self.page, status_codes=(200,), revision_json_key=self.json_key,
                         revision_regex=self.regex)
            seen = check_once(page, fetch_kept, headers or {}, None, timeout, True)
            result['body'] = bodies.get(page.url)
            revision = seen['revision']
            if seen['status'] is None:
                problem = 'the revision page %s: %s' % (self.page, seen['error'])
            elif seen['status'] != 200:
                problem = 'the revision page %s answers HTTP %s, not 200' % (self.page,
                                                                             seen['status'])
            elif not seen['ok']:
                problem = seen['error']
        if problem and self.proof in ('json', 'regex'):
            problem = '%s; set %s and %s to where the application shows its revision, or %s ' \
                'to release' % (problem, self.page_variable,
                                VARIABLE['json_key'] if self.proof == 'json'
                                else VARIABLE['regex'], VARIABLE['proof'])
        result['revision'] = revision
        if problem:
            result['proof_error'] = problem
        elif expected and revision != expected:
            result['mismatch'] = True
            result['proof_error'] = 'serves revision %s, expected %s' % (revision, expected)
        result['error'] = result['proof_error']
        result['ok'] = result['error'] is None
        return result
