"""The multi-machine test harness: machines as network + mount namespaces with sshd
(:mod:`.machines`), and a production-shaped inventory for them (:mod:`.inventory`).

    harness = Harness(workdir).start()        # raises HarnessUnavailable(reason) without root
    harness.playbook('site.yml')
    harness.stop()                            # also at exit, also after a failure
"""
from __future__ import annotations

import os
import pathlib
import subprocess

from support.ansible import playbook_command, run_playbook
from support.paths import REPO, VENV_BIN
from support.promotion import Background

from . import inventory
from .machines import SSH_USER, HarnessUnavailable, Machines, unavailable_reason

__all__ = ['Harness', 'HarnessUnavailable', 'unavailable_reason']


class Harness:
    def __init__(self, workdir, prod_clients=(3, 3, 2), twin_clients=(1, 1), service_user=''):
        self.workdir = pathlib.Path(workdir)
        self.machines = Machines(self.workdir, inventory.MACHINES)
        self.prod_clients = prod_clients
        self.twin_clients = twin_clients
        self.service_user = service_user
        self.inventory = None

    def start(self):
        self.machines.start()
        try:
            addresses = {name: machine.address for name, machine in self.machines.machines.items()}
            self.inventory = inventory.build(
                addresses, self.workdir, self.machines.key, self.machines.known_hosts, SSH_USER,
                prod_clients=self.prod_clients, twin_clients=self.twin_clients,
                service_user=self.service_user)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        self.machines.stop()

    def __getitem__(self, name):
        return self.machines[name]

    # --- Ansible ----------------------------------------------------------------------------

    def env(self):
        """Ansible's environment: its SSH control sockets in the harness's folder."""
        control = self.workdir / 'cp'
        control.mkdir(exist_ok=True)
        return {'ANSIBLE_SSH_CONTROL_PATH_DIR': str(control),
                'ANSIBLE_SSH_ARGS': '-o ControlMaster=auto -o ControlPersist=120s',
                'ANSIBLE_HOST_KEY_CHECKING': 'True'}

    def playbook(self, name, extra=None, timeout=1200, args=()):
        previous = {key: os.environ.get(key) for key in self.env()}
        os.environ.update(self.env())
        try:
            return run_playbook(name, self.inventory, extra, timeout=timeout, args=args)
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def background_playbook(self, name, extra=None):
        argv, env = playbook_command(name, self.inventory, extra)
        env.update(self.env())
        return Background(argv, env, str(REPO))

    def ansible(self, pattern, module, module_args='', timeout=300):
        """An ad-hoc ``ansible`` command against the harness inventory."""
        argv = [str(VENV_BIN / 'ansible'), '-i', str(self.inventory), pattern, '-m', module]
        if module_args:
            argv += ['-a', module_args]
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
                   **self.env())
        return subprocess.run(argv, cwd=str(REPO), capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)

    # --- what tests look at -----------------------------------------------------------------

    def lb_urls(self, stage, path='/@@zopeops-info'):
        """The stage's frontend on each balancer."""
        port = inventory.LB_PORTS[stage]
        return ['http://%s:%d%s' % (self.machines[lb].address, port, path)
                for lb in ('lb1', 'lb2')]

    def admin_password_file(self):
        return self.workdir / 'secrets' / 'zope-admin-password'
