"""Free TCP ports on 127.0.0.1 for tests."""
from __future__ import annotations

import fcntl
import json
import os
import random
import socket

from ansible_collections.zopeops.stages.plugins.module_utils.readiness import pid_alive


def port_is_free(port, host='127.0.0.1'):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_start():
    """The first port of the kernel's range for the local end of outgoing connections."""
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host='127.0.0.1'):
    """A free port above the whole pipelines' blocks (20000-24999; Plone's 27500-29499) and
    below the kernel's ephemeral range. Not one the kernel hands out (bind to port 0): that range is where every outgoing
    connection takes its local port, so under the load tests' thousands of connections a port
    held by number for a module's tests was taken by one (seen: every HAProxy of a module
    failed to bind its frontend from one test on)."""
    low, high = 29600, min(_ephemeral_start(), 32768)
    chooser = random.SystemRandom()
    for _attempt in range(500):
        port = chooser.randrange(low, high)
        if port_is_free(port, host):
            return port
    raise RuntimeError('no free port between %d and %d on %s' % (low, high, host))


# Blocks handed out by free_port_block to the sessions of this machine, with the pid that holds
# each: two pytest sessions (or a session and a bench) started together would otherwise both
# take the first free block before either binds it (seen: one session's beta clients talked to
# another's ZEO, and HAProxy, which binds with SO_REUSEPORT, shared a frontend port).
REGISTRY = '/tmp/zopeops-test-port-blocks.json'


def free_port_block(size, start=20000, stop=60000, step=97):
    """The first base port such that base .. base+size-1 are all free and no live process
    holds an overlapping block (this one included: a block is handed out once); recorded for
    this process until it ends."""
    with open(REGISTRY + '.lock', 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(REGISTRY) as handle:
                held = json.load(handle)
        except (OSError, ValueError):
            held = []
        held = [entry for entry in held if pid_alive(entry['pid'])]
        for base in range(start, stop - size, step):
            if any(base < entry['base'] + entry['size'] and entry['base'] < base + size
                   for entry in held):
                continue
            if all(port_is_free(base + offset) for offset in range(size)):
                held.append({'base': base, 'size': size, 'pid': os.getpid()})
                tmp = REGISTRY + '.%d' % os.getpid()
                with open(tmp, 'w') as handle:
                    json.dump(held, handle)
                os.replace(tmp, REGISTRY)
                return base
    raise RuntimeError('no block of %d free ports between %d and %d' % (size, start, stop))
