"""What the core tells its driver happened, in the past tense.

Events are small frozen records; the driver drains them after each input and hands them to the
application (deliveries) or to its own bookkeeping (sends, for histories and statistics).
The two made once per message are msgspec structs without GC tracking: a profile of the 100-byte
benchmark found dataclass construction the largest single cost (about 600 ns against 100).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from pyderecho.core.layout import Mode, ViewLayout
from pyderecho.core.view import NodeId, View


class Delivered(msgspec.Struct, frozen=True, gc=False):
    """A message handed to the application, in the shard's delivery order.

    In a ``Raw`` shard the payload is a view straight into the received frame (on
    shared memory, into the sender's ring; on TCP, into the reused receive buffer): it is valid
    only while the event is being handled, so copy it (``bytes(payload)``, or :meth:`detached`
    for the whole event) to keep it; the delivery queues (``pyderecho.deliveries``,
    ``BlockingMember.deliveries``) do. Ordered deliveries are ``bytes``, except messages larger
    than one block (``block_size``): those come as a read-only view of the buffer they were
    reassembled in, which is the application's to keep (copying it would cost as much as
    receiving it). Both modes' payloads support the buffer protocol: ``bytes(payload)``,
    ``hashlib``, ``socket.send`` and ``memoryview`` slicing work alike.
    """

    epoch: int
    subgroup: int
    shard: int
    mode: Mode
    sender: NodeId
    index: int
    payload: bytes | memoryview
    timestamp: int = 0
    """``Paxos`` shards: the message's hybrid logical timestamp in microseconds (the sender's
    clock at send, raised to stay above the shard's previous message), the same at every
    member; 0 in other modes."""

    def detached(self) -> Delivered:
        """This delivery, safe to keep past its handling (in a queue, say): a ``Raw`` payload,
        a view into memory the transport reuses, is copied; any other is already yours."""
        if self.mode is Mode.RAW and isinstance(self.payload, memoryview):
            return msgspec.structs.replace(self, payload=bytes(self.payload))
        return self


class MessageSent(msgspec.Struct, frozen=True, gc=False):
    """A queued message left this sender with its per-sender index."""

    epoch: int
    subgroup: int
    shard: int
    index: int
    payload: bytes


class LogRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One message of a ``Paxos`` shard as its log holds it: where it stands in the shard's
    order (``epoch``, global ``index``), who sent it, its timestamp and its payload."""

    epoch: int
    index: int
    number: int
    """Which message of the epoch this is, counting from 1 and skipping nulls: the same
    count as the deliveries of the epoch, which the object layer's versions use."""
    sender: NodeId
    timestamp: int
    payload: bytes | memoryview


@dataclass(frozen=True, slots=True)
class ViewLogRequested:
    """In a group with ``Paxos`` shards, the driver must log ``view`` durably (with where its
    members listen, ``addresses`` in ``view.members`` order) and then report
    :meth:`~pyderecho.core.node.Node.view_logged`; until then the member waits.

    ``commit``: this member holds a commit of the next view (the ``commit`` file), which it
    shows nobody before it is logged, so every view that is installed anywhere was committed
    in the logs of a majority of the view before. Otherwise ``view`` is the one a restart from
    logs founds (the ``view`` file), logged before the member takes any part in it: a later
    incarnation then knows it was there (:mod:`pyderecho.core.restart`)."""

    view: View
    addresses: tuple[str, ...]
    commit: bool = True
    failed: tuple[NodeId, ...] = ()
    """Members a commit removes as failed: a restart knows they never logged it."""


@dataclass(frozen=True, slots=True)
class PersistRequested:
    """A ``Paxos`` shard asks the driver to log ``records`` durably, after everything it asked
    before, and then to report :meth:`~pyderecho.core.node.Node.persisted` with ``upto``.

    ``upto`` is a global index of the shard's order in ``epoch``: it covers the nulls between
    the records too, so a run of nulls alone comes with no record and is durable at once.
    The records are stable (every member holds them), so no ragged-edge cleanup can trim them.
    """

    epoch: int
    subgroup: int
    shard: int
    upto: int
    records: tuple[LogRecord, ...]


@dataclass(frozen=True, slots=True)
class CutLogRequested:
    """A ``Paxos`` shard's member published the ragged-edge decision of ``epoch`` and asked to
    log what it keeps (:class:`PersistRequested`): once those records are durable, the driver
    records durably that this shard's log holds ``epoch``'s cut (after everything asked
    before), then reports :meth:`~pyderecho.core.node.Node.cut_logged`.

    A restart after a total crash reads the mark: a member whose log lacks the last cut may
    have been left out of that cleanup, which then delivered what it never logged, so its
    state decides the shard only where no member could have applied the cut without it
    (docs/persistence.md, "An excluded member that the crash saved from removal")."""

    epoch: int
    subgroup: int
    shard: int


@dataclass(frozen=True, slots=True)
class Persisted:
    """A ``Paxos`` shard's persistence frontiers moved: ``local`` is how far this member has
    logged (global index in ``epoch``), ``everywhere`` how far every member of the shard has,
    as far as this member knows: what may be delivered."""

    epoch: int
    subgroup: int
    shard: int
    local: int
    everywhere: int


@dataclass(frozen=True, slots=True)
class NullsSent:
    """This sender filled ``count`` turns of the round robin with nulls, from index ``first``."""

    epoch: int
    subgroup: int
    shard: int
    first: int
    count: int


@dataclass(frozen=True, slots=True)
class ViewInstalled:
    """A view became current, with its layout (which may be inadequate).

    ``previous`` is the layout of the last adequate view before this one, as every member of
    this view knows it (a joiner learns it from its welcome); None when the group was founded
    in this view or no earlier view was adequate. Comparing the two says, per shard, which
    members already held its state and which need it: the object layer's transfer plan.
    """

    view: View
    layout: ViewLayout
    previous: ViewLayout | None = None
    restarted_shards: frozenset[tuple[str, int, int]] | None = None
    """In a view this member's restart from logs founded: the shards (type name, subgroup
    index, shard) whose logs here are current, those it held in the newest view the group
    installed and in the last one it installed itself. A state its logs rebuilt of any other
    shard is from an earlier stint, which the shard went on without: it must not count."""
    restart_holders: tuple[NodeId, ...] = ()
    """While no view since a restart from logs founded the group anew was adequate
    (``previous`` is None): the founded view's members, the only ones whose logs hold the
    ``Paxos`` shards' states. They compare their states in the first adequate view; a member
    that joined since gets each state from them, rather than start over (trio seed 14: a
    member removed before the total crash rejoined the two founders, whose view could not
    run the layout, and started its shards from the constructor)."""


class PeerMessage(msgspec.Struct, frozen=True, gc=False):
    """A point-to-point message from ``src`` (:meth:`~pyderecho.core.node.Node.send_p2p`).

    The payload is a view into the received frame, valid only while the event is handled."""

    src: NodeId
    payload: bytes | memoryview


@dataclass(frozen=True, slots=True)
class Stopped:
    """This member stopped for good: it crashed its own protocol, left, was removed, or found
    itself on the minority side of a partition. To come back it must join as a new member."""

    reason: str


@dataclass(frozen=True, slots=True)
class Suspected:
    """This member now suspects ``node`` (its own detection, or adopted from another member):
    the current view will change."""

    node: NodeId


@dataclass(frozen=True, slots=True)
class Abandoned:
    """A message this member sent was not delivered in its view and cannot be re-sent in the
    next one, where this member no longer sends in that shard (it left the subgroup, lost its
    sending role, or the layout moved it to another shard of the subgroup)."""

    type_name: str
    subgroup_index: int
    payload: bytes
    shard: int = 0


Event = (
    Delivered
    | MessageSent
    | NullsSent
    | ViewInstalled
    | Stopped
    | Suspected
    | Abandoned
    | PeerMessage
    | PersistRequested
    | CutLogRequested
    | ViewLogRequested
    | Persisted
)
