"""A tiny HTTP server standing in for a Zope client: ``python backend.py <port> <name>``.

GET / answers ``<name>``; GET /slow?seconds=N answers after N seconds (a request in flight
during a switch); POST/PUT/PATCH/DELETE read the body and answer ``<method> <name>``, after N
seconds on /slow?seconds=N (a write in flight during a freeze). POST /@@zopeops-write id=<id>
answers the demo app's JSON ``{"id", "instance", "client"}`` (for support/writeload.py).
HTTP/1.1 with keep-alive, like waitress.
"""
from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def _answer(self, text):
        body = text.encode()
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _maybe_slow(self):
        url = urlparse(self.path)
        if url.path == '/slow':
            time.sleep(float(parse_qs(url.query).get('seconds', ['1'])[0]))

    def do_GET(self):
        self._maybe_slow()
        self._answer(self.server.name)

    def _write(self):
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length)
        self._maybe_slow()
        if urlparse(self.path).path == '/@@zopeops-write':
            write_id = parse_qs(body.decode()).get('id', [''])[0]
            self._answer(json.dumps({'id': write_id, 'instance': self.server.name,
                                     'client': self.server.name}))
            return
        self._answer('%s %s' % (self.command, self.server.name))

    do_POST = do_PUT = do_PATCH = do_DELETE = _write

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.name = sys.argv[2]
    server.serve_forever()


if __name__ == '__main__':
    main()
