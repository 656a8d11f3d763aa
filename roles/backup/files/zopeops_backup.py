# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scheduled backups of one stage (roles/backup): the code of the zodb_backup module
(zodb_backup.py, installed beside this file with files.py), run with the release's Python.

    python zopeops_backup.py --config <instance>/etc/backup.json           one run (systemd)
    python zopeops_backup.py --config ... --loop     a run every interval (supervisord)
    python zopeops_backup.py --config ... --verify   the restore drill only

Prints one JSON line per run; exits 0, 1 (failed) or 75 (skipped: the stage was busy).
"""
from __future__ import annotations

import sys

from zodb_backup import cli  # pylint: disable=import-error

if __name__ == '__main__':
    sys.exit(cli(sys.argv[1:], sys.stdout))
