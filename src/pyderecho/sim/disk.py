"""The simulator's disks: each member's log for its ``Paxos`` shards, with group commit.

A member hands its disk the records its core asks to log
(:class:`~pyderecho.core.events.PersistRequested`). The disk writes like the real writer does
(:mod:`pyderecho.storage`): one sync at a time; everything that arrived before a sync starts
shares it (group commit); when the sync ends, those records are durable and the member is told.
What is written but not yet synced when the member crashes is lost. A disk can also fail (an
I/O error on the next sync): the member then stops, as a real one does on a failed fsync.

Every record's time of durability is kept, per member, so that a run can check the ``Paxos``
delivery rule after the fact (:meth:`SimDisks.durability_violations`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pyderecho.core.events import PersistRequested
from pyderecho.core.view import NodeId

RecordKey = tuple[int, int, int, int, int]
"""A logged message by (epoch, subgroup, shard, sender, timestamp): its timestamp is unique in
its shard and epoch (hybrid logical clocks strictly increase) and the same at every member."""


@dataclass(frozen=True, slots=True)
class DiskModel:
    """How long a sync takes: ``latency`` plus up to ``jitter`` more, in seconds."""

    latency: float = 0.002
    jitter: float = 0.002


@dataclass(slots=True)
class _Disk:
    waiting: list[PersistRequested] = field(default_factory=list)
    """Requests not yet part of a sync."""
    syncing: list[PersistRequested] = field(default_factory=list)
    """Requests the sync in progress makes durable."""
    durable_at: dict[RecordKey, float] = field(default_factory=dict)
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

    def write(self, member: NodeId, request: PersistRequested) -> bool:
        """Queue a request's records; True when a sync must start now (none is running)."""
        disk = self._disk(member)
        disk.waiting.append(request)
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

    def finish_sync(self, member: NodeId, now: float) -> tuple[list[PersistRequested], str]:
        """End the sync in progress: the requests it made durable, or an error."""
        disk = self._disk(member)
        done, disk.syncing = disk.syncing, []
        if disk.fail_next:
            disk.failed, disk.fail_next = disk.fail_next, ""
            disk.waiting.clear()
            return [], disk.failed
        for request in done:
            for record in request.records:
                key = (request.epoch, request.subgroup, request.shard, record.sender)
                disk.durable_at.setdefault((*key, record.timestamp), now)
                self.records += 1
        return done, ""

    def pending(self, member: NodeId) -> bool:
        """Records are waiting for a sync that has not started yet."""
        disk = self._disk(member)
        return bool(disk.waiting) and not disk.failed

    def crash(self, member: NodeId) -> None:
        """What was not synced is lost."""
        disk = self._disk(member)
        disk.waiting.clear()
        disk.syncing.clear()

    def durable_at(self, member: NodeId, key: RecordKey) -> float | None:
        """When ``member`` had the record durable, if ever."""
        disk = self._disks.get(member)
        return None if disk is None else disk.durable_at.get(key)
