# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status_report and status_render filters; their documentation is in status_report.yml
and status_render.yml beside this file."""
from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

from ansible_collections.zopeops.stages.plugins.module_utils.status_report import (
    build_report, headline, refs_from_ls_remote, render_html, revision_label, revision_of,
    table_lines)

_COMMIT = re.compile(r'^[0-9a-f]{40}$')


def merge_hosts(results):
    """pipeline_status results of several hosts -> {instance: merged}; an instance spread over
    machines (ZEO on one, clients on others) gets its files from the ZEO host."""
    merged = {}
    for result in results or []:
        for name, found in ((result or {}).get('instances') or {}).items():
            into = merged.setdefault(name, {'clients': {}, 'drift': []})
            into['clients'].update(found.get('clients') or {})
            into['drift'].extend(found.get('drift') or [])
            if found.get('zeo_host') or 'deployed' not in into:
                for key in ('deployed', 'current', 'data', 'zeo_running', 'backup'):
                    if key in found:
                        into[key] = found[key]
    return merged


def resolve(ref, lines):
    """A ref the inventory names (commit, tag or branch) -> its commit, from ls-remote lines."""
    if not ref:
        return None
    if _COMMIT.match(str(ref)):
        return str(ref)
    found = {}
    for line in lines or []:
        parts = line.split()
        if len(parts) == 2:
            found[parts[1]] = parts[0]
    for name in ('refs/tags/%s^{}' % ref, 'refs/tags/%s' % ref, 'refs/heads/%s' % ref, ref):
        if name in found:
            return found[name]
    return None


def status_report(model, host_results, lb=None, conductor=None, ls_remote=None,
                  requested=None, generated_at=None):
    if not isinstance(model, dict) or 'pipeline' not in model:
        raise AnsibleFilterError('status_report needs the pipeline model (zopeops_model).')
    conductor = conductor or {}
    lb_states = {}
    for item in lb or []:
        before = (item or {}).get('before') or {}
        stage = (item or {}).get('item') or before.get('stage')
        if stage and before:
            lb_states[stage] = {key: before.get(key) for key in (
                'active', 'frozen', 'frozen_until', 'frozen_held')}
    expected = {}
    for instance, ref in (requested or {}).items():
        commit = resolve(ref, ls_remote)
        if commit:
            expected[instance] = {'ref': ref, 'commit': commit}
    return build_report(model, merge_hosts(host_results), lb=lb_states,
                        probes=conductor.get('probes'), promotions=conductor.get('promotions'),
                        refs=refs_from_ls_remote(ls_remote), expected=expected,
                        generated_at=generated_at)


def revision_name(commit, ls_remote=None):
    """A commit -> 'demo-v2 4eccdb1' (its tags, then branches, as status.yml names it), or
    its short hash alone; '-' for none."""
    return revision_label(revision_of(commit or None, refs_from_ls_remote(ls_remote)))


def status_render(report, form='text'):
    if form == 'text':
        return table_lines(report)
    if form == 'html':
        return render_html(report)
    if form == 'headline':
        return headline(report)
    raise AnsibleFilterError("status_render: form is 'text', 'html' or 'headline', not %r."
                             % (form,))


class FilterModule:
    def filters(self):
        return {'status_report': status_report, 'status_render': status_render,
                'revision_name': revision_name}
