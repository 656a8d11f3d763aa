# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The releases of one machine (``<root>/releases/<commit>``): which are in use and why, and
which a prune keeps. Shared by app_release (which links them) and release_prune (which removes
them); both hold ``<root>/releases/.lock`` while they change anything there.

A release is in use when
- an instance's ``current`` link (or a ``current.tmp-*`` link a relink left) points at it;
- an instance's ``deployed.json`` names it as its ``revision`` or ``previous_revision`` (the
  release a code rollback returns to);
- a running process works in it (its ``/proc/<pid>/cwd``: a client started before its
  ``current`` moved runs the old release until it restarts);
- a promotion's state names it (the plan's revisions of a run, the stage's rollback target);
- the caller names it (``keep``).
Everything else is kept by age: the newest ``keep_count`` by build time.
"""
from __future__ import annotations

import os
import re

SHA_RE = re.compile(r'^[0-9a-f]{40}$')
LOCK_NAME = '.lock'
TRASH_PREFIX = '.trash-'
# The keys of a promotion's state (promotion_state) that name revisions a run uses.
PLAN_REVISION_KEYS = ('twin_revision', 'live_revision', 'from_revision')


def linked_release(link):
    """The folder the symlink ``link`` points at (absolute, normalised), or None."""
    try:
        target = os.readlink(link)
    except OSError:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(link), target))


def release_of(path, releases):
    """The commit id of the release ``path`` is (or lies in) under ``releases``, or None."""
    if not path:
        return None
    real, base = os.path.realpath(path), os.path.realpath(releases)
    if not real.startswith(base + os.sep):
        return None
    name = real[len(base) + 1:].split(os.sep, 1)[0]
    return name if SHA_RE.match(name) else None


def _add(in_use, sha, why):
    if sha and SHA_RE.match(sha):
        reasons = in_use.setdefault(sha, [])
        if why not in reasons:
            reasons.append(why)


def instances_in_use(root, releases, read_json):
    """{commit: [reason, ...]} for the instances under ``root`` (their links and records)."""
    in_use = {}
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except FileNotFoundError:
        return in_use
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False) or entry.name == 'releases':
            continue
        for name in sorted(os.listdir(entry.path)):
            if name == 'current' or name.startswith('current.tmp-'):
                sha = release_of(linked_release(os.path.join(entry.path, name)), releases)
                _add(in_use, sha, '%s/%s' % (entry.name, name))
        try:
            record = read_json(os.path.join(entry.path, 'deployed.json')) or {}
        except ValueError:
            record = {}
        if isinstance(record, dict):
            _add(in_use, str(record.get('revision') or ''),
                 '%s/deployed.json revision' % entry.name)
            _add(in_use, str(record.get('previous_revision') or ''),
                 '%s/deployed.json previous_revision (a code rollback)' % entry.name)
    return in_use


def processes_in_use(releases, proc='/proc'):
    """{commit: [reason]} for the running processes whose working folder is in a release."""
    in_use = {}
    try:
        pids = [name for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return in_use
    for pid in pids:
        sha = release_of(linked_release(os.path.join(proc, pid, 'cwd')), releases)
        _add(in_use, sha, 'process %s runs in it' % pid)
    return in_use


def promotion_revisions(states):
    """[(revision name, reason)] that the promotions' states (promotion_state's <stage>.json,
    one per stage) use: every revision of each run's plan and each stage's rollback targets."""
    named = []
    for state in states or []:
        if not isinstance(state, dict):
            continue
        plan = state.get('plan') or {}
        stage = plan.get('stage') or state.get('stage') or '?'
        for key in PLAN_REVISION_KEYS:
            if plan.get(key):
                named.append((str(plan[key]), 'promotion of %s (%s, %s)'
                              % (stage, state.get('status') or '?', key)))
        target = state.get('rollback_target') or {}
        if isinstance(target, dict) and target.get('revision'):
            named.append((str(target['revision']), 'rollback target of %s' % stage))
    return named


def choose(releases, in_use, keep_count):
    """Split ``releases`` ({commit: built_at}) into (kept, removed): every one in ``in_use``,
    plus the ``keep_count`` newest others by build time (then by name); both lists of ids."""
    others = sorted((sha for sha in releases if sha not in in_use),
                    key=lambda sha: (releases[sha], sha), reverse=True)
    kept = sorted(sha for sha in releases if sha in in_use) + others[:max(keep_count, 0)]
    return kept, others[max(keep_count, 0):]
