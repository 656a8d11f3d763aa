"""What the branding tests read and write in a stage's ZODB, through the stage's own release.

Scripts run with the release virtualenv's Python (Zope, ZODB and ZEO of the stage), either as
``zconsole run`` scripts (Zope started: writes) or as plain ZEO clients (read-only reads).
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import textwrap

# Reads every record reachable from the root with its tid, the oids below some paths, the
# last tid, and a few values of acme's branding; prints JSON. Read-only, no Zope start.
TREE_SCRIPT = textwrap.dedent('''
    import json, sys, tempfile
    from ZEO.ClientStorage import ClientStorage
    from ZODB.DB import DB
    from ZODB.serialize import referencesf
    from ZODB.utils import z64
    port, paths = int(sys.argv[1]), json.loads(sys.argv[2])
    storage = ClientStorage(('127.0.0.1', port), read_only=True,
                            blob_dir=tempfile.mkdtemp(prefix='tree-blobs-'))
    def reachable(start):
        found, todo = {}, [start]
        while todo:
            oid = todo.pop()
            if oid in found:
                continue
            data, tid = storage.load(oid)
            found[oid] = tid.hex()
            todo.extend(referencesf(data))
        return found
    db = DB(storage)
    conn = db.open()
    app = conn.root()['Application']
    out = {'last_tid': storage.lastTransaction().hex(),
           'tids': {oid.hex(): tid for oid, tid in reachable(z64).items()}, 'subtrees': {},
           'oids': {}}
    for path in paths:
        obj = app
        for part in path.strip('/').split('/'):
            # _getOb skips ids with a leading underscore (the demo's write container).
            obj = (obj._getOb(part, None) or getattr(obj, part, None)) if obj is not None else None
        if obj is not None:
            out['oids'][path] = obj._p_oid.hex()
            out['subtrees'][path] = sorted(o.hex() for o in reachable(obj._p_oid))
    acme = app.partners._getOb('acme', None)
    if acme is not None:
        out['acme_text'] = acme.index_html.read()
        original = getattr(acme['logo.png'].aq_base, 'original', None)
        out['acme_blob'] = original.open('r').read().decode() if original is not None else None
    conn.close()
    db.close()
    print(json.dumps(out))
''')

EDIT_SCRIPT = textwrap.dedent('''
    import sys, transaction
    from ZODB.blob import Blob
    text, blob_text = sys.argv[-2], sys.argv[-1]  # zconsole run CONF SCRIPT TEXT BLOB
    branding = app.partners.acme
    branding.index_html.pt_edit(text, 'text/html')
    blob = Blob()
    with blob.open('w') as handle:
        handle.write(blob_text.encode())
    branding['logo.png'].original = blob
    transaction.commit()
    print('edited')
''')

SEED = 'seed_demo_content.py'


def instance_dir(pipeline, instance):
    return pathlib.Path(pipeline.sandbox) / instance


def python_of(pipeline, instance):
    return str(instance_dir(pipeline, instance) / 'current' / 'venv' / 'bin' / 'python')


def zconsole(pipeline, instance, script, *args, tmp_path):
    path = tmp_path / ('script-%s.py' % abs(hash(script)))
    path.write_text(script)
    base = instance_dir(pipeline, instance)
    proc = subprocess.run([str(base / 'current' / 'venv' / 'bin' / 'zconsole'), 'run',
                           str(base / 'etc' / 'zope-console.conf'), str(path), *args],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def seed(pipeline, instance):
    """The demo brandings on a stage that was not seeded (only the head is)."""
    base = instance_dir(pipeline, instance)
    proc = subprocess.run([str(base / 'current' / 'venv' / 'bin' / 'zconsole'), 'run',
                           str(base / 'etc' / 'zope-console.conf'),
                           str(base / 'current' / 'src' / SEED)],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def edit_acme(pipeline, instance, text, blob_text, tmp_path):
    zconsole(pipeline, instance, EDIT_SCRIPT, text, blob_text, tmp_path=tmp_path)


PATHS = ('/partners', '/partners/acme', '/partners/globex')


def tree(python, zeo_port, paths=PATHS):
    proc = subprocess.run([python, '-c', TREE_SCRIPT, str(zeo_port), json.dumps(list(paths))],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
