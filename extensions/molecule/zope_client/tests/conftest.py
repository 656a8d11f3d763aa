"""The scenario's fixtures (``host``: this machine, ``sandbox``) come from ../shared."""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / 'shared'))

from zopeops_molecule import host, sandbox  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
