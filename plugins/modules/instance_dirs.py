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

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils.instance_paths import ensure_dirs


def main():
    module = AnsibleModule(
        argument_spec=dict(directories=dict(type='list', elements='raw', required=True)),
        supports_check_mode=True,
    )
    results, diffs = ensure_dirs(module, module.params['directories'])
    output = dict(changed=any(result['changed'] for result in results), directories=results)
    if module._diff and diffs:
        output['diff'] = diffs
    module.exit_json(**output)


if __name__ == '__main__':
    main()
