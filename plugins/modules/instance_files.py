#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: instance_files
short_description: Ensure a component's folders and configuration files, rendered from templates, in one call
description:
  - Ensures the folders in O(directories) (as M(zopeops.stages.instance_dirs) does), then the
    files in O(files), each with its content, mode, owner and group. A role that used to run a
    C(file) task, a few C(template) tasks and their loops makes one call per host instead; an
    idle C(site.yml) spent most of its time in Ansible's per-task, per-file overhead.
  - The action plugin of the same name renders each file's template on the controller, as
    M(ansible.builtin.template) does (the role's C(templates) folder, the task's variables,
    C(trim_blocks)), and sends the module the rendered contents.
  - A file whose content differs is written to a temporary file in its folder, fsynced,
    optionally checked with the C(validate) of a file, and renamed over the old one, so a service that
    reads it meanwhile sees the old file or the new one. A file whose content is the same is not
    written; its mode, owner and group are still ensured.
version_added: 0.9.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
options:
  directories:
    description:
      - The folders, created first, in order; the format of M(zopeops.stages.instance_dirs)'s
        O(zopeops.stages.instance_dirs#module:directories).
    type: list
    elements: raw
    default: []
  files:
    description:
      - The files, each a dict.
      - C(dest) (required) is the file's path. It may contain C({name}) style fields when
        C(each) is given (see below).
      - C(template) is a template of the role (its C(templates) folder, as for
        M(ansible.builtin.template)), rendered on the controller with the task's variables plus
        C(vars); or C(src), a text file of the role's C(files) folder (or a path on the
        controller) copied as it is; or C(content), the file's text.
      - C(each) (a list) makes one file per element; the element is the variable C(item) in the
        template, and C(dest), C(key), C(template) and C(src) are formatted with the element's
        keys (C({name}) is the
        element's C(name)); a string element is C({item}).
      - C(mode) (octal string, as for M(ansible.builtin.copy)), C(owner), C(group).
      - C(key) names the file in the result's RV(changed_keys) (a role decides from it what to
        restart); C(validate) is a command checking the new file before it replaces the old one,
        with C(%s) for its path (no shell); C(secret) (bool) keeps its content out of the diff
        and out of every output (the action plugin passes it in O(secret_contents)).
      - C(keep_values) makes the file a map (C(key value) lines, as HAProxy's maps). For a
        line of the content whose key the file on the host has, the host's value stays when
        it is allowed, so a value changed at runtime survives the run. Either a regular
        expression the whole value must match, or a dict of key -> list of the values that may
        stay; another value, or a key the host's file lacks, gets the content's line.
    type: list
    elements: dict
    default: []
  secret_contents:
    description:
      - The contents of the files marked C(secret), by their C(dest); a no_log option, so they
        are masked in every output. The action plugin fills it; a file marked C(secret) may
        give its C(content) here instead of in O(files).
    type: dict
    default: {}
  stamps:
    description:
      - Stamps of one-off steps (a site's initialisation script, a permission granted in the
        ZODB), each a dict. The step runs only when its stamp is stale, and the stamp is written
        after it succeeded (O(write_stamps)), so an idle run skips it.
      - C(key) (required) names the stamp in RV(stale_stamps); C(dest) (required) is its file;
        C(content) (required, a string) is what makes a new run of the step necessary (the
        release, the step's arguments, the checksum of its script).
      - C(depends), a list of files on the host whose SHA-256 is part of the stamp (for
        example the instance's C(deployed.json), which a deployment or promotion rewrites);
        a missing one counts as C(absent).
      - Without O(write_stamps) the stamps are only read.
    type: list
    elements: dict
    default: []
  write_stamps:
    description:
      - Write every stamp of O(stamps) whose file differs (after the steps they record
        succeeded), mode C(0644). Reported in RV(stamps), not as a change of the task's files.
    type: bool
    default: false
  password_stamp:
    description:
      - A stamp of an account and its password, as M(zopeops.stages.password_stamp) keeps it
        (a salted PBKDF2 line, mode C(0600)), in the same call; RV(password_stamp) says whether
        the account or password changed.
    type: dict
    suboptions:
      dest:
        description: The stamp file.
        type: path
        required: true
      account:
        description: The account name (no C(:), no newline).
        type: str
        required: true
      password:
        description: The password; never shown.
        type: str
        required: true
      iterations:
        description: PBKDF2 iterations for a stamp written anew.
        type: int
        default: 600000
attributes:
  check_mode:
    support: full
    details: Reports which folders and files would be created or changed; changes nothing.
  diff_mode:
    support: full
    details: The folders' attributes and the files' contents before and after (not of a file marked C(secret)).
  platform:
    support: full
    platforms: posix
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
seealso:
  - module: zopeops.stages.instance_dirs
  - module: ansible.builtin.template
'''

EXAMPLES = r'''
- name: Ensure the ZEO server's folders and configuration.
  zopeops.stages.instance_files:
    directories:
      - paths: [/srv/zopeops/test, /srv/zopeops/test/etc]
        mode: "0755"
    files:
      - template: etc/zeo.conf.j2
        dest: /srv/zopeops/test/etc/zeo.conf
        mode: "0644"
        key: zeo
  register: zeo_files
  notify: Restart the ZEO server.

- name: Ensure each Zope client's configuration (one file per client).
  zopeops.stages.instance_files:
    files:
      - template: etc/zope.ini.j2
        each: "{{ zope_client_clients }}"
        dest: "/srv/zopeops/test/etc/zope-{name}.ini"
        key: "{name}"
        mode: "0644"
'''

RETURN = r'''
directories:
  description: One entry per folder, as M(zopeops.stages.instance_dirs) returns them.
  returned: always
  type: list
  elements: dict
files:
  description: One entry per file, in order.
  returned: always
  type: list
  elements: dict
  contains:
    dest:
      description: The file.
      type: str
    key:
      description: The file's key (empty when none was given).
      type: str
    changed:
      description: Whether its content, mode, owner or group changed (would change, in check mode).
      type: bool
    content_changed:
      description: Whether its content changed.
      type: bool
  sample:
    - {dest: /srv/zopeops/test/etc/zeo.conf, key: zeo, changed: true, content_changed: true}
files_changed:
  description: Whether any file changed (not counting folders).
  returned: always
  type: bool
  sample: true
changed_keys:
  description: The keys of the files that changed, each once, in order.
  returned: always
  type: list
  elements: str
  sample: [client1]
stamps:
  description: One entry per stamp of O(stamps) (C(key), C(dest), C(stale), C(changed)).
  returned: always
  type: list
  elements: dict
  sample:
    - {key: grant, dest: /srv/zopeops/dev/var/push-grant.stamp, stale: true, changed: false}
stale_stamps:
  description: The keys of the stamps whose step has to run (their file missing or different).
  returned: always
  type: list
  elements: str
  sample: [grant]
password_stamp:
  description:
    - With O(password_stamp), C(changed) (the stamp was written or its mode set),
      C(account_changed) (the account or password differ from the stamp's, or there was none)
      and C(migrated) (a matching stamp of an older format rewritten).
  returned: with O(password_stamp)
  type: dict
  sample: {changed: false, account_changed: false, migrated: false}
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils.instance_paths import (
    ensure_dirs, ensure_file, ensure_stamps, normalise_files)
from ansible_collections.zopeops.stages.plugins.module_utils.password_stamp import (
    ensure_password_stamp)

WHO = 'instance_files'


def main():
    module = AnsibleModule(
        argument_spec=dict(
            directories=dict(type='list', elements='raw', default=[]),
            files=dict(type='list', elements='dict', default=[]),
            secret_contents=dict(type='dict', default={}, no_log=True),
            stamps=dict(type='list', elements='dict', default=[]),
            write_stamps=dict(type='bool', default=False),
            password_stamp=dict(type='dict', no_log=False, options=dict(
                dest=dict(type='path', required=True),
                account=dict(type='str', required=True),
                password=dict(type='str', required=True, no_log=True),
                iterations=dict(type='int', default=600000),
            )),
        ),
        supports_check_mode=True,
    )
    folders, diffs = ensure_dirs(module, module.params['directories'], WHO)
    files = []
    specs = [dict(spec, content=module.params['secret_contents'][spec['dest']])
             if spec.get('secret') and spec.get('dest') in module.params['secret_contents'] else spec
             for spec in module.params['files']]
    for spec in normalise_files(module, specs, WHO):
        result, diff = ensure_file(module, spec, WHO)
        files.append(result)
        if result['content_changed'] and 'after' in diff:
            diffs.append(diff)
    changed_keys = []
    for result in files:
        if result['changed'] and result['key'] and result['key'] not in changed_keys:
            changed_keys.append(result['key'])
    files_changed = any(result['changed'] for result in files)
    stamps = ensure_stamps(module, module.params['stamps'], module.params['write_stamps'], WHO)
    output = dict(changed=files_changed or any(folder['changed'] for folder in folders),
                  directories=folders, files=files, files_changed=files_changed,
                  changed_keys=changed_keys, stamps=stamps,
                  stale_stamps=[stamp['key'] for stamp in stamps if stamp['stale']])
    wanted = module.params['password_stamp']
    if wanted:
        try:
            output['password_stamp'] = ensure_password_stamp(
                wanted['dest'], wanted['account'], wanted['password'], wanted['iterations'],
                module.check_mode)
        except (ValueError, OSError) as exc:
            module.fail_json(msg='%s: password_stamp %s: %s' % (WHO, wanted['dest'], exc))
        output['changed'] = output['changed'] or output['password_stamp']['changed']
    if module._diff and diffs:
        output['diff'] = diffs
    module.exit_json(**output)


if __name__ == '__main__':
    main()
