"""Rebuild a ``Paxos`` replica from what its member wrote to disk: a snapshot, then the log.

The snapshot is the replica's state at a position (epoch, n); the log holds the shard's
updates in order, each with its own position. Replaying applies, in order, every logged
update after the snapshot's position, exactly as delivery applied them: the same method, the
same arguments, the same :func:`~pyderecho.replicated.context.context` (caller, version,
timestamp). Results are dropped (their callers are gone); an update that raised when it was
delivered raises again here and changes nothing more than it did then.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgspec

from pyderecho.core.errors import RemoteProtocolError
from pyderecho.core.view import NodeId
from pyderecho.replicated import context as ctx
from pyderecho.replicated.messages import decode_call
from pyderecho.replicated.methods import TypeSpec
from pyderecho.replicated.state import restore

Position = tuple[int, int]


class LoggedUpdate(Protocol):
    """What replay needs of a log record."""

    @property
    def epoch(self) -> int: ...
    @property
    def number(self) -> int: ...
    @property
    def sender(self) -> NodeId: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def payload(self) -> bytes | memoryview: ...


Logged = TypeVar("Logged", bound=LoggedUpdate)
"""A log record of whatever kind the log holds: the runtime's, the simulator's, a test's."""


def updates_from(
    records: Iterable[Logged], after: Position, limit_bytes: int
) -> list[Logged] | None:
    """The records of a shard's log from the one at position ``after`` on (None: the log
    does not hold it, or the payloads from there pass ``limit_bytes``): what a member reads
    back to catch another up (:class:`~pyderecho.replicated.events.ReadLog`), from real
    segment files or from the simulator's disks alike. Positions rise along a log, so the
    scan stops at the first record past ``after``."""
    found: list[Logged] = []
    payload_bytes = 0
    for record in records:
        if not found:
            at = (record.epoch, record.number)
            if at < after:
                continue
            if at != after:
                return None
        found.append(record)
        payload_bytes += len(record.payload)
        if payload_bytes > limit_bytes:
            return None
    return found or None


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """A replica rebuilt from disk: the object, the position it reaches, and what replay
    counted (updates applied, updates whose method raised, records that were no call)."""

    obj: Any
    position: Position
    applied: int
    raised: int
    malformed: int
    last: tuple[NodeId, int] | None = None
    """The sender and timestamp of the update at ``position`` (None: the position is the
    snapshot's, no update after it was replayed): by these a member it asks for the updates
    after ``position`` checks that its own history holds that update there."""
    latest_timestamp: int = 0
    """The largest timestamp among the updates replayed (microseconds; 0: none)."""
    state_bytes: int = 0
    """The size of the snapshot it was rebuilt from (0: not rebuilt from one): until it
    snapshots again, what its state is taken to cost to send."""
    cut_epoch: int = -1
    """The last view whose ragged-edge cut the shard's log is marked to hold (-1: none):
    what a restart's comparison of states asks of a member that might have been left out
    of that cleanup (:class:`~pyderecho.core.events.CutLogRequested`)."""
    doubted: tuple[NodeId, ...] = ()
    """Members that may have delivered updates this state lacks, as an earlier restart
    whose comparison never settled wrote (:class:`~pyderecho.replicated.events.SaveDoubt`)."""


def rebuild(
    spec: TypeSpec,
    key: tuple[str, int, int],
    member: NodeId,
    *,
    state: bytes,
    position: Position,
    records: Iterable[LoggedUpdate],
) -> Rebuilt:
    """The replica of ``key`` at ``member``: ``state`` (at ``position``) with every record
    after ``position`` applied in order."""
    replaying = Replay.from_snapshot(spec, key, member, state=state, position=position)
    for record in records:
        replaying.apply(record)
    return replaying.result()


def replay(
    spec: TypeSpec,
    key: tuple[str, int, int],
    member: NodeId,
    obj: Any,
    *,
    position: Position,
    records: Iterable[LoggedUpdate],
) -> Rebuilt:
    """``obj``, a replica of ``key`` at ``position``, with every record after ``position``
    applied in order, as delivery applied them (a restart's log, or the updates a member back
    while the group runs catches up with)."""
    replaying = Replay(spec, key, member, obj, position=position)
    for record in records:
        replaying.apply(record)
    return replaying.result()


class Replay:
    """A replica being rebuilt, one record at a time: a restart applies each record of its
    log as the log's recovery reads and checks it, so it holds one segment of the log at a
    time rather than the whole log (a member used to hold every record after its snapshot
    until it had read them all: 1,065 MiB of memory for 1 GiB of log)."""

    __slots__ = (
        "applied",
        "key",
        "last",
        "latest",
        "malformed",
        "member",
        "obj",
        "position",
        "raised",
        "spec",
        "state_bytes",
    )

    def __init__(
        self,
        spec: TypeSpec,
        key: tuple[str, int, int],
        member: NodeId,
        obj: Any,
        *,
        position: Position,
        state_bytes: int = 0,
    ) -> None:
        self.spec = spec
        self.key = key
        self.member = member
        self.obj = obj
        self.position = position
        self.applied = self.raised = self.malformed = 0
        """Updates applied, updates whose method raised, records that were no call."""
        self.last: tuple[NodeId, int] | None = None
        self.latest = 0
        self.state_bytes = state_bytes

    @classmethod
    def from_snapshot(
        cls,
        spec: TypeSpec,
        key: tuple[str, int, int],
        member: NodeId,
        *,
        state: bytes,
        position: Position,
    ) -> Replay:
        """Start from a snapshot's ``state``, the replica at ``position``."""
        obj = restore(spec, memoryview(state))
        return cls(spec, key, member, obj, position=position, state_bytes=len(state))

    def apply(self, record: LoggedUpdate) -> None:
        """Apply ``record`` if it comes after the position reached (records at or before it
        are already in the state), as delivery applied it."""
        at = (record.epoch, record.number)
        if at <= self.position:
            return
        self.position = at
        self.last = (record.sender, record.timestamp)
        try:
            call = decode_call(record.payload)
        except RemoteProtocolError:
            self.malformed += 1
            return
        self.latest = max(self.latest, record.timestamp)  # as delivery counts it: calls only
        method = self.spec.methods.get(call.method)
        if method is None or method.kind != "ordered":
            self.raised += 1  # refused with UnknownMethod when it was delivered: nothing changed
            return
        try:
            arguments = method.args_decoder.decode(call.args)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.raised += 1
            return
        stamp = record.timestamp / 1_000_000
        token = ctx.enter(ctx.CallContext(record.sender, self.member, self.key, at, stamp, None))
        try:
            function = getattr(self.obj, call.method)
            if method.positional:
                function(*msgspec.structs.astuple(arguments))
            else:
                function(**msgspec.structs.asdict(arguments))
            self.applied += 1
        except Exception:
            self.raised += 1
        finally:
            ctx.leave(token)

    def result(self) -> Rebuilt:
        return Rebuilt(
            self.obj,
            self.position,
            self.applied,
            self.raised,
            self.malformed,
            self.last,
            self.latest,
            self.state_bytes,
        )
