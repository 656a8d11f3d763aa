# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by modules that talk to the HAProxy runtime API."""
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  socket:
    description:
      - Where HAProxy's runtime API listens, the path of its C(stats socket) (also written
        C(unix@/path)), or C(ipv4@host:port) for a TCP C(stats socket).
      - The socket must be at C(level admin) for server states; the zopeops haproxy role puts
        it at C(<runtime_dir>/haproxy.sock), mode 0600, never on a public address.
      - Required when O(balancer=haproxy).
    type: str
  timeout:
    description:
      - Seconds to wait for HAProxy to accept a connection and finish one answer. A wedged
        HAProxy then fails the task instead of hanging the playbook.
    type: float
    default: 5.0
"""
