"""zeo_service's start and stop of one side (a ZEO server and two Zope clients under a real
supervisord): this tree against another revision, rounds alternated on one sandbox.

    .venv/bin/python bench/zeo_service_bench.py --before <revision> [--rounds 5]

Per round and tree, four module runs, timed from the outside (wall time of the module's
process, as Ansible would run it): the side started in one call (``programs``: ZEO and both
clients), stopped in one call (clients first), then the ZEO server alone started and stopped
(``name``); each with the number of process-manager commands it ran (load-independent).
The other revision is checked out into a temporary git worktree and its module
file runs with this virtualenv. The load average is printed with every round. Every process
is stopped by PID (the supervisord of tests/support/supervisor.py stops its programs).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / 'tests'), str(REPO / 'collections')]

from support.paths import VENV_BIN  # noqa: E402  (after the path setup above)
from support.ports import free_port  # noqa: E402
from support.supervisor import running_supervisor  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    'services_fixtures', REPO / 'tests' / 'integration' / 'services' / 'conftest.py')
fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixtures)


def run(tree, args):
    """Run tree's zeo_service with ``args``: (wall seconds, result)."""
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, handle)
    env = dict(os.environ, PYTHONPATH=str(tree / 'collections'))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(tree / 'plugins' / 'modules' / 'zeo_service.py'),
                           handle.name], capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - started
    os.unlink(handle.name)
    result = json.loads(proc.stdout)
    if result.get('failed'):
        raise SystemExit('%s failed: %s' % (tree, result.get('msg')))
    return wall, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    parser.add_argument('--before', required=True, help='the revision to compare with')
    parser.add_argument('--rounds', type=int, default=5)
    options = parser.parse_args()
    before = pathlib.Path(tempfile.mkdtemp(prefix='zs-before-'))
    subprocess.run(['git', '-C', str(REPO), 'worktree', 'add', '--detach', str(before),
                    options.before], check=True, capture_output=True)
    trees = {'before': before, 'after': REPO}
    times = {tree: {} for tree in trees}
    try:
        with running_supervisor() as sup:
            zeo_dir = sup.root / 'zeo'
            zeo_dir.mkdir()
            zeo_port = free_port()
            conf = fixtures.write_zeo(zeo_dir, zeo_port)
            fixtures.make_filestorage(zeo_dir / 'var' / 'Data.fs')
            sup.add_program('b-zeo', f'{VENV_BIN}/runzeo -C {conf}', startsecs=0)
            zeo = {'name': 'b-zeo', 'kind': 'zeo', 'address': f'127.0.0.1:{zeo_port}'}
            clients = []
            for name in ('b-client1', 'b-client2'):
                port = free_port()
                ini = fixtures.make_zope(sup.root / name, port, zeo_address=zeo['address'])
                sup.add_program(name, f'{VENV_BIN}/runwsgi {ini}', startsecs=0,
                                autorestart='true')
                clients.append({'name': name, 'kind': 'zope', 'address': f'127.0.0.1:{port}'})
            base = sup.module_args(timeout=120)
            # The root objects first, from one client alone (two first starts conflict).
            run(REPO, dict(base, programs=[zeo, clients[0]]))
            run(REPO, dict(base, programs=[clients[0], zeo], state='stopped'))
            side = dict(base, programs=[zeo] + clients)
            steps = [('side start', dict(side)),
                     ('side stop', dict(side, programs=clients + [zeo], state='stopped')),
                     ('zeo start', dict(base, name='b-zeo', kind='zeo',
                                        address=zeo['address'])),
                     ('zeo stop', dict(base, name='b-zeo', kind='zeo', address=zeo['address'],
                                       state='stopped'))]
            for number in range(options.rounds):
                order = list(trees) if number % 2 == 0 else list(reversed(trees))
                for tree in order:
                    load = os.getloadavg()[0]
                    walls = []
                    for step, args in steps:
                        wall, result = run(trees[tree], args)
                        times[tree].setdefault(step, []).append(wall)
                        walls.append('%s %.2f s (%d commands)'
                                     % (step, wall, len(result['commands'])))
                    print('round %d %-6s load %.2f: %s' % (number + 1, tree, load,
                                                           ', '.join(walls)), flush=True)
    finally:
        subprocess.run(['git', '-C', str(REPO), 'worktree', 'remove', '--force', str(before)],
                       check=False, capture_output=True)
    for tree in trees:
        print('%-6s median: %s' % (tree, ', '.join(
            '%s %.2f s' % (step, statistics.median(walls))
            for step, walls in times[tree].items())))


if __name__ == '__main__':
    main()
