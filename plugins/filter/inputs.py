# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The input_problems filter: every variable an operator passes with -e, checked in one place
before anything is locked or changed. Its documentation is in input_problems.yml."""
from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

# The listeners of an inventory that numbers its ports from zopeops_port_base use offsets
# 0..PORT_SPAN-1 (inventories/local: 0-3 the stages' frontends, 10-49 ZEO and Zope).
PORT_SPAN = 50

# name -> (kind, least, most, what it is). Kinds: 'int' (a whole number), 'bool'.
RULES = {
    'promote_freeze_timeout': ('int', 1, None, 'seconds a cutover waits for writes in flight'),
    'promote_catch_up_passes': ('int', 1, None, 'passes of the catch-up before a freeze'),
    'promote_freeze_lease': ('int', 5, 3600, 'seconds after which HAProxy lifts a write freeze '
                             'by itself'),
    'promote_lease_margin': ('int', 1, 600, 'seconds of the lease a switch needs left'),
    'promote_ready_timeout': ('int', 1, None, 'seconds a started service may take'),
    'zopeops_start_timeout': ('int', 1, None, 'seconds a Zope client may take to start'),
    'promote_gate_timeout': ('int', 1, None, "seconds a switch waits for HAProxy's checks"),
    'promote_drain_timeout': ('int', 0, None, 'seconds the old side may take to drain'),
    'promote_keep_twin_minutes': ('int', 0, None, 'minutes the twin keeps running'),
    'promote_lock_lease': ('int', 1, None, "seconds a lock's heartbeat may be old"),
    'promote_keep_previous_data': ('int', 0, None, 'previous data pairs kept'),
    'promote_approve': ('bool', None, None, 'pause before the first switch'),
    'promote_force': ('bool', None, None, 'go through the twin even when nothing changes'),
    'promote_break_lock': ('bool', None, None, 'take over any lock'),
    'promote_pack': ('bool', None, None, "pack the twin's copy"),
    'promote_rollback_data': ('bool', None, None, 'a rollback returns the data too'),
    'zopeops_port_base': ('int', 1024, 65535 - (PORT_SPAN - 1),
                          'the first of the %d ports the inventory numbers from it' % PORT_SPAN),
}
# What -e names a variable by, where the role reads it from another name.
GIVEN_AS = {'promote_rollback_data': 'rollback_data'}

_INT = re.compile(r'^[+-]?\d+$')
_BOOLS = ('true', 'false', 'yes', 'no', 'on', 'off', '1', '0')


def _as_int(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if _INT.match(text) else None


def check(name, value):
    """One variable's value -> '' when it is valid, else a sentence naming the variable, the
    value and what is allowed."""
    if name not in RULES:
        raise AnsibleFilterError('input_problems: no rule for %r; the rules are for %s.'
                                 % (name, ', '.join(sorted(RULES))))
    kind, least, most, what = RULES[name]
    shown = GIVEN_AS.get(name, name)
    if kind == 'bool':
        if isinstance(value, bool) or str(value).strip().lower() in _BOOLS:
            return ''
        return "%s is '%s'; give true or false (%s)." % (shown, value, what)
    number = _as_int(value)
    if number is not None and (least is None or number >= least) and (
            most is None or number <= most):
        return ''
    if most is not None:
        allowed = 'a whole number from %d to %d' % (least, most)
    else:
        allowed = 'a whole number, %d or more' % least
    return "%s is '%s'; give %s (%s)." % (shown, value, allowed, what)


def input_problems(values):
    """{variable: value} -> the list of problems (empty when every value is valid). A value
    of None (the variable is not set) is not checked."""
    if not isinstance(values, dict):
        raise AnsibleFilterError('input_problems takes a dict of variable names and values, '
                                 'not %s.' % type(values).__name__)
    problems = []
    for name in values:
        if values[name] is None:
            continue
        problem = check(name, values[name])
        if problem:
            problems.append(problem)
    if not problems:
        problems.extend(_lease_problems(values))
    return problems


def _lease_problems(values):
    """The freeze's lease must outlast the steps under it: the wait for the source to go idle
    (promote_freeze_timeout) and a replay, after the margin a switch needs."""
    lease, margin, wait = (values.get(name) for name in (
        'promote_freeze_lease', 'promote_lease_margin', 'promote_freeze_timeout'))
    if None in (lease, margin, wait):
        return []
    lease, margin, wait = _as_int(lease), _as_int(margin), _as_int(wait)
    if lease >= wait + margin + 5:
        return []
    return ["promote_freeze_lease is '%d'; give at least promote_freeze_timeout (%d) + "
            "promote_lease_margin (%d) + 5 seconds, so that the wait for the source to go idle "
            "and the last replay fit in it." % (lease, wait, margin)]


class FilterModule:
    def filters(self):
        return {'input_problems': input_problems}
