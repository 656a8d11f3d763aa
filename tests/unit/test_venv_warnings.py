"""scripts/venv-site/zopeops_warnings.py: the DSA deprecation at ansible-core's import is
silenced, and nothing else is."""
from __future__ import annotations

import subprocess
import sys

from support.paths import REPO

SITE = REPO / 'scripts' / 'venv-site'


def python(code):
    return subprocess.run([sys.executable, '-W', 'default', '-c',
                           'import sys; sys.path.insert(0, %r); import zopeops_warnings; %s'
                           % (str(SITE), code)], capture_output=True, text=True, check=True)


def test_ansible_cores_dsa_import_warns_no_more():
    proc = python('import ansible._internal._ssh._ssh_agent')
    assert 'DSA is deprecated' not in proc.stderr, proc.stderr


def test_the_same_message_from_elsewhere_and_other_warnings_still_show():
    proc = python('import warnings; warnings.warn("DSA is deprecated, here too"); '
                  'warnings.warn("another", DeprecationWarning)')
    assert 'DSA is deprecated, here too' in proc.stderr and 'another' in proc.stderr
