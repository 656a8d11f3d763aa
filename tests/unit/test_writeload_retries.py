"""The write load's retries of a 500 (a commit that still conflicted after Zope's own retries),
against a small in-process HTTP server that plays the demo's write view."""
from __future__ import annotations

import collections
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from support.writeload import WriteLoad


class ConflictingView(BaseHTTPRequestHandler):
    """Answers 500 to the first ``server.failures`` attempts of each id, then the demo's JSON."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get('Content-Length', 0))).decode()
        write_id = parse_qs(body).get('id', [''])[0]
        self.server.attempts[write_id] += 1
        if self.server.attempts[write_id] <= self.server.failures:
            status, text = 500, 'Internal Server Error'
        else:
            status, text = 200, json.dumps({'id': write_id, 'instance': 'beta', 'client': 'c1'})
        data = text.encode()
        self.send_response(status)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def view():
    server = ThreadingHTTPServer(('127.0.0.1', 0), ConflictingView)
    server.attempts = collections.Counter()
    server.failures = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run(view, failures):
    view.failures = failures
    load = WriteLoad('http://127.0.0.1:%d' % view.server_address[1], auth=('admin', 'x'),
                     threads=1, max_writes=3, max_seconds=30)
    load.start()
    assert load.wait(30)
    return load


def test_a_conflict_answered_500_is_retried_with_the_same_id(view):
    load = run(view, failures=2)
    assert len(load.acknowledged) == 3 and not load.failed
    assert load.retried_500 == 6 and load.statuses[500] == 6
    assert all(entry['attempts'] == 3 for entry in load.acknowledged.values())


def test_a_500_that_persists_fails_the_write(view):
    load = run(view, failures=10)
    assert not load.acknowledged
    assert [(status, reason) for _id, status, reason in load.failed] == \
        [(500, 'Internal Server Error')] * 3
    assert all(view.attempts[write_id] == 4 for write_id, _s, _r in load.failed)
