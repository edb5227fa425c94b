"""What the object layer reports: outputs for its driver, events for the application.

Named in the past tense for what happened, frozen and slotted like the core's events. The
driver acts on :class:`SendPeer`, :class:`RunQuery` and the call results, and hands the rest to
the application's event handler.
"""

from __future__ import annotations

import contextvars
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from pyderecho.core.view import NodeId
from pyderecho.replicated.methods import MethodSpec


@dataclass(frozen=True, slots=True)
class SendPeer:
    """Send ``payload`` point-to-point to ``dst`` (driver action)."""

    dst: NodeId
    payload: bytes


@dataclass(frozen=True, slots=True)
class CallDone:
    """Every replica of an ordered call answered: a result, or a RemoteError, per member."""

    call_id: int
    replies: dict[NodeId, Any]


@dataclass(frozen=True, slots=True)
class CallFailed:
    """An ordered call will get no replies (it was abandoned at a view change)."""

    call_id: int
    error: Exception


@dataclass(frozen=True, slots=True)
class QueryDone:
    """A query's result, or the RemoteError that stands for it."""

    query_id: int
    result: Any


@dataclass(frozen=True, slots=True)
class RunQuery:
    """An async query method started: run ``coroutine`` in ``context`` and hand its outcome to
    :meth:`~pyderecho.replicated.host.ObjectHost.finish_query` (driver action)."""

    src: NodeId
    query_id: int
    method: MethodSpec
    coroutine: Coroutine[Any, Any, Any]
    context: contextvars.Context


@dataclass(frozen=True, slots=True)
class StateReceived:
    """This member installed a shard's state from ``source``: ``size`` bytes holding the
    shard's deliveries up to ``position``. ``caught_up``: the member came back with the
    state from its own logs, and ``source`` sent only the updates after it (``size`` bytes
    of them), which it applied. ``source`` is this member itself (``size`` 0) where it took
    the state its own logs rebuilt, a history handed on having shown it whole."""

    type_name: str
    subgroup_index: int
    shard: int
    source: NodeId
    size: int
    position: tuple[int, int]
    lost: bool
    caught_up: bool = False


@dataclass(frozen=True, slots=True)
class StateProgress:
    """A chunk of a shard's state arrived: ``received`` of ``size`` bytes."""

    type_name: str
    subgroup_index: int
    shard: int
    source: NodeId
    received: int
    size: int


@dataclass(frozen=True, slots=True)
class StateLost:
    """No member that held this shard's state survived into view ``epoch``: the shard started
    again from its class's constructor, at every member of the shard alike."""

    type_name: str
    subgroup_index: int
    shard: int
    epoch: int


@dataclass(frozen=True, slots=True)
class StateWaiting:
    """A ``Paxos`` shard cannot serve yet: no member that holds its state (its logs) is here.
    Its calls wait; a ``Paxos`` shard never restarts from the constructor (that would drop
    durable updates), so it waits for such a member to come back."""

    type_name: str
    subgroup_index: int
    shard: int
    epoch: int
    reason: str
    waiting_for: tuple[NodeId, ...] = ()
    """The members it waits for by name, where only they will do: after a restart, members
    of the shard that may hold the last cleanup's cut, which the logs here lack."""


@dataclass(frozen=True, slots=True)
class SaveState:
    """Write this ``Paxos`` replica's state durably as its shard's snapshot: its log holds
    the updates after ``position``. Emitted when the replica starts (fresh, received or
    recovered in a restart) so that its logs alone can rebuild it after a crash."""

    key: tuple[str, int, int]
    position: tuple[int, int]
    data: bytes
    epoch: int = -1
    """The view it is taken in: the state holds everything the cuts of the views before
    delivered (a restart asks, :attr:`~pyderecho.replicated.recovery.Rebuilt.cut_epoch`)."""


@dataclass(frozen=True, slots=True)
class SaveDoubt:
    """Write durably, beside this ``Paxos`` replica's snapshot, the members that may have
    delivered updates its state lacks (``doubted``), or that none may (empty).

    Emitted when a restart's comparison of states begins with a state whose log lacks the
    last cleanup's cut, and emptied once the comparison settles: the log may meanwhile mark
    later cuts over that state, and should the group crash again before it settles, the
    next restart must still doubt it (:class:`ShardEnd.doubted`)."""

    key: tuple[str, int, int]
    doubted: tuple[NodeId, ...]


@dataclass(frozen=True, slots=True)
class ReadLog:
    """Read this member's log of a ``Paxos`` shard from the update at ``after`` on, and hand
    what it holds to :meth:`~pyderecho.replicated.host.ObjectHost.log_read` with ``read_id``
    (driver action, off the event loop: it is disk I/O).

    Asked when a member back with an older state wants the updates after it and this member
    no longer keeps them in memory (``catch_up_bytes``): its log may still hold them. The
    answer is None when the log does not hold the update at ``after`` (compacted, or a stint
    that began later), when the read fails, or once the payloads read pass ``limit_bytes``
    (twice the replica's last snapshot, 16 MiB at least): past that, the whole state is the
    smaller thing to send and the cheaper one to install."""

    read_id: int
    key: tuple[str, int, int]
    after: tuple[int, int]
    limit_bytes: int


@dataclass(frozen=True, slots=True)
class StateDigest:
    """For the history checker: ``member``'s state of a shard at ``position`` had ``digest``.

    ``kind`` is "view" (at a view boundary), "sent" (``member`` is the receiver of a transfer
    and this is what the sender shipped) or "received" (what the receiver installed)."""

    member: NodeId
    key: tuple[str, int, int]
    position: tuple[int, int]
    digest: str
    kind: str


@dataclass(frozen=True, slots=True)
class UserCodeFailed:
    """Application code raised where nobody waits for its result (``on_view``, ``snapshot``,
    ``restore``, an event handler): reported and counted, and the member goes on."""

    where: str
    error: str


@dataclass(frozen=True, slots=True)
class HostFailed:
    """The object layer cannot go on (the layout names a type with no class): the member
    stops with this reason."""

    reason: str
