# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cutover of a stage behind ONE balancer, in one process (module ``lb_cutover``).

The steps are those of roles/promote/tasks/cutover.yml (docs/promotion.md, "The cutover"), each
the same request as there: lb_switch's ``run_stage`` with the parameter dict its task gave, and
the replay core of zodb_replay (``zodb_replay_core.replay_from``) between a source and a target
opened once, before the freeze. So the frozen window holds HAProxy's socket round trips and the
transactions replayed, no process start and no task boundary:

    gap passes (source serving) -> settled? -> gate + freeze + writes in flight
    -> final replay (not_after: the lease's deadline minus its margin)
    -> switch under the freeze + wait until nothing is in flight on the source
    -> late replay (the target took no write: refused otherwise, naming both tids)
    -> unfreeze -> drain

A failure inside leaves the balancer either on the source, unfrozen (the target was frozen
wherever it had the traffic: it took no write), or on the target, unfrozen, with the source's
late transactions caught up (``rolled_forward``): the rules of cutover_rescue.yml, decided on
what the balancer says after the failure. The result says which (``traffic_on``).
"""
from __future__ import annotations

import time

from ansible_collections.zopeops.stages.plugins.module_utils.balancer import (
    SwitchError, other_side, switch_params)
from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_format as zfmt
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_replay_core as core
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_storage as zs

# Where a cutover is, for the decision after a failure.
BEFORE_FREEZE, FROZEN, AFTER_UNFREEZE = 'before_freeze', 'frozen', 'after_unfreeze'


class CutoverFailed(Exception):
    """The cutover failed; ``result`` says where the traffic is and what the target holds."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


class Cutover:
    """One cutover of ``params['stage']`` to ``params['to']`` on one HAProxy.

    ``stage_call(params, check_mode)``: lb_switch's request (haproxy_stage.run_stage on a
    RuntimeAPI). ``source`` / ``target``: the replay's ends, opened (zodb_replay_core)."""

    def __init__(self, params, check_mode, stage_call, source, target, clock=time.time,
                 monotonic=time.monotonic, sleep=time.sleep):
        self.params, self.check_mode = params, check_mode
        self.stage_call, self.source, self.target = stage_call, source, target
        self.clock, self.monotonic, self.sleep = clock, monotonic, sleep
        self.to = params['to']
        self.source_side = other_side(self.to)
        self.phase = BEFORE_FREEZE
        self.held = params['after_tid']  # the last source tid the target is known to hold
        self.steps = {}  # step -> seconds
        self.result = {'changed': False, 'traffic_on': None, 'frozen': None,
                       'rolled_forward': False, 'diverged': False, 'frozen_at': None,
                       'switched_at': None, 'unfrozen_at': None, 'freeze_seconds': None,
                       'last_tid': None, 'transactions': 0, 'transactions_frozen': 0,
                       'gap': None, 'final': None, 'late': None, 'writes_in_flight_seconds': None,
                       'source_idle_seconds': None, 'source_idle': None,
                       'drain_seconds': None, 'drained': None,
                       'before': None, 'after': None, 'steps': self.steps}

    # -- the two kinds of request --------------------------------------------------------

    def _lb(self, step, check_mode=None, **given):
        params = self.params
        request = switch_params(socket=params['socket'], timeout=params['timeout'],
                                stage=params['stage'], map_file=params['map_file'],
                                frozen_map_file=params['frozen_map_file'],
                                lease=params['lease'], lease_margin=params['lease_margin'],
                                **given)
        started = self.monotonic()
        try:
            answer = self.stage_call(request, self.check_mode if check_mode is None
                                     else check_mode)
        finally:
            self.steps[step] = round(self.monotonic() - started, 3)
        if answer.get('changed'):
            self.result['changed'] = True
        self.result['after'] = answer.get('after')
        return answer

    def _replay(self, step, after, not_after=None, check_mode=None, **given):
        params = self.params
        request = core.replay_params(
            after_tid=after, target_tid=given.pop('target_tid', after), not_after=not_after,
            zeo_address=params['zeo_address'], target_config=params['target_config'],
            source=params['source'], source_config=params['source_config'],
            source_blob_dir=params['source_blob_dir'], storage=params['storage'],
            zeo_timeout=params['zeo_timeout'], **given)
        answer = core.new_result()
        started = self.monotonic()
        try:
            core.replay_from(request, self.check_mode if check_mode is None else check_mode,
                             answer, self.source, self.target)
        finally:
            answer['seconds'] = self.steps[step] = round(self.monotonic() - started, 3)
            self.result[step] = answer
        if answer.get('changed'):
            self.result['changed'] = True
        if answer['last_tid'] and not self.check_mode:
            self.held = answer['last_tid']
        self.result['transactions'] += answer['transactions']
        return answer

    # -- the cutover ---------------------------------------------------------------------

    def run(self):
        started = self.monotonic()
        try:
            view = self._lb('read')
            self.result['before'] = view['before']
            if view['before']['active'] == self.to and not view['before']['frozen']:
                self._already_there()
            elif self.check_mode:
                self._plan()
            else:
                self._cutover()
        except CutoverFailed:
            raise
        except (Exception, KeyboardInterrupt) as exc:  # pylint: disable=broad-except
            # Ctrl-C too: the stage is left on one side, unfrozen, in a few round trips,
            # rather than frozen until the lease ends.
            self._recover(exc)
        finally:
            self.steps['total'] = round(self.monotonic() - started, 3)
            self.result['last_tid'] = self.held
        return self.result

    def _already_there(self):
        """Traffic on the target, unfrozen: a re-run. Nothing to do if the target holds every
        transaction of the source's tail; else the late ones are caught up (roll forward)."""
        p = self.params
        after = zfmt.hex_to_tid(p['after_tid'])
        tail = [tid for tid, _pos, _end in self.source.tail(after, None)]
        held = self.target.tids_after(zfmt.hex_to_tid(p['target_tid'] or p['after_tid']))
        self.result.update(traffic_on=self.to, frozen=False)
        if held[:len(tail)] == tail:
            if tail:
                self.held = zfmt.tid_to_hex(tail[-1])
            self.result['msg'] = ('Stage %s already sends its traffic to %s, unfrozen, and %s '
                                  'holds every transaction of the source after %s: nothing to '
                                  'do.' % (p['stage'], self.to, self.target.where, p['after_tid']))
            return
        self._replay('late', p['after_tid'], target_tid=p['target_tid'] or p['after_tid'])
        self.result['msg'] = ('Stage %s already sent its traffic to %s; the %d transactions the '
                              'source had committed since were caught up.'
                              % (p['stage'], self.to, self.result['transactions']))

    def _plan(self):
        """Check mode: count the gap, check the target's tid, show the requests' changes."""
        p = self.params
        self._replay('gap', p['after_tid'], target_tid=p['target_tid'] or p['after_tid'])
        self._lb('freeze', frozen=True)
        self._lb('switch', active=self.to, frozen=False, gate=False, drain_timeout=0)
        self.result.update(traffic_on=self.source_side, frozen=False,
                           msg='Would catch %s up (%d transactions), freeze stage %s\'s writes, '
                               'replay the rest, switch to %s and lift the freeze.'
                               % (self.target.where, self.result['gap']['transactions'],
                                  p['stage'], self.to))

    def _cutover(self):
        p, result = self.params, self.result
        margin = p['lease_margin']
        # 1. the gap, while the source serves; 2. settled, else no freeze at all
        gap = self._replay('gap', p['after_tid'], target_tid=p['target_tid'] or p['after_tid'],
                           passes=p['passes'], settle=p['settle'])
        if not gap.get('settled', True):
            raise zu.ZODBDataError(
                'The catch-up did not keep up: after %s passes (%d transactions in %.1f s) the '
                'source was still writing faster than they could be replayed, so a freeze now '
                'would last as long as the rest. Nothing was frozen. Promote at a quieter time, '
                'or raise the passes (promote_catch_up_passes).'
                % (gap.get('passes'), gap['transactions'], gap['seconds']))
        closed = self.held
        # 3. gate, freeze (a lease), wait until no write is in flight
        self.phase = FROZEN
        freeze = self._lb('freeze', gate_side=self.to, gate_timeout=p['gate_timeout'],
                          frozen=True, wait_writes=p['freeze_timeout'])
        result.update(frozen_at=freeze['frozen_at'],
                      writes_in_flight_seconds=freeze['writes_in_flight_seconds'])
        # 4. up to the source's last transaction, before the lease's margin
        final = self._replay('final', closed, not_after=self._deadline(freeze, margin))
        replayed = self.held
        # 5. switch under the freeze; wait until nothing is in flight on the source
        switch = self._lb('switch', active=self.to, under_freeze=True, gate=True, gate_timeout=2,
                          drain_timeout=p['freeze_timeout'])
        result.update(switched_at=switch['switched_at'],
                      source_idle_seconds=switch['drain_seconds'], source_idle=switch['drained'])
        if p['hold_frozen']:  # a fault drill's window inside the freeze (see lb_cutover)
            self.sleep(p['hold_frozen'])
        # 6. what the source committed until it went idle; the target took no write
        late = self._replay('late', replayed, not_after=self._deadline(switch, margin))
        result['transactions_frozen'] = final['transactions'] + late['transactions']
        # 7. unfreeze, then the source side drains (outside the freeze)
        self.phase = AFTER_UNFREEZE
        unfreeze = self._lb('unfreeze', active=self.to, frozen=False, gate=False, drain_other=True,
                            drain_timeout=p['drain_timeout'])
        result.update(unfrozen_at=unfreeze['unfrozen_at'], drain_seconds=unfreeze['drain_seconds'],
                      drained=unfreeze['drained'], traffic_on=self.to, frozen=False)
        result['freeze_seconds'] = self._window()
        result['msg'] = ('Stage %s now sends its traffic to %s. Writes were frozen %.3f s (%d '
                         'transactions replayed in the freeze, %d before it).'
                         % (p['stage'], self.to, result['freeze_seconds'] or 0,
                            result['transactions_frozen'], gap['transactions']))

    def _deadline(self, answer, margin):
        until = answer.get('frozen_until')
        return float(until) - margin if isinstance(until, (int, float)) else None

    def _window(self):
        result = self.result
        if result['frozen_at'] is None or result['unfrozen_at'] is None:
            return None
        return round(result['unfrozen_at'] - result['frozen_at'], 3)

    # -- after a failure -----------------------------------------------------------------

    def _view(self):
        """The balancer's view after a failure, asked again for a few seconds (an HAProxy
        restarting); None if it cannot be read."""
        deadline = self.monotonic() + self.params['recover_timeout']
        while True:
            try:
                return self._lb('recover_read', check_mode=False)['after']
            except Exception:  # pylint: disable=broad-except
                if self.monotonic() >= deadline:
                    return None
                self.sleep(0.5)

    def _recover(self, exc):
        """Put the traffic back on the source, or roll forward where the target may hold an
        acknowledged write; raise CutoverFailed saying which."""
        p, result = self.params, self.result
        if isinstance(exc, KeyboardInterrupt):
            cause = 'Interrupted (SIGINT).'
        elif isinstance(exc, (SwitchError, zu.ZODBDataError)):
            cause = str(exc)
        else:
            cause = '%s: %s%s' % (type(exc).__name__, ' '.join(str(exc).split()),
                                  zs.server_down(exc))
        if self.check_mode or self.phase == BEFORE_FREEZE:
            result.update(traffic_on=self.source_side, frozen=False)
            raise CutoverFailed('%s Nothing was frozen or switched: stage %s still sends its '
                                'traffic to %s.' % (cause, p['stage'], self.source_side), result)
        view = self._view()
        if view is None:
            result.update(traffic_on=None, frozen=None)
            raise CutoverFailed(
                '%s The balancer could not be read afterwards, so the traffic was left where it '
                'is; a freeze ends by itself at its lease (%s s).' % (cause, p['lease']), result)
        open_on_target = view.get('active') == self.to and not view.get('frozen')
        if not (open_on_target or self.phase == AFTER_UNFREEZE):
            back = self._lb('put_back', check_mode=False, active=self.source_side, frozen=False,
                            gate=False, drain_timeout=0)
            result.update(traffic_on=self.source_side, frozen=False, unfrozen_at=back['unfrozen_at']
                          or result['unfrozen_at'])
            result['freeze_seconds'] = self._window()
            raise CutoverFailed(
                '%s Stage %s was put back on %s and its writes unfrozen; the target took no '
                'write (it was frozen wherever it had the traffic): nothing is lost.'
                % (cause, p['stage'], self.source_side) if back.get('changed') else
                '%s Stage %s stays on %s, its writes not frozen; nothing is lost.'
                % (cause, p['stage'], self.source_side), result)
        # The target may have acknowledged a write: roll forward.
        forward = self._lb('roll_forward', check_mode=False, active=self.to, frozen=False,
                           gate=False, drain_timeout=0)
        result.update(traffic_on=self.to, frozen=False, rolled_forward=True,
                      unfrozen_at=result['unfrozen_at'] or forward['unfrozen_at']
                      or round(self.clock(), 6))
        result['freeze_seconds'] = self._window()
        try:
            tail = self.source.tail(zfmt.hex_to_tid(self.held), None)
            if tail:
                self._replay('late', self.held)
        except Exception as late:  # pylint: disable=broad-except
            result['diverged'] = True
            raise CutoverFailed(
                '%s ROLLED FORWARD: the balancer had let writes reach %s, so it stays there, '
                'unfrozen; but the source\'s last transactions could not be copied to it: %s The '
                'source keeps them: do not stop or replace it.' % (cause, self.to, late),
                result) from None
        raise CutoverFailed(
            '%s ROLLED FORWARD: the balancer had let writes reach %s, so it sends stage %s '
            'there, unfrozen, and the source\'s late transactions were copied to it (it holds '
            'the source up to %s).' % (cause, self.to, p['stage'], self.held), result)
