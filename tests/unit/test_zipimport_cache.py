"""scripts/venv-site/zopeops_zipimport_cache.py: code imported from a zip is compiled once,
kept by a hash of its source, and given the importing zip's file name; a folder others may
write to is never read."""
from __future__ import annotations

import marshal
import os
import subprocess
import sys
import zipfile

from support.paths import REPO

SCRIPT = REPO / 'scripts' / 'venv-site'

# Imports the module from the zip with the cache installed, and says where its code came from
# (a fresh compile counts the calls of the original compile step) and what its file name is.
PROBE = r'''
import sys, zipimport
import zopeops_zipimport_cache as cache
compiled = []
original = cache._COMPILE
def counting(pathname, source):
    compiled.append(pathname)
    return original(pathname, source)
cache._COMPILE = counting
sys.path.insert(0, sys.argv[1])
import payload
try:
    payload.fail()
except ZeroDivisionError as exc:
    tb = exc.__traceback__
    while tb.tb_next:
        tb = tb.tb_next
    where = tb.tb_frame.f_code.co_filename
print(len(compiled), payload.VALUE, where)
'''


def make_zip(path, value):
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('payload.py', 'VALUE = %r\n\ndef fail():\n    return 1 / 0\n' % value)
    return path


def probe(tmp_path, archive, **env):
    environment = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / 'cache'),
                       PYTHONPATH=str(SCRIPT), **env)
    proc = subprocess.run([sys.executable, '-c', PROBE, str(archive)], capture_output=True,
                          text=True, env=environment, timeout=60, check=True)
    compiled, value, where = proc.stdout.split()
    return int(compiled), value, where


def test_compiled_once_then_read_from_the_cache_with_the_zips_own_name(tmp_path):
    first = make_zip(tmp_path / 'one.zip', 'a')
    assert probe(tmp_path, first) == (1, "a", str(first / 'payload.py'))
    entries = list((tmp_path / 'cache' / 'zopeops-stages' / 'zipimport-code').iterdir())
    assert len(entries) == 1
    # The same source in another zip (every Ansible task has a new temporary one): no compile,
    # and a traceback names the zip that was imported, not the first one.
    second = make_zip(tmp_path / 'two.zip', 'a')
    assert probe(tmp_path, second) == (0, "a", str(second / 'payload.py'))


def test_a_changed_source_is_compiled_again(tmp_path):
    probe(tmp_path, make_zip(tmp_path / 'one.zip', 'a'))
    assert probe(tmp_path, make_zip(tmp_path / 'two.zip', 'b'))[:2] == (1, "b")


def test_a_broken_entry_is_compiled_again(tmp_path):
    probe(tmp_path, make_zip(tmp_path / 'one.zip', 'a'))
    for entry in (tmp_path / 'cache' / 'zopeops-stages' / 'zipimport-code').iterdir():
        entry.write_bytes(b'not marshal data')
    assert probe(tmp_path, make_zip(tmp_path / 'two.zip', 'a'))[:2] == (1, "a")


def test_a_folder_others_may_write_to_is_never_read(tmp_path):
    """An entry someone else could have written (other code under the right key) is not run."""
    probe(tmp_path, make_zip(tmp_path / 'one.zip', 'a'))
    folder = tmp_path / 'cache' / 'zopeops-stages' / 'zipimport-code'
    [entry] = folder.iterdir()
    entry.write_bytes(marshal.dumps(compile("VALUE = 'evil'\ndef fail():\n    1 / 0\n",
                                            'x', 'exec')))
    assert probe(tmp_path, make_zip(tmp_path / 'two.zip', 'a'))[1] == 'evil'  # trusted: read
    folder.chmod(0o777)
    compiled, value, _where = probe(tmp_path, make_zip(tmp_path / 'three.zip', 'a'))
    assert compiled > 0 and value == 'a'


def test_turned_off(tmp_path):
    probe(tmp_path, make_zip(tmp_path / 'one.zip', 'a'), ZOPEOPS_ZIPIMPORT_CACHE='0')
    assert not (tmp_path / 'cache' / 'zopeops-stages').exists()
