# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Zope object subtrees: export one as a ZEXP, compare two item by item, replace one.

What the zope_object_export and zope_object_import modules share. They run under a release
virtualenv's Python (Zope, ZODB, ZEO and the application's code importable) and start Zope
against a stage's ZEO server the way ``zconsole`` does, so that every class of the site can
be loaded and written back.

Design:
- **Items** are what a web developer sees: the subtree's root and every object its
  ObjectManagers list (``objectItems``), named by their path below the root (``''`` is the
  root itself, ``images/logo.png`` a grandchild). Everything else persistent that an item
  holds (Pdata chunks of a File, a BTree of a BTreeFolder2, blobs) counts as part of it.
- **Fingerprints** make items of two databases comparable although their oids differ: the
  item's pickled state, with each child item replaced by its id, each other persistent
  object by its own fingerprint and each blob by the hash of its bytes. Dicts are sorted
  first, so an attribute set in another order does not look like a change.
- **Replacing keeps the oid** of the object at the path: its state is swapped in place for
  the imported one's, so its parent (and every object outside the subtree) keeps its record
  and tid, and the parent's order of items is untouched. Only when the class changes is the
  parent's reference swapped instead (the position restored). One ZODB transaction.
- **Kept attributes**: the target's local roles and properties survive a replacement
  (``keep_local_roles``/``keep_properties``): they differ per stage (who may edit, which
  endpoint), the branding does not. The comparison applies the same rule, so a push whose
  only difference is a kept attribute changes nothing.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import shutil
import sys
import tempfile

ZEXP_MAGIC = b'ZEXP'
# Attributes a replacement keeps from the target's object (and the comparison ignores).
LOCAL_ROLE_KEYS = ('__ac_local_roles__', '__ac_local_roles_block__')
ABSENT = object()  # an overlay value that removes the key
# State that says when, not what: OFS's ETag is a timestamp of the last change. Two stages
# seeded alike hold the same image with different ETags; neither is a change to push.
VOLATILE_KEYS = ('_EtagSupport__etag',)
PICKLE_PROTOCOL = 3


class ZopeObjectError(Exception):
    """A refusal or failure the module reports as is: what failed, where, what to do."""


# --------------------------------------------------------------------------- paths


def split_path(path, what='path'):
    """``'/partners/acme'`` -> ``['partners', 'acme']``; refuses relative or odd paths."""
    text = str(path or '')
    if not text.startswith('/'):
        raise ZopeObjectError('%s %r must be absolute, like /partners/acme.' % (what, path))
    ids = [part for part in text.split('/') if part]
    if not ids:
        raise ZopeObjectError('%s %r names the application root; name an object below it, '
                              'like /partners/acme.' % (what, path))
    for part in ids:
        if part in ('.', '..') or part.startswith('aq_') or part.startswith('_'):
            raise ZopeObjectError('%s %r holds %r, which is not an object id.'
                                  % (what, path, part))
    return ids


def child(container, item_id):
    """The item ``item_id`` of an ObjectManager (no acquisition), or None."""
    from Acquisition import aq_base
    if not hasattr(aq_base(container), 'objectIds'):
        return None
    if item_id not in container.objectIds():
        return None
    return container._getOb(item_id)


def traverse(app, ids):
    """The object at ``ids`` below ``app`` (items only, no acquisition), or None."""
    obj = app
    for item_id in ids:
        obj = child(obj, item_id)
        if obj is None:
            return None
    return obj


def find(app, path, what='object'):
    """(parent, object or None) for ``path``; refuses when the parent does not exist."""
    ids = split_path(path)
    parent = traverse(app, ids[:-1])
    if parent is None:
        raise ZopeObjectError('The %s %s cannot exist here: its parent /%s is not an object '
                              'of this site (check the path and the stage).'
                              % (what, path, '/'.join(ids[:-1])))
    return parent, child(parent, ids[-1])


# --------------------------------------------------------------------------- Zope start-up

# The smallest configuration that starts Zope against a ZEO server: used on a ZEO host that
# runs no Zope client (so it has no etc/zope-console.conf). Blobs go through a private cache.
GENERATED_ZOPE_CONF = '''\
%%define INSTANCE %(workdir)s
instancehome $INSTANCE
clienthome $INSTANCE/var
<zodb_db main>
  <zeoclient>
    server %(server)s
    storage %(storage)s
    name zopeops-object-sync
    blob-dir $INSTANCE/blobcache
    shared-blob-dir off
    read-only %(read_only)s
  </zeoclient>
  mount-point /
</zodb_db>
'''


def _zeo_servers(configroot):
    servers = []
    for database in getattr(configroot, 'databases', None) or []:
        storage_config = getattr(database.config.storage, 'config', None)
        for address in getattr(storage_config, 'server', None) or []:
            servers.append(getattr(address, 'address', address))
    return servers


@contextlib.contextmanager
def zope_app(zope_conf=None, zeo_address=None, storage='1', read_only=False):
    """The Zope application (a request bound, logged in as the system user), started from
    ``zope_conf`` or from a generated configuration for ``zeo_address``.

    ``read_only`` opens every storage read-only, so that nothing, not even Zope's own start-up,
    can write. Zope prints nothing to stdout (a module's stdout is its JSON result).
    """
    from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
    workdir = tempfile.mkdtemp(prefix='zopeops-zope-')
    app = None
    try:
        if zope_conf is None:
            os.makedirs(os.path.join(workdir, 'var'))
            zope_conf = os.path.join(workdir, 'zope.conf')
            with open(zope_conf, 'w', encoding='utf-8') as handle:
                handle.write(GENERATED_ZOPE_CONF % {
                    'workdir': workdir, 'server': zeo_address, 'storage': storage,
                    'read_only': 'on' if read_only else 'off'})
        elif not os.path.isfile(zope_conf):
            raise ZopeObjectError('The Zope configuration %s does not exist. Give the '
                                  'instance\'s etc/zope-console.conf, or zeo_address instead.'
                                  % zope_conf)
        with contextlib.redirect_stdout(sys.stderr):
            app = _start(zope_conf, read_only, zu)
        yield app
    finally:
        if app is not None:
            import transaction
            transaction.abort()
            app._p_jar.close()
            import Zope2
            if getattr(Zope2, 'DB', None) is not None:
                Zope2.DB.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _start(zope_conf, read_only, zu):
    from ansible_collections.zopeops.stages.plugins.module_utils import zodb_zeo as zzeo
    import Zope2
    import Zope2.Startup
    from App.config import setConfiguration
    from Zope2.Startup.handlers import handleWSGIConfig
    from Zope2.Startup.options import ZopeWSGIOptions
    try:
        opts = ZopeWSGIOptions(configfile=zope_conf)()
    except Exception as exc:  # ZConfig reports a bad file with its own exceptions
        raise ZopeObjectError('Zope could not read %s: %s' % (zope_conf, exc)) from None
    for address in _zeo_servers(opts.configroot):
        text = address if isinstance(address, str) else '%s:%s' % tuple(address[:2])
        if not zzeo.zeo_answers(text):
            raise ZopeObjectError('The ZEO server at %s (from %s) does not answer. Start it, or '
                                  'check the stage and the address.' % (text, zope_conf))
    if read_only:
        for database in opts.configroot.databases:
            storage_config = getattr(database.config.storage, 'config', None)
            if storage_config is not None and hasattr(storage_config, 'read_only'):
                storage_config.read_only = True
    handleWSGIConfig(opts.configroot, opts.confighandlers)
    setConfiguration(opts.configroot)
    # Zope's start-up initializes the application: it creates the admin account from
    # <instancehome>/inituser (deleting the file, even when a read-only storage then refuses
    # the commit) and adds missing standard objects. That is the site's own clients' job; a
    # module that moves one subtree must write nothing else, so it skips that step.
    import OFS.Application
    OFS.Application.initialize = _leave_application_as_is
    starter = Zope2.Startup.get_wsgi_starter()
    starter.setConfiguration(opts.configroot)
    starter.prepare()

    from AccessControl.SecurityManagement import newSecurityManager
    from AccessControl.users import system
    from Testing.makerequest import makerequest
    from zope.globalrequest import setRequest
    app = makerequest(Zope2.app())
    app.REQUEST['PARENTS'] = [app]
    setRequest(app.REQUEST)
    newSecurityManager(None, system)
    return app


def _leave_application_as_is(application):
    """Stands in for OFS.Application.initialize (see _start)."""


def last_tid(app):
    from ansible_collections.zopeops.stages.plugins.module_utils import zodb_format as zfmt
    app._p_jar.sync()
    return zfmt.tid_to_hex(app._p_jar.db().lastTransaction())


# --------------------------------------------------------------------------- fingerprints


def _canonical(value):
    """Dicts (also nested in lists and tuples) as sorted item lists: order-free pickles."""
    if isinstance(value, dict):
        try:
            items = sorted(value.items())
        except TypeError:  # keys that do not sort: keep the order
            items = list(value.items())
        return ('dict', [(k, _canonical(v)) for k, v in items])
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_canonical(v) for v in value)
    return value


class _Fingerprinter:
    """Fingerprint and size of items and of the persistent parts they hold."""

    def __init__(self):
        self._memo = {}

    def item(self, obj, children, overlay=None):
        """(sha256 hex, bytes) of an item whose child items are ``children`` {id: object}."""
        from Acquisition import aq_base
        tokens = {id(aq_base(c)): name for name, c in children.items()}
        return self._digest(aq_base(obj), tokens, overlay)

    def _digest(self, base, child_tokens, overlay=None):
        from persistent import Persistent
        from ZODB.blob import Blob
        sizes = [0]

        def persistent_id(ref):
            if not isinstance(ref, Persistent):
                return None
            if ref is base:
                return ('self',)
            if id(ref) in child_tokens:
                return ('item', child_tokens[id(ref)])
            if isinstance(ref, Blob):
                digest, size = self._blob(ref)
            else:
                digest, size = self._part(ref)
            sizes[0] += size
            return ('part', type(ref).__module__, type(ref).__name__, digest)

        base._p_activate()
        state = base.__getstate__()
        if overlay:
            inst = dict(state if isinstance(state, dict) else state[0] or {})
            for key, value in overlay.items():
                if value is ABSENT:
                    inst.pop(key, None)
                else:
                    inst[key] = value
            state = inst if isinstance(state, dict) else (inst, state[1])
        if isinstance(state, dict):
            state = {k: v for k, v in state.items() if k not in VOLATILE_KEYS}
        payload = (type(base).__module__, type(base).__name__, _canonical(state))
        try:
            # No memo: an equal string pickles the same whether or not it is the same object
            # (persistent interns attribute names on load, so identity differs between copies).
            buffer = self._pickle(payload, persistent_id, fast=True)
        except (ValueError, RecursionError):  # a cyclic plain structure needs the memo
            sizes[0] = 0
            buffer = self._pickle(payload, persistent_id, fast=False)
        return buffer.hexdigest(), buffer.size + sizes[0]

    @staticmethod
    def _pickle(payload, persistent_id, fast):
        buffer = _HashWriter()
        pickler = pickle.Pickler(buffer, protocol=PICKLE_PROTOCOL)
        pickler.persistent_id = persistent_id
        pickler.fast = fast
        pickler.dump(payload)
        return buffer

    def _part(self, ref):
        key = (id(ref._p_jar), ref._p_oid) if ref._p_oid is not None else id(ref)
        if key not in self._memo:
            self._memo[key] = ('cycle', 0)  # a reference back to a part being hashed
            self._memo[key] = self._digest(ref, {})
        return self._memo[key]

    def _blob(self, blob):
        digest = hashlib.sha256()
        size = 0
        with blob.open('r') as handle:
            for chunk in iter(lambda: handle.read(1024 * 1024), b''):
                digest.update(chunk)
                size += len(chunk)
        return 'blob:' + digest.hexdigest(), size


class _HashWriter:
    def __init__(self):
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self._hash.update(data)
        self.size += len(data)

    def hexdigest(self):
        return self._hash.hexdigest()


def items_of(obj, prefix=''):
    """[(relative path, object, {id: child})] of the subtree, the root first, depth first."""
    from Acquisition import aq_base
    children = {}
    if hasattr(aq_base(obj), 'objectItems'):
        children = dict(obj.objectItems())
    found = [(prefix, obj, children)]
    for name in children:
        found.extend(items_of(children[name], prefix + '/' + name if prefix else name))
    return found


def class_name(obj):
    from Acquisition import aq_base
    base = aq_base(obj)
    return '%s.%s' % (type(base).__module__, type(base).__name__)


def manifest(obj, overlay=None):
    """{relative path: {class, bytes, sha256}} of every item of the subtree.

    ``overlay`` (state key -> value or ABSENT) is applied to the root's state first: it is how
    the target's kept attributes are put onto an incoming subtree before comparing.
    """
    fingerprinter = _Fingerprinter()
    entries = {}
    for path, item, children in items_of(obj):
        digest, size = fingerprinter.item(item, children, overlay if path == '' else None)
        entries[path] = {'class': class_name(item),
                         'bytes': size, 'sha256': digest}
    return entries


def compare(before, after):
    """What replacing ``before`` by ``after`` (two manifests) changes, item by item."""
    def entry(path, new=None, old=None):
        found = {'path': path}
        if new is not None:
            found.update({'class': new['class'], 'bytes': new['bytes']})
        if old is not None:
            found['bytes_before'] = old['bytes']
            found.setdefault('class', old['class'])
        return found

    report = {'added': [], 'replaced': [], 'removed': [], 'unchanged': []}
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old is None:
            report['added'].append(entry(path, new=new))
        elif new is None:
            report['removed'].append(entry(path, old=old))
        elif old['sha256'] != new['sha256'] or old['class'] != new['class']:
            report['replaced'].append(entry(path, new=new, old=old))
        else:
            report['unchanged'].append(entry(path, new=new))
    report['counts'] = {key: len(report[key])
                        for key in ('added', 'replaced', 'removed', 'unchanged')}
    report['bytes_before'] = sum(e['bytes'] for e in before.values())
    report['bytes_after'] = sum(e['bytes'] for e in after.values())
    return report


# --------------------------------------------------------------------------- kept attributes


def kept_overlay(existing, incoming, keep_local_roles=True, keep_properties=True):
    """The root state keys the target keeps: {key: the target's value, or ABSENT}.

    Properties are merged: the target's properties keep their definitions and values, the
    incoming object's other properties are added.
    """
    from Acquisition import aq_base
    if existing is None:
        return {}
    old, new = aq_base(existing), aq_base(incoming)
    old._p_activate()
    old_state = old.__dict__
    overlay = {}
    if keep_local_roles:
        for key in LOCAL_ROLE_KEYS:
            overlay[key] = old_state.get(key, ABSENT)
    if keep_properties and hasattr(old, '_properties') and hasattr(new, '_properties'):
        old_props = tuple(old._properties)
        old_ids = [p['id'] for p in old_props]
        merged = old_props + tuple(p for p in new._properties if p['id'] not in old_ids)
        class_default = getattr(type(new), '_properties', None)
        overlay['_properties'] = ABSENT if merged == class_default else merged
        for prop_id in old_ids:
            overlay[prop_id] = old_state.get(prop_id, ABSENT)
    return overlay


def apply_overlay(obj, overlay):
    from Acquisition import aq_base
    base = aq_base(obj)
    base._p_activate()
    for key, value in overlay.items():
        if value is ABSENT:
            base.__dict__.pop(key, None)
        else:
            base.__dict__[key] = value
    base._p_changed = True


# --------------------------------------------------------------------------- ZEXP files


def export_zexp(obj, directory):
    """Write the subtree as a ZEXP file into ``directory``; return (temporary path, bytes,
    sha256). The caller moves it into place (``commit_file``) or removes it."""
    from Acquisition import aq_base
    base = aq_base(obj)
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix='.zexp-', delete=False)
    try:
        with handle:
            base._p_jar.exportFile(base._p_oid, handle)
            handle.flush()
            os.fsync(handle.fileno())
        size, digest = file_digest(handle.name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise
    return handle.name, size, digest


def commit_file(tmp_path, dest, mode=0o640):
    """Move a finished file into place atomically, durable once this returns."""
    from ansible_collections.zopeops.stages.plugins.module_utils import zodb_copy as zcopy
    os.chmod(tmp_path, mode)
    os.replace(tmp_path, dest)
    zcopy.fsync_dir(os.path.dirname(os.path.abspath(dest)))


def file_digest(path):
    digest = hashlib.sha256()
    size = 0
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b''):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def check_zexp(path):
    if not os.path.isfile(path):
        raise ZopeObjectError('The export %s does not exist on this host.' % path)
    with open(path, 'rb') as handle:
        if handle.read(4) != ZEXP_MAGIC:
            raise ZopeObjectError('%s is not a ZEXP export (its first bytes are not ZEXP).'
                                  % path)


@contextlib.contextmanager
def scratch_import(path):
    """The root object of a ZEXP file, imported into a throw-away database (with blobs)."""
    import transaction
    import ZODB
    from ZODB.FileStorage import FileStorage
    check_zexp(path)
    workdir = tempfile.mkdtemp(prefix='zopeops-zexp-')
    db = None
    try:
        db = ZODB.DB(FileStorage(os.path.join(workdir, 'Data.fs'),
                                 blob_dir=os.path.join(workdir, 'blobs')))
        manager = transaction.TransactionManager()
        connection = db.open(transaction_manager=manager)
        try:
            try:
                root = connection.importFile(path)
            except Exception as exc:
                raise ZopeObjectError('Could not read the export %s: %s: %s'
                                      % (path, type(exc).__name__, exc)) from None
            connection.root()['imported'] = root
            manager.commit()
            yield root
        finally:
            manager.abort()
            connection.close()
    finally:
        if db is not None:
            db.close()
        shutil.rmtree(workdir, ignore_errors=True)


def replace(parent, item_id, existing, zexp_path, overlay):
    """Put the ZEXP's object at ``parent/item_id`` in the current transaction.

    Returns how: ``added``, ``in-place`` (the existing object keeps its oid and gets the new
    state) or ``swapped`` (another class: the parent's reference is swapped, position kept).
    """
    from Acquisition import aq_base
    jar = aq_base(parent)._p_jar
    incoming = jar.importFile(zexp_path)
    if existing is None:
        if incoming.getId() != item_id:
            incoming._setId(item_id)
        parent._setObject(item_id, incoming, set_owner=0)
        return 'added'
    old = aq_base(existing)
    if type(old) is type(incoming):
        incoming._p_activate()
        old._p_activate()
        old.__setstate__(incoming.__getstate__())
        if old.getId() != item_id:
            old._setId(item_id)
        apply_overlay(old, overlay)
        return 'in-place'
    ids = list(parent.objectIds())
    position = ids.index(item_id)
    parent._delObject(item_id, suppress_events=True)
    if incoming.getId() != item_id:
        incoming._setId(item_id)
    parent._setObject(item_id, incoming, set_owner=0, suppress_events=True)
    apply_overlay(parent._getOb(item_id), overlay)
    _restore_position(parent, item_id, position)
    return 'swapped'


def _restore_position(parent, item_id, position):
    from Acquisition import aq_base
    base = aq_base(parent)
    objects = base.__dict__.get('_objects')
    if not isinstance(objects, tuple):
        return  # an unordered container (BTreeFolder2): nothing to restore
    entries = [entry for entry in objects if entry['id'] != item_id]
    moved = [entry for entry in objects if entry['id'] == item_id]
    base._objects = tuple(entries[:position] + moved + entries[position:])
