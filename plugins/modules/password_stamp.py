#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: password_stamp
short_description: Remember which account and password were last asked for, as a salted slow hash
version_added: 0.2.0
description:
  - Keeps a one-line stamp file C(<account>:pbkdf2-sha256$<iterations>$<salt>$<hash>) (salt and
    hash in base64; PBKDF2-HMAC-SHA256 of the password with a random 16-byte salt), so that a
    role can tell whether an account or its password changed since the last run without
    keeping anything a stolen file would let anyone brute-force cheaply.
  - Idempotent. The salt is kept, so a run with the same account and password changes nothing;
    another account or password writes a new stamp with a new salt and reports
    RV(account_changed).
  - A stamp of the former format C(<account>:{SHA256}<hex>) (an unsalted SHA-256) that matches
    the account and password is rewritten in the new format with RV(account_changed=false),
    so that moving to this module restarts nothing; a stamp with fewer iterations than
    O(iterations) is rewritten the same way.
  - The file is written atomically (a temporary file renamed over it), mode 0600, owned by the
    account that runs the module.
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
options:
  path:
    description: The stamp file.
    type: path
    required: true
  account:
    description: The account's name, kept as it is (no secret).
    type: str
    required: true
  password:
    description: The password; never written, never returned.
    type: str
    required: true
  iterations:
    description: PBKDF2 iterations of a new stamp.
    type: int
    default: 600000
"""

EXAMPLES = r"""
- name: Ensure the admin account's stamp records the wanted account.
  zopeops.stages.password_stamp:
    path: /srv/zopeops/test/var/inituser.applied
    account: admin
    password: "{{ zope_client_admin_password }}"
  register: stamp
  no_log: true
"""

RETURN = r"""
account_changed:
  description: Whether the account or its password differ from the stamp's (or there was no
    readable stamp), so the account's file must be written again.
  returned: always
  type: bool
migrated:
  description: Whether a matching stamp of the former unsalted format (or with fewer
    iterations) was rewritten.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.zopeops.stages.plugins.module_utils.password_stamp import (
    ensure_password_stamp)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            account=dict(type='str', required=True),
            password=dict(type='str', required=True, no_log=True),
            iterations=dict(type='int', default=600000),
        ),
        supports_check_mode=True,
    )
    try:
        result = ensure_password_stamp(module.params['path'], module.params['account'],
                                       module.params['password'], module.params['iterations'],
                                       module.check_mode)
    except (ValueError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
