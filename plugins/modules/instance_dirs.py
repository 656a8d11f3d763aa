#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: instance_dirs
short_description: Ensure the folders of an instance exist, with their mode, owner and group, in one call
description:
  - Ensures that every folder in O(directories) exists (with its missing parents, as
    C(ansible.builtin.file state=directory) does) and has the given mode, owner and group.
  - It is C(ansible.builtin.file) over a list, in one module call instead of one per folder;
    an idle run of C(site.yml) spent about a second per folder and host in a C(file) loop, most
    of it Ansible's per-task overhead. Modes, owners and groups are applied with the same
    C(AnsibleModule) helpers that C(file) uses, so they mean the same thing.
  - A folder whose mode, owner or group is not given keeps what it has (a new one gets the
    umask's mode and the running account).
version_added: 0.2.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  directories:
    description:
      - The folders, each a path or a dict with C(path) and optionally C(mode) (octal string
        such as C("0750") or symbolic, as for C(ansible.builtin.file)), C(owner) and C(group).
      - A dict may give C(paths) (a list) instead of C(path), for several folders with the same
        mode, owner and group (a role's per-client folders).
      - They are handled in order, so list a parent before a child that gets other attributes.
    type: list
    elements: raw
    required: true
attributes:
  check_mode:
    support: full
    details: Reports which folders would be created or changed; creates and changes nothing.
  diff_mode:
    support: full
    details: Reports, per folder that changes, its state, mode, owner and group before and after.
  platform:
    support: full
    platforms: posix
seealso:
  - module: ansible.builtin.file
'''

EXAMPLES = r'''
- name: Ensure the ZEO server's folders exist.
  zopeops.stages.instance_dirs:
    directories:
      - {path: /srv/zopeops/test, mode: "0755"}
      - {path: /srv/zopeops/test/etc, mode: "0755"}
      - {path: /srv/zopeops/test/var/filestorage, mode: "0750", owner: zope}
      - {path: /srv/zopeops/test/var/blobstorage, owner: zope}   # mode left alone
      - /srv/zopeops/test/log
      - paths: [/srv/zopeops/test/var/client1, /srv/zopeops/test/var/client2]
        mode: "0755"
        owner: zope
'''

RETURN = r'''
directories:
  description: One entry per folder, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The folder.
      type: str
    created:
      description: Whether it was created (would be, in check mode).
      type: bool
    changed:
      description: Whether it was created or its mode, owner or group changed.
      type: bool
  sample:
    - {path: /srv/zopeops/test/etc, created: false, changed: false}
    - {path: /srv/zopeops/test/var/snapshots, created: true, changed: true}
'''

import os

from ansible.module_utils.basic import AnsibleModule

KEYS = ('path', 'paths', 'mode', 'owner', 'group')


def normalise(module, items):
    """Strings and dicts -> dicts with path/mode/owner/group; every mistake named at once."""
    entries, problems = [], []
    for index, item in enumerate(items):
        spec = {'path': item} if isinstance(item, str) else item
        if not isinstance(spec, dict) or not (spec.get('path') or 'paths' in spec) or (
                'path' in spec and 'paths' in spec):
            problems.append('directories[%d] must be a path or a dict with a path or paths'
                            % index)
            continue
        unknown = sorted(set(spec) - set(KEYS))
        if unknown:
            problems.append('directories[%d] (%s) has unknown keys %s; known: %s'
                            % (index, spec.get('path') or 'paths', ', '.join(unknown),
                               ', '.join(KEYS)))
            continue
        paths = spec['paths'] if 'paths' in spec else [spec['path']]
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            problems.append('directories[%d] paths must be a list of paths' % index)
            continue
        mode = spec.get('mode')
        for path in paths:
            # An int is the mode itself (YAML's unquoted 0755 is 493 = 0o755), as for file.
            entries.append({'path': os.path.abspath(path),
                            'mode': None if mode in (None, '') else mode,
                            'owner': spec.get('owner') or None,
                            'group': spec.get('group') or None})
    if problems:
        module.fail_json(msg='instance_dirs: %s.' % '; '.join(problems))
    return entries


def ensure(module, entry):
    path = entry['path']
    result = {'path': path, 'created': False, 'changed': False}
    diff = {'before': {'path': path}, 'after': {'path': path}}
    if os.path.lexists(path) and not os.path.isdir(path):
        module.fail_json(msg='instance_dirs: %s exists but is not a folder. Move it away or fix '
                             'the path.' % path)
    if not os.path.isdir(path):
        result.update(created=True, changed=True)
        diff['before']['state'] = 'absent'
        diff['after']['state'] = 'directory'
        if module.check_mode:
            return result, diff
        try:
            os.makedirs(path)
        except OSError as exc:
            module.fail_json(msg='instance_dirs: could not create %s: %s. Check the rights on '
                                 'its parent folder.' % (path, exc))
    file_args = module.load_file_common_arguments(
        {'path': path, 'mode': entry['mode'], 'owner': entry['owner'], 'group': entry['group']})
    try:
        changed = module.set_fs_attributes_if_different(file_args, False, diff)
    except Exception as exc:  # AnsibleModule fails itself on most errors; name the folder
        module.fail_json(msg='instance_dirs: could not set mode/owner/group of %s: %s'
                             % (path, exc))
    result['changed'] = result['changed'] or changed
    return result, diff


def main():
    module = AnsibleModule(
        argument_spec=dict(directories=dict(type='list', elements='raw', required=True)),
        supports_check_mode=True,
    )
    results, diffs = [], []
    for entry in normalise(module, module.params['directories']):
        result, diff = ensure(module, entry)
        results.append(result)
        if result['changed']:
            diffs.append(diff)
    changed = any(result['changed'] for result in results)
    output = dict(changed=changed, directories=results)
    if module._diff and diffs:
        output['diff'] = diffs
    module.exit_json(**output)


if __name__ == '__main__':
    main()
