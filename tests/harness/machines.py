"""Machines on this one machine: each a systemd-nspawn container booting a real systemd as
PID 1, in a network namespace of its own, reached over real SSH.

A :class:`Machines` set brings up, for a unique harness id ``zh<pid>`` (``zh<pid><n>`` when one
process starts several):

- a bridge ``<id>br`` in the root namespace with the first address of a private /24 that no
  interface here uses yet (``10.231.X.0/24``), so the controller reaches every machine;
- per machine a network namespace ``<id>-<name>`` with loopback up and one veth (``<id>v<n>``
  on the bridge, ``eth0`` inside) holding the machine's address;
- per machine a root of its own: an overlay of the Debian rootfs that
  ``scripts/ensure-nspawn-rootfs`` built (systemd, sshd, sudo, rsync, git, HAProxy, python3),
  with the machine's host name, host key, sshd settings, login account and service account
  written into it before its first boot (its disk: ``$ZOPEOPS_HARNESS_DISKS/<id>/<name>``,
  ``/var/tmp/zopeops-harness`` by default). It survives a reboot (:meth:`Machines.crash`, then
  :meth:`Machines.boot`): enabled units start again as on a real machine;
- per machine a ``systemd-nspawn --boot`` of that root in its network namespace. The project's
  checkout (its virtualenv is the modules' Python, as on the namespace machines before), the
  Python it is made from, the wheel cache and the demo application's repository are bound in
  at their own paths; everything else (``/srv``, ``/etc``, ``/home``, ``/run``) is the
  machine's own.

Ansible logs in as ``ssh_user`` (an account with the uid it has here, passwordless sudo for
``become``) with a key the harness makes; known_hosts holds each machine's host key (no trust
on first use). Services run as the service account under the units the roles write.

:meth:`Machines.stop` keeps each machine's journal and services' logs in its folder, powers
every machine off (systemd stops every unit; SIGKILL of the container's PID 1 after a grace
period), unmounts the overlays and deletes the namespaces, veths and bridge it made, by name.
Only processes the harness started are signalled, by PID.
"""
from __future__ import annotations

import atexit
import dataclasses
import ipaddress
import itertools
import os
import pathlib
import shutil
import socket
import subprocess
import time

from ansible_collections.zopeops.stages.plugins.module_utils.readiness import pid_alive
from support import nspawn

SSH_USER = 'zopeops-ci'
# The packages the machines' rootfs must have (scripts/ensure-nspawn-rootfs).
ROOTFS_PACKAGES = ('systemd', 'openssh-server', 'sudo', 'rsync', 'git', 'haproxy', 'procps')
_counter = itertools.count()
# Where the machines' disks are made (not under pytest's folders; see Machines).
DISKS = os.environ.get('ZOPEOPS_HARNESS_DISKS', '/var/tmp/zopeops-harness')


class HarnessUnavailable(Exception):
    """The harness cannot run here; the message says why (for pytest.skip)."""


def unavailable_reason():
    """Why the harness cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return 'the multi-machine harness needs root (namespaces, systemd-nspawn)'
    for tool in ('ip', 'mount', 'ssh', 'ssh-keygen', 'useradd'):
        if shutil.which(tool) is None:
            return ('the multi-machine harness needs `%s` (make deps installs the test '
                    'packages: openssh-client, iproute2)' % tool)
    reason = nspawn.unavailable_reason(ROOTFS_PACKAGES)
    if reason:
        return 'the multi-machine harness boots systemd machines, but ' + reason
    probe = 'zhprobe%d' % os.getpid()
    made = _run(['ip', 'netns', 'add', probe], check=False)
    if made.returncode != 0:
        return 'ip netns does not work here: %s' % made.stderr.strip()
    _run(['ip', 'netns', 'del', probe], check=False)
    return None


def _run(argv, check=True, timeout=60, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          **kwargs)
    if check and proc.returncode != 0:
        raise RuntimeError('%s failed (%d): %s' % (' '.join(argv), proc.returncode,
                                                   (proc.stderr or proc.stdout).strip()))
    return proc


def ensure_account(name, useradd_options):
    """Create an account on this machine only when it is absent (the machines get it with the
    same uid and gid, so files in the folders bound into them keep their owner)."""
    if _run(['id', '-u', name], check=False).returncode != 0:
        _run(['useradd', *useradd_options, name])


def copy_account(root, name, useradd_options):
    """Create ``name`` in the machine's root with this machine's uid and gid."""
    uid = _run(['id', '-u', name]).stdout.strip()
    gid = _run(['id', '-g', name]).stdout.strip()
    group = _run(['id', '-gn', name]).stdout.strip()
    _run(['groupadd', '-R', str(root), '-f', '-g', gid, group])
    if _run(['chroot', str(root), 'id', '-u', name], check=False).returncode != 0:
        _run(['useradd', '-R', str(root), '-u', uid, '-g', gid, *useradd_options, name])


@dataclasses.dataclass
class Machine:
    name: str
    index: int
    address: str
    netns: str
    veth: str
    dir: pathlib.Path
    disk: pathlib.Path
    container: nspawn.Container | None = None

    @property
    def root(self):
        """The machine's root as this machine sees it (the overlay; mounted while the harness
        runs, also while the machine is down)."""
        return self.disk / 'root'

    def path(self, absolute):
        """Where a path of the machine lies for this machine: inside the running container (its
        own /run included), else in its root."""
        if self.container is not None and self.container.running():
            return self.container.path(absolute)
        return self.root / pathlib.PurePosixPath(absolute).relative_to('/')

    def run(self, argv, check=False, timeout=60, **kwargs):
        """Run a command as root inside the machine (all its namespaces: a pid it prints or
        takes is one of its own)."""
        if self.container is None or not self.container.running():
            raise RuntimeError('machine %s is not running' % self.name)
        return self.container.run(argv, check=check, timeout=timeout, **kwargs)

    def pids(self):
        """The machine's processes, as this machine numbers them."""
        proc = _run(['ip', 'netns', 'pids', self.netns], check=False)
        return [int(pid) for pid in proc.stdout.split() if pid.isdigit()]


class Machines:
    """A set of machines named ``names``, brought up by :meth:`start`, removed by :meth:`stop`.
    ``service_user``: an account of this machine each machine gets too (the services')."""

    def __init__(self, workdir, names, ssh_user=SSH_USER, service_user=None, binds=(),
                 binds_ro=()):
        self.workdir = pathlib.Path(workdir)
        self.names = list(names)
        self.ssh_user = ssh_user
        self.service_user = service_user
        self.binds = [str(path) for path in binds]
        self.binds_ro = [str(path) for path in binds_ro]
        serial = next(_counter)
        self.id = 'zh%d' % os.getpid() + (str(serial) if serial else '')
        self.bridge = self.id + 'br'
        self.machines = {}
        self.network = None
        # The machines' disks (their roots mounted as overlays) live outside the workdir: a
        # pytest session's clean-up of old base folders (another session's, on a shared
        # machine) must never walk into a mounted root.
        self.disks = pathlib.Path(DISKS) / self.id
        self.key = self.workdir / 'id_ed25519'
        self.known_hosts = self.workdir / 'known_hosts'
        self._stopped = False
        for name in [self.bridge] + ['%sv%d' % (self.id, i) for i in range(len(self.names))]:
            if len(name) > 15:
                raise ValueError('interface name %r is longer than 15 characters' % name)

    # --- bring up ---------------------------------------------------------------------------

    def start(self, timeout=180):
        reason = unavailable_reason()
        if reason:
            raise HarnessUnavailable(reason)
        atexit.register(self.stop)
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            ensure_account(self.ssh_user, ['--create-home', '--shell', '/bin/bash',
                                           '--password', '*'])
            self._make_keys()
            self._make_network()
            for machine in self.machines.values():
                self._make_root(machine)
            for machine in self.machines.values():
                self._launch(machine)
            for machine in self.machines.values():
                machine.container.wait_booted(timeout)
            self._wait_for_sshd(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _make_keys(self):
        if not self.key.exists():
            _run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', self.id + '-ansible',
                  '-f', str(self.key)])

    def _free_network(self):
        used = _run(['ip', '-o', '-4', 'addr', 'show']).stdout
        routes = _run(['ip', '-4', 'route', 'show']).stdout
        for third in range(231, 255):
            network = ipaddress.ip_network('10.%d.%d.0/24' % (third, os.getpid() % 200 + 20))
            prefix = str(network.network_address).rsplit('.', 1)[0] + '.'
            if prefix not in used and prefix not in routes:
                return network
        raise RuntimeError('no free private /24 found under 10.231-254.x.0')

    def _make_network(self):
        self.network = self._free_network()
        hosts = list(self.network.hosts())
        _run(['ip', 'link', 'add', self.bridge, 'type', 'bridge'])
        _run(['ip', 'addr', 'add', '%s/24' % hosts[0], 'dev', self.bridge])
        _run(['ip', 'link', 'set', self.bridge, 'up'])
        for index, name in enumerate(self.names):
            machine = Machine(name=name, index=index, address=str(hosts[10 + index]),
                              netns='%s-%s' % (self.id, name), veth='%sv%d' % (self.id, index),
                              dir=self.workdir / 'machines' / name,
                              disk=self.disks / name)
            self.machines[name] = machine
            _run(['ip', 'netns', 'add', machine.netns])
            _run(['ip', 'link', 'add', machine.veth, 'type', 'veth', 'peer', 'name', 'eth0',
                  'netns', machine.netns])
            _run(['ip', 'link', 'set', machine.veth, 'master', self.bridge, 'up'])
            inside = ['ip', 'netns', 'exec', machine.netns]
            _run(inside + ['ip', 'link', 'set', 'lo', 'up'])
            _run(inside + ['ip', 'addr', 'add', '%s/24' % machine.address, 'dev', 'eth0'])
            _run(inside + ['ip', 'link', 'set', 'eth0', 'up'])

    def _make_root(self, machine):
        """The machine's root: an overlay of the rootfs, with what its installer would have
        set up (host name and key, sshd, the login and service accounts, sudo)."""
        machine.dir.mkdir(parents=True, exist_ok=True)
        for sub in ('upper', 'work', 'root'):
            (machine.disk / sub).mkdir(parents=True, exist_ok=True)
        _run(['mount', '-t', 'overlay', 'overlay', '-o', 'lowerdir=%s,upperdir=%s,workdir=%s'
              % (nspawn.ROOTFS, machine.disk / 'upper', machine.disk / 'work'), str(machine.root)])
        root = machine.root
        (root / 'etc' / 'hostname').write_text(machine.name + '\n')
        # Its own name resolves (sudo looks it up at every call), as an installer writes it.
        etc_hosts = root / 'etc' / 'hosts'
        hosts = etc_hosts.read_text() if etc_hosts.exists() else '127.0.0.1\tlocalhost\n'
        if machine.name not in hosts.split():
            etc_hosts.write_text(hosts + '%s\t%s\n' % (machine.address, machine.name))
        # The login account, key-only, with passwordless sudo for become.
        copy_account(root, self.ssh_user, ['--create-home', '--shell', '/bin/bash',
                                           '--password', '*'])
        sudoers = root / 'etc' / 'sudoers.d' / self.ssh_user
        sudoers.write_text('%s ALL=(ALL) NOPASSWD: ALL\n' % self.ssh_user)
        sudoers.chmod(0o440)
        if self.service_user:
            copy_account(root, self.service_user, ['--system', '--no-create-home', '--shell',
                                                   '/usr/sbin/nologin'])
        uid = int(_run(['id', '-u', self.ssh_user]).stdout)
        gid = int(_run(['id', '-g', self.ssh_user]).stdout)
        home = root / 'home' / self.ssh_user
        (home / '.ssh').mkdir(mode=0o700, parents=True, exist_ok=True)
        authorized = home / '.ssh' / 'authorized_keys'
        authorized.write_text(self.key.with_suffix('.pub').read_text())
        for path in (home, home / '.ssh', authorized):
            os.chown(path, uid, gid)
        os.chmod(authorized, 0o600)
        host_key = root / 'etc' / 'ssh' / 'ssh_host_ed25519_key'
        if not host_key.exists():
            _run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', machine.name,
                  '-f', str(host_key)])
        # sshd reads its drop-ins first; the first value of a setting wins.
        (root / 'etc' / 'ssh' / 'sshd_config.d' / 'zopeops-harness.conf').write_text('\n'.join([
            'ListenAddress %s' % machine.address,
            'HostKey /etc/ssh/ssh_host_ed25519_key',
            'UsePAM no',
            'PasswordAuthentication no',
            'KbdInteractiveAuthentication no',
            'PermitRootLogin no',
            'AllowUsers %s' % self.ssh_user,
            'X11Forwarding no',
            'PrintMotd no',
            'MaxStartups 100:30:200',
            'MaxSessions 50',
            '',
        ]))

    def _launch(self, machine):
        options = ['--network-namespace-path=/run/netns/%s' % machine.netns]
        options += ['--bind=%s' % path for path in self.binds]
        options += ['--bind-ro=%s' % path for path in self.binds_ro]
        machine.container = nspawn.Container('%s-%s' % (self.id, machine.name),
                                             machine.dir / 'nspawn.log',
                                             directory=machine.root, options=options)
        machine.container.launch()

    def _wait_for_sshd(self, timeout, names=None):
        deadline = time.monotonic() + timeout
        for name in names or self.machines:
            machine = self.machines[name]
            while True:
                try:
                    with socket.create_connection((machine.address, 22), timeout=2) as sock:
                        sock.recv(64)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        state = machine.run(['systemctl', 'status', '--no-pager', 'ssh'])
                        raise RuntimeError('sshd of machine %s (%s) did not answer within %ds: '
                                           '%s' % (machine.name, machine.address, timeout,
                                                   state.stdout[-2000:]))
                    time.sleep(0.1)
        lines = []
        for machine in self.machines.values():
            public = (machine.root / 'etc' / 'ssh' / 'ssh_host_ed25519_key.pub').read_text()
            lines.append('%s %s' % (machine.address, ' '.join(public.split()[:2])))
        self.known_hosts.write_text('\n'.join(lines) + '\n')

    # --- use --------------------------------------------------------------------------------

    def __getitem__(self, name):
        return self.machines[name]

    def ssh_args(self):
        """ssh options for Ansible (ansible_ssh_common_args) and for tests."""
        return ['-o', 'UserKnownHostsFile=%s' % self.known_hosts,
                '-o', 'StrictHostKeyChecking=yes', '-o', 'IdentitiesOnly=yes',
                '-o', 'BatchMode=yes']

    def ssh(self, name, command, timeout=60):
        """Run a shell command on a machine over SSH as the login user."""
        return _run(['ssh', '-i', str(self.key), *self.ssh_args(),
                     '%s@%s' % (self.ssh_user, self.machines[name].address), command],
                    check=False, timeout=timeout)

    def stop_sshd(self, name):
        """Cut a machine off from SSH (its services keep running): sshd is stopped and every
        SSH session of it ends."""
        machine = self.machines[name]
        machine.run(['systemctl', 'stop', 'ssh.service'], check=True)
        # Sessions outlive the listener (KillMode=process): end them too, by their pids.
        sessions = machine.run(['pgrep', '-x', 'sshd']).stdout.split()
        if sessions:
            machine.run(['kill', *sessions])

    def start_sshd(self, name, timeout=60):
        self.machines[name].run(['systemctl', 'start', 'ssh.service'], check=True)
        self._wait_for_sshd(timeout, [name])

    def crash(self, name):
        """Lose a machine as in a power cut: its systemd and every process under it are killed
        at once (SIGKILL to the container's PID 1); its network and disk stay.
        :meth:`boot` brings it back."""
        machine = self.machines[name]
        machine.container.kill()
        survivors = [pid for pid in machine.pids() if pid_alive(pid)]
        if survivors:
            raise RuntimeError('machine %s: processes outlived its PID 1: %s'
                               % (name, ', '.join(map(str, survivors))))

    def boot(self, name, timeout=180):
        """Boot a machine lost with :meth:`crash` again: its units start as at any boot."""
        machine = self.machines[name]
        machine.container.launch()
        machine.container.wait_booted(timeout)
        self._wait_for_sshd(timeout, [name])

    # --- tear down --------------------------------------------------------------------------

    def stop(self):
        """Keep the logs, then end every machine at once (SIGKILL to its PID 1: what the
        machines ran is not kept, and an orderly shutdown of ten machines' services takes
        minutes), remove overlays, namespaces and links."""
        if self._stopped:
            return
        self._stopped = True
        for machine in self.machines.values():
            if machine.container is not None and machine.container.running():
                try:
                    self._keep_logs(machine)
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    (machine.dir / 'logs-not-kept.txt').write_text(str(exc))
        for machine in self.machines.values():
            if machine.container is not None:
                machine.container.kill()
        for machine in self.machines.values():
            if os.path.ismount(machine.root):
                _run(['umount', str(machine.root)], check=False)
            _run(['ip', 'netns', 'del', machine.netns], check=False)
            if _run(['ip', 'link', 'show', machine.veth], check=False).returncode == 0:
                _run(['ip', 'link', 'del', machine.veth], check=False)
            # The machine's disk (releases, data); its logs stay in its folder.
            if not os.path.ismount(machine.root):
                shutil.rmtree(machine.disk, ignore_errors=True)
        if _run(['ip', 'link', 'show', self.bridge], check=False).returncode == 0:
            _run(['ip', 'link', 'del', self.bridge], check=False)
        try:
            self.disks.rmdir()
        except OSError:
            pass

    @staticmethod
    def _keep_logs(machine):
        """<machine>/logs: the journal of every unit and each instance's log folder."""
        keep = machine.dir / 'logs'
        keep.mkdir(exist_ok=True)
        journal = machine.run(['journalctl', '--no-pager', '-o', 'short-precise'], timeout=120)
        (keep / 'journal.log').write_text(journal.stdout)
        for log in machine.root.glob('srv/*/*/log'):
            shutil.copytree(log, keep / log.parent.name, dirs_exist_ok=True)
