"""Shared by bench/promotion_bench.py and bench/cutover_bench.py: a local pipeline of its own
(site.yml on a bench sandbox under a free port block), data sets made with ZODB, the bytes a
run writes, the ledger, and the "## Promotion" section of docs/benchmarks.md.

Not part of the test suite. Run the benches with the project's venv python from the repo root.
Every process the benches start is stopped by PID; the sandbox is stopped with
scripts/sandbox-stop at the end (also on failure) unless --keep is given. All traffic goes to
127.0.0.1, every load is bounded in count and time.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / 'tests'), str(REPO / 'collections')]

from support.ports import free_port_block  # noqa: E402  (after the path setup above)
from support.writeload import WriteLoad, admin_auth  # noqa: E402

RESULTS = REPO / 'bench' / 'results'
DOC = REPO / 'docs' / 'benchmarks.md'
IMAGES = REPO / 'docs' / 'images'
BIN = pathlib.Path(sys.executable).parent
PIPELINE = ['dev', 'beta', 'test', 'prod']
STAGE = 'test'            # the stage the benches promote (predecessor beta, twin test_upgrade)
PREDECESSOR = 'beta'
# inventories/local: stage offsets from zopeops_port_base (lb 0-3, ZEO 10/20/30/40, clients
# +1.., the twin's ZEO +5 and its clients +6..)
ZEO_OFFSET = {'dev': 10, 'beta': 20, 'test': 30, 'prod': 40}
SIZES = {'demo': 0, '100M': 100 * 10**6, '1G': 1000 * 10**6}


def log(message):
    print('[%s] %s' % (time.strftime('%H:%M:%S'), message), flush=True)


# -- the bench's pipeline ---------------------------------------------------------------------
def write_inventory(dest, clients):
    """A copy of inventories/local whose stage ``test`` and its twin have ``clients`` Zope
    clients each (test: ports base+31.., test_upgrade: base+36..; at most 4)."""
    assert 1 <= clients <= 4, clients
    dest = pathlib.Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(REPO / 'inventories' / 'local', dest)
    for host, side, first in (('test-local', 'live', 31), ('test_upgrade-local', 'upgrade', 36)):
        lines = ['---', 'zopeops_stage: test', 'zopeops_side: %s' % side]
        if side == 'live':
            lines.append('zopeops_revision: demo-v1')
        lines.append('zopeops_zeo_port: "{{ zopeops_port_base | int + %d }}"' % (first - 1))
        lines.append('zopeops_clients:')
        for number in range(clients):
            lines.append('  - {name: client%d, port: "{{ zopeops_port_base | int + %d }}"}'
                         % (number + 1, first + number))
        (dest / 'host_vars' / ('%s.yml' % host)).write_text('\n'.join(lines) + '\n')
    return dest


@dataclasses.dataclass
class BenchPipeline:
    workdir: pathlib.Path
    port_base: int
    clients: int = 0
    extra_env: dict = dataclasses.field(default_factory=dict)

    @property
    def sandbox(self):
        return self.workdir / 'sandbox'

    @property
    def inventory(self):
        return self.workdir / ('inventory-%dc' % self.clients)

    @property
    def timings_dir(self):
        path = self.workdir / 'timings'
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def extra_vars(self):
        return {'zopeops_sandbox': str(self.sandbox), 'zopeops_port_base': self.port_base}

    # the interface of tests/support/promotion.py's helpers
    def lb_port(self, stage):
        return self.port_base + PIPELINE.index(stage)

    def lb_bases(self, stage):
        return ['http://127.0.0.1:%d' % self.lb_port(stage)]

    def state(self, stage):
        path = self.sandbox / 'lb' / 'promotions' / ('%s.json' % stage)
        return json.loads(path.read_text()) if path.exists() else {}

    def admin_auth(self):
        return admin_auth(self.sandbox / 'secrets' / 'zope-admin-password')

    def datafs(self, instance):
        return self.sandbox / instance / 'var' / 'filestorage' / 'Data.fs'

    def ledger(self):
        path = self.sandbox / 'lb' / 'promotions' / 'ledger.jsonl'
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def runtime_dir(self):
        return pathlib.Path('/tmp/zopeops-' + hashlib.sha1(
            str(self.sandbox).encode()).hexdigest()[:10])

    def supervisord_pid(self):
        try:
            pid = int((self.runtime_dir() / 'supervisord.pid').read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pathlib.Path('/proc/%d' % pid).exists() else None

    def supervisorctl(self, *args, check=True):
        proc = subprocess.run([str(BIN / 'supervisorctl'), '-c',
                               str(self.sandbox / 'supervisor' / 'supervisord.conf'), *args],
                              capture_output=True, text=True, timeout=300, check=False)
        if check and proc.returncode not in (0, 3):
            raise RuntimeError('supervisorctl %s: %s%s'
                               % (' '.join(args), proc.stdout, proc.stderr))
        return proc.stdout

    def env(self, timings_file=None):
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / 'ansible.cfg'), ANSIBLE_NOCOLOR='1',
                   ANSIBLE_FORCE_COLOR='0', PYTHONUNBUFFERED='1')
        env.update(self.extra_env)
        if timings_file:
            env.update(ANSIBLE_CALLBACK_PLUGINS=str(REPO / 'bench' / 'callback_plugins'),
                       ANSIBLE_CALLBACKS_ENABLED='bench_timings,zopeops.stages.preload',
                       BENCH_TIMINGS_FILE=str(timings_file))
        return env

    def playbook_argv(self, playbook, extra=None):
        return [str(BIN / 'ansible-playbook'), '-i', str(self.inventory),
                str(REPO / 'playbooks' / playbook), '-e',
                json.dumps(dict(self.extra_vars, **(extra or {})))]

    def run_playbook(self, playbook, extra=None, timings_file=None, log_path=None,
                     timeout=3600):
        argv = self.playbook_argv(playbook, extra)
        with open(log_path or os.devnull, 'a') as out:
            proc = subprocess.run(argv, cwd=str(REPO), stdout=out, stderr=subprocess.STDOUT,
                                  env=self.env(timings_file), timeout=timeout, check=False)
        return proc.returncode

    def up(self, clients):
        """site.yml with an inventory whose stage and twin have ``clients`` clients each."""
        if clients < self.clients:
            raise RuntimeError('client counts must grow within one sandbox (%d after %d)'
                               % (clients, self.clients))
        self.clients = clients
        write_inventory(self.inventory, clients)
        log('site.yml (%d client(s) per side of %s) on %s, ports %d-%d'
            % (clients, STAGE, self.sandbox, self.port_base, self.port_base + 49))
        started = time.monotonic()
        rc = self.run_playbook('site.yml', log_path=self.workdir / 'site.log')
        if rc != 0:
            raise RuntimeError('site.yml failed (rc %d), see %s' % (rc, self.workdir / 'site.log'))
        log('site.yml done in %.0f s' % (time.monotonic() - started))
        save_pipeline(self)
        return time.monotonic() - started

    def stop(self):
        subprocess.run([sys.executable, str(REPO / 'scripts' / 'sandbox-stop'),
                        str(self.sandbox)], timeout=300, check=False)

    def client_ports(self, instance):
        found = []
        for ini in sorted((self.sandbox / instance / 'etc').glob('zope-*.ini')):
            match = re.search(r'^port\s*=\s*(\d+)', ini.read_text(), flags=re.M)
            found.append(int(match.group(1)))
        return found

    def active_side(self, stage=STAGE):
        for line in (self.sandbox / 'lb' / 'etc' / 'active.map').read_text().splitlines():
            if line.startswith(stage + ' '):
                return line.split()[1]
        return None


def new_pipeline(workdir):
    """A pipeline for a fresh sandbox in ``workdir`` (a stopped one left there is removed, with
    the data sets made for it: they hold its admin user); refused while one runs there."""
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    pipeline = BenchPipeline(workdir, free_port_block(50, start=50000))
    if pipeline.supervisord_pid():
        raise SystemExit('a sandbox runs in %s already: stop it with scripts/sandbox-stop '
                         '(or use another --workdir, or --reuse)' % pipeline.sandbox)
    for stale in (pipeline.sandbox, workdir / 'datasets', workdir / 'timings'):
        if stale.exists():
            shutil.rmtree(stale)
    return pipeline


def save_pipeline(pipeline):
    """Remember a kept sandbox's port block and client count for ``--reuse``."""
    (pipeline.workdir / 'pipeline.json').write_text(json.dumps(
        {'port_base': pipeline.port_base, 'clients': pipeline.clients}) + '\n')


def reuse_pipeline(workdir):
    """The running sandbox that an earlier bench left in ``workdir`` with --keep."""
    workdir = pathlib.Path(workdir).resolve()
    saved = json.loads((workdir / 'pipeline.json').read_text())
    pipeline = BenchPipeline(workdir, saved['port_base'], saved['clients'])
    if not pipeline.supervisord_pid():
        raise SystemExit('no running sandbox in %s to reuse' % pipeline.sandbox)
    return pipeline


def wait_http(ports, path='/@@zopeops-info', timeout=300):
    deadline = time.monotonic() + timeout
    for port in ports:
        url = 'http://127.0.0.1:%d%s' % (port, path)
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError('no HTTP 200 from %s within %ds' % (url, timeout))
            time.sleep(0.1)


# -- data -------------------------------------------------------------------------------------
def grow_zodb(path, blob_dir, target_bytes, blob_every=10, blob_bytes=256 * 1024,
              objects_per_txn=100, object_bytes=10_000):
    """Add real ZODB content until the FileStorage at ``path`` holds ``target_bytes``: an
    OOBTree under the root key ``zopeops_bench`` of PersistentMapping "documents" (title, a
    text body of random bytes), ``objects_per_txn`` a transaction, and one blob of
    ``blob_bytes`` every ``blob_every`` transactions (so about a tenth of the data is in
    blobs). Everything is reachable from the root, so a pack with GC keeps it all."""
    import ZODB
    import ZODB.FileStorage
    from BTrees.OOBTree import OOBTree
    from persistent.mapping import PersistentMapping
    from ZODB.blob import Blob
    storage = ZODB.FileStorage.FileStorage(str(path), blob_dir=str(blob_dir))
    db = ZODB.DB(storage, cache_size=1000)
    made = {'transactions': 0, 'objects': 0, 'blobs': 0}
    try:
        with db.transaction() as conn:
            if 'zopeops_bench' not in conn.root():
                conn.root()['zopeops_bench'] = OOBTree()
        while storage.getSize() < target_bytes:
            with db.transaction() as conn:
                tree = conn.root()['zopeops_bench']
                for _object in range(objects_per_txn):
                    key = 'doc-%09d' % len(tree)
                    tree[key] = PersistentMapping({
                        'title': key, 'body': os.urandom(object_bytes // 2).hex()[:object_bytes]})
                    made['objects'] += 1
                if made['transactions'] % blob_every == 0:
                    blob = Blob()
                    with blob.open('w') as handle:
                        handle.write(os.urandom(blob_bytes))
                    tree['blob-%09d' % made['blobs']] = PersistentMapping({'file': blob})
                    made['blobs'] += 1
            made['transactions'] += 1
    finally:
        db.close()
    return made


def copy_instance_data(src_fs, src_blobs, dest_fs, dest_blobs, link_blobs=True):
    dest_fs.parent.mkdir(parents=True, exist_ok=True)
    for leftover in glob.glob(str(dest_fs) + '*'):
        os.unlink(leftover)
    subprocess.run(['cp', str(src_fs), str(dest_fs)], check=True)
    if dest_blobs.exists():
        shutil.rmtree(dest_blobs)
    subprocess.run(['cp', '-al' if link_blobs else '-a', str(src_blobs), str(dest_blobs)],
                   check=True)


def stop_instance(pipeline, instance):
    programs = [instance + '-' + p for p in _client_names(pipeline, instance)]
    pipeline.supervisorctl('stop', *programs, instance + '-zeo')


def start_instance(pipeline, instance):
    """Start an instance's ZEO and clients, wait for HTTP 200 from each client and, for a
    stage whose traffic is on this side, for HAProxy's checks to pass (else the frontend
    answers 503 for a moment, even to reads)."""
    programs = [instance + '-' + p for p in _client_names(pipeline, instance)]
    pipeline.supervisorctl('start', instance + '-zeo', *programs)
    wait_http(pipeline.client_ports(instance))
    backend = 'be_%s_%s' % (instance.replace('_upgrade', ''),
                            'upgrade' if instance.endswith('_upgrade') else 'live')
    if pipeline.active_side(instance.replace('_upgrade', '')) == backend:
        sys.path.insert(0, str(REPO / 'bench'))
        import baseline_promote
        baseline_promote.wait_checks_pass(baseline_promote.Sandbox(str(pipeline.sandbox)),
                                          backend)


def _client_names(pipeline, instance):
    return [ini.name[len('zope-'):-len('.ini')]
            for ini in sorted((pipeline.sandbox / instance / 'etc').glob('zope-*.ini'))]


def set_instance_data(pipeline, instance, dataset):
    """Offline: stop ``instance``, make its Data.fs a copy of ``dataset`` (blobs hard-linked),
    drop its ZEO client caches, start it again and wait for HTTP."""
    stop_instance(pipeline, instance)
    var = pipeline.sandbox / instance / 'var'
    copy_instance_data(dataset / 'Data.fs', dataset / 'blobstorage',
                       var / 'filestorage' / 'Data.fs', var / 'blobstorage')
    for cache in var.glob('*/*.zec'):
        cache.unlink()
    start_instance(pipeline, instance)


def ensure_dataset(pipeline, size, datasets_dir):
    """The folder {Data.fs, blobstorage} of data set ``size`` ('demo', '100M', '1G'), made
    once: 'demo' is the predecessor's data as site.yml seeded it (taken offline), the others
    are the demo data grown with ``grow_zodb``."""
    datasets_dir = pathlib.Path(datasets_dir)
    folder = datasets_dir / size
    if (folder / 'done.json').exists():
        return folder
    if size == 'demo':
        stop_instance(pipeline, PREDECESSOR)
        var = pipeline.sandbox / PREDECESSOR / 'var'
        copy_instance_data(var / 'filestorage' / 'Data.fs', var / 'blobstorage',
                           folder / 'Data.fs', folder / 'blobstorage', link_blobs=False)
        start_instance(pipeline, PREDECESSOR)
        made = {}
    else:
        smaller = ensure_dataset(pipeline, 'demo', datasets_dir)
        work = datasets_dir / (size + '.tmp')
        if work.exists():
            shutil.rmtree(work)
        copy_instance_data(smaller / 'Data.fs', smaller / 'blobstorage', work / 'Data.fs',
                           work / 'blobstorage', link_blobs=False)
        log('generating the %s data set (ZODB objects and blobs)' % size)
        started = time.monotonic()
        made = grow_zodb(work / 'Data.fs', work / 'blobstorage', SIZES[size])
        made['seconds'] = round(time.monotonic() - started, 1)
        for leftover in work.glob('Data.fs.*'):
            leftover.unlink()
        if folder.exists():
            shutil.rmtree(folder)
        work.rename(folder)
        log('data set %s: %s' % (size, made))
    made.update(datafs_bytes=(folder / 'Data.fs').stat().st_size,
                blob_files=sum(1 for _blob in (folder / 'blobstorage').rglob('*.blob')))
    (folder / 'done.json').write_text(json.dumps(made) + '\n')
    return folder


# -- measuring --------------------------------------------------------------------------------
def io_of(pid):
    """write_bytes and cancelled_write_bytes of a process (threads and reaped children)."""
    values = {}
    try:
        for line in pathlib.Path('/proc/%d/io' % pid).read_text().splitlines():
            key, _sep, value = line.partition(':')
            values[key.strip()] = int(value)
    except OSError:
        return 0, 0
    return values.get('write_bytes', 0), values.get('cancelled_write_bytes', 0)


def children_of(pid):
    found = []
    for task in glob.glob('/proc/%d/task/*/children' % pid):
        try:
            found += [int(x) for x in pathlib.Path(task).read_text().split()]
        except OSError:
            pass
    return found


class WrittenBytes:
    """Bytes sent to the storage layer by (a) this process's reaped children (ansible-playbook
    and every module process under it, or the baseline script and its cp processes: Linux adds
    a reaped child's I/O counters to its parent's /proc/<pid>/io) and (b) the sandbox's
    supervisord with its programs (ZEO, Zope, HAProxy; programs that exit are reaped by
    supervisord and land in its counters, live ones are read one by one). Page-cache writes
    are counted when pages are dirtied; hard links and renames write nothing."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def sample(self):
        own, own_cancelled = io_of(os.getpid())
        sup = self.pipeline.supervisord_pid()
        tree, tree_cancelled = (0, 0)
        if sup:
            for pid in [sup] + children_of(sup):
                written, cancelled = io_of(pid)
                tree += written
                tree_cancelled += cancelled
        return {'runner': own, 'services': tree,
                'cancelled': own_cancelled + tree_cancelled}

    @staticmethod
    def delta(before, after):
        return {key: after[key] - before[key] for key in before}


def disk_usage(path):
    """Bytes of disk blocks under ``path`` (du -s -B1: each hard-linked file once)."""
    proc = subprocess.run(['du', '-s', '-B1', str(path)], capture_output=True, text=True,
                          check=False)
    return int(proc.stdout.split()[0]) if proc.stdout else 0


def last_ledger_entry(pipeline, run_id_before):
    entries = pipeline.ledger()
    if not entries or entries[-1].get('run_id') == run_id_before:
        return None
    return entries[-1]


def read_timings(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt_mb(value):
    return '%.1f MB' % (value / 1e6) if value >= 1e5 else '%.0f kB' % (value / 1e3)


def host_info():
    import platform
    return {'python': sys.version.split()[0], 'machine': platform.machine(),
            'cpus': os.cpu_count(), 'kernel': platform.release(),
            'load_average': [round(x, 2) for x in os.getloadavg()]}


def save(name, payload):
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
    payload = dict(payload, bench=name, when=stamp, host=host_info())
    path = RESULTS / ('%s-%s.json' % (name, stamp))
    path.write_text(json.dumps(payload, indent=2, default=str) + '\n')
    return path


SECTION = '## Promotion'


def update_doc(marker, markdown):
    """Put ``markdown`` between this bench's markers in the "## Promotion" section of
    docs/benchmarks.md (made at the end of the file if missing); other sections stay."""
    start, end = '<!-- %s:start -->' % marker, '<!-- %s:end -->' % marker
    block = '%s\n%s\n%s' % (start, markdown.strip(), end)
    text = DOC.read_text() if DOC.exists() else '# Benchmarks\n'
    if start in text:
        text = re.sub(re.escape(start) + '.*?' + re.escape(end), lambda _m: block, text,
                      flags=re.S)
    else:
        if SECTION + '\n' not in text:
            text = text.rstrip() + '\n\n' + SECTION + '\n'
        head, sep, tail = text.partition(SECTION + '\n')
        nxt = re.search(r'^## ', tail, flags=re.M)
        cut = nxt.start() if nxt else len(tail)
        tail = tail[:cut].rstrip() + '\n\n' + block + '\n\n' + tail[cut:]
        text = head + sep + tail
    DOC.write_text(text.rstrip() + '\n')


class PacedWriteLoad(WriteLoad):
    """WriteLoad at a steady ``rate`` of new ids a second (retries come on top): each new id
    waits for its slot start + n / rate, so the rate holds while the writers keep up;
    ``threads`` bounds how many are in flight. Stops by ``max_writes`` or ``max_seconds``."""

    def __init__(self, base_url, auth, rate, **kwargs):
        super().__init__(base_url, auth, **kwargs)
        self.rate = float(rate)
        self._slots = 0
        self._t0 = None

    def start(self):
        self._t0 = time.monotonic()
        return super().start()

    def _next_id(self):
        with self._lock:
            slot = self._t0 + self._slots / self.rate
            self._slots += 1
        delay = slot - time.monotonic()
        if delay > 0:
            if self._stop.wait(delay):
                return None
        return super()._next_id()
