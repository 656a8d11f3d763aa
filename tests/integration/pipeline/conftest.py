"""The whole local pipeline, brought up once for the session in a temporary sandbox."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import subprocess
import sys

import pytest

from support.ansible import playbook_command, run_playbook
from support.promotion import Background, SandboxFiles
from support.paths import REPO
from support.ports import free_port_block

PORTS = 61  # inventories/local uses zopeops_port_base + 0 .. 49, and 60 (the push engine)


@dataclasses.dataclass
class Pipeline(SandboxFiles):
    sandbox: pathlib.Path
    port_base: int
    first_run: subprocess.CompletedProcess

    @property
    def inventory(self):
        return REPO / 'inventories' / 'local'

    @property
    def extra_vars(self):
        return {'zopeops_sandbox': str(self.sandbox), 'zopeops_port_base': self.port_base}

    @property
    def runtime_dir(self):
        return pathlib.Path('/tmp/zopeops-' + hashlib.sha1(
            str(self.sandbox).encode()).hexdigest()[:10])

    def lb_port(self, stage):
        return self.port_base + ['dev', 'beta', 'test', 'prod'].index(stage)

    def lb_bases(self, stage):
        """The stage's frontend on each balancer (one here)."""
        return ['http://127.0.0.1:%d' % self.lb_port(stage)]

    def playbook(self, name, extra=None, **kwargs):
        return run_playbook(name, self.inventory, dict(self.extra_vars, **(extra or {})),
                            **kwargs)

    def background_playbook(self, name, extra=None):
        """ansible-playbook started in the background, in its own process group."""
        argv, env = playbook_command(name, self.inventory, dict(self.extra_vars, **(extra or {})))
        return Background(argv, env, str(REPO))

    def revision_of(self, ref):
        """The commit id of a ref of the sandbox's demo application repository."""
        return subprocess.run(['git', '--git-dir', str(self.sandbox / 'app.git'), 'rev-parse',
                               ref + '^{commit}'], capture_output=True, text=True,
                              check=True).stdout.strip()

    def program_states(self):
        """{supervisord program: state} of the sandbox's supervisord."""
        out = self.supervisorctl('status').stdout
        return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}

    def supervisorctl(self, *args):
        return subprocess.run(
            [str(pathlib.Path(sys.executable).parent / 'supervisorctl'), '-c',
             str(self.sandbox / 'supervisor' / 'supervisord.conf'), *args],
            capture_output=True, text=True, timeout=60, check=False)


def stop_sandbox(sandbox):
    subprocess.run([sys.executable, str(REPO / 'scripts' / 'sandbox-stop'), str(sandbox)],
                   timeout=180, check=False)


@pytest.fixture(scope='session')
def pipeline(tmp_path_factory):
    reuse = os.environ.get('ZOPEOPS_PIPELINE_SANDBOX')
    if reuse:
        # While developing: run the pipeline tests against a sandbox brought up already
        # (ZOPEOPS_PIPELINE_SANDBOX=<dir> ZOPEOPS_PIPELINE_PORT_BASE=<port>); it is left running.
        yield Pipeline(pathlib.Path(reuse), int(os.environ['ZOPEOPS_PIPELINE_PORT_BASE']), None)
        return
    sandbox = tmp_path_factory.mktemp('pipeline') / 'sandbox'
    # Each xdist worker brings up its own pipeline: search a range of its own, so that two
    # workers looking at the same moment cannot both find one block free.
    worker = os.environ.get('PYTEST_XDIST_WORKER', 'gw0')
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    base = free_port_block(PORTS, start=20000 + 2500 * index, stop=22500 + 2500 * index)
    try:
        first = run_playbook('site.yml', REPO / 'inventories' / 'local',
                             {'zopeops_sandbox': str(sandbox), 'zopeops_port_base': base})
        if first.returncode != 0:
            pytest.fail('site.yml failed on a fresh sandbox:\n%s\n%s'
                        % (first.stdout[-15000:], first.stderr[-5000:]), pytrace=False)
        yield Pipeline(sandbox, base, first)
    finally:
        stop_sandbox(sandbox)
