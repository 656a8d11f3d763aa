"""Real systemd machines here: a Debian rootfs booted by ``systemd-nspawn --boot`` runs systemd
as PID 1 in its own PID and mount namespaces (shared/DESIGN.md; there is no container engine).

The rootfs is built once by ``scripts/ensure-nspawn-rootfs`` (``make test`` runs it as root) and
never changed: each container boots from a root of its own (an overlay, or nspawn's volatile
one). Used by the multi-machine harness (tests/harness/machines.py) and the real-systemd test
(tests/integration/services/test_systemd_units.py).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import time

ROOTFS = pathlib.Path(os.environ.get('ZOPEOPS_NSPAWN_ROOTFS',
                                     '/var/cache/zopeops-stages/nspawn-bookworm'))
# What scripts/ensure-nspawn-rootfs writes into the rootfs it built: its package list.
PACKAGES_STAMP = 'etc/zopeops-rootfs-packages'
# Each booted systemd takes about ten inotify instances (PID 1, journald, logind, ...) of the
# host's per-user limit, 128 by default: the ten machines of the multi-machine harness and the
# real-systemd test's machine at once exhausted it ("Failed to allocate manager object: Too many
# open files" at boot, seen in a make test run).
INOTIFY_INSTANCES = pathlib.Path('/proc/sys/fs/inotify/max_user_instances')
INOTIFY_INSTANCES_NEEDED = 1024


def ensure_inotify_instances(limit=INOTIFY_INSTANCES, needed=INOTIFY_INSTANCES_NEEDED):
    """Raise the host's inotify instance limit to ``needed`` if it is lower (root only; never
    lowered). Returns the limit in force."""
    current = int(limit.read_text().split()[0])
    if current < needed:
        try:
            limit.write_text('%d\n' % needed)
        except OSError:
            return current
        return needed
    return current


def unavailable_reason(need=('systemd',)):
    """Why a systemd container cannot boot here (for pytest.skip), or None. ``need``: packages
    the rootfs must have been built with."""
    if os.geteuid() != 0:
        return 'a systemd container needs root'
    for tool in ('systemd-nspawn', 'nsenter'):
        if shutil.which(tool) is None:
            return ('a systemd container needs `%s` (apt-get install systemd-container '
                    'util-linux)' % tool)
    if not (ROOTFS / 'usr' / 'lib' / 'systemd' / 'systemd').exists():
        return ('no Debian rootfs with systemd at %s (ZOPEOPS_NSPAWN_ROOTFS): build it as root '
                'with scripts/ensure-nspawn-rootfs %s' % (ROOTFS, ROOTFS))
    stamp = ROOTFS / PACKAGES_STAMP
    built = set(stamp.read_text().strip().split(',')) if stamp.exists() else {'systemd'}
    missing = sorted(set(need) - built)
    if missing:
        return ('the rootfs at %s lacks %s: build it again as root with '
                'scripts/ensure-nspawn-rootfs' % (ROOTFS, ', '.join(missing)))
    return None


def _descendant_init(pid):
    """The container's systemd: the descendant of nspawn ``pid`` that is PID 1 in its own PID
    namespace (the last field of its NSpid line is 1)."""
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = pathlib.Path('/proc/%d/status' % current).read_text()
            nspid = [line.split()[1:] for line in status.splitlines()
                     if line.startswith('NSpid:')]
            if current != pid and nspid and nspid[0][-1] == '1':
                return current
            for task in pathlib.Path('/proc/%d/task' % current).iterdir():
                pending += [int(c) for c in (task / 'children').read_text().split()]
        except OSError:
            continue
    return None


class Container:
    """One systemd-nspawn container booting ``directory`` (or, with ``volatile``, the rootfs
    under a throw-away overlay). ``options`` are more nspawn options (binds, network).

    :meth:`start` boots it and returns once systemd reports the boot finished; :meth:`run` runs
    a command inside every namespace of it (so a pid it prints is one of its own); :meth:`path`
    is a path inside it as the host can open it; :meth:`poweroff` shuts it down (systemd stops
    every unit) and :meth:`kill` loses it as in a power cut. Only processes this object started
    are ever signalled, by PID."""

    def __init__(self, name, log_path, directory=None, options=()):
        self.name = name
        self.log_path = pathlib.Path(log_path)
        self.directory = directory
        self.options = list(options)
        self.proc = None
        self.leader = None

    def argv(self):
        root = (['-D', str(self.directory)] if self.directory is not None
                else ['-D', str(ROOTFS), '--volatile=overlay'])
        return ['systemd-nspawn', *root, '--boot', '--machine=%s' % self.name,
                '--register=no', '--keep-unit', '--link-journal=no', '--resolv-conf=off',
                '--timezone=off', *self.options]

    def launch(self):
        """Start booting (returns at once; :meth:`wait_booted` waits)."""
        ensure_inotify_instances()
        with open(self.log_path, 'ab') as log:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.leader = None

    def wait_booted(self, timeout=120):
        deadline = time.monotonic() + timeout
        state = ''
        while time.monotonic() < deadline and self.proc.poll() is None:
            self.leader = self.leader or _descendant_init(self.proc.pid)
            if self.leader:
                try:
                    state = self.run(['systemctl', 'is-system-running'], timeout=20).stdout.strip()
                except subprocess.TimeoutExpired:
                    state = 'timeout'
                if state in ('running', 'degraded'):
                    return self
            time.sleep(0.3)
        tail = self.log_path.read_text(errors='replace')[-2000:]
        self.kill()
        raise RuntimeError('container %s did not boot within %d s (state %r, nspawn %s): %s'
                           % (self.name, timeout, state, self.proc.returncode, tail))

    def start(self, timeout=120):
        self.launch()
        return self.wait_booted(timeout)

    def running(self):
        return self.proc is not None and self.proc.poll() is None and self.leader is not None

    def run(self, argv, check=False, timeout=60, **kwargs):
        """Run a command as root inside the container (all its namespaces)."""
        if not self.running():
            raise RuntimeError('container %s is not running' % self.name)
        proc = subprocess.run(['nsenter', '-t', str(self.leader), '-a', '--', *argv],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              **kwargs)
        if check and proc.returncode != 0:
            raise RuntimeError('%s on %s failed (%d): %s' % (
                ' '.join(argv), self.name, proc.returncode, (proc.stderr or proc.stdout).strip()))
        return proc

    def path(self, absolute):
        """A path of the running container as the host opens it (its own /run included)."""
        return pathlib.Path('/proc/%d/root' % self.leader) / \
            pathlib.PurePosixPath(absolute).relative_to('/')

    def poweroff(self):
        """Ask systemd to shut down (nspawn turns SIGTERM into a poweroff); :meth:`wait_down`
        waits for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        return self

    def wait_down(self, timeout=60):
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        """Every process of the container at once: SIGKILL to its PID 1 ends its PID namespace
        (the kernel kills the rest); then nspawn itself."""
        if self.leader:
            try:
                os.kill(self.leader, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(15)
        self.leader = None
