"""The cutover_rescue filter: roll forward exactly when the target may hold a write."""
from __future__ import annotations

from ansible_collections.zopeops.stages.plugins.filter.promotion import cutover_rescue


def view(lb, active, frozen):
    return {'item': lb, 'after': {'active': active, 'frozen': frozen}, 'changed': False}


def test_every_balancer_on_the_source_or_frozen_on_the_target_goes_back():
    decision = cutover_rescue('upgrade', [view('lb1', 'upgrade', True), view('lb2', 'live', False)])
    assert decision == {'roll_forward': False, 'open_on_target': [], 'unfreeze_ran': False,
                        'unread': []}


def test_a_balancer_open_on_the_target_rolls_forward():
    decision = cutover_rescue('upgrade', [view('lb1', 'upgrade', False),
                                          view('lb2', 'live', True)])
    assert decision['roll_forward'] is True and decision['open_on_target'] == ['lb1']
    # the same the other way round (the switch back to the stage)
    assert cutover_rescue('live', [view('lb1', 'live', False)])['roll_forward'] is True
    assert cutover_rescue('live', [view('lb1', 'upgrade', False)])['roll_forward'] is False


def test_an_unfreeze_that_ran_rolls_forward_even_if_no_balancer_answers():
    unread = [{'item': 'lb1', 'failed': True, 'msg': 'connection refused'}]
    decision = cutover_rescue('upgrade', unread, [{'item': 'lb1', 'failed': True}])
    assert decision['roll_forward'] is True and decision['unread'] == ['lb1']
    skipped = [{'item': 'lb1', 'skipped': True}]
    assert cutover_rescue('upgrade', unread, skipped)['roll_forward'] is False


def test_nothing_known_goes_back():
    assert cutover_rescue('upgrade')['roll_forward'] is False
