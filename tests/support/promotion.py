"""Promotions as a user runs them: under a read load and an acknowledged-write load through
the stage's HAProxy frontend, then checked for 0 failed reads and 0 lost writes.

``run_under_load`` starts ``ansible-playbook`` in the background (so that a test can interrupt
it with SIGINT at the moment it chooses), with both loads running from before it starts until
after it ends. ``lost_writes`` says which acknowledged writes a stage's data does not hold,
by the rules of docs/promotion.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import tempfile
import time

import requests

from .load import LoadGenerator
from .writeload import WriteLoad, admin_auth
from .zodbcheck import write_ids_in_datafs, write_ids_over_http


class SandboxFiles:
    """What a promotion test reads in a local sandbox (``self.sandbox``): the admin's password,
    an instance's Data.fs, a stage's promotion state, the ledger."""

    def admin_auth(self):
        """(user, password) of the sandbox's Zope admin, for the write load."""
        return admin_auth(self.sandbox / 'secrets' / 'zope-admin-password')

    def datafs(self, instance):
        return self.sandbox / instance / 'var' / 'filestorage' / 'Data.fs'

    def state(self, stage):
        path = self.sandbox / 'lb' / 'promotions' / ('%s.json' % stage)
        return json.loads(path.read_text()) if path.exists() else {}

    def ledger(self):
        """The ledger's lines (restores, restarts, promotions), oldest first."""
        path = self.sandbox / 'lb' / 'promotions' / 'ledger.jsonl'
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclasses.dataclass
class Run:
    proc: subprocess.CompletedProcess
    reads: LoadGenerator
    writes: WriteLoad
    interrupted_at: float | None = None

    @property
    def output(self):
        return self.proc.stdout[-15000:] + self.proc.stderr[-4000:]

    def report(self):
        return 'reads: %s; writes: %s' % (self.reads.report(), self.writes.report())


class Background:
    """ansible-playbook running in the background, in its own process group.

    Its output goes to temporary files, not pipes: a test that polls for a moment to act
    does not read a pipe meanwhile, and a full pipe would stop the playbook where it is.
    """

    def __init__(self, argv, env, cwd):
        self.out = tempfile.TemporaryFile(mode='w+')
        self.err = tempfile.TemporaryFile(mode='w+')
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self.out, stderr=self.err,
                                     text=True, start_new_session=True)

    def interrupt(self):
        """Ctrl-C, as a person at the terminal sends it: SIGINT to the whole process group."""
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def wait(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        texts = []
        for handle in (self.out, self.err):
            handle.seek(0)
            texts.append(handle.read())
            handle.close()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, *texts)


def run_under_load(pipeline, playbook, stage, extra=None, during=None, timeout=900,
                   write_threads=2):
    """Run ``playbook`` for ``stage`` with reads and writes through its frontends.

    Reads go through every balancer of the pipeline (``pipeline.lb_bases(stage)``), writes
    through the first. ``during(background)``, if given, runs in this thread while the playbook
    runs (to wait for a moment and interrupt it, or to kill a service); it returns the time it
    acted, or None.
    """
    bases = pipeline.lb_bases(stage)
    acted = None
    with contextlib.ExitStack() as loads:
        reads = [loads.enter_context(LoadGenerator(base + '/@@zopeops-info', threads=2,
                                                   max_seconds=timeout))
                 for base in bases]
        writes = loads.enter_context(WriteLoad(bases[0], auth=pipeline.admin_auth(),
                                               threads=write_threads, max_seconds=timeout,
                                               pause=0.15))
        time.sleep(0.5)  # both loads running before the run starts
        background = pipeline.background_playbook(playbook, dict({'stage': stage}, **(extra or {})))
        if during is not None:
            acted = during(background)
        proc = background.wait(timeout)
        time.sleep(0.5)
    return Run(proc, reads[0] if len(reads) == 1 else ReadLoads(reads), writes, acted)


class ReadLoads:
    """The read loads through several balancers, seen as one."""

    def __init__(self, loads):
        self.loads = loads

    @property
    def failures(self):
        return [failure for load in self.loads for failure in load.failures]

    @property
    def total(self):
        return sum(load.total for load in self.loads)

    def report(self):
        return ' | '.join('%s: %s' % (load.url, load.report()) for load in self.loads)


def state_events(pipeline, stage):
    state = pipeline.state(stage)
    return state, {(e.get('phase'), e.get('event')): float(e['at']) for e in state.get('events', [])}


def expected_writes(run, stage, policy, switch_back_at=None):
    """The acknowledged ids the stage's data must hold after a successful promotion.

    ``upstream`` replaces the stage's content by its predecessor's, so the writes the stage
    itself acknowledged before traffic moved to the twin are gone by definition; everything the
    twin acknowledged, and everything the stage acknowledged after the switch back, must be
    there. Every other policy keeps every acknowledged write.
    """
    acked = run.writes.acknowledged
    if policy != 'upstream':
        return set(acked)
    twin = stage + '_upgrade'
    return {write_id for write_id, entry in acked.items()
            if entry['instance'] == twin
            or (switch_back_at is not None and entry['at'] > switch_back_at)}


def lost_writes(pipeline, stage, expected, datafs=None):
    """The expected ids missing from the stage's live data, through HTTP and in its Data.fs."""
    over_http = write_ids_over_http(pipeline.lb_bases(stage)[0], pipeline.admin_auth())
    in_file = write_ids_in_datafs(datafs or pipeline.datafs(stage))
    return {'http': sorted(set(expected) - over_http)[:20],
            'datafs': sorted(set(expected) - in_file)[:20],
            'missing_http': len(set(expected) - over_http),
            'missing_datafs': len(set(expected) - in_file)}


def assert_loads_clean(pipeline, stage, reads, writes, min_writes=5):
    """The read load saw no failure, the write load at least ``min_writes`` acknowledged and
    none failed, and every acknowledged write is served over HTTP and in the stage's Data.fs."""
    assert reads.total > 0 and not reads.failures, reads.report()
    assert len(writes.acknowledged) >= min_writes and not writes.failed, writes.report()
    lost = lost_writes(pipeline, stage, set(writes.acknowledged))
    assert lost['missing_http'] == 0 and lost['missing_datafs'] == 0, lost


def assert_zero_loss(pipeline, run, stage, policy, min_writes=5, earlier=()):
    """0 failed reads, writes really happened, and none acknowledged is missing.

    ``earlier``: runs of the same promotion that stopped with the traffic on the twin, which
    ``run`` (a resume) finished: what the twin acknowledged during them must be there too.
    """
    for each in (*earlier, run):
        assert not each.reads.failures, each.report()
        assert not each.writes.failed, each.report()
    assert run.reads.total > 20, run.report()
    assert len(run.writes.acknowledged) >= min_writes, run.report()
    events = state_events(pipeline, stage)[1]
    expected = expected_writes(run, stage, policy, events.get(('cutover_to_live', 'start')))
    for each in earlier:
        expected |= expected_writes(each, stage, policy)
    lost = lost_writes(pipeline, stage, expected)
    assert lost['missing_http'] == 0 and lost['missing_datafs'] == 0, (lost, run.report())
    return expected


# --- what the pipeline tests ask of a stage ----------------------------------------------

def info(pipeline, stage):
    response = requests.get('http://127.0.0.1:%d/@@zopeops-info' % pipeline.lb_port(stage),
                            timeout=15)
    response.raise_for_status()
    return response.json()


def said(proc):
    """What a run printed, with the wrapping of its result lines undone (for message checks)."""
    return ' '.join((proc.stdout + proc.stderr).split())


def output(proc):
    return proc.stdout[-15000:] + proc.stderr[-4000:]


def lock_dir(pipeline, stage):
    return pipeline.sandbox / 'lb' / 'promotions' / ('%s.lock' % stage)


def refused(pipeline, stage, message, watch=('beta', 'test', 'prod'), **extra):
    before = {s: info(pipeline, s)['revision'] for s in watch}
    state_before = pipeline.state(stage)
    proc = pipeline.playbook('promote.yml', dict({'stage': stage}, **extra))
    assert proc.returncode != 0, output(proc)
    assert message in said(proc), output(proc)
    assert 'Traceback' not in proc.stdout + proc.stderr
    assert {s: info(pipeline, s)['revision'] for s in before} == before
    assert pipeline.state(stage) == state_before  # a refused run writes no state
    return proc


def wait_for_text(path, text, background, timeout=300):
    """Poll a file (a map file the balancer's switch rewrites) until it holds ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and background.proc.poll() is None:
        try:
            if text in path.read_text():
                return time.time()
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    return None


def frozen_in_file(path, stage, now=None):
    """Whether the frozen map file ``path`` holds a freeze of ``stage`` in force (a lease whose
    deadline has not passed, or a held one): the value HAProxy would load from it."""
    from ansible_collections.zopeops.stages.plugins.module_utils.haproxy import (
        freeze_state, parse_map_text)
    try:
        value = dict(parse_map_text(path.read_text())).get(stage, '0')
    except FileNotFoundError:
        return False
    return freeze_state(value, now)['frozen']


def wait_for_freeze(path, stage, background, timeout=300):
    """Poll the frozen map file until ``stage`` is frozen in it; the epoch seen, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and background.proc.poll() is None:
        if frozen_in_file(path, stage):
            return time.time()
        time.sleep(0.005)
    return None


def map_file(pipeline, name):
    return pipeline.sandbox / 'lb' / 'etc' / name
