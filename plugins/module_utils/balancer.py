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
