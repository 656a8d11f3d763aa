"""Processes a test starts, and the guarantee that they are stopped again, by PID."""
from __future__ import annotations

import os
import signal
import subprocess
import time


class ProcessGroup:
    """Starts processes in their own session and stops every one of them at exit.

    Use as a context manager (or from a fixture's finalizer) so that processes are stopped
    also when the test fails. Only the PIDs this object started are signalled.
    """

    def __init__(self):
        self.procs = []

    def start(self, argv, log_path=None, **kwargs):
        out = open(log_path, 'ab') if log_path else subprocess.DEVNULL
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **kwargs)
        if log_path:
            out.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc, timeout=10):
        if proc.poll() is not None:
            return proc.returncode
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return proc.poll()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(timeout)

    def kill(self, proc, timeout=10):
        """SIGKILL the process's whole group at once, as a crash would; wait for it."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait(timeout)

    def stop_all(self):
        for proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop_all()


def wait_for(predicate, timeout=30.0, interval=0.1, what='condition'):
    """Poll ``predicate`` until it returns a true value; raise naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError('timed out after %.0fs waiting for %s' % (timeout, what))
        time.sleep(interval)
