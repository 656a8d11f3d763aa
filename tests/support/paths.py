from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / 'collections'
VENV_BIN = pathlib.Path(sys.executable).parent
ANSIBLE_PLAYBOOK = VENV_BIN / 'ansible-playbook'
