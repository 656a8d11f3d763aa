"""Promotion against its bare baseline: ``playbooks/promote.yml -e stage=test`` (the upstream
data policy) and ``bench/baseline_promote.py`` (the same inherent steps by hand), A/B in
alternating order, on one local pipeline of the bench's own.

    .venv/bin/python bench/promotion_bench.py                        # make bench: quick
    .venv/bin/python bench/promotion_bench.py --sizes demo,100M,1G --clients 1,2,4 --rounds 3

Cases: the predecessor's (beta's) data at each of ``--sizes`` with the smallest client count,
and the demo data (the smallest size) at each of ``--clients`` (clients per side: the stage
and its twin get as many); ``--matrix`` runs every size with every client count. For each
case ``--rounds`` A/B pairs without load, then ``--load-rounds`` A/B pairs under a read load
and a write load through the stage's frontend (the lost writes of the playbook must be 0; the
baseline's are reported for comparison, it has no freeze and no catch-up).

Measured per run: wall time; the phases and freeze windows from the ledger (playbook); each
step (baseline); each task's time (bench/callback_plugins/bench_timings.py); the bytes
written (see promotion_lib.WrittenBytes: /proc/<pid>/io write_bytes of the runner's reaped
children plus the sandbox's supervisord and its programs); the sandbox's disk use (du).
Results: bench/results/promotion-<time>.json, a table in docs/benchmarks.md ("## Promotion"),
plots docs/images/bench-promotion-*.png.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time
import types

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import promotion_lib as pl  # noqa: E402
from support.load import LoadGenerator  # noqa: E402
from support.promotion import expected_writes, lost_writes, state_events  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--sizes', default='demo,100M',
                        help='data sizes of the predecessor: demo, 100M, 1G (default demo,100M)')
    parser.add_argument('--clients', default='1,2',
                        help='Zope clients per side, at most 4 (default 1,2)')
    parser.add_argument('--rounds', type=int, default=2, help='A/B pairs per case without load')
    parser.add_argument('--load-rounds', type=int, default=1,
                        help='A/B pairs per case under read and write load (default 1)')
    parser.add_argument('--matrix', action='store_true', help='every size with every count')
    parser.add_argument('--workdir', default=str(pl.REPO / '.sandbox-bench'),
                        help='sandbox, inventories, data sets, logs (default .sandbox-bench)')
    parser.add_argument('--keep', action='store_true', help='leave the sandbox running')
    parser.add_argument('--reuse', action='store_true',
                        help='use the running sandbox a --keep run left (its client count only)')
    parser.add_argument('--ansible-env', action='append', default=[], metavar='KEY=VALUE',
                        help='environment for ansible-playbook only, e.g. a strategy plugin')
    parser.add_argument('--variant', default='', help='a label for these cases (with '
                        '--ansible-env)')
    parser.add_argument('--no-doc', action='store_true', help='do not touch docs/')
    parser.add_argument('--from-results', metavar='JSON',
                        help='rewrite the table and the plots from a results file, run nothing')
    args = parser.parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(',') if s.strip()]
    args.clients = sorted(int(c) for c in args.clients.split(',') if c.strip())
    for size in args.sizes:
        if size not in pl.SIZES:
            parser.error('unknown size %r (choose from %s)' % (size, ', '.join(pl.SIZES)))
    if not all(1 <= c <= 4 for c in args.clients):
        parser.error('--clients must be between 1 and 4')
    return args


def cases_of(args):
    sizes = sorted(args.sizes, key=lambda s: pl.SIZES[s])
    if args.matrix:
        return [(s, c) for c in args.clients for s in sizes]
    cases = [(s, args.clients[0]) for s in sizes]
    cases += [(sizes[0], c) for c in args.clients[1:]]
    return sorted(cases, key=lambda case: (case[1], pl.SIZES[case[0]]))


class Runner:
    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.io = pl.WrittenBytes(pipeline)
        self.counter = 0

    def _measure(self, kind, label, func):
        """Run ``func`` (a promotion of either kind) and measure around it."""
        pipeline = self.pipeline
        self.counter += 1
        tag = '%s-%03d-%s-%s' % (time.strftime('%H%M%S'), self.counter, label, kind)
        ledger_before = (pipeline.ledger() or [{}])[-1].get('run_id')
        du_before = pl.disk_usage(pipeline.sandbox)
        io_before = self.io.sample()
        started = time.monotonic()
        outcome = func(tag)
        wall = time.monotonic() - started
        io_after = self.io.sample()
        written = pl.WrittenBytes.delta(io_before, io_after)
        run = {'kind': kind, 'tag': tag, 'wall': round(wall, 2), 'written': written,
               'written_total': written['runner'] + written['services'],
               'du_before': du_before, 'du_after': pl.disk_usage(pipeline.sandbox),
               'load_average': [round(x, 2) for x in pl.os.getloadavg()]}
        run.update(outcome)
        if kind == 'playbook':
            entry = pl.last_ledger_entry(pipeline, ledger_before)
            run['ledger'] = entry
            run['ok'] = run['rc'] == 0 and entry is not None and entry.get('result') == 'success'
        else:
            run['ok'] = run['rc'] == 0
        if pipeline.active_side() != 'be_%s_live' % pl.STAGE:
            run['ok'] = False
            run['problem'] = 'traffic not on the stage afterwards: %s' % pipeline.active_side()
        pl.log('%s: %.1f s, %.1f MB written, %s' % (
            tag, wall, run['written_total'] / 1e6, 'ok' if run['ok'] else 'FAILED (%s)' % (
                run.get('problem') or run.get('log'))))
        return run

    def playbook(self, label, extra=None):
        def go(tag):
            timings = self.pipeline.timings_dir / (tag + '.jsonl')
            log_path = self.pipeline.timings_dir / (tag + '.log')
            rc = self.pipeline.run_playbook('promote.yml', dict({'stage': pl.STAGE},
                                                                **(extra or {})),
                                            timings_file=timings, log_path=log_path)
            return {'rc': rc, 'log': str(log_path), 'tasks': pl.read_timings(timings)}
        return self._measure('playbook', label, go)

    def baseline(self, label):
        def go(tag):
            log_path = self.pipeline.timings_dir / (tag + '.log')
            proc = subprocess.run([sys.executable, str(pl.REPO / 'bench' / 'baseline_promote.py'),
                                   '--sandbox', str(self.pipeline.sandbox), '--stage', pl.STAGE],
                                  capture_output=True, text=True, timeout=1800, check=False)
            log_path.write_text(proc.stdout + proc.stderr)
            steps = json.loads(proc.stdout)['steps'] if proc.returncode == 0 else []
            return {'rc': proc.returncode, 'log': str(log_path), 'steps': steps}
        return self._measure('baseline', label, go)

    def under_load(self, kind, label):
        """One run of ``kind`` with 2 reader threads and 2 writer threads through the stage's
        frontend, from 1 s before it starts until 1 s after it ends (bounded: 30 min, 20,000
        writes); then which acknowledged writes the stage's data must hold and does not."""
        pipeline = self.pipeline
        base = 'http://127.0.0.1:%d' % pipeline.lb_port(pl.STAGE)
        with LoadGenerator(base + '/@@zopeops-info', threads=2, max_seconds=1800) as reads, \
                pl.WriteLoad(base, auth=pipeline.admin_auth(), threads=2, max_seconds=1800,
                             max_writes=20000, pause=0.05) as writes:
            time.sleep(1.0)
            run = (self.playbook if kind == 'playbook' else self.baseline)(label + '-load')
            time.sleep(1.0)
        if kind == 'playbook':
            _state, events = state_events(pipeline, pl.STAGE)
            back = events.get(('cutover_to_live', 'start'))
        else:  # traffic is back on the stage only after the baseline's to_live step
            steps = {s['step']: s for s in run.get('steps', [])}
            back = (steps['to_live']['at'] - steps['to_live']['seconds']
                    if 'to_live' in steps else None)
        expected = expected_writes(types.SimpleNamespace(writes=writes), pl.STAGE, 'upstream',
                                   back)
        lost = lost_writes(pipeline, pl.STAGE, expected)
        run['load'] = {
            'reads': reads.total, 'read_failures': len(reads.failures),
            'read_statuses': {str(k): v for k, v in reads.statuses.items()},
            'writes_acknowledged': len(writes.acknowledged), 'writes_expected': len(expected),
            'writes_failed': len(writes.failed), 'writes_abandoned': len(writes.abandoned),
            'writes_retried_503': writes.retried_503, 'by_instance': writes.by_instance(),
            'lost': lost['missing_datafs'], 'lost_http': lost['missing_http'],
            'lost_ids': lost['datafs'][:5]}
        pl.log('  under load: %d reads (%d failed), %d writes acknowledged, %d expected in the '
               'stage, %d lost' % (reads.total, len(reads.failures), len(writes.acknowledged),
                                   len(expected), lost['missing_datafs']))
        return run


def run_case(runner, size, clients, args, datasets):
    pipeline = runner.pipeline
    if pipeline.clients != clients:
        pipeline.up(clients)
    dataset = pl.ensure_dataset(pipeline, size, datasets)
    pl.log('case %s, %d client(s) per side: the predecessor gets the %s data set'
           % (size, clients, size))
    pl.set_instance_data(pipeline, pl.PREDECESSOR, dataset)
    label = '%s-%dc%s' % (size, clients, '-' + args.variant if args.variant else '')
    runs = []
    for number in range(args.rounds):
        order = ('playbook', 'baseline') if number % 2 == 0 else ('baseline', 'playbook')
        for kind in order:
            runs.append(getattr(runner, kind)(label))
    for number in range(args.load_rounds):
        order = ('playbook', 'baseline') if number % 2 == 0 else ('baseline', 'playbook')
        for kind in order:
            runs.append(runner.under_load(kind, label))
    info = json.loads((dataset / 'done.json').read_text())
    return {'size': size, 'clients': clients, 'datafs_bytes': info['datafs_bytes'],
            'blob_files': info['blob_files'], 'runs': runs,
            'sandbox_du': pl.disk_usage(pipeline.sandbox)}


# -- summarising ------------------------------------------------------------------------------
def summarise(case):
    quiet = [r for r in case['runs'] if 'load' not in r and r['ok']]
    play = [r for r in quiet if r['kind'] == 'playbook']
    base = [r for r in quiet if r['kind'] == 'baseline']
    loaded = [r for r in case['runs'] if 'load' in r]
    summary = {
        'playbook_runs': len(play), 'baseline_runs': len(base),
        'failed_runs': sum(1 for r in case['runs'] if not r['ok']),
        'playbook': pl.median([r['wall'] for r in play]),
        'baseline': pl.median([r['wall'] for r in base]),
        'playbook_written': pl.median([r['written_total'] for r in play]),
        'baseline_written': pl.median([r['written_total'] for r in base]),
        'phases': {}, 'freeze': {}, 'baseline_steps': {}, 'tasks': {},
    }
    if summary['playbook'] and summary['baseline']:
        summary['ratio'] = summary['playbook'] / summary['baseline']
    for run in play:
        for phase in (run['ledger'] or {}).get('phases', []):
            summary['phases'].setdefault(phase['phase'], []).append(phase['seconds'])
        for window in (run['ledger'] or {}).get('freeze_windows', []):
            summary['freeze'].setdefault(window['switch'], []).append(window['frozen_seconds'])
        per_task = {}
        for task in run['tasks']:
            key = '%s | %s' % (task['action'].split('.')[-1], task['task'])
            per_task[key] = per_task.get(key, 0) + (task['seconds'] or 0)
        for key, seconds in per_task.items():
            summary['tasks'].setdefault(key, []).append(seconds)
        summary.setdefault('calls', []).append(len(run['tasks']))
    for run in base:
        for step in run['steps']:
            summary['baseline_steps'].setdefault(step['step'], []).append(step['seconds'])
    for key in ('phases', 'freeze', 'baseline_steps', 'tasks'):
        summary[key] = {k: pl.median(v) for k, v in summary[key].items()}
    summary['calls'] = pl.median(summary.get('calls', []))
    summary['load'] = [{'kind': r['kind'], 'wall': r['wall'], 'ok': r['ok'], **r['load']}
                       for r in loaded]
    return summary


def fmt_bytes(value):
    if value is None:
        return '-'
    return '%.1f MB' % (value / 1e6) if value >= 1e5 else '%.0f kB' % (value / 1e3)


def fmt_s(value):
    return '-' if value is None else '%.1f s' % value


PHASES = ['preflight', 'twin_code', 'twin_data', 'twin_start', 'cutover_to_twin', 'live_stop',
          'live_code', 'live_data', 'live_start', 'cutover_to_live', 'twin_stop', 'finish']
# baseline step -> the playbook phase it stands for
BASELINE_PHASE = {'twin_data': 'twin_data', 'twin_code': 'twin_code',
                  'twin_start': 'twin_start', 'to_twin': 'cutover_to_twin',
                  'live_stop': 'live_stop', 'live_data': 'live_data', 'live_code': 'live_code',
                  'live_start': 'live_start', 'to_live': 'cutover_to_live',
                  'twin_stop': 'twin_stop'}


def markdown(result):
    cases = result['cases']
    lines = ['### Promotion against its baseline (`bench/promotion_bench.py`)', '',
             'Stage `test` promoted from `beta` with the `upstream` policy on a local pipeline of '
             'the bench\'s own (%s); medians of %s alternating A/B rounds without load; '
             'load average %s at the start and %s at the end on %d cores, shared with other '
             'jobs (the last column: median 1-minute load average after each run of the case), '
             'so single timings vary a lot: compare the ratios. Baseline: '
             '`bench/baseline_promote.py` (cp, `cp -al`, relink, `supervisorctl`, HTTP wait, '
             '`set map`). Bytes written: `/proc/<pid>/io` `write_bytes` of the runner\'s reaped '
             'children (ansible-playbook and its module processes, or the baseline and its '
             '`cp`) plus the sandbox\'s supervisord and its programs (ZEO, Zope, HAProxy). '
             'Targets: ratio <= 2x with demo data, <= 1.5x with 1 GB.'
             % (result['command'], result['rounds'], result['load_start'],
                result['host']['load_average'], result['host']['cpus']), '',
             '| Data.fs | blobs | clients/side | promote.yml | baseline | ratio | target | '
             'written (promote.yml) | written (baseline) | task results | sandbox du | load avg |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for case in cases:
        s = case['summary']
        target = 2.0 if case['size'] == 'demo' else 1.5 if case['size'] == '1G' else None
        ratio = s.get('ratio')
        verdict = '-' if target is None or ratio is None else (
            '<= %.1fx met' % target if ratio <= target else '<= %.1fx missed' % target)
        lines.append('| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
            fmt_bytes(case['datafs_bytes']), case['blob_files'], case['clients'],
            fmt_s(s['playbook']), fmt_s(s['baseline']),
            '-' if ratio is None else '%.2fx' % ratio, verdict,
            fmt_bytes(s['playbook_written']), fmt_bytes(s['baseline_written']),
            '-' if s['calls'] is None else '%d' % s['calls'],
            fmt_bytes(case['sandbox_du']),
            '%.1f' % pl.median([r['load_average'][0] for r in case['runs']])))
    lines += ['', 'Phases (medians, seconds; playbook phases from the ledger, baseline steps '
              'mapped to them; "freeze" is the ledger\'s `frozen_seconds`):', '',
              '| phase | ' + ' | '.join('%s %dc' % (c['size'], c['clients']) for c in cases)
              + ' |', '| --- |' + ' --- |' * len(cases)]
    for phase in PHASES:
        cells = []
        for case in cases:
            s = case['summary']
            base = [v for k, v in s['baseline_steps'].items() if BASELINE_PHASE.get(k) == phase]
            cell = fmt_s(s['phases'].get(phase)).replace(' s', '')
            if base:
                cell += ' (%s)' % ('%.1f' % sum(base))
            cells.append(cell)
        lines.append('| %s | %s |' % (phase, ' | '.join(cells)))
    lines.append('| freeze at the switches | %s |' % ' | '.join(
        ' / '.join('%.2f' % v for v in c['summary']['freeze'].values()) or '-' for c in cases))
    lines.append('| **total** | %s |' % ' | '.join(
        '%s (%s)' % (fmt_s(c['summary']['playbook']), fmt_s(c['summary']['baseline']))
        for c in cases))
    loaded = [(c, l) for c in cases for l in c['summary']['load']]
    if loaded:
        lines += ['', 'Under load (2 reader threads, 2 writer threads through `fe_test`; lost = '
                  'acknowledged writes the stage must hold by `expected_writes` and its Data.fs '
                  'does not; the baseline has no freeze and no catch-up):', '',
                  '| case | run | wall | reads (failed) | writes acked | expected | retried 503 '
                  '| lost |', '| --- | --- | --- | --- | --- | --- | --- | --- |']
        for case, run in loaded:
            lines.append('| %s %dc | %s | %s | %d (%d) | %d | %d | %d | **%d** |' % (
                case['size'], case['clients'], run['kind'], fmt_s(run['wall']), run['reads'],
                run['read_failures'], run['writes_acknowledged'], run['writes_expected'],
                run['writes_retried_503'], run['lost']))
    lines += ['', 'Costliest tasks of promote.yml (median seconds per run, summed over hosts; '
              'largest case):', '']
    big = max(cases, key=lambda c: (pl.SIZES[c['size']], c['clients']))
    top = sorted(big['summary']['tasks'].items(), key=lambda kv: -kv[1])[:12]
    lines += ['| module \\| task | seconds |', '| --- | --- |']
    lines += ['| %s | %.1f |' % (k.replace('|', '\\|'), v) for k, v in top]
    lines += ['', 'Raw numbers: `bench/results/%s`.' % result['file'], '',
              '![time against data size](images/bench-promotion-size.png)',
              '![time against clients](images/bench-promotion-clients.png)',
              '![phases](images/bench-promotion-phases.png)']
    return '\n'.join(lines)


def plots(result):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    pl.IMAGES.mkdir(parents=True, exist_ok=True)
    cases = result['cases']
    smallest_c = min(c['clients'] for c in cases)
    by_size = sorted([c for c in cases if c['clients'] == smallest_c],
                     key=lambda c: c['datafs_bytes'])
    smallest_s = min(cases, key=lambda c: pl.SIZES[c['size']])['size']
    by_clients = sorted([c for c in cases if c['size'] == smallest_s], key=lambda c: c['clients'])
    made = []
    for name, series, xkey, xlabel, xscale in (
            ('size', by_size, 'datafs_bytes', 'Data.fs of the predecessor (MB)', 'log'),
            ('clients', by_clients, 'clients', 'Zope clients per side', 'linear')):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        xs = [c[xkey] / 1e6 if xkey == 'datafs_bytes' else c[xkey] for c in series]
        for kind, marker, color in (('playbook', 'o-', 'C0'), ('baseline', 's--', 'C1')):
            ys = [c['summary'][kind] for c in series]
            ax.plot(xs, ys, marker, color=color, label='%s (median)' % (
                'promote.yml' if kind == 'playbook' else 'baseline'))
            for x, case in zip(xs, series):  # every run, so the spread shows
                walls = [r['wall'] for r in case['runs']
                         if r['kind'] == kind and 'load' not in r and r['ok']]
                loaded = [r['wall'] for r in case['runs'] if r['kind'] == kind and 'load' in r]
                ax.plot([x] * len(walls), walls, '.', color=color, alpha=0.5)
                ax.plot([x] * len(loaded), loaded, 'x', color=color, alpha=0.6)
        ax.plot([], [], 'k.', alpha=0.5, label='single runs')
        ax.plot([], [], 'kx', alpha=0.6, label='under read+write load')
        ax.set_xscale(xscale)
        ax.set_xlabel(xlabel)
        ax.set_ylabel('seconds (median)')
        ax.set_ylim(bottom=0)
        ax.set_title('Promotion of test (upstream) against its baseline')
        ax.grid(True, alpha=0.3)
        ax.legend()
        path = pl.IMAGES / ('bench-promotion-%s.png' % name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(path)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels, bottoms = [], []
    bars = []
    for case in cases:
        for kind in ('playbook', 'baseline'):
            labels.append('%s %dc\n%s' % (case['size'], case['clients'],
                                          'promote' if kind == 'playbook' else 'base'))
            if kind == 'playbook':
                bars.append(case['summary']['phases'])
            else:
                steps = {}
                for step, seconds in case['summary']['baseline_steps'].items():
                    phase = BASELINE_PHASE.get(step, step)
                    steps[phase] = steps.get(phase, 0) + seconds
                bars.append(steps)
    bottoms = [0.0] * len(bars)
    colors = plt.get_cmap('tab20').colors
    for index, phase in enumerate(PHASES):
        heights = [row.get(phase) or 0 for row in bars]
        if not any(heights):
            continue
        ax.bar(range(len(bars)), heights, bottom=bottoms, label=phase,
               color=colors[index % len(colors)])
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel('seconds (median)')
    ax.set_title('Phases of a promotion (ledger) and of the baseline')
    ax.legend(fontsize=7, ncol=2, loc='upper left', bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = pl.IMAGES / 'bench-promotion-phases.png'
    fig.savefig(path, dpi=100)
    plt.close(fig)
    made.append(path)
    return made


def main(argv=None):
    args = parse_args(argv)
    if args.from_results:
        result = json.loads(pathlib.Path(args.from_results).read_text())
        result['file'] = pathlib.Path(args.from_results).name
        for case in result['cases']:
            case['summary'] = summarise(case)
        if not args.no_doc:
            pl.update_doc('promotion_bench', markdown(result))
            for png in plots(result):
                pl.log('plot: %s' % png)
        print(markdown(result))
        return
    cases = cases_of(args)
    pl.log('cases: %s; %d rounds, %d under load each'
           % (', '.join('%s/%dc' % c for c in cases), args.rounds, args.load_rounds))
    if args.reuse:
        pipeline = pl.reuse_pipeline(args.workdir)
        cases = [case for case in cases if case[1] == pipeline.clients]
    else:
        pipeline = pl.new_pipeline(args.workdir)
    pipeline.extra_env = dict(item.split('=', 1) for item in args.ansible_env)
    runner = Runner(pipeline)
    result = {'command': 'promotion_bench.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
              'rounds': args.rounds, 'load_rounds': args.load_rounds,
              'load_start': [round(x, 2) for x in pl.os.getloadavg()],
              'variant': args.variant, 'ansible_env': sorted(pipeline.extra_env),
              # The strategy the playbooks ran under (the Makefile's STRATEGY, else linear).
              'strategy': pipeline.extra_env.get('ANSIBLE_STRATEGY',
                                                 pl.os.environ.get('ANSIBLE_STRATEGY', 'linear')),
              'port_base': pipeline.port_base, 'cases': []}
    try:
        for size, clients in cases:
            case = run_case(runner, size, clients, args, pipeline.workdir / 'datasets')
            case['variant'] = args.variant
            case['summary'] = summarise(case)
            result['cases'].append(case)
            s = case['summary']
            pl.log('case %s %dc: promote.yml %s, baseline %s, ratio %s' % (
                size, clients, fmt_s(s['playbook']), fmt_s(s['baseline']),
                '%.2fx' % s['ratio'] if s.get('ratio') else '-'))
    finally:
        if not args.keep:
            pl.log('stopping the sandbox')
            pipeline.stop()
        if result['cases']:
            path = pl.save('promotion', result)
            result['file'] = path.name
            result['host'] = json.loads(path.read_text())['host']
            pl.log('raw numbers: %s' % path)
            if not args.no_doc:
                pl.update_doc('promotion_bench', markdown(result))
                for png in plots(result):
                    pl.log('plot: %s' % png)
    failed = [r['tag'] for c in result['cases'] for r in c['runs'] if not r['ok']]
    lost = [r['tag'] for c in result['cases'] for r in c['runs']
            if r['kind'] == 'playbook' and r.get('load', {}).get('lost')]
    print(markdown(result) if result['cases'] and 'file' in result else '')
    if failed or lost:
        raise SystemExit('failed runs: %s; playbook runs that lost writes: %s' % (failed, lost))


if __name__ == '__main__':
    main()
