#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
module: pipeline_status
short_description: Read what the instances of a host serve, without changing anything
description:
  - The read-only probe behind C(playbooks/status.yml). On the host it runs on it reads, for
    each instance of O(instances), the deployed revision (C(deployed.json) and the
    C(current) link), the size and the last transaction of its C(Data.fs) (read from the end
    of the file, so the cost does not grow with the file), whether its ZEO server accepts
    connections, and asks each of its Zope clients for O(health_path), timing the answer, and
    proves the revision each client runs the O(revision_proof) way, the same proof a
    promotion makes (see C(docs/applications.md)).
  - "It also names cheap signs of drift from the inventory: a C(current) link that disagrees
    with C(deployed.json), a C(zeo.conf) or client C(.ini) whose port is not the inventory's."
  - With O(probes), it asks those URLs too (a stage's frontend through the load balancer).
  - With O(promotions_dir) (the conductor's C(<root>/lb/promotions)), it reads each stage's
    last ledger line, its promotion state (C(status), C(step), C(traffic), C(current_step), the
    step the run is in where its events say so) and its lock owner, with C(heartbeat_age) and
    C(alive) (see O(lock_lease)).
version_added: 0.1.0
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - zopeops.stages.process_manager
options:
  instances:
    description:
      - The instances (or the part of an instance) on this host.
    type: list
    elements: dict
    default: []
    suboptions:
      instance:
        description: The instance name, C(test) or C(test_upgrade).
        type: str
        required: true
      dir:
        description: The instance folder, C(<root>/<instance>).
        type: path
        required: true
      zeo_host:
        description: Whether the instance's ZEO server (and so its C(Data.fs)) is on this host.
        type: bool
        default: false
      zeo_address:
        description: Where the ZEO server listens, C(host:port), as seen from this host.
        type: str
      backup_repository:
        description:
          - The stage's backup folder (M(zopeops.stages.zodb_backup), or
            M(zopeops.stages.relstorage_backup) on a RelStorage side's first client host); its
            C(latest.json) and C(reports/drill-latest.json) give the last good backup and
            restore drill.
        type: path
      backup_max_age_hours:
        description: How old the last good backup may be, in hours, before the status marks it red.
        type: float
        default: 26
      clients:
        description:
          - The instance's Zope clients on this host, each C({id, name, url, port}); C(id)
            (C(<instance>-<client>)) names its supervisord program, C(zopeops-<id>) its
            systemd unit.
        type: list
        elements: dict
        default: []
  probes:
    description:
      - Further URLs to ask, each C({name, url}); the answer is timed, and a JSON answer's
        C(revision) is read.
    type: list
    elements: dict
    default: []
  health_path:
    description: The path every Zope client must answer with HTTP C(200) (C(zopeops_health_path)).
    type: str
    default: /
  revision_proof:
    description:
      - How the revision each client runs is proven (C(zopeops_revision_proof)); C(release)
        reads the REVISION file of the folder the client's process was started in, with its
        pid from O(process_manager); C(json) and C(regex) read O(revision_page).
      - A JSON answer of the revision page also gives the status its C(last_tid), C(marker),
        C(instance), C(stage) and C(banner) fields, where the application shows them.
    type: str
    choices: [release, json, regex]
    default: release
  revision_page:
    description: The page showing the revision for C(json) and C(regex); default O(health_path).
    type: str
  revision_json_key:
    description: The dotted JSON key holding the revision (C(json)).
    type: str
    default: revision
  revision_regex:
    description: The regular expression whose group 1 is the revision (C(regex)).
    type: str
  promotions_dir:
    description: The conductor's promotions folder, for the ledger, the states and the locks.
    type: path
  lock_lease:
    description:
      - Seconds a lock's heartbeat (C(<stage>.lock/heartbeat), renewed by a live run; a lock
        without one counts from when it was taken) may be old; an older one is a run that
        stopped (interrupted), as M(zopeops.stages.promotion_state) decides.
    type: int
    default: 120
  timeout:
    description: Seconds to wait for each HTTP answer or TCP connection.
    type: float
    default: 3
attributes:
  check_mode:
    description: Reads only; runs the same in check mode.
    support: full
  diff_mode:
    description: Changes nothing, so there is no diff.
    support: none
notes:
  - Reads files and asks over HTTP and TCP; never writes, starts or stops anything.
'''

EXAMPLES = r'''
- name: Read what this host's instance serves.
  zopeops.stages.pipeline_status:
    instances:
      - instance: test
        dir: /srv/zopeops/test
        zeo_host: true
        zeo_address: 127.0.0.1:18420
        clients: [{id: test-client1, name: client1, url: "http://127.0.0.1:18421", port: 18421}]
  register: status_here
'''

RETURN = r'''
instances:
  description: Per instance, what this host found.
  returned: always
  type: dict
  sample:
    test:
      deployed: {revision: 8c270e68a84f7dd537f3cae6c545b684c72b06a4, deployed_at: "2026-11-29T12:30:39Z"}
      current: 8c270e68a84f7dd537f3cae6c545b684c72b06a4
      data: {size: 1048576, last_tid: 040d5727eb115822, mtime: "2026-11-29T12:31:02+00:00"}
      zeo_running: true
      backup: {checked_at: "2026-11-29T02:00:03Z", stamp: 2026-11-29-02-00-01, kind: incremental, max_age_hours: 26}
      clients: {test-client1: {ok: true, status: 200, latency: 0.012, revision: 8c27..., last_tid: 040d..., marker: seeded}}
      drift: []
probes:
  description: Per probe name, the timed answer.
  returned: always
  type: dict
promotions:
  description: Per stage, C(last) (its last ledger line), C(state) and C(lock) (the owner, or null).
  returned: always
  type: dict
'''

import datetime
import json
import os
import re
import socket
import struct
import sys
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zopeops.stages.plugins.module_utils.http_checks import (
    HAS_REQUESTS, fetch_with_ansible, fetch_with_requests)
from ansible_collections.zopeops.stages.plugins.module_utils.process_manager import (
    ProcessManagerError, manager_from_params)
from ansible_collections.zopeops.stages.plugins.module_utils.promotion import heartbeat_age
from ansible_collections.zopeops.stages.plugins.module_utils.revision_proof import (
    PROOFS, RevisionProof)

INFO_FIELDS = ('revision', 'last_tid', 'marker', 'instance', 'stage', 'banner')
from ansible_collections.zopeops.stages.plugins.module_utils.redact import (
    module_scrubber, redact_deep)

TXN_HEADER = struct.Struct('>8sQcHHH')
MAGIC = b'FS21'


def _iso(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
        timespec='seconds')


def data_fs_state(path):
    """Size, mtime and last tid of a FileStorage, reading only its first and last records."""
    try:
        stat = os.stat(path)
    except OSError:
        return {'path': path, 'missing': True, 'size': None, 'last_tid': None}
    result = {'path': path, 'size': stat.st_size, 'mtime': _iso(stat.st_mtime), 'last_tid': None}
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        result['error'] = str(exc)
        return result
    try:
        size = stat.st_size
        if os.pread(fd, 4, 0) not in (MAGIC, b'FS30'):
            result['error'] = 'not a FileStorage'
            return result
        if size < 4 + TXN_HEADER.size + 8:
            return result
        tlen = struct.unpack('>Q', os.pread(fd, 8, size - 8))[0]
        tpos = size - 8 - tlen
        if tpos < 4:
            return result
        header = os.pread(fd, TXN_HEADER.size, tpos)
        if len(header) == TXN_HEADER.size:
            tid, tlen2, status = TXN_HEADER.unpack(header)[:3]
            if tlen2 == tlen and status in (b' ', b'p', b'u'):
                result['last_tid'] = tid.hex()
    finally:
        os.close(fd)
    return result


def port_open(address, timeout):
    host, _sep, port = (address or '').rpartition(':')
    if not host or not port.isdigit():
        return False
    try:
        with socket.create_connection((host.strip('[]'), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def ask(url, timeout):
    """GET ``url``: {url, ok, status, latency, error} and, for a JSON answer, its fields."""
    # Imported here: only probes use it, and it brings in cryptography, which the preflight's
    # health read (no probes) would pay for nothing.
    from ansible.module_utils.urls import open_url  # pylint: disable=import-outside-toplevel
    started = time.monotonic()
    result = {'url': url, 'ok': False, 'status': None, 'latency': None, 'error': None}
    try:
        response = open_url(url, timeout=timeout, follow_redirects='none',
                            headers={'Accept': 'application/json'})
        body = response.read(65536)
        result['status'] = response.getcode()
    except Exception as exc:  # an HTTPError has a code, a refused connection has none
        result['status'] = getattr(exc, 'code', None)
        reason = getattr(exc, 'reason', None) or exc
        result['error'] = ('HTTP %s' % result['status'] if result['status']
                           else 'no answer: %s' % reason)
        result['latency'] = round(time.monotonic() - started, 4)
        return result
    result['latency'] = round(time.monotonic() - started, 4)
    result['ok'] = result['status'] == 200
    try:
        info = json.loads(body.decode('utf-8'))
    except ValueError:
        info = None
    if isinstance(info, dict):
        for key in INFO_FIELDS:
            result[key] = info.get(key)
    return result


def program_name(client, process_manager):
    return client['id'] if process_manager == 'supervisord' else 'zopeops-%s' % client['id']


def prove_client(client, proof, manager, timeout, process_manager='supervisord'):
    """The client's answer to the health page and the revision it runs, proven."""
    fetch = fetch_with_requests if HAS_REQUESTS else fetch_with_ansible

    def pid_of():
        try:
            return manager.status(program_name(client, process_manager)).pid
        except ProcessManagerError:
            return None
    seen = proof.prove(client['url'], fetch, {'Accept': 'application/json'}, timeout,
                       pid_of=pid_of)
    body = seen.pop('body', None)
    seen['url'] = client['url'].rstrip('/') + proof.health_path
    try:
        info = json.loads(body) if body and proof.proof == 'json' else None
    except ValueError:
        info = None
    for key in INFO_FIELDS[1:]:
        seen[key] = info.get(key) if isinstance(info, dict) else None
    return seen


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def listen_port_of(text, pattern):
    match = re.search(pattern, text or '', re.MULTILINE)
    return int(match.group(1)) if match else None


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def instance_status(spec, timeout, proof, manager, process_manager='supervisord'):
    folder = spec['dir']
    found = {'instance': spec['instance'], 'zeo_host': spec['zeo_host'], 'drift': [],
             'clients': {}}
    deployed = read_json(os.path.join(folder, 'deployed.json'))
    found['deployed'] = deployed
    link = os.path.join(folder, 'current')
    current = os.path.basename(os.path.realpath(link)) if os.path.islink(link) else None
    found['current'] = current
    if deployed and current and deployed.get('revision') and current != deployed['revision']:
        found['drift'].append('%s/current points at %s, deployed.json says %s'
                              % (spec['instance'], current[:7], deployed['revision'][:7]))
    if spec['zeo_host']:
        found['data'] = data_fs_state(os.path.join(folder, 'var', 'filestorage', 'Data.fs'))
        found['zeo_running'] = port_open(spec.get('zeo_address'), timeout)
        conf = read_text(os.path.join(folder, 'etc', 'zeo.conf'))
        port = listen_port_of(conf, r'^\s*address\s+\S*?:(\d+)\s*$')
        wanted = int(spec['zeo_address'].rpartition(':')[2]) if spec.get('zeo_address') else None
        if conf is not None and port and wanted and port != wanted:
            found['drift'].append('%s: zeo.conf listens on port %d, the inventory says %d'
                                  % (spec['instance'], port, wanted))
    if spec.get('backup_repository'):  # the ZEO host, or a RelStorage side's data host
        found['backup'] = backup_state(spec['backup_repository'], spec['backup_max_age_hours'])
    for client in spec.get('clients') or []:
        found['clients'][client['id']] = prove_client(client, proof, manager, timeout,
                                                      process_manager)
        ini = read_text(os.path.join(folder, 'etc', 'zope-%s.ini' % client['name']))
        port = listen_port_of(ini, r'^\s*port\s*=\s*(\d+)\s*$')
        if ini is not None and port and client.get('port') and port != int(client['port']):
            found['drift'].append('%s: zope-%s.ini listens on port %d, the inventory says %s'
                                  % (client['id'], client['name'], port, client['port']))
    return found


def backup_state(repository, max_age_hours):
    """The stage's last good backup (zodb_backup's latest.json) and restore drill."""
    latest = read_json(os.path.join(repository, 'latest.json')) or {}
    drill = read_json(os.path.join(repository, 'reports', 'drill-latest.json')) or {}
    return {
        'repository': repository, 'max_age_hours': max_age_hours,
        'checked_at': latest.get('checked_at'), 'stamp': latest.get('stamp'),
        'kind': latest.get('kind'), 'last_tid': latest.get('last_tid'),
        'size': latest.get('size'), 'duration': latest.get('duration'),
        'drill_at': drill.get('finished_at'),
    }


def current_step(state):
    """The step a run is in: the last event's phase when that event is a start (the state's
    step is the last one recorded), else the recorded step."""
    events = state.get('events') or []
    last = events[-1] if events and isinstance(events[-1], dict) else {}
    if last.get('event') == 'start' and last.get('phase'):
        return last['phase']
    return state.get('step')


def _age(path, now):
    try:
        return max(0.0, round(now - os.stat(path).st_mtime, 1))
    except OSError:
        return None


def promotions_status(folder, lease=120, now=None):
    """{stage: {'last', 'state', 'lock'}} from the conductor's promotions folder. A lock gets
    'heartbeat_age' (seconds since its run last showed life, as the lock itself decides:
    module_utils/promotion.heartbeat_age) and 'alive': at most ``lease`` seconds."""
    now = time.time() if now is None else now
    result = {}
    if not folder or not os.path.isdir(folder):
        return result
    ledger = os.path.join(folder, 'ledger.jsonl')
    try:
        with open(ledger) as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get('stage'):
                    result.setdefault(entry['stage'], {})['last'] = entry
    except OSError:
        pass
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith('.json') and os.path.isfile(path):
            state = read_json(path)
            if isinstance(state, dict):
                subset = {k: state.get(k) for k in ('status', 'step', 'traffic', 'run_id')}
                subset['current_step'] = current_step(state)
                subset['age'] = _age(path, now)
                result.setdefault(name[:-5], {})['state'] = subset
        elif name.endswith('.lock') and os.path.isdir(path):
            owner = read_json(os.path.join(path, 'owner.json')) or {'by': '?'}
            result.setdefault(name[:-5], {})['lock'] = owner
    for stage, found in result.items():
        lock = found.get('lock')
        if lock is None:
            continue
        beat = round(heartbeat_age(folder, stage, lock, now=lambda: now), 1)
        lock['heartbeat_age'] = beat
        lock['alive'] = beat <= lease
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instances=dict(type='list', elements='dict', default=[], options=dict(
                instance=dict(type='str', required=True),
                dir=dict(type='path', required=True),
                zeo_host=dict(type='bool', default=False),
                zeo_address=dict(type='str'),
                backup_repository=dict(type='path'),
                backup_max_age_hours=dict(type='float', default=26),
                clients=dict(type='list', elements='dict', default=[]),
            )),
            probes=dict(type='list', elements='dict', default=[]),
            health_path=dict(type='str', default='/'),
            revision_proof=dict(type='str', choices=list(PROOFS), default='release'),
            revision_page=dict(type='str'),
            revision_json_key=dict(type='str', default='revision', no_log=False),
            revision_regex=dict(type='str'),
            process_manager=dict(type='str', default='supervisord',
                                 choices=['supervisord', 'systemd']),
            supervisor_config=dict(type='path'),
            supervisorctl=dict(type='path'),
            promotions_dir=dict(type='path'),
            lock_lease=dict(type='int', default=120),
            timeout=dict(type='float', default=3),
        ),
        supports_check_mode=True,
    )
    params = module.params
    module_scrubber(module, urls=[probe.get('url') or '' for probe in params['probes']]
                    + [client.get('url') or '' for spec in params['instances']
                       for client in spec['clients']])
    proof = RevisionProof.from_params(params)
    problems = proof.problems()
    if problems:
        module.fail_json(msg='pipeline_status: the revision proof is not usable: %s.'
                         % '; '.join(problems))
    manager = None
    if any(spec['clients'] for spec in params['instances']):
        try:
            manager = manager_from_params(params, module.get_bin_path, sys.executable,
                                          command_timeout=30)
        except ProcessManagerError as exc:
            module.fail_json(msg='pipeline_status: %s' % exc)
    instances = {spec['instance']: instance_status(spec, params['timeout'], proof, manager,
                                                   params['process_manager'])
                 for spec in params['instances']}
    probes = {probe['name']: ask(probe['url'], params['timeout']) for probe in params['probes']}
    # A probe URL or a file read (deployed.json, the ledger) may hold user:password@: never
    # returned.
    module.exit_json(**redact_deep(dict(changed=False, instances=instances, probes=probes,
                                        promotions=promotions_status(
                                            params['promotions_dir'], params['lock_lease']))))


if __name__ == '__main__':
    main()
