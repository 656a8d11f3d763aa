"""input_problems: the operator's variables checked before the lock, each bad value named."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.zopeops.stages.plugins.filter.inputs import input_problems


def test_valid_values_pass_as_given_on_the_command_line_or_typed():
    assert input_problems({
        'promote_freeze_timeout': '10', 'promote_catch_up_passes': 6,
        'promote_keep_twin_minutes': '0', 'zopeops_start_timeout': '180',
        'promote_approve': 'false', 'promote_force': True, 'promote_rollback_data': 'yes',
        'zopeops_port_base': '18400', 'promote_lock_lease': None}) == []


def test_each_bad_value_is_named_with_what_is_allowed():
    problems = input_problems({
        'promote_freeze_timeout': '-1', 'promote_catch_up_passes': '0',
        'promote_keep_twin_minutes': 'ten', 'zopeops_start_timeout': '1.5',
        'promote_approve': 'maybe', 'promote_rollback_data': 'sometimes'})
    assert problems == [
        "promote_freeze_timeout is '-1'; give a whole number, 1 or more (seconds a cutover "
        "waits for writes in flight).",
        "promote_catch_up_passes is '0'; give a whole number, 1 or more (passes of the "
        "catch-up before a freeze).",
        "promote_keep_twin_minutes is 'ten'; give a whole number, 0 or more (minutes the "
        "twin keeps running).",
        "zopeops_start_timeout is '1.5'; give a whole number, 1 or more (seconds a Zope "
        "client may take to start).",
        "promote_approve is 'maybe'; give true or false (pause before the first switch).",
        "rollback_data is 'sometimes'; give true or false (a rollback returns the data too)."]


@pytest.mark.parametrize('base', ['abc', '80', '1023', '65487', '', True])
def test_a_port_base_outside_the_unprivileged_range_is_refused(base):
    assert input_problems({'zopeops_port_base': base}) == [
        "zopeops_port_base is '%s'; give a whole number from 1024 to 65486 (the first of the "
        "50 ports the inventory numbers from it)." % base]


@pytest.mark.parametrize('base', ['1024', 65486, ' 18400 '])
def test_a_port_base_in_range_passes(base):
    assert input_problems({'zopeops_port_base': base}) == []


def test_a_name_without_a_rule_or_no_dict_is_an_error():
    with pytest.raises(AnsibleFilterError, match="no rule for 'promote_typo'"):
        input_problems({'promote_typo': 1})
    with pytest.raises(AnsibleFilterError, match='takes a dict'):
        input_problems(['promote_freeze_timeout'])


def test_the_freeze_lease_must_outlast_the_steps_under_it():
    from ansible_collections.zopeops.stages.plugins.filter.inputs import input_problems
    ok = {'promote_freeze_lease': 30, 'promote_lease_margin': 5, 'promote_freeze_timeout': 10}
    assert input_problems(ok) == []
    short = dict(ok, promote_freeze_lease=15)
    assert input_problems(short) == [
        "promote_freeze_lease is '15'; give at least promote_freeze_timeout (10) + "
        "promote_lease_margin (5) + 5 seconds, so that the wait for the source to go idle "
        "and the last replay fit in it."]
    assert 'promote_lease_margin' in input_problems(dict(ok, promote_lease_margin=0))[0]
