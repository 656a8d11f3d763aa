"""What the Molecule scenarios' testinfra tests share: the scenario's sandbox, ports and paths.

create.yml records ``{sandbox, port_base}`` in the scenario's ephemeral directory; the ports
and paths follow inventory/hosts.yml and docs/architecture.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import urllib.request

import pytest
import testinfra

STAGE = 'dev'
CLIENT = 'client1'


def state():
    ephemeral = os.environ['MOLECULE_EPHEMERAL_DIRECTORY']
    with open(os.path.join(ephemeral, 'zopeops-molecule.json'), encoding='utf-8') as handle:
        return json.load(handle)


class Sandbox:
    """The scenario's sandbox: where things are and which ports they listen on."""

    def __init__(self, sandbox, port_base):
        self.root = pathlib.Path(sandbox)
        self.runtime_dir = pathlib.Path(
            '/tmp/zopeops-' + hashlib.sha1(sandbox.encode()).hexdigest()[:10])
        self.lb_port = port_base
        self.zeo_port = port_base + 1
        self.client_port = port_base + 2
        self.instance_dir = self.root / STAGE

    @property
    def supervisor_conf(self):
        return self.root / 'supervisor' / 'supervisord.conf'

    def main_revision(self):
        """The commit the demo repository's main branch points at (what dev, the head, runs)."""
        return subprocess.run(['git', '--git-dir', str(self.root / 'app.git'), 'rev-parse',
                               'main^{commit}'], capture_output=True, text=True,
                              check=True).stdout.strip()

    def program_pid(self, program):
        """The PID supervisord reports for ``program`` (0 when it is not running)."""
        ctl = pathlib.Path(os.environ.get('VIRTUAL_ENV', '')) / 'bin' / 'supervisorctl'
        if not ctl.exists():
            ctl = pathlib.Path(__file__).resolve().parents[3] / '.venv' / 'bin' / 'supervisorctl'
        out = subprocess.run([str(ctl), '-c', str(self.supervisor_conf), 'pid', program],
                             capture_output=True, text=True, timeout=30, check=False).stdout
        return int(out.strip()) if out.strip().isdigit() else 0


def get_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:  # nosec: loopback only
        return response.status, json.loads(response.read().decode('utf-8'))


@pytest.fixture(scope='session')
def host():
    """This machine: the scenarios converge with ansible_connection=local."""
    return testinfra.get_host('local://')


@pytest.fixture(scope='session')
def sandbox():
    current = state()
    return Sandbox(current['sandbox'], int(current['port_base']))
