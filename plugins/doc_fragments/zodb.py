# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Option docs shared by the zodb_* modules."""
from __future__ import annotations


class ModuleDocFragment:

    # The interpreter note every zodb_* module carries.
    DOCUMENTATION = r'''
options: {}
requirements:
  - "ZODB 5 or newer (and ZEO for the online variants) importable by the Python that runs the
    module. Run these modules with the release virtualenv's interpreter, for example with
    C(ansible_python_interpreter: <instance>/current/venv/bin/python) on the task.
    A module run by an interpreter without ZODB fails with a message naming that interpreter."
notes:
  - The storage is a ZODB FileStorage (C(Data.fs), magic C(FS30)) with an optional blob
    directory in the default C(bushy) layout.
'''

    # A FileStorage on this host and its blob directory.
    STORAGE = r'''
options:
  path:
    description:
      - Path of the FileStorage file, usually C(<instance>/var/filestorage/Data.fs).
    type: path
  blob_dir:
    description:
      - The storage's blob directory, usually C(<instance>/var/blobstorage). Omit it for a
        storage without blobs.
    type: path
'''

    # A running ZEO server.
    ZEO = r'''
options:
  zeo_address:
    description:
      - Address of a ZEO server, C(host:port) or the path of its unix socket.
    type: str
  storage:
    description:
      - Name of the storage on that ZEO server (the C(<filestorage NAME>) section of zeo.conf).
    type: str
    default: '1'
  zeo_timeout:
    description:
      - Seconds to wait for the ZEO server to answer.
    type: float
    default: 30
'''

    # Owner, group and mode of the files the module writes (like ansible.builtin.file's).
    OWNERSHIP = r'''
options:
  owner:
    description:
      - The account that owns the files the module writes or installs (and the folders it
        makes), usually the service user ZEO and Zope run as (C(zopeops_service_user)). A
        name or a uid; it must exist on the host. Omit it to leave the owner to the user the
        module runs as.
    type: str
  group:
    description:
      - The group of those files; a name or a gid. Omit it to leave the group as it is.
    type: str
  file_mode:
    description:
      - Permissions of those files, an octal string like C("0600"). Folders get the same with
        C(x) wherever C(r) is set (C(0600) -> C(0700), C(0640) -> C(0750)); a file that is
        not writable (a committed blob) stays not writable. Not called C(mode) because
        M(zopeops.stages.zodb_snapshot) has a C(mode) option already.
      - Default C(0600), or C(0640) when O(group) is given.
    type: raw
notes:
  - Files that already have the wanted owner, group and mode are not touched; the module
    reports C(changed) when it had to change any (RV(attributes_changed)).
'''

    # Free space kept on the destination filesystem.
    RESERVE = r'''
options:
  reserve_bytes:
    description:
      - Bytes that must remain free on the destination filesystem after the copy. The module
        checks the free space before it writes anything and fails, changing nothing, if the
        copy plus this reserve does not fit.
    type: int
    default: 0
'''
