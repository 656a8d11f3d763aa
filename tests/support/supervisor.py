"""A supervisord of our own for tests: started by PID, its unix socket in a short /tmp/zt-XXXX
directory (socket paths are limited to 108 bytes), programs written as include files as the
roles write them, so that the modules' reread/update path is exercised."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import textwrap
from contextlib import contextmanager
from pathlib import Path

from .paths import VENV_BIN
from .procs import ProcessGroup, wait_for


class Supervisor:
    """A supervisord of our own, and helpers to define programs for it."""

    def __init__(self, root, extra_includes=''):
        self.root = Path(root)
        self.config = self.root / 'supervisord.conf'
        self.socket = self.root / 's.sock'
        self.programs = self.root / 'programs'
        self.programs.mkdir()
        self.config.write_text(textwrap.dedent(f'''\
            [unix_http_server]
            file={self.socket}
            [supervisord]
            logfile={self.root}/supervisord.log
            pidfile={self.root}/supervisord.pid
            childlogdir={self.root}
            nodaemon=true
            user=root
            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
            [supervisorctl]
            serverurl=unix://{self.socket}
            [include]
            files={self.programs}/*.conf {extra_includes}
            '''))

    def argv(self):
        return [str(VENV_BIN / 'supervisord'), '-c', str(self.config)]

    def ctl(self, *args):
        proc = subprocess.run([str(VENV_BIN / 'supervisorctl'), '-c', str(self.config)]
                              + list(args), capture_output=True, text=True, check=False)
        return proc.stdout + proc.stderr

    def add_program(self, name, command, **options):
        lines = [f'[program:{name}]', f'command={command}', 'autostart=false',
                 'autorestart=false', 'redirect_stderr=true', 'stopwaitsecs=10',
                 f'stdout_logfile={self.root}/{name}.out']
        lines += [f'{key}={value}' for key, value in options.items()]
        (self.programs / f'{name}.conf').write_text('\n'.join(lines) + '\n')

    def module_args(self, **args):
        args.setdefault('supervisor_config', str(self.config))
        args.setdefault('supervisorctl', str(VENV_BIN / 'supervisorctl'))
        return args


@contextmanager
def running_supervisor(extra_includes=''):
    """A started supervisord (``extra_includes``: more program files, e.g. a rendered
    supervisor-clients.conf); its programs and itself are stopped afterwards, by PID."""
    root = tempfile.mkdtemp(prefix='zt-', dir='/tmp')
    sup = Supervisor(root, extra_includes)
    try:
        with ProcessGroup() as group:
            proc = group.start(sup.argv(), log_path=str(Path(root) / 'supervisord.out'))
            try:
                wait_for(lambda: proc.poll() is not None or sup.ctl('pid').strip().isdigit(),
                         timeout=30, what='supervisord to answer on %s' % sup.socket)
                assert proc.poll() is None, (Path(root) / 'supervisord.out').read_text()
                yield sup
            finally:
                # Stop the programs gracefully first, then supervisord itself by its PID.
                if proc.poll() is None:
                    sup.ctl('stop', 'all')
    finally:
        shutil.rmtree(root, ignore_errors=True)
