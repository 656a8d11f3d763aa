# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small client for the HAProxy runtime API (the ``stats socket``), and map-file helpers.

One command per connection, in HAProxy's non-interactive mode: HAProxy answers and closes,
so a reply ends at EOF. Every socket operation has a timeout and the whole exchange has a
deadline, so a wedged HAProxy makes a clear error instead of a hung playbook.

HAProxy answers most write commands with an empty line on success and with a sentence on
failure ("No such server.", "Permission denied"); the ones that fail silently (a ``set map``
on a socket below the needed level) are caught by reading the value back. Callers verify.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import os
import re
import socket
import time

# A stage, backend, server or map value goes into a command line: HAProxy splits commands on
# ';' and lines on newlines, so anything outside this set could smuggle a second command.
_TOKEN = re.compile(r'^[A-Za-z0-9_.:@/+-]+$')

# Replies HAProxy gives instead of doing the command; matched at the start of the reply.
_ERROR_REPLIES = (
    'Unknown command', 'Permission denied', 'No such server', 'No such backend',
    'Unknown map identifier', 'entry not found', 'Require ', 'Missing ', "'set server",
    'Unknown ', 'Invalid ', 'Failed ', 'Error',
)

SERVER_STATES = ('ready', 'drain', 'maint')

# HAProxy's enum http_meth_t (include/haproxy/http-t.h, unchanged from 1.x to 2.6):
# ``show sess all`` prints a stream's method as this number (``txn=0x... meth=3``).
HTTP_METHODS = ('OPTIONS', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'TRACE', 'CONNECT', 'OTHER')
# The write freeze's own definition (roles/haproxy: acl zopeops_safe_method): every other
# method is a write, WebDAV's LOCK, MOVE, MKCOL (HAProxy's OTHER) included.
SAFE_METHODS = ('GET', 'HEAD', 'OPTIONS')


class HAProxyError(Exception):
    """Something about talking to HAProxy failed; the message names what, where and why."""


def check_token(value, what):
    """Refuse a value that could not be passed safely as one word of a runtime command."""
    text = str(value)
    if not _TOKEN.match(text):
        raise HAProxyError(
            '%s %r cannot be sent to HAProxy: only letters, digits and _ . : @ / + - are allowed '
            '(no spaces, no ";").' % (what, text))
    return text


def parse_address(address):
    """``/path/to.sock`` | ``unix@/path`` -> (AF_UNIX, path); ``ipv4@h:p`` | ``h:p`` -> AF_INET."""
    text = str(address or '').strip()
    if not text:
        raise HAProxyError('No HAProxy runtime socket given: set socket to the path of the '
                           "'stats socket' (e.g. /run/zopeops/haproxy.sock) or ipv4@host:port.")
    if text.startswith('unix@'):
        return socket.AF_UNIX, text[5:]
    if text.startswith('ipv4@'):
        text = text[5:]
    elif text.startswith('/') or text.startswith('.'):
        return socket.AF_UNIX, text
    host, sep, port = text.rpartition(':')
    if not sep or not host or not port.isdigit():
        raise HAProxyError('HAProxy socket %r is neither a unix socket path nor '
                           'ipv4@host:port.' % (address,))
    return socket.AF_INET, (host, int(port))


def parse_show_stat(text):
    """``show stat`` CSV -> a list of dicts keyed by HAProxy's column names."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith('# '):
        raise HAProxyError('HAProxy answered "show stat" with something that is not its CSV: %r'
                           % text[:200])
    header = lines[0][2:]
    reader = csv.DictReader(io.StringIO('\n'.join([header] + [l for l in lines[1:] if l])))
    return [dict(row) for row in reader]


def parse_show_map_list(text):
    """``show map`` -> [{'id': '2', 'file': '/etc/haproxy/active.map'}, ...]."""
    maps = []
    for line in text.splitlines():
        match = re.match(r'^(\d+) \((.*?)\) ', line)
        if match:
            maps.append({'id': match.group(1), 'file': match.group(2)})
    return maps


def parse_show_map_entries(text):
    """``show map <file>`` -> [(key, value), ...] in HAProxy's order."""
    entries = []
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].startswith('0x'):
            entries.append((parts[1], parts[2]))
    return entries


def parse_get_map(text):
    """``get map <file> <key>`` -> the value, or None when HAProxy says ``found=no``."""
    if 'found=no' in text:
        return None
    match = re.search(r'value="((?:[^"\\]|\\.)*)"', text)
    if 'found=yes' not in text or not match:
        raise HAProxyError('Cannot read the answer of HAProxy to "get map": %r' % text[:200])
    return match.group(1)


_SESS_START = re.compile(r'^(0x[0-9a-fA-F]+): \[')


def parse_show_sess_all(text):
    """``show sess all`` -> one dict per stream, in HAProxy's order.

    Each stream is a block that starts at column 0 with ``0x<addr>: [<date>] id=<n> ...`` and
    continues with indented lines; the ones read here are, on HAProxy 2.6::

        frontend=fe_test (id=5 mode=http), listener=? (id=1) addr=127.0.0.1:49015
        backend=be_test_live (id=6 mode=http) addr=127.0.0.1:45476
        server=test-client1 (id=1) addr=127.0.0.1:45413
        txn=0x565321ee3150 flags=0x1000000 meth=3 status=-1 req.st=MSG_DONE rsp.st=...

    A stream without an HTTP transaction (TCP, the CLI itself) has ``method`` None. The method
    is HAProxy's number, turned into its name; a name (as a later HAProxy might print) is kept.
    Unknown lines are ignored, so extra fields in another version do not break the parser.
    """
    streams = []
    current = None
    for line in text.splitlines():
        start = _SESS_START.match(line)
        if start:
            current = {'addr': start.group(1), 'id': _field(line, 'id'), 'frontend': None,
                       'backend': None, 'server': None, 'method': None, 'status': None,
                       'req_state': None, 'age': None}
            streams.append(current)
            continue
        if current is None:
            continue
        stripped = line.strip()
        for name in ('frontend', 'backend', 'server'):
            if stripped.startswith(name + '='):
                value = stripped[len(name) + 1:].split(None, 1)[0].rstrip(',')
                current[name] = None if value.upper() in ('<NONE>', '') else value
        if stripped.startswith('task=') and current['age'] is None:
            current['age'] = _field(stripped, 'age')
        if stripped.startswith('txn='):
            method = _field(stripped, 'meth')
            if method is not None and method.isdigit():
                number = int(method)
                method = HTTP_METHODS[number] if number < len(HTTP_METHODS) else 'OTHER'
            current['method'] = method.upper() if method else None
            status = _field(stripped, 'status')
            current['status'] = int(status) if status and status.lstrip('-').isdigit() else None
            current['req_state'] = _field(stripped, 'req.st')
    return streams


def _field(line, name):
    """The value of `` name=value`` in a ``show sess`` line, or None."""
    match = re.search(r'(?:^|[\s(])%s=([^\s,)]*)' % re.escape(name), line)
    return match.group(1) if match else None


def writes_in_flight(streams, backends, frontend=None):
    """The streams of ``streams`` that carry an unsafe request to one of ``backends``.

    With ``frontend``, a write that this frontend has taken but not yet routed to a backend
    (no backend, no answer yet) counts as well: it may still be routed past a freeze that
    was set after its rules ran. A write that the freeze answered (status 503) does not.
    """
    wanted = set(backends)
    found = []
    for stream in streams:
        if stream['method'] is None or stream['method'] in SAFE_METHODS:
            continue
        if stream['backend'] in wanted:
            found.append(stream)
        elif (frontend is not None and stream['frontend'] == frontend
              and stream['backend'] is None and stream['status'] in (None, -1)):
            found.append(stream)
    return found


# ``show servers state``'s srv_admin_state bits (HAProxy's enum srv_admin, include/haproxy/
# server-t.h): forced, inherited, configured, resolver and hostname maintenance; forced and
# inherited drain. ``show stat`` cannot tell a drained server that is DOWN from a ready one.
ADMIN_MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
ADMIN_DRAIN_BITS = 0x08 | 0x10


def parse_show_servers_state(text):
    """``show servers state <backend>`` -> {server: 'ready' | 'drain' | 'maint'}.

    The answer is a version line, a ``# be_id be_name srv_id srv_name ...`` header and one
    line per server; the columns are found by name, so added columns do not break it.
    """
    header, states = None, {}
    for line in text.splitlines():
        if line.startswith('# '):
            header = line[2:].split()
            continue
        parts = line.split()
        if header is None or len(parts) < len(header) or not parts:
            continue
        row = dict(zip(header, parts))
        try:
            admin = int(row['srv_admin_state'])
        except (KeyError, ValueError):
            continue
        states[row.get('srv_name')] = ('maint' if admin & ADMIN_MAINT_BITS else
                                       'drain' if admin & ADMIN_DRAIN_BITS else 'ready')
    if header is None:
        raise HAProxyError('HAProxy answered "show servers state" with something that is not '
                           'its table: %r' % text[:200])
    return states


def parse_map_text(text):
    """A map file's text -> [(key, value), ...], skipping comments and blank lines."""
    entries = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith('#'):
            continue
        parts = stripped.split(None, 1)
        entries.append((parts[0], parts[1].strip() if len(parts) > 1 else ''))
    return entries


def set_map_line(text, key, value):
    """Return ``text`` with the entry for ``key`` set to ``value`` (appended if missing).

    Comments, other keys and their order stay as they were, so the file remains the operator's.
    """
    lines = text.splitlines()
    new_line = '%s %s' % (key, value)
    found = False
    result = []
    for line in lines:
        parts = line.strip().split(None, 1)
        if parts and not parts[0].startswith('#') and parts[0] == key:
            if not found:
                result.append(new_line)
                found = True
            continue  # a duplicate key would make the file disagree with the runtime
        result.append(line)
    if not found:
        result.append(new_line)
    return '\n'.join(result) + '\n'


@contextlib.contextmanager
def file_lock(path, timeout=30.0):
    """Hold an exclusive lock beside ``path`` (``.<name>.lock``) for a read-modify-write.

    Two switches of different stages at once (two promotions, forks) both rewrite the same map
    file; without the lock the second rename would drop the first stage's new entry.
    """
    lock_path = os.path.join(os.path.dirname(os.path.abspath(path)),
                             '.%s.lock' % os.path.basename(path))
    try:
        handle = open(lock_path, 'a')
    except OSError as exc:
        raise HAProxyError('Cannot create the lock file %s for %s (%s): lb_switch needs to write '
                           'in that folder.' % (lock_path, path, exc.strerror)) from None
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HAProxyError(
                        'Another process has held the lock %s for more than %.0fs; is another '
                        'lb_switch stuck?' % (lock_path, timeout)) from None
                time.sleep(0.05)
        yield
    finally:
        handle.close()


def read_text(path):
    """The file's text, or '' if it does not exist."""
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return ''


class RuntimeAPI:
    """The runtime API of one HAProxy, at a unix socket path or ``ipv4@host:port``."""

    def __init__(self, address, timeout=5.0):
        self.address = str(address)
        self.family, self.target = parse_address(address)
        self.timeout = float(timeout)
        self.sent = []  # every command, in order, for the module's result

    # -- transport -------------------------------------------------------------------------
    def _connect(self):
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.target)
        except FileNotFoundError:
            sock.close()
            raise HAProxyError(
                'HAProxy runtime socket %s does not exist: HAProxy is not running, or its '
                "'stats socket' line points elsewhere. Start HAProxy (the haproxy role does) or "
                'pass the right socket.' % self.target) from None
        except PermissionError as exc:
            sock.close()
            raise HAProxyError(
                'Permission denied on HAProxy runtime socket %s (%s): run as a user that may '
                'open it (become: true), or give that user the socket\'s group (stats socket '
                '... mode 660 group <group>).' % (self.address, exc)) from None
        except ConnectionRefusedError:
            sock.close()
            raise HAProxyError(
                'HAProxy runtime socket %s refused the connection: HAProxy is not running (a '
                'stale socket file) or is restarting. Check the haproxy service.'
                % self.address) from None
        except socket.timeout:
            sock.close()
            raise HAProxyError('Connecting to HAProxy runtime socket %s timed out after %.1fs.'
                               % (self.address, self.timeout)) from None
        except OSError as exc:
            sock.close()
            if exc.errno == errno.ENOTSOCK or exc.errno == errno.ECONNREFUSED:
                raise HAProxyError('%s is not a listening HAProxy socket (%s).'
                                   % (self.address, exc.strerror)) from None
            raise HAProxyError('Cannot connect to HAProxy runtime socket %s: %s.'
                               % (self.address, exc)) from None
        return sock

    def execute(self, command):
        """Send one command; return HAProxy's whole reply (trailing blank line removed)."""
        if '\n' in command or ';' in command:
            raise HAProxyError('Refusing to send %r: one command per call.' % command)
        self.sent.append(command)
        deadline = time.monotonic() + self.timeout
        sock = self._connect()
        chunks = []
        try:
            sock.sendall(command.encode('utf-8') + b'\n')
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout()
                sock.settimeout(remaining)
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except socket.timeout:
            raise HAProxyError('HAProxy at %s did not finish answering %r within %.1fs '
                               '(timeout).' % (self.address, command, self.timeout)) from None
        except OSError as exc:
            raise HAProxyError('Talking to HAProxy at %s failed during %r: %s.'
                               % (self.address, command, exc)) from None
        finally:
            sock.close()
        return b''.join(chunks).decode('utf-8', 'replace').rstrip('\n')

    def command(self, command):
        """Run a write command; raise HAProxyError if HAProxy answered with an error."""
        reply = self.execute(command)
        stripped = reply.strip()
        if stripped and stripped.startswith(_ERROR_REPLIES):
            reason = stripped.splitlines()[0]
            if reason.startswith('Permission denied'):
                reason += (' (this socket is at level %s; use a "stats socket ... level admin")'
                           % self.cli_level())
            raise HAProxyError('HAProxy at %s refused %r: %s' % (self.address, command, reason))
        return reply

    # -- reads ----------------------------------------------------------------------------
    def cli_level(self):
        """'admin', 'operator' or 'user': what this socket may do."""
        return self.execute('show cli level').strip() or 'unknown'

    def show_stat(self):
        return parse_show_stat(self.execute('show stat'))

    def backends(self):
        return sorted({row['pxname'] for row in self.show_stat() if row['svname'] == 'BACKEND'})

    def backend_stats(self, backend, rows=None):
        """{'scur': int, 'status': str, 'servers': {name: {'status', 'scur', 'check'}}}."""
        rows = self.show_stat() if rows is None else rows
        found = None
        servers = {}
        for row in rows:
            if row['pxname'] != backend:
                continue
            if row['svname'] == 'BACKEND':
                found = row
            elif row['svname'] != 'FRONTEND':
                servers[row['svname']] = {
                    'status': row.get('status', ''),
                    'scur': _int(row.get('scur')),
                    'check': row.get('check_status', ''),
                    'address': row.get('addr', ''),
                }
        if found is None:
            known = sorted({row['pxname'] for row in rows if row['svname'] == 'BACKEND'})
            raise HAProxyError('HAProxy at %s has no backend %s; its backends are: %s.'
                               % (self.address, backend, ', '.join(known) or 'none'))
        return {'scur': _int(found.get('scur')), 'status': found.get('status', ''),
                'servers': servers}

    def admin_states(self, backend):
        """{server: 'ready' | 'drain' | 'maint'} of ``backend``: the administrative state a
        ``set server ... state`` gave each server, whether its health checks pass or not."""
        check_token(backend, 'Backend')
        return parse_show_servers_state(self.execute('show servers state %s' % backend))

    def streams(self):
        """Every stream HAProxy holds now (``show sess all``), parsed."""
        return parse_show_sess_all(self.execute('show sess all'))

    def maps(self):
        return parse_show_map_list(self.execute('show map'))

    def resolve_map(self, path):
        """The name HAProxy knows ``path`` by; fail if HAProxy did not load that map file."""
        loaded = self.maps()
        wanted = os.path.realpath(path)
        for entry in loaded:
            if entry['file'] == path or os.path.realpath(entry['file']) == wanted:
                return entry['file']
        raise HAProxyError(
            'HAProxy at %s has not loaded the map file %s: its configuration must use it in a '
            'map() converter (the zopeops haproxy role renders that), and HAProxy must have been '
            '(re)loaded since. Maps it has loaded: %s.'
            % (self.address, path, ', '.join(e['file'] for e in loaded) or 'none'))

    def get_map(self, map_name, key):
        check_token(key, 'Map key')
        return parse_get_map(self.execute('get map %s %s' % (map_name, key)))

    def show_map(self, map_name):
        return parse_show_map_entries(self.execute('show map %s' % map_name))

    # -- writes ---------------------------------------------------------------------------
    def set_map(self, map_name, key, value):
        """Set ``key`` to ``value`` in the runtime map (``add map`` if the key is missing)."""
        check_token(key, 'Map key')
        check_token(value, 'Map value')
        if self.get_map(map_name, key) is None:
            self.command('add map %s %s %s' % (map_name, key, value))
        else:
            self.command('set map %s %s %s' % (map_name, key, value))
        now = self.get_map(map_name, key)
        if now != value:
            raise HAProxyError(
                'HAProxy at %s accepted the change of %s in map %s to %s, but reading it back '
                'gives %r: check the socket\'s level (show cli level says %s).'
                % (self.address, key, map_name, value, now, self.cli_level()))

    def set_server_state(self, backend, server, state):
        if state not in SERVER_STATES:
            raise HAProxyError('Server state %r is not one of %s.'
                               % (state, ', '.join(SERVER_STATES)))
        check_token(backend, 'Backend')
        check_token(server, 'Server')
        self.command('set server %s/%s state %s' % (backend, server, state))


def server_state(status):
    """Map a ``show stat`` status to the administrative state set by ``set server ... state``."""
    text = (status or '').upper()
    if text.startswith('MAINT'):
        return 'maint'
    if text.startswith('DRAIN') or text.startswith('NOLB'):
        return 'drain'
    return 'ready'


def server_is_up(status, check=None):
    """True only for a server that passes its health checks now and takes traffic.

    HAProxy starts servers as UP before their first check has run (check status INI), so
    when the check status is known it must be a passed check (L4OK, L6OK, L7OK, L7OKC).
    """
    if (status or '').strip() != 'UP':
        return False
    if check is None:
        return True
    return check.lstrip('* ').startswith(('L4OK', 'L6OK', 'L7OK'))


def wait_until_idle(api, backend, timeout, server=None, interval=0.2, clock=time.monotonic,
                    sleep=time.sleep):
    """Wait until ``backend`` (or one of its servers) has no current sessions.

    Returns (drained, seconds). A bounded wait: never longer than ``timeout`` seconds.
    """
    start = clock()
    while True:
        stats = api.backend_stats(backend)
        if server is None:
            current = stats['scur']
        else:
            current = stats['servers'].get(server, {}).get('scur', 0)
        elapsed = clock() - start
        if current == 0:
            return True, round(elapsed, 3)
        if elapsed >= timeout:
            return False, round(elapsed, 3)
        sleep(min(interval, max(0.0, timeout - elapsed)))


def wait_until_no_writes(api, backends, timeout, frontend=None, clock=time.monotonic,
                         sleep=time.sleep):
    """Wait until no unsafe request is in flight to ``backends`` (see writes_in_flight).

    Returns (done, seconds, streams still in flight). Polls quickly at first (a freeze window
    should stay well under a second) and backs off to 0.2s; never waits past ``timeout``.
    """
    start = clock()
    interval = 0.02
    while True:
        found = writes_in_flight(api.streams(), backends, frontend)
        elapsed = clock() - start
        if not found:
            return True, round(elapsed, 3), []
        if elapsed >= timeout:
            return False, round(elapsed, 3), found
        sleep(min(interval, max(0.0, timeout - elapsed)))
        interval = min(interval * 2, 0.2)


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# --- the write freeze as a lease -----------------------------------------------------------
# A stage's entry in the frozen map is the epoch second until which its writes are frozen
# (docs/promotion.md, "The freeze is a lease"). HAProxy compares it with its own clock on every
# request (``var(txn.zopeops_until),sub(txn.zopeops_now) gt 0``), so a freeze ends by itself
# when its deadline passes, whatever happened to the controller that set it, and a restarted
# HAProxy that loads an old deadline from the file is not frozen either. 0 (or any past
# second, or the old format's 1) is "not frozen". HELD is a freeze with no deadline: only a
# switched balancer of several waits with it for the others (roles/promote/tasks/cutover.yml).
HELD = 9999999999


def freeze_value(until):
    """The map value of a freeze that ends at epoch ``until`` (None: not frozen; HELD: held)."""
    if until is None:
        return '0'
    return str(min(HELD, int(until) + (0 if float(until).is_integer() else 1)))


def freeze_state(value, now=None):
    """A frozen-map value -> {'frozen', 'until', 'held'} as HAProxy applies it at ``now``.

    ``frozen`` is whether HAProxy refuses writes now; ``until`` the deadline (epoch seconds)
    when one is in force, else None; ``held`` a freeze without a deadline (HELD).
    """
    now = time.time() if now is None else now
    try:
        until = int(str(value).strip())
    except (TypeError, ValueError):
        until = 0
    frozen = until > int(now)
    return {'frozen': frozen, 'until': until if frozen else None,
            'held': frozen and until >= HELD}
