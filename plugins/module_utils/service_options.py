# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""zeo_service's options beyond its argument spec: what cannot work is refused before any
process manager is asked, naming every program concerned and what to do."""
from __future__ import annotations

import re
import socket

from ansible_collections.zopeops.stages.plugins.module_utils.readiness import parse_address
from ansible_collections.zopeops.stages.plugins.module_utils.revision_proof import RevisionProof
from ansible_collections.zopeops.stages.plugins.module_utils.service_engine import (
    proves_revision)
from ansible_collections.zopeops.stages.plugins.module_utils.zodb_format import normalize_tid


class OptionError(ValueError):
    """An option that cannot work; the message is the module's error."""


def _refuse(what, text):
    raise OptionError('zeo_service %s: %s' % (what, text))


def _check_address(what, kind, address):
    try:
        family = parse_address(address)[0]
    except ValueError as exc:
        _refuse(what, '%s.' % exc)
    if kind == 'zope' and family == socket.AF_UNIX:
        _refuse(what, 'a Zope client is checked over HTTP, so its address must be host:port, '
                      'not %r.' % address)


def _check_programs(params, what):
    """The programs of the call (O(programs), or the one of O(name)) -> their kinds."""
    if params['programs'] is None:
        if params.get('address'):
            _check_address(what, params['kind'], params['address'])
        elif params['state'] != 'stopped':
            _refuse(what, 'address is required with state=%s, to check that the program is '
                          'ready.' % params['state'])
        return {params['kind']}
    if not params['programs']:
        raise OptionError('zeo_service: programs is empty; list the programs of the side '
                          '(name, address, log_path), or use name.')
    names = [program['name'] for program in params['programs']]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        _refuse(what, 'programs lists %s more than once.' % ', '.join(twice))
    untyped = [program['name'] for program in params['programs']
               if not (program.get('kind') or params['kind'])]
    if untyped:
        _refuse(what, 'say what %s %s: kind (zeo, zope or listener), for the call or for each program.'
                % (', '.join(untyped), 'is' if len(untyped) == 1 else 'are'))
    missing = [program['name'] for program in params['programs'] if not program.get('address')]
    if params['state'] != 'stopped' and missing:
        _refuse(what, 'address is required with state=%s for every program, to check that it '
                      'is ready; missing for %s.' % (params['state'], ', '.join(missing)))
    for program in params['programs']:
        if program.get('address'):
            _check_address(program['name'], program.get('kind') or params['kind'],
                           program['address'])
    return {program.get('kind') or params['kind'] for program in params['programs']}


def _check_revision(params, what, kinds):
    wants_revision = any(params.get(key) for key in (
        'expected_revision', 'revision_proof', 'revision_json_key', 'revision_regex'))
    if wants_revision and 'zope' not in kinds:
        _refuse(what, 'expected_revision, revision_proof, revision_json_key and revision_regex '
                      'are only for kind=zope.')
    if params.get('expected_revision') and not proves_revision(params):
        _refuse(what, 'expected_revision needs revision_proof (release, json with '
                      'revision_json_key, or regex with revision_regex) to say how the '
                      'revision is proven.')
    if params.get('revision_json_key') and params.get('revision_regex'):
        _refuse(what, 'give revision_json_key or revision_regex, not both.')
    if proves_revision(params):
        problems = RevisionProof.from_params(params).problems()
        if problems:
            _refuse(what, 'the revision proof is not usable: %s.' % '; '.join(problems))
    if params.get('revision_regex'):
        try:
            groups = re.compile(params['revision_regex']).groups
        except re.error as exc:
            _refuse(what, 'revision_regex %r is not a valid regular expression: %s.'
                    % (params['revision_regex'], exc))
        if groups < 1:
            _refuse(what, 'revision_regex %r has no group: group 1 must capture the revision.'
                    % params['revision_regex'])


def check_options(params):
    """Refuse (OptionError) what cannot work; normalize health_path to start with '/'."""
    what = params['name'] or ', '.join(p['name'] for p in params['programs'] or [])
    kinds = _check_programs(params, what)
    if params.get('expected_tid'):
        if 'zeo' not in kinds:
            _refuse(what, 'expected_tid is only for kind=zeo.')
        try:
            normalize_tid(params['expected_tid'])
        except ValueError as exc:
            _refuse(what, 'expected_tid: %s.' % exc)
    _check_revision(params, what, kinds)
    if not params['health_path'].startswith('/'):
        params['health_path'] = '/' + params['health_path']
    if params['timeout'] < 1:
        _refuse(what, 'timeout must be at least 1 second.')
