# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: pipeline_model
short_description: The validated topology of a zopeops.stages pipeline
version_added: 0.1.0
description:
  - Reads the inventory's groups and host variables and returns every stage of the pipeline
    with its predecessor, its live side and its upgrade twin (ZEO server and Zope clients with
    their addresses and ports), its load-balancer port and its data policy.
  - Fails naming every problem at once, for example a stage without hosts, a twin without a ZEO
    host, or a port given twice on one machine.
options:
  _input:
    description: The C(groups) magic variable.
    type: dict
    required: true
  hostvars:
    description: The C(hostvars) magic variable.
    type: dict
    required: true
  pipeline:
    description: The stages in order, C(zopeops_pipeline).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Read the pipeline.
  ansible.builtin.set_fact:
    zopeops_model: "{{ groups | zopeops.stages.pipeline_model(hostvars, zopeops_pipeline) }}"
"""

RETURN = r"""
_value:
  description: C(pipeline), C(lb_hosts) and C(stages), a dict of stage name to its model.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.zopeops.stages.plugins.module_utils.pipeline import (
    PipelineError, build_model, check_urls)


def pipeline_model(groups, hostvars, pipeline):
    try:
        return build_model(dict(groups), hostvars, list(pipeline or []))
    except PipelineError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {'pipeline_model': pipeline_model, 'pipeline_check_urls': check_urls}
