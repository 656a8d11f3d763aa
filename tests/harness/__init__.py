"""The multi-machine test harness: machines as systemd-nspawn containers booting a real systemd,
each in a network namespace of its own, reached over SSH (:mod:`.machines`), and a
production-shaped inventory for them (:mod:`.inventory`).

    harness = Harness(workdir).start()        # raises HarnessUnavailable(reason) without root
    harness.playbook('site.yml')
    harness.stop()                            # also at exit, also after a failure
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from support.ansible import playbook_command, run_playbook
from support.paths import REPO, VENV_BIN
from support.promotion import Background
from support.writeload import admin_auth

from . import inventory
from .machines import SSH_USER, HarnessUnavailable, Machines, ensure_account, unavailable_reason

# The account ZEO and Zope run as on the machines (created when absent, no login).
SERVICE_USER = 'zopeops-zope'

__all__ = ['Harness', 'HarnessUnavailable', 'unavailable_reason']


def warm_wheel_cache(python=inventory.MACHINE_PYTHON, cache=inventory.WHEEL_CACHE):
    """The machines build releases offline, from this machine's wheel cache, with the system
    Python (inventory.py). What the local pipeline cached was resolved for the project's
    Python, and a dependency's newest release may need a newer Python than the machines' (seen:
    soupsieve 3.0.2 and newer need 3.11.5; Debian 12 has 3.11.2). So the example application is
    resolved and installed once, online, for the machines' Python, into a throw-away virtualenv:
    the cache then holds what the machines can use."""
    uv = str(VENV_BIN / 'uv')
    env = dict(os.environ, UV_CACHE_DIR=os.path.join(cache, 'uv'), UV_LINK_MODE='hardlink',
               UV_PYTHON_DOWNLOADS='never')
    with tempfile.TemporaryDirectory(prefix='zopeops-warm-') as folder:
        # A copy: building the product writes build/ beside its source.
        app = pathlib.Path(shutil.copytree(REPO / 'examples' / 'zopeapp',
                                           os.path.join(folder, 'app')))
        venv = os.path.join(folder, 'venv')
        for argv in ([uv, 'venv', '--quiet', '--python', python, venv],
                     [uv, 'pip', 'install', '--quiet', '--python', venv + '/bin/python', '-r',
                      str(app / 'requirements.txt')],
                     [uv, 'pip', 'install', '--quiet', '--python', venv + '/bin/python',
                      str(app)]):
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900,
                                  check=False)
            if proc.returncode != 0:
                raise HarnessUnavailable('warming the wheel cache for %s failed: %s: %s'
                                         % (python, ' '.join(argv[:3]), proc.stderr[-2000:]))


class Harness:
    def __init__(self, workdir, prod_clients=(3, 3, 2), twin_clients=(1, 1),
                 service_user=SERVICE_USER):
        self.workdir = pathlib.Path(workdir)
        # What every machine sees of this one, at the same paths: the checkout and its
        # virtualenv (the modules' Python) and the Python that is made from, read-only; the
        # wheel cache the releases install from, and a folder they share (the demo repository).
        self.shared = self.workdir / 'shared'
        venv = os.path.realpath(sys.prefix)
        read_only = [str(REPO), os.path.realpath(sys.base_prefix)]
        if not venv.startswith(os.path.realpath(REPO) + os.sep):
            read_only.append(venv)
        self.machines = Machines(self.workdir, inventory.MACHINES, service_user=service_user,
                                 binds=[self.shared, inventory.WHEEL_CACHE], binds_ro=read_only)
        self.prod_clients = prod_clients
        self.twin_clients = twin_clients
        self.service_user = service_user
        self.inventory = None

    def start(self):
        # The accounts the machines copy (same uid and gid as here).
        ensure_account(self.service_user, ['--system', '--no-create-home', '--shell',
                                           '/usr/sbin/nologin'])
        self.shared.mkdir(parents=True, exist_ok=True)
        os.makedirs(inventory.WHEEL_CACHE, exist_ok=True)
        self.machines.start()
        try:
            warm_wheel_cache()
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

    def boot(self, name):
        """Boot a machine lost with ``machines.crash`` again: systemd starts its enabled units."""
        self.machines.boot(name)

    # --- Ansible ----------------------------------------------------------------------------

    def env(self):
        """Ansible's environment: its SSH control sockets in the harness's folder."""
        control = self.workdir / 'cp'
        control.mkdir(exist_ok=True)
        return {'ANSIBLE_SSH_CONTROL_PATH_DIR': str(control),
                'ANSIBLE_SSH_ARGS': '-o ControlMaster=auto -o ControlPersist=120s',
                'ANSIBLE_HOST_KEY_CHECKING': 'True'}

    def playbook(self, name, extra=None, timeout=1200, args=()):
        return run_playbook(name, self.inventory, extra, timeout=timeout, args=args,
                            env=self.env())

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

    def lb_bases(self, stage):
        """The stage's frontend on each balancer (lb1, lb2)."""
        port = inventory.LB_PORTS[stage]
        return ['http://%s:%d' % (self.machines[lb].address, port) for lb in ('lb1', 'lb2')]

    def admin_auth(self):
        """(user, password) of the Zope admin, for the write load."""
        return admin_auth(self.workdir / 'secrets' / 'zope-admin-password')

    def machine_of(self, instance):
        """The machine of an instance's ZEO server (``prod`` -> db1)."""
        return self.machines[inventory.ZEO_MACHINES[instance]]

    def datafs(self, instance):
        return self.machine_of(instance).path('/srv/zopeops/%s/var/filestorage/Data.fs'
                                              % instance)

    def state(self, stage):
        path = self.machines['lb1'].path('/srv/zopeops/lb/promotions/%s.json' % stage)
        return json.loads(path.read_text()) if path.exists() else {}
