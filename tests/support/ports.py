"""Free TCP ports on 127.0.0.1 for tests."""
from __future__ import annotations

import socket


def port_is_free(port, host='127.0.0.1'):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host='127.0.0.1'):
    """A port the kernel just handed out and released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_port_block(size, start=20000, stop=60000, step=97):
    """The first base port such that base .. base+size-1 are all free (for whole pipelines)."""
    for base in range(start, stop - size, step):
        if all(port_is_free(base + offset) for offset in range(size)):
            return base
    raise RuntimeError('no block of %d free ports between %d and %d' % (size, start, stop))
