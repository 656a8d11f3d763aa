# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""push_webhook: the push page's requests, as events of the push_branding rulebook.

An event source of ansible-rulebook (``main(queue, args)``): an HTTP server on ``host``:``port``
that takes one kind of request, ``POST /push`` with a bearer token and a JSON body

    {"action": "push" | "check", "request_id": "<32 hex>", "partner": "acme",
     "from_stage": "dev", "to_stage": "beta", "user": "<Zope user id>"}

and puts ``{"push_request": {...the validated fields...}}`` on the rulebook's queue. It answers
at once (the rulebook runs the playbook afterwards):

- 202 ``{"accepted": true, "request_id": ...}``: the event is queued;
- 401: no ``Authorization: Bearer <token>`` header, or not the token (compared in constant
  time; the token is never logged or echoed);
- 400: a body that is not a JSON object, an unknown action, a missing field or a field of the
  wrong format (the message names the field);
- 422: a (from_stage, to_stage) pair that is not one of ``allowed_pairs`` (the pipeline's
  downstream pairs, given by the role push_engine);
- 404 for any other path, 405 for any other method on /push.

Arguments (the rulebook's source arguments):

- ``host`` (default 127.0.0.1), ``port`` (required);
- ``token`` or ``token_file`` (a file holding the token; read at start): one is required;
- ``allowed_pairs``: a list of [from, to] pairs (required, may be empty: then every pair is
  refused).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from typing import Any

from aiohttp import web

LOGGER = logging.getLogger('zopeops.stages.push_webhook')

ACTIONS = ('push', 'check')
# The request's fields and their formats (the contract with the push page, docs/push_branding.md).
FIELDS = {
    'request_id': (re.compile(r'[0-9a-f]{32}'), '32 lowercase hex characters'),
    'partner': (re.compile(r'[a-z0-9][a-z0-9_-]{0,63}'),
                'a partner name: a-z, 0-9, "_" or "-", starting with a letter or digit, '
                'at most 64 characters'),
    'from_stage': (re.compile(r'[a-z][a-z0-9_]{0,63}'), 'a stage name'),
    'to_stage': (re.compile(r'[a-z][a-z0-9_]{0,63}'), 'a stage name'),
    'user': (re.compile(r'[A-Za-z0-9@._-]{1,100}'),
             'a user id of 1 to 100 characters: letters, digits, "@", ".", "_" or "-"'),
}
MAX_BODY = 16 * 1024
PATH = '/push'


class ConfigError(ValueError):
    """The source's arguments are wrong (the rulebook does not start)."""


def _answer(status, **body):
    return web.json_response(body, status=status)


def validate(body, allowed_pairs):
    """A request's JSON value -> (status, message or the validated request)."""
    if not isinstance(body, dict):
        return 400, 'The body must be a JSON object with the fields action, %s.' % ', '.join(FIELDS)
    action = body.get('action')
    if action not in ACTIONS:
        return 400, 'Field action: must be one of %s, not %s.' % (
            ', '.join(ACTIONS), json.dumps(action)[:80])
    request = {'action': action}
    for field, (pattern, what) in FIELDS.items():
        value = body.get(field)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            shown = 'missing' if field not in body else 'got %s' % json.dumps(value)[:80]
            return 400, 'Field %s: must be %s (%s).' % (field, what, shown)
        request[field] = value
    if (request['from_stage'], request['to_stage']) not in allowed_pairs:
        return 422, ('Stage %s is not downstream of %s in this pipeline: nothing was queued. '
                     'Allowed: %s.' % (request['to_stage'], request['from_stage'], ', '.join(
                         '%s -> %s' % pair for pair in sorted(allowed_pairs)) or 'none'))
    return 202, request


def _authorized(header, token):
    scheme, _sep, given = (header or '').partition(' ')
    if scheme.lower() != 'bearer' or not given:
        return False
    return hmac.compare_digest(given.strip().encode('utf-8'), token.encode('utf-8'))


def make_app(queue, token, allowed_pairs):
    """The aiohttp application; every answer is JSON."""

    async def push(request):
        if not _authorized(request.headers.get('Authorization'), token):
            LOGGER.warning('push_webhook: refused a request from %s without the right token',
                           request.remote)
            return _answer(401, error='Missing or wrong bearer token.')
        try:
            raw = await request.content.read(MAX_BODY + 1)
            if len(raw) > MAX_BODY:
                return _answer(400, error='The body is larger than %d bytes.' % MAX_BODY)
            body = json.loads(raw.decode('utf-8'))
        except (UnicodeDecodeError, ValueError):
            return _answer(400, error='The body is not valid JSON.')
        status, found = validate(body, allowed_pairs)
        if status != 202:
            LOGGER.info('push_webhook: %d %s', status, found)
            return _answer(status, error=found)
        await queue.put({'push_request': found})
        LOGGER.info('push_webhook: queued %s of %s %s -> %s for %s (request %s)',
                    found['action'], found['partner'], found['from_stage'], found['to_stage'],
                    found['user'], found['request_id'])
        return _answer(202, accepted=True, request_id=found['request_id'])

    async def not_allowed(_request):
        return _answer(405, error='Only POST is allowed on %s.' % PATH)

    async def not_found(_request):
        return _answer(404, error='Not found: the only path is %s.' % PATH)

    app = web.Application(client_max_size=MAX_BODY + 1024)
    app.router.add_post(PATH, push)
    app.router.add_route('*', PATH, not_allowed)
    app.router.add_route('*', '/{tail:.*}', not_found)
    return app


def settings(args):
    """The source's arguments -> (host, port, token, allowed pairs); ConfigError if wrong."""
    token = args.get('token')
    if not token and args.get('token_file'):
        try:
            with open(args['token_file'], encoding='utf-8') as handle:
                token = handle.read().strip()
        except OSError as error:
            raise ConfigError('push_webhook: cannot read token_file %s: %s'
                              % (args['token_file'], error.strerror)) from None
    if not token:
        raise ConfigError('push_webhook: give the argument token or token_file (a file holding '
                          'the shared secret of the push page).')
    try:
        port = int(args['port'])
    except (KeyError, TypeError, ValueError):
        raise ConfigError('push_webhook: the argument port must be a port number.') from None
    pairs = args.get('allowed_pairs')
    if not isinstance(pairs, list) or not all(
            isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in pairs):
        raise ConfigError('push_webhook: allowed_pairs must be a list of [from_stage, to_stage] '
                          'pairs.')
    return (args.get('host') or '127.0.0.1', port, token,
            frozenset((str(a), str(b)) for a, b in pairs))


async def main(queue: asyncio.Queue, args: dict[str, Any]) -> None:
    """Serve until cancelled (the rulebook's shutdown)."""
    host, port, token, pairs = settings(args)
    runner = web.AppRunner(make_app(queue, token, pairs), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    LOGGER.info('push_webhook: listening on http://%s:%d%s', host, port, PATH)
    try:
        await asyncio.Future()
    finally:
        await runner.cleanup()


if __name__ == '__main__':
    # By hand: python push_webhook.py PORT TOKEN  (prints the events it would queue).
    import sys

    class _Print(asyncio.Queue):
        async def put(self, item):
            print(json.dumps(item), flush=True)

    asyncio.run(main(_Print(), {'port': sys.argv[1], 'token': sys.argv[2],
                                'allowed_pairs': [['dev', 'beta']]}))
