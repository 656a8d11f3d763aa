"""The load-balancer tests share lbsupport.py and backend.py, which live beside them."""
from __future__ import annotations

import os
import pathlib
import shutil
import sys

import pytest

HERE = str(pathlib.Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from lbsupport import make_model, run_role, short_tmpdir  # noqa: E402


@pytest.fixture(scope='module')
def rendered():
    """The haproxy role's configuration and maps for make_model(), rendered once per module."""
    if not shutil.which('haproxy') and not os.path.exists('/usr/sbin/haproxy'):
        pytest.fail('HAProxy is not installed: run `make deps` (it installs Debian\'s haproxy '
                    'through scripts/ensure-system-packages)', pytrace=False)
    root = short_tmpdir()
    model = make_model()
    code, output = run_role(root, model)
    assert code == 0, output
    maps = {name: (root / 'root' / 'lb' / 'etc' / name).read_text()
            for name in ('active.map', 'frozen.map')}
    yield root, model, maps
    shutil.rmtree(root, ignore_errors=True)
