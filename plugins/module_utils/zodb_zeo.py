# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ZEO servers: addresses, whether one answers, a connected ClientStorage.
"""
from __future__ import annotations

import socket
import sys

from ansible_collections.zopeops.stages.plugins.module_utils.zodb import ZODBDataError


def parse_zeo_address(address):
    """``'host:port'`` -> (host, port); ``'/path/zeo.sock'`` -> the path (a unix socket)."""
    text = str(address).strip()
    if text.startswith('/') or text.startswith('.'):
        return text
    host, sep, port = text.rpartition(':')
    if not sep or not port.isdigit():
        raise ZODBDataError('%r is not a ZEO address: use "host:port" or the path of a unix '
                            'socket.' % (address,))
    return (host.strip('[]') or '127.0.0.1', int(port))


def zeo_answers(address, timeout=2.0):
    """True if something accepts connections at the ZEO address."""
    parsed = parse_zeo_address(address)
    if isinstance(parsed, str):
        family, target = socket.AF_UNIX, parsed
    else:
        family, target = (socket.AF_INET6 if ':' in parsed[0] else socket.AF_INET), parsed
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except OSError:
            return False
    return True


def open_zeo(address, storage='1', read_only=False, timeout=30.0, blob_dir=None):
    """A connected ZEO ClientStorage, or ZODBDataError saying which address did not answer."""
    try:
        from ZEO.ClientStorage import ClientStorage
    except ImportError as exc:
        raise ZODBDataError('ZEO is not importable by %s (%s): run the module with the release '
                            'virtualenv\'s python.' % (sys.executable, exc)) from None
    parsed = parse_zeo_address(address)
    kwargs = {'storage': storage, 'read_only': read_only, 'wait_timeout': timeout}
    if blob_dir:
        kwargs['blob_dir'] = blob_dir
    try:
        return ClientStorage(parsed, **kwargs)
    except Exception as exc:  # ZEO raises ClientDisconnected, socket errors, timeouts
        raise ZODBDataError(
            'Could not connect to the ZEO server at %s (storage %r) within %.0fs: %s. Check that '
            'it runs and that the address and storage name match its zeo.conf.'
            % (address, storage, timeout, exc)) from None
