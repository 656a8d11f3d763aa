#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: zope_object_export
short_description: Export one Zope object and everything below it as a ZEXP file
description:
  - Starts Zope against a stage's ZEO server, finds the object at O(path) and writes it, with
    every object below it and their blobs, as a ZEXP file at O(dest) (what the ZMI's
    I(Import/Export) writes; M(zopeops.stages.zope_object_import) reads it on another stage).
  - Reports each item of the subtree with its class, size and fingerprint, so a push can be
    compared and described before anything is written on the target.
  - Refuses, writing nothing, when the object does not exist or when the export is larger than
    O(max_bytes).
  - B(Idempotence.) The file is written to a temporary name and moved into place only if its
    content differs from O(dest); exporting an unchanged subtree again reports C(changed=false).
version_added: 0.2.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - zopeops.stages.zope
options:
  path:
    description:
      - The object to export, an absolute path from the application root, for example
        C(/partners/acme).
    type: str
    required: true
  dest:
    description:
      - The ZEXP file to write on the host that runs the module. Its folder must exist.
    type: path
    required: true
  max_bytes:
    description:
      - Refuse an export larger than this many bytes (the ZEXP file, blobs included), writing
        nothing. C(0) means no limit.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    details: Zope opens the storage read-only; the export is made into a temporary file to
      measure and compare it, then removed. The result is the same, and C(changed) says
      whether O(dest) would be written.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
seealso:
  - module: zopeops.stages.zope_object_import
'''

EXAMPLES = r'''
- name: Export acme's branding from beta.
  zopeops.stages.zope_object_export:
    path: /partners/acme
    dest: /srv/zopeops/beta/var/exports/acme.zexp
    zope_conf: /srv/zopeops/beta/etc/zope-console.conf
    max_bytes: 104857600
  vars:
    ansible_python_interpreter: /srv/zopeops/beta/current/venv/bin/python

- name: Export from a ZEO host that runs no Zope client.
  zopeops.stages.zope_object_export:
    path: /partners/acme
    dest: /srv/zopeops/prod/var/exports/acme.zexp
    zeo_address: 10.0.0.5:8100
  vars:
    ansible_python_interpreter: /srv/zopeops/prod/current/venv/bin/python
'''

RETURN = r'''
path:
  description: The exported object's path.
  type: str
  returned: always
  sample: /partners/acme
dest:
  description: The ZEXP file.
  type: str
  returned: always
class:
  description: The class of the exported object, module and name.
  type: str
  returned: success
  sample: OFS.Folder.Folder
bytes:
  description: Size of the ZEXP file (every record of the subtree and its blobs).
  type: int
  returned: success
sha256:
  description: The sha256 of the ZEXP file.
  type: str
  returned: success
items:
  description: The items of the subtree, by path below the exported object (C('') is itself).
  type: dict
  returned: success
  sample: {"": {"class": "OFS.Folder.Folder", "bytes": 412, "sha256": "9f2c..."},
           "logo.png": {"class": "OFS.Image.Image", "bytes": 980, "sha256": "51aa..."}}
item_count:
  description: How many items the subtree holds.
  type: int
  returned: success
source_tid:
  description: The last transaction of the source storage when the export was made, 16 hex
    digits.
  type: str
  returned: success
duration:
  description: Seconds the module spent, Zope's start included.
  type: float
  returned: always
msg:
  description: What was done, or would be done in check mode.
  type: str
  returned: always
'''

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils import zope_objects as zo


def export(module, result):
    params = module.params
    dest = params['dest']
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise zo.ZopeObjectError('The folder %s for the export does not exist. Create it first.'
                                 % directory)
    with zo.zope_app(params['zope_conf'], params['zeo_address'], params['storage'],
                     read_only=module.check_mode) as app:
        _parent, obj = zo.find(app, params['path'])
        if obj is None:
            raise zo.ZopeObjectError(
                'There is no object at %s on this stage: nothing was exported. Check the path '
                '(and the partner) against the site.' % params['path'])
        result['source_tid'] = zo.last_tid(app)
        result['class'] = zo.class_name(obj)
        items = zo.manifest(obj)
        tmp_path, size, digest = zo.export_zexp(obj, directory)
    try:
        result.update(items=items, item_count=len(items), bytes=size, sha256=digest)
        if params['max_bytes'] and size > params['max_bytes']:
            raise zo.ZopeObjectError(
                'The export of %s is %d bytes, more than max_bytes (%d): nothing was written. '
                'Raise the limit, or confirm a push this large (force).'
                % (params['path'], size, params['max_bytes']))
        previous = zo.file_digest(dest)[1] if os.path.isfile(dest) else None
        result['changed'] = previous != digest
        if module.check_mode or not result['changed']:
            os.unlink(tmp_path)
        else:
            zo.commit_file(tmp_path, dest)
        verb = ('Would export' if module.check_mode and result['changed'] else
                'Exported' if result['changed'] else 'Unchanged:')
        result['msg'] = '%s %s (%d items, %d bytes) to %s.' % (verb, params['path'], len(items),
                                                               size, dest)
    finally:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='str', required=True),
            dest=dict(type='path', required=True),
            max_bytes=dict(type='int', default=0),
            zope_conf=dict(type='path'),
            zeo_address=dict(type='str'),
            storage=dict(type='str', default='1'),
        ),
        required_one_of=[('zope_conf', 'zeo_address')],
        mutually_exclusive=[('zope_conf', 'zeo_address')],
        supports_check_mode=True,
    )
    zu.import_zodb(module)
    started = time.monotonic()
    result = {'changed': False, 'path': module.params['path'], 'dest': module.params['dest']}
    try:
        zo.split_path(module.params['path'])
        export(module, result)
    except zo.ZopeObjectError as exc:
        module.fail_json(msg=str(exc), duration=zu.elapsed(started), **result)
    result['duration'] = zu.elapsed(started)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
