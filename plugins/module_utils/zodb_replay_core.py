# -*- coding: utf-8 -*-
# Copyright: zopeops.stages developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replay core: copy the transactions a source committed after a tid into a target, with
their tids, checked before and verified after (zodb_replay's documentation says what each
check proves).

Two modules use it: ``zodb_replay`` (one replay per call) and ``lb_cutover`` (the whole
cutover of a stage behind one balancer, its replays in the same process as its freeze and
switch, the source and target opened before the freeze). ``open_source`` and ``Target`` open
the two ends; ``replay_from`` replays what a parameter dict asks (the module options of
zodb_replay, ``replay_params`` fills the rest) between them.
"""
from __future__ import annotations

import json
import os
import shutil
import time

from ansible_collections.zopeops.stages.plugins.module_utils import zodb as zu
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_format as zfmt
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_manifest as zman
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_locks as zlock
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_storage as zstore
from ansible_collections.zopeops.stages.plugins.module_utils import zodb_zeo as zzeo
from ansible_collections.zopeops.stages.plugins.module_utils.options import with_defaults


def tid_option(params, name):
    if not params.get(name):
        return None
    try:
        return zfmt.hex_to_tid(params[name])
    except ValueError as exc:
        raise zu.ZODBDataError('%s: %s.' % (name, exc)) from None


def after_tid_from(params):
    if params['after_tid']:
        return tid_option(params, 'after_tid')
    path = params['after_manifest']
    if os.path.isdir(path):
        path = zman.manifest_path(path)
    try:
        with open(path, encoding='utf-8') as handle:
            return zfmt.hex_to_tid(json.load(handle)['tid'])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise zu.ZODBDataError('Cannot read a tid from %s: %s. Give after_tid, or the manifest '
                               'of the snapshot the target was installed from.' % (path, exc))


def plan_tail(source, after, until):
    """The source's committed transactions in (after, until], read from the headers alone."""
    fd = os.open(source, os.O_RDONLY)
    try:
        found_after, tail = zfmt.transactions_after(fd, after)
    finally:
        os.close(fd)
    if not found_after:
        raise zu.ZODBDataError(
            'The source %s holds no transaction %s (after_tid), so its history does not '
            'continue the target\'s: it was packed, replaced, or is another storage. Take and '
            'install a new snapshot instead.' % (source, zfmt.tid_to_hex(after)))
    if until is not None and until != after:
        tids = [tid for tid, _tpos, _end in tail]
        if until not in tids:
            raise zu.ZODBDataError(
                'The source %s holds no committed transaction %s (until_tid) after %s; its '
                'last committed one is %s. Read until_tid from the source\'s server again.'
                % (source, zfmt.tid_to_hex(until), zfmt.tid_to_hex(after),
                   zfmt.tid_to_hex(tids[-1] if tids else after)))
        tail = tail[:tids.index(until) + 1]
    elif until is not None:
        tail = []
    return tail


class FileSource:
    """The source of a replay: a FileStorage (a ZEO server may be serving it), read from its
    transaction headers and records, never locked or written."""

    def __init__(self, path, blob_dir):
        zfmt.check_filestorage(path, 'source')
        self.where = path
        self.blob_dir = blob_dir
        self.blobs = None
        if blob_dir:
            from ZODB.blob import FilesystemHelper
            self.blobs = FilesystemHelper(blob_dir)
        self.fd = None  # opened by the first previous_serial()

    def tail(self, after, until):
        return plan_tail(self.where, after, until)

    @staticmethod
    def tail_bytes(tail):
        return tail[-1][2] - tail[0][1] if tail else 0

    def needs_blobs(self, tail):
        return self.blob_dir is None and needs_blobs(self.where, tail)

    def transactions(self, tail):
        from ZODB.FileStorage import FileIterator
        # From the first planned transaction's position; stop= keeps off anything after it.
        return FileIterator(self.where, pos=tail[0][1], stop=tail[-1][0])

    def blob_file(self, record):
        return blob_file(self.blobs, record)

    def previous_serial(self, record):
        if self.fd is None:
            self.fd = os.open(self.where, os.O_RDONLY)
        return zfmt.previous_serial(self.fd, record.pos)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def open_source(params):
    if params['source_config']:
        return zstore.StorageSource(params['source_config'])
    return FileSource(params['source'], params['source_blob_dir'])


class Target:
    """The storage the transactions go to: a stopped FileStorage, a running ZEO server, or a
    storage opened from its configuration (a RelStorage database, running clients or not)."""

    def __init__(self, params, read_only):
        self.online = bool(params['zeo_address'])
        self.configured = bool(params['target_config'])
        if self.configured:
            # RelStorage: restore() with the source's tids under its commit lock; its running
            # clients see the new transactions at their next poll, as any commit's.
            self.where = 'the storage of %s' % params['target_config']
            self.storage = zstore.open_from_config(params['target_config'], 'target')
            return
        if self.online:
            self.where = 'the ZEO server at %s (storage %r)' % (params['zeo_address'],
                                                                params['storage'])
            # Blobs are streamed to the server from the source's files (OnlineWriter), so the
            # client needs no blob cache of its own.
            self.storage = zzeo.open_zeo(params['zeo_address'], params['storage'],
                                         read_only=read_only, timeout=params['zeo_timeout'])
            return
        path = params['path']
        self.where = path
        zfmt.check_filestorage(path, 'target')
        zlock.refuse_if_locked(path, 'replay into')
        from ZODB.FileStorage import FileStorage
        import zc.lockfile
        kwargs = {'blob_dir': params['target_blob_dir']} if params['target_blob_dir'] else {}
        if read_only:  # check mode: no lock, no index written, no tail truncated
            kwargs['read_only'] = True
        try:
            self.storage = FileStorage(path, **kwargs)
        except zc.lockfile.LockError:
            raise zu.ZODBDataError('Cannot replay into %s: it was locked just now (its ZEO '
                                   'server started?). Stop it, or use zeo_address.'
                                   % path) from None

    def last_tid(self):
        """The last tid as the storage itself reports it.

        A ClientStorage's lastTransaction() is its cache's view; ask the server (ZEO's
        ``lastTransaction`` server method) so that the check is the server's word.
        """
        if self.online:
            return self.storage._call('lastTransaction') or zfmt.Z64
        if self.configured:
            return zstore.last_tid(self.storage)
        return self.storage.lastTransaction() or zfmt.Z64

    def tids_after(self, after):
        start = zfmt.int_to_tid(zfmt.tid_to_int(after) + 1)
        return [txn.tid for txn in zstore.iterate(self.storage, start)]

    def close(self):
        self.storage.close()


class TransactionFailed(Exception):
    """A source transaction the target did not take: its tid and why."""

    def __init__(self, tid, reason):
        Exception.__init__(self, tid, reason)
        self.tid = tid
        self.reason = reason


def blob_file(source_blobs, record):
    """The source's blob file of a blob record (the error names the transaction around it)."""
    if source_blobs is None:
        raise zu.ZODBDataError('it stores a blob and no source_blob_dir was given')
    path = source_blobs.getBlobFilename(record.oid, record.tid)
    if not os.path.exists(path):
        raise zu.ZODBDataError(
            'the source blob file %s of object %s is missing. Check source_blob_dir'
            % (path, zfmt.tid_to_hex(record.oid)))
    return path


class OfflineWriter:
    """restore()/restoreBlob() into a stopped FileStorage: the records as they are,
    backpointers included, one transaction at a time (no round trips to save)."""

    def __init__(self, storage, source, counters):
        self.storage, self.source, self.counters = storage, source, counters

    def add(self, txn):
        from ZODB.blob import is_blob_record
        storage = self.storage
        storage.tpc_begin(txn, txn.tid, txn.status)
        try:
            blobs = 0
            for record in txn:
                if record.data and is_blob_record(record.data):
                    temp = os.path.join(storage.temporaryDirectory(), 'replay-%s-%s.blob' % (
                        record.oid.hex(), record.tid.hex()))
                    shutil.copyfile(self.source.blob_file(record), temp)
                    storage.restoreBlob(record.oid, record.tid, record.data, temp,
                                        record.data_txn, txn)
                    blobs += 1
                else:
                    storage.restore(record.oid, record.tid, record.data, '', record.data_txn,
                                    txn)
                self.counters['bytes'] += len(record.data or b'')
            storage.tpc_vote(txn)
            storage.tpc_finish(txn)
        except OSError:
            storage.tpc_abort(txn)
            raise
        except Exception as exc:  # ConflictError, POSException, a missing blob file...
            storage.tpc_abort(txn)
            raise TransactionFailed(txn.tid, exc) from None
        except BaseException:
            storage.tpc_abort(txn)
            raise
        self.counters['txns'] += 1
        self.counters['blobs'] += blobs

    def drain(self):
        """Every transaction given to add() is written when add() returns."""

    def abandon(self):
        """Nothing is left in flight."""


# A window of the online replay: the transactions sent to the server in one go. Two windows
# are in flight at most, so that the server commits one while the next is read and sent. What
# is in flight when not_after comes is finished (a frozen cutover waits for it): at most 128
# commits, about 0.7 s where each commit's fsync takes 5 ms (measured on a busy shared disk).
WINDOW_TRANSACTIONS = 64
WINDOW_BYTES = 4 * 1024 * 1024
BLOB_CHUNK_BYTES = 59000  # ZEO's ClientStorage.storeBlob sends blobs in chunks of this size


def blob_messages(handle, oid, serial, data, ident):
    """The messages that stream one blob to the server, read as they are sent."""
    try:
        yield ('storeBlobStart', ())
        while True:
            chunk = handle.read(BLOB_CHUNK_BYTES)
            if not chunk:
                break
            yield ('storeBlobChunk', (chunk,))
        yield ('storeBlobEnd', (oid, serial, data, ident))
    finally:
        handle.close()


class OnlineWriter:
    """The transactions committed through the target's ZEO server, several on the wire at once.

    Each one is sent as ClientStorage would send it (tpc_begin with the source's tid and status,
    a store() per record with the object's previous serial, a blob streamed from the source's
    file, vote, tpc_finish), but without waiting for each reply (zodb_zeo.CommitPipeline).
    Why store() and not restore(): ZEO's server (StorageServer.ZEOStorage._restore) does not
    add restored oids to the transaction's invalidations, so its other clients (the running
    Zope clients) would be told that the tid advanced but keep serving the old state from
    their caches; ZEOStorage._store does add them.

    What keeps it exact:
    - Before each store, ``checkCurrentSerialInTransaction(oid, previous serial)``: the server
      checks at vote that the target holds exactly the source's previous revision and fails
      the transaction with a ReadConflictError otherwise, before its store could try to
      resolve a conflict (a store alone would let a BTree bucket's conflict resolution write a
      state the source never had).
    - Each transaction but the first also checks one object the transaction before it wrote
      (at that transaction's tid), so if one transaction fails, every one sent after it fails
      too: the target keeps a prefix of the tail, never a tail with a hole. A transaction that
      wrote no object to check (an empty one) is waited for before the next is sent.
    - Each vote must report no resolved conflict and each tpc_finish the source's tid.
    """

    def __init__(self, pipeline, source, counters):
        self.pipeline, self.source, self.counters = pipeline, source, counters
        self.ident = 0
        self.proof = None  # (oid, tid) that the next transaction checks, or None
        self.window, self.window_bytes = [], 0
        self.in_flight = []  # [(transactions, replies)], oldest first

    def add(self, txn):
        from ZODB.blob import is_blob_record
        self.ident += 1
        ident = self.ident
        messages = [('async', 'tpc_begin', (ident, txn.user, txn.description, txn.extension,
                                            txn.tid, txn.status))]
        if self.proof:
            messages.append(('async', 'checkCurrentSerialInTransaction',
                             (self.proof[0], self.proof[1], ident)))
        proof, size, blobs, handles = None, 0, 0, []
        try:
            for record in txn:
                if record.data is None:
                    # An undo of an object's creation: there is no state to store, and the
                    # object is unreachable, so no client can hold it in a way that matters.
                    messages.append(('async', 'restorea', (record.oid, record.tid, None,
                                                           record.data_txn, ident)))
                    continue
                serial = self.source.previous_serial(record)
                if serial != zfmt.Z64:  # a new object has no revision to check
                    messages.append(('async', 'checkCurrentSerialInTransaction',
                                     (record.oid, serial, ident)))
                if is_blob_record(record.data):
                    # Opened here, so that a missing file fails this transaction before it
                    # is sent, not half way through its messages.
                    handle = open(self.source.blob_file(record), 'rb')
                    handles.append(handle)
                    size += os.fstat(handle.fileno()).st_size
                    messages.append(('iter', None, blob_messages(handle, record.oid, serial,
                                                                 record.data, ident)))
                    blobs += 1
                else:
                    messages.append(('async', 'storea', (record.oid, serial, record.data,
                                                         ident)))
                size += len(record.data)
                proof = proof or (record.oid, txn.tid)
        except OSError:
            for handle in handles:
                handle.close()
            raise
        except Exception as exc:  # a missing blob file, a torn record...
            for handle in handles:
                handle.close()
            self.drain()  # the transactions before this one are sound: the target takes them
            raise TransactionFailed(txn.tid, exc) from None
        messages += [('call', 'vote', (ident,)), ('call', 'tpc_finish', (ident,))]
        self.window.append((txn.tid, ident, blobs, messages))
        self.window_bytes += size
        self.counters['bytes'] += size
        self.proof = proof
        if proof is None or len(self.window) >= WINDOW_TRANSACTIONS or \
                self.window_bytes >= WINDOW_BYTES:
            self._send()
            while self.in_flight and (proof is None or len(self.in_flight) > 1):
                self._confirm_oldest()

    def _send(self):
        if not self.window:
            return
        messages = [message for _tid, _ident, _blobs, each in self.window for message in each]
        replies = self.pipeline.send(messages)
        self.in_flight.append(([(tid, ident, blobs) for tid, ident, blobs, _m in self.window],
                               replies))
        self.window, self.window_bytes = [], 0

    def _confirm_oldest(self):
        transactions, replies = self.in_flight.pop(0)
        timeout = self.pipeline.timeout
        for number, (tid, _ident, blobs) in enumerate(transactions):
            vote, finish = replies[2 * number], replies[2 * number + 1]
            try:
                resolved = vote.result(timeout)
                committed = finish.result(timeout)
            except Exception as exc:  # ConflictError, POSException, ClientDisconnected...
                self.in_flight.insert(0, (transactions[number:], replies[2 * number:]))
                raise TransactionFailed(tid, exc) from None
            if resolved:
                self.in_flight.insert(0, (transactions[number + 1:], replies[2 * number + 2:]))
                raise TransactionFailed(tid, zu.ZODBDataError(
                    'the target resolved a conflict on %d object(s) instead of taking the '
                    'source\'s state, so it does not hold the source\'s previous revisions'
                    % len(resolved)))
            if committed != tid:
                self.in_flight.insert(0, (transactions[number + 1:], replies[2 * number + 2:]))
                raise TransactionFailed(tid, zu.ZODBDataError(
                    'the target committed it as %s' % (
                        zfmt.tid_to_hex(committed) if committed else 'nothing')))
            self.counters['txns'] += 1
            self.counters['blobs'] += blobs

    def drain(self):
        """Send what is left and wait until the server has committed all of it."""
        self._send()
        while self.in_flight:
            self._confirm_oldest()

    def abandon(self):
        """After a failure: what was sent is aborted or let finish, nothing stays begun."""
        self.window = []
        idents = [ident for transactions, _replies in self.in_flight
                  for _tid, ident, _blobs in transactions]
        deadline = time.monotonic() + self.pipeline.timeout
        replies = [reply for _transactions, each in self.in_flight for reply in each]
        self.in_flight = []
        if idents:
            replies += self.pipeline.send([('call', 'tpc_abort', (ident,)) for ident in idents])
        for reply in replies:
            try:
                reply.result(max(0.0, deadline - time.monotonic()))
            except Exception:  # pylint: disable=broad-except
                # The failure that matters is being reported; closing the connection aborts a
                # transaction the server would still hold.
                pass


def needs_blobs(source, tail):
    """True if a transaction of the tail stores a blob (read before anything is written)."""
    from ZODB.FileStorage import FileIterator
    from ZODB.blob import is_blob_record
    iterator = FileIterator(source, pos=tail[0][1], stop=tail[-1][0])
    try:
        return any(record.data and is_blob_record(record.data)
                   for txn in iterator for record in txn)
    finally:
        iterator.close()


REPLAY_ARGUMENT_SPEC = dict(
    source=dict(type='path'),
    source_config=dict(type='path'),
    source_blob_dir=dict(type='path'),
    after_tid=dict(type='str'),
    after_manifest=dict(type='path'),
    passes=dict(type='int', default=1, no_log=False),
    settle=dict(type='int', default=5),
    until_tid=dict(type='str'),
    target_tid=dict(type='str'),
    path=dict(type='path'),
    target_blob_dir=dict(type='path', aliases=['blob_dir']),
    zeo_address=dict(type='str'),
    target_config=dict(type='path'),
    storage=dict(type='str', default='1'),
    zeo_timeout=dict(type='float', default=30),
    not_after=dict(type='float'),
)


def replay_params(**given):
    """A full parameter dict of a replay: zodb_replay's defaults, ``given`` over them."""
    return with_defaults(REPLAY_ARGUMENT_SPEC, given, 'zodb_replay')


def new_result():
    """The keys every replay returns, before anything is known."""
    return {'changed': False, 'transactions': 0, 'first_tid': None, 'last_tid': None,
            'blobs': 0, 'bytes': 0, 'target_tid_before': None}


def replay(params, check_mode, result):
    """One replay as ``params`` ask, opening (and closing) its source and target."""
    source = open_source(params)
    try:
        replay_from(params, check_mode, result, source)
    finally:
        source.close()


def replay_from(params, check_mode, result, source, target=None):
    """Replay from the opened ``source`` into ``target`` (a ``Target`` kept open by the
    caller), or into the target that ``params`` name, opened and closed here."""
    after = after_tid_from(params)
    until = tid_option(params, 'until_tid')
    expected = tid_option(params, 'target_tid') or after
    result.update(after_tid=zfmt.tid_to_hex(after))
    tail = source.tail(after, until)
    result.update(transactions=len(tail), first_tid=zfmt.tid_to_hex(tail[0][0]) if tail else None,
                  last_tid=zfmt.tid_to_hex(tail[-1][0]) if tail else None,
                  bytes=source.tail_bytes(tail), changed=bool(tail))
    if not (params['path'] or params['zeo_address'] or params['target_config']):
        # check mode only (see main)
        result['msg'] = 'The source %s has %d committed transactions after %s.' % (
            source.where, len(tail), result['after_tid'])
        return
    if tail and source.needs_blobs(tail):
        raise zu.ZODBDataError('Refusing to replay: transactions to copy from %s store blobs; '
                               'give source_blob_dir.' % source.where)
    if tail and params['path'] and not params['target_blob_dir'] and \
            (not isinstance(source, FileSource) or needs_blobs(source.where, tail)):
        raise zu.ZODBDataError('Refusing to replay into %s: transactions to copy store blobs; '
                               'give target_blob_dir.' % params['path'])
    own = target is None
    if own:
        target = Target(params, check_mode)
    try:
        before = target.last_tid()
        result['target_tid_before'] = zfmt.tid_to_hex(before)
        if before != expected:
            wanted = [tid for tid, _tpos, _end in tail]
            if tail and before == tail[-1][0] and target.tids_after(expected) == wanted:
                # A re-run after a replay that succeeded: the target holds exactly the tail.
                result.update(changed=False, transactions=0, bytes=0,
                              msg='%s already holds the %d transactions %s .. %s of %s.' % (
                                  target.where, len(tail), result['first_tid'],
                                  result['last_tid'], source.where))
                result['first_tid'] = result['last_tid'] = None
                return
            raise zu.ZODBDataError(
                'Refusing to replay into %s: its last transaction is %s, not %s (target_tid), '
                'so the target diverged or took writes of its own since it was installed. '
                'Nothing was written. Find out which side holds the writes to keep; install a '
                'new snapshot of the source on the target to start over.'
                % (target.where, zfmt.tid_to_hex(before), zfmt.tid_to_hex(expected)))
        if check_mode or not tail:
            result['msg'] = '%s %d transactions from %s into %s after %s.' % (
                'Would copy' if tail else 'Nothing to copy:', len(tail), source.where,
                target.where, result['after_tid'])
            return
        replay_tail(params, source, tail, target, result, expected)
        # A source that keeps serving writes while it is read has a new tail by the time a
        # pass ends: further passes shrink it, so that what is left for the write freeze is
        # only what arrives while the freeze is being set.
        totals = {key: result[key] for key in ('transactions', 'blobs', 'bytes')}
        first, passes, last_pass = result['first_tid'], 1, result['transactions']
        while passes < params['passes'] and last_pass > params['settle']:
            base = zfmt.hex_to_tid(result['last_tid'])
            tail = source.tail(base, until)
            last_pass = len(tail)
            if not tail:  # the source wrote nothing while the last pass ran: settled
                break
            passes += 1
            result.update(first_tid=zfmt.tid_to_hex(tail[0][0]),
                          last_tid=zfmt.tid_to_hex(tail[-1][0]), bytes=source.tail_bytes(tail))
            replay_tail(params, source, tail, target, result, base)
            for key in totals:
                totals[key] += result[key]
        settled = last_pass <= params['settle']
        result.update(totals, first_tid=first, passes=passes, settled=settled)
        if passes > 1:
            result['msg'] = 'Copied %d transactions (%s .. %s, %d blobs) in %d passes from %s ' \
                'into %s.' % (totals['transactions'], first, result['last_tid'], totals['blobs'],
                              passes, source.where, target.where)
    finally:
        if own:
            target.close()


def replay_tail(params, source, tail, target, result, base):
    counters = {'blobs': 0, 'txns': 0, 'bytes': 0}
    wanted = [tid for tid, _tpos, _end in tail]
    last = wanted[-1]
    if target.online:
        writer = OnlineWriter(zzeo.CommitPipeline(target.storage, params['zeo_timeout']),
                              source, counters)
    else:
        writer = OfflineWriter(target.storage, source, counters)
    iterator = source.transactions(tail)
    read = 0
    try:
        try:
            for txn in iterator:
                if read >= len(wanted) or txn.tid != wanted[read]:
                    writer.drain()
                    raise zu.ZODBDataError(
                        'the source %s changed while it was read (transaction %s where %s was '
                        'planned): was it packed? Run the replay again.'
                        % (source.where, zfmt.tid_to_hex(txn.tid),
                           zfmt.tid_to_hex(wanted[min(read, len(wanted) - 1)])))
                if params['not_after'] and time.time() > params['not_after']:
                    writer.drain()  # what was begun before the deadline is finished
                    held = wanted[counters['txns'] - 1] if counters['txns'] else base
                    raise zu.ZODBDataError(
                        'The replay from %s into %s stopped before transaction %s: the write '
                        'freeze\'s lease would run out (not_after %s), so the target could '
                        'take writes of its own before it holds the source\'s. It holds the '
                        'source\'s transactions up to %s; run the cutover again.'
                        % (source.where, target.where, zfmt.tid_to_hex(txn.tid),
                           time.strftime('%H:%M:%S', time.localtime(params['not_after'])),
                           zfmt.tid_to_hex(held)))
                writer.add(txn)
                read += 1
            writer.drain()
        except TransactionFailed as failed:
            writer.abandon()
            # The server's word on what the target holds, not this module's count.
            held = target.last_tid()
            exc = failed.reason
            raise zu.ZODBDataError(
                'Replaying transaction %s from %s into %s failed: %s%s. That transaction was '
                'aborted: the target holds the source\'s transactions up to %s. Check that the '
                'target took no writes of its own, then run the replay again with target_tid '
                '%s.' % (zfmt.tid_to_hex(failed.tid), source.where, target.where,
                         '' if isinstance(exc, zu.ZODBDataError) else type(exc).__name__ + ': ',
                         exc, zfmt.tid_to_hex(held), zfmt.tid_to_hex(held))) from None
        except BaseException:
            writer.abandon()
            raise
    finally:
        close = getattr(iterator, 'close', None)
        if close:
            close()
    if counters['txns'] != len(wanted):
        raise zu.ZODBDataError(
            'Only %d of the %d planned transactions of %s could be read (up to %s): the '
            'source changed while it was read. Run the replay again.'
            % (counters['txns'], len(wanted), source.where, result['last_tid']))
    reported = target.last_tid()
    if reported != last:
        raise zu.ZODBDataError(
            'After the replay %s reports %s as its last transaction, not %s. Check its log.'
            % (target.where, zfmt.tid_to_hex(reported), result['last_tid']))
    if result.get('bytes') is None:  # a storage source: what the writer counted
        result['bytes'] = counters['bytes']
    result.update(transactions=counters['txns'], blobs=counters['blobs'],
                  msg='Copied %d transactions (%s .. %s, %d blobs) from %s into %s.' % (
                      counters['txns'], result['first_tid'], result['last_tid'],
                      counters['blobs'], source.where, target.where))
