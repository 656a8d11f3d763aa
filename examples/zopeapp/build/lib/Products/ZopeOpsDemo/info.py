"""The JSON views of the demo: ``@@zopeops-info`` and ``@@zopeops-marker``."""
import json
import os
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version

from Products.ZopeOpsDemo.banner import BANNER

# The release layout is <root>/releases/<sha>/{src,venv,REVISION}; the running process's
# sys.prefix is that release's venv, so REVISION is its sibling.
REVISION_PATH = os.path.join(sys.prefix, '..', 'REVISION')
MARKER_ID = 'marker'

# Fault injection for the promotion tests: a client started while this file exists answers
# 503 on @@zopeops-info for its whole life (as a release that cannot serve would), while
# clients started before keep serving. Unset or absent: no fault.
FAULT_FILE = os.environ.get('ZOPEOPS_FAULT_FILE', '')
STARTED_FAULTY = bool(FAULT_FILE) and os.path.exists(FAULT_FILE)


def release_revision(path=REVISION_PATH):
    """The git revision of the release this process runs from, or 'unknown'."""
    try:
        with open(path, encoding='utf-8') as handle:
            return handle.read().strip() or 'unknown'
    except OSError:
        return 'unknown'


def zope_version():
    try:
        return version('Zope')
    except PackageNotFoundError:
        return 'unknown'


def _root(context):
    """The application root (the object the ZODB connection of this request serves)."""
    get_root = getattr(context, 'getPhysicalRoot', None)
    return get_root() if get_root is not None else context


def last_tid_hex(context):
    """Hex of the last transaction this client's database knows (16 hex digits)."""
    jar = getattr(_root(context), '_p_jar', None)
    if jar is None:
        return None
    return jar.db().lastTransaction().hex()


def marker_value(context):
    marker = getattr(_root(context).aq_base, MARKER_ID, None)
    if marker is None:
        return None
    data = marker.data
    if not isinstance(data, bytes):  # a big File keeps its data in Pdata chunks
        data = bytes(data)
    return data.decode('utf-8', 'replace')


class _JSONView:

    def __init__(self, context, request):
        self.context = context
        self.request = request

    def _json(self, payload, status=200):
        response = self.request.response
        response.setStatus(status)
        response.setHeader('Content-Type', 'application/json')
        response.setHeader('Cache-Control', 'no-store')
        return json.dumps(payload, sort_keys=True)


class InfoView(_JSONView):
    """Which release, stage, instance and client answer, and at which ZODB transaction."""

    def __call__(self):
        if STARTED_FAULTY:
            return self._json({'error': 'started with the fault file %s' % FAULT_FILE}, 503)
        return self._json({
            'revision': release_revision(),
            'stage': os.environ.get('ZOPEOPS_STAGE', 'unknown'),
            'instance': os.environ.get('ZOPEOPS_INSTANCE', 'unknown'),
            'client': os.environ.get('ZOPEOPS_CLIENT', 'unknown'),
            'last_tid': last_tid_hex(self.context),
            'banner': BANNER,
            'zope_version': zope_version(),
            'marker': marker_value(self.context),
        })


class MarkerView(_JSONView):
    """GET: the marker's value. POST value=...: set it (Zope commits when the request ends)."""

    def __call__(self):
        root = _root(self.context)
        if self.request.get('REQUEST_METHOD', 'GET') == 'POST':
            value = self.request.form.get('value')
            if value is None:
                return self._json({'error': 'POST needs a form field "value"'}, 400)
            marker = getattr(root.aq_base, MARKER_ID, None)
            if marker is None:
                return self._json(
                    {'error': 'no marker object: run seed_demo_content.py first'}, 404)
            root[MARKER_ID].update_data(value.encode('utf-8'), content_type='text/plain')
            return self._json({'marker': value, 'written': True})
        return self._json({'marker': marker_value(root),
                           'last_tid': last_tid_hex(root)})
