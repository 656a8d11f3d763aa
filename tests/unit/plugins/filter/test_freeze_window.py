"""freeze_window: one cutover's write freeze, from lb_switch's loop results."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.zopeops.stages.plugins.filter.promotion import freeze_window

SKIPPED = {'skipped': True, 'changed': False}


def test_two_balancers_the_freeze_lasts_until_the_last_unfreeze():
    """Both balancers froze, switched (their switch leaves the freeze: unfrozen_at null), then
    the freeze was lifted on each: from the first freeze to the last lift."""
    freezes = [{'frozen_at': 100.0}, {'frozen_at': 100.5}]
    switches = [{'unfrozen_at': None, 'switched_at': 101.0},
                {'unfrozen_at': None, 'switched_at': 101.2}]
    unfreezes = [{'unfrozen_at': 101.5}, {'unfrozen_at': 101.75}]
    assert freeze_window('cutover_to_twin', freezes, switches, unfreezes) == {
        'switch': 'cutover_to_twin', 'frozen_seconds': 1.75, 'replayed': 0,
        'replayed_frozen': 0}


def test_one_balancer_with_a_catch_up_the_switch_lifts_it():
    window = freeze_window('cutover_to_live', [{'frozen_at': 10.0}], [{'unfrozen_at': 10.25}],
                           [], 7, 2)
    assert window == {'switch': 'cutover_to_live', 'frozen_seconds': 0.25, 'replayed': 9,
                      'replayed_frozen': 2}


def test_no_freeze_is_zero_seconds():
    assert freeze_window('cutover_to_twin', [SKIPPED], [{'unfrozen_at': None}], [SKIPPED]) == {
        'switch': 'cutover_to_twin', 'frozen_seconds': 0}
    assert freeze_window('cutover_to_twin') == {'switch': 'cutover_to_twin',
                                                'frozen_seconds': 0}


def test_a_freeze_nobody_lifted_is_an_error():
    with pytest.raises(AnsibleFilterError, match='no switch or unfreeze call'):
        freeze_window('cutover_to_live', [{'frozen_at': 1.0}], [{'unfrozen_at': None}])
