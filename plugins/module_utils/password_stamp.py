# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stamp of the account and password last asked for: a salted PBKDF2-HMAC-SHA256 line in a
0600 file, so a role acts (writes Zope's inituser, alters a PostgreSQL role) only when the
account or password changed. Shared by the modules password_stamp and instance_files."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import tempfile

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


def ensure_password_stamp(path, account, password, iterations=600000, check_mode=False):
    """The stamp at ``path`` made to record ``account`` and ``password`` (unless
    ``check_mode``): {changed, account_changed, migrated}. Raises ValueError for a bad
    account or iteration count, OSError when the stamp cannot be written."""
    if iterations < 1:
        raise ValueError('iterations must be at least 1.')
    if ':' in account or '\n' in account:
        raise ValueError('The account name must hold no ":" and no newline.')
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
    if changed and not check_mode:
        try:
            if verdict == 'same':
                os.chmod(path, 0o600)
            else:
                write_stamp(path, make_stamp(account, password, iterations))
        except OSError as exc:
            raise OSError('Writing the stamp %s failed: %s' % (path, exc)) from exc
    return dict(changed=changed, account_changed=verdict == 'changed',
                migrated=verdict == 'upgrade')
