"""The load-balancer tests share lbsupport.py and backend.py, which live beside them."""
from __future__ import annotations

import pathlib
import sys

HERE = str(pathlib.Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
