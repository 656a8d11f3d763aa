# -*- coding: utf-8 -*-
# pylint: disable=unused-import  # false positive: astroid's stdlib-http brain adds IntEnum/namedtuple imports to any module named http
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Option docs shared by the modules that make HTTP requests."""
from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r'''
options:
  url_username:
    description:
      - User name for HTTP basic authentication (a Zope manager, for pages that need one).
    type: str
  url_password:
    description:
      - Password for HTTP basic authentication. Never shown in results, errors or logs.
    type: str
  headers:
    description:
      - Extra request headers sent to every URL, for example C(Authorization).
      - Their values are treated as secrets; they never appear in results or errors.
    type: dict
    default: {}
  request_timeout:
    description:
      - Seconds one request may take (connect and answer) before it counts as failed and is
        retried. Never longer than what is left of the overall deadline.
    type: float
    default: 10
  validate_certs:
    description:
      - Whether HTTPS certificates must be valid. Set V(false) only for self-signed test
        certificates.
    type: bool
    default: true
'''
