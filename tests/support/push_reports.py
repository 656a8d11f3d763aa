"""A stand-in for the push page's report endpoint (POST <stage>/zopeops_push_report): an HTTP
server on 127.0.0.1 that keeps every report it is sent with the right bearer secret (204)
and answers 401 to any other."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .ports import free_port


class ReportSink:
    """``with ReportSink(secret) as sink:`` ... ``sink.url`` (the stage URL the callback is given),
    ``sink.reports`` (the JSON bodies, in order), ``sink.refused`` (requests answered 401)."""

    def __init__(self, secret):
        self.secret = secret
        self.reports = []
        self.refused = 0
        self.lock = threading.Lock()
        self.port = free_port()
        self.url = 'http://127.0.0.1:%d' % self.port
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                if (self.path != '/zopeops_push_report'
                        or self.headers.get('Authorization') != 'Bearer %s' % sink.secret):
                    with sink.lock:
                        sink.refused += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                with sink.lock:
                    sink.reports.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def of(self, request_id):
        with self.lock:
            return [r for r in self.reports if r.get('request_id') == request_id]

    def final(self, request_id, timeout=0):
        """The report with state done/failed/refused of a request (waits up to timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            ends = [r for r in self.of(request_id) if r['state'] != 'running']
            if ends or time.monotonic() >= deadline:
                return ends[-1] if ends else None
            time.sleep(0.2)
