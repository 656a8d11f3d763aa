#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
module: release_prune
short_description: Remove the code releases of a machine that nothing uses, but the newest few
version_added: 0.6.0
description:
  - Keeps every release under C(<root>/releases) that is in use, plus the O(keep_count) newest
    others (by build time), and removes the rest.
  - "A release is in use when an instance under O(root) points at it (its C(current) link, or
    a C(current.tmp-*) link a relink left), when an instance's C(deployed.json) names it as its
    C(revision) or C(previous_revision) (the release a code rollback returns to), when a
    running process works in it (C(/proc/<pid>/cwd)), when a promotion's state in
    O(promotions) names it (the revisions of a run's plan, a stage's rollback target), or when
    O(keep) names it. Names that are no commit id (a branch, a tag) are resolved in the
    releases' git mirror and also matched against the revision each release was built for."
  - Runs under the releases' lock (C(<root>/releases/.lock)), the one that
    M(zopeops.stages.app_release) holds while it builds a release and points an instance at it,
    so a release being built or about to be linked is never seen as unused. A folder of a
    build that died (no C(release.json)) is removed.
  - A release is removed by renaming it into C(<root>/releases/.trash-<commit>) under the lock,
    then deleting that folder; a run that dies half-way leaves a trash folder, never a
    half-removed release, and the next run deletes the trash.
author:
  - zopeops.stages developers (@zopeops)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  root:
    description: The machine's zopeops folder (its releases are in C(<root>/releases)).
    type: path
    required: true
  keep_count:
    description: How many releases to keep besides those in use, the newest by build time.
    type: int
    default: 5
  keep:
    description: Revisions (commit ids, tags or branches) to keep as well, e.g. one a run is
      about to deploy.
    type: list
    elements: str
    default: []
  promotions:
    description:
      - The states of the stages' promotions (the content of C(<stage>.json) that
        M(zopeops.stages.promotion_state) writes, one per stage), read on the conductor by the
        role. Each revision of a run's plan and each stage's rollback target is kept.
    type: list
    elements: dict
    default: []
  lock_timeout:
    description: Seconds to wait for a build that holds the releases' lock; then nothing is
      removed this time and the result says so (C(busy)).
    type: int
    default: 120
attributes:
  check_mode:
    support: full
    details: Says which releases would be removed and kept; removes nothing.
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
seealso:
  - module: zopeops.stages.app_release
"""

EXAMPLES = r"""
- name: Remove the releases no stage, twin or promotion uses, but the newest 5.
  zopeops.stages.release_prune:
    root: /srv/zopeops
    keep_count: 5
    promotions: "{{ states }}"
  register: pruned
"""

RETURN = r"""
removed:
  description: The commit ids of the releases removed (would be, in check mode), oldest last;
    an unfinished build's folder is listed too.
  returned: success
  type: list
  elements: str
kept:
  description: The commit ids of the releases kept, those in use first.
  returned: success
  type: list
  elements: str
in_use:
  description: For each release in use, why (the links, records, processes and promotions
    naming it).
  returned: success
  type: dict
  sample: {3f2c1a9e0b7d4c55a1e2f3b4c5d6e7f8a9b0c1d2: [prod/current, "test/deployed.json revision"]}
busy:
  description: True when a build held the releases' lock past O(lock_timeout), so nothing
    was removed.
  returned: success
  type: bool
"""

import os
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zopeops.stages.plugins.module_utils.files import (
    LockTimeout, file_lock, read_json)
from ansible_collections.zopeops.stages.plugins.module_utils.releases import (
    LOCK_NAME, SHA_RE, TRASH_PREFIX, choose, instances_in_use, processes_in_use,
    promotion_revisions)


def _release_info(path):
    """(complete, built_at, requested) of a release folder."""
    try:
        info = read_json(os.path.join(path, 'release.json'))
    except ValueError:
        info = {}
    if info is None:
        return False, '', ''
    if not isinstance(info, dict):
        info = {}
    stamp = str(info.get('built_at') or '')
    return True, stamp, str(info.get('requested') or '')


def _resolve(mirror, name):
    if SHA_RE.match(name) or not os.path.isdir(mirror):
        return name
    proc = subprocess.run(['git', '--git-dir', mirror, 'rev-parse', '--verify', '--quiet',
                           name + '^{commit}'], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else name


def survey(params, releases):
    """(complete {commit: built_at}, incomplete [commit], in_use {commit: [why]})."""
    complete, incomplete, requested = {}, [], {}
    for name in sorted(os.listdir(releases)):
        path = os.path.join(releases, name)
        if not SHA_RE.match(name) or not os.path.isdir(path) or os.path.islink(path):
            continue
        done, built_at, asked = _release_info(path)
        if done:
            complete[name] = built_at
            requested.setdefault(asked, []).append(name)
        else:
            incomplete.append(name)
    in_use = instances_in_use(params['root'], releases, read_json)
    for sha, reasons in processes_in_use(releases).items():
        in_use.setdefault(sha, []).extend(reasons)
    named = [(name, 'kept by the caller') for name in params['keep']]
    named += promotion_revisions(params['promotions'])
    mirror = os.path.join(releases, '.mirror.git')
    for name, why in named:
        name = name.strip()
        for sha in {_resolve(mirror, name)} | set(requested.get(name, [])):
            if sha in complete or sha in incomplete:
                reasons = in_use.setdefault(sha, [])
                if why not in reasons:
                    reasons.append(why)
    return complete, incomplete, {sha: in_use[sha] for sha in sorted(in_use)
                                  if sha in complete or sha in incomplete}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type='path', required=True),
            keep_count=dict(type='int', default=5),
            keep=dict(type='list', elements='str', default=[]),
            promotions=dict(type='list', elements='dict', default=[]),
            lock_timeout=dict(type='int', default=120),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params['keep_count'] < 0:
        module.fail_json(msg='keep_count is %d; give 0 or more (how many releases to keep besides '
                             'those in use).' % params['keep_count'])
    releases = os.path.join(params['root'], 'releases')
    result = dict(changed=False, removed=[], kept=[], in_use={}, busy=False)
    if not os.path.isdir(releases):
        module.exit_json(msg='%s does not exist: no release to prune.' % releases, **result)
    trash = []
    try:
        with file_lock(os.path.join(releases, LOCK_NAME), timeout=params['lock_timeout'],
                       what="the releases' lock (a build)"):
            complete, incomplete, in_use = survey(params, releases)
            kept, removed = choose(complete, in_use, params['keep_count'])
            kept += [sha for sha in incomplete if sha in in_use]
            removed += [sha for sha in incomplete if sha not in in_use]
            result.update(kept=kept, removed=removed, in_use=in_use, changed=bool(removed))
            if not module.check_mode:
                trash = [os.path.join(releases, name) for name in os.listdir(releases)
                         if name.startswith(TRASH_PREFIX)]
                for sha in removed:
                    target = os.path.join(releases, TRASH_PREFIX + sha)
                    shutil.rmtree(target, ignore_errors=True)
                    os.rename(os.path.join(releases, sha), target)
                    trash.append(target)
    except LockTimeout as exc:
        result['busy'] = True
        module.exit_json(msg='%s Nothing was removed this time.' % exc, **result)
    except OSError as exc:
        module.fail_json(msg='Pruning the releases in %s failed: %s. Check that the folder is '
                             'writable by this account.' % (releases, exc), **result)
    for path in trash:  # outside the lock: nothing links to a trash folder
        shutil.rmtree(path, ignore_errors=True)
    result['msg'] = '%d release(s) kept (%d in use), %d removed%s.' % (
        len(result['kept']), len(result['in_use']), len(result['removed']),
        ' (check mode: would be)' if module.check_mode and result['removed'] else '')
    module.exit_json(**result)


if __name__ == '__main__':
    main()
