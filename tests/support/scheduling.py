"""make test's order of work for its two workers (``-n 2 --dist loadgroup``).

pytest-xdist's loadgroup hands out one work unit at a time, an ``xdist_group`` (run in order on
one worker) or a single test, in the order of its work queue: by default the groups with the
most tests first, whatever their length. A long group handed out late leaves one worker with
it while the other has nothing left. Here the groups known to be long go first, the longest
first, so that the two workers start on the two longest and the short groups and single tests
fill in after them (longest processing time first); the rest keeps xdist's order.

And a worker is given its next unit when it holds one test still to run, not two (xdist's
heuristic): a worker cannot start the last test it holds before it has the next one or is
told to stop, so one is the fewest that keeps it running, and the longest tests of a group
(its last two, say) no longer decide which worker takes the next long group.
"""
from __future__ import annotations

from xdist.scheduler import LoadGroupScheduling

# The groups, longest first (worker time on a quiet machine, estimated 2026-12-07 from the
# interrupted clean-clone run of that evening, at load 11-14: pipeline > 43 min, pipeline-faults
# 39 min, push_page_zope 25 s; and from the docs: the Plone test 18.5 min alone on busy cores,
# the RelStorage file 12-15 min and the multi-machine short scope 11.5 min at load 5-11;
# docs/benchmarks.md, "make test's budget"). A run with --durations should correct it.
LONGEST_FIRST = (
    'pipeline',
    'pipeline-faults',
    'plone',
    'relstorage-pipeline',
    'multihost',
    'second-app',
    'push_page_zope',
    'push_page_browser',
)


def order(scopes, longest_first=LONGEST_FIRST):
    """``scopes`` (group names or node ids) with the known long groups first, in their order;
    the others after them in the order they came."""
    rank = {name: index for index, name in enumerate(longest_first)}
    return sorted(scopes, key=lambda scope: rank.get(scope, len(rank)))


class LongestFirstScheduling(LoadGroupScheduling):
    """LoadGroupScheduling with its work queue in ``order`` and one test of look-ahead."""

    longest_first = LONGEST_FIRST
    _ordered = False

    def _assign_work_unit(self, node):
        if not self._ordered:  # the queue is complete before the first unit goes out
            for scope in order(list(self.workqueue), self.longest_first):
                self.workqueue.move_to_end(scope)
            self._ordered = True
        super()._assign_work_unit(node)

    def _reschedule(self, node):
        if node.shutting_down:
            return
        if not self.workqueue:
            node.shutdown()
            return
        if self._pending_of(self.assigned_work[node]) > 1:
            return
        self._assign_work_unit(node)
