"""What the page keeps in the ZODB: its requests and the engine's reports on them.

One OOBTree on the application root (``_zopeops_push``; the underscore keeps it out of URL
traversal) holding three OOBTrees:

- ``requests``: request id -> PersistentMapping (one ZODB record per request: a report that
  rewrites one request's log does not rewrite the others); the last KEEP per partner are kept;
- ``pending``: "<partner>/<target>" -> the request id of the push that runs there. Two clicks at
  once both insert this key: the BTree's conflict resolution refuses two inserts of one key, so
  the second transaction fails with a ConflictError, Zope retries its request, and the retry
  sees the first push and is told that it runs;
- ``latest``: "<partner>/<target>/<action>" -> the request id of the latest push or check.

Only classes every Zope has (BTrees, persistent): a Data.fs that a promotion carries to a
stage without the product loads without broken objects.
"""
from Acquisition import aq_base
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping

from .config import FINAL_STATES

STORE_ATTR = '_zopeops_push'
KEEP = 50


def get_store(app, create=False):
    root = aq_base(app)
    store = getattr(root, STORE_ATTR, None)
    if store is None and create:
        store = OOBTree()
        for name in ('requests', 'pending', 'latest'):
            store[name] = OOBTree()
        setattr(root, STORE_ATTR, store)
    return store


def target_key(partner, to_stage):
    return '%s/%s' % (partner, to_stage)


def get_request(app, request_id):
    store = get_store(app)
    if store is None:
        return None
    return store['requests'].get(request_id)


def latest(app, partner, to_stage, action):
    store = get_store(app)
    if store is None:
        return None
    rid = store['latest'].get('%s/%s' % (target_key(partner, to_stage), action))
    return store['requests'].get(rid) if rid else None


def lost(record, now, timeout, silence=None):
    """Whether a request that has no final report is lost: accepted and never reported on for
    ``timeout`` seconds, or reported on and then silent for ``silence`` seconds (its run was
    stopped by force: the engine's runs report at least every 30 s while they go)."""
    if record is None or record['state'] in FINAL_STATES:
        return False
    quiet = now - record.get('updated', record['created'])
    if record.get('reports') and silence is not None:
        return quiet > silence
    return quiet > timeout


def running_push(app, partner, to_stage, now, timeout, silence=None):
    """The push that runs to (partner, to_stage): its record, or None. A lost one (see
    lost()) no longer counts: the page says so and allows a new push (the engine's lock still
    guards the target)."""
    store = get_store(app)
    if store is None:
        return None
    rid = store['pending'].get(target_key(partner, to_stage))
    record = store['requests'].get(rid) if rid else None
    if record is None or record['state'] in FINAL_STATES or lost(record, now, timeout, silence):
        return None
    return record


def add_request(app, request, now):
    """Record a new request (a dict with the contract's fields and ``engine``); a push also
    takes its target's pending slot. The caller checked running_push() first."""
    store = get_store(app, create=True)
    key = target_key(request['partner'], request['to_stage'])
    latest_key = '%s/%s' % (key, request['action'])
    record = PersistentMapping(dict(request, created=now, updated=now, state='queued', step='',
                                    at='', result=None, log='', reports=0,
                                    previous=store['latest'].get(latest_key)))
    store['requests'][request['request_id']] = record
    if request['action'] == 'push':
        store['pending'][key] = request['request_id']
    store['latest'][latest_key] = request['request_id']
    _prune(store, request['partner'])
    return record


def drop_request(app, request_id):
    """Forget a request the engine never took (unreachable, refused): nothing stays queued."""
    store = get_store(app)
    if store is None:
        return
    record = store['requests'].get(request_id)
    if record is None:
        return
    key = target_key(record['partner'], record['to_stage'])
    if store['pending'].get(key) == request_id:
        del store['pending'][key]
    latest_key = '%s/%s' % (key, record['action'])
    if store['latest'].get(latest_key) == request_id:
        previous = record.get('previous')
        if previous and previous in store['requests']:
            store['latest'][latest_key] = previous
        else:
            del store['latest'][latest_key]
    del store['requests'][request_id]


def update_request(app, request_id, now, **fields):
    """Change a request's state (the engine's report, or AWX's job status); a final state
    frees its target."""
    store = get_store(app, create=True)
    record = store['requests'].get(request_id)
    if record is None:
        return None
    record.update(fields)
    record['updated'] = now
    if record['state'] in FINAL_STATES:
        key = target_key(record['partner'], record['to_stage'])
        if store['pending'].get(key) == request_id:
            del store['pending'][key]
    return record


def apply_report(app, report, now):
    """Store the engine's report (check_report()'s dict). A report on a request the page did
    not make (a run started elsewhere with a request id) is recorded too."""
    store = get_store(app, create=True)
    rid = report['request_id']
    record = store['requests'].get(rid)
    if record is None:
        add_request(app, {'request_id': rid, 'action': report['action'],
                          'partner': report['partner'], 'to_stage': report['to_stage'],
                          'from_stage': '', 'user': '', 'engine': 'report'}, now)
    fields = {'state': report['state'], 'step': report['step'], 'at': report['at']}
    if report['log']:
        fields['log'] = report['log']
    if report['result'] is not None:
        fields['result'] = report['result']
    record = update_request(app, rid, now, **fields)
    record['reports'] = record.get('reports', 0) + 1
    return record


def _prune(store, partner):
    """Keep the newest KEEP requests of ``partner`` (never a pending or latest one)."""
    mine = [(record['created'], rid) for rid, record in store['requests'].items()
            if record['partner'] == partner]
    if len(mine) <= KEEP:
        return
    keep = set(store['pending'].values()) | set(store['latest'].values())
    for _unused, rid in sorted(mine)[:len(mine) - KEEP]:
        if rid not in keep:
            del store['requests'][rid]
