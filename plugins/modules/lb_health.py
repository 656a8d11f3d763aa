#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: lb_health
short_description: Read which servers of every stage's active side pass HAProxy's health checks, in one call
version_added: 0.10.0
description:
  - A read-only query of HAProxy's runtime API for several stages at once. For each stage of
    O(stages) it reads the side its C(use_backend) rule chooses (the entry of O(map_file)) and
    the servers of that side that pass their health checks, as M(zopeops.stages.lb_switch)'s
    read-only query does for one stage.
  - With O(wait_healthy) it waits, for each stage in turn, until a server of its active side
    passes (it stops waiting for a stage once every server of it was checked and is C(DOWN)),
    and warns for each stage that has none, naming the stage and its URL in O(frontend_urls);
    that frontend answers 503 to everyone.
  - C(site.yml) asks it once for the whole pipeline, instead of one M(zopeops.stages.lb_switch)
    call per stage.
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  socket:
    description:
      - Where HAProxy's runtime API listens, the path of its C(stats socket) (also written
        C(unix@/path)), or C(ipv4@host:port) for a TCP C(stats socket).
    type: str
    required: true
  timeout:
    description: Seconds to wait for HAProxy to accept a connection and finish one answer.
    type: float
    default: 5.0
  map_file:
    description:
      - The map file that the stages' C(use_backend) rules read, exactly as HAProxy loaded it
        (C(show map) lists it). A stage without an entry is on its live side.
    type: path
    required: true
  stages:
    description: The stages to read, in order.
    type: list
    elements: str
    required: true
  frontend_urls:
    description: Each stage's URL through the load balancer (by stage), named in its warning.
    type: dict
    default: {}
  wait_healthy:
    description:
      - Wait at most this many seconds, for each stage, until a server of its active side
        passes HAProxy's health checks, then warn for each stage where none does. A server
        HAProxy has not checked yet counts as not passing. V(0) reads the state as it is and
        does not warn. Check mode does not wait.
    type: float
    default: 0.0
attributes:
  check_mode:
    support: full
    details: Reads only, as outside check mode, but does not wait.
  diff_mode:
    support: none
  platform:
    platforms: posix
    support: full
seealso:
  - module: zopeops.stages.lb_switch
"""

EXAMPLES = r"""
- name: Warn about a stage whose frontend has no healthy backend.
  zopeops.stages.lb_health:
    socket: /srv/zopeops/run/haproxy.sock
    map_file: /srv/zopeops/lb/etc/active.map
    stages: [dev, prod]
    frontend_urls:
      dev: http://127.0.0.1:8000/
      prod: http://127.0.0.1:8003/
    wait_healthy: 15
"""

RETURN = r"""
stages:
  description:
    - Per stage, C(active) (the side that takes its traffic) and C(healthy_servers) (the
      servers of that side that pass their health checks).
  returned: always
  type: dict
  sample: {dev: {active: live, healthy_servers: [dev-client1]}}
unhealthy:
  description: The stages whose active side has no server that passes (with O(wait_healthy)).
  returned: always
  type: list
  elements: str
  sample: [prod]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zopeops.stages.plugins.module_utils.balancer import (
    SwitchError, switch_params)
from ansible_collections.zopeops.stages.plugins.module_utils.haproxy import (
    HAProxyError, RuntimeAPI)
from ansible_collections.zopeops.stages.plugins.module_utils.haproxy_stage import StageCall


def run(params, check_mode, api_factory=RuntimeAPI):
    """Each stage read through one runtime API connection setting: (stages, unhealthy,
    warnings)."""
    api = api_factory(params['socket'], timeout=params['timeout'])
    stages, unhealthy, warnings = {}, [], []
    for stage in params['stages']:
        call = StageCall(api, switch_params(
            socket=params['socket'], stage=stage, map_file=params['map_file'],
            wait_healthy=params['wait_healthy'],
            frontend_url=(params['frontend_urls'] or {}).get(stage)), check_mode)
        call.read()
        call.query()
        healthy = call.values['healthy_servers']
        stages[call.stage] = {'active': call.before['active'], 'healthy_servers': healthy}
        if params['wait_healthy'] > 0 and not healthy:
            unhealthy.append(call.stage)
        warnings.extend(call.warnings)
    return stages, unhealthy, warnings


def main():
    module = AnsibleModule(
        argument_spec=dict(
            socket=dict(type='str', required=True),
            timeout=dict(type='float', default=5.0),
            map_file=dict(type='path', required=True),
            stages=dict(type='list', elements='str', required=True),
            frontend_urls=dict(type='dict', default={}),
            wait_healthy=dict(type='float', default=0.0),
        ),
        supports_check_mode=True,
    )
    if module.params['wait_healthy'] < 0:
        module.fail_json(msg='wait_healthy must be 0 or a number of seconds, not %s.'
                             % module.params['wait_healthy'])
    try:
        stages, unhealthy, warnings = run(module.params, module.check_mode)
    except (SwitchError, HAProxyError) as exc:
        module.fail_json(msg=str(exc))
    for warning in warnings:
        module.warn(warning)
    module.exit_json(changed=False, stages=stages, unhealthy=unhealthy)


if __name__ == '__main__':
    main()
