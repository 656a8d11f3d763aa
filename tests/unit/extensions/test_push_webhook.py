"""The push_webhook event source: its coroutine serving a real local port, answered over HTTP.

Loaded the way ansible-rulebook loads a collection's source (runpy on the file), so the tests
see what the rulebook sees: ``main(queue, args)`` and what it puts on the queue.
"""
from __future__ import annotations

import asyncio
import json
import logging
import runpy

import aiohttp
import pytest

from support.paths import REPO
from support.ports import free_port

SOURCE = REPO / 'extensions' / 'eda' / 'plugins' / 'event_source' / 'push_webhook.py'
TOKEN = 'tok-' + 'x9' * 16
PAIRS = [['dev', 'beta'], ['dev', 'test'], ['beta', 'test']]
GOOD = {'action': 'push', 'request_id': 'a' * 32, 'partner': 'acme', 'from_stage': 'dev',
        'to_stage': 'beta', 'user': 'webdev@example.org'}


@pytest.fixture(scope='module')
def plugin():
    return runpy.run_path(str(SOURCE))


def exchange(plugin, requests, args=None):
    """Start main() on a free port, send ``requests`` [(method, path, headers, body)], stop it.
    -> ([(status, json)], [queued events])."""
    port = free_port()
    queue = asyncio.Queue()

    async def scenario():
        server = asyncio.create_task(plugin['main'](queue, dict(
            {'port': port, 'token': TOKEN, 'allowed_pairs': PAIRS}, **(args or {}))))
        answers = []
        try:
            async with aiohttp.ClientSession() as session:
                for _attempt in range(100):
                    try:
                        async with session.get('http://127.0.0.1:%d/' % port):
                            break
                    except aiohttp.ClientConnectionError:
                        assert not server.done(), server.exception()
                        await asyncio.sleep(0.05)
                for method, path, headers, body in requests:
                    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
                    async with session.request(method, 'http://127.0.0.1:%d%s' % (port, path),
                                               headers=headers, data=data) as response:
                        answers.append((response.status, await response.json()))
        finally:
            server.cancel()
            await asyncio.gather(server, return_exceptions=True)
        return answers

    answers = asyncio.run(scenario())
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return answers, events


def bearer(token=TOKEN):
    return {'Authorization': 'Bearer %s' % token, 'Content-Type': 'application/json'}


def test_a_valid_request_is_queued_and_accepted(plugin):
    answers, events = exchange(plugin, [('POST', '/push', bearer(), dict(GOOD, action='check'))])
    assert answers == [(202, {'accepted': True, 'request_id': 'a' * 32})]
    assert events == [{'push_request': dict(GOOD, action='check')}]


@pytest.mark.parametrize('headers', [
    {}, {'Authorization': 'Bearer wrong'}, {'Authorization': 'Basic ' + TOKEN},
    {'Authorization': 'Bearer ' + TOKEN[:-1]}, {'Authorization': 'Bearer'}],
    ids=['none', 'wrong', 'basic', 'prefix', 'empty'])
def test_without_the_token_401_and_nothing_queued(plugin, headers, caplog):
    with caplog.at_level(logging.DEBUG):
        answers, events = exchange(plugin, [('POST', '/push', headers, GOOD)])
    assert answers == [(401, {'error': 'Missing or wrong bearer token.'})]
    assert events == []
    assert TOKEN not in caplog.text and TOKEN[:-1] not in caplog.text


@pytest.mark.parametrize('body, field', [
    ('{not json', 'not valid JSON'),
    ([1, 2], 'must be a JSON object'),
    (dict(GOOD, action='delete'), 'Field action: must be one of push, check, not "delete"'),
    ({k: v for k, v in GOOD.items() if k != 'action'}, 'Field action'),
    (dict(GOOD, partner='../etc'), 'Field partner: must be a partner name'),
    (dict(GOOD, partner='Acme'), 'Field partner'),
    (dict(GOOD, partner='a' * 65), 'Field partner'),
    (dict(GOOD, request_id='A' * 32), 'Field request_id: must be 32 lowercase hex'),
    ({k: v for k, v in GOOD.items() if k != 'user'}, 'Field user: must be a user id of 1 to 100 characters: letters, digits, "@", ".", "_" or "-" (missing)'),
    (dict(GOOD, user='x; rm -rf /'), 'Field user'),
    (dict(GOOD, user='a' * 101), 'Field user'),
    (dict(GOOD, user=7), 'Field user'),
    (dict(GOOD, from_stage='Dev'), 'Field from_stage'),
    (dict(GOOD, to_stage=''), 'Field to_stage'),
])
def test_a_malformed_request_400_names_the_field(plugin, body, field):
    answers, events = exchange(plugin, [('POST', '/push', bearer(), body)])
    assert answers[0][0] == 400 and field in answers[0][1]['error'], answers
    assert events == []


def test_a_pair_that_is_not_downstream_422(plugin):
    answers, events = exchange(plugin, [
        ('POST', '/push', bearer(), dict(GOOD, from_stage='beta', to_stage='dev')),
        ('POST', '/push', bearer(), dict(GOOD, from_stage='dev', to_stage='prod'))])
    assert [status for status, _body in answers] == [422, 422]
    assert 'Stage dev is not downstream of beta' in answers[0][1]['error']
    assert 'dev -> beta' in answers[0][1]['error']
    assert events == []


def test_other_paths_404_and_other_methods_405(plugin):
    answers, events = exchange(plugin, [
        ('GET', '/push', bearer(), ''), ('PUT', '/push', bearer(), GOOD),
        ('POST', '/other', bearer(), GOOD), ('GET', '/', {}, '')])
    assert [status for status, _body in answers] == [405, 405, 404, 404]
    assert events == []


def test_the_token_is_read_from_its_file(plugin, tmp_path):
    token_file = tmp_path / 'token'
    token_file.write_text(TOKEN + '\n')
    answers, events = exchange(plugin, [('POST', '/push', bearer(), GOOD)],
                               {'token': None, 'token_file': str(token_file)})
    assert answers[0][0] == 202 and len(events) == 1


@pytest.mark.parametrize('args, message', [
    ({'token': None}, 'give the argument token or token_file'),
    ({'token': None, 'token_file': '/nonexistent/x'}, 'cannot read token_file /nonexistent/x'),
    ({'port': 'http'}, 'port must be a port number'),
    ({'allowed_pairs': 'dev,beta'}, 'allowed_pairs must be a list'),
])
def test_wrong_arguments_stop_the_source_saying_which(plugin, args, message):
    queue = asyncio.Queue()
    with pytest.raises(ValueError, match=message):
        asyncio.run(plugin['main'](queue, dict(
            {'port': free_port(), 'token': TOKEN, 'allowed_pairs': PAIRS}, **args)))
