# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is a ZEO server or a Zope client ready? Probes, and a bounded wait that polls them.

ZEO: we use the ZEO server's own monitoring handshake (``ruok``, what ``zeo-nagios`` uses):
send the 4-byte-length-framed protocol name ``ruok``; the server answers its protocol
announcement and then one JSON document with a status per storage, including
``last-transaction`` as 16 hex digits. It is pure standard library (Ansible's Python need not
have ZEO installed), takes about a millisecond on a warm server, opens no ZODB connection,
registers no client and so never touches the client count or the storage. It only answers once
the storages are open, which is exactly when clients can connect.

Zope: any HTTP answer below 500 on the health path counts as up: a 401/403/404/30x shows the
WSGI server and Zope's publisher are answering; 5xx means it answered but is not healthy
(e.g. a broken ZEO connection), and a refused/failed connection means it is not up yet.
"""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor


NO_TRANSACTION = '0' * 16
_HOST_PORT = re.compile(r'^(?:\[(?P<ip6>[^\]]+)\]|(?P<host>[^:\[\]/]+)):(?P<port>\d{1,5})$')


class ProbeResult:
    """One probe: ``ok``; ``detail`` says what was seen; ``value`` (e.g. a last tid)."""

    def __init__(self, ok, detail, value=None, final=False):
        self.ok = ok
        self.detail = detail
        self.value = value
        # final: waiting longer cannot change the answer (e.g. a wrong tid): fail now.
        self.final = final

    def __repr__(self):
        return 'ProbeResult(%r, %r, %r, final=%r)' % (
            self.ok, self.detail, self.value, self.final)


class NotReady(Exception):
    """The process did not become ready: ``reason`` and the last probe's detail; ``died``
    when the process exited during the wait (rather than answering wrongly or too late)."""

    def __init__(self, reason, detail='', state=None, elapsed=0.0, died=False):
        self.reason = reason
        self.detail = detail
        self.state = state
        self.elapsed = elapsed
        self.died = died
        super().__init__(reason + (': ' + detail if detail else ''))


def parse_address(address):
    """``host:port`` / ``[v6]:port`` -> (family, (host, port)); a path -> (AF_UNIX, path)."""
    address = (address or '').strip()
    match = _HOST_PORT.match(address)
    if match:
        port = int(match.group('port'))
        if not 0 < port < 65536:
            raise ValueError('port %d of address %r is out of range' % (port, address))
        if match.group('ip6'):
            return socket.AF_INET6, (match.group('ip6'), port)
        return socket.AF_INET, (match.group('host'), port)
    if address.startswith('/') or address.startswith('.'):
        return socket.AF_UNIX, address
    raise ValueError('address %r is neither host:port, [ipv6]:port nor a unix socket path'
                     % address)


def join_address(host, port):
    """``host:port``, with an IPv6 host in brackets (``[::1]:8080``): what parse_address
    reads, and the authority of an ``http://`` URL."""
    return '%s:%d' % ('[%s]' % host if ':' in host else host, int(port))


def _connect(address, timeout):
    family, target = parse_address(address)
    if family == socket.AF_UNIX:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection(target, timeout=timeout)


def port_open(address, timeout=0.5):
    """True when something accepts connections on ``address``."""
    return probe_listener(address, timeout).ok


def _recv_exact(sock, size):
    chunks = []
    while size:
        chunk = sock.recv(min(size, 65536))
        if not chunk:
            raise ConnectionError('the server closed the connection mid-message')
        chunks.append(chunk)
        size -= len(chunk)
    return b''.join(chunks)


def _recv_message(sock):
    (size,) = struct.unpack('>I', _recv_exact(sock, 4))
    if size > 16 * 1024 * 1024:
        raise ValueError('message of %d bytes is not a ZEO status answer' % size)
    return _recv_exact(sock, size)


def zeo_status(address, timeout=2.0):
    """Ask the ZEO server at ``address`` for its per-storage status (``ruok``)."""
    sock = _connect(address, timeout)
    try:
        sock.settimeout(timeout)
        sock.sendall(struct.pack('>I', 4) + b'ruok')
        announcement = _recv_message(sock)
        if announcement[:1] not in (b'Z', b'M'):
            raise ValueError('%r is not a ZEO protocol announcement' % announcement[:20])
        body = _recv_message(sock)
    finally:
        sock.close()
    status = json.loads(body.decode('utf-8'))
    if not isinstance(status, dict):
        raise ValueError('the ZEO status answer is not a JSON object')
    return status


def probe_zeo(address, storage='1', expected_tid=None, timeout=2.0, min_connections=0):
    """Probe a ZEO server; ok when it answers, ``storage`` has the expected last tid and at
    least ``min_connections`` clients are connected to it (ZEO's own count, as ``ruok``
    reports it: a restarted server's clients have reconnected)."""
    try:
        status = zeo_status(address, timeout)
    except (OSError, ValueError, struct.error) as exc:
        return ProbeResult(False, 'no ZEO answer at %s: %s' % (address, _describe(exc)))
    if storage not in status:
        return ProbeResult(False, 'the ZEO server at %s has no storage %r (it has: %s)'
                           % (address, storage, ', '.join(sorted(status)) or 'none'),
                           final=True)
    last_tid = str(status[storage].get('last-transaction', '')).lower()
    if expected_tid is not None and last_tid != expected_tid:
        return ProbeResult(
            False, 'the ZEO server at %s reports last transaction %s for storage %r, '
            'expected %s' % (address, last_tid, storage, expected_tid), last_tid, final=True)
    connections = status[storage].get('connections', 0)
    if min_connections and (not isinstance(connections, int) or connections < min_connections):
        return ProbeResult(False, 'the ZEO server at %s answers, but storage %r has %s client '
                           'connection(s), fewer than the %d expected (its clients have not '
                           'all reconnected)' % (address, storage, connections, min_connections),
                           last_tid)
    return ProbeResult(True, 'ZEO at %s answers; storage %r last transaction %s'
                       % (address, storage, last_tid), last_tid)


def probe_listener(address, timeout=2.0):
    """Probe any listening program: ok once ``address`` (host:port or a unix socket's path)
    accepts a connection."""
    try:
        _connect(address, timeout).close()
    except OSError as exc:
        return ProbeResult(False, 'nothing accepts connections at %s: %s'
                           % (address, _describe(exc)))
    return ProbeResult(True, '%s accepts connections' % address)


def probe_http(address, path='/', timeout=2.0, host_header=None):
    """Probe a Zope client over HTTP; ok on any response with a status below 500."""
    # Imported here: http.client brings in email and ssl, which zeo_service's other calls
    # (a stop, the preflight's idle check in check mode) would pay for nothing.
    import http.client  # pylint: disable=import-outside-toplevel
    family, target = parse_address(address)
    if family == socket.AF_UNIX:
        return ProbeResult(False, 'HTTP health checks need host:port, not %r' % address,
                           final=True)
    conn = http.client.HTTPConnection(target[0], target[1], timeout=timeout)
    try:
        headers = {'User-Agent': 'zopeops-readiness', 'Connection': 'close'}
        if host_header:
            headers['Host'] = host_header
        conn.request('GET', path, headers=headers)
        response = conn.getresponse()
        response.read(65536)
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        return ProbeResult(False, 'no HTTP answer from http://%s%s: %s'
                           % (address, path, _describe(exc)))
    finally:
        conn.close()
    if status < 500:
        return ProbeResult(True, 'http://%s%s answered HTTP %d' % (address, path, status),
                           status)
    return ProbeResult(False, 'http://%s%s answered HTTP %d' % (address, path, status),
                       status)


def _describe(exc):
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
        return 'connection refused (nothing listens yet)'
    if isinstance(exc, socket.timeout):
        return 'timed out'
    return '%s: %s' % (type(exc).__name__, exc)


DEAD_STATES = ('FATAL', 'BACKOFF', 'EXITED', 'STOPPED', 'ABSENT')


def wait_all(probes, states_of, timeout, initial_pids=None, failed_states=DEAD_STATES,
             clock=time.monotonic, sleep=time.sleep, first_interval=0.05, max_interval=0.5,
             max_workers=16):
    """Poll several programs at once until each is ready, failed, or ``timeout`` passed.

    ``probes`` maps a name to its probe; ``states_of(names)`` answers ``{name: (state, pid)}``
    for all of them in one process-manager call. One round probes every pending program
    concurrently (a probe that hangs until its own timeout delays no other), then asks for
    the states once; the rounds back off (50 ms doubling to 500 ms), never a fixed sleep, and
    the wait never runs past ``timeout``.

    A program has failed when its state is in ``failed_states`` (it died), when its pid is not
    the one it had when the wait began (``initial_pids``, or the first pid seen): it exited and
    the process manager started it again, which with ``startsecs = 0`` can happen between two
    polls without a dead state ever being seen, or when its probe's answer is final.

    Returns ``(ready, failed)``: ``{name: (ProbeResult, elapsed)}`` and ``{name: NotReady}``.
    """
    started = clock()
    deadline = started + timeout
    interval = first_interval
    pending = list(probes)
    pids = dict(initial_pids or {})
    ready, failed = {}, {}
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(pending) or 1))) as pool:
        while pending:
            results = dict(zip(pending, pool.map(lambda name: probes[name](), pending)))
            states = states_of(list(pending))
            elapsed = clock() - started
            still = []
            for name in pending:
                last = results[name]
                state, pid = states[name]
                first_pid = pids.setdefault(name, pid) if pid else pids.get(name)
                if state in failed_states:
                    failed[name] = NotReady('the process is %s' % state, last.detail, state,
                                            elapsed, died=True)
                elif pid and first_pid and pid != first_pid:
                    failed[name] = NotReady(
                        'the process exited and was started again (pid %d, now %d)'
                        % (first_pid, pid), last.detail, state, elapsed, died=True)
                elif last.ok:
                    ready[name] = (last, elapsed)
                elif last.final:
                    failed[name] = NotReady('not ready', last.detail, state, elapsed)
                else:
                    still.append(name)
            pending = still
            if not pending:
                break
            remaining = deadline - clock()
            if remaining <= 0:
                for name in pending:
                    failed[name] = NotReady('not ready after %.0f seconds' % timeout,
                                            results[name].detail, states[name][0], elapsed)
                break
            sleep(min(interval, remaining))
            interval = min(interval * 2, max_interval)
    return ready, failed


def wait_until_gone(pid, address, timeout, clock=time.monotonic, sleep=time.sleep):
    """Wait until ``pid`` no longer exists and ``address`` refuses connections.

    Returns ``(pid_gone, port_closed)`` as last seen; both True means it is gone.
    """
    deadline = clock() + timeout
    interval = 0.05
    while True:
        pid_gone = pid is None or not pid_alive(pid)
        port_closed = address is None or not port_open(address, timeout=0.5)
        if (pid_gone and port_closed) or clock() >= deadline:
            return pid_gone, port_closed
        sleep(min(interval, max(0.0, deadline - clock())))
        interval = min(interval * 2, 0.5)


def _listening_inodes(port, proc='/proc'):
    """Socket inodes that listen on TCP ``port`` (any address), from /proc/net/tcp{,6}."""
    inodes = set()
    for table in ('tcp', 'tcp6'):
        try:
            with open('%s/net/%s' % (proc, table)) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local_address is HEXADDR:HEXPORT; state 0A is LISTEN; the inode is field 9.
            if len(fields) > 9 and fields[3] == '0A' and \
                    int(fields[1].rsplit(':', 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def listeners(address, proc='/proc'):
    """Who listens on ``address``'s port: ``['pid 123 (runwsgi ...)']``, best effort.

    Named in the error about a port still open after its service stopped, so that the
    operator sees the process instead of being told to look for it. Empty when nothing is
    found or /proc cannot be read (another user's process without root, another namespace).
    """
    try:
        family, target = parse_address(address)
    except ValueError:
        return []
    if family == socket.AF_UNIX:
        return []
    port = target[1]
    inodes = {'socket:[%s]' % inode for inode in _listening_inodes(port, proc)}
    found = []
    if not inodes:
        return found
    try:
        pids = sorted(int(name) for name in os.listdir(proc) if name.isdigit())
    except OSError:
        return found
    for pid in pids:
        try:
            fds = os.listdir('%s/%d/fd' % (proc, pid))
            if not any(os.readlink('%s/%d/fd/%s' % (proc, pid, fd)) in inodes for fd in fds):
                continue
            with open('%s/%d/cmdline' % (proc, pid), 'rb') as handle:
                command = handle.read().replace(b'\0', b' ').decode('utf-8', 'replace').strip()
        except OSError:
            continue
        found.append('pid %d (%s)' % (pid, command[:200]))
    return found


def holders(address):
    """``listeners`` said in an error: who holds the address, or how to find it."""
    found = listeners(address)
    return ('held by %s' % ', '.join(found)) if found else 'find it with ss -ltnp'


# What an error about a held address advises: the holder may be a copy that serves traffic.
STOP_HOLDER = ('check that it serves no traffic (status.yml) before you stop it by its pid, or '
               'fix the port')


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it no longer runs, so it counts as gone.
    try:
        with open('/proc/%d/stat' % pid, 'rb') as handle:
            fields = handle.read().rsplit(b')', 1)[-1].split()
        return not (fields and fields[0] == b'Z')
    except OSError:
        return True


def tail_file(path, lines=40, max_bytes=65536):
    """The last ``lines`` lines of the file at ``path`` (reads at most ``max_bytes``)."""
    with open(path, 'rb') as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - max_bytes))
        data = handle.read()
    text = data.decode('utf-8', errors='replace')
    return '\n'.join(text.splitlines()[-lines:])


def tail_text(text, lines=40):
    return '\n'.join((text or '').splitlines()[-lines:])
