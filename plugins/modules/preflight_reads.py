#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: preflight_reads
short_description: Everything one host says to a promotion's preflight, in one call
version_added: 0.7.0
description:
  - "A promotion's preflight (C(roles/promote/tasks/preflight_reads.yml)) runs this once on
    every host of the run at the same time: the host's reads cost one round instead of one
    task after another. It is an action plugin: the reads below run on the host through the
    task's connection, as their own tasks would."
  - "O(balancer): the balancer's view of the stage (C(zopeops.stages.lb_switch) read-only:
    which side takes the traffic, the freeze, the servers)."
  - "O(json_files): JSON files on the host (the stages' C(deployed.json)), read with C(cat);
    a missing file is V(null)."
  - "O(health): the predecessor's clients on the host (C(zopeops.stages.pipeline_status): healthy,
    and the revision they run)."
  - "O(idle): whether the twin's programs on the host are stopped (C(zopeops.stages.zeo_service)
    with C(state=stopped), always in check mode: it changes nothing)."
  - "A host given none of the module reads is pinged (C(ansible.builtin.ping)), unless it is
    reached without a connection (C(ansible_connection=local)): every host of the run proves
    that it answers."
  - "A read that fails is an answer: its module's result (C(failed), C(msg)) is returned and
    the task does not fail. The preflight judges the answers
    (C(zopeops.stages.preflight_reads_problem), C(zopeops.stages.preflight_problem)). A host
    that cannot be reached makes the task unreachable."
options:
  balancer:
    description: The options of a read-only C(zopeops.stages.lb_switch) call (C(socket),
      C(map_file), C(frozen_map_file), C(stage)); no read when omitted.
    type: dict
  json_files:
    description: Name -> path of JSON files to read on the host (the stage -> its
      C(deployed.json)).
    type: dict
    default: {}
  health:
    description: The options of a C(zopeops.stages.pipeline_status) call; no read when omitted.
    type: dict
  idle:
    description: The options of a C(zopeops.stages.zeo_service) call with C(state=stopped), run in
      check mode; no read when omitted.
    type: dict
attributes:
  action:
    support: full
    details: An action plugin; the module reads run on the host.
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: Changes nothing in any mode; the balancer and health reads run as they do outside
      check mode, the twin's check always in check mode.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
seealso:
  - module: zopeops.stages.lb_switch
  - module: zopeops.stages.pipeline_status
  - module: zopeops.stages.zeo_service
author:
  - zopeops.stages developers (@zopeops)
"""

EXAMPLES = r"""
- name: Read what the balancer and the stage's ZEO host say, in one call per host.
  zopeops.stages.preflight_reads:
    balancer: "{{ {'socket': zopeops_lb.socket, 'map_file': zopeops_lb.active_map,
                   'frozen_map_file': zopeops_lb.frozen_map, 'stage': 'test'}
                  if inventory_hostname in groups['lb'] else omit }}"
    json_files: {test: "{{ zopeops_root }}/test/deployed.json"}
  register: reads
  ignore_unreachable: true
"""

RETURN = r"""
balancer:
  description: The C(lb_switch) result (C(before), C(healthy_servers), ...), or null without
    O(balancer).
  returned: always
  type: dict
files:
  description: Name (as in O(json_files)) -> the file's JSON object, null when the file is
    missing or not a JSON object.
  returned: always
  type: dict
  sample: {beta: {revision: 0123abc}}
file_errors:
  description: Name -> the path and why a file that exists is not read as a JSON object.
  returned: always
  type: dict
health:
  description: The C(pipeline_status) result, or null without O(health).
  returned: always
  type: dict
idle:
  description: The C(zeo_service) check-mode result, or null without O(idle).
  returned: always
  type: dict
ran:
  description: The modules run on the host, in order.
  returned: always
  type: list
  elements: str
  sample: [zopeops.stages.lb_switch]
seconds:
  description: How long each read took on the controller's clock (module start included).
  returned: always
  type: dict
  sample: {balancer: 0.31, json_files: 0.01}
reached:
  description: The host answered.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(
        argument_spec=dict(
            balancer=dict(type='dict'),
            json_files=dict(type='dict', default={}),
            health=dict(type='dict'),
            idle=dict(type='dict'),
        ),
        supports_check_mode=True,
    )
    module.fail_json(msg='zopeops.stages.preflight_reads runs as an action plugin: call it as a '
                         'task (zopeops.stages.preflight_reads), not as a module file.')


if __name__ == '__main__':
    main()
