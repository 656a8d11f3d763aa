# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The redact filter; its documentation is in redact.yml beside this file."""
from __future__ import annotations

from ansible_collections.zopeops.stages.plugins.module_utils.redact import redact_deep


class FilterModule:
    def filters(self):
        return {'redact': redact_deep}
