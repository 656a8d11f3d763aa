"""A bytecode cache for code that Python imports from zip files, in the project's virtualenv.

Every Ansible module runs as an AnsiballZ payload: a zip of the module and the
``ansible.module_utils`` it needs, imported with ``zipimport``, which compiles every ``.py``
of it from source on every run (a zip carries no ``__pycache__``). For ansible-core 2.19 that
is about 100 ms of CPU per task and host, mostly ``ansible.module_utils.basic``, paid again
by every task of every playbook that runs modules with this virtualenv's Python (the local
pipeline, the tests' machines). This module keeps the compiled code, keyed by a hash of the
Python version and the source, under ``$XDG_CACHE_HOME/zopeops-stages/zipimport-code``
(default ``~/.cache``), so each source is compiled once.

The Makefile installs it into the virtualenv with a ``.pth`` line, so that it is active in
every Python process of the virtualenv; it only replaces ``zipimport``'s compile step. A cached
entry is the same code as a fresh compile (the file name is set to the importing zip's), a
changed source is a new key, and anything wrong (an unreadable or foreign cache folder, a
broken entry) falls back to compiling. ``ZOPEOPS_ZIPIMPORT_CACHE=0`` turns it off. Real hosts
run modules with their own Python and never see it.
"""
from __future__ import annotations

import os
import zipimport

_COMPILE = getattr(zipimport, '_compile_source', None)
# zipimport compiles each module twice (get_filename, then get_code): the second time comes
# from here, not from the disk again.
_SEEN = {}


def cache_folder():
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(base, 'zopeops-stages', 'zipimport-code')


def _trusted(folder):
    """Only a folder of this user's that nobody else may write to is read from."""
    try:
        info = os.stat(folder)
    except OSError:
        return False
    return info.st_uid == os.geteuid() and not info.st_mode & 0o022


def _renamed(code, pathname):
    """``code`` (and the code objects nested in it) as compiled from ``pathname``."""
    if code.co_filename == pathname:
        return code
    consts = tuple(_renamed(const, pathname) if isinstance(const, type(code)) else const
                   for const in code.co_consts)
    return code.replace(co_filename=pathname, co_consts=consts)


def compile_source(pathname, source):
    """zipimport's ``_compile_source``, with the cache in front of it."""
    import hashlib  # pylint: disable=import-outside-toplevel
    import importlib.util  # pylint: disable=import-outside-toplevel
    import marshal  # pylint: disable=import-outside-toplevel

    key = hashlib.sha256(importlib.util.MAGIC_NUMBER + b'\0' + source).hexdigest()
    if key in _SEEN:
        return _renamed(_SEEN[key], pathname)
    folder = cache_folder()
    path = os.path.join(folder, key)
    if _trusted(folder):
        try:
            with open(path, 'rb') as handle:
                code = _SEEN[key] = marshal.loads(handle.read())
            return _renamed(code, pathname)
        except (OSError, EOFError, ValueError, TypeError):
            pass
    code = _SEEN[key] = _COMPILE(pathname, source)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if _trusted(folder):
            partial = '%s.%d.partial' % (path, os.getpid())
            with open(partial, 'wb') as handle:
                handle.write(marshal.dumps(code))
            os.replace(partial, path)
    except OSError:
        pass
    return code


def install():
    """Put the cache in front of zipimport's compile step (once; not when turned off)."""
    if _COMPILE is None or os.environ.get('ZOPEOPS_ZIPIMPORT_CACHE', '1') == '0':
        return False
    zipimport._compile_source = compile_source  # pylint: disable=protected-access
    return True


install()
