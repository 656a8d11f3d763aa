"""module_utils/cutover.py: the order of a one-balancer cutover's requests, the deadlines its
replays get, and where a failure at each step leaves the traffic (the rules of
cutover_rescue.yml). HAProxy and the replays are recorded fakes here; tests/integration/lb/
test_lb_cutover.py runs the real ones."""
from __future__ import annotations

import pytest

from ansible_collections.zopeops.stages.plugins.module_utils import cutover as co
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils.balancer import (
    SwitchError, switch_result)

BASE = '00000000000000a0'
PARAMS = dict(socket='/run/h.sock', timeout=5.0, stage='test', to='upgrade',
              map_file='/lb/active.map', frozen_map_file='/lb/frozen.map', lease=30.0,
              lease_margin=5.0, freeze_timeout=10.0, gate_timeout=60.0, drain_timeout=30.0,
              recover_timeout=0.0, hold_frozen=0.0, source='/s/Data.fs',
              source_blob_dir='/s/blobs', source_config=None, after_tid=BASE, target_tid=None,
              passes=4, settle=5, zeo_address='127.0.0.1:1', target_config=None, storage='1',
              zeo_timeout=30.0)


def tid(number):
    return '%016x' % number


class Balancer:
    """lb_switch's run_stage on a stage: records each request, keeps side and freeze."""

    def __init__(self, active='live', fail=None):
        self.active, self.frozen, self.requests, self.fail = active, False, [], fail or {}
        self.clock = 1000.0

    def __call__(self, params, check_mode):
        self.clock += 0.01
        kind = ('switch' if params['active'] else 'freeze' if params['frozen'] else 'read')
        self.requests.append((kind, params, check_mode))
        error = self.fail.get(len(self.requests))
        if isinstance(error, Exception):
            raise error
        before = {'active': self.active, 'frozen': self.frozen}
        values = {}
        if not check_mode:
            if params['frozen'] is True:
                values['frozen_at'] = None if self.frozen else self.clock
                self.frozen = True
            if params['active']:
                values['switched_at'] = self.clock if self.active != params['active'] else None
                self.active = params['active']
                values.update(drained=True, drain_seconds=0.01)
                if params['under_freeze']:
                    self.frozen = True
            if params['frozen'] is False:
                values['unfrozen_at'] = self.clock if self.frozen else None
                self.frozen = False
        after = {'active': self.active, 'frozen': self.frozen,
                 'frozen_until': 1030.0 + len(self.requests) if self.frozen else None}
        return switch_result(before=before, after=after, frozen_until=after['frozen_until'],
                             changed=(self.active, self.frozen)
                             != (before['active'], before['frozen']),
                             **values)


class Replays:
    """replay_from's stand-in: each call copies the next count of ``tails``, or raises."""

    def __init__(self, tails, settled=True):
        self.tails, self.settled, self.calls, self.last = list(tails), settled, [], 0xa0

    def __call__(self, params, check_mode, result, source, target):
        self.calls.append(params)
        step = self.tails.pop(0) if self.tails else 0
        if isinstance(step, BaseException):
            raise step  # pylint: disable=raising-bad-type
        result.update(transactions=step, changed=bool(step), after_tid=params['after_tid'])
        if step and not check_mode:
            self.last += step
            result.update(first_tid=tid(self.last - step + 1), last_tid=tid(self.last))
        if params['passes'] > 1:
            result['settled'] = self.settled


class Source:
    where = '/s/Data.fs'

    def __init__(self, tail=()):
        self.late = list(tail)

    def tail(self, after, until):
        return [(bytes.fromhex(t), 0, 0) for t in self.late]


class Target:
    where = 'the ZEO server at 127.0.0.1:1'

    def __init__(self, held=()):
        self.held = [bytes.fromhex(t) for t in held]

    def tids_after(self, after):
        return self.held


def run(monkeypatch, balancer, replays, check_mode=False, source=None, target=None, **params):
    monkeypatch.setattr(co.core, 'replay_from', replays)
    cutover = co.Cutover(dict(PARAMS, **params), check_mode, balancer, source or Source(),
                         target or Target(), sleep=lambda s: None)
    return cutover.run()


def test_one_call_runs_the_steps_in_order_with_the_lease_deadlines(monkeypatch):
    balancer, replays = Balancer(), Replays([12, 2, 1])
    result = run(monkeypatch, balancer, replays)
    kinds = [(kind, p['gate_side'], p['wait_writes'], p['under_freeze'], p['frozen'],
              p['drain_other']) for kind, p, _check in balancer.requests]
    assert kinds == [('read', None, 0.0, False, None, False),
                     ('freeze', 'upgrade', 10.0, False, True, False),
                     ('switch', None, 0.0, True, None, False),
                     ('switch', None, 0.0, False, False, True)]
    gap, final, late = replays.calls
    assert gap['passes'] == 4 and gap['not_after'] is None and gap['after_tid'] == BASE
    # the final replay starts after the gap's last tid and stops before the freeze's lease
    # (1030 + 2 requests) minus its margin; the late one before the renewed lease's
    assert final['after_tid'] == final['target_tid'] == tid(0xa0 + 12)
    assert final['not_after'] == 1032.0 - 5.0
    assert late['after_tid'] == tid(0xa0 + 14) and late['not_after'] == 1033.0 - 5.0
    assert result['traffic_on'] == 'upgrade' and result['frozen'] is False
    assert result['last_tid'] == tid(0xa0 + 15)
    assert result['transactions'] == 15 and result['transactions_frozen'] == 3
    assert result['freeze_seconds'] == round(result['unfrozen_at'] - result['frozen_at'], 3)
    assert result['frozen_at'] < result['switched_at'] < result['unfrozen_at']
    assert set(result['steps']) >= {'gap', 'freeze', 'final', 'switch', 'late', 'unfreeze'}


def test_a_catch_up_that_did_not_settle_freezes_nothing(monkeypatch):
    balancer = Balancer()
    with pytest.raises(co.CutoverFailed) as failed:
        run(monkeypatch, balancer, Replays([40], settled=False))
    assert 'did not keep up' in str(failed.value) and 'Nothing was frozen' in str(failed.value)
    assert [kind for kind, _p, _c in balancer.requests] == ['read']
    assert failed.value.result['traffic_on'] == 'live'


@pytest.mark.parametrize('fail', [
    {'replay': zu.ZODBDataError('ClientDisconnected: the target went away')},  # final replay
    {'lb': {2: SwitchError('Refusing to switch: not every server is UP')}},     # the gate
    {'lb': {3: SwitchError('its lease has only 1.0s left')}},                   # switch refused
    {'replay_late': zu.ZODBDataError('its last transaction is 00000000000000ff, not ...')},
])
def test_a_failure_under_the_freeze_puts_the_traffic_back_unfrozen(monkeypatch, fail):
    balancer = Balancer(fail=fail.get('lb'))
    tails = [3, fail['replay']] if 'replay' in fail else [3, 1, fail['replay_late']] \
        if 'replay_late' in fail else [3, 1, 0]
    with pytest.raises(co.CutoverFailed) as failed:
        run(monkeypatch, balancer, Replays(tails))
    result = failed.value.result
    assert result['traffic_on'] == 'live' and result['frozen'] is False, result
    assert result['rolled_forward'] is False
    message = str(failed.value)
    # the gate refused before the freeze was set: nothing to put back
    assert ('stays on live' if 'lb' in fail and 2 in fail['lb'] else 'put back on live') in message
    assert 'nothing is lost' in message
    kind, last, _check = balancer.requests[-1]
    assert kind == 'switch' and last['active'] == 'live' and last['frozen'] is False
    assert balancer.active == 'live' and balancer.frozen is False


class OperationalError(Exception):
    """psycopg2's name: the replay's PostgreSQL connection refused or dropped."""


def test_a_postgresql_server_lost_under_the_freeze_is_named_with_what_to_do(monkeypatch):
    from ansible_collections.zopeops.stages.plugins.module_utils import zodb_replay_core as core
    lost = core.TransactionFailed(b'\0' * 8, OperationalError(
        'connection to server at "127.0.0.1", port 5432 failed: FATAL:  the database system '
        'is shutting down'))
    balancer = Balancer()
    with pytest.raises(co.CutoverFailed) as failed:
        run(monkeypatch, balancer, Replays([3, lost]))
    message = str(failed.value)
    assert 'port 5432 failed' in message and 'put back on live' in message, message
    assert 'PostgreSQL server is stopped or does not accept connections: start it' in message
    other = core.TransactionFailed(b'\0' * 8, ValueError('a bad record'))
    with pytest.raises(co.CutoverFailed) as failed:
        run(monkeypatch, Balancer(), Replays([3, other]))
    assert 'PostgreSQL' not in str(failed.value)


def test_ctrl_c_under_the_freeze_puts_the_traffic_back_at_once(monkeypatch):
    balancer = Balancer()
    with pytest.raises(co.CutoverFailed) as failed:
        run(monkeypatch, balancer, Replays([3, KeyboardInterrupt()]))
    assert str(failed.value).startswith('Interrupted (SIGINT).')
    assert balancer.active == 'live' and balancer.frozen is False


def test_a_source_still_busy_after_the_switch_is_reported_and_the_late_replay_runs(monkeypatch):
    balancer, replays = Balancer(), Replays([3, 0, 2])
    original = balancer.__call__

    def busy(params, check_mode):
        answer = original(params, check_mode)
        if params['under_freeze']:
            answer.update(drained=False, drain_seconds=10.0)
        return answer
    result = run(monkeypatch, busy, replays)
    assert result['source_idle'] is False and result['source_idle_seconds'] == 10.0
    assert result['traffic_on'] == 'upgrade' and result['transactions_frozen'] == 2


def test_a_drill_hold_sleeps_after_the_switch_before_the_late_replay(monkeypatch):
    balancer, replays, slept = Balancer(), Replays([3, 0, 0]), []
    monkeypatch.setattr(co.core, 'replay_from', replays)

    def sleep(seconds):
        slept.append((seconds, balancer.active, balancer.frozen, len(replays.calls)))
    cutover = co.Cutover(dict(PARAMS, hold_frozen=2.0), False, balancer, Source(), Target(),
                         sleep=sleep)
    cutover.run()
    assert slept == [(2.0, 'upgrade', True, 2)]  # switched, frozen, before the late replay


def test_a_failure_after_the_unfreeze_rolls_forward(monkeypatch):
    # the unfreeze lifted the freeze on the target, then failed: writes may have reached it
    balancer = Balancer()
    original = balancer.__call__

    def lifts_then_fails(params, check_mode):
        answer = original(params, check_mode)
        if params['drain_other']:
            raise SwitchError('HAProxy went away during the drain')
        return answer
    source = Source([tid(0xa0 + 5)])  # the source committed one more than the target holds
    with pytest.raises(co.CutoverFailed) as failed:
        run(monkeypatch, lifts_then_fails, Replays([3, 1, 0, 1]), source=source)
    result = failed.value.result
    assert result['rolled_forward'] is True and result['traffic_on'] == 'upgrade'
    assert 'ROLLED FORWARD' in str(failed.value) and result['last_tid'] == tid(0xa0 + 5)
    assert result['diverged'] is False
    assert balancer.active == 'upgrade' and balancer.frozen is False


def test_an_unreadable_balancer_after_a_failure_leaves_the_traffic_and_says_so(monkeypatch):
    down = SwitchError('connection refused')
    balancer = Balancer(fail={3: down, 4: down, 5: down})
    with pytest.raises(co.CutoverFailed) as failed:
        run(monkeypatch, balancer, Replays([3, 0]))
    assert failed.value.result['traffic_on'] is None
    assert 'could not be read' in str(failed.value)


def test_already_on_the_target_with_every_transaction_changes_nothing(monkeypatch):
    balancer, replays = Balancer(active='upgrade'), Replays([])
    held = [tid(0xa1), tid(0xa2)]
    result = run(monkeypatch, balancer, replays, source=Source(held),
                 target=Target(held + [tid(0xb0)]))  # and writes of its own since
    assert result['changed'] is False and result['traffic_on'] == 'upgrade'
    assert [kind for kind, _p, _c in balancer.requests] == ['read'] and replays.calls == []
    assert result['last_tid'] == tid(0xa2)


def test_check_mode_counts_and_changes_nothing(monkeypatch):
    balancer, replays = Balancer(), Replays([7])
    result = run(monkeypatch, balancer, replays, check_mode=True)
    assert all(check for _kind, _p, check in balancer.requests)
    assert balancer.frozen is False and balancer.active == 'live'
    assert result['traffic_on'] == 'live' and 'Would catch' in result['msg']
