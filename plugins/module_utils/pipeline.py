# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pipeline model: the inventory's stages, their twins and their addresses, validated.

Every role and playbook reads the topology from this one model instead of walking groups and
hostvars itself, so that a bad inventory is refused once, early, with every mistake named.

Inventory conventions (see docs/architecture.md):
  groups   S_zeo (one host), S_clients, and for the twin S_upgrade_zeo, S_upgrade_clients;
           lb (at least one host: every promotion switches the traffic there)
  hostvars zopeops_zeo_port, zopeops_clients: [{name, port}], ansible_host,
           zopeops_bind_address (the private address ZEO and Zope listen on; ansible_host
           when unset), zopeops_service_user (never empty or root outside the local sandbox,
           which zopeops_sandbox marks)
  stage    zopeops_lb_port and zopeops_data_policy, read from the stage's ZEO host (a
           RelStorage stage's first client host)
  storage  zopeops_storage: zeo (default) or relstorage, on each side's hosts (group vars of S
           and S_upgrade). A relstorage side has no S_zeo group; its clients talk to PostgreSQL:
           zopeops_postgresql_host (required), zopeops_postgresql_port (5432),
           zopeops_postgresql_user (zopeops_<stage>), zopeops_postgresql_database
           (zopeops_<instance>), zopeops_relstorage_history (preserving or free). A side's
           ``other`` is the same side on the other kind where the inventory gives that too (a
           RelStorage side's S_zeo group kept, a ZEO side's zopeops_postgresql_host): what a
           move between kinds runs from until its data is on the new kind.
"""
from __future__ import annotations

import re

from ansible_collections.zopeops.stages.plugins.module_utils.readiness import join_address

DATA_POLICIES = ('upstream', 'self', 'none')
STORAGES = ('zeo', 'relstorage')
RELSTORAGE_HISTORIES = ('preserving', 'free')
TWIN_SUFFIX = '_upgrade'
# PostgreSQL identifiers the collection creates unquoted: lower case, at most 63 bytes.
_PG_IDENTIFIER = re.compile(r'^[a-z_][a-z0-9_]{0,62}$')


class PipelineError(ValueError):
    """The inventory does not describe a usable pipeline; ``problems`` lists every mistake."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__(
            'The inventory does not describe a usable pipeline:\n- ' + '\n- '.join(self.problems))


def instance_name(stage, side):
    """``test`` + ``upgrade`` -> ``test_upgrade``: the name of one side's groups and files."""
    return stage + TWIN_SUFFIX if side == 'upgrade' else stage


def _as_port(value, what, problems):
    try:
        port = int(value)
    except (TypeError, ValueError):
        problems.append('%s is %r, not a port number.' % (what, value))
        return None
    if not 0 < port < 65536:
        problems.append('%s is %d, outside 1-65535.' % (what, port))
        return None
    return port


def _machine(hostvars, host):
    return str(hostvars.get('ansible_host') or host)


def _address(hostvars, host):
    """Where a host's ZEO server or Zope clients listen, and where their peers reach them: the
    inventory's private address (zopeops_bind_address), else the machine's ansible_host."""
    return str(hostvars.get('zopeops_bind_address') or _machine(hostvars, host))


ROOT_ACCOUNTS = ('', 'root', '0')


def _check_service_users(hosts, hostvars, problems):
    """Outside the local sandbox (zopeops_sandbox), ZEO and Zope must not run as root."""
    refused = {}
    for host in hosts:
        host_vars = hostvars[host]
        if host_vars.get('zopeops_sandbox'):
            continue
        user = str(host_vars.get('zopeops_service_user') or '').strip()
        if user in ROOT_ACCOUNTS:
            refused.setdefault(user or 'empty', []).append(host)
    for user, names in sorted(refused.items()):
        problems.append(
            'zopeops_service_user is %s on %s: on a real host ZEO and Zope must not run as '
            'root. Set zopeops_service_user to an unprivileged account that exists on the '
            'machines (e.g. zope, in group_vars/all); only the local sandbox (zopeops_sandbox '
            'set) may run them as the connecting user.'
            % ('root' if user != 'empty' else 'empty', ', '.join(sorted(names))))


def _side(groups, hostvars, stage, side, problems):
    """The ZEO server and Zope clients of one side of a stage, or None if it has no hosts."""
    inst = instance_name(stage, side)
    zeo_hosts = list(groups.get(inst + '_zeo') or [])
    client_hosts = list(groups.get(inst + '_clients') or [])
    if not zeo_hosts and not client_hosts and not groups.get(inst):
        if side == 'live':
            problems.append(
                "Stage '%s' is in zopeops_pipeline but the inventory has no hosts for it: add "
                "groups '%s_zeo' (one ZEO host) and '%s_clients' (its Zope client hosts)."
                % (stage, inst, inst))
        return None
    storage = _side_storage(hostvars, inst, zeo_hosts + client_hosts, problems)
    if storage not in STORAGES:
        return None
    if storage == 'relstorage':
        # A RelStorage side may keep the group of the ZEO server it ran before a move
        # (promote.yml -e migrate_storage=relstorage reads it: its ``other`` below).
        if len(zeo_hosts) > 1:
            problems.append(
                "%s stores its data with RelStorage (zopeops_storage: relstorage); group "
                "'%s_zeo' may only name the one ZEO server it ran before a move, but holds %s."
                % (inst, inst, ', '.join(zeo_hosts)))
            return None
    elif len(zeo_hosts) != 1:
        problems.append(
            "Group '%s_zeo' must hold exactly one host (the ZEO server of %s); it holds %s."
            % (inst, inst, ', '.join(zeo_hosts) if zeo_hosts else 'none'))
        return None
    if not client_hosts:
        problems.append("Group '%s_clients' has no hosts: %s needs at least one Zope client."
                        % (inst, inst))
        return None
    zeo = database = None
    if storage == 'zeo':
        zeo = _zeo(hostvars, zeo_hosts[0], problems)
    else:
        database = _database(hostvars[client_hosts[0]], stage, inst, client_hosts[0], problems)
    clients = []
    for host in client_hosts:
        entries = hostvars[host].get('zopeops_clients') or []
        if not entries:
            problems.append("Host %s is in '%s_clients' but lists no zopeops_clients "
                            "(a list of {name, port})." % (host, inst))
        for entry in entries:
            if not isinstance(entry, dict) or not entry.get('name'):
                problems.append('Host %s: every zopeops_clients entry needs a name and a port; '
                                'got %r.' % (host, entry))
                continue
            port = _as_port(entry.get('port'), 'port of client %s on %s' % (entry['name'], host),
                            problems)
            address = _address(hostvars[host], host)
            clients.append({'host': host, 'name': str(entry['name']),
                            'address': address, 'machine': _machine(hostvars[host], host),
                            'port': port, 'id': '%s-%s' % (inst, entry['name']),
                            'url': 'http://' + join_address(address, port) if port else None})
    entry = {
        'instance': inst,
        'side': side,
        'storage': storage,
        'zeo': zeo,
        'database': database,
        # The host that stands for the side's data: its ZEO server, else its first client.
        'data_host': zeo['host'] if zeo else client_hosts[0],
        'clients': clients,
        'hosts': sorted(set(zeo_hosts + client_hosts)),
    }
    entry['other'] = _other_kind(entry, hostvars, stage, zeo_hosts, client_hosts, problems)
    return entry


def _zeo(hostvars, zeo_host, problems):
    zeo_vars = hostvars[zeo_host]
    return {'host': zeo_host, 'address': _address(zeo_vars, zeo_host),
            'machine': _machine(zeo_vars, zeo_host),
            'port': _as_port(zeo_vars.get('zopeops_zeo_port'),
                             'zopeops_zeo_port of %s' % zeo_host, problems)}


def _other_kind(entry, hostvars, stage, zeo_hosts, client_hosts, problems):
    """The side on the other kind of storage, where the inventory describes that too: a
    RelStorage side whose group S_zeo still names its ZEO server (with zopeops_zeo_port), a ZEO
    side whose hosts still name their PostgreSQL server (zopeops_postgresql_host). A move
    between kinds (promote.yml -e migrate_storage) runs the side from this description until
    its data is on the new kind; None otherwise."""
    if entry['storage'] == 'relstorage':
        if not zeo_hosts or not hostvars[zeo_hosts[0]].get('zopeops_zeo_port'):
            return None
        zeo = _zeo(hostvars, zeo_hosts[0], problems)
        return dict(entry, storage='zeo', zeo=zeo, database=None, data_host=zeo['host'],
                    other=None)
    if not str(hostvars[client_hosts[0]].get('zopeops_postgresql_host') or '').strip():
        return None
    database = _database(hostvars[client_hosts[0]], stage, entry['instance'], client_hosts[0],
                         problems)
    return dict(entry, storage='relstorage', zeo=None, database=database,
                data_host=client_hosts[0], other=None)


def _side_storage(hostvars, inst, hosts, problems):
    """zopeops_storage of one side's hosts (zeo unless set): one kind for the whole side."""
    kinds = {}
    for host in hosts:
        kinds.setdefault(str(hostvars[host].get('zopeops_storage') or 'zeo'), []).append(host)
    wrong = sorted(kind for kind in kinds if kind not in STORAGES)
    if wrong:
        problems.append(
            "zopeops_storage of %s is %s; choose one of %s (set it in the group vars of the "
            "stage and of its twin)." % (inst, ', '.join(repr(k) for k in wrong),
                                         ', '.join(STORAGES)))
        return 'invalid'
    if len(kinds) > 1:
        problems.append(
            'The hosts of %s disagree on zopeops_storage (%s): a side has one storage; set it '
            'once in the group vars of %s.'
            % (inst, '; '.join('%s on %s' % (kind, ', '.join(sorted(names)))
                               for kind, names in sorted(kinds.items())), inst))
    return sorted(kinds)[0] if kinds else 'zeo'


def _database(host_vars, stage, inst, host, problems):
    """The PostgreSQL database a RelStorage side uses, from the variables of ``host``."""
    server = str(host_vars.get('zopeops_postgresql_host') or '').strip()
    if not server:
        problems.append(
            '%s stores its data with RelStorage but names no PostgreSQL server: set '
            'zopeops_postgresql_host (the address its clients connect to) for the stage and '
            'its twin (docs/relstorage.md).' % inst)
    port = _as_port(host_vars.get('zopeops_postgresql_port') or 5432,
                    'zopeops_postgresql_port of %s' % inst, problems)
    names = {}
    for key, default in (('user', 'zopeops_' + stage), ('database', 'zopeops_' + inst)):
        value = str(host_vars.get('zopeops_postgresql_' + key) or default)
        if not _PG_IDENTIFIER.match(value):
            problems.append(
                'zopeops_postgresql_%s of %s is %r: use lower-case letters, digits and _ '
                '(at most 63, not starting with a digit).' % (key, inst, value))
        names[key] = value
    history = str(host_vars.get('zopeops_relstorage_history') or 'preserving')
    if history not in RELSTORAGE_HISTORIES:
        problems.append('zopeops_relstorage_history of %s is %r; choose one of %s.'
                        % (inst, history, ', '.join(RELSTORAGE_HISTORIES)))
    return {'host': server, 'port': port, 'user': names['user'], 'name': names['database'],
            'history': history, 'keep_history': history == 'preserving',
            'client_host': host}


def build_model(groups, hostvars, pipeline):
    """Return the validated pipeline model, or raise PipelineError naming every problem."""
    problems = []
    if not isinstance(pipeline, (list, tuple)) or not pipeline:
        raise PipelineError(['zopeops_pipeline must be a non-empty list of stage names, '
                             'e.g. [dev, beta, test, prod]; it is %r.' % (pipeline,)])
    pipeline = [str(s) for s in pipeline]
    seen = set()
    for stage in pipeline:
        if stage in seen:
            problems.append("Stage '%s' appears twice in zopeops_pipeline." % stage)
        if stage.endswith(TWIN_SUFFIX):
            problems.append("Stage '%s' ends in '%s', which names twins; rename the stage."
                            % (stage, TWIN_SUFFIX))
        seen.add(stage)

    stages = {}
    for index, stage in enumerate(pipeline):
        live = _side(groups, hostvars, stage, 'live', problems)
        upgrade = _side(groups, hostvars, stage, 'upgrade', problems)
        entry = {
            'name': stage,
            'index': index,
            'predecessor': pipeline[index - 1] if index > 0 else None,
            'successor': pipeline[index + 1] if index + 1 < len(pipeline) else None,
            'live': live,
            'upgrade': upgrade,
            'lb_port': None,
            'data_policy': 'upstream',
        }
        _check_twin_storage(stage, live, upgrade, problems)
        if live:
            stage_vars = hostvars[live['data_host']]
            entry['lb_port'] = _as_port(stage_vars.get('zopeops_lb_port'),
                                        'zopeops_lb_port of stage %s' % stage, problems)
            policy = stage_vars.get('zopeops_data_policy') or 'upstream'
            if policy not in DATA_POLICIES:
                problems.append("zopeops_data_policy of stage %s is %r; choose one of %s."
                                % (stage, policy, ', '.join(DATA_POLICIES)))
            entry['data_policy'] = policy
        stages[stage] = entry

    lb_hosts = list(groups.get('lb') or [])
    if not lb_hosts:
        problems.append(
            "Group 'lb' has no hosts: every promotion switches, freezes and verifies the "
            "traffic on the load balancers listed there, and without one it would do nothing. "
            "Add the HAProxy (or nginx) machines to group 'lb'.")
    _check_ports(stages, [_machine(hostvars[host], host) for host in lb_hosts], problems)
    instance_hosts = sorted(set(host for stage in stages.values()
                                for side in (stage['live'], stage['upgrade']) if side
                                for host in side['hosts']))
    _check_service_users(instance_hosts, hostvars, problems)
    if problems:
        raise PipelineError(problems)
    return {'pipeline': pipeline, 'stages': stages, 'lb_hosts': lb_hosts}


def _check_twin_storage(stage, live, upgrade, problems):
    """A twin stores its data as its stage does, in a database of its own."""
    if not live or not upgrade:
        return
    if live['storage'] != upgrade['storage']:
        problems.append(
            'Stage %s stores its data with %s but its twin %s with %s: set the same '
            'zopeops_storage for both (a move between kinds changes both in the inventory, '
            'then runs promote.yml -e migrate_storage; docs/relstorage.md).'
            % (stage, live['storage'], upgrade['instance'], upgrade['storage']))
    elif live['database'] and upgrade['database']:
        mine, twin = live['database'], upgrade['database']
        if (mine['host'], mine['port'], mine['name']) == (twin['host'], twin['port'],
                                                          twin['name']):
            problems.append(
                'Stage %s and its twin %s use the same database %s on %s:%s: each needs one '
                'of its own (leave zopeops_postgresql_database unset for the defaults).'
                % (stage, upgrade['instance'], mine['name'], mine['host'], mine['port']))


def stages_changed(model, hosts):
    """The stages a run over ``hosts`` (the play's hosts, after --limit) changes, in pipeline
    order: a stage whose live side or twin has a host among them, and every stage when a load
    balancer is among them (its configuration holds every stage's frontend and backends)."""
    hosts = set(hosts)
    if hosts & set(model.get('lb_hosts') or []):
        return list(model['pipeline'])
    return [name for name in model['pipeline']
            if any(side and hosts & set(side['hosts'])
                   for side in (model['stages'][name]['live'], model['stages'][name]['upgrade']))]


def databases_on_server(model, names, port):
    """The RelStorage databases a PostgreSQL server holds: every side whose database names
    this server (one of ``names``, its addresses) on ``port``; in pipeline order, live first.
    A side the inventory moves to ZEO still holds its database until the move is done (its
    ``other``). Each: instance, stage, side, name, user, history, data_host (whose variables
    hold the stage's password), client_machines and clients (how many Zope clients the side
    runs)."""
    names = set(str(name) for name in names if name)
    found = []
    for stage in model['pipeline']:
        for side in ('live', 'upgrade'):
            entry = model['stages'][stage][side]
            if entry and not entry.get('database') and entry.get('other'):
                entry = entry['other']
            database = entry and entry.get('database')
            if database and database['host'] in names and database['port'] == int(port):
                found.append({'instance': entry['instance'], 'stage': stage, 'side': side,
                              'name': database['name'], 'user': database['user'],
                              'history': database['history'], 'data_host': entry['data_host'],
                              'clients': len(entry['clients']),
                              'client_machines': sorted(set(c['address']
                                                            for c in entry['clients']))})
    return found


def leaders_by_machine(machines):
    """{host: machine} -> the set of hosts that lead their machine: the first by name."""
    leaders = {}
    for host in sorted(machines):
        leaders.setdefault(machines[host], host)
    return sorted(leaders.values())


def _check_ports(stages, lb_machines, problems):
    """Two listeners on one machine and port would collide: name both."""
    owners = {}

    def claim(address, port, owner):
        if port is None:
            return
        key = (address, port)
        if key in owners:
            problems.append('Port %d on %s is given twice: to %s and to %s.'
                            % (port, address, owners[key], owner))
        else:
            owners[key] = owner

    for stage in stages.values():
        for lb_machine in lb_machines:
            claim(lb_machine, stage['lb_port'], 'the load-balancer frontend of %s' % stage['name'])
        for side in (stage['live'], stage['upgrade']):
            if not side:
                continue
            if side['zeo']:
                claim(side['zeo']['machine'], side['zeo']['port'],
                      'the ZEO server of %s' % side['instance'])
            for client in side['clients']:
                claim(client['machine'], client['port'], 'Zope client %s' % client['id'])


def check_urls(model, lb_address, path='/'):
    """What a health check of the whole pipeline asks: each stage through the load balancer
    (named after the stage) and each live Zope client directly (named after the client)."""
    urls = []
    for name in model['pipeline']:
        stage = model['stages'][name]
        if lb_address and stage['lb_port']:
            urls.append({'name': name, 'url': 'http://%s:%d%s' % (lb_address, stage['lb_port'], path)})
    for name in model['pipeline']:
        for client in model['stages'][name]['live']['clients']:
            urls.append({'name': client['id'], 'url': client['url'] + path})
    return urls


def host_places(model, stages_and_sides):
    """Where each host of a play sits in the pipeline, computed once for the play.

    ``stages_and_sides``: {host: (zopeops_stage or None, zopeops_side or None)} as the inventory
    gives them. Returns {host: place}: for a host of a stage, its ``side``, ``instance``,
    ``side_model``, ``zeo_address`` (address:port of its side's ZEO server; empty on a
    RelStorage side) and ``is_head``; for
    a host without a stage (a load balancer) an empty dict. Raises PipelineError naming every
    host whose stage and side the model does not hold it in."""
    places = {}
    problems = []
    for host in sorted(stages_and_sides):
        stage, side = stages_and_sides[host]
        if stage is None:
            places[host] = {}
            continue
        side = side or 'live'
        entry = model['stages'].get(stage)
        side_model = entry.get(side) if entry and side in ('live', 'upgrade') else None
        if side_model is None or host not in side_model['hosts']:
            problems.append(
                'Host %s says it belongs to stage %s (%s side), but the pipeline %s has no such '
                'host there: put it into the groups %s_zeo or ..._clients, or fix zopeops_stage / '
                'zopeops_side.' % (host, stage, side, ' -> '.join(model['pipeline']),
                                   instance_name(str(stage), side)))
            continue
        places[host] = {
            'side': side,
            'instance': side_model['instance'],
            'side_model': side_model,
            'zeo_address': ('%s:%s' % (side_model['zeo']['address'], side_model['zeo']['port'])
                            if side_model.get('zeo') else ''),
            'is_head': entry['predecessor'] is None,
        }
    if problems:
        raise PipelineError(problems)
    return places
