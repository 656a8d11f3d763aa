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


class CommitPipeline:
    """Messages to a ZEO server sent in order through a connected ClientStorage's connection,
    without waiting for each call's reply.

    Why: ``ClientStorage`` commits one transaction at a time and waits for two replies per
    transaction (``vote``, then ``tpc_finish``), so a replay of many small transactions is
    paced by round trips, not by work (measured: 70 % of a replay's time waiting on a quiet
    machine, most of it on a loaded one; ``docs/benchmarks.md``, "Replay"). ZEO's server
    (``ZEO.StorageServer.ZEOStorage``) handles the messages of one connection in the order they
    arrive and does a transaction's real work at ``vote``, so the messages of several
    transactions can be on the wire at once. The caller must make each transaction prove the
    one before it (``checkCurrentSerialInTransaction``): after a failed vote the server drops
    that transaction and would take the next one. ``ClientStorage`` has no public call for
    this, so this reaches its connection (``_server``: ZEO 5-6's ``ClientRunner``).
    """

    def __init__(self, storage, timeout):
        runner = storage._server
        self._loop = runner.loop
        self._client = runner.client
        self.timeout = timeout

    def send(self, messages):
        """Send ``messages`` in one hop to the connection's IO thread, in their order.

        Each is ``('call', method, args)`` (its reply becomes a future in the returned list),
        ``('async', method, args)``, or ``('iter', None, iterable of (method, args))``, sent
        as it is consumed (a blob in chunks). A future's ``result(timeout)`` raises what the
        server raised; if the connection is gone, every future gets ``ClientDisconnected``.
        """
        from ZEO.asyncio.futures import ConcurrentFuture
        from ZEO.Exceptions import ClientDisconnected
        replies = [ConcurrentFuture() for kind, _method, _args in messages if kind == 'call']

        def write():
            try:
                protocol = self._client.protocol
                if not self._client.operational or protocol is None:
                    raise ClientDisconnected('the connection to the ZEO server is closed')
                pending = iter(replies)
                for kind, method, args in messages:
                    if kind == 'call':
                        protocol.call_sync(method, args, future=next(pending))
                    elif kind == 'iter':
                        protocol.call_async_iter(args)
                    else:
                        protocol.call_async(method, args)
            except Exception as exc:  # pylint: disable=broad-except
                for reply in replies:
                    if not reply.done():
                        reply.set_exception(exc)

        self._loop.call_soon_threadsafe(write)
        return replies
