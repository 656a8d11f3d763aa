#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zope_object_import
short_description: Replace one Zope object and everything below it with a ZEXP export, in one transaction
description:
  - Starts Zope against a stage's ZEO server and puts the object exported by
    M(zopeops.stages.zope_object_export) at O(path), replacing what is there, blobs
    included, in one ZODB transaction. The site serves the old subtree until the commit and
    the new one after it.
  - The object at O(path) keeps its oid, its place among its siblings, its local roles
    (O(keep_local_roles)) and its properties (O(keep_properties)); its parent and every object
    outside the subtree are not written. Only when the export holds another class is the
    parent's reference swapped (its order kept).
  - With O(state=absent) the object is removed (how a push of a new object is undone).
  - Reports what changes, item by item (added, replaced, removed, unchanged, with sizes), and
    after writing checks that the site holds exactly what the export holds.
  - B(Idempotence.) Nothing is written when every item already matches the export (kept
    attributes aside). A second import of the same file reports C(changed=false).
  - Fails, changing nothing, when the parent of O(path) does not exist, the file is not a
    ZEXP export, or another writer changed the subtree during the import (a ZODB conflict).
version_added: 0.2.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.zope
options:
  path:
    description:
      - Where the object goes, an absolute path from the application root, for example
        C(/partners/acme). Its parent must exist; the object itself need not.
    type: str
    required: true
  src:
    description:
      - The ZEXP file on the host that runs the module. Required with O(state=present).
    type: path
  state:
    description:
      - C(present) puts the export at O(path); C(absent) removes the object at O(path).
    type: str
    choices: [present, absent]
    default: present
  keep_local_roles:
    description:
      - Keep the local roles of the object being replaced (they name the stage's own users),
        instead of those in the export.
    type: bool
    default: true
  keep_properties:
    description:
      - Keep the properties (definitions and values, C(title) included) of the object being
        replaced; properties only the export has are added. C(false) takes the export's.
    type: bool
    default: true
  backup:
    description:
      - Before changing anything, write the object being replaced or removed as a ZEXP file
        here (importing it restores the previous version). Nothing is written when nothing
        changes, or when there was no object.
    type: path
attributes:
  check_mode:
    support: full
    details: Zope opens the storage read-only (nothing can be written, not even by Zope's
      start-up); the export is read into a throw-away database and compared. The report is
      the one a real run returns.
  diff_mode:
    support: full
    details: One line per item, C(path class bytes sha256-prefix), before and after.
  platform:
    support: full
    platforms: posix
seealso:
  - module: zopeops.stages.zope_object_export
'''

EXAMPLES = r'''
- name: Push acme's branding into test, keeping the previous version.
  zopeops.stages.zope_object_import:
    src: /srv/zopeops/test/var/exports/acme.zexp
    path: /partners/acme
    backup: /srv/zopeops/test/var/exports/acme.previous.zexp
    zope_conf: /srv/zopeops/test/etc/zope-console.conf
  vars:
    ansible_python_interpreter: /srv/zopeops/test/current/venv/bin/python

- name: Show what a push would change, writing nothing.
  zopeops.stages.zope_object_import:
    src: /srv/zopeops/test/var/exports/acme.zexp
    path: /partners/acme
    zeo_address: 10.0.0.7:8100
  check_mode: true
  vars:
    ansible_python_interpreter: /srv/zopeops/test/current/venv/bin/python
'''

RETURN = r'''
path:
  description: The object's path.
  type: str
  returned: always
how:
  description: C(added), C(in-place) (the object kept its oid and took the export's state),
    C(swapped) (another class, so the parent's reference changed), C(removed), or C(none).
  type: str
  returned: success
added:
  description: Items the export has and the site had not, each C(path), C(class), C(bytes).
  type: list
  elements: dict
  returned: success
replaced:
  description: Items both have that differ, each C(path), C(class), C(bytes), C(bytes_before).
  type: list
  elements: dict
  returned: success
removed:
  description: Items the site had and the export has not, each C(path), C(class),
    C(bytes_before).
  type: list
  elements: dict
  returned: success
unchanged:
  description: Items that are the same on both sides.
  type: list
  elements: dict
  returned: success
counts:
  description: How many items were added, replaced, removed and unchanged.
  type: dict
  returned: success
  sample: {"added": 1, "replaced": 1, "removed": 0, "unchanged": 1}
bytes_before:
  description: Size of the subtree before (0 if there was none).
  type: int
  returned: success
bytes_after:
  description: Size of the subtree after (the same as RV(bytes_before) when nothing changed).
  type: int
  returned: success
kept:
  description: The attributes of the object that were kept from the site, not taken from the
    export.
  type: list
  elements: str
  returned: success
tid_before:
  description: The storage's last transaction before the import, 16 hex digits.
  type: str
  returned: success
tid_after:
  description: The last transaction after it (the import's own when something changed).
  type: str
  returned: success
backup_file:
  description: The ZEXP of the previous version (O(backup)), or null when none was written.
  type: str
  returned: success
duration:
  description: Seconds the module spent, Zope's start included.
  type: float
  returned: always
msg:
  description: What changed, or would change in check mode.
  type: str
  returned: always
'''

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils import zope_objects as zo


def summary(counts):
    return ', '.join('%d %s' % (counts[key], key) for key in ('added', 'replaced', 'removed',
                                                              'unchanged'))


def diff_text(items):
    return ''.join('%s %s %d %s\n' % (path or '.', entry['class'], entry['bytes'],
                                      entry['sha256'][:12])
                   for path, entry in sorted(items.items()))


def incoming_items(module, existing):
    """(manifest of the export as it would land, the overlay of kept attributes).

    The export is read into a throw-away database, so a damaged file fails here, before the
    site is touched, and check mode needs no write access."""
    params = module.params
    if params['state'] == 'absent':
        return {}, {}
    with zo.scratch_import(params['src']) as incoming:
        overlay = zo.kept_overlay(existing, incoming, params['keep_local_roles'],
                                  params['keep_properties'])
        return zo.manifest(incoming, overlay), overlay


def write(module, app, parent, existing, overlay, result):
    import transaction
    from ZODB.POSException import ConflictError
    params = module.params
    item_id = zo.split_path(params['path'])[-1]
    if params['backup'] and existing is not None:
        directory = os.path.dirname(os.path.abspath(params['backup']))
        tmp_path, _size, _digest = zo.export_zexp(existing, directory)
        zo.commit_file(tmp_path, params['backup'])
        result['backup_file'] = params['backup']
    txn = transaction.get()
    txn.note('zopeops.stages zope_object_import: %s %s' % (
        'remove' if params['state'] == 'absent' else 'replace with ' + params['src'],
        params['path']))
    txn.setUser('zopeops.stages')
    if params['state'] == 'absent':
        parent._delObject(item_id)
        result['how'] = 'removed'
    else:
        result['how'] = zo.replace(parent, item_id, existing, params['src'], overlay)
    try:
        transaction.commit()
    except ConflictError as exc:
        transaction.abort()
        raise zo.ZopeObjectError(
            'Another writer changed %s or its parent while the import ran (%s): nothing was '
            'changed. Run it again.' % (params['path'], exc)) from None
    result['tid_after'] = zo.last_tid(app)


def run(module, result):
    params = module.params
    if params['state'] == 'present':
        if not params['src']:
            raise zo.ZopeObjectError('state=present needs src, the ZEXP file to import.')
        zo.check_zexp(params['src'])
    with zo.zope_app(params['zope_conf'], params['zeo_address'], params['storage'],
                     read_only=module.check_mode) as app:
        parent, existing = zo.find(app, params['path'])
        result['tid_before'] = result['tid_after'] = zo.last_tid(app)
        before = zo.manifest(existing) if existing is not None else {}
        after, overlay = incoming_items(module, existing)
        report = zo.compare(before, after)
        result.update(report)
        result['kept'] = sorted(key for key, value in overlay.items() if value is not zo.ABSENT)
        counts = report['counts']
        result['changed'] = bool(counts['added'] or counts['replaced'] or counts['removed'])
        if module._diff:
            result['diff'] = {'before': diff_text(before), 'after': diff_text(after),
                              'before_header': params['path'], 'after_header': params['path']}
        if not result['changed']:
            result['how'] = 'none'
            result['msg'] = 'Unchanged: %s already matches %s (%s).' % (
                params['path'], params['src'] or 'its absence', summary(counts))
            return
        if module.check_mode:
            result['how'] = 'none'
            result['msg'] = 'Would %s %s: %s.' % (
                'remove' if params['state'] == 'absent' else 'replace', params['path'],
                summary(counts))
            return
        write(module, app, parent, existing, overlay, result)
        app._p_jar.sync()
        _parent, now = zo.find(app, params['path'])
        landed = zo.manifest(now) if now is not None else {}
        if landed != after:
            differ = sorted(p for p in set(landed) | set(after) if landed.get(p) != after.get(p))
            raise zo.ZopeObjectError(
                'The import into %s was committed (transaction %s) but the site does not hold '
                'what the export holds; these items differ: %s. Restore the previous version%s.'
                % (params['path'], result['tid_after'], ', '.join(differ) or '?',
                   ' from ' + params['backup'] if result.get('backup_file') else ''))
        result['msg'] = '%s %s in transaction %s: %s.' % (
            'Removed' if params['state'] == 'absent' else 'Replaced', params['path'],
            result['tid_after'], summary(counts))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='str', required=True),
            src=dict(type='path'),
            state=dict(type='str', choices=['present', 'absent'], default='present'),
            keep_local_roles=dict(type='bool', default=True),
            keep_properties=dict(type='bool', default=True),
            backup=dict(type='path'),
            zope_conf=dict(type='path'),
            zeo_address=dict(type='str'),
            storage=dict(type='str', default='1'),
        ),
        required_one_of=[('zope_conf', 'zeo_address')],
        mutually_exclusive=[('zope_conf', 'zeo_address')],
        required_if=[('state', 'present', ('src',))],
        supports_check_mode=True,
    )
    zu.import_zodb(module)
    started = time.monotonic()
    result = {'changed': False, 'path': module.params['path'], 'backup_file': None}
    try:
        zo.split_path(module.params['path'])
        run(module, result)
    except zo.ZopeObjectError as exc:
        module.fail_json(msg=str(exc), duration=zu.elapsed(started), **result)
    result['duration'] = zu.elapsed(started)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
