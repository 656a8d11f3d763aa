"""How long a Plone client takes to start, without and with the release's compiled bytecode.

    .venv/bin/python bench/plone_start.py SANDBOX/dev [--rounds 3]

Starts the instance's Zope client (its release's ``runwsgi``) on a copy of the instance's data
(a FileStorage of its own, so the stage's ZEO server and clients are not touched), on a free
port, and times it from the exec until the health path ``/`` answers HTTP 200; then stops it.
Two cases, alternating, ``--rounds`` times each:

* ``source``: what every start did before releases were compiled and while
  ``PYTHONDONTWRITEBYTECODE`` reached the clients: no ``.pyc`` is found
  (``PYTHONPYCACHEPREFIX`` is an empty folder) and none is written, so every module is
  compiled from source at each start;
* ``compiled``: the release as app_release installs it (``uv pip install --compile-bytecode``)
  and as the process manager starts it (``PYTHONDONTWRITEBYTECODE`` empty).

Prints one line per start and the median per case, in seconds.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ZOPE_CONF = """\
%define INSTANCE {work}
instancehome $INSTANCE
clienthome $INSTANCE/var
<environment>
  CHAMELEON_CACHE $INSTANCE/var/chameleon
</environment>
<zodb_db main>
  <filestorage>
    path $INSTANCE/var/Data.fs
    blob-dir $INSTANCE/var/blobstorage
  </filestorage>
  mount-point /
</zodb_db>
"""
ZOPE_INI = """\
[app:main]
use = egg:Zope#main
zope_conf = {work}/zope.conf

[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = {port}
threads = 2
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_once(release, work, case, timeout):
    port = free_port()
    (work / 'zope.ini').write_text(ZOPE_INI.format(work=work, port=port))
    env = {key: value for key, value in os.environ.items()
           if not key.startswith('PYTHON')}
    if case == 'source':
        empty = work / 'no-pycache'
        shutil.rmtree(empty, ignore_errors=True)
        empty.mkdir()
        env.update(PYTHONDONTWRITEBYTECODE='1', PYTHONPYCACHEPREFIX=str(empty))
    shutil.rmtree(work / 'var' / 'chameleon', ignore_errors=True)
    (work / 'var' / 'chameleon').mkdir()
    log = open(work / ('%s.log' % case), 'ab')
    began = time.monotonic()
    proc = subprocess.Popen([str(release / 'venv' / 'bin' / 'runwsgi'), str(work / 'zope.ini')],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while not answers('http://127.0.0.1:%d/' % port):
            if proc.poll() is not None:
                raise SystemExit('the client exited with %s; see %s' % (proc.returncode, log.name))
            if time.monotonic() - began > timeout:
                raise SystemExit('no answer within %d s; see %s' % (timeout, log.name))
            time.sleep(0.1)
        return time.monotonic() - began
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', maxsplit=1)[0])
    parser.add_argument('instance', type=pathlib.Path,
                        help='an instance folder of a sandbox (holds current/ and var/)')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--timeout', type=int, default=600)
    args = parser.parse_args(argv)
    release = (args.instance / 'current').resolve()
    times = {'source': [], 'compiled': []}
    with tempfile.TemporaryDirectory(prefix='zopeops-plone-start-') as tmp:
        work = pathlib.Path(tmp)
        (work / 'zope.conf').write_text(ZOPE_CONF.format(work=work))
        var = work / 'var'
        var.mkdir()
        # The data as it is now (a FileStorage read with ZEO running is consistent up to its
        # last complete transaction; the copy is ours alone).
        shutil.copyfile(args.instance / 'var' / 'filestorage' / 'Data.fs', var / 'Data.fs')
        blobs = args.instance / 'var' / 'blobstorage'
        if blobs.is_dir():
            shutil.copytree(blobs, var / 'blobstorage')
        for number in range(args.rounds):
            for case in (('source', 'compiled') if number % 2 == 0 else ('compiled', 'source')):
                seconds = start_once(release, work, case, args.timeout)
                times[case].append(seconds)
                print('round %d %-8s %.1f s' % (number + 1, case, seconds), flush=True)
    for case, values in times.items():
        print('%-8s median %.1f s (min %.1f, max %.1f, n=%d)'
              % (case, statistics.median(values), min(values), max(values), len(values)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
