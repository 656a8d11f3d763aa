"""Shared by every test: the collection on sys.path, and the helpers in tests/support."""
from __future__ import annotations

import sys

import pytest

from support.paths import COLLECTIONS
from support.procs import ProcessGroup

if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))


@pytest.fixture
def processes():
    """Start helper processes with ``processes.start(argv)``; all are stopped after the test."""
    group = ProcessGroup()
    yield group
    group.stop_all()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` (make test) with the long groups handed out first
    (support/scheduling.py)."""
    if config.getoption('dist') != 'loadgroup':
        return None
    from support.scheduling import LongestFirstScheduling
    return LongestFirstScheduling(config, log)
