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
      shards/TYPE.INDEX.SHARD/  one segmented log per shard this member has held

A log record is a :class:`~pyderecho.core.events.LogRecord` in msgpack (read back as
:class:`StoredRecord`): the message's place in
its shard's order (epoch, global index), its sender, its hybrid logical timestamp and its
payload (for replicated objects, the encoded call).

A failed write or sync (EIO, ENOSPC) is never retried: the member stops with the error, which
names the file, and the rest of the group removes it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from pyderecho.core.events import PersistRequested
from pyderecho.core.layout import ViewLayout
from pyderecho.core.view import View
from pyderecho.storage import GroupCommitWriter, SegmentedLog, StorageFailed

ShardKey = tuple[str, int, int]

_encoder = msgspec.msgpack.Encoder()


class StoredRecord(msgspec.Struct, frozen=True, array_like=True):
    """A log record as read back: :class:`~pyderecho.core.events.LogRecord`'s fields, in the
    same order, with the payload as ``bytes``."""

    epoch: int
    index: int
    sender: int
    timestamp: int
    payload: bytes


_record_decoder = msgspec.msgpack.Decoder(StoredRecord)


class ViewRecord(msgspec.Struct, frozen=True, array_like=True):
    """The ``view`` metadata file: the last view this member installed."""

    epoch: int
    members: tuple[int, ...]


class EarlierRunData(Exception):
    """The data directory holds logs of an earlier run of this member."""


def decode_record(body: bytes | memoryview) -> StoredRecord:
    """One log record, as :func:`read_shard_log` and tools read it back."""
    return _record_decoder.decode(body)


def read_shard_log(directory: Path) -> list[StoredRecord]:
    """Every record of the shard log in ``directory``, oldest first (recovering a torn tail
    as opening a log does)."""
    with SegmentedLog.open(directory) as log:
        return [decode_record(bytes(body)) for _, body in log.records()]


def shard_directory(data_dir: Path, key: ShardKey) -> Path:
    type_name, index, shard = key
    return data_dir / "shards" / f"{type_name}.{index}.{shard}"


@dataclass(slots=True)
class _ShardLog:
    log: SegmentedLog
    waiting: deque[list[int]] = field(default_factory=deque)
    """Per submission not yet durable: [subgroup, epoch, upto]. A request with no records (a
    run of nulls) raises the last one's upto rather than waiting for a sync of its own, or is
    durable at once when nothing waits."""


class ShardLogs:
    """A member's shard logs and their writer; every method runs on the event loop."""

    def __init__(
        self,
        data_dir: Path,
        *,
        name: str,
        on_durable: Callable[[int, int, int], None],
        on_failure: Callable[[str], None],
    ) -> None:
        """``on_durable(subgroup, epoch, upto)`` and ``on_failure(reason)`` are called on the
        event loop that creates this object."""
        self.data_dir = data_dir
        self._name = name
        self._on_durable = on_durable
        self._on_failure = on_failure
        self._loop = asyncio.get_running_loop()
        self._writer: GroupCommitWriter | None = None
        self._logs: dict[ShardKey, _ShardLog] = {}
        self._names: dict[tuple[int, int], ShardKey] = {}
        """(epoch, subgroup id) -> shard, for the current and the previous view."""
        self._checked = False
        self._view = b""
        """The last installed view, encoded: written once the member first logs anything."""
        self.failed = ""

    def check_fresh(self) -> None:
        """Refuse a data directory that holds logs of an earlier run: this version does not
        restart from logs yet, and appending to them would mix two histories."""
        shards = self.data_dir / "shards"
        if shards.is_dir() and any(shards.iterdir()):
            raise EarlierRunData(
                f"data_dir {self.data_dir} holds the logs of an earlier run of this member; "
                "restarting a group from its logs is not supported yet, so move the directory "
                "away (or point data_dir elsewhere) to start this member afresh"
            )
        self._checked = True

    def view_installed(self, view: View, layout: ViewLayout) -> None:
        """Learn which shard each subgroup id names in ``view`` and record the view."""
        self._names = {key: name for key, name in self._names.items() if key[0] >= view.epoch - 1}
        for ref in layout.shards:
            self._names[(view.epoch, ref.subgroup)] = (ref.type_name, ref.subgroup_index, ref.shard)
        self._view = _encoder.encode(ViewRecord(view.epoch, view.members))
        if self._writer is not None:
            self._writer.submit_metadata(self.data_dir / "view", self._view, _nothing)

    def persist(self, request: PersistRequested) -> None:
        """Log ``request``'s records; the core hears of it once they are durable."""
        if self.failed:
            return
        key = self._names.get((request.epoch, request.subgroup))
        if key is None:
            self._fail(f"no shard is known for subgroup {request.subgroup} of view {request.epoch}")
            return
        try:
            shard = self._shard(key)
        except (StorageFailed, EarlierRunData, OSError) as exc:
            self._fail(str(exc))
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
        shard.waiting.append([request.subgroup, request.epoch, request.upto])
        assert self._writer is not None
        try:
            self._writer.submit(shard.log, bodies, lambda _: self._durable_soon(shard))
        except (StorageFailed, RuntimeError) as exc:
            self._fail(str(exc))

    def _durable_soon(self, shard: _ShardLog) -> None:
        # On the writer thread: hop to the loop, which owns every other structure here.
        self._loop.call_soon_threadsafe(self._durable, shard)

    def _durable(self, shard: _ShardLog) -> None:
        if self.failed or not shard.waiting:
            return
        subgroup, epoch, upto = shard.waiting.popleft()
        self._on_durable(subgroup, epoch, upto)

    def _shard(self, key: ShardKey) -> _ShardLog:
        shard = self._logs.get(key)
        if shard is None:
            if not self._checked:
                self.check_fresh()
            log = SegmentedLog.open(shard_directory(self.data_dir, key))
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
        for shard in self._logs.values():
            if not self.failed:
                try:
                    shard.log.close()
                except StorageFailed as exc:
                    self.failed = str(exc)
        self._logs.clear()


def _nothing() -> None:
    """The view file needs no acknowledgement: the writer orders it with the records."""
