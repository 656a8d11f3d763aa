# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Option docs shared by the modules that drive supervisord or systemd."""
from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r'''
options:
  process_manager:
    description:
      - Which process manager runs the program.
      - V(supervisord) where there is no systemd (the sandbox, containers, CI); V(systemd) on
        production hosts. The inventory's C(zopeops_process_manager) chooses.
    type: str
    choices: [supervisord, systemd]
    default: supervisord
  supervisor_config:
    description:
      - Path to the C(supervisord.conf) that C(supervisorctl -c) reads to find the running
        supervisord (its C([supervisorctl] serverurl) or C([unix_http_server] file)).
      - Without it, supervisorctl searches its default places, which is rarely what you want.
      - Ignored with O(process_manager=systemd).
    type: path
  supervisorctl:
    description:
      - Path to the C(supervisorctl) program.
      - Default is the C(supervisorctl) beside the Python that runs the module (the same
        virtualenv), else the first one on C(PATH).
      - Ignored with O(process_manager=systemd).
    type: path
'''
