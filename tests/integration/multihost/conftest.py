"""The multi-machine harness (tests/harness), brought up once for the multihost tests.

It needs root, ``ip``, systemd-nspawn and the machines' Debian root (scripts/ensure-nspawn-rootfs);
without them every test here is skipped and says why. The
machines and everything started on them are removed after the session, after a failure too
(the fixture's finalizer, and ``atexit`` if the session itself dies).
"""
from __future__ import annotations

import os

import pytest

from harness import Harness, HarnessUnavailable, unavailable_reason


@pytest.fixture(scope='session')
def harness(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    # ZOPEOPS_HARNESS_PROD_CLIENTS=1,1,1: production's shape with fewer clients (2-core CI).
    counts = tuple(int(n) for n in os.environ.get('ZOPEOPS_HARNESS_PROD_CLIENTS',
                                                  '3,3,2').split(','))
    machines = Harness(tmp_path_factory.mktemp('harness'), prod_clients=counts)
    try:
        machines.start()
    except HarnessUnavailable as exc:
        # The machine can run it (unavailable_reason said so): a start that fails is a failure.
        pytest.fail('the multi-machine harness did not start: %s' % exc)
    try:
        yield machines
    finally:
        machines.stop()
