# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""lb_switch's requests about one stage on HAProxy, each readable on its own:

- ``StageCall.read``: the stage's side, freeze and servers as HAProxy has them (every request
  starts with it; alone, with the healthy servers of the side that serves: ``query``);
- ``StageCall.freeze`` / ``lift``: the write freeze, a lease in the frozen map;
- ``StageCall.wait_writes``: after a freeze, until no write is in flight;
- ``StageCall.switch``: the gate, the active map (runtime, read back, file), the freeze lifted
  (``frozen=false``), then the old side's drain.

``run_stage`` does what the parameters ask, in that order, and returns the one result.
"""
from __future__ import annotations

import time

from ansible_collections.zopeops.stages.plugins.module_utils.balancer import (
    SIDES, SwitchError, backend_name, other_side, side_of, switch_result)
from ansible_collections.zopeops.stages.plugins.module_utils.files import atomic_write
from ansible_collections.zopeops.stages.plugins.module_utils.haproxy import (
    HELD, HAProxyError, check_token, file_lock, freeze_state, freeze_value, parse_map_text,
    read_text, server_is_up, set_map_line, wait_until_idle, wait_until_no_writes)


def _stream_summary(stream):
    return {key: stream[key] for key in ('id', 'method', 'frontend', 'backend', 'server', 'age')}


def statuses(api, backends, rows):
    """backend -> server -> HAProxy status."""
    found = {}
    for backend in backends:
        servers = api.backend_stats(backend, rows)['servers']
        found[backend] = {name: server['status'] for name, server in servers.items()}
    return found


def gate(api, stage, side, rows, before, timeout, clock=time.monotonic, sleep=time.sleep):
    """Return once every server of the target backend is UP; wait at most ``timeout``."""
    target = backend_name(stage, side)
    deadline = clock() + timeout
    while True:
        servers = api.backend_stats(target, rows)['servers']
        if not servers or all(server_is_up(s['status'], s['check']) for s in servers.values()):
            break
        if clock() >= deadline:
            break
        sleep(0.2)
        rows = api.show_stat()
    if not servers:
        raise SwitchError(
            'Refusing to switch stage %s to %s: backend %s has no servers (the stage has no %s '
            'side in the pipeline model, or the haproxy role has not rendered it yet). Nothing '
            'was changed.' % (stage, side, target, side), before=before)
    down = ['%s (%s%s)' % (name, srv['status'] or 'unknown',
                           ', check ' + srv['check'] if srv['check'] else '')
            for name, srv in sorted(servers.items())
            if not server_is_up(srv['status'], srv['check'])]
    if down:
        raise SwitchError(
            'Refusing to switch stage %s to %s: not every server of %s is UP by HAProxy\'s health '
            'checks (waited %.0fs): %s. Nothing was changed. Start those servers and wait until '
            'they pass their checks, or set gate=false to move traffic anyway.'
            % (stage, side, target, timeout, ', '.join(down)), before=before)


def healthy_servers(api, stage, side, rows, timeout, clock=time.monotonic, sleep=time.sleep):
    """The servers of the stage's ``side`` that pass their checks, waiting at most ``timeout``
    seconds for one to."""
    backend = backend_name(stage, side)
    deadline = clock() + timeout
    while True:
        servers = api.backend_stats(backend, rows)['servers']
        healthy = sorted(name for name, srv in servers.items()
                         if server_is_up(srv['status'], srv['check']))
        # Every server checked and DOWN (or in maintenance): waiting longer will not help.
        settled = all((srv['status'] or '').startswith(('DOWN', 'MAINT'))
                      and (srv['check'] or 'INI').lstrip('* ')[:3] not in ('INI', '')
                      for srv in servers.values())
        if healthy or settled or clock() >= deadline:
            return healthy
        sleep(0.25)
        rows = api.show_stat()


def _set_freeze_view(view, state):
    view.update(frozen=state['frozen'], frozen_until=None if state['held'] else state['until'],
                frozen_held=state['held'])


def check_arguments(params):
    """Refuse combinations that make no sense, before anything is read."""
    if params['active'] and params['map_file'] is None:
        raise SwitchError('active needs map_file: the active map that the stage\'s use_backend '
                          'rule reads (e.g. <root>/lb/etc/active.map).')
    if params['frozen'] is not None and params['frozen_map_file'] is None:
        raise SwitchError('frozen needs frozen_map_file: the map that the write-freeze rule '
                          'reads (e.g. <root>/lb/etc/frozen.map).')
    if params['under_freeze'] and not (params['active'] and params['frozen_map_file']):
        raise SwitchError('under_freeze is a switch under the write freeze: give it with active '
                          'and frozen_map_file.')
    if params['gate_side'] and (params['frozen'] is False or params['active']):
        raise SwitchError('gate_side gates a side before a freeze: give it with frozen=true, or '
                          'alone to only wait for the gate (a switch gates its own side).')
    if params['wait_writes'] > 0 and params['frozen'] is not True:
        raise SwitchError('wait_writes waits for the writes in flight after a freeze: give it '
                          'with frozen=true (waiting without a freeze could wait forever).')


class StageCall:
    """One lb_switch call about a stage on HAProxy: what it read, what it changed so far."""

    def __init__(self, api, params, check_mode):
        self.api, self.params, self.check_mode = api, params, check_mode
        self.stage = check_token(params['stage'], 'Stage')
        self.changed = False
        self.values = {}  # result keys set by the requests (frozen_at, drain_seconds, ...)
        self.files, self.diffs, self.warnings = [], [], []
        # What read() finds: HAProxy's stats rows, its backends, the stage's own, its state.
        self.rows, self.known, self.backends = [], set(), []
        self.before, self.after = {}, {}

    # -- reading -------------------------------------------------------------------------

    def read(self):
        """The stage's backends, side, freeze and servers as HAProxy has them now."""
        api, stage = self.api, self.stage
        self.rows = api.show_stat()
        self.known = {row['pxname'] for row in self.rows if row['svname'] == 'BACKEND'}
        if backend_name(stage, 'live') not in self.known:
            stages = sorted({name[3:-5] for name in self.known
                             if name.startswith('be_') and name.endswith('_live')})
            raise SwitchError('HAProxy at %s has no backend %s, so it does not serve a stage %r. '
                              'Stages it serves: %s.' % (api.address, backend_name(stage, 'live'),
                                                         stage, ', '.join(stages) or 'none'))
        check_arguments(self.params)
        self.backends = [backend_name(stage, s) for s in SIDES
                         if backend_name(stage, s) in self.known]
        self.before = {'active': None, 'frozen': None, 'frozen_until': None, 'frozen_held': None,
                       'servers': statuses(api, self.backends, self.rows)}
        if self.params['map_file']:
            value = api.get_map(api.resolve_map(self.params['map_file']), stage)
            # No entry means the rule's default, the live backend.
            self.before['active'] = side_of(value, stage) if value is not None else 'live'
        if self.params['frozen_map_file']:
            frozen_name = api.resolve_map(self.params['frozen_map_file'])
            _set_freeze_view(self.before, freeze_state(api.get_map(frozen_name, stage)))
        self.after = dict(self.before)

    def query(self):
        """A read-only call: the healthy servers of the side that serves (waiting for one with
        wait_healthy, and warning when none passes)."""
        params, stage, side = self.params, self.stage, self.before['active']
        healthy = healthy_servers(self.api, stage, side, self.rows,
                                  0.0 if self.check_mode else params['wait_healthy'])
        self.values['healthy_servers'] = healthy
        if params['wait_healthy'] > 0 and not healthy:
            servers = self.api.backend_stats(backend_name(stage, side))['servers']
            self.warnings.append(
                'Stage %s has no healthy backend: no server of %s passes HAProxy\'s health '
                'check (%s), so %s answers 503. Check its Zope clients (playbooks/status.yml), '
                'the health page (zopeops_health_path) and whether the site exists (an init '
                'script: zopeops_init_script).'
                % (stage, backend_name(stage, side), ', '.join(
                    '%s %s%s' % (name, srv['status'] or '?',
                                 ' ' + srv['check'] if srv['check'] else '')
                    for name, srv in sorted(servers.items())) or 'none',
                   params['frontend_url'] or 'its frontend'))

    # -- maps ----------------------------------------------------------------------------

    def _set_map_entry(self, map_file, value):
        """Make runtime map and file say stage -> value. Returns (changed, runtime value
        before, epoch when HAProxy took the value or None)."""
        if self.check_mode:
            return self._set_map_entry_locked(map_file, value)
        with file_lock(map_file):
            return self._set_map_entry_locked(map_file, value)

    def _set_map_entry_locked(self, map_file, value):
        api, key = self.api, self.stage
        map_name = api.resolve_map(map_file)
        runtime_value = api.get_map(map_name, key)
        text = read_text(map_file)
        file_value = dict(parse_map_text(text)).get(key)
        changed = False
        taken_at = None
        if runtime_value != value:
            changed = True
            if not self.check_mode:
                api.set_map(map_name, key, value)  # reads the value back, raises if it differs
                taken_at = round(time.time(), 6)
        if file_value != value:
            changed = True
            new_text = set_map_line(text, key, value)
            self.diffs.append({'before_header': map_file, 'before': text,
                               'after_header': map_file, 'after': new_text})
            self.files.append(map_file)
            if not self.check_mode:
                try:
                    atomic_write(map_file, new_text)
                except OSError as exc:
                    raise HAProxyError(
                        'HAProxy now has %s -> %s, but rewriting the map file %s failed (%s): a '
                        'reload would undo the change. Fix the file\'s folder permissions and run '
                        'again.' % (key, value, map_file, exc)) from None
        self.changed |= changed
        return changed, runtime_value, taken_at

    # -- the write freeze ----------------------------------------------------------------

    def freeze(self, flag, lease=None):
        """Set the freeze (a lease of ``lease`` seconds, 0 held) or lift it."""
        lease = self.params['lease'] if lease is None else lease
        until = (HELD if lease <= 0 else time.time() + lease) if flag else None
        _changed, frozen_before, taken_at = self._set_map_entry(
            self.params['frozen_map_file'], freeze_value(until))
        _set_freeze_view(self.after, freeze_state(freeze_value(until)))
        was_frozen = freeze_state(frozen_before)['frozen']
        deadline_before = freeze_state(frozen_before, 0)['until'] or 0  # the value as a second
        # A renewal is not the moment writes stopped. A lease that ended before it was lifted
        # let writes through at its deadline: that is when the freeze ended.
        if flag and not was_frozen:
            self.values['frozen_at'] = taken_at
        elif not flag and was_frozen:
            self.values['unfrozen_at'] = taken_at
        elif not flag and taken_at and deadline_before > 10 ** 9:
            self.values['unfrozen_at'] = float(deadline_before)

    def wait_writes(self):
        """After the freeze: wait until no write is in flight on the stage's backends, then
        renew the lease from that moment; fail, the freeze left set, if they do not finish."""
        done, seconds, streams = wait_until_no_writes(
            self.api, self.backends, self.params['wait_writes'], frontend='fe_%s' % self.stage)
        self.values['writes_in_flight_seconds'] = seconds
        self.values['writes_in_flight'] = [_stream_summary(s) for s in streams]
        if not done:
            failed = self.result()
            failed.pop('warnings')
            raise SwitchError(
                'Stage %s is frozen, but %d write(s) were still in flight on its backends '
                '%.1fs later (wait_writes): %s. The freeze is left in place: lift it '
                '(frozen=false) or wait longer before the cutover goes on.'
                % (self.stage, len(streams), seconds, ', '.join(
                    '%s on %s/%s for %s' % (s['method'], s['backend'] or s['frontend'],
                                            s['server'] or '-', s['age'] or '?')
                    for s in streams)), **failed)
        self.freeze(True)  # the lease counts from the moment the writes in flight were answered

    def check_lease(self, clock=time.time):
        """Refuse a switch under a freeze whose lease ended or has less than the margin left."""
        params = self.params
        value = self.api.get_map(self.api.resolve_map(params['frozen_map_file']), self.stage)
        state = freeze_state(value, clock())
        if state['held']:
            return
        left = (state['until'] - clock()) if state['frozen'] else None
        if left is not None and left >= params['lease_margin']:
            return
        raise SwitchError(
            'Refusing to switch stage %s to %s under its write freeze: %s. The source may have '
            'taken writes that the target does not hold, so the traffic stays where it is and '
            'nothing was changed. Run the cutover again (its catch-up copies those writes).'
            % (self.stage, params['active'],
               'the freeze is not in force (its lease ended: %s)' % (value or 'no entry')
               if left is None else 'its lease has only %.1fs left, less than lease_margin %.1fs'
               % (left, params['lease_margin'])), before=self.before)

    # -- the switch ----------------------------------------------------------------------

    def switch(self):
        """Gate, switch (runtime map read back, file), lift the freeze if asked, then wait for
        the old side's drain: writes are frozen for the switch only, not for the drain."""
        api, params, stage, side = self.api, self.params, self.stage, self.params['active']
        target = backend_name(stage, side)
        if target not in self.known:
            raise SwitchError('HAProxy at %s has no backend %s: the stage %s has no %s backend in '
                              'its configuration. Re-run the haproxy role.'
                              % (api.address, target, stage, side), before=self.before)
        runtime_value = api.get_map(api.resolve_map(params['map_file']), stage)
        effective = runtime_value if runtime_value is not None else backend_name(stage, 'live')
        moving = effective != target
        if moving and params['gate']:
            gate(api, stage, side, self.rows, self.before,
                 0.0 if self.check_mode else params['gate_timeout'])
        if params['under_freeze'] and moving:
            self.check_lease()
            self.freeze(True)
        _switched, _before, self.values['switched_at'] = self._set_map_entry(
            params['map_file'], target)
        self.after['active'] = side
        # The freeze is lifted as soon as the switch is verified and persisted: the drain of
        # the old side below can take long, and writes must not be held back for it.
        if params['frozen'] is False:
            self.freeze(False)
        other = backend_name(stage, other_side(side))
        if ((moving or params['drain_other']) and not self.check_mode
                and params['drain_timeout'] > 0 and other in self.known):
            # Under a freeze that stays on, this wait is inside the frozen window: poll often.
            frozen_wait = params['under_freeze'] and params['frozen'] is not False
            drained, seconds = wait_until_idle(api, other, params['drain_timeout'],
                                               interval=0.02 if frozen_wait else 0.2)
            self.values.update(drained=drained, drain_seconds=seconds)
            if not drained:
                self.warnings.append(
                    'Backend %s still had sessions %.1fs after the switch of stage %s to %s; '
                    'requests in flight there may be cut if it is stopped now.'
                    % (other, seconds, stage, side))

    # -- the result ----------------------------------------------------------------------

    def result(self):
        values = dict(self.values, changed=self.changed, before=self.before, after=self.after,
                      frozen_until=self.after.get('frozen_until'), commands=self.api.sent,
                      files=self.files, warnings=self.warnings)
        if self.diffs:
            values['diff'] = self.diffs
        return switch_result(**values)


def run_stage(api, params, check_mode):
    """Do what ``params`` ask of the stage, in order: gate a side before a freeze, freeze
    (and wait for the writes in flight), switch (and lift the freeze), or only lift it; with
    none of them, read. Returns the result."""
    call = StageCall(api, params, check_mode)
    call.read()
    if params['gate_side']:
        gate(api, call.stage, params['gate_side'], call.rows, call.before,
             0.0 if check_mode else params['gate_timeout'])
    if params['frozen'] is True:
        call.freeze(True)
        if params['wait_writes'] > 0 and not check_mode:
            call.wait_writes()
    if params['active']:
        call.switch()
    elif params['frozen'] is False:
        call.freeze(False)
    if params['active'] is None and params['frozen'] is None and params['map_file']:
        call.query()
    if not check_mode and call.changed:
        call.after['servers'] = statuses(api, call.backends, api.show_stat())
    return call.result()
