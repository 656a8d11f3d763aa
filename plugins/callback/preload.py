# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
name: preload
type: aggregate
short_description: Loads the collection's filter and action plugins once, before Ansible forks its workers
version_added: 0.7.0
author:
  - zopeops.stages developers (@zopeops)
description:
  - "Ansible runs each task of each host in a worker process forked from C(ansible-playbook).
    A worker that templates any C(zopeops.stages) filter first imports every filter file of the
    collection (Ansible's loader looks through all of them), and the collection loader compiles
    each from source: about 0.1-0.3 s of the controller's CPU per task and host on a quiet
    machine, more under load, paid again in every worker. The pipeline role's per-host facts
    and most of a promotion's tasks use such filters."
  - "This callback does that work once in C(ansible-playbook) itself when the run starts (the
    collection's filter plugins, with the module_utils they import, and its action plugins), so
    every worker forked afterwards finds them loaded. It prints nothing and changes no result;
    a plugin that fails to load here is left to fail where a task uses it, as before."
  - "Enable it with C(callbacks_enabled = zopeops.stages.preload) in C(ansible.cfg) (the
    checkout's does) or C(ANSIBLE_CALLBACKS_ENABLED). Without it the playbooks work the same,
    only slower."
requirements:
  - enabled in callbacks_enabled
'''

from ansible.plugins.callback import CallbackBase
from ansible.plugins.loader import action_loader, filter_loader

COLLECTION = 'zopeops.stages'
# Any filter name makes the loader import every filter file of the collection.
A_FILTER = 'redact'
# The collection's action plugins (plugins/action/).
ACTIONS = ('promotion_state',)


def preload():
    """Import the collection's filter and action plugins into this process; return the names
    that did not load (they fail again, with Ansible's own message, where a task uses them)."""
    missed = []
    try:
        if filter_loader.get('%s.%s' % (COLLECTION, A_FILTER)) is None:
            missed.append(A_FILTER)
    except Exception:  # pylint: disable=broad-exception-caught
        missed.append(A_FILTER)
    for name in ACTIONS:
        try:
            if action_loader.get('%s.%s' % (COLLECTION, name), class_only=True) is None:
                missed.append(name)
        except Exception:  # pylint: disable=broad-exception-caught
            missed.append(name)
    return missed


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'zopeops.stages.preload'
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_start(self, playbook):
        missed = preload()
        if missed:
            self._display.vvv('zopeops.stages.preload: not preloaded: %s' % ', '.join(missed))
