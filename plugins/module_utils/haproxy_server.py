# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""lb_switch's per-server request on HAProxy (backend, server, state): one server taken out
of rotation (drain, maint: it drains first) or put back (ready: until it passes its checks,
with wait_up), never the last healthy ones (min_others_up). playbooks/restart.yml restarts a
stage's clients this way, one at a time."""
from __future__ import annotations

import time

from ansible_collections.zopeops.stages.plugins.module_utils.balancer import (
    SwitchError, switch_result)
from ansible_collections.zopeops.stages.plugins.module_utils.haproxy import (
    HAProxyError, check_token, server_is_up, server_state, wait_until_idle)


def wait_server_up(api, backend, server, timeout, before, clock=time.monotonic,
                   sleep=time.sleep):
    """Wait until ``server`` passes HAProxy's health checks (it takes traffic again)."""
    start = clock()
    while True:
        srv = api.backend_stats(backend)['servers'][server]
        if server_is_up(srv['status'], srv['check']):
            return round(clock() - start, 3)
        if clock() - start >= timeout:
            raise SwitchError(
                'Server %s/%s is ready in HAProxy at %s but has not passed its health checks '
                'within %.0fs (wait_up): status %s, check %s. It gets no traffic until it does.'
                % (backend, server, api.address, timeout, srv['status'] or '?',
                   srv['check'] or '?'), before=before)
        sleep(0.2)


def run_server(api, params, check_mode):
    """Set one server's administrative state; returns the result."""
    backend = check_token(params['backend'], 'Backend')
    server = check_token(params['server'], 'Server')
    stats = api.backend_stats(backend)
    if server not in stats['servers']:
        raise SwitchError('Backend %s in HAProxy at %s has no server %s; it has: %s.'
                          % (backend, api.address, server,
                             ', '.join(sorted(stats['servers'])) or 'none'))
    # The administrative state, not the status: a drained server whose checks fail shows DOWN.
    admin = api.admin_states(backend)
    status = stats['servers'][server]['status']
    before = {'backend': backend, 'server': server,
              'state': admin.get(server) or server_state(status), 'status': status}
    after = dict(before, state=params['state'])
    values = {'before': before, 'after': after, 'commands': api.sent, 'warnings': []}
    values['healthy_servers'] = sorted(
        name for name, srv in stats['servers'].items()
        if server_is_up(srv['status'], srv['check']) and admin.get(name, 'ready') == 'ready')
    if params['state'] != 'ready' and before['state'] == 'ready':
        others = [name for name in values['healthy_servers'] if name != server]
        if len(others) < params['min_others_up']:
            raise SwitchError(
                'Refusing to set %s/%s to %s in HAProxy at %s: only %d other server(s) of %s '
                'pass their health checks and take traffic (%s), and min_others_up is %d. '
                'Nothing was changed.' % (backend, server, params['state'], api.address,
                                          len(others), backend, ', '.join(others) or 'none',
                                          params['min_others_up']), before=before)
    if before['state'] != params['state']:
        values['changed'] = True
        values['diff'] = {'before': '%s/%s state %s\n' % (backend, server, before['state']),
                          'after': '%s/%s state %s\n' % (backend, server, params['state'])}
        if not check_mode:
            api.set_server_state(backend, server, params['state'])
            if params['state'] != 'ready' and params['drain_timeout'] > 0:
                drained, seconds = wait_until_idle(api, backend, params['drain_timeout'],
                                                   server=server)
                values.update(drained=drained, drain_seconds=seconds)
                if not drained:
                    values['warnings'].append('Server %s/%s still had sessions after %.1fs.'
                                              % (backend, server, seconds))
            now = api.admin_states(backend).get(server)
            if now != params['state']:
                raise HAProxyError('HAProxy at %s accepted "set server %s/%s state %s" but reports '
                                   'state %s.' % (api.address, backend, server,
                                                  params['state'], now))
    if params['state'] == 'ready' and params['wait_up'] > 0 and not check_mode:
        wait_server_up(api, backend, server, params['wait_up'], before)
    if not check_mode:
        after['status'] = api.backend_stats(backend)['servers'][server]['status']
    return switch_result(**values)
