"""The simulator's disks: what each member keeps for its ``Paxos`` shards, with group commit.

A member hands its disk what the real member hands its writer (:mod:`pyderecho.storage`,
:mod:`pyderecho.runtime.persistence`): the records its core asks to log
(:class:`~pyderecho.core.events.PersistRequested`), its replicas' snapshots
(:class:`~pyderecho.replicated.events.SaveState`) and each view it installs. The disk writes
like the real writer does: one sync at a time; everything that arrived before a sync starts
shares it (group commit), in order; when the sync ends, that is durable and the member is told.
What is written but not yet synced when the member crashes is lost (a torn tail, which the
real log truncates, loses no more than that). A disk can also fail (an I/O error on the next
sync): the member then stops, as a real one does on a failed fsync.

As the real member does, a member that enters a shard it did not hold in its previous view
discards what its disk held of that shard, so a shard's durable data is always one stint: a
snapshot and the records after it.

Every record's time of durability is kept, per member, so that a run can check the ``Paxos``
delivery rule after the fact, and :meth:`SimDisks.recovery` gives what a restart reads back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import cast

from pyderecho.core.events import CutLogRequested, PersistRequested, ViewLogRequested
from pyderecho.core.restart import Logs
from pyderecho.core.view import NodeId, View
from pyderecho.replicated.recovery import updates_from

RecordKey = tuple[int, int, int, int, int]
"""A logged message by (epoch, subgroup, shard, sender, timestamp): its timestamp is unique in
its shard and epoch (hybrid logical clocks strictly increase) and the same at every member."""
ShardKey = tuple[str, int, int]
Position = tuple[int, int]


@dataclass(frozen=True, slots=True)
class DiskModel:
    """How long a sync takes: ``latency`` plus up to ``jitter`` more, in seconds."""

    latency: float = 0.002
    jitter: float = 0.002


@dataclass(frozen=True, slots=True)
class StoredUpdate:
    """A logged record as a restart reads it back (the fields replay needs)."""

    epoch: int
    number: int
    sender: NodeId
    timestamp: int
    payload: bytes


@dataclass(slots=True)
class ShardData:
    """What a disk durably holds of one shard: its snapshot (if written) and its records."""

    snapshot: tuple[Position, bytes] | None = None
    records: list[StoredUpdate] = field(default_factory=list)
    snapshot_view: int = -1
    """The view the snapshot was taken in."""
    cut: int = -1
    """The last view whose ragged-edge cut the records are marked to hold (-1: none)."""
    doubt: tuple[NodeId, ...] = ()
    """Members that may have delivered updates the state lacks (``SaveDoubt``)."""


_Item = (
    tuple[str, ShardKey, PersistRequested]
    | tuple[str, ShardKey, Position, bytes, int]
    | tuple[str, View]
    | tuple[str, ViewLogRequested]
    | tuple[str, ShardKey, CutLogRequested]
    | tuple[str, ShardKey, tuple[NodeId, ...]]
)


@dataclass(frozen=True, slots=True)
class Synced:
    """What one sync made durable: record requests, views logged on request (commits,
    founded views) and replicas' snapshots; or the error it failed with."""

    requests: list[PersistRequested]
    views: list[View]
    snapshots: list[tuple[ShardKey, Position]]
    error: str
    cuts: list[CutLogRequested] = field(default_factory=list)
    """Marks that a shard's log holds a view's cut."""


@dataclass(slots=True)
class _Disk:
    waiting: list[_Item] = field(default_factory=list)
    """Writes not yet part of a sync."""
    syncing: list[_Item] = field(default_factory=list)
    """Writes the sync in progress makes durable."""
    durable_at: dict[RecordKey, float] = field(default_factory=dict)
    shards: dict[ShardKey, ShardData] = field(default_factory=dict)
    view: View | None = None
    commit: View | None = None
    """A commit of the view after ``view``, logged before the member showed it."""
    mine: set[ShardKey] = field(default_factory=set)
    failed: str = ""
    fail_next: str = ""


class SimDisks:
    """Every member's disk in one simulation."""

    def __init__(self, model: DiskModel | None, seed: int) -> None:
        self.model = model or DiskModel()
        self._rng = random.Random(seed)
        self._disks: dict[NodeId, _Disk] = {}
        self.syncs = 0
        self.records = 0

    def _disk(self, member: NodeId) -> _Disk:
        return self._disks.setdefault(member, _Disk())

    def write(self, member: NodeId, key: ShardKey, request: PersistRequested) -> bool:
        """Queue a request's records; True when a sync must start now (none is running)."""
        return self._queue(member, ("records", key, request))

    def log_cut(self, member: NodeId, key: ShardKey, request: CutLogRequested) -> bool:
        """Queue the mark that ``key``'s log holds a view's cut, after the records queued
        before it; True when a sync must start now."""
        return self._queue(member, ("cut", key, request))

    def save_doubt(self, member: NodeId, key: ShardKey, doubted: tuple[NodeId, ...]) -> bool:
        """Queue which members may have delivered updates the state lacks; True when a sync
        must start now."""
        return self._queue(member, ("doubt", key, doubted))

    def save_state(
        self, member: NodeId, key: ShardKey, position: Position, data: bytes, epoch: int = -1
    ) -> bool:
        """Queue a replica's snapshot, taken in view ``epoch``; True when a sync must start
        now."""
        return self._queue(member, ("snapshot", key, position, bytes(data), epoch))

    def view_installed(
        self, member: NodeId, view: View, paxos_shards: set[ShardKey], persistent: bool
    ) -> bool:
        """The member installed ``view``, holding ``paxos_shards``: what its disk held of a
        shard it enters anew is discarded, and the view is queued when the group has Paxos
        shards (``persistent``) or this disk already keeps views; True when a sync must start
        now."""
        disk = self._disk(member)
        if member in view.joined:
            disk.mine = set()  # a member that joins holds no stint from before
        for key in paxos_shards - disk.mine:
            disk.shards.pop(key, None)
        disk.mine = set(paxos_shards)
        if not persistent and disk.view is None:
            return False
        return self._queue(member, ("view", view))

    def log_view(self, member: NodeId, request: ViewLogRequested) -> bool:
        """Queue a commit of the next view, or the view a restart founds; True when a sync
        must start now."""
        return self._queue(member, ("commit" if request.commit else "founded", request))

    def _queue(self, member: NodeId, item: _Item) -> bool:
        disk = self._disk(member)
        if disk.failed:
            return False
        disk.waiting.append(item)
        return not disk.syncing

    def start_sync(self, member: NodeId, now: float) -> float:
        """Begin a sync of everything waiting; returns when it ends."""
        disk = self._disk(member)
        assert not disk.syncing and disk.waiting, "one sync at a time, of something"
        disk.syncing, disk.waiting = disk.waiting, []
        self.syncs += 1
        return now + self.model.latency + self._rng.random() * self.model.jitter

    def fail(self, member: NodeId, reason: str) -> None:
        """The member's next sync fails with ``reason``."""
        self._disk(member).fail_next = reason

    def finish_sync(self, member: NodeId, now: float) -> Synced:
        """End the sync in progress: what it made durable, or an error."""
        disk = self._disk(member)
        done, disk.syncing = disk.syncing, []
        if disk.fail_next:
            disk.failed, disk.fail_next = disk.fail_next, ""
            disk.waiting.clear()
            return Synced([], [], [], disk.failed)
        requests: list[PersistRequested] = []
        views: list[View] = []
        snapshots: list[tuple[ShardKey, Position]] = []
        cuts: list[CutLogRequested] = []
        for item in done:
            if item[0] == "view":
                disk.view = item[1]  # type: ignore[assignment]
            elif item[0] in ("founded", "commit"):
                logged: ViewLogRequested = item[1]  # type: ignore[assignment]
                view = logged.view
                if logged.commit:  # as a restart reads it back: see Logs
                    disk.commit = View(view.epoch, view.members, departed=logged.failed)
                else:
                    disk.view = view
                views.append(view)
            elif item[0] == "snapshot":
                _, key, position, data, epoch = cast(
                    tuple[str, ShardKey, Position, bytes, int], item
                )
                shard = disk.shards.setdefault(key, ShardData())
                shard.snapshot, shard.snapshot_view = (position, data), epoch
                snapshots.append((key, position))
            elif item[0] == "doubt":
                _, key, doubted = cast(tuple[str, ShardKey, tuple[NodeId, ...]], item)
                disk.shards.setdefault(key, ShardData()).doubt = doubted
            elif item[0] == "cut":
                _, key, cut = cast(tuple[str, ShardKey, CutLogRequested], item)
                disk.shards.setdefault(key, ShardData()).cut = cut.epoch
                cuts.append(cut)
            else:
                _, key, request = cast(tuple[str, ShardKey, PersistRequested], item)
                self._make_durable(disk, key, request, now)
                requests.append(request)
        return Synced(requests, views, snapshots, "", cuts)

    def _make_durable(
        self, disk: _Disk, key: ShardKey, request: PersistRequested, now: float
    ) -> None:
        shard = disk.shards.setdefault(key, ShardData())
        for record in request.records:
            where = (request.epoch, request.subgroup, request.shard, record.sender)
            disk.durable_at.setdefault((*where, record.timestamp), now)
            shard.records.append(
                StoredUpdate(
                    record.epoch,
                    record.number,
                    record.sender,
                    record.timestamp,
                    bytes(record.payload),
                )
            )
            self.records += 1

    def read_log(
        self, member: NodeId, key: ShardKey, after: Position, limit_bytes: int
    ) -> list[StoredUpdate] | None:
        """What the real log's read gives (``ShardLogs.read_updates``): the durable records of
        ``member``'s shard ``key`` from the one at ``after`` on, or None when none is there, the
        disk failed, or their payloads pass ``limit_bytes``."""
        disk = self._disks.get(member)
        shard = None if disk is None or disk.failed else disk.shards.get(key)
        return None if shard is None else updates_from(shard.records, after, limit_bytes)

    def pending(self, member: NodeId) -> bool:
        """Writes are waiting for a sync that has not started yet."""
        disk = self._disk(member)
        return bool(disk.waiting) and not disk.failed

    def crash(self, member: NodeId) -> None:
        """What was not synced is lost."""
        disk = self._disk(member)
        disk.waiting.clear()
        disk.syncing.clear()

    def failed(self, member: NodeId) -> bool:
        """The member's disk failed: nothing on it counts any more."""
        disk = self._disks.get(member)
        return disk is not None and bool(disk.failed)

    def durable_at(self, member: NodeId, key: RecordKey) -> float | None:
        """When ``member`` had the record durable, if ever."""
        disk = self._disks.get(member)
        return None if disk is None else disk.durable_at.get(key)

    def recovery(self, member: NodeId) -> tuple[Logs, dict[ShardKey, ShardData]] | None:
        """What a restart of ``member`` reads back: the newest view its disk holds (a logged
        commit newer than its last installed view, or that view) and, per shard with a
        snapshot, the snapshot and records; None when it holds no view (nothing to restart
        from). The disk is usable again (a failed disk stays failed)."""
        logs = self.logs(member)
        if logs is None:
            return None
        disk = self._disks[member]
        shards = {k: d for k, d in disk.shards.items() if d.snapshot is not None}
        disk.mine = set(shards)
        return logs, shards

    def holds_snapshot(self, member: NodeId, key: ShardKey) -> bool:
        """Whether ``member``'s disk durably holds a snapshot of ``key`` (what a restart of it
        would rebuild the shard from). Reading it changes nothing, for checks."""
        disk = self._disks.get(member)
        if disk is None or disk.failed:
            return False
        shard = disk.shards.get(key)
        return shard is not None and shard.snapshot is not None

    def cut_of(self, member: NodeId, key: ShardKey) -> int:
        """The last view whose cut ``member``'s disk holds of ``key`` (its log is marked so,
        or its snapshot was taken in the view after; -1: none, the disk failed, or a doubt
        written beside it says the state may lack updates). Reading it changes nothing, for
        checks."""
        disk = self._disks.get(member)
        shard = None if disk is None or disk.failed else disk.shards.get(key)
        return -1 if shard is None or shard.doubt else max(shard.cut, shard.snapshot_view - 1)

    def logs(self, member: NodeId) -> Logs | None:
        """What ``member``'s disk says about views, as a restart reads it (the newest view
        installed, and a commit of a later one); None when it holds no view or failed. Reading
        it changes nothing, for checks."""
        disk = self._disks.get(member)
        if disk is None or disk.view is None or disk.failed:
            return None
        commit = disk.commit
        if commit is not None and commit.epoch <= disk.view.epoch:
            commit = None  # installed since
        return Logs(disk.view, commit)
