"""A git server over HTTP with basic auth, for tests: git's own ``git http-backend`` (CGI)
behind Python's http.server, on a free port of 127.0.0.1.

Every request without the right ``Authorization`` is answered 401, so a fetch that succeeds
proves the client sent the credentials. While it handles a request (the git client is then
running, waiting for the answer), the server reads the command line of every process of the
machine and records those holding ``watch`` (the secret): ``argv_hits`` must stay empty.
"""
from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def processes_holding(secret):
    """(pid, argv) of every process whose command line holds ``secret`` right now."""
    needle = secret.encode()
    hits = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                cmdline = handle.read()
        except OSError:
            continue  # gone meanwhile
        if needle in cmdline:
            hits.append((int(entry), cmdline.split(b'\0')))
    return hits


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self._serve()

    def do_POST(self):
        self._serve()

    def _serve(self):
        server = self.server
        with server.lock:
            server.requests += 1
            server.argv_hits.extend(processes_holding(server.watch))
            server.processes_seen += 1
        if self.headers.get('Authorization') != server.expected_auth:
            with server.lock:
                server.refused += 1
            self.send_response(401)
            self.send_header('WWW-Authenticate', 'Basic realm="git"')
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        with server.lock:
            server.authorized += 1
        url = urlsplit(self.path)
        env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'),
               'GIT_PROJECT_ROOT': server.project_root, 'GIT_HTTP_EXPORT_ALL': '1',
               'GATEWAY_INTERFACE': 'CGI/1.1', 'SERVER_PROTOCOL': 'HTTP/1.0',
               'REQUEST_METHOD': self.command, 'PATH_INFO': url.path,
               'QUERY_STRING': url.query, 'REMOTE_USER': 'deployer',
               'REMOTE_ADDR': '127.0.0.1', 'CONTENT_TYPE': self.headers.get('Content-Type', '')}
        for header, name in (('Git-Protocol', 'GIT_PROTOCOL'),
                             ('Content-Encoding', 'HTTP_CONTENT_ENCODING')):
            if self.headers.get(header):
                env[name] = self.headers[header]
        body = b''
        if self.headers.get('Content-Length'):
            env['CONTENT_LENGTH'] = self.headers['Content-Length']
            body = self.rfile.read(int(self.headers['Content-Length']))
        elif self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            body = self._read_chunked()
            env['CONTENT_LENGTH'] = str(len(body))
        proc = subprocess.run(['git', 'http-backend'], input=body, env=env,
                              capture_output=True, check=False, timeout=60)
        head, separator, payload = proc.stdout.partition(b'\r\n\r\n')
        if not separator:
            head, separator, payload = proc.stdout.partition(b'\n\n')
        status, headers = 200, []
        for line in head.decode('latin-1').splitlines():
            name, value = line.partition(':')[::2]
            if name.lower() == 'status':
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header('Content-Length', str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_chunked(self):
        body = b''
        while True:
            size = int(self.rfile.readline().split(b';')[0].strip(), 16)
            if size == 0:
                self.rfile.readline()
                return body
            body += self.rfile.read(size)
            self.rfile.readline()

    def log_message(self, *args):
        pass


class GitHTTPServer(ThreadingHTTPServer):
    """Serves the bare repositories under ``project_root`` at http://127.0.0.1:<port>/<name>,
    to ``username``/``password`` only."""

    daemon_threads = True

    def __init__(self, project_root, username, password):
        super().__init__(('127.0.0.1', 0), _Handler)
        self.project_root = str(project_root)
        self.expected_auth = 'Basic ' + base64.b64encode(
            ('%s:%s' % (username, password)).encode()).decode()
        self.watch = password
        self.lock = threading.Lock()
        self.requests = self.authorized = self.refused = self.processes_seen = 0
        self.argv_hits = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self):
        return self.server_address[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
        self._thread.join(10)
