# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn results into what a person reads: phase timings, tables, check rows."""
from __future__ import annotations

from ansible_collections.zopeops.stages.plugins.module_utils.promotion import phase_durations


def summary_table(rows, columns):
    """Rows of dicts -> aligned text lines with a header, for a readable play summary."""
    cells = [[str(c) for c in columns]] + [
        ['-' if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return ['  '.join(value.ljust(width) for value, width in zip(line, widths)).rstrip()
            for line in cells]


def status_rows(results):
    """zope_healthcheck results -> rows with name, url, status, revision (short), health."""
    rows = []
    for result in results or []:
        revision = result.get('revision')
        rows.append({
            'name': result.get('name') or result.get('url'),
            'url': result.get('url'),
            'status': result.get('status'),
            'revision': revision[:12] if isinstance(revision, str) else revision,
            'health': 'ok' if result.get('ok') else 'FAILED: %s' % (result.get('error') or '?'),
        })
    return rows


class FilterModule:
    def filters(self):
        return {'phase_durations': phase_durations, 'summary_table': summary_table,
                'status_rows': status_rows}
