"""An idle site.yml (nothing to change) and status.yml: this tree against another revision,
side by side on one bench sandbox, rounds alternated.

    .venv/bin/python bench/site_idle_bench.py --before <revision> [--rounds 3] [--keep]

The sandbox (bench/promotion_lib.py's, one client per side, a free port block from 50000) is
brought up by this tree's site.yml; the other revision is checked out into a temporary git
worktree and runs its own playbooks and plugins against the same sandbox, with this
virtualenv. Both should write the same files (a run's changes are reported: it is not
idle, unless the trees install different files: each run then puts its own back, which the
table shows as changes). Wall time, the CPU time of ansible-playbook and everything it started (user + sys, from
wait4), the number of host task results, and the load average at the start of each run go to
bench/results/ and to docs/benchmarks.md ("site-idle" block of the "## Promotion" section).
Every process is stopped by PID; the sandbox is stopped at the end unless --keep.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import promotion_lib as pl  # noqa: E402  (after the path setup above)

PLAYBOOKS = ('site.yml', 'status.yml')


def run_timed(tree, pipeline, playbook, log_path):
    """One ansible-playbook of ``tree`` against the bench sandbox: (wall s, cpu s, rc, recap)."""
    argv = pipeline.playbook_argv(playbook)
    argv[argv.index(str(pl.REPO / 'playbooks' / playbook))] = str(tree / 'playbooks' / playbook)
    env = dict(pipeline.env(), ANSIBLE_CONFIG=str(tree / 'ansible.cfg'))
    started = time.monotonic()
    with open(log_path, 'w') as out:
        proc = subprocess.Popen(argv, cwd=str(tree), stdout=out, stderr=subprocess.STDOUT, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    text = pathlib.Path(log_path).read_text()
    changed = sum(int(n) for n in re.findall(r'changed=(\d+)', text))
    results = sum(int(n) for n in re.findall(r'\bok=(\d+)', text))
    return {'wall': wall, 'cpu': usage.ru_utime + usage.ru_stime,
            'rc': os.waitstatus_to_exitcode(status), 'changed': changed, 'ok': results}


def markdown(result):
    lines = ['### An idle `site.yml` and `status.yml`, side by side (`bench/site_idle_bench.py`)', '',
             'Measured %s on %d cores; "before" is `%s`, "after" `%s`, alternated on one bench '
             'sandbox (one client per side). CPU is ansible-playbook and everything it started '
             '(user + sys). Load is the 1-minute load average at the start of each run.'
             % (result['when'], os.cpu_count(), result['before'], result['after']), '',
             '| playbook | tree | wall (median) | CPU (median) | task results | changed | runs (wall / CPU / load) |',
             '| --- | --- | --- | --- | --- | --- | --- |']
    for playbook in PLAYBOOKS:
        for tree in ('before', 'after'):
            runs = [r for r in result['runs'] if r['playbook'] == playbook and r['tree'] == tree]
            lines.append('| `%s` | %s | %.1f s | %.1f s | %d | %s | %s |' % (
                playbook, tree, pl.median([r['wall'] for r in runs]),
                pl.median([r['cpu'] for r in runs]), runs[0]['ok'],
                ', '.join(str(r['changed']) for r in runs),
                ', '.join('%.0f / %.0f / %.1f' % (r['wall'], r['cpu'], r['load']) for r in runs)))
        before = pl.median([r['cpu'] for r in result['runs'] if r['playbook'] == playbook and r['tree'] == 'before'])
        after = pl.median([r['cpu'] for r in result['runs'] if r['playbook'] == playbook and r['tree'] == 'after'])
        lines.append('| `%s` | after / before | | %.2fx | | | |' % (playbook, after / before))
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--before', required=True, help='the revision to compare with')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--workdir', default=str(pl.REPO / '.sandbox-bench-site'))
    parser.add_argument('--keep', action='store_true')
    parser.add_argument('--no-doc', action='store_true')
    args = parser.parse_args(argv)
    rev = subprocess.run(['git', 'rev-parse', '--short', args.before], cwd=str(pl.REPO),
                         capture_output=True, text=True, check=True).stdout.strip()
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=str(pl.REPO),
                          capture_output=True, text=True, check=True).stdout.strip()
    old = pathlib.Path(tempfile.mkdtemp(prefix='site-bench-'))
    subprocess.run(['git', 'worktree', 'add', '--detach', str(old), rev], cwd=str(pl.REPO),
                   check=True, capture_output=True)
    pipeline = pl.new_pipeline(args.workdir)
    runs = []
    try:
        pipeline.clients = 1
        pl.write_inventory(pipeline.inventory, 1)
        pl.log('bringing the sandbox up with site.yml of %s' % head)
        if pipeline.run_playbook('site.yml', log_path=pipeline.workdir / 'site.log') != 0:
            raise SystemExit('site.yml failed; see %s' % (pipeline.workdir / 'site.log'))
        for number in range(args.rounds):
            order = [('before', old), ('after', pl.REPO)]
            if number % 2:
                order.reverse()
            for playbook in PLAYBOOKS:
                for tree, path in order:
                    load = os.getloadavg()[0]
                    run = run_timed(path, pipeline, playbook,
                                    pipeline.workdir / ('%s-%s-%d.log' % (playbook, tree, number)))
                    run.update(playbook=playbook, tree=tree, round=number, load=load)
                    pl.log('%s %s: %.1f s wall, %.1f s CPU, changed=%d, rc %d (load %.1f)'
                           % (playbook, tree, run['wall'], run['cpu'], run['changed'], run['rc'], load))
                    if run['rc'] != 0 or not run['ok']:
                        raise SystemExit('%s of %s failed; see %s' % (playbook, tree, pipeline.workdir))
                    runs.append(run)
    finally:
        if not args.keep:
            pipeline.stop()
        subprocess.run(['git', 'worktree', 'remove', '--force', str(old)], cwd=str(pl.REPO),
                       check=False, capture_output=True)
        shutil.rmtree(old, ignore_errors=True)
    result = {'before': rev, 'after': head, 'runs': runs,
              'when': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}
    path = pl.save('site_idle', result)
    text = markdown(result)
    print(text)
    if not args.no_doc:
        pl.update_doc('site-idle', text)
    pl.log('results: %s' % path)


if __name__ == '__main__':
    main()
