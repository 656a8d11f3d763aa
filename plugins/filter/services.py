# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The client_programs and host_port filters; their documentation is in client_programs.yml and
host_port.yml beside this file."""
from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.zopeops.stages.plugins.module_utils.readiness import join_address


def client_programs(clients, instance, probe_host, log_dir, process_manager='supervisord'):
    """[{name, port}] -> zeo_service's ``programs``: [{name, address, log_path}].

    The program names follow docs/architecture.md (Processes): ``<instance>-<client>`` under
    supervisord, ``zopeops-<instance>-<client>`` under systemd.
    """
    prefix = '' if process_manager == 'supervisord' else 'zopeops-'
    programs = []
    for client in clients or []:
        try:
            name, port = client['name'], int(client['port'])
        except (KeyError, TypeError, ValueError):
            raise AnsibleFilterError('client_programs: every client needs a name and a numeric '
                                     'port, got %r' % (client,)) from None
        programs.append({'name': '%s%s-%s' % (prefix, instance, name),
                         'address': join_address(probe_host, port),
                         'log_path': '%s/%s.log' % (log_dir.rstrip('/'), name)})
    return programs


def host_port(host, port):
    """``host:port`` as zeo_service's address (an IPv6 host in brackets)."""
    try:
        return join_address(str(host), int(port))
    except (TypeError, ValueError):
        raise AnsibleFilterError('host_port: the port must be a number, got %r' % (port,)) from None


class FilterModule:
    def filters(self):
        return {'client_programs': client_programs, 'host_port': host_port}
