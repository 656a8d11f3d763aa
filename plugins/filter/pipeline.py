# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pipeline_model, machine_leaders, pipeline_places, pipeline_check_urls,
relstorage_databases, revision_check and stages_changed filters; their documentation is in the
.yml file of each name beside this file."""
from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.zopeops.stages.plugins.module_utils.pipeline import (
    PipelineError, build_model, check_urls, databases_on_server, host_places,
    leaders_by_machine, stages_changed)
from ansible_collections.zopeops.stages.plugins.module_utils.revision_proof import (
    proof_problems)


def pipeline_model(groups, hostvars, pipeline):
    try:
        return build_model(dict(groups), hostvars, list(pipeline or []))
    except PipelineError as exc:
        raise AnsibleFilterError(str(exc)) from None


def machine_leaders(hosts, hostvars):
    """The first host by name on each machine (its ``ansible_host``, else its own name): the one
    that does the machine's shared work. One pass over the hosts, where a per-host Jinja lookup
    over every host's variables cost O(hosts^2) templating."""
    return leaders_by_machine(
        {host: hostvars[host].get('ansible_host') or host for host in hosts})


def pipeline_places(model, hosts, hostvars):
    """Each play host's place in the pipeline (its side, instance, side model, ZEO address,
    whether its stage heads the pipeline), worked out once for the play from the inventory's
    zopeops_stage and zopeops_side; a load balancer's place is empty. Fails naming every host
    that says it belongs where the model has no such host."""
    def given(host, name):
        value = hostvars[host].get(name)
        return None if value is None else str(value)
    try:
        return host_places(model, {host: (given(host, 'zopeops_stage'), given(host, 'zopeops_side'))
                                   for host in hosts})
    except PipelineError as exc:
        raise AnsibleFilterError(str(exc)) from None


def revision_check(settings):
    """The inventory's zopeops_health_path and zopeops_revision_* settings, validated, as the
    options of the modules that prove a revision (health_path, revision_proof, ...)."""
    proof = settings.get('proof')
    page = settings.get('json_path') if proof == 'json' else settings.get('page')
    problems = proof_problems(proof, settings.get('health_path'), page,
                              settings.get('json_key'), settings.get('regex'))
    if problems:
        raise AnsibleFilterError('The revision proof is misconfigured: %s (docs/applications.md).'
                                 % '; '.join(problems))
    return {'health_path': settings['health_path'], 'revision_proof': proof,
            'revision_page': page or None,
            'revision_json_key': settings.get('json_key') if proof == 'json' else None,
            'revision_regex': settings.get('regex') if proof == 'regex' else None}


class FilterModule:
    def filters(self):
        return {'pipeline_model': pipeline_model, 'machine_leaders': machine_leaders,
                'pipeline_places': pipeline_places,
                'pipeline_check_urls': check_urls, 'relstorage_databases': databases_on_server,
                'revision_check': revision_check, 'stages_changed': stages_changed}
