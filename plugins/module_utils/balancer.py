# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every request of ``lb_switch`` shares, whatever the balancer: the names of a stage's
sides and backends, the refusal that changed nothing, and the one result every request returns.

The requests themselves: ``haproxy_stage`` (a stage's side, its write freeze, the read-only
view), ``haproxy_server`` (one server's administrative state), ``nginx.switch_stage`` (a
stage's upstream file).
"""
from __future__ import annotations

from ansible_collections.zopeops.stages.plugins.module_utils.options import with_defaults

SIDES = ('live', 'upgrade')

# Every key lb_switch returns (its RETURN documentation), with its value when the request did
# not set it. A list is copied for each result.
RESULT_DEFAULTS = {
    'changed': False, 'before': None, 'after': None, 'healthy_servers': None,
    'drain_seconds': None, 'drained': None, 'writes_in_flight_seconds': None,
    'writes_in_flight': [], 'frozen_at': None, 'switched_at': None, 'unfrozen_at': None,
    'frozen_until': None, 'commands': [], 'files': [], 'warnings': [],
}


def switch_result(**values):
    """The result of one lb_switch request: every documented key, ``values`` set over the
    defaults (``diff`` too when given)."""
    result = {key: list(value) if isinstance(value, list) else value
              for key, value in RESULT_DEFAULTS.items()}
    result.update(values)
    return result


class SwitchError(Exception):
    """A refusal (gate, unknown name, bad input) that changed nothing; carries the result
    keys known so far (``before``, and what a partial request did)."""

    def __init__(self, message, **result):
        super().__init__(message)
        self.result = result


def backend_name(stage, side):
    return 'be_%s_%s' % (stage, side)


def side_of(value, stage):
    """A map value (a backend name) -> the side it names, or the value itself."""
    for side in SIDES:
        if value == backend_name(stage, side):
            return side
    return value


def other_side(side):
    return 'live' if side == 'upgrade' else 'upgrade'


# lb_switch's options (its DOCUMENTATION describes them); lb_cutover asks run_stage with the
# same parameter dicts (switch_params).
ARGUMENT_SPEC = dict(
    balancer=dict(type='str', choices=['haproxy', 'nginx'], default='haproxy'),
    socket=dict(type='str'),
    timeout=dict(type='float', default=5.0),
    stage=dict(type='str'),
    active=dict(type='str', choices=list(SIDES)),
    frozen=dict(type='bool'),
    map_file=dict(type='path'),
    frozen_map_file=dict(type='path'),
    gate=dict(type='bool', default=True),
    gate_timeout=dict(type='float', default=15.0),
    drain_timeout=dict(type='float', default=30.0),
    fail_on_drain_timeout=dict(type='bool', default=False),
    drain_other=dict(type='bool', default=False),
    wait_writes=dict(type='float', default=0.0),
    lease=dict(type='float', default=30.0),
    lease_margin=dict(type='float', default=5.0),
    under_freeze=dict(type='bool', default=False),
    gate_side=dict(type='str', choices=list(SIDES)),
    wait_healthy=dict(type='float', default=0.0),
    frontend_url=dict(type='str'),
    backend=dict(type='str'),
    server=dict(type='str'),
    state=dict(type='str', choices=['ready', 'drain', 'maint']),
    min_others_up=dict(type='int', default=0),
    wait_up=dict(type='float', default=0.0),
    nginx_conf=dict(type='path', default='/etc/nginx/nginx.conf'),
    nginx_include=dict(type='path'),
    nginx_binary=dict(type='str', default='nginx'),
    nginx_pid_file=dict(type='path'),
    nginx_prefix=dict(type='path'),
    servers=dict(type='list', elements='raw'),
    server_options=dict(type='str', default=''),
    health_path=dict(type='str', default='/'),
)


def switch_params(**given):
    """A full parameter dict of an lb_switch request: its defaults, ``given`` over them."""
    return with_defaults(ARGUMENT_SPEC, given, 'lb_switch')
