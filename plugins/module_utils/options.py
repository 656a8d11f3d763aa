# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A module's request made from another module (lb_cutover asks lb_switch's and zodb_replay's
requests with their own parameter dicts)."""
from __future__ import annotations


def with_defaults(spec, given, what):
    """A full parameter dict for the argument spec ``spec``: its defaults, ``given`` over
    them. A name the spec does not know is a programming error (TypeError naming ``what``)."""
    params = {name: option.get('default') for name, option in spec.items()}
    unknown = set(given) - set(params)
    if unknown:
        raise TypeError('not %s options: %s' % (what, ', '.join(sorted(unknown))))
    params.update(given)
    return params
