"""Run one of the collection's modules for real, the way Ansible does, without a playbook.

The module file runs as a script with its arguments in a JSON file (AnsibleModule reads
``{"ANSIBLE_MODULE_ARGS": {...}}``); check mode is the ``_ansible_check_mode`` argument.
This is fast and exercises the real argument spec, the real code and the real JSON result.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from .paths import COLLECTIONS, REPO


def run_module(name, args=None, check=False, diff=False, python=None, env=None, timeout=300,
               args_dir=None):
    """Run plugins/modules/<name>.py with ``args``; return its parsed JSON result.

    The result has ``rc`` (the process's exit code) added; a failed module has ``failed``.
    ``python`` may be a wrapper that runs the interpreter elsewhere (in a container); the
    arguments file is then written to ``args_dir``, a folder it sees at the same path.
    """
    return start_module(name, args, check, diff, python, env, args_dir).result(timeout)


class StartedModule:
    """A module started by ``start_module``: ``proc`` runs it; ``result()`` waits for it."""

    def __init__(self, name, proc, args_path):
        self.name, self.proc, self.args_path = name, proc, args_path

    def result(self, timeout=300):
        try:
            stdout, stderr = self.proc.communicate(timeout=timeout)
        finally:
            if os.path.exists(self.args_path):
                os.unlink(self.args_path)
        try:
            result = json.loads(stdout)
        except ValueError:
            raise AssertionError('module %s printed no JSON (rc=%d)\nstdout:\n%s\nstderr:\n%s'
                                 % (self.name, self.proc.returncode, stdout, stderr)) from None
        result['rc'] = self.proc.returncode
        result['_stderr'] = stderr
        return result


def start_module(name, args=None, check=False, diff=False, python=None, env=None,
                 args_dir=None):
    """Start plugins/modules/<name>.py with ``args`` in the background (see run_module)."""
    payload = dict(args or {})
    payload['_ansible_check_mode'] = check
    payload['_ansible_diff'] = diff
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False,
                                     dir=args_dir) as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': payload}, handle)
        args_path = handle.name
    run_env = dict(os.environ)
    run_env['PYTHONPATH'] = os.pathsep.join(
        [str(COLLECTIONS)] + [p for p in [run_env.get('PYTHONPATH')] if p])
    run_env.update(env or {})
    proc = subprocess.Popen(
        [python or sys.executable, str(REPO / 'plugins' / 'modules' / (name + '.py')),
         args_path],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run_env)
    return StartedModule(name, proc, args_path)


def run_module_in_process(module, args, monkeypatch, capsys, check=False):
    """Run an imported module's ``main()`` in this process, so a test can monkeypatch what it
    calls; return its parsed JSON result as ``run_module`` does (``rc`` 1 when it failed)."""
    import pytest
    from ansible.module_utils import basic
    payload = dict(args)
    payload['_ansible_check_mode'] = check
    monkeypatch.setattr(basic, '_ANSIBLE_ARGS',
                        json.dumps({'ANSIBLE_MODULE_ARGS': payload}).encode())
    monkeypatch.setattr(basic, '_ANSIBLE_PROFILE', 'legacy')
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        module.main()
    result = json.loads(capsys.readouterr().out)
    result['rc'] = exited.value.code or 0
    return result
