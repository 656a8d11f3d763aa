# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pipeline_model and pipeline_check_urls filters; their documentation is in
pipeline_model.yml and pipeline_check_urls.yml beside this file."""
from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.zopeops.stages.plugins.module_utils.pipeline import (
    PipelineError, build_model, check_urls)


def pipeline_model(groups, hostvars, pipeline):
    try:
        return build_model(dict(groups), hostvars, list(pipeline or []))
    except PipelineError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {'pipeline_model': pipeline_model, 'pipeline_check_urls': check_urls}
