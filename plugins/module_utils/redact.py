# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Secrets never leave a module: one redaction for every module's output, error and file.

- ``redact_url``: ``https://user:token@host/x`` -> ``https://********@host/x``.
- ``redact_text``: the same for every URL with credentials inside a free text (a git error,
  an exception, a command line), and ``redact_deep`` for a whole nested result.
- ``Scrubber``: replaces known secret values (a password, a header's token) wherever they
  appear, for texts that carry a secret without a URL around it; ``secrets_of`` collects them
  and ``module_scrubber`` makes one for a module, which Ansible's ``no_log_values`` also mask
  in the echoed arguments.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = '********'

# scheme://userinfo@ where userinfo has no '/', '@' or whitespace; the userinfo goes.
_URL_CREDENTIALS = re.compile(r'\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@')


def redact_url(url):
    """``http://user:pw@host/x`` -> ``http://********@host/x``; other URLs unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ''
    if parts.port:
        host = '%s:%d' % (host, parts.port)
    return urlunsplit((parts.scheme, REDACTED + '@' + host, parts.path, parts.query,
                       parts.fragment))


def redact_text(text):
    """Every ``scheme://user:password@`` in ``text`` becomes ``scheme://********@``."""
    if not isinstance(text, str) or '@' not in text:
        return text
    return _URL_CREDENTIALS.sub(lambda match: match.group(1) + REDACTED + '@', text)


def redact_deep(value):
    """``redact_text`` over every string of a nested result (dicts, lists, tuples)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact_deep(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_deep(item) for item in value]
    return value


class Scrubber:
    """Replaces every secret value in texts (and nested results) by ``********``; URLs with
    credentials are redacted as well."""

    def __init__(self, secrets):
        expanded = set()
        for secret in secrets:
            if secret and len(str(secret)) >= 3:
                expanded.add(str(secret))
        self.secrets = sorted(expanded, key=len, reverse=True)

    def text(self, value):
        if not isinstance(value, str):
            return value
        for secret in self.secrets:
            value = value.replace(secret, REDACTED)
        return redact_text(value)

    def deep(self, value):
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {key: self.deep(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.deep(item) for item in value]
        return value


def secrets_of(password=None, headers=None, urls=()):
    """The values to scrub: the password, its basic-auth token, header values, URL passwords."""
    secrets = []
    if password:
        secrets.append(password)
    for value in (headers or {}).values():
        value = str(value)
        secrets.append(value)
        # 'Basic abc' / 'Bearer xyz': the token alone is a secret too.
        if ' ' in value:
            secrets.append(value.split(' ', 1)[1])
    for url in urls:
        try:
            url_password = urlsplit(url).password
        except ValueError:
            url_password = None
        if url_password:
            secrets.append(url_password)
    return secrets


def module_scrubber(module, password=None, headers=None, urls=()):
    """The Scrubber of a module's secrets, which Ansible also masks wherever it echoes the
    module's arguments (``no_log_values``): the password, header values, URL passwords."""
    scrub = Scrubber(secrets_of(password, headers, urls))
    module.no_log_values.update(scrub.secrets)
    return scrub
