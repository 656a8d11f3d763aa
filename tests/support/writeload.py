"""A bounded write load: threads POST uniquely named writes and log every acknowledged one.

The companion of ``load.py`` (reads): both point at a stage's HAProxy frontend while it is
promoted. Each write goes to the demo's ``@@zopeops-write`` with a fresh id ``w-<uuid>`` and
HTTP basic auth as the sandbox admin. A write is *acknowledged* when the answer is 200 with
its JSON (``{"id", "instance", "client"}``): Zope sends it only after the commit, so every
acknowledged id must later be found in the stage's ZODB (``zodbcheck.py``).

A 503 (a write freeze answers with ``Retry-After``) and a connection error or timeout are
retried with the same id, which the view treats as idempotent. A 500 is retried too, at most
``error_retries`` times per id: Zope answers 500 when a commit still conflicts after its own
retries (two writers splitting one BTree bucket at once: measured about 1 in 600 writes on a
loaded machine, with no promotion running), the write was not committed, and a client of an
idempotent write tries again, as the demo's view expects. Any other answer, or a 500 that
persists, fails that id. The load stops by itself after ``max_writes`` ids or ``max_seconds``, or at ``stop()``
(the end of the ``with`` block); an id still being retried then gets ``retry_grace`` seconds
more, after which it is counted as abandoned (never acknowledged: it may or may not be
stored). Only 127.0.0.1 URLs are used by the tests.

    with WriteLoad(lb_url, auth=admin_auth(password_file), threads=4, max_seconds=60) as load:
        ...promote...
    assert load.failed == [] and set(load.acknowledged) <= ids_in_the_zodb

The password is kept out of ``repr``, the report and the log. Another application's writes
(``plone_writes.py``) replace ``write_path`` and the two hooks ``_ready`` (may a writer start)
and ``_send`` (one attempt, and whether its answer acknowledges the write); the retries, the
limits and the bookkeeping stay the same.
"""
from __future__ import annotations

import collections
import json
import threading
import time
import uuid

import requests

WRITE_VIEW = '/@@zopeops-write'


def read_secret(path):
    """The text of a secret file (the sandbox's admin password), without its newline."""
    with open(path, encoding='utf-8') as handle:
        return handle.read().strip()


def admin_auth(password_file, user='admin'):
    """(user, password) for requests' ``auth``, the password read from ``password_file``."""
    return (user, read_secret(password_file))


def json_object(answer):
    """An HTTP answer's JSON object, or {} when it is not one."""
    try:
        payload = answer.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


class WriteLoad:
    """``threads`` writers POSTing unique ids to ``base_url`` + ``@@zopeops-write``.

    Attributes, readable while it runs and after:
      acknowledged  {id: {'instance', 'client', 'at' (epoch), 'attempts'}}, in ack order
      retried       how many retries were sent (503s plus connection errors)
      retried_503, retried_errors, retried_500   the same, split by cause
      failed        [(id, status or None, reason)] ids given up on a non-retryable answer
                    or after ``max_attempts``
      abandoned     [id] ids still unacknowledged when the load stopped (grace exhausted)
      statuses      Counter of every HTTP status seen (None for a connection error)
      started       ids sent at least once
    """

    write_path = WRITE_VIEW  # what each write is POSTed to, under ``base_url``

    def __init__(self, base_url, auth, threads=4, max_writes=None, max_seconds=60.0,
                 timeout=15.0, pause=0.0, retry_after_cap=1.0, max_attempts=200,
                 retry_grace=15.0, log_path=None, id_prefix='w-', error_retries=3):
        self.url = base_url.rstrip('/') + self.write_path
        self._auth = tuple(auth)
        self.threads = threads
        self.max_writes = max_writes
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.pause = pause
        self.retry_after_cap = retry_after_cap
        self.max_attempts = max_attempts
        self.retry_grace = retry_grace
        self.error_retries = error_retries
        self.log_path = log_path
        self.id_prefix = id_prefix
        self.acknowledged = collections.OrderedDict()
        self.retried_503 = 0
        self.retried_errors = 0
        self.retried_500 = 0
        self.failed = []
        self.abandoned = []
        self.statuses = collections.Counter()
        self.started = 0
        self.started_at = None
        self.stopped_at = None
        self._stop = threading.Event()
        self._stopped_at_monotonic = None
        self._lock = threading.Lock()
        self._workers = []
        self._log = None

    def __repr__(self):
        return '<WriteLoad %s threads=%d acknowledged=%d>' % (self.url, self.threads,
                                                              len(self.acknowledged))

    @property
    def retried(self):
        return self.retried_503 + self.retried_errors + self.retried_500

    # -- running ----------------------------------------------------------------------------
    def start(self):
        if self.log_path:
            self._log = open(self.log_path, 'a', encoding='utf-8')
        self.started_at = time.time()
        self._deadline = time.monotonic() + self.max_seconds
        for number in range(self.threads):
            worker = threading.Thread(target=self._work, name='writeload-%d' % number,
                                      daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self):
        """Stop sending new ids; wait for the writers (bounded by the retry grace)."""
        if self._stopped_at_monotonic is None:
            self._stopped_at_monotonic = time.monotonic()
        self._stop.set()
        self.wait(self.retry_grace + self.timeout + 5)

    def wait(self, timeout=None):
        """Wait until every writer has finished (by its limits, or after stop())."""
        limit = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if limit is None else max(0.0, limit - time.monotonic()))
        if not any(worker.is_alive() for worker in self._workers):
            self.stopped_at = self.stopped_at or time.time()
            if self._log is not None:
                self._log.close()
                self._log = None
            return True
        return False

    @property
    def running(self):
        return any(worker.is_alive() for worker in self._workers)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- one writer -------------------------------------------------------------------------
    def _next_id(self):
        with self._lock:
            if self._stop.is_set() or time.monotonic() >= self._deadline:
                return None
            if self.max_writes is not None and self.started >= self.max_writes:
                return None
            self.started += 1
        return '%s%s' % (self.id_prefix, uuid.uuid4().hex)

    def _give_up_at(self):
        """Monotonic time after which an id that is being retried is abandoned."""
        ends = [self._deadline]
        if self._stopped_at_monotonic is not None:
            ends.append(self._stopped_at_monotonic)
        return min(ends) + self.retry_grace

    def _session(self):
        session = requests.Session()
        session.auth = self._auth
        return session

    def _work(self):
        session = self._session()
        if not self._ready(session):
            return
        while True:
            write_id = self._next_id()
            if write_id is None:
                return
            session = self._write(session, write_id)
            if self.pause:
                time.sleep(self.pause)

    def _write(self, session, write_id):
        backoff = 0.05
        errors = 0
        for attempt in range(1, self.max_attempts + 1):
            try:
                answer, entry, reason = self._send(session, write_id, attempt)
            except requests.RequestException as exc:
                # The write may or may not have been applied: retrying the same id is safe.
                session.close()
                session = self._session()
                with self._lock:
                    self.statuses[None] += 1
                    self.retried_errors += 1
                reason = type(exc).__name__
                delay = backoff
                backoff = min(backoff * 2, 0.5)
            else:
                status = answer.status_code
                with self._lock:
                    self.statuses[status] += 1
                if entry is not None:
                    self._acknowledge(write_id, entry, attempt)
                    return session
                if status == 500 and errors < self.error_retries:
                    errors += 1
                    with self._lock:
                        self.retried_500 += 1
                    reason = '500'
                    delay = backoff
                    backoff = min(backoff * 2, 0.5)
                elif status != 503:
                    self._fail(write_id, status, reason)
                    return session
                else:
                    with self._lock:
                        self.retried_503 += 1
                    reason = '503'
                    delay = _retry_after(answer.headers.get('Retry-After'),
                                         self.retry_after_cap)
            if time.monotonic() + delay > self._give_up_at():
                with self._lock:
                    self.abandoned.append(write_id)
                return session
            time.sleep(delay)
        self._fail(write_id, None, 'no acknowledgement after %d attempts (last: %s)'
                   % (self.max_attempts, reason))
        return session

    # -- what an application answers: the hooks a subclass for another application replaces --
    def _ready(self, session):
        """Whether this writer may start (called once per writer; the demo's view is always
        there)."""
        return True

    def _send(self, session, write_id, attempt):
        """One attempt at ``write_id``: ``(answer, entry, reason)``.

        ``entry`` (the application's part of the ``acknowledged`` entry) when the answer
        acknowledges the write, else None and ``reason`` says why. A 503 without an entry is
        retried with the same id, as a ``requests.RequestException`` raised here is.
        """
        answer = session.post(self.url, data={'id': write_id}, timeout=self.timeout,
                              allow_redirects=False)
        if answer.status_code != 200:
            return answer, None, answer.text[:200]
        payload = json_object(answer)
        if payload.get('id') != write_id:
            return answer, None, 'not the JSON of this write: %r' % answer.text[:200]
        return answer, {'instance': payload.get('instance'), 'client': payload.get('client')}, None

    def _acknowledge(self, write_id, entry, attempt):
        entry = dict(entry, at=time.time(), attempts=attempt)
        with self._lock:
            self.acknowledged[write_id] = entry
            if self._log is not None:
                self._log.write(json.dumps(dict(entry, id=write_id), sort_keys=True) + '\n')
                self._log.flush()

    def _fail(self, write_id, status, reason):
        with self._lock:
            self.failed.append((write_id, status, reason))

    # -- results ----------------------------------------------------------------------------
    def by_instance(self):
        """{instance: number of writes it acknowledged}."""
        return dict(collections.Counter(e.get('instance') for e in self.acknowledged.values()))

    def report(self):
        return ('%d ids sent, %d acknowledged (%s), %d retried (%d 503, %d connection, %d 500), '
                '%d failed, %d abandoned, statuses %s, first failures %s' % (
                    self.started, len(self.acknowledged), self.by_instance(), self.retried,
                    self.retried_503, self.retried_errors, self.retried_500, len(self.failed),
                    len(self.abandoned), dict(self.statuses), self.failed[:3]))


def _retry_after(value, cap):
    """Seconds to wait for a ``Retry-After`` header (delta-seconds only), capped."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.2
    return max(0.01, min(seconds, cap))
