"""A bounded load generator: continuous GETs to one URL from a few threads, counting outcomes.

Traffic goes only to the URL given (127.0.0.1 in tests). It stops when the ``with`` block
ends, or by itself after ``max_seconds``.
"""
from __future__ import annotations

import collections
import threading
import time

import requests


class LoadGenerator:
    def __init__(self, url, threads=2, max_seconds=900, timeout=30, pause=0.02):
        self.url = url
        self.threads = threads
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.pause = pause
        self.ok = 0
        self.failures = []
        self.statuses = collections.Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = []

    def _work(self):
        deadline = time.monotonic() + self.max_seconds
        session = requests.Session()
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                response = session.get(self.url, timeout=self.timeout, allow_redirects=False)
                status, error = response.status_code, None
            except requests.RequestException as exc:
                status, error = None, '%s: %s' % (type(exc).__name__, exc)
                session = requests.Session()
            with self._lock:
                self.statuses[status] += 1
                if status is not None and status < 400:
                    self.ok += 1
                else:
                    self.failures.append((time.time(), status, error))
            time.sleep(self.pause)

    def __enter__(self):
        for thread_number in range(self.threads):
            worker = threading.Thread(target=self._work, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 5)

    @property
    def total(self):
        return self.ok + len(self.failures)

    def report(self):
        return '%d requests, %d failed, statuses %s, first failures %s' % (
            self.total, len(self.failures), dict(self.statuses), self.failures[:5])
