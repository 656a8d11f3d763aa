# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The operator's view of the pipeline: one report (JSON), rendered as a text table and as a
self-contained HTML page. Pure functions on plain data, so they are tested on fixed data.

``build_report`` joins what status.yml gathered:
  model      the pipeline model (module_utils/pipeline.py)
  instances  {instance: what the pipeline_status module found on the instance's hosts}
  lb         {stage: {'active', 'frozen', 'frozen_until', 'frozen_held'}} as the balancer has
             it (lb_switch's query; a missing key counts as null/false)
  probes     {stage: a probe of the stage's frontend}
  promotions {stage: {'last': ledger entry, 'state': state file subset, 'lock': owner with
             'alive' (its heartbeat is within the lease) and 'heartbeat_age'}}
  refs       {commit: [tag and branch names pointing at it]}
"""
from __future__ import annotations

import datetime
import html
import struct

from ansible_collections.zopeops.stages.plugins.module_utils.redact import redact_deep

SHORT = 7


# --------------------------------------------------------------------------- small helpers


def tid_time(tid_hex):
    """The UTC time a ZODB transaction id stands for (ISO 8601, seconds), without ZODB.

    A tid is a TimeStamp: 4 bytes of minutes since 1900-01-01 (packed year, month, day, hour,
    minute) and 4 bytes of the fraction of the minute in units of 60 / 2**32 seconds.
    """
    if not tid_hex:
        return None
    try:
        raw = bytes.fromhex(str(tid_hex).lower().replace('0x', '').rjust(16, '0'))
    except ValueError:
        return None
    if len(raw) != 8 or raw == b'\0' * 8:
        return None
    high, low = struct.unpack('>II', raw)
    minute = high % 60
    high //= 60
    hour = high % 24
    high //= 24
    day = high % 31 + 1
    high //= 31
    month = high % 12 + 1
    year = high // 12 + 1900
    try:
        moment = datetime.datetime(year, month, day, hour, minute, tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    moment += datetime.timedelta(seconds=low * 60.0 / 2 ** 32)
    return moment.isoformat(timespec='seconds')


def human_size(size):
    if size is None:
        return None
    value = float(size)
    for unit in ('B', 'KB', 'MB', 'GB', 'TB'):
        if value < 1024 or unit == 'TB':
            return ('%d %s' % (value, unit)) if unit == 'B' else ('%.1f %s' % (value, unit))
        value /= 1024
    return None  # pragma: no cover


def _parse_time(iso):
    try:
        return datetime.datetime.fromisoformat(str(iso).replace('Z', '+00:00'))
    except ValueError:
        return None


def backup_summary(found, generated_at):
    """A stage's last good backup as the report shows it: when, how old (hours, against the
    report's time), the limit, and ``ok`` (not older than the limit); None when the stage's
    backups are not read (no backup repository given)."""
    if not found:
        return None
    limit = float(found.get('max_age_hours') or 26)
    now, then = _parse_time(generated_at), _parse_time(found.get('checked_at') or '')
    age = round((now - then).total_seconds() / 3600, 1) if now and then else None
    return {'checked_at': found.get('checked_at'), 'stamp': found.get('stamp'),
            'kind': found.get('kind'), 'last_tid': found.get('last_tid'),
            'size_text': human_size(found.get('size')), 'drill_at': found.get('drill_at'),
            'age_hours': age, 'max_age_hours': limit,
            'ok': age is not None and age <= limit}


def backup_lateness(backup):
    if backup['age_hours'] is None:
        return 'missing'
    return '%.1f hours old (the limit is %g)' % (backup['age_hours'], backup['max_age_hours'])


def backup_text(backup):
    """'3.2 h ago' / 'none' / 'LATE 30.0 h (limit 26 h)'."""
    if not backup:
        return '-'
    if backup['age_hours'] is None:
        return 'NONE (limit %g h)' % backup['max_age_hours']
    if not backup['ok']:
        return 'LATE %.1f h (limit %g h)' % (backup['age_hours'], backup['max_age_hours'])
    return '%.1f h ago' % backup['age_hours']


def short_time(iso):
    """'2026-11-29T12:30:39+00:00' -> '2026-11-29 12:30'."""
    if not iso:
        return None
    text = str(iso).replace('T', ' ')
    return text[:16]


def revision_label(revision):
    """{'commit', 'short', 'names'} -> 'demo-v2 4eccdb1' (names first), or '-'."""
    if not revision or not revision.get('commit'):
        return '-'
    names = revision.get('names') or []
    return ' '.join(names[:2] + [revision.get('short') or revision['commit'][:SHORT]])


def revision_of(commit, refs):
    """A commit id -> {'commit', 'short', 'names'}: the tags first, then the branches."""
    if not commit:
        return None
    names = list((refs or {}).get(commit) or [])
    return {'commit': commit, 'short': commit[:SHORT], 'names': names}


def refs_from_ls_remote(lines):
    """``git ls-remote`` output lines -> {commit: [tags..., branches...]} (peeled tags)."""
    tags, heads = {}, {}
    for line in lines or []:
        parts = line.split()
        if len(parts) != 2:
            continue
        commit, ref = parts
        if ref.startswith('refs/tags/'):
            name = ref[len('refs/tags/'):]
            if name.endswith('^{}'):
                name = name[:-3]
                tags[name] = commit  # the peeled commit wins over the tag object
            else:
                tags.setdefault(name, commit)
        elif ref.startswith('refs/heads/'):
            heads[ref[len('refs/heads/'):]] = commit
    refs = {}
    for name in sorted(tags):
        refs.setdefault(tags[name], []).append(name)
    for name in sorted(heads):
        refs.setdefault(heads[name], []).append(name)
    return refs


# --------------------------------------------------------------------------- the report


def _client_row(client, found):
    seen = dict(found or {})
    return {
        'id': client['id'], 'name': client['name'], 'host': client['host'],
        'url': client['url'],
        'ok': bool(seen.get('ok')),
        'status': seen.get('status'),
        'latency_ms': (round(seen['latency'] * 1000) if seen.get('latency') is not None
                       else None),
        'revision': seen.get('revision'),
        'last_tid': seen.get('last_tid'),
        'marker': seen.get('marker'),
        'error': seen.get('error'),
    }


def _side_report(stage, side_model, instances, refs, serving, expected):
    inst = side_model['instance']
    found = instances.get(inst) or {}
    clients_found = found.get('clients') or {}
    clients = [_client_row(c, clients_found.get(c['id'])) for c in side_model['clients']]
    deployed = found.get('deployed') or {}
    data = dict(found.get('data') or {})
    if not data.get('last_tid'):
        # No Data.fs readable on the ZEO host (or a torn tail): what the clients see.
        data['last_tid'] = next((c['last_tid'] for c in clients if c.get('last_tid')), None)
        data['source'] = 'clients' if data['last_tid'] else None
    data['last_time'] = tid_time(data.get('last_tid'))
    data['size_text'] = human_size(data.get('size'))
    data['marker'] = next((c['marker'] for c in clients if c.get('marker') is not None), None)
    zeo_running = bool(found.get('zeo_running'))
    running_clients = [c for c in clients if c['ok'] or c['status'] is not None]
    running = zeo_running or bool(running_clients)
    healthy_clients = [c for c in clients if c['ok']]
    drift = list(found.get('drift') or [])
    # A stopped twin has no data until a promotion gives it a snapshot.
    if (found.get('data') or {}).get('missing') and (side_model['side'] == 'live' or running):
        drift.append('%s has no Data.fs at %s' % (inst, found['data'].get('path')))
    revision = revision_of(deployed.get('revision'), refs)
    if running:
        for client in clients:
            if client['revision'] and revision and client['revision'] != revision['commit']:
                drift.append('%s serves %s, deployed.json says %s'
                             % (client['id'], client['revision'][:SHORT], revision['short']))
    if expected and revision and expected['commit'] != revision['commit']:
        drift.append('the inventory asks for %s, which is %s now; %s runs %s (run site.yml)'
                     % (expected['ref'], expected['commit'][:SHORT], inst, revision['short']))
    storage = side_model.get('storage') or 'zeo'
    # A RelStorage side has no ZEO server: its clients' health is the side's.
    server_ok = zeo_running or storage != 'zeo'
    # A stage the inventory moves to another kind runs the kind its deployed.json records
    # until promote.yml -e migrate_storage moves it (site.yml leaves it there): shown as it runs.
    running_kind = deployed.get('storage')
    if side_model['side'] == 'live' and running_kind in ('zeo', 'relstorage') \
            and running_kind != storage:
        drift.append('%s runs on %s (deployed.json) and the inventory names %s: move it with '
                     'promote.yml -e stage=%s -e migrate_storage=%s'
                     % (inst, running_kind, storage, inst, storage))
        storage = running_kind
    if side_model['side'] == 'live':
        health = 'ok' if len(healthy_clients) == len(clients) and server_ok else 'failed'
    else:
        # A twin is healthy stopped; running, every client must answer.
        health = ('ok' if not running or len(healthy_clients) == len(clients) else 'failed')
    latencies = [c['latency_ms'] for c in healthy_clients if c['latency_ms'] is not None]
    return {
        'instance': inst,
        'side': side_model['side'],
        'exists': bool(deployed) or running,
        'revision': revision,
        'deployed_at': deployed.get('deployed_at'),
        'deployed_by': deployed.get('deployed_by'),
        'data': data,
        'storage': storage,
        'database': _database_text(side_model.get('database')),
        'zeo_running': zeo_running,
        'running': running,
        'serving': serving,
        'clients': clients,
        'clients_ok': len(healthy_clients),
        'max_latency_ms': max(latencies) if latencies else None,
        'health': health,
        'drift': drift,
    }


def _database_text(database):
    """Where a RelStorage side's data lives: database@host:port (history), no password."""
    if not database:
        return None
    return '%s@%s:%s (history-%s)' % (
        database['name'], database['host'], database['port'], database['history'])


def storage_text(side):
    return 'RelStorage' if side.get('storage') == 'relstorage' else 'ZEO'


def _ledger_summary(entry):
    if not entry:
        return None
    phases = entry.get('phases') or []
    seconds = entry.get('seconds')
    if seconds is None and phases:
        seconds = round(sum(float(p.get('seconds') or 0) for p in phases), 1)
    windows = entry.get('freeze_windows') or []
    return {
        'action': entry.get('action'),
        'result': entry.get('result'),
        'by': entry.get('by'),
        'from_revision': entry.get('from_revision'),
        'to_revision': entry.get('to_revision'),
        'finished_at': entry.get('finished_at'),
        'seconds': seconds,
        'frozen_seconds': round(sum(float(w.get('frozen_seconds') or 0) for w in windows), 3)
        if windows else None,
    }


def build_report(model, instances, lb=None, probes=None, promotions=None, refs=None,
                 expected=None, generated_at=None):
    """Everything the operator asks about each stage, as one JSON-able dict."""
    instances = instances or {}
    lb = lb or {}
    probes = probes or {}
    promotions = promotions or {}
    expected = expected or {}
    stages = []
    for name in model['pipeline']:
        stage_model = model['stages'][name]
        balancer = lb.get(name) or {}
        active = balancer.get('active') or 'live'
        promo = promotions.get(name) or {}
        sides = []
        for side_name in ('live', 'upgrade'):
            side_model = stage_model.get(side_name)
            if not side_model:
                continue
            sides.append(_side_report(name, side_model, instances, refs,
                                      serving=(active == side_name),
                                      expected=expected.get(side_model['instance'])))
        probe = probes.get(name) or {}
        frontend = {
            'url': probe.get('url'),
            'ok': bool(probe.get('ok')),
            'status': probe.get('status'),
            'latency_ms': (round(probe['latency'] * 1000) if probe.get('latency') is not None
                           else None),
            'revision': probe.get('revision'),
            'error': probe.get('error'),
        }
        drift = [d for side in sides for d in side['drift']]
        state = promo.get('state') or {}
        lock = promo.get('lock')
        twin = next((s for s in sides if s['side'] == 'upgrade'), None)
        run = promotion_run(name, state, lock)
        frozen = bool(balancer.get('frozen'))
        in_promotion = bool(lock) or state.get('status') in ('running', 'failed', 'interrupted')
        if twin and twin['running'] and not in_promotion:
            drift.append('%s runs, but no promotion of %s is under way'
                         % (twin['instance'], name))
        if state.get('traffic') and balancer.get('active') and not lock \
                and state['traffic'] != balancer['active']:
            drift.append("the balancer sends %s's traffic to %s, its promotion state says %s"
                         % (name, balancer['active'], state['traffic']))
        for side in sides:
            if run['live'] and side['health'] == 'failed' and not side['serving']:
                side['health'] = 'starting'  # a promotion is bringing it up or down
        serving_side = next((s for s in sides if s['serving']), None)
        healthy = (frontend['ok'] if probe else True) and bool(serving_side) and \
            serving_side['health'] == 'ok' and all(s['health'] != 'failed' for s in sides) \
            and not (frozen and not run['live'])
        live_side = next((s for s in sides if s['side'] == 'live'), None)
        backup = backup_summary((instances.get(live_side['instance']) or {}).get('backup')
                                if live_side else None, generated_at)
        stages.append({
            'name': name,
            'backup': backup,
            'index': stage_model['index'],
            'predecessor': stage_model['predecessor'],
            'data_policy': stage_model.get('data_policy'),
            'lb_port': stage_model.get('lb_port'),
            'traffic': active,
            'frozen': frozen,
            'frozen_until': balancer.get('frozen_until') if frozen else None,
            'frozen_held': bool(balancer.get('frozen_held')) and frozen,
            'balancer_known': bool(balancer),
            'frontend': frontend,
            'revision': serving_side['revision'] if serving_side else None,
            'sides': sides,
            'last_run': _ledger_summary(promo.get('last')),
            'promotion': {'status': run['status'], 'step': run['step'],
                          'recorded_step': state.get('step'),
                          'traffic': state.get('traffic'),
                          'locked_by': (lock.get('owner') or lock.get('by') or '?') if lock
                          else None,
                          'live': run['live'], 'interrupted': run['interrupted'],
                          'next': run['next']} if state or lock
            else None,
            'drift': drift,
            'health': 'ok' if healthy else 'failed',
        })
    problems = []
    for stage in stages:
        if stage['frozen'] and not (stage['promotion'] or {}).get('live'):
            problems.append('%s: %s, and no promotion runs. %s' % (
                stage['name'], freeze_text(stage),
                (stage['promotion'] or {}).get('next') or NEXT_RESUME % stage['name']))
        elif (stage['promotion'] or {}).get('interrupted'):
            problems.append('%s: the %s stopped at step %s (interrupted: %s). %s' % (
                stage['name'], 'promotion', stage['promotion']['step'] or '?',
                'its lock is left without a live run' if stage['promotion']['locked_by']
                else 'its state says running, no lock',
                stage['promotion']['next']))
        if not stage['frontend']['ok'] and stage['frontend']['url']:
            problems.append('%s: the frontend %s: %s' % (
                stage['name'], stage['frontend']['url'],
                stage['frontend']['error'] or 'HTTP %s' % stage['frontend']['status']))
        for side in stage['sides']:
            if side['health'] == 'starting':
                continue
            if (side['side'] == 'live' and not side['zeo_running']
                    and side.get('storage', 'zeo') == 'zeo'):
                problems.append('%s: its ZEO server does not answer' % side['instance'])
            for client in side['clients']:
                if (side['side'] == 'live' or side['health'] == 'failed') and not client['ok']:
                    problems.append('%s: %s' % (client['id'], client['error'] or 'HTTP %s'
                                                % client['status']))
    late = ['%s: its last good backup is %s' % (stage['name'], backup_lateness(stage['backup']))
            for stage in stages if stage['backup'] and not stage['backup']['ok']]
    # status.json and status.html are made from this: no user:password@ of a URL gets there.
    return redact_deep({
        'backups_late': late,
        'generated_at': generated_at,
        'pipeline': list(model['pipeline']),
        'stages': stages,
        'healthy': all(s['health'] == 'ok' for s in stages),
        'problems': problems,
        'drift': ['%s: %s' % (s['name'], d) for s in stages for d in s['drift']],
    })


NEXT_RESUME = ('Next: ansible-playbook playbooks/promote.yml -e stage=%s -e action=resume '
               '(or -e action=rollback).')


def promotion_run(stage, state, lock):
    """What a stage's promotion state and lock say: {'status', 'step', 'live', 'interrupted',
    'next'}. A lock is a live run when its heartbeat is within the lease (lock['alive'];
    a lock without that key counts as live). A lock that is not, or a state 'running' or
    'interrupted' without a lock, is an interrupted run."""
    state = state or {}
    status = state.get('status')
    live = bool(lock) and lock.get('alive', True) is not False
    interrupted = (bool(lock) and not live) or (not lock and status in ('running', 'interrupted'))
    if interrupted:
        status = 'interrupted'
    step = state.get('current_step') or state.get('step')
    action = (lock or {}).get('action') or state.get('action')
    if live:
        text = None
    elif action == 'push_branding':
        text = ('Next: remove the lock %s.lock in the promotions folder once no push runs, '
                'then push again.' % stage)
    elif interrupted or status == 'failed':
        text = NEXT_RESUME % stage
    else:
        text = None
    return {'status': status, 'step': step, 'live': live, 'interrupted': interrupted,
            'next': text}


def freeze_text(stage):
    """'writes FROZEN until 2026-...Z' / '... (held, no deadline)' for a frozen stage."""
    if stage.get('frozen_held'):
        return 'writes FROZEN (held, no deadline)'
    until = stage.get('frozen_until')
    if isinstance(until, (int, float)) and not isinstance(until, bool):
        return 'writes FROZEN until %s' % datetime.datetime.fromtimestamp(
            until, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%SZ')
    return 'writes FROZEN'


# --------------------------------------------------------------------------- text


def headline(report):
    """'dev runs demo-v2 (4eccdb1); beta, test, prod run demo-v1 (8c270e6).' from the report."""
    groups = []
    for stage in report['stages']:
        rev = stage.get('revision')
        label = ('%s (%s)' % (rev['names'][0], rev['short']) if rev and rev.get('names')
                 else rev['short'] if rev else 'nothing')
        if groups and groups[-1][1] == label:
            groups[-1][0].append(stage['name'])
        else:
            groups.append(([stage['name']], label))
    parts = ['%s %s %s' % (', '.join(names), 'runs' if len(names) == 1 else 'run', label)
             for names, label in groups]
    return '; '.join(parts) + '.'


def _twin_cell(stage):
    twin = next((s for s in stage['sides'] if s['side'] == 'upgrade'), None)
    if twin is None:
        return 'none'
    if not twin['exists']:
        return 'not set up'
    if not twin['running']:
        return 'stopped'
    return 'runs %s' % revision_label(twin['revision'])


def _traffic_cell(stage):
    if not stage['balancer_known']:
        return '?'
    side = 'twin' if stage['traffic'] == 'upgrade' else 'live'
    if not stage['frozen']:
        return side
    if stage.get('frozen_held'):
        return side + ', FROZEN (held)'
    until = stage.get('frozen_until')
    if isinstance(until, (int, float)) and not isinstance(until, bool):
        return side + ', FROZEN until ' + datetime.datetime.fromtimestamp(
            until, datetime.timezone.utc).strftime('%H:%M:%SZ')
    return side + ', FROZEN'


def _promotion_cell(stage):
    promotion = stage.get('promotion') or {}
    if promotion.get('interrupted'):
        return 'INTERRUPTED at %s' % (promotion.get('step') or '?')
    if promotion.get('locked_by'):
        return '%s at %s' % (promotion.get('status') or 'running', promotion.get('step') or '?')
    return ''


def _clients_cell(side):
    total = len(side['clients'])
    text = '%d/%d ok' % (side['clients_ok'], total)
    if side['max_latency_ms'] is not None:
        text += ' %d ms' % side['max_latency_ms']
    return text


def _last_run_cells(stage):
    run = stage['last_run']
    if not run:
        return ['-', '']
    first = '%s %s' % (run['action'] or '?', run['result'] or '?')
    second = '%s by %s' % (short_time(run['finished_at']) or '?', run['by'] or '?')
    return [first, second]


def table_lines(report):
    """The report as one text table, a column per stage, then the details that need words."""
    stages = report['stages']
    live = [next(s for s in st['sides'] if s['side'] == 'live') for st in stages]
    rows = [
        ('', [st['name'] + ('' if st['health'] == 'ok' else ' (FAILED)') for st in stages]),
        ('revision', [revision_label(st['revision']) for st in stages]),
        ('storage', [storage_text(s) for s in live]),
        ('last tid', [s['data'].get('last_tid') or '-' for s in live]),
        ('data time', [short_time(s['data'].get('last_time')) or '-' for s in live]),
        ('Data.fs', [s['data'].get('size_text') or '-' for s in live]),
        # An application whose revision page gives no marker (any but the demo) has no row.
        ('marker', ['-' if s['data'].get('marker') is None else str(s['data']['marker'])
                    for s in live] if any(s['data'].get('marker') is not None for s in live)
         else []),
        ('clients', [_clients_cell(s) for s in live]),
        ('frontend', [('ok %s ms' % st['frontend']['latency_ms']) if st['frontend']['ok']
                      else ('FAILED' if st['frontend']['url'] else '-') for st in stages]),
        ('traffic', [_traffic_cell(st) for st in stages]),
        ('twin', [_twin_cell(st) for st in stages]),
        ('promotion', [_promotion_cell(st) for st in stages]),
        ('backup', [backup_text(st.get('backup')) for st in stages]
         if any(st.get('backup') for st in stages) else []),
        ('last run', [_last_run_cells(st)[0] for st in stages]),
        ('', [_last_run_cells(st)[1] for st in stages]),
        ('drift', ['none' if not st['drift'] else '%d, see below' % len(st['drift'])
                   for st in stages]),
    ]
    rows = [(label, cells) for label, cells in rows if any(cells)]
    label_width = max(len(label) for label, _cells in rows)
    widths = [max(len(str(cells[i])) for _label, cells in rows) for i in range(len(stages))]
    lines = []
    for number, (label, cells) in enumerate(rows):
        line = label.ljust(label_width) + '  ' + '  '.join(
            str(cell).ljust(width) for cell, width in zip(cells, widths))
        lines.append(line.rstrip())
        if number == 0:
            lines.append('-' * len(lines[0]))
    lines.append('pipeline: ' + ' -> '.join(
        '%s [%s]' % (st['name'], 'ok' if st['health'] == 'ok' else 'FAILED') for st in stages))
    lines.append(headline(report))
    for problem in report['problems']:
        lines.append('problem: ' + problem)
    for item in report['drift']:
        lines.append('drift: ' + item)
    for item in report.get('backups_late') or []:
        lines.append('backup: ' + item)
    return lines


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d2430;
background:#f4f6f9}
h1{font-size:22px;margin:0 0 4px}
.sub{color:#5a6472;margin:0 0 18px;font-size:14px}
.pipeline{display:flex;align-items:stretch;gap:0}
.arrow{align-self:center;font-size:30px;color:#8a94a3;padding:0 8px}
.stage{background:#fff;border-radius:10px;box-shadow:0 1px 4px rgba(0,0,0,.12);
width:290px;overflow:hidden;border-top:8px solid #999}
.stage.ok{border-top-color:#1f9d55}.stage.failed{border-top-color:#d64545}
.stage h2{margin:0;padding:10px 14px;font-size:20px;display:flex;justify-content:space-between}
.badge{font-size:12px;border-radius:10px;padding:3px 9px;color:#fff;align-self:center}
.badge.ok{background:#1f9d55}.badge.failed{background:#d64545}
.badge.off{background:#8a94a3}.badge.warn{background:#d68b00}
table{border-collapse:collapse;width:100%;font-size:13px}
td{padding:4px 10px;vertical-align:top;border-top:1px solid #eef0f3;overflow-wrap:anywhere}
td.k{color:#5a6472;white-space:nowrap;width:64px}
.side{margin:8px 10px;border:1px solid #e1e5ea;border-radius:8px}
.side.serving{border:2px solid #2b6cb0}
.side h3{margin:0;padding:6px 10px;font-size:14px;background:#f7f8fa;display:flex;
justify-content:space-between;border-radius:8px 8px 0 0}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace}
.ok-t{color:#1f9d55}.bad-t{color:#d64545}
ul.notes{margin:16px 0 0;padding-left:20px;font-size:14px}
ul.notes li.problem{color:#d64545}ul.notes li.drift{color:#9c6500}
"""


def _e(value):
    return html.escape('-' if value is None or value == '' else str(value))


def _side_html(side):
    classes = 'side' + (' serving' if side['serving'] else '')
    title = side['instance'] + (' (twin)' if side['side'] == 'upgrade' else '')
    if side['side'] == 'upgrade' and not side['running'] and side['health'] != 'starting':
        badge = '<span class="badge off">%s</span>' % (
            'stopped' if side['exists'] else 'not set up')
    elif side['health'] == 'starting':
        badge = '<span class="badge warn">promotion under way</span>'
    else:
        badge = '<span class="badge %s">%s</span>' % (
            side['health'], 'healthy' if side['health'] == 'ok' else 'FAILED')
    rows = [('revision', '<span class="mono">%s</span>' % _e(revision_label(side['revision']))),
            ('storage', _e(storage_text(side) + (' ' + side['database']
                                                 if side.get('database') else '')))]
    if side['side'] == 'live' or side['running']:
        data = side['data']
        rows += [
            ('last tid', '<span class="mono">%s</span>' % _e(data.get('last_tid'))),
            ('data time', _e(short_time(data.get('last_time')))),
            ('Data.fs', _e(data.get('size_text'))),
        ]
        if data.get('marker') is not None:
            rows.append(('marker', _e(data.get('marker'))))
        for client in side['clients']:
            if client['ok']:
                cell = '<span class="ok-t">ok</span> %s ms' % _e(client['latency_ms'])
            else:
                cell = '<span class="bad-t">%s</span>' % _e(client['error'] or client['status'])
            rows.append((client['name'], cell))
    body = ''.join('<tr><td class="k">%s</td><td>%s</td></tr>' % (_e(k), v) for k, v in rows)
    return '<div class="%s"><h3><span>%s%s</span>%s</h3><table>%s</table></div>' % (
        classes, _e(title), ' &#8592; traffic' if side['serving'] else '', badge, body)


def _stage_html(stage):
    health = stage['health']
    frontend = stage['frontend']
    if frontend['url']:
        front = ('<span class="ok-t">ok</span> %s ms' % _e(frontend['latency_ms'])
                 if frontend['ok'] else '<span class="bad-t">%s</span>'
                 % _e(frontend['error'] or frontend['status']))
    else:
        front = '-'
    traffic = _traffic_cell(stage)
    rows = [('frontend', front),
            ('traffic', ('<span class="bad-t">%s</span>' % _e(traffic)) if stage['frozen']
             else _e(traffic)),
            ('data policy', _e(stage['data_policy']))]
    run = stage['last_run']
    if run:
        rows.append(('last run', '%s %s<br>%s by %s%s' % (
            _e(run['action']), _e(run['result']), _e(short_time(run['finished_at'])),
            _e(run['by']), (', %s s' % _e(run['seconds'])) if run.get('seconds') else '')))
    else:
        rows.append(('last run', '-'))
    promotion = stage.get('promotion') or {}
    if promotion.get('interrupted') or promotion.get('locked_by'):
        rows.append(('promotion', '<span class="bad-t">%s, step %s%s</span>%s' % (
            _e(promotion.get('status') or 'running'), _e(promotion.get('step')),
            (', by %s' % _e(promotion['locked_by'])) if promotion.get('locked_by') else '',
            ('<br><span class="mono">%s</span>' % _e(promotion['next']))
            if promotion.get('next') else '')))
    backup = stage.get('backup')
    if backup:
        rows.append(('backup', '<span class="%s" data-backup-ok="%s">%s</span>%s' % (
            'ok-t' if backup['ok'] else 'bad-t', 'true' if backup['ok'] else 'false',
            _e(backup_text(backup)),
            ('<br>%s %s' % (_e(backup['kind']), _e(short_time(backup['checked_at']))))
            if backup['checked_at'] else '')))
    rows.append(('drift', '<span class="ok-t">none</span>' if not stage['drift'] else
                 '<br>'.join('<span class="bad-t">%s</span>' % _e(d) for d in stage['drift'])))
    head = '<table>%s</table>' % ''.join(
        '<tr><td class="k">%s</td><td>%s</td></tr>' % (_e(k), v) for k, v in rows)
    sides = ''.join(_side_html(side) for side in stage['sides'])
    return ('<section class="stage %s" data-stage="%s" data-health="%s"><h2><span>%s</span>'
            '<span class="badge %s">%s</span></h2>%s%s</section>') % (
        health, _e(stage['name']), health, _e(stage['name']), health,
        'healthy' if health == 'ok' else 'FAILED', head, sides)


def render_html(report, title='zopeops pipeline status'):
    """The report as one self-contained HTML page (no external file, script or font)."""
    columns = '<div class="arrow">&#8594;</div>'.join(
        _stage_html(stage) for stage in report['stages'])
    notes = ''.join('<li class="problem">%s</li>' % _e(p) for p in report['problems'])
    notes += ''.join('<li class="drift">drift: %s</li>' % _e(d) for d in report['drift'])
    notes += ''.join('<li class="problem">backup: %s</li>' % _e(b)
                     for b in report.get('backups_late') or [])
    overall = 'healthy' if report['healthy'] else 'NOT healthy'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<title>%s</title><style>%s</style></head><body>'
        '<h1>%s: %s</h1><p class="sub">%s<br>generated %s</p>'
        '<div class="pipeline">%s</div>%s</body></html>\n') % (
        _e(title), _CSS, _e(title), overall, _e(headline(report)),
        _e(report.get('generated_at')), columns,
        ('<ul class="notes">%s</ul>' % notes) if notes else '')
