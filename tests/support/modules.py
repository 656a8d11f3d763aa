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


def run_module(name, args=None, check=False, diff=False, python=None, env=None, timeout=300):
    """Run plugins/modules/<name>.py with ``args``; return its parsed JSON result.

    The result has ``rc`` (the process's exit code) added; a failed module has ``failed``.
    """
    payload = dict(args or {})
    payload['_ansible_check_mode'] = check
    payload['_ansible_diff'] = diff
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': payload}, handle)
        args_path = handle.name
    run_env = dict(os.environ)
    run_env['PYTHONPATH'] = os.pathsep.join(
        [str(COLLECTIONS)] + [p for p in [run_env.get('PYTHONPATH')] if p])
    run_env.update(env or {})
    try:
        proc = subprocess.run(
            [python or sys.executable, str(REPO / 'plugins' / 'modules' / (name + '.py')),
             args_path],
            capture_output=True, text=True, env=run_env, timeout=timeout, check=False)
    finally:
        os.unlink(args_path)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError('module %s printed no JSON (rc=%d)\nstdout:\n%s\nstderr:\n%s'
                             % (name, proc.returncode, proc.stdout, proc.stderr)) from None
    result['rc'] = proc.returncode
    result['_stderr'] = proc.stderr
    return result
