"""The harness itself: machines reached over SSH as a non-root user with become, each with its
own address and /srv, and able to reach each other."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.pipeline, pytest.mark.multihost,
              pytest.mark.xdist_group('multihost')]


def test_every_machine_answers_ansible_over_ssh_with_become(harness):
    proc = harness.ansible('all', 'ansible.builtin.command', 'id -un')
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    hosts = len(list((harness.inventory / 'host_vars').glob('*.yml')))
    assert proc.stdout.count('CHANGED | rc=0 >>\nroot\n') == hosts, proc.stdout
    login = harness.machines.ssh('app1', 'id -un; sudo -n true && echo become-ok')
    assert login.stdout.split() == ['zopeops-ci', 'become-ok'], login


def test_machines_have_their_own_address_and_srv(harness):
    app1, app2 = harness['app1'], harness['app2']
    app1.run(['sh', '-c', 'echo app1 > /srv/zh-owner'], check=True)
    assert app1.run(['cat', '/srv/zh-owner']).stdout == 'app1\n'
    assert app2.run(['ls', '/srv']).stdout.split().count('zh-owner') == 0
    assert app1.address in app1.run(['ip', '-4', '-o', 'addr']).stdout
    reach = harness.machines.ssh('db1', '(exec 3<>/dev/tcp/%s/22) && echo reached' % app2.address)
    assert reach.stdout.strip() == 'reached', reach
