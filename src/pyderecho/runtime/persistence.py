"""The member's logs of its ``Paxos`` shards: what the core asks to log, made durable off-loop.

The core hands over stable messages of a ``Paxos`` shard
(:class:`~pyderecho.core.events.PersistRequested`); this module appends them to the shard's
:class:`~pyderecho.storage.SegmentedLog` through the member's one
:class:`~pyderecho.storage.GroupCommitWriter`, and tells the core how far each shard is durable
once the writer has synced (back on the event loop). Records that arrive together share one
``fdatasync``: that is what keeps a Paxos shard fast.

Layout of a member's data directory::

    DATA_DIR/
      view                      the last installed view (metadata: written atomically)
      commit                    a commit of the next view, logged before this member shows
                                it to anyone (pyderecho.core.restart says why)
      shards/TYPE.INDEX.SHARD/  per shard this member holds:
        snapshot                the replica's state at a position (metadata)
        cut                     the last view whose ragged-edge cut the log is known to
                                hold (metadata, written after the cut's records)
        doubt                   members that may have delivered updates the state lacks,
                                while a restart's comparison has not settled (metadata)
        *.seg                   the log: the shard's updates, each with its position

A shard's directory is valid once it has a snapshot: the member writes one when its replica
starts (fresh, received by state transfer, or kept in a restart), and the log holds every
update after it. When the layout moves the member into a shard it did not hold in the view
before, the directory of any earlier stint is discarded first, so a crash before the new
snapshot leaves a directory without one, which a restart ignores, rather than an old state
followed by a gap.

A log record is a :class:`~pyderecho.core.events.LogRecord` in msgpack (read back as
:class:`StoredRecord`): the message's place in
its shard's order (epoch, global index), its sender, its hybrid logical timestamp and its
payload (for replicated objects, the encoded call).

A failed write or sync (EIO, ENOSPC) is never retried: the member stops with the error, which
names the file, and the rest of the group removes it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import logging
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec

from pyderecho.core.events import CutLogRequested, PersistRequested, ViewLogRequested
from pyderecho.core.layout import Mode, ViewLayout
from pyderecho.core.restart import Logs
from pyderecho.core.view import NodeId, View
from pyderecho.replicated.recovery import Rebuilt, updates_from
from pyderecho.storage import (
    DEFAULT_SEGMENT_BYTES,
    CorruptLog,
    GroupCommitWriter,
    SegmentedLog,
    StorageFailed,
    fsync_directory,
    read_metadata,
)

ShardKey = tuple[str, int, int]

_log = logging.getLogger(__name__)

_encoder = msgspec.msgpack.Encoder()


class StoredRecord(msgspec.Struct, frozen=True, array_like=True):
    """A log record as read back: :class:`~pyderecho.core.events.LogRecord`'s fields, in the
    same order. The payload is a read-only view into the bytes of the segment it was read
    from, not a copy: copying a restart's payloads out cost 0.4 s per GiB of log, and the
    segment's bytes live as long as any record read from it is held."""

    epoch: int
    index: int
    number: int
    sender: int
    timestamp: int
    payload: memoryview


_record_decoder = msgspec.msgpack.Decoder(StoredRecord)


class ViewRecord(msgspec.Struct, frozen=True, array_like=True):
    """The ``view`` metadata file: the last view this member installed, and where its
    members listened (a restart dials them there)."""

    epoch: int
    members: tuple[int, ...]
    addresses: tuple[str, ...] = ()


class CommitRecord(msgspec.Struct, frozen=True, array_like=True):
    """The ``commit`` metadata file: a commit of the view after the one in ``view``; stale
    once ``view`` reaches its epoch."""

    epoch: int
    members: tuple[int, ...]
    addresses: tuple[str, ...]
    failed: tuple[int, ...]
    """Members the commit removes as failed."""


class SnapshotFile(msgspec.Struct, frozen=True, array_like=True):
    """A shard's ``snapshot`` file: the replica's state after the update at (epoch, count)."""

    epoch: int
    count: int
    state: bytes
    view: int = -1
    """The view the snapshot was taken in (-1: not known): the state holds everything the
    ragged-edge cuts of the views before it delivered."""


class CutFile(msgspec.Struct, frozen=True, array_like=True):
    """A shard's ``cut`` file: the log holds everything the ragged-edge cleanup of view
    ``epoch`` kept (:class:`~pyderecho.core.events.CutLogRequested`)."""

    epoch: int


class DoubtFile(msgspec.Struct, frozen=True, array_like=True):
    """A shard's ``doubt`` file: members that may have delivered updates the shard's state
    here lacks (:class:`~pyderecho.replicated.events.SaveDoubt`); empty once a restart's
    comparison settled."""

    members: tuple[int, ...]


class EarlierRunData(Exception):
    """The data directory holds logs of an earlier run of this member."""


def read_shard_log(directory: Path) -> list[StoredRecord]:
    """Every record of the shard log in ``directory``, oldest first (recovering a torn tail
    as opening a log does), decoded as recovery reads them: the log is read once."""
    records: list[StoredRecord] = []

    def decode(_seq: int, body: memoryview) -> None:
        records.append(_record_decoder.decode(body))

    SegmentedLog.open(directory, on_record=decode).close()
    return records


class ShardReplay(Protocol):
    """A replica being rebuilt from a shard's log, record by record
    (:class:`~pyderecho.replicated.recovery.Replay`, or one that applies them elsewhere)."""

    def apply(self, record: StoredRecord) -> None: ...

    def result(self) -> Rebuilt: ...


ReplayFor = Callable[[ShardKey, SnapshotFile], ShardReplay | None]
"""Given a recovered shard and its snapshot, the replica to apply its log's records to as
they are read, or None to only check them (a shard of a class this member does not know)."""


class _ReadingShard:
    """What a restart keeps of a shard's log while recovery reads it: counts and the last
    timestamp, not the records; each goes to the replay and is dropped, so the log's segments
    are freed one by one."""

    __slots__ = ("last_timestamp", "payload_bytes", "records", "replay")

    def __init__(self, replay: ShardReplay | None) -> None:
        self.replay = replay
        self.records = self.payload_bytes = self.last_timestamp = 0

    def __call__(self, _seq: int, body: memoryview) -> None:
        record = _record_decoder.decode(body)
        self.records += 1
        self.payload_bytes += len(record.payload)
        self.last_timestamp = record.timestamp
        if self.replay is not None:
            self.replay.apply(record)


def shard_directory(data_dir: Path, key: ShardKey) -> Path:
    type_name, index, shard = key
    return data_dir / "shards" / f"{type_name}.{index}.{shard}"


def _shard_key(name: str) -> ShardKey | None:
    rest, _, shard = name.rpartition(".")
    type_name, _, index = rest.rpartition(".")
    if not type_name or not index.isdigit() or not shard.isdigit():
        return None
    return type_name, int(index), int(shard)


@dataclass(frozen=True, slots=True)
class RecoveredShard:
    """What a member's disk holds of one shard: its snapshot, what its log held, and the
    replica rebuilt from both."""

    snapshot: SnapshotFile
    records: int
    """Records in the log (those before the snapshot's position included)."""
    payload_bytes: int
    last_timestamp: int
    """The timestamp of the log's last record (0: the log is empty)."""
    rebuilt: Rebuilt | None
    """The replica: the snapshot with every record after it applied (None: no class for the
    shard was given to the restart)."""
    truncated_bytes: int
    """Bytes of a torn tail cut off the log on opening it."""
    log: SegmentedLog
    """The log, left open for the member to go on appending to: opening it again would read
    and check every record a second time (a second of a restart per GiB of log)."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """Everything a member's data directory holds for a restart."""

    view: ViewRecord
    shards: dict[ShardKey, RecoveredShard]
    ignored: dict[ShardKey, str]
    """Shard directories that cannot rebuild a replica, and why."""
    commit: CommitRecord | None = None
    """A commit of the view after ``view``, logged but never installed."""

    @property
    def logs(self) -> Logs:
        """What the logs say about views: what this member brings to the restart agreement."""
        commit = self.commit
        if commit is None:
            return Logs(View(self.view.epoch, self.view.members))
        return Logs(
            View(self.view.epoch, self.view.members),
            View(commit.epoch, commit.members, departed=commit.failed),
        )

    @property
    def floors(self) -> dict[ShardKey, int]:
        """Per shard, the last timestamp its log holds: timestamps rise on from there."""
        return {key: shard.last_timestamp for key, shard in self.shards.items() if shard.records}

    @property
    def addresses(self) -> dict[NodeId, str]:
        """Where the members of the logged views listened: a restart dials them there."""
        known = {m: a for m, a in zip(self.view.members, self.view.addresses, strict=False) if a}
        if self.commit is not None:
            pairs = zip(self.commit.members, self.commit.addresses, strict=False)
            known.update((m, a) for m, a in pairs if a)
        return known

    def close(self) -> None:
        """Close the shards' logs (a member that restarts takes the ones it goes on with,
        :class:`ShardLogs`; closing a log again does nothing)."""
        for shard in self.shards.values():
            shard.log.close()


def load_recovery(
    data_dir: Path,
    *,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    replay_for: ReplayFor | None = None,
) -> Recovery | None:
    """What ``data_dir`` holds for a restart, or None when it holds nothing (a first start).

    Each shard's replica is rebuilt as its log is read (``replay_for``), one record at a
    time, so a restart holds a segment of a log, not the log: its memory is bounded by the
    state and ``segment_bytes``, whatever the log's length.

    Opening each log recovers it: a torn tail is truncated; a corrupt record before the end
    raises :class:`~pyderecho.storage.CorruptLog` naming the file and offset, and the member
    refuses to start rather than trust it. The logs stay open (``segment_bytes`` is where
    they go on to cut segments): the caller closes the :class:`Recovery` or hands them on."""
    view_data = read_metadata(data_dir / "view")
    shards_dir = data_dir / "shards"
    if view_data is None:
        if shards_dir.is_dir() and any(_shard_key(p.name) for p in shards_dir.iterdir()):
            raise EarlierRunData(
                f"data_dir {data_dir} holds shard logs but no view file: it is not a member's "
                "complete data directory, so it cannot restart from it"
            )
        return None
    view = msgspec.msgpack.decode(view_data, type=ViewRecord)
    shards: dict[ShardKey, RecoveredShard] = {}
    ignored: dict[ShardKey, str] = {}
    recovery = Recovery(view, shards, ignored)
    try:
        if shards_dir.is_dir():
            for directory in sorted(shards_dir.iterdir()):
                key = _shard_key(directory.name)
                if key is None or not directory.is_dir():
                    continue
                snapshot = read_metadata(directory / "snapshot")
                if snapshot is None:
                    ignored[key] = "no snapshot: the member stopped before its state was saved"
                    continue
                state = msgspec.msgpack.decode(snapshot, type=SnapshotFile)
                cut_data = read_metadata(directory / "cut")
                cut = -1
                if cut_data is not None:
                    cut = msgspec.msgpack.decode(cut_data, type=CutFile).epoch
                reading = _ReadingShard(None if replay_for is None else replay_for(key, state))
                log = SegmentedLog.open(directory, segment_bytes=segment_bytes, on_record=reading)
                doubt_data = read_metadata(directory / "doubt")
                doubted: tuple[int, ...] = ()
                if doubt_data is not None:
                    doubted = msgspec.msgpack.decode(doubt_data, type=DoubtFile).members
                rebuilt = None if reading.replay is None else reading.replay.result()
                if rebuilt is not None:
                    # A snapshot taken in a view holds the cuts of the views before it.
                    cut = max(cut, state.view - 1)
                    rebuilt = dataclasses.replace(rebuilt, cut_epoch=cut, doubted=doubted)
                shards[key] = RecoveredShard(
                    state,
                    reading.records,
                    reading.payload_bytes,
                    reading.last_timestamp,
                    rebuilt,
                    log.truncated_bytes,
                    log,
                )
        commit_data = read_metadata(data_dir / "commit")
        if commit_data is not None:
            commit = msgspec.msgpack.decode(commit_data, type=CommitRecord)
            if commit.epoch > view.epoch:  # else installed since: the view file says all
                recovery = Recovery(view, shards, ignored, commit)
    except BaseException:
        recovery.close()
        raise
    return recovery


@dataclass(slots=True)
class _ShardLog:
    log: SegmentedLog
    waiting: deque[list[int]] = field(default_factory=deque)
    """Per submission not yet durable: [subgroup, epoch, upto, last position's epoch and
    count]. A request with no records (a run of nulls) raises the last one's upto rather than
    waiting for a sync of its own, or is durable at once when nothing waits."""
    durable: deque[tuple[tuple[int, int], int]] = field(default_factory=deque)
    """(position, log sequence number) of each durable submission's last record, oldest
    first: where the log may be cut once a snapshot covers a position."""


class ShardLogs:
    """A member's shard logs and their writer; every method runs on the event loop."""

    def __init__(
        self,
        data_dir: Path,
        *,
        name: str,
        on_durable: Callable[[int, int, int], None],
        on_failure: Callable[[str], None],
        recovered: Mapping[ShardKey, SegmentedLog] | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        """``on_durable(subgroup, epoch, upto)`` and ``on_failure(reason)`` are called on the
        event loop that creates this object. ``recovered`` holds the logs of the shards a
        restart rebuilt from this directory, open (:func:`load_recovery`); these are now
        this object's to close. None: a first start, which needs a directory without logs."""
        self.data_dir = data_dir
        self.segment_bytes = segment_bytes
        self._name = name
        self._on_durable = on_durable
        self._on_failure = on_failure
        self._loop = asyncio.get_running_loop()
        self._writer: GroupCommitWriter | None = None
        self._logs: dict[ShardKey, _ShardLog] = {}
        self._names: dict[tuple[int, int], ShardKey] = {}
        """(epoch, subgroup id) -> shard, for the current and the previous view."""
        self._checked = recovered is not None
        self._mine: set[ShardKey] = set(recovered or ())
        """The Paxos shards this member holds in the current view: their directories are
        this stint's."""
        self._opened: dict[ShardKey, SegmentedLog] = dict(recovered or {})
        """Recovered logs not yet logged to: opened by the restart, which read them."""
        self._view = b""
        """The last installed view, encoded: written once the member first logs anything."""
        self._reports_lock = threading.Lock()
        self._reports: list[tuple[_ShardLog, int]] = []
        """Durable submissions the writer thread reported and the loop has not yet taken."""
        self._report_due = False
        self.failed = ""

    def check_fresh(self) -> None:
        """Refuse, on a first start, a data directory that holds logs of an earlier run:
        appending to them would mix two histories. A restart from them goes through
        :class:`~pyderecho.Group`, which rebuilds the replicas first (``recovered``)."""
        shards = self.data_dir / "shards"
        if shards.is_dir() and any(shards.iterdir()):
            raise EarlierRunData(
                f"data_dir {self.data_dir} holds the logs of an earlier run of this member; "
                "start it through Group to restart from them, or move the directory away (or "
                "point data_dir elsewhere) to start this member afresh"
            )
        self._checked = True

    def view_installed(
        self, view: View, layout: ViewLayout, me: NodeId, addresses: tuple[str, ...]
    ) -> None:
        """Learn which shard each subgroup id names in ``view``, start afresh the directories
        of Paxos shards ``me`` enters, and record the view."""
        self._names = {key: name for key, name in self._names.items() if key[0] >= view.epoch - 1}
        for ref in layout.shards:
            self._names[(view.epoch, ref.subgroup)] = (ref.type_name, ref.subgroup_index, ref.shard)
        if me in view.joined:
            self._mine = set()  # a member that joins holds no stint from before: none goes on
        if layout.adequate:
            mine = {
                (ref.type_name, ref.subgroup_index, ref.shard)
                for ref in layout.shards_of(me)
                if ref.layout.mode is Mode.PAXOS
            }
            for key in sorted(mine - self._mine):
                try:
                    self._discard(key)
                except OSError as exc:  # StorageFailed among them: fail-stop, as any write
                    self._fail(str(exc))
                    return
            self._mine = mine
        self._view = _encoder.encode(ViewRecord(view.epoch, view.members, addresses))
        if self._writer is None and any(r.layout.mode is Mode.PAXOS for r in layout.shards):
            # A group with Paxos shards restarts from its members' view files, every member's:
            # one without (it holds no Paxos shard itself) would found a new group instead.
            self._start_writer()
        if self._writer is not None:
            self._writer.submit_metadata(self.data_dir / "view", self._view, _nothing)

    def _start_writer(self) -> GroupCommitWriter | None:
        """The writer, started with the data directory if need be (None if that fails)."""
        if self._writer is None:
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._fail(f"cannot create data_dir {self.data_dir}: {exc}")
                return None
            self._writer = GroupCommitWriter(self._name, self._failed_soon)
        return self._writer

    def log_view(self, request: ViewLogRequested, done: Callable[[View], None]) -> None:
        """Log the commit of the next view, or the view a restart founds; ``done(view)`` runs
        on the loop once durable."""
        if self.failed:
            return
        view = request.view
        name = "commit" if request.commit else "view"
        record: CommitRecord | ViewRecord = (
            CommitRecord(view.epoch, view.members, request.addresses, request.failed)
            if request.commit
            else ViewRecord(view.epoch, view.members, request.addresses)
        )
        writer = self._start_writer()
        if writer is None:
            return
        loop = self._loop

        def durable() -> None:  # on the writer thread
            loop.call_soon_threadsafe(done, view)

        try:
            writer.submit_metadata(self.data_dir / name, _encoder.encode(record), durable)
        except (StorageFailed, RuntimeError) as exc:
            self._fail(str(exc))

    def persist(self, request: PersistRequested) -> None:
        """Log ``request``'s records; the core hears of it once they are durable."""
        key = self._key_of(request.epoch, request.subgroup)
        shard = None if key is None else self._open(key)
        if key is None or shard is None:
            return
        if not request.records:
            if not shard.waiting:
                # Reported from the loop's next turn, as every durability report is: never
                # from inside the member's handling of the core's events.
                self._loop.call_soon(
                    self._on_durable, request.subgroup, request.epoch, request.upto
                )
                return
            entry = shard.waiting[-1]
            # A shard's next epoch asks only once its last one is durable (the cleanup waits
            # for it), so what waits here is of this same epoch.
            assert entry[:2] == [request.subgroup, request.epoch], (entry, request)
            entry[2] = request.upto
            return
        bodies = [_encoder.encode(record) for record in request.records]
        last = request.records[-1]
        shard.waiting.append(
            [request.subgroup, request.epoch, request.upto, last.epoch, last.number]
        )
        assert self._writer is not None
        try:
            self._writer.submit(shard.log, bodies, lambda seq: self._durable_soon(shard, seq))
        except (StorageFailed, RuntimeError) as exc:
            self._fail(str(exc))

    def log_cut(self, request: CutLogRequested, done: Callable[[int, int], None]) -> None:
        """Record durably that the shard's log holds ``request.epoch``'s ragged-edge cut:
        ordered after every record submitted before it (the writer's metadata barrier), and
        the core asked to log the cut's records first. ``done(subgroup, epoch)`` runs on the
        loop once durable."""
        key = self._key_of(request.epoch, request.subgroup)
        if key is None or self._open(key) is None:
            return
        loop = self._loop
        subgroup, epoch = request.subgroup, request.epoch

        def durable() -> None:  # on the writer thread
            loop.call_soon_threadsafe(done, subgroup, epoch)

        self._submit_file(key, "cut", _encoder.encode(CutFile(request.epoch)), durable)

    def save_doubt(self, key: ShardKey, doubted: tuple[NodeId, ...]) -> None:
        """Write which members may have delivered updates the state of ``key`` lacks (none:
        ``doubted`` empty), ordered after everything submitted before it, and before any
        mark of a later cut (:meth:`log_cut`) that the writer takes after it."""
        if self._open(key) is not None:
            self._submit_file(key, "doubt", _encoder.encode(DoubtFile(doubted)), _nothing)

    def _key_of(self, epoch: int, subgroup: int) -> ShardKey | None:
        """The shard the core's request for ``subgroup`` in view ``epoch`` is about; None once
        the member failed (an unknown one fails it: the core only asks for its own shards)."""
        if self.failed:
            return None
        key = self._names.get((epoch, subgroup))
        if key is None:
            self._fail(f"no shard is known for subgroup {subgroup} of view {epoch}")
        return key

    def _open(self, key: ShardKey) -> _ShardLog | None:
        """The shard's log, opened if need be; None once the member failed (opening it can
        fail it too)."""
        if self.failed:
            return None
        try:
            return self._shard(key)
        except (StorageFailed, EarlierRunData, OSError) as exc:
            self._fail(str(exc))
            return None

    def _submit_file(
        self, key: ShardKey, name: str, data: bytes, after: Callable[[], None]
    ) -> None:
        """Replace the shard's metadata file ``name`` with ``data`` on the writer thread,
        after every record submitted before; ``after()`` runs there once it is durable."""
        assert self._writer is not None
        try:
            self._writer.submit_metadata(shard_directory(self.data_dir, key) / name, data, after)
        except (StorageFailed, RuntimeError) as exc:
            self._fail(str(exc))

    def save_state(
        self,
        key: ShardKey,
        position: tuple[int, int],
        data: bytes,
        saved: Callable[[], None] | None = None,
        *,
        epoch: int = -1,
    ) -> None:
        """Write a replica's state, taken in view ``epoch``, as its shard's snapshot: ordered
        after every record submitted before it (the writer's metadata barrier); ``saved()``
        runs on the loop once it is durable."""
        shard = self._open(key)
        if shard is None:
            return
        snapshot = _encoder.encode(SnapshotFile(position[0], position[1], data, epoch))
        # Records up to the snapshot's position were delivered here, so they are durable and
        # their sequence numbers known: once the snapshot is durable too, the segments wholly
        # before the first record after it go (on the writer thread, which owns the log).
        cut = -1
        while shard.durable and shard.durable[0][0] <= position:
            cut = shard.durable.popleft()[1]
        log = shard.log
        loop = self._loop

        def after() -> None:  # on the writer thread, once the snapshot is durable
            if cut >= 0:
                log.drop_before(cut + 1)
            if saved is not None:
                loop.call_soon_threadsafe(saved)

        self._submit_file(key, "snapshot", snapshot, after)

    def read_updates(
        self,
        key: ShardKey,
        after: tuple[int, int],
        limit_bytes: int,
        done: Callable[[list[StoredRecord] | None], None],
    ) -> None:
        """Read the records of ``key``'s log from the one at position ``after`` on, off the
        loop; ``done(records)`` runs on the loop with them, or with None when the log does
        not hold that record, the read fails, or the payloads passed ``limit_bytes``.

        The read runs beside the writer thread, which goes on appending: the log's lock lets
        one read while the other writes. Should compaction remove a segment before the read
        gets to it, the read fails, and the state is sent instead."""
        shard = self._logs.get(key)
        log = shard.log if shard is not None else self._opened.get(key)
        loop = self._loop
        if log is None or self.failed:
            loop.call_soon(done, None)
            return
        # The first record of the submission that holds ``after``, where this stint's
        # durable submissions say (a log read from its start reads every segment).
        start: int | None = None
        if shard is not None and shard.durable and shard.durable[0][0] < after:
            at = bisect.bisect_left(shard.durable, after, key=lambda entry: entry[0])
            start = shard.durable[at - 1][1] + 1

        def read() -> None:  # on a thread of the loop's default executor
            records: list[StoredRecord] | None = None
            try:
                records = _records_from(log, after, limit_bytes, start)
            except (OSError, CorruptLog, ValueError, msgspec.DecodeError):
                pass  # StorageFailed is an OSError: the state is sent instead
            except Exception:
                _log.exception("reading the log of %s back failed", key)
            finally:  # whatever happened, the request it was read for is answered
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                    loop.call_soon_threadsafe(done, records)

        try:
            loop.run_in_executor(None, read)
        except RuntimeError:  # the executor shut down: the member is closing
            loop.call_soon(done, None)

    def _discard(self, key: ShardKey) -> None:
        """An earlier stint's directory of a shard this member enters again: gone before the
        new stint logs anything (its records are all durable: a view is installed only once
        its shards' logging is done)."""
        shard = self._logs.pop(key, None)
        if shard is not None:
            assert not shard.waiting, "records of an earlier stint still wait for a sync"
            shard.log.close()
        opened = self._opened.pop(key, None)
        if opened is not None:
            opened.close()
        directory = shard_directory(self.data_dir, key)
        if directory.exists():
            trash = directory.with_name(f".discarded-{directory.name}")
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(directory, trash)
            fsync_directory(directory.parent)
            shutil.rmtree(trash, ignore_errors=True)

    def _durable_soon(self, shard: _ShardLog, seq: int) -> None:
        # On the writer thread: hop to the loop, which owns every other structure here. One
        # hop for all the reports of a group commit (and any made before the loop got to
        # them): each hop is a write to the loop's wakeup pipe and a turn of the loop.
        with self._reports_lock:
            self._reports.append((shard, seq))
            if self._report_due:
                return
            self._report_due = True
        self._loop.call_soon_threadsafe(self._report_durable)

    def _report_durable(self) -> None:
        with self._reports_lock:
            # A report made from here on schedules a hop of its own (or is taken by this one).
            self._report_due = False
        self.take_reports(self._on_durable)

    @property
    def reports_waiting(self) -> bool:
        """The writer reported durable records that the loop has not yet taken (read without
        the lock: a report that lands just after is taken by the hop it scheduled)."""
        return bool(self._reports)

    def take_reports(self, on_durable: Callable[[int, int, int], None]) -> None:
        """Take the durability reports waiting now, on the loop, with ``on_durable`` in
        place of the constructor's: a busy loop need not wait for the hop the writer
        scheduled (a turn of the loop later, hundreds of microseconds under load), it takes
        them the next time it handles anything. The hop then finds nothing, or only what came
        after; it stays due, so no report waits for a hop that was never scheduled."""
        with self._reports_lock:
            reports, self._reports = self._reports, []
        for shard, seq in reports:
            self._durable(shard, seq, on_durable)

    def _durable(
        self, shard: _ShardLog, seq: int, on_durable: Callable[[int, int, int], None]
    ) -> None:
        if self.failed or not shard.waiting:
            return
        subgroup, epoch, upto, last_epoch, last_count = shard.waiting.popleft()
        shard.durable.append(((last_epoch, last_count), seq))
        on_durable(subgroup, epoch, upto)

    def _shard(self, key: ShardKey) -> _ShardLog:
        shard = self._logs.get(key)
        if shard is None:
            if not self._checked:
                self.check_fresh()
            log = self._opened.pop(key, None)
            if log is None:
                log = SegmentedLog.open(
                    shard_directory(self.data_dir, key), segment_bytes=self.segment_bytes
                )
            shard = self._logs[key] = _ShardLog(log)
            if self._writer is None:
                self._writer = GroupCommitWriter(self._name, self._failed_soon)
                if self._view:
                    self._writer.submit_metadata(self.data_dir / "view", self._view, _nothing)
        return shard

    def _failed_soon(self, error: StorageFailed) -> None:
        self._loop.call_soon_threadsafe(self._fail, str(error))

    def _fail(self, reason: str) -> None:
        if not self.failed:
            self.failed = reason
            self._on_failure(f"storage failed: {reason}")

    def stats(self) -> dict[str, int]:
        """The writer's counts (syncs, records, bytes): records per sync is group commit."""
        if self._writer is None:
            return {}
        stats = self._writer.stats
        return {
            "syncs": stats.syncs,
            "records": stats.records,
            "body_bytes": stats.body_bytes,
            "batches": stats.batches,
        }

    def close(self) -> None:
        """Drain the writer (what was submitted is written and synced) and close the logs."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for log in [*(shard.log for shard in self._logs.values()), *self._opened.values()]:
            if not self.failed:
                try:
                    log.close()
                except StorageFailed as exc:
                    self.failed = str(exc)
        self._logs.clear()
        self._opened.clear()


def _records_from(
    log: SegmentedLog, after: tuple[int, int], limit_bytes: int, start: int | None = None
) -> list[StoredRecord] | None:
    """The records of ``log`` from the one at position ``after`` on (:func:`updates_from`),
    looked for from the record numbered ``start`` (None: the log's first): the records
    before it are only decoded."""
    decoded = (_record_decoder.decode(body) for _seq, body in log.records(start))
    return updates_from(decoded, after, limit_bytes)


def _nothing() -> None:
    """Metadata writes need no acknowledgement: the writer orders them with the records."""
