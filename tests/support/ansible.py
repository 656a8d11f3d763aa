"""Run the collection's playbooks for real with the project's ansible-playbook."""
from __future__ import annotations

import json
import os
import subprocess

from .paths import ANSIBLE_PLAYBOOK, REPO


def playbook_command(playbook, inventory, extra_vars=None, check=False, diff=False, args=()):
    """(argv, env) of ``ansible-playbook`` for ``playbooks/<playbook>``.

    ``extra_vars`` go in as JSON, so types survive. The repo's ansible.cfg applies, so
    ``zopeops.stages.*`` resolves from the checkout (ansible-core's own ``linear`` strategy).
    """
    argv = [str(ANSIBLE_PLAYBOOK), '-i', str(inventory), str(REPO / 'playbooks' / playbook)]
    if extra_vars:
        argv += ['-e', json.dumps(extra_vars)]
    if check:
        argv.append('--check')
    if diff:
        argv.append('--diff')
    argv += list(args)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_FORCE_COLOR='0', PYTHONUNBUFFERED='1')
    return argv, env


def run_playbook(playbook, inventory, extra_vars=None, check=False, diff=False, timeout=1200,
                 args=(), env=None):
    """Run ``playbooks/<playbook>`` and return the CompletedProcess (text output, no raise).
    ``env``: variables added to the playbook's environment (this process's stays as it is)."""
    argv, base = playbook_command(playbook, inventory, extra_vars, check, diff, args)
    env = dict(base, **(env or {}))
    return subprocess.run(argv, cwd=str(REPO), capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def recap(output):
    """{host: {'ok': n, 'changed': n, 'failed': n, ...}} from a PLAY RECAP."""
    totals = {}
    in_recap = False
    for line in output.splitlines():
        if line.startswith('PLAY RECAP'):
            in_recap = True
            continue
        if in_recap and ':' in line and '=' in line:
            host, separator, counts = line.partition(':')
            totals[host.strip()] = {k: int(v) for k, v in
                                    (item.split('=') for item in counts.split())}
    return totals


def assert_no_changes(proc):
    totals = recap(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    changed = {host: t['changed'] for host, t in totals.items() if t.get('changed')}
    assert totals and not changed, 'expected changed=0, got %s\n%s' % (changed,
                                                                       proc.stdout[-8000:])
