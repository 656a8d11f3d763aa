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

import base64
import hashlib
import hmac
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

SCHEME = 'pbkdf2-sha256'


def derive(password, salt, iterations):
    return hashlib.pbkdf2_hmac('sha256', password.encode('utf-8'), salt, iterations)


def make_stamp(account, password, iterations, salt=None):
    """The stamp line (with its newline) for ``account`` and ``password``; a new salt unless
    one is given."""
    salt = os.urandom(16) if salt is None else salt
    digest = derive(password, salt, iterations)
    return '%s:%s$%d$%s$%s\n' % (account, SCHEME, iterations,
                                 base64.b64encode(salt).decode(),
                                 base64.b64encode(digest).decode())


def compare(text, account, password, iterations):
    """How the stamp ``text`` stands to ``account`` and ``password``: 'same' (keep it),
    'upgrade' (same account and password, in the former format or with fewer iterations)
    or 'changed' (another account or password, or nothing readable)."""
    if text is None:
        return 'changed'
    line = text.rstrip('\n')
    stored_account, sep, value = line.rpartition(':')
    if not sep or stored_account != account or '\n' in line:
        return 'changed'
    if value.startswith('{SHA256}'):
        wanted = hashlib.sha256(password.encode('utf-8')).hexdigest()
        return 'upgrade' if hmac.compare_digest(value[len('{SHA256}'):].lower(), wanted) \
            else 'changed'
    parts = value.split('$')
    if len(parts) != 4 or parts[0] != SCHEME or not parts[1].isdigit():
        return 'changed'
    try:
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except ValueError:
        return 'changed'
    stored_iterations = int(parts[1])
    if stored_iterations < 1 or not salt:
        return 'changed'
    if not hmac.compare_digest(derive(password, salt, stored_iterations), digest):
        return 'changed'
    return 'same' if stored_iterations >= iterations else 'upgrade'


def write_stamp(path, line):
    directory = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix='.%s-' % os.path.basename(path), dir=directory)
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, 'w') as stream:
            stream.write(line)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    path, account = module.params['path'], module.params['account']
    password, iterations = module.params['password'], module.params['iterations']
    if iterations < 1:
        module.fail_json(msg='iterations must be at least 1.')
    if ':' in account or '\n' in account:
        module.fail_json(msg='The account name must hold no ":" and no newline.')
    try:
        with open(path) as handle:
            text = handle.read()
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError):
        text = None  # unreadable: written anew
    verdict = compare(text, account, password, iterations)
    mode_wrong = text is not None and (os.stat(path).st_mode & 0o777) != 0o600
    changed = verdict != 'same' or mode_wrong
    if changed and not module.check_mode:
        try:
            if verdict == 'same':
                os.chmod(path, 0o600)
            else:
                write_stamp(path, make_stamp(account, password, iterations))
        except OSError as exc:
            module.fail_json(msg='Writing the stamp %s failed: %s' % (path, exc))
    module.exit_json(changed=changed, account_changed=verdict == 'changed',
                     migrated=verdict == 'upgrade')


if __name__ == '__main__':
    main()
