"""Machines on this one machine: each an ``ip netns`` with sshd, its own /srv, /tmp, /run, /home.

A :class:`Machines` set brings up, for a unique harness id ``zh<pid>`` (``zh<pid><n>`` when one
process starts several):

- a bridge ``<id>br`` in the root namespace with the first address of a private /24 that no
  interface here uses yet (``10.231.X.0/24``), so the controller reaches every machine;
- per machine a network namespace ``<id>-<name>`` with loopback up and one veth (``<id>v<n>``
  on the bridge, ``eth0`` inside) holding the machine's address;
- per machine an sshd with its own host key and configuration, started in a mount namespace of
  its own where ``/srv``, ``/run`` and ``/home`` are folders of the machine's
  directory: absolute paths are the same on every machine, their contents differ, and every
  process a login starts (supervisord, ZEO, Zope, HAProxy) lives in the machine's namespaces.

Ansible logs in as ``ssh_user`` (created when absent, with passwordless sudo for ``become``)
with a key the harness makes; known_hosts holds each machine's host key (no trust on first use).

:meth:`Machines.stop` (also from ``atexit``) stops only what the harness started: every
process inside its namespaces (``ip netns pids``) and the sshd processes it spawned, by PID;
then it deletes its namespaces, veths and bridge by name. The mount namespaces go with their
last process, so nothing stays mounted on the host.
"""
from __future__ import annotations

import atexit
import dataclasses
import ipaddress
import itertools
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

from ansible_collections.zopeops.stages.plugins.module_utils.readiness import pid_alive

SSH_USER = 'zopeops-ci'
SSHD = '/usr/sbin/sshd'
# /tmp stays shared: the harness's own files (keys, the app repository) live there.
PRIVATE_DIRS = ('srv', 'run', 'home')
_counter = itertools.count()


class HarnessUnavailable(Exception):
    """The harness cannot run here; the message says why (for pytest.skip)."""


def unavailable_reason():
    """Why the harness cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return 'the multi-machine harness needs root (network and mount namespaces)'
    for tool in ('ip', 'unshare', 'nsenter', 'ssh', 'ssh-keygen', 'sudo', 'rsync'):
        if shutil.which(tool) is None:
            return ('the multi-machine harness needs `%s` (make deps installs the test '
                    'packages: openssh-server, sudo, iproute2, rsync)' % tool)
    if not os.access(SSHD, os.X_OK):
        return 'the multi-machine harness needs %s (package openssh-server)' % SSHD
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
    """Create an account on this machine (shared by the machines) only when it is absent."""
    if _run(['id', '-u', name], check=False).returncode != 0:
        _run(['useradd', *useradd_options, name])


@dataclasses.dataclass
class Machine:
    name: str
    index: int
    address: str
    netns: str
    veth: str
    dir: pathlib.Path
    sshd: subprocess.Popen | None = None

    def path(self, absolute):
        """Where the machine's ``/srv/...`` (or /run, /home) lies on the host."""
        relative = pathlib.PurePosixPath(absolute).relative_to('/')
        if relative.parts[0] not in PRIVATE_DIRS:
            return pathlib.Path(absolute)  # shared with the host
        return self.dir / relative

    def run(self, argv, check=False, timeout=60, **kwargs):
        """Run a command as root inside the machine (its network and mount namespaces)."""
        if self.sshd is None or self.sshd.poll() is not None:
            raise RuntimeError('machine %s has no running sshd' % self.name)
        return _run(['nsenter', '-t', str(self.sshd.pid), '-m', '-n', '--', *argv],
                    check=check, timeout=timeout, **kwargs)

    def pids(self):
        proc = _run(['ip', 'netns', 'pids', self.netns], check=False)
        return [int(pid) for pid in proc.stdout.split() if pid.isdigit()]


def _describe(pid):
    """``(comm, state)`` of a process, for an error."""
    try:
        stat = pathlib.Path('/proc/%d/stat' % pid).read_text()
    except OSError:
        return '(gone)'
    comm = stat[stat.index('(') + 1:stat.rindex(')')]
    return '(%s, state %s)' % (comm, stat[stat.rindex(')') + 2:].split()[0])


class Machines:
    """A set of machines named ``names``, brought up by :meth:`start`, removed by :meth:`stop`."""

    def __init__(self, workdir, names, ssh_user=SSH_USER):
        self.workdir = pathlib.Path(workdir)
        self.names = list(names)
        self.ssh_user = ssh_user
        serial = next(_counter)
        self.id = 'zh%d' % os.getpid() + (str(serial) if serial else '')
        self.bridge = self.id + 'br'
        self.machines = {}
        self.network = None
        self.key = self.workdir / 'id_ed25519'
        self.known_hosts = self.workdir / 'known_hosts'
        self._stopped = False
        for name in [self.bridge] + ['%sv%d' % (self.id, i) for i in range(len(self.names))]:
            if len(name) > 15:
                raise ValueError('interface name %r is longer than 15 characters' % name)

    # --- bring up ---------------------------------------------------------------------------

    def start(self, timeout=60):
        reason = unavailable_reason()
        if reason:
            raise HarnessUnavailable(reason)
        atexit.register(self.stop)
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._ensure_user()
            self._make_keys()
            self._make_network()
            for machine in self.machines.values():
                self._start_sshd(machine)
            self._wait_for_sshd(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _ensure_user(self):
        """The login user, created only when absent; sudo without a password for become."""
        # '*': no password login, but not a locked account (sshd refuses '!' without PAM).
        ensure_account(self.ssh_user, ['--create-home', '--shell', '/bin/bash', '--password',
                                       '*'])
        sudoers = pathlib.Path('/etc/sudoers.d') / self.ssh_user
        if not sudoers.exists():
            candidate = self.workdir / 'sudoers'
            candidate.write_text('%s ALL=(ALL) NOPASSWD: ALL\n' % self.ssh_user)
            _run(['visudo', '-cf', str(candidate)])
            shutil.copyfile(candidate, sudoers)
            os.chmod(sudoers, 0o440)

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
                              dir=self.workdir / 'machines' / name)
            self.machines[name] = machine
            _run(['ip', 'netns', 'add', machine.netns])
            _run(['ip', 'link', 'add', machine.veth, 'type', 'veth', 'peer', 'name', 'eth0',
                  'netns', machine.netns])
            _run(['ip', 'link', 'set', machine.veth, 'master', self.bridge, 'up'])
            inside = ['ip', 'netns', 'exec', machine.netns]
            _run(inside + ['ip', 'link', 'set', 'lo', 'up'])
            _run(inside + ['ip', 'addr', 'add', '%s/24' % machine.address, 'dev', 'eth0'])
            _run(inside + ['ip', 'link', 'set', 'eth0', 'up'])

    def _start_sshd(self, machine):
        for sub in PRIVATE_DIRS:
            (machine.dir / sub).mkdir(parents=True, exist_ok=True)
        (machine.dir / 'run' / 'sshd').mkdir(mode=0o755, exist_ok=True)
        # The login user's home on this machine, with the harness's key authorized.
        uid = int(_run(['id', '-u', self.ssh_user]).stdout)
        gid = int(_run(['id', '-g', self.ssh_user]).stdout)
        home = machine.dir / 'home' / self.ssh_user
        (home / '.ssh').mkdir(mode=0o700, parents=True, exist_ok=True)
        authorized = home / '.ssh' / 'authorized_keys'
        authorized.write_text(self.key.with_suffix('.pub').read_text())
        for path in (home, home / '.ssh', authorized):
            os.chown(path, uid, gid)
        os.chmod(authorized, 0o600)
        host_key = machine.dir / 'ssh_host_ed25519_key'
        if not host_key.exists():
            _run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', machine.name,
                  '-f', str(host_key)])
        config = machine.dir / 'sshd_config'
        config.write_text('\n'.join([
            'ListenAddress %s' % machine.address,
            'Port 22',
            'HostKey %s' % host_key,
            'PidFile none',
            'AuthorizedKeysFile .ssh/authorized_keys',
            'UsePAM no',
            'PasswordAuthentication no',
            'KbdInteractiveAuthentication no',
            'PermitRootLogin no',
            'AllowUsers %s' % self.ssh_user,
            'AllowAgentForwarding yes',
            'X11Forwarding no',
            'PrintMotd no',
            'MaxStartups 100:30:200',
            'MaxSessions 50',
            'Subsystem sftp internal-sftp',
            '',
        ]))
        mounts = ' && '.join('mount --bind %s /%s' % (machine.dir / sub, sub)
                             for sub in PRIVATE_DIRS)
        log = open(machine.dir / 'sshd.log', 'ab')
        # ip netns exec, unshare and sh each exec the next: the Popen pid is sshd's.
        machine.sshd = subprocess.Popen(
            ['ip', 'netns', 'exec', machine.netns, 'unshare', '--mount', '--propagation',
             'private', 'sh', '-c', '%s && %s -t -f %s && exec %s -D -e -f %s'
             % (mounts, SSHD, config, SSHD, config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()

    def _wait_for_sshd(self, timeout):
        deadline = time.monotonic() + timeout
        lines = []
        for machine in self.machines.values():
            while True:
                if machine.sshd.poll() is not None:
                    raise RuntimeError('sshd of machine %s exited (%s): %s' % (
                        machine.name, machine.sshd.returncode,
                        (machine.dir / 'sshd.log').read_text()[-2000:]))
                try:
                    with socket.create_connection((machine.address, 22), timeout=2) as sock:
                        sock.recv(64)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError('sshd of machine %s (%s) did not answer within %ds'
                                           % (machine.name, machine.address, timeout))
                    time.sleep(0.05)
            public = (machine.dir / 'ssh_host_ed25519_key.pub').read_text().split()
            lines.append('%s %s %s' % (machine.address, public[0], public[1]))
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
        """Cut a machine off from SSH (its services keep running): every sshd in it stops."""
        machine = self.machines[name]
        for pid in machine.pids():
            try:
                comm = pathlib.Path('/proc/%d/comm' % pid).read_text().strip()
            except OSError:
                continue
            if comm == 'sshd':
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        machine.sshd.wait(timeout=10)

    def start_sshd(self, name, timeout=60):
        """Start a machine's sshd again (a new mount namespace with the same folders)."""
        self._start_sshd(self.machines[name])
        self._wait_for_sshd(timeout)

    def crash(self, name):
        """Lose a machine as in a power cut: every process in it (sshd, the SSH sessions,
        supervisord, ZEO, Zope) is killed at once with SIGKILL, by PID; its network and files
        stay. :meth:`start_sshd` brings it back (its services as its boot would: the caller's)."""
        machine = self.machines[name]
        self._stop_processes([machine], signals=(signal.SIGKILL,))
        # A process that outlived SIGKILL (uninterruptible sleep) would hold its ports into the
        # machine's "reboot": say so here rather than let the next run fail on a port in use.
        survivors = [pid for pid in machine.pids() if pid_alive(pid)]
        if survivors:
            raise RuntimeError('machine %s: processes outlived SIGKILL: %s' % (
                name, ', '.join('%d %s' % (pid, _describe(pid)) for pid in survivors)))

    # --- tear down --------------------------------------------------------------------------

    def stop(self):
        """Stop every process in the harness's namespaces, remove its namespaces and links."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_processes(list(self.machines.values()))
        for machine in self.machines.values():
            _run(['ip', 'netns', 'del', machine.netns], check=False)
            if _run(['ip', 'link', 'show', machine.veth], check=False).returncode == 0:
                _run(['ip', 'link', 'del', machine.veth], check=False)
        if _run(['ip', 'link', 'show', self.bridge], check=False).returncode == 0:
            _run(['ip', 'link', 'del', self.bridge], check=False)
        for machine in self.machines.values():
            # The services' logs stay for a failure's diagnosis (<machine>/logs/<instance>).
            keep = machine.dir / 'logs'
            for log in (machine.dir / 'srv').glob('*/*/log'):
                keep.mkdir(exist_ok=True)
                log.rename(keep / log.parent.name)
            shutil.rmtree(machine.dir / 'srv', ignore_errors=True)

    @staticmethod
    def _stop_processes(machines, grace=10, signals=(signal.SIGTERM, signal.SIGKILL)):
        """Signal every process of ``machines`` (all of them at once: one grace period for the
        set, not one per machine), then the next signal to what is left."""
        own = [machine.sshd.pid for machine in machines
               if machine.sshd is not None and machine.sshd.poll() is None]

        def left():
            for machine in machines:
                if machine.sshd is not None:
                    machine.sshd.poll()  # reap our own child
            return {pid for machine in machines for pid in machine.pids()} | \
                {pid for pid in own if pid_alive(pid)}

        for sig in signals:
            pids = left()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and left():
                if sig == signal.SIGKILL:
                    # A process forked between the listing and the kill (supervisord starting
                    # a program again) would survive a single pass.
                    for pid in left():
                        try:
                            os.kill(pid, sig)
                        except ProcessLookupError:
                            pass
                time.sleep(0.25)
        for machine in machines:
            if machine.sshd is not None:
                try:
                    machine.sshd.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
