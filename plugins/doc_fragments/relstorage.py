# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Option docs shared by the modules that work on a RelStorage side's PostgreSQL database
(relstorage_copy, relstorage_backup; module_utils/relstorage_pg.py)."""
from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r'''
options:
  database:
    description: The side's database.
    type: dict
    required: true
    suboptions:
      host: {description: The server's address., type: str, required: true}
      port: {description: The server's port., type: int, default: 5432}
      name: {description: The database's name., type: str, required: true}
      user: {description: The account that owns it (with CREATEDB)., type: str, required: true}
  password:
    description: The password of O(database.user); never written out but to the passfile.
    type: str
    required: true
  pg_bin_dir:
    description:
      - The folder of C(pg_dump) and C(pg_restore). Default, the newest
        C(/usr/lib/postgresql/<version>/bin), else the C(PATH).
    type: path
  timeout:
    description: Seconds to wait for a connection.
    type: int
    default: 30
requirements:
  - psycopg2 importable by the Python that runs the module (a RelStorage release's virtualenv
    has it), and C(pg_dump) / C(pg_restore) of the server's major version or newer.
notes:
  - B(Passwords.) They go to libpq and the PostgreSQL tools through a temporary passfile (mode
    0600, removed after the run), never on a command line, in the environment, in a result or
    in a message.
'''
