# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Switching an nginx upstream: render the stage's include file, validate, reload, or undo.

nginx has no runtime API in its free version, so a switch is a file change plus a graceful
reload (old workers finish their requests). The include file holds one ``upstream`` block,
named ``zopeops_<stage>``, and a first comment line that records the active side so that
the next run can report what was active before. ``switch_stage`` is lb_switch's request
for a stage on nginx (a read without ``active``).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.error

from ansible_collections.zopeops.stages.plugins.module_utils.balancer import (
    SwitchError, switch_result)
from ansible_collections.zopeops.stages.plugins.module_utils.files import atomic_write
from ansible_collections.zopeops.stages.plugins.module_utils.haproxy import (
    check_token, read_text)

_HEADER = re.compile(r'^# zopeops lb_switch: stage=(\S+) active=(\S+)')


class NginxError(Exception):
    """An nginx switch failed; the message names the file or command and the reason."""


def upstream_name(stage):
    return 'zopeops_%s' % stage


def render_upstream(stage, active, servers, server_options=''):
    """The include file for ``stage`` sending traffic to ``servers`` (``host:port`` strings)."""
    check_token(stage, 'Stage')
    lines = ['# zopeops lb_switch: stage=%s active=%s' % (stage, active),
             '# Managed by zopeops.stages.lb_switch; a switch rewrites this file.',
             'upstream %s {' % upstream_name(stage)]
    for server in servers:
        check_token(server, 'Server address')
        options = (' ' + server_options) if server_options else ''
        lines.append('    server %s%s;' % (server, options))
    lines.append('}')
    return '\n'.join(lines) + '\n'


def active_side(text):
    """The side recorded in an include file's header, or None."""
    for line in text.splitlines()[:1]:
        match = _HEADER.match(line)
        if match:
            return match.group(2)
    return None


def normalize_servers(servers):
    """Accept ``host:port`` strings or ``{address, port}`` dicts (the pipeline model's clients)."""
    result = []
    for server in servers or []:
        if isinstance(server, dict):
            address = server.get('address') or server.get('host')
            port = server.get('port')
            if not address or not port:
                raise NginxError('Server %r needs an address and a port.' % (server,))
            result.append('%s:%s' % (address, port))
        else:
            result.append(str(server))
    return result


def probe(server, path, timeout):
    """None if http://server/path answers below 500, else the reason it is not ready."""
    # Imported here: ansible.module_utils.urls brings in cryptography, which an HAProxy read
    # of lb_switch (every promotion's preflight) would pay for nothing.
    from ansible.module_utils.urls import (  # pylint: disable=import-outside-toplevel
        ConnectionError as UrlConnectionError, open_url)
    url = 'http://%s%s' % (server, path if path.startswith('/') else '/' + path)
    try:
        # A plain GET as urllib.request.urlopen would send: no ~/.netrc credentials, no
        # Accept-Encoding.
        with open_url(url, timeout=timeout, use_netrc=False, decompress=False) as response:
            response.read(1024)
            return None
    except urllib.error.HTTPError as exc:
        return None if exc.code < 500 else 'HTTP %d from %s' % (exc.code, url)
    except (OSError, ValueError, UrlConnectionError) as exc:
        return '%s: %s' % (url, getattr(exc, 'reason', exc))


def validate(binary, conf, prefix=None, timeout=30):
    """Run ``nginx -t``; return (ok, output)."""
    argv = [binary, '-t', '-c', conf]
    if prefix:
        argv += ['-p', prefix]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise NginxError('nginx binary %s was not found: install nginx or set nginx_binary.'
                         % binary) from None
    except subprocess.TimeoutExpired:
        return False, '%s did not finish within %ds' % (' '.join(argv), timeout)
    return proc.returncode == 0, (proc.stderr + proc.stdout).strip()


def reload(binary, conf, pid_file=None, prefix=None, timeout=30):
    """Reload gracefully: HUP the master named in ``pid_file``, else ``nginx -s reload``."""
    if pid_file:
        try:
            pid = int(read_text(pid_file).strip())
        except ValueError:
            raise NginxError('nginx pid file %s is missing or empty: is nginx running with this '
                             'configuration?' % pid_file) from None
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise NginxError('nginx pid file %s names process %d, which does not exist: nginx '
                             'is not running; start it.' % (pid_file, pid)) from None
        return ['kill', '-HUP', str(pid)]
    argv = [binary, '-c', conf, '-s', 'reload']
    if prefix:
        argv += ['-p', prefix]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise NginxError('%s failed (rc=%d): %s' % (' '.join(argv), proc.returncode,
                                                    (proc.stderr + proc.stdout).strip()))
    return argv


def switch(include, new_text, binary, conf, pid_file=None, prefix=None):
    """Install ``new_text`` as ``include``, validate, reload; restore the old file on failure.

    Returns the list of commands run. Raises NginxError after restoring the old file.
    """
    old_text = read_text(include)
    existed = os.path.exists(include)
    atomic_write(include, new_text)
    ok, output = validate(binary, conf, prefix)
    if not ok:
        if existed:
            atomic_write(include, old_text)
        else:
            os.unlink(include)
        raise NginxError('nginx refused the configuration %s with the new %s, so the old file was '
                         'restored and nginx was not reloaded. nginx -t said: %s'
                         % (conf, include, output))
    return [' '.join([binary, '-t', '-c', conf]), ' '.join(reload(binary, conf, pid_file, prefix))]


def switch_stage(params, check_mode):
    """lb_switch with balancer=nginx: point the stage's upstream at the ``active`` side (gate,
    file, nginx -t, reload), or read which side it points at. Returns the result."""
    stage = check_token(params['stage'], 'Stage')
    if params['frozen'] is not None or params['wait_writes'] > 0:
        raise SwitchError('The write freeze (frozen, wait_writes) needs balancer=haproxy: nginx '
                          'has no runtime map to hold it.')
    if not params['nginx_include']:
        raise SwitchError('balancer=nginx needs nginx_include (the stage\'s upstream include '
                          'file).')
    include = params['nginx_include']
    old_text = read_text(include)
    if not params['active']:
        state = {'active': active_side(old_text), 'frozen': None, 'servers': None}
        return switch_result(before=state, after=dict(state))
    servers = normalize_servers(params['servers'])
    if not servers:
        raise SwitchError('balancer=nginx needs servers: the host:port of every client of the %s '
                          'side of %s.' % (params['active'], stage))
    new_text = render_upstream(stage, params['active'], servers, params['server_options'])
    side_before = active_side(old_text)
    before = {'active': side_before, 'frozen': None,
              'servers': servers if side_before == params['active'] else None}
    after = {'active': params['active'], 'frozen': None, 'servers': servers}
    if old_text == new_text:
        return switch_result(before=before, after=after)
    if params['gate']:
        problems = [p for p in (probe(s, params['health_path'], params['timeout'])
                                for s in servers) if p]
        if problems:
            raise SwitchError('Refusing to switch stage %s to %s on nginx: not every target '
                              'server answers: %s. Nothing was changed.'
                              % (stage, params['active'], '; '.join(problems)), before=before)
    commands = []
    if not check_mode:
        commands = switch(include, new_text, params['nginx_binary'], params['nginx_conf'],
                          params['nginx_pid_file'], params['nginx_prefix'])
    return switch_result(changed=True, files=[include], commands=commands, before=before,
                         after=after, diff={'before_header': include, 'before': old_text,
                                            'after_header': include, 'after': new_text})
