"""The write freeze and the catch-up of a promotion's cutovers under a paced write load.

    .venv/bin/python bench/cutover_bench.py                    # 10 and 100 writes/s, 100 MB
    .venv/bin/python bench/cutover_bench.py --reuse            # on the sandbox that
                                                               # promotion_bench.py --keep left
    .venv/bin/python bench/cutover_bench.py --rates 10,50,100 --rounds 3

Stage ``test`` gets a Data.fs of ``--size`` (default 100M, made with ZODB: objects and blobs)
and is promoted with ``-e zopeops_data_policy=self``: the twin starts from a snapshot of the
stage, the cutover to the twin catches up what the stage wrote since, the stage keeps its
Data.fs and the cutover back catches up what the twin wrote. Writes come at a steady rate
(``PacedWriteLoad``: new ids at start + n / rate, retries on top) through the stage's
frontend, with one reader thread, from 3 s before the run until 1 s after it.

Per cutover: the freeze window (``freeze_windows[].frozen_seconds`` of the ledger), the
transactions caught up before and inside the freeze (``replayed``, ``replayed_frozen``), the
catch-up time (the seconds of the ``zodb_replay`` tasks of that cutover, before the freeze and
inside it, or with one balancer the steps ``lb_cutover`` times inside its one call;
bench/callback_plugins/bench_timings.py) and the whole step (ledger ``phases``).
Lost writes (acknowledged ids missing from the stage's Data.fs; with ``self`` every
acknowledged write must be there) must be 0. Results: bench/results/cutover-<time>.json and a
table in docs/benchmarks.md ("## Promotion").
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import types

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import promotion_lib as pl  # noqa: E402
from support.load import LoadGenerator  # noqa: E402
from support.promotion import expected_writes, lost_writes  # noqa: E402

SWITCHES = ('cutover_to_twin', 'cutover_to_live')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('--rates', default='10,100', help='writes a second (default 10,100)')
    parser.add_argument('--rounds', type=int, default=1, help='promotions per rate')
    parser.add_argument('--size', default='100M', choices=sorted(pl.SIZES))
    parser.add_argument('--clients', type=int, default=2, help='clients per side (new sandbox)')
    parser.add_argument('--workdir', default=str(pl.REPO / '.sandbox-bench'))
    parser.add_argument('--reuse', action='store_true',
                        help='use the running sandbox that promotion_bench.py --keep left')
    parser.add_argument('--keep', action='store_true', help='leave the sandbox running')
    parser.add_argument('--no-doc', action='store_true', help='do not touch docs/')
    parser.add_argument('--from-results', metavar='JSON', nargs='+',
                        help='rewrite the table from results files (their runs together; the '
                             'profile again from the timings files where they are), run nothing')
    args = parser.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(',') if r.strip()]
    return args


def _res(task):
    """The module's own result fields the timings callback kept."""
    return task.get('result') or {}


def cutover_profile(tasks):
    """{switch: {'catch_up_before': s, 'catch_up_frozen': s, 'passes': n}} from the timings."""
    profile = {}
    for switch in SWITCHES:
        replays = [t for t in tasks if switch in (t.get('play') or '')
                   and t['action'].endswith('zodb_replay')]
        frozen = [t for t in replays if 'exactly' in t['task']]
        before = [t for t in replays if t not in frozen and 'Count' not in t['task']]
        profile[switch] = {
            'catch_up_before': round(sum(t['seconds'] or 0 for t in before), 2),
            'catch_up_frozen': round(sum(t['seconds'] or 0 for t in frozen), 2),
            'catch_up_before_in_module': round(sum(_res(t).get('seconds') or 0
                                                   for t in before), 2),
            'passes': sum(_res(t).get('passes') or 0 for t in before),
            'freeze_call': round(sum(t['seconds'] or 0 for t in tasks
                                     if switch in (t.get('play') or '')
                                     and t['action'].endswith('lb_switch')
                                     and 'Freeze' in t['task']), 2),
            'switch_call': round(sum(t['seconds'] or 0 for t in tasks
                                     if switch in (t.get('play') or '')
                                     and t['action'].endswith('lb_switch')
                                     and 'Switch every' in t['task']), 2)}
        # One balancer: the whole cutover is one lb_cutover call; its steps are timed inside.
        for task in [t for t in tasks if switch in (t.get('play') or '')
                     and t['action'].endswith('lb_cutover')]:
            steps, res, prof = _res(task).get('steps') or {}, _res(task), profile[switch]
            gap = res.get('gap') or {}
            frozen = sum((res.get(step) or {}).get('seconds') or 0 for step in ('final', 'late'))
            prof['catch_up_before'] = round(prof['catch_up_before'] + (gap.get('seconds') or 0), 2)
            prof['catch_up_before_in_module'] = prof['catch_up_before']
            prof['catch_up_frozen'] = round(prof['catch_up_frozen'] + frozen, 2)
            prof['passes'] += gap.get('passes') or 0
            prof['freeze_call'] = round(prof['freeze_call'] + (steps.get('freeze') or 0), 2)
            prof['switch_call'] = round(prof['switch_call'] + (steps.get('switch') or 0), 2)
            prof['cutover_call'] = task['seconds']
    return profile


def one_run(pipeline, rate, label, counter):
    base = 'http://127.0.0.1:%d' % pipeline.lb_port(pl.STAGE)
    tag = '%s-%03d-cutover-%s' % (time.strftime('%H%M%S'), counter, label)
    timings = pipeline.timings_dir / (tag + '.jsonl')
    log_path = pipeline.timings_dir / (tag + '.log')
    threads = max(2, int(rate // 8))
    ledger_before = (pipeline.ledger() or [{}])[-1].get('run_id')
    with LoadGenerator(base + '/@@zopeops-info', threads=1, max_seconds=1800, pause=0.1) as reads, \
            pl.PacedWriteLoad(base, auth=pipeline.admin_auth(), rate=rate, threads=threads,
                              max_seconds=1800, max_writes=int(rate * 1800)) as writes:
        time.sleep(3.0)
        started = time.monotonic()
        rc = pipeline.run_playbook('promote.yml', {'stage': pl.STAGE,
                                                   'zopeops_data_policy': 'self'},
                                   timings_file=timings, log_path=log_path)
        wall = time.monotonic() - started
        time.sleep(1.0)
    entry = pl.last_ledger_entry(pipeline, ledger_before)
    expected = expected_writes(types.SimpleNamespace(writes=writes), pl.STAGE, 'self')
    lost = lost_writes(pipeline, pl.STAGE, expected)
    tasks = pl.read_timings(timings)
    elapsed = (writes.stopped_at or time.time()) - writes.started_at
    phases = {p['phase']: p['seconds'] for p in (entry or {}).get('phases', [])}
    run = {'tag': tag, 'rate': rate, 'rc': rc, 'wall': round(wall, 2), 'log': str(log_path),
           'ok': rc == 0 and entry is not None and entry.get('result') == 'success',
           'freeze_windows': (entry or {}).get('freeze_windows', []), 'phases': phases,
           'profile': cutover_profile(tasks),
           'writes': {'acknowledged': len(writes.acknowledged),
                      'achieved_rate': round(len(writes.acknowledged) / elapsed, 1),
                      'retried_503': writes.retried_503, 'failed': len(writes.failed),
                      'abandoned': len(writes.abandoned),
                      'max_attempts': max([e['attempts'] for e in writes.acknowledged.values()]
                                          or [0])},
           'reads': {'total': reads.total, 'failed': len(reads.failures),
                     'statuses': {str(k): v for k, v in reads.statuses.items()},
                     'first_failures': reads.failures[:5]},
           'write_failures': writes.failed[:5], 'timings': str(timings),
           'lost': lost['missing_datafs'], 'lost_http': lost['missing_http'],
           'lost_ids': lost['datafs'][:5], 'load_average': [round(x, 2) for x in
                                                            pl.os.getloadavg()]}
    windows = {w['switch']: w for w in run['freeze_windows']}
    pl.log('%s: %.1f s, %d writes acknowledged (%.1f/s), %d retried after 503, frozen %s s, '
           'caught up %s, lost %d%s' % (
               tag, wall, len(writes.acknowledged), run['writes']['achieved_rate'],
               writes.retried_503,
               ' / '.join(str(windows.get(s, {}).get('frozen_seconds')) for s in SWITCHES),
               ' / '.join('%s (%s frozen)' % (windows.get(s, {}).get('replayed'),
                                              windows.get(s, {}).get('replayed_frozen'))
                          for s in SWITCHES),
               lost['missing_datafs'], '' if run['ok'] else ' FAILED, see %s' % log_path))
    return run


def markdown(result):
    lines = ['### Write freeze and catch-up (`bench/cutover_bench.py`)', '',
             'Stage `test` with a Data.fs of %s (%d blob files) promoted with '
             '`-e zopeops_data_policy=self` (both cutovers catch up) while a paced write load '
             '(new ids at a steady rate, retries on top; %s) and one reader go through '
             '`fe_test`; %d client(s) per side; load average %s at the start, %s at the end on '
             '%d shared cores (other jobs ran too: single runs, rough numbers). Freeze = the '
             'ledger\'s `frozen_seconds`; catch-up = the `zodb_replay` tasks of the cutover '
             '(before the freeze: the gap passes; frozen: the final replay), as the controller '
             'times them (module start included). Target: freeze < 1 s at 10 writes/s.'
             % (pl.fmt_mb(result['datafs_bytes']), result['blob_files'],
                'writer threads = max(2, rate / 8)', result['clients'], result['load_start'],
                result['host']['load_average'], result['host']['cpus']), '',
             '| writes/s (achieved) | load avg | switch | freeze | target | caught up (in freeze) | '
             'catch-up before freeze (passes) | catch-up in freeze | freeze call | '
             'switch call | whole step | lost writes |',
             '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for run in result['runs']:
        windows = {w['switch']: w for w in run['freeze_windows']}
        for switch in SWITCHES:
            window = windows.get(switch, {})
            prof = run['profile'][switch]
            frozen = window.get('frozen_seconds')
            target = '-'
            if run['rate'] <= 10 and frozen is not None:
                target = '< 1 s met' if frozen < 1 else '< 1 s missed'
            lines.append('| %g (%.1f) | %.1f | %s | %s | %s | %s (%s) | %.2f s (%d) | %.2f s '
                         '| %.2f s | %.2f s | %s | **%d** |' % (
                             run['rate'], run['writes']['achieved_rate'],
                             run['load_average'][0], switch,
                             '-' if frozen is None else '%.2f s' % frozen, target,
                             window.get('replayed', '-'), window.get('replayed_frozen', '-'),
                             prof['catch_up_before'], prof['passes'], prof['catch_up_frozen'],
                             prof['freeze_call'], prof['switch_call'],
                             '-' if switch not in run['phases'] else '%.1f s' % run['phases'][switch],
                             run['lost']))
    lines += ['', 'Whole promotions: %s. Writes retried after a 503 (the freeze): %s; failed '
              'or abandoned: %s; reads failed: %s.' % (
                  ', '.join('%g/s %.0f s' % (r['rate'], r['wall']) for r in result['runs']),
                  ', '.join('%d' % r['writes']['retried_503'] for r in result['runs']),
                  ', '.join('%d' % (r['writes']['failed'] + r['writes']['abandoned'])
                            for r in result['runs']),
                  ', '.join('%d' % r['reads']['failed'] for r in result['runs'])),
              '', 'Raw numbers: `bench/results/%s`.' % result['file']]
    return '\n'.join(lines)


def from_results(paths):
    results = [json.loads(pathlib.Path(p).read_text()) for p in paths]
    result = dict(results[-1], runs=[], file=', '.join(pathlib.Path(p).name for p in paths))
    result['load_start'] = ' / '.join(str(r['load_start']) for r in results)
    result['host'] = dict(result['host'], load_average=' / '.join(
        str(r['host']['load_average']) for r in results))
    for number, one in enumerate(results):
        for run in one['runs']:
            timings = pathlib.Path(run.get('timings') or pl.REPO / '.sandbox-bench' / 'timings'
                                   / (run['tag'] + '.jsonl'))
            if timings.exists():
                # an earlier bench without a time in its tags may have appended a later run's
                # tasks to the same file: take the series' own stretch (runs lie minutes apart)
                records = pl.read_timings(timings)
                stretches, last_end = [], None
                for record in records:
                    if last_end is None or (record['start'] or 0) - last_end > 120:
                        stretches.append([])
                    stretches[-1].append(record)
                    last_end = record['end']
                own = stretches[min(number, len(stretches) - 1)]
                run['profile'] = cutover_profile(own)
            run['series'] = number + 1
            result['runs'].append(run)
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.from_results:
        result = from_results(args.from_results)
        if not args.no_doc:
            pl.update_doc('cutover_bench', markdown(result))
        print(markdown(result))
        return
    if args.reuse:
        pipeline = pl.reuse_pipeline(args.workdir)
    else:
        pipeline = pl.new_pipeline(args.workdir)
        pipeline.up(args.clients)
    result = {'command': 'cutover_bench.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
              'load_start': [round(x, 2) for x in pl.os.getloadavg()], 'size': args.size,
              'clients': pipeline.clients, 'runs': []}
    try:
        dataset = pl.ensure_dataset(pipeline, args.size, pipeline.workdir / 'datasets')
        info = json.loads((dataset / 'done.json').read_text())
        result.update(datafs_bytes=info['datafs_bytes'], blob_files=info['blob_files'])
        pl.log('the stage %s gets the %s data set (its own data: policy self)'
               % (pl.STAGE, args.size))
        pl.set_instance_data(pipeline, pl.STAGE, dataset)
        counter = 0
        for rate in args.rates:
            for _round in range(args.rounds):
                counter += 1
                result['runs'].append(one_run(pipeline, rate, '%gws' % rate, counter))
    finally:
        if not args.keep:
            pl.log('stopping the sandbox')
            pipeline.stop()
        if result['runs']:
            path = pl.save('cutover', result)
            result['file'] = path.name
            result['host'] = json.loads(path.read_text())['host']
            pl.log('raw numbers: %s' % path)
            if not args.no_doc:
                pl.update_doc('cutover_bench', markdown(result))
    if result['runs']:
        print(markdown(result))
    lost = sum(r['lost'] for r in result['runs'])
    print('lost writes: %d' % lost)
    failed = [r['tag'] for r in result['runs'] if not r['ok']]
    if lost or failed:
        raise SystemExit('lost writes: %d; failed runs: %s' % (lost, failed))


if __name__ == '__main__':
    main()
