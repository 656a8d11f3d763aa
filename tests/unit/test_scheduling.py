"""make test's order of work for its two workers (tests/support/scheduling.py)."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap

from support.paths import REPO
from support.scheduling import LONGEST_FIRST, order


def test_the_known_long_groups_go_first_longest_first_and_the_rest_keeps_its_order():
    scopes = ['pipeline', 'tests/unit/test_a.py::test_one', 'push_page_zope', 'other',
              'relstorage-pipeline', 'tests/unit/test_a.py::test_two', 'multihost']
    longest = ('relstorage-pipeline', 'multihost', 'pipeline', 'plone', 'push_page_zope')
    assert order(scopes, longest) == [
        'relstorage-pipeline', 'multihost', 'pipeline', 'push_page_zope',
        'tests/unit/test_a.py::test_one', 'other', 'tests/unit/test_a.py::test_two']
    assert order(['b', 'a'], ('a',)) == ['a', 'b']


def test_every_group_named_is_a_group_of_the_tests():
    """A group renamed in the tests but not here would quietly go back to xdist's order."""
    used = set()
    for path in (REPO / 'tests').rglob('test_*.py'):
        if path.name == 'test_scheduling.py':  # its own suite's groups
            continue
        used.update(re.findall(r"xdist_group\('([^']+)'\)", path.read_text()))
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    assert set(LONGEST_FIRST) == used, used


SUITE = '''
import sys, time
import pytest
sys.path.insert(0, %(tests)r)
from support.scheduling import LongestFirstScheduling


class Scheduling(LongestFirstScheduling):
    longest_first = ('longest', 'long')


def pytest_xdist_make_scheduler(config, log):
    return Scheduling(config, log)
'''

TESTS = '''
import os, time
import pytest


def record(name):
    with open(%(log)r, 'a') as log:
        log.write('%%s %%s\\n' %% (os.environ['PYTEST_XDIST_WORKER'], name))


@pytest.mark.parametrize('n', range(6))
@pytest.mark.xdist_group('many')
def test_many(n):
    record('many')


@pytest.mark.xdist_group('long')
def test_long():
    record('long')
    time.sleep(1)


@pytest.mark.xdist_group('longest')
def test_longest():
    record('longest')
    time.sleep(2)


@pytest.mark.parametrize('n', range(4))
def test_single(n):
    record('single')
'''


def test_two_workers_start_on_the_longest_groups_and_every_test_runs(tmp_path):
    """By default xdist would hand out the group of six first; here each worker starts on one
    of the two long ones, and the rest follow."""
    log = tmp_path / 'ran.log'
    (tmp_path / 'conftest.py').write_text(SUITE % {'tests': str(REPO / 'tests')})
    (tmp_path / 'test_suite.py').write_text(textwrap.dedent(TESTS % {'log': str(log)}))
    (tmp_path / 'pytest.ini').write_text('[pytest]\n')
    run = subprocess.run([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-q',
                          '-n', '2', '--dist', 'loadgroup', str(tmp_path)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert '12 passed' in run.stdout, run.stdout[-3000:]
    ran = [line.split() for line in log.read_text().splitlines()]
    first = {}
    for worker, name in ran:
        first.setdefault(worker, name)
    assert sorted(first.values()) == ['long', 'longest'], ran
    assert len({worker for worker, name in ran if name == 'many'}) == 1, ran  # one group
