# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups of a FileStorage with ZODB's own ``repozo``, blob backups that match them, a
retention by count of full backups, a JSON report per backup, and the restore drill.

One code path for a backup now and a scheduled one: the module ``zodb_backup`` calls
``backup()`` and ``drill()``; ``roles/backup`` copies this file (with ``files.py``, its only
other import, and the entry point ``roles/backup/files/zopeops_backup.py``; for a RelStorage
stage also ``pg_backup.py`` and ``relstorage_pg.py``, which ``scheduled`` calls instead) onto
the ZEO host (a RelStorage stage's first client host), where the systemd timer or the supervisord loop runs
``python zopeops_backup.py --config backup.json`` with the release's Python, which calls the
same functions (``cli``) and writes the same reports.

The repository (one folder per stage) holds what ``repozo -B`` writes
(``<stamp>.fs`` full, ``<stamp>.deltafs`` incremental, ``<stamp>.dat``, ``<stamp>.index``),
``blobs/<stamp>/`` (the blob folder as it was right after that backup, hard-linked where
possible: committed blob files never change), ``reports/<stamp>.json`` and ``latest.json``
(the last backup's report and when a run last found the repository up to date), and
``reports/drill-latest.json`` (the last restore drill).

Only the standard library at import time (ZODB is imported by the functions that need it), so
that the file is imported by a script outside Ansible.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time

try:
    from ansible_collections.zopeops.stages.plugins.module_utils.files import (
        LockTimeout, atomic_write, file_lock, read_json)
except ImportError:  # run as a script on the ZEO host: files.py is installed beside this file
    from files import LockTimeout, atomic_write, file_lock, read_json  # type: ignore

# repozo's file names: 2026-12-07-01-05-28.fs (full), .deltafs (incremental), z if gzipped.
DATA_FILE = re.compile(r'^(\d{4}(?:-\d\d){5})\.(fs|deltafs)z?$')
# The collection's pack lock beside the Data.fs (zodb_locks.PACK_LOCK_SUFFIX): a backup holds
# it shared, as a snapshot does, so an offline pack waits for it and it for the pack.
PACK_LOCK_SUFFIX = '.pack.lock'
# A promotion state that means the stage's data may be half changed (promotion.UNFINISHED).
UNFINISHED = ('running', 'failed', 'interrupted')
# The script's exit status when it skipped a run because the stage is busy (EX_TEMPFAIL).
EXIT_BUSY = 75


class BackupError(Exception):
    """A refusal or failure, reported as is: what, where, why, what to do."""


class StageBusy(BackupError):
    """The stage's data is being changed by a promotion, restore, push or pack."""


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def parse_iso(text):
    return datetime.datetime.strptime(text, '%Y-%m-%dT%H:%M:%SZ').replace(
        tzinfo=datetime.timezone.utc)


def repozo_command(repozo=None):
    """ZODB's repozo as a command (where it does not run in this process): ``repozo`` if
    given, else the console script beside this Python (the release's virtualenv), else
    ``python -m ZODB.scripts.repozo``."""
    if repozo:
        return [repozo]
    beside = os.path.join(os.path.dirname(sys.executable), 'repozo')
    if os.access(beside, os.X_OK):
        return [beside]
    return [sys.executable, '-m', 'ZODB.scripts.repozo']


def run_repozo(args, repozo=None):
    """Run repozo with ``args``; (log lines it printed); BackupError with its last words.

    ZODB's own ``repozo.main`` in this process (its output captured), unless ``repozo`` names
    a command or this Python has no ZODB: the run then costs no second interpreter start and
    ZODB import (docs/benchmarks.md, "Backups")."""
    if not repozo:
        try:
            from ZODB.scripts import repozo as in_process
        except ImportError:
            in_process = None
        if in_process is not None:
            return _repozo_here(in_process, args)
    command = repozo_command(repozo) + list(args)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BackupError('Cannot run repozo (%s): %s. It comes with ZODB: run with the '
                          "release virtualenv's python, or name it with repozo."
                          % (command[0], exc)) from None
    lines = (proc.stdout + proc.stderr).splitlines()
    if proc.returncode != 0:
        raise BackupError('repozo %s failed (exit %d): %s' % (
            ' '.join(args[:1]), proc.returncode, lines[-1] if lines else 'no output'))
    return lines


def _repozo_here(repozo_module, args):
    """``repozo.main(args)`` with its stdout and stderr captured, as run_repozo reports it: an
    exit status or an exception becomes the BackupError the command's exit would have."""
    captured = io.StringIO()
    status = 0
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        try:
            repozo_module.main(list(args))
        except SystemExit as exc:
            status = exc.code
        except Exception as exc:  # pylint: disable=broad-exception-caught
            status = '%s: %s' % (type(exc).__name__, exc)
    lines = captured.getvalue().splitlines()
    if status not in (None, 0):
        if isinstance(status, str):
            lines.append(status)
        raise BackupError('repozo %s failed (exit %d): %s' % (
            ' '.join(args[:1]), status if isinstance(status, int) else 1,
            lines[-1] if lines else 'no output'))
    return lines


def data_files(repository):
    """repozo's data files in ``repository``, oldest first: [(stamp, kind, name)]."""
    try:
        names = os.listdir(repository)
    except FileNotFoundError:
        return []
    found = []
    for name in sorted(names):
        match = DATA_FILE.match(name)
        if match:
            found.append((match.group(1), 'full' if match.group(2) == 'fs' else 'incremental',
                          name))
    return found


def chains(repository):
    """The backups grouped by the full backup they start from, oldest first."""
    groups = []
    for entry in data_files(repository):
        if entry[1] == 'full' or not groups:
            groups.append([])
        groups[-1].append(entry)
    return groups


def last_tid_of(path):
    """The last transaction id (16 hex digits) in a repozo data file (uncompressed), which
    ends at a transaction boundary: its last 8 bytes are that transaction's length."""
    with open(path, 'rb') as handle:
        end = handle.seek(0, os.SEEK_END)
        if end < 8 + 8 or path.endswith('z'):
            return None
        handle.seek(end - 8)
        length = struct.unpack('>Q', handle.read(8))[0]
        if length + 8 > end:
            return None
        handle.seek(end - 8 - length)
        return handle.read(8).hex()


def tid_time(tid_hex):
    if not tid_hex:
        return None
    from persistent.timestamp import TimeStamp
    stamp = TimeStamp(bytes.fromhex(tid_hex))
    return datetime.datetime.fromtimestamp(
        stamp.timeTime(), datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def check_source(path):
    try:
        with open(path, 'rb') as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise BackupError('Cannot read the Data.fs %s: %s. Check the path (the stage\'s '
                          'var/filestorage/Data.fs on its ZEO host).' % (path, exc.strerror)) \
            from None
    if magic != b'FS30' and magic != b'FS21':
        raise BackupError('%s is no FileStorage (it starts with %r, not FS30): name the '
                          "stage's Data.fs." % (path, magic))


def stage_busy(state_dir, stage):
    """Why the stage's data may be changing now, read from the promotions' folder (the
    conductor's <root>/lb/promotions), or None. Only where that folder is on this machine."""
    if not state_dir or not stage or not os.path.isdir(state_dir):
        return None
    lock = os.path.join(state_dir, '%s.lock' % stage)
    if os.path.isdir(lock):
        owner = read_json(os.path.join(lock, 'owner.json')) or {}
        return ('%s holds the lock of %s (%s, run %s by %s since %s)' % (
            owner.get('action') or 'a run', stage, lock, owner.get('run_id', '?'),
            owner.get('owner', '?'), owner.get('started_at', '?')))
    state = read_json(os.path.join(state_dir, '%s.json' % stage)) or {}
    if state.get('status') in UNFINISHED:
        return ('the last promotion of %s (run %s) is %s at step %s'
                % (stage, state.get('run_id', '?'), state.get('status'), state.get('step', '?')))
    return None


def _free_stamp(repository):
    """Wait (at most 2 s) until repozo's name for a file made now is free: it names files by
    the second and refuses to overwrite one."""
    for _attempt in range(25):
        taken = {entry[0] for entry in data_files(repository)}
        if time.strftime('%Y-%m-%d-%H-%M-%S', time.gmtime()) not in taken:
            return
        time.sleep(0.1)


def link_tree(source, dest):
    """Copy the blob folder ``source`` to ``dest`` with hard links (a copy where a link is not
    possible), skipping the server's tmp/; built as ``dest.part`` and renamed. The count of
    blob files."""
    part = dest + '.part'
    shutil.rmtree(part, ignore_errors=True)
    count = 0
    for folder, dirs, names in os.walk(source):
        relative = os.path.relpath(folder, source)
        if relative == '.':
            dirs[:] = [d for d in dirs if d != 'tmp']
        target = os.path.normpath(os.path.join(part, relative))
        os.makedirs(target, mode=0o700, exist_ok=True)
        for name in names:
            src, dst = os.path.join(folder, name), os.path.join(target, name)
            try:
                os.link(src, dst)
            except FileNotFoundError:
                continue  # removed by a pack meanwhile: no record of the backup names it
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
                shutil.copy2(src, dst)
            if name.endswith('.blob'):
                count += 1
    os.rename(part, dest)
    return count


def _folder_size(path):
    total = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:
                pass
    return total


def repository_umask(repository):
    """What a backup writes is as private as the repository's folder (0700: the account
    alone; 0750: its group may read), whatever the umask of the login that runs it: a
    backup.yml run makes the files a scheduled run (umask 0077 or 0027) makes."""
    if os.path.isdir(repository):
        os.umask(0o027 if os.stat(repository).st_mode & 0o050 else 0o077)


def write_report(repository, report):
    reports = os.path.join(repository, 'reports')
    os.makedirs(reports, mode=0o700, exist_ok=True)
    text = json.dumps(report, indent=2, sort_keys=True) + '\n'
    atomic_write(os.path.join(reports, '%s.json' % report['stamp']), text, mode=0o600)
    atomic_write(os.path.join(repository, 'latest.json'), text, mode=0o600)


def retention(repository, keep, check=False):
    """Remove the chains (a full backup, its incrementals, their .dat, .index, blob backups and
    reports) older than the newest ``keep`` full backups. The names removed."""
    groups = chains(repository)
    return remove_backups(repository, [
        (stamp, [name, stamp + '.dat', stamp + '.index'])
        for group in groups[:max(0, len(groups) - keep)] for stamp, _kind, name in group], check)


def remove_backups(repository, backups, check=False):
    """Remove each backup's files (``backups``: [(stamp, [file names])]) with its blob backup
    and report, those that exist; the paths removed (would remove, with ``check``)."""
    removed = []
    for stamp, names in backups:
        for path in list(names) + [os.path.join('blobs', stamp),
                                   os.path.join('reports', stamp + '.json')]:
            full = os.path.join(repository, path)
            if not os.path.lexists(full):
                continue
            removed.append(path)
            if check:
                continue
            if os.path.isdir(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
    return removed


def predict(path, repository, full):
    """What ``repozo -B`` (without -Q) would do, and why, read as it reads: (kind, reason)."""
    groups = chains(repository)
    if full:
        return 'full', 'a full backup was asked for'
    if not groups:
        return 'full', 'the repository holds no full backup yet'
    import hashlib
    size, digest = 0, hashlib.md5()
    for _stamp, _kind, name in groups[-1]:
        with open(os.path.join(repository, name), 'rb') as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b''):
                size += len(block)
                digest.update(block)
    source_size = os.path.getsize(path)
    if source_size < size:
        return 'full', 'the Data.fs shrank since the last backup (packed)'
    source = hashlib.md5()
    with open(path, 'rb') as handle:
        left = size
        while left:
            block = handle.read(min(left, 1 << 20))
            if not block:
                break
            source.update(block)
            left -= len(block)
    if source.hexdigest() != digest.hexdigest():
        return 'full', 'the Data.fs changed before its backed-up end (packed)'
    if source_size == size:
        return 'unchanged', 'nothing was committed since the last backup'
    return 'incremental', 'new transactions since the last backup'


def _reason(lines, kind):
    for line in lines:
        if 'full backup' in line and ('shrunk' in line or 'changed' in line
                                      or 'missing' in line):
            return line.strip().replace('possibly because of a pack', 'packed since')
    return {'full': 'the repository held no full backup yet, or a full one was asked for',
            'incremental': 'new transactions since the last backup',
            'unchanged': 'nothing was committed since the last backup'}[kind]


def backup(path, repository, blob_dir=None, keep=7, full=False, quick=False, repozo=None,
           lock_timeout=60.0, check=False):
    """One backup run: ``repozo -B`` (repozo decides full or incremental: full when there is
    none or the Data.fs was packed since), the matching blob backup, the report, retention.
    Returns the result dict (``changed``, ``kind``, ``report`` ...)."""
    started, started_at = time.monotonic(), now_iso()
    check_source(path)
    if keep < 1:
        raise BackupError('keep is %s: keep at least 1 full backup.' % keep)
    if blob_dir and not os.path.isdir(blob_dir):
        raise BackupError('The blob folder %s does not exist: name the stage\'s blob folder '
                          '(var/blobstorage) or none for a storage without blobs.' % blob_dir)
    if check:
        kind, reason = predict(path, repository, full)
        removed = retention(repository, keep - 1 if kind == 'full' else keep, check=True)
        return {'changed': kind != 'unchanged', 'kind': kind, 'reason': reason,
                'removed': removed, 'repository': repository,
                'msg': 'Would make %s backup of %s into %s (%s)%s.' % (
                    {'unchanged': 'no', 'full': 'a full'}.get(kind, 'an ' + kind), path,
                    repository, reason,
                    '; would remove %d old files' % len(removed) if removed else '')}
    os.makedirs(repository, mode=0o700, exist_ok=True)
    before = {entry[2] for entry in data_files(repository)}
    args = ['-B', '-v', '-r', repository, '-f', path] + (['-F'] if full else []) + \
        (['-Q'] if quick else [])
    try:
        with file_lock(path + PACK_LOCK_SUFFIX, lock_timeout, 'the pack lock of %s' % path,
                       shared=True):
            _free_stamp(repository)
            lines = run_repozo(args, repozo)
            new = [entry for entry in data_files(repository) if entry[2] not in before]
            blob_files = None
            if new and blob_dir:
                blob_files = link_tree(blob_dir, os.path.join(repository, 'blobs', new[0][0]))
    except LockTimeout:
        raise StageBusy('Cannot back up %s: an offline pack of it holds %s%s for more than '
                        '%.0fs. Run the backup after the pack.'
                        % (path, path, PACK_LOCK_SUFFIX, lock_timeout)) from None
    if not new:
        latest = read_json(os.path.join(repository, 'latest.json')) or {}
        if latest:
            latest['checked_at'] = now_iso()
            atomic_write(os.path.join(repository, 'latest.json'),
                         json.dumps(latest, indent=2, sort_keys=True) + '\n', mode=0o600)
        return {'changed': False, 'kind': 'unchanged', 'reason': _reason(lines, 'unchanged'),
                'removed': [], 'repository': repository, 'report': latest or None,
                'duration': round(time.monotonic() - started, 3),
                'msg': 'No backup needed: %s has no transaction since the last backup.' % path}
    stamp, kind, name = new[0]
    data_path = os.path.join(repository, name)
    files = [name] + [f for f in (stamp + '.index', stamp + '.dat')
                      if os.path.exists(os.path.join(repository, f))]
    chain = next(group for group in chains(repository) if name in [e[2] for e in group])
    tid = last_tid_of(data_path)
    size = sum(os.path.getsize(os.path.join(repository, f)) for f in files)
    report = {
        'stamp': stamp, 'kind': kind, 'reason': _reason(lines, kind), 'ok': True,
        'source': path, 'source_size': os.path.getsize(path), 'blob_dir': blob_dir,
        'files': files, 'size': size, 'full': chain[0][2],
        'chain': [entry[2] for entry in chain],
        'blob_backup': os.path.join('blobs', stamp) if blob_files is not None else None,
        'blob_files': blob_files,
        'last_tid': tid, 'last_tid_time': tid_time(tid),
        'started_at': started_at, 'finished_at': now_iso(),
        'duration': round(time.monotonic() - started, 3),
    }
    report['checked_at'] = report['finished_at']
    write_report(repository, report)
    removed = retention(repository, keep)
    return {'changed': True, 'kind': kind, 'reason': report['reason'], 'report': report,
            'removed': removed, 'repository': repository, 'duration': report['duration'],
            'msg': 'Made %s %s backup of %s: %s (%d bytes, last tid %s)%s.' % (
                'an' if kind == 'incremental' else 'a', kind, path, name, size, tid,
                '; removed %d files of old backups' % len(removed) if removed else '')}


# The dates a person gives for "the state at": 2026-12-07 05:10[:00], with a T or a Z, or
# repozo's own 2026-12-07-05-10-00 (all UTC).
DATE_AT = re.compile(r'^(\d{4})-(\d\d)-(\d\d)(?:[ T-](\d\d)(?:[:-](\d\d)(?:[:-](\d\d))?)?)?Z?$')


def repozo_date(text):
    """``text`` (a date and time, UTC) in repozo's full format yyyy-mm-dd-hh-mm-ss, the form of
    its file names, so that it compares with them; BackupError when it is no date."""
    match = DATE_AT.match((text or '').strip())
    try:
        if not match:
            raise ValueError(text)
        when = datetime.datetime(*(int(part or 0) for part in match.groups()))
    except ValueError:
        raise BackupError('backup_at %r is no date and time: give it as 2026-12-07 05:10:00 '
                          '(UTC; the time may be left out, or given as 05:10).' % text) from None
    return when.strftime('%Y-%m-%d-%H-%M-%S')


def chain_at(repository, backup_at=None):
    """The data files repozo -R uses for the latest state or the state at ``backup_at``
    (a date and time, UTC, see ``repozo_date``)."""
    when = repozo_date(backup_at) if backup_at else '9999'
    needed = []
    for stamp, kind, name in reversed(data_files(repository)):
        if stamp <= when:
            needed.append((stamp, kind, name))
            if kind == 'full':
                break
    return list(reversed(needed))


def _file_at(repository, chain, position):
    """The backup file of ``chain`` holding byte ``position`` of the restored Data.fs."""
    dat = os.path.join(repository, chain[0][0] + '.dat')
    try:
        with open(dat) as handle:
            for line in handle:
                name, start, end, _sum = line.split()
                if int(start) <= position < int(end):
                    return os.path.join(repository, os.path.basename(name))
    except (OSError, ValueError):
        pass
    return os.path.join(repository, chain[-1][2])


def chain_to_restore(repository, backup_at=None):
    """``chain_at``, or BackupError saying why there is nothing to restore."""
    chain = chain_at(repository, backup_at)
    if not chain:
        first = data_files(repository)
        raise BackupError('No backup in %s%s to restore: %s' % (
            repository, ' at or before %s' % backup_at if backup_at else '',
            'the first one is of %s (UTC).' % first[0][0] if first else 'run a backup first.'))
    return chain


def drill(repository, scratch_dir, backup_at=None, repozo=None, keep_scratch=False):
    """The restore drill: ``repozo -R -w`` (checks every file against its .dat: size and md5)
    of the latest backup (or the state at ``backup_at``) into ``scratch_dir``, then ZODB's
    ``fstest`` on the restored Data.fs and, for every record that names a blob, that file in
    the blob backup of the last file restored. Touches no stage. Returns the result."""
    started, started_at = time.monotonic(), now_iso()
    chain = chain_to_restore(repository, backup_at)
    for _stamp, _kind, name in chain:
        if name.endswith('z'):
            raise BackupError('%s is compressed; the drill reads uncompressed backups only.'
                              % os.path.join(repository, name))
    output = os.path.join(scratch_dir, 'Data.fs')
    shutil.rmtree(scratch_dir, ignore_errors=True)
    os.makedirs(scratch_dir, mode=0o700)
    try:
        args = ['-R', '-w', '-v', '-r', repository, '-o', output]
        if backup_at:
            args += ['-D', repozo_date(backup_at)]
        try:
            run_repozo(args, repozo)
        except BackupError as exc:
            raise BackupError('The restore drill refused the backup in %s: %s. That backup '
                              'cannot be restored; make a full one (backup.yml -e full=true).'
                              % (repository, str(exc).split(': ', 1)[-1])) from None
        from ZODB.scripts import fstest
        try:
            fstest.check(output)
        except fstest.FormatError as exc:
            position = re.search(r'(\d+)', str(exc))
            culprit = _file_at(repository, chain, int(position.group(1)) if position else 0)
            raise BackupError('The restore drill refused the backup: fstest found damage in '
                              'the Data.fs restored from %s (%s): %s. Make a full backup '
                              '(backup.yml -e full=true).'
                              % (culprit, ', '.join(e[2] for e in chain), exc)) from None
        last_stamp = chain[-1][0]
        blob_backup = os.path.join(repository, 'blobs', last_stamp)
        records, blobs, missing = _check_blobs(output, blob_backup)
        if missing:
            raise BackupError(
                'The restore drill refused the backup %s: %d of the %d blob files its records '
                'name are missing from the blob backup %s, e.g. %s.'
                % (chain[-1][2], len(missing), blobs, blob_backup, ', '.join(missing[:3])))
        tid = last_tid_of(os.path.join(repository, chain[-1][2]))
        report = {
            'stamp': last_stamp, 'ok': True, 'files': [e[2] for e in chain],
            'backup_at': backup_at, 'restored_size': os.path.getsize(output),
            'records': records, 'blob_records': blobs, 'last_tid': tid,
            'blob_backup': os.path.join('blobs', last_stamp) if os.path.isdir(blob_backup) else None,
            'last_tid_time': tid_time(tid), 'started_at': started_at,
            'finished_at': now_iso(), 'duration': round(time.monotonic() - started, 3),
        }
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch_dir, ignore_errors=True)
    os.makedirs(os.path.join(repository, 'reports'), mode=0o700, exist_ok=True)
    atomic_write(os.path.join(repository, 'reports', 'drill-latest.json'),
                 json.dumps(report, indent=2, sort_keys=True) + '\n', mode=0o600)
    return {'changed': False, 'verified': True, 'report': report, 'repository': repository,
            'duration': report['duration'],
            'msg': 'The restore drill restored %s (%d bytes, last tid %s): fstest passed, and '
                   'all %d blob files its records name are in %s.'
                   % (' + '.join(report['files']), report['restored_size'], tid, blobs,
                      blob_backup if blobs else 'the blob backup')}


def _check_blobs(path, blob_backup):
    """(records, blob records, [missing blob files]) of the FileStorage at ``path``."""
    from ZODB.FileStorage import FileStorage
    from ZODB.blob import FilesystemHelper, is_blob_record
    storage = FileStorage(path, read_only=True)
    helper = FilesystemHelper(blob_backup) if os.path.isdir(blob_backup) else None
    records = blobs = 0
    missing = []
    try:
        for txn in storage.iterator():
            for record in txn:
                records += 1
                if record.data is None or not is_blob_record(record.data):
                    continue
                blobs += 1
                name = helper.getBlobFilename(record.oid, record.tid) if helper else \
                    os.path.join(blob_backup, '%s/%s' % (record.oid.hex(), record.tid.hex()))
                if not os.path.exists(name):
                    missing.append(name)
    finally:
        storage.close()
    return records, blobs, missing


# ------------------------------------------------------------------ the scheduled runs
def _pg_run(config, verify):
    """A RelStorage stage's backup or drill (pg_backup.py, installed beside this file), its
    failures as BackupError."""
    try:
        from ansible_collections.zopeops.stages.plugins.module_utils import pg_backup
        from ansible_collections.zopeops.stages.plugins.module_utils.relstorage_pg import (
            fail_message)
    except ImportError:  # the script's folder
        import pg_backup  # type: ignore  # pylint: disable=import-outside-toplevel
        from relstorage_pg import fail_message  # type: ignore
    try:
        return pg_backup.run(pg_backup.scheduled_params(config, verify))
    except Exception as exc:  # PgError, psycopg2.Error
        message = fail_message(exc, config['database'])
        if message is None:
            raise
        raise BackupError(message) from None


def _scheduled_backup(config):
    if config.get('storage') == 'relstorage':
        return _pg_run(config, verify=False)
    return backup(config['path'], config['repository'], config.get('blob_dir'),
                  keep=int(config.get('keep', 7)), quick=bool(config.get('quick')),
                  repozo=config.get('repozo'))


def _scheduled_drill(config):
    if config.get('storage') == 'relstorage':
        return _pg_run(config, verify=True)
    return drill(config['repository'], config['scratch_dir'], repozo=config.get('repozo'))


def scheduled(config, now=time.time):
    """One scheduled run from ``config`` (what roles/backup writes): refuse while the stage is
    busy, back up, and run the drill when the last one is older than ``drill_every``. A
    config of ``storage: relstorage`` backs up the stage's database with pg_dump instead
    (pg_backup.py: its ``database`` and the clients' passfile ``pgpass``)."""
    busy = stage_busy(config.get('state_dir'), config.get('stage'))
    if busy:
        raise StageBusy('Backup of %s skipped: %s. The next scheduled run tries again.'
                        % (config.get('stage'), busy))
    result = _scheduled_backup(config)
    every = float(config.get('drill_every') or 0)
    if every:
        last = read_json(os.path.join(config['repository'], 'reports', 'drill-latest.json'))
        age = now() - parse_iso(last['finished_at']).timestamp() if last else None
        if age is None or age >= every:
            result['drill'] = _scheduled_drill(config)
    return result


def due_in(config, since, now=time.time):
    """Seconds until the next backup of the supervisord loop: ``interval`` after the last
    run that found the repository up to date, else after ``since`` (the loop's start)."""
    latest = read_json(os.path.join(config['repository'], 'latest.json')) or {}
    last = parse_iso(latest['checked_at']).timestamp() if latest.get('checked_at') else since
    return max(0.0, last + float(config.get('interval', 86400)) - now())


def cli(argv, out):
    """The scheduled runs' command line (roles/backup/files/zopeops_backup.py): one JSON line
    per run on ``out``; returns the exit status (0, 1, or EXIT_BUSY when skipped)."""
    import argparse
    parser = argparse.ArgumentParser(description='Scheduled backups of one stage.')
    parser.add_argument('--config', required=True, help='the JSON file roles/backup writes')
    parser.add_argument('--loop', action='store_true',
                        help='run forever: a backup every interval seconds (supervisord)')
    parser.add_argument('--verify', action='store_true', help='run the restore drill only')
    options = parser.parse_args(argv)
    with open(options.config) as handle:
        config = json.load(handle)
    since = time.time()
    while True:
        if options.loop:
            time.sleep(min(due_in(config, since), 3600))
            if due_in(config, since) > 0:
                continue
        try:
            if options.verify:
                result = _scheduled_drill(config)
            else:
                result = scheduled(config)
            out.write(json.dumps(result, sort_keys=True) + '\n')
            status = 0
        except BackupError as exc:
            out.write(json.dumps({'failed': True, 'msg': str(exc)}) + '\n')
            status = EXIT_BUSY if isinstance(exc, StageBusy) else 1
        out.flush()
        if not options.loop:
            return status
        if status:  # try again after ``retry`` seconds, not at once
            time.sleep(float(config.get('retry', 600)))
            since = time.time() - float(config.get('interval', 86400))
