"""The object layer of one member, without I/O: replicas of its shards, calls and replies, state
transfer.

Like the protocol core, the host is a state machine: the driver feeds it the core's events
(:meth:`ObjectHost.handle`) and the application's calls (:meth:`ObjectHost.prepare_call`,
:meth:`ObjectHost.prepare_query`), then drains :meth:`ObjectHost.outputs`: point-to-point
messages to send, results of calls, and events for the application. The asyncio runtime and the
simulator drive the same host, so what the simulator checks is what real members run.

Positions. Each replica counts its shard's deliveries per view: (epoch, n) names the n-th
delivery of view ``epoch``. Every replica delivers the same sequence in a view, so a position
means the same state everywhere; it is the version an ordered method sees, and what a state
transfer says its state includes.

State transfer. At a view change, a member that joins a shard (it was not in the shard in the
last adequate view) has no state: it keeps the shard's deliveries in order without applying
them, and asks the shard's old members, lowest rank first, for the state. The first old
member snapshots the state at the view's cut as the view installs, so the joiner applies every
call of the new view itself; one that answers later (because the first failed) sends its
current state and position, and the joiner skips the deliveries that state already holds.
Chunks go with a window of acknowledgements, so heartbeats and other shards' traffic interleave
with a large state. A shard none of whose old members survived starts from the class's
constructor at the start of the view, at every member alike, which is told the state was lost.
"""

from __future__ import annotations

import bisect
import contextvars
import itertools
from collections import Counter
from collections.abc import Container, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import crc32c
import msgspec

from pyderecho.config import DEFAULT_CATCH_UP_BYTES, DEFAULT_SNAPSHOT_EVERY
from pyderecho.core.errors import LocalProtocolError, RemoteProtocolError
from pyderecho.core.events import Abandoned, Delivered, Event, PeerMessage, ViewInstalled
from pyderecho.core.layout import Mode, ShardRef, ViewLayout
from pyderecho.core.node import MAX_P2P_BYTES
from pyderecho.core.view import NodeId, View
from pyderecho.replicated import context as ctx
from pyderecho.replicated.errors import (
    CallAbandoned,
    MemberRemoved,
    NotInShard,
    RemoteError,
)
from pyderecho.replicated.events import (
    CallDone,
    CallFailed,
    HostFailed,
    QueryDone,
    ReadLog,
    RunQuery,
    SaveDoubt,
    SaveState,
    SendPeer,
    StateDigest,
    StateLost,
    StateProgress,
    StateReceived,
    StateWaiting,
    UserCodeFailed,
)
from pyderecho.replicated.messages import (
    Call,
    CaughtUpdate,
    Outcome,
    PeerPayload,
    QueryReply,
    QueryRequest,
    Replies,
    Reply,
    RestartView,
    ShardEnd,
    StateAck,
    StateChunk,
    StateHeader,
    StateHistory,
    StateOffer,
    StateRequest,
    StateStatus,
    caught_updates_decoder,
    decode_call,
    decode_peer,
    encoder,
)
from pyderecho.replicated.methods import MethodSpec, TypeSpec, type_spec
from pyderecho.replicated.recovery import LoggedUpdate, Rebuilt, replay
from pyderecho.replicated.state import digest, restore, snapshot

ShardKey = tuple[str, int, int]
"""A shard by replicated type name, subgroup index and shard index: stable across views."""
Position = tuple[int, int]

Output = (
    SendPeer
    | SaveState
    | SaveDoubt
    | StateWaiting
    | CallDone
    | CallFailed
    | QueryDone
    | RunQuery
    | ReadLog
    | StateReceived
    | StateLost
    | StateProgress
    | StateDigest
    | UserCodeFailed
    | HostFailed
)

CHUNK_SIZE = 1024 * 1024
"""Bytes of state per chunk: large enough to amortise a frame, small enough that a heartbeat
queued behind a window of them waits milliseconds."""
WINDOW_CHUNKS = 4
"""Chunks in flight per transfer before the receiver's acknowledgement."""
MAX_RESULT_BYTES = MAX_P2P_BYTES - 64 * 1024
"""The largest encoded result a reply carries, leaving room for its envelope."""
MAX_HISTORY_BYTES = MAX_P2P_BYTES - 64 * 1024
"""The most a history handed on (:class:`StateHistory`) holds in payloads, with 32 bytes an
update for its fields: one point-to-point message, with room for its envelope."""
KEPT_UPDATE_OVERHEAD = 180
"""Bytes an update kept for catching up costs beyond its payload (the struct, the ``bytes``
object, the list's slot), counted against ``catch_up_bytes`` so that small updates do not
hold several times the budget."""


@dataclass
class _Buffered:
    position: Position
    sender: NodeId
    timestamp: int
    """The update's hybrid logical timestamp (microseconds; 0 outside ``Paxos`` shards)."""
    call: Call | None
    answered: bool = False
    """Counted by a member moved out of the shard, which handed it on (:class:`StateHistory`)
    and answered its caller: applied here without a reply."""


@dataclass
class _Incoming:
    source: NodeId
    header: StateHeader
    data: bytearray
    received: int = 0
    checksum: int = 0
    """CRC32C of the chunks received so far."""
    announced: int = 0
    """What the sender says the whole state's CRC32C is (on its last chunk)."""


@dataclass
class _Replica:
    key: ShardKey
    spec: TypeSpec
    obj: Any | None
    """The instance; None while this member waits for the shard's state."""
    position: Position = (-1, 0)
    """The last delivery this replica counted (applied, buffered or skipped)."""
    buffered: list[_Buffered] = field(default_factory=list)
    skip_until: Position = (-1, 0)
    """Deliveries up to here are already inside the state received."""
    candidates: list[NodeId] = field(default_factory=list)
    """Old members of the shard to ask for its state, lowest rank first."""
    asked: set[NodeId] = field(default_factory=set)
    asking: NodeId | None = None
    asked_in: int = -1
    """The view this member's request to ``asking`` was sent in. An answer that the state is
    not held names the view of the request it answers: one of an earlier view than this
    member's says nothing of whether it is held now (:meth:`ObjectHost._on_state_header`)."""
    rejected: list[str] = field(default_factory=list)
    """Why states received so far could not be installed."""
    history_from: int = -1
    """The view from which this replica counted every delivery of the shard while it held
    no state, itself or, before it entered, a member moved out that handed them on (-1:
    none, or it compares states after a restart): what a state offered by a member back
    from its logs must meet (:meth:`ObjectHost._on_state_offer`)."""
    shard_before: int = -1
    """The last view before ``history_from`` whose layout ran the shard: the views between,
    if any, could not run the layout, and delivered nothing of it."""
    orphaned_by: tuple[NodeId, ...] = ()
    """The shard's members in view ``shard_before``, where none of them reached
    ``history_from``'s view but as a new process back from its logs: no cleanup that it
    ran in may have gone unmarked in its log, and where it was the only one, every delivery
    of that view waited for its log (:func:`_meets_history`)."""
    handed_history: bool = False
    """Its history reaches back before the view it entered the shard in: a member moved out
    handed it the deliveries it had counted (:meth:`ObjectHost._on_state_history`)."""
    asking_offered: bool = False
    """The member asked (``asking``) is asked for the state it offered."""
    offers: dict[NodeId, StateOffer] = field(default_factory=dict)
    """States offered by members back from their logs, not asked for yet: taken once no
    old member holds the state (:meth:`ObjectHost._take_offer`)."""
    incoming: _Incoming | None = None
    waiting: list[NodeId] = field(default_factory=list)
    """Members that asked this replica for state before it had any."""
    lost: bool = False
    cut: _Cut | None = None
    """A snapshot taken at a view's cut for the shard's newcomers, until each has it."""
    paxos: bool = False
    """The shard is ``Paxos``: its state lives on disk too, and is never restarted from the
    constructor once it existed."""
    recovered: tuple[Any, Position] | None = None
    """While a restart compares states: the state this member holds but applies nothing to
    yet, the one it rebuilt from its own logs or one it received from the member chosen."""
    ends: dict[NodeId, ShardEnd] | None = None
    """While a restart compares states: what each shard member said in the current view."""
    reconcilers: tuple[NodeId, ...] = ()
    """Restart: the members that compare states, those of the shard in the view the restart
    founded that stayed in the view and in the shard since (one moved out drops its state,
    one that rejoined got none from its logs)."""
    my_end: ShardEnd | None = None
    """What this member said in the current view: repeated to each member the first time
    that member speaks in it, since a member that had not installed the view yet missed it."""
    heard_ends: set[NodeId] = field(default_factory=set)
    holder_unsent: bool = False
    """A member asked in this view holds the state but could not snapshot it: having asked
    every member then is no loss of the state, and the next view asks again."""
    recovered_checksum: int = 0
    """Restart: the CRC32C of ``recovered``'s state (0: it could not be snapshotted)."""
    holds_last_cut: bool = False
    """Restart: ``recovered`` is known to hold everything the last cleanup that may have run
    before the crash delivered (its log is marked with that cut, or it was taken from a
    state the comparison allowed): :meth:`ObjectHost._left_out_may_decide`."""
    doubted: tuple[NodeId, ...] = ()
    """Restart: the members of the shard in the founded view, and those an earlier restart
    that never settled doubted (:attr:`ShardEnd.doubted`). One of them may have applied the
    last cleanup's cut without this member (which it then excluded): unless a member that
    compares holds the cut, the shard goes on only once each of them said its log lacks the
    cut too, so that none applied it."""
    doubt_saved: bool = False
    """Restart: this member wrote its doubt to disk (:class:`SaveDoubt`): it is emptied once
    the comparison settles."""
    my_doubts: tuple[NodeId, ...] = ()
    """Restart: the doubt the own logs held from an earlier restart (:attr:`Rebuilt.doubted`),
    said to the others."""
    lacks_cut: set[NodeId] = field(default_factory=set)
    """Restart: the members that said, in this view or an earlier one, that their logs lack
    the last cut."""
    cut_held_at: Position | None = None
    """Restart: the position of a state said to hold the last cut; a state at or past it (the
    one chosen, taken by transfer) holds the cut too."""
    waiting_said: int = -1
    """Restart: the view in which this member last said the shard waits for a member that
    may hold the last cut."""
    said_held: dict[NodeId, ShardEnd] = field(default_factory=dict)
    """Restart: members that said, in this view or an earlier one, that they hold a state
    with the last cut: one the layout moves out keeps it for a view (retired), and is asked
    like an outside member should no member that stays hold the cut."""
    outside: dict[NodeId, ShardEnd] = field(default_factory=dict)
    """Restart: members outside the shard that said, in this view, that they hold a state
    of it with the last cut (:meth:`ObjectHost._offer_outside`)."""
    unsaved: _Unsaved | None = None
    """Restart: a state received while comparing, until the driver says its snapshot is
    durable (:meth:`ObjectHost.saved`)."""
    released_at: Position | None = None
    """Restart: where this member started applying deliveries, once the comparison was over;
    what it answers a member that still compares."""
    released_checksum: int = 0
    """Restart: the CRC32C of the state at ``released_at`` (0: not known here)."""
    since_save: int = 0
    """Paxos: updates applied since the last snapshot was asked for."""
    applied_timestamp: float = 0.0
    """Paxos: the largest timestamp of the updates this replica applied itself, what a query
    is told as its frontier in time (0.0 until the first: a restored state does not say
    which timestamp it reaches)."""
    tail: list[CaughtUpdate] = field(default_factory=list)
    """Paxos: the shard's latest deliveries as this member counted them, in order, ending at
    ``position`` (between three quarters of and all of the host's ``catch_up_bytes``, once
    that much came): the updates a member back with an older state catches up with. History,
    not this replica's state: kept whether the replica applied, buffered or skipped them."""
    tail_bytes: int = 0
    """What ``tail`` costs: its payloads and :data:`KEPT_UPDATE_OVERHEAD` each."""
    saved_bytes: int = 0
    """Paxos: the size of the last snapshot asked for, or of the one a restart rebuilt the
    replica from (0: neither): what bounds a read of the log for updates to send instead of
    the state."""
    held: Rebuilt | None = None
    """A member back while the group runs: the state its own logs rebuilt, until it catches
    up from there or takes a whole state."""


@dataclass(frozen=True, slots=True)
class _Unsaved:
    obj: Any
    position: Position
    checksum: int
    """The CRC32C of the state as received."""
    start: Position | None
    """Where the member that sent it started applying deliveries (None: it had not)."""
    start_checksum: int
    """The CRC32C of the state at ``start``, as the sender said."""


@dataclass
class _Cut:
    epoch: int
    data: bytes
    waiting: set[NodeId]
    """Newcomers not yet sent this snapshot: it is dropped once none is left."""


@dataclass
class _Outgoing:
    dst: NodeId
    key: ShardKey
    data: memoryview
    position: Position
    sent: int = 0
    acked: int = 0
    checksum: int = 0
    """CRC32C of the chunks sent so far."""
    state_digest: str = ""
    """For the history checker, the digest of the state the receiver ends up with when
    ``data`` is not that state (the updates it catches up with); empty: ``data``'s."""


@dataclass
class _PendingCall:
    method: MethodSpec
    own: bool = False
    """Only the caller's own replica answers (``Call.replies`` is False)."""
    expected: tuple[NodeId, ...] | None = None
    """The members whose outcomes the call waits for, once it was delivered here: the
    shard's members in that view, or this member alone for an ``own`` call; None until
    then."""
    outcomes: dict[NodeId, Any] = field(default_factory=dict)
    """Per replica, its decoded result or a RemoteError."""


@dataclass
class _PendingQuery:
    method: MethodSpec
    target: NodeId


class ObjectHost:
    """The replicas one member holds, and its calls in flight."""

    def __init__(
        self,
        node_id: NodeId,
        types: Mapping[str, type[Any]],
        *,
        record_digests: bool = False,
        chunk_size: int = CHUNK_SIZE,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        catch_up_bytes: int = DEFAULT_CATCH_UP_BYTES,
        reads_logs: bool = False,
    ) -> None:
        """``types`` maps each replicated type name of the layout to its class; Raw subgroups
        need none. ``record_digests`` reports a :class:`StateDigest` at every view boundary
        and transfer, for the history checker (it costs a snapshot and a SHA-256 each time;
        the transfers themselves are checked with a CRC32C, which costs far less).
        ``snapshot_every``: a ``Paxos`` replica asks for a snapshot of itself (:class:`SaveState`)
        after this many updates, so that its log can be cut there. ``catch_up_bytes``: how
        much of a ``Paxos`` shard's latest updates each replica keeps for members that come
        back with an older state (0: none). ``reads_logs``: the driver carries out
        :class:`ReadLog`, so that a member back with an older state than the updates kept in
        memory reach is sent the updates the log still holds rather than the whole state."""
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be at least 1, got {snapshot_every}")
        if catch_up_bytes < 0:
            raise ValueError(f"catch_up_bytes must not be negative, got {catch_up_bytes}")
        self.snapshot_every = snapshot_every
        self.catch_up_bytes = catch_up_bytes
        self.reads_logs = reads_logs
        self.node_id = node_id
        self.types = {name: type_spec(name, cls) for name, cls in types.items()}
        self.record_digests = record_digests
        self.chunk_size = chunk_size
        self.group: Any = None
        """What :func:`pyderecho.context` offers as ``group`` (the runtime sets it)."""
        self.stats: Counter[str] = Counter()
        self.view = View(-1, ())
        self.layout: ViewLayout | None = None
        self._refs: dict[int, ShardRef] = {}
        """My shards of the current view, by flattened subgroup id."""
        self._replicas: dict[ShardKey, _Replica] = {}
        self._retired: dict[ShardKey, _Replica] = {}
        """Replicas of shards the last view change moved this member out of: frozen at that
        view's cut (no delivery of the shard reaches them any more), kept through one view so
        that the shard's newcomers can still get the state from them."""
        self._histories: dict[
            ShardKey, tuple[int, int, tuple[NodeId, ...], list[CaughtUpdate]]
        ] = {}
        """Paxos shards the layout moved this member out of in this view while it waited for
        their state: the history it counted there (from, the shard's view before, orphaned
        by, the updates), handed to the newcomer that asks (:class:`StateHistory`)."""
        self._shard_before = -1
        """The epoch of the last view before this one that could run the layout."""
        self._outgoing: dict[tuple[NodeId, ShardKey], _Outgoing] = {}
        self._early_requests: dict[tuple[NodeId, ShardKey], StateRequest] = {}
        """State requests made in a view this member has not installed yet: the latest per
        member and shard, so a peer repeating itself cannot grow it."""
        self._reads: dict[int, tuple[NodeId, StateRequest]] = {}
        """State requests waiting for the driver to read the log (:class:`ReadLog`)."""
        self._calls: dict[int, _PendingCall] = {}
        self._queries: dict[int, _PendingQuery] = {}
        self._ids = itertools.count(1)
        self._replies: dict[NodeId, list[Reply]] = {}
        self._out: list[Output] = []
        self._recovered: dict[ShardKey, Rebuilt] = {}
        """What a restart rebuilt, kept until the first view: the states the comparison
        starts from, or, should the group have gone on without this member (it joins anew),
        those it catches up from."""
        self._rejoining: dict[ShardKey, Rebuilt] = {}
        """A member back while the group runs: the states its logs rebuilt that end with an
        update (whose sender and timestamp it asks with), until the first view plans them."""
        self._rejoined_states: dict[ShardKey, Rebuilt] = {}
        """A member back while the group runs: the states its logs rebuilt, offered to their
        shards' members in the first view that runs the layout (:class:`StateOffer`)."""
        self._offered: dict[ShardKey, tuple[int, _Replica, StateOffer]] = {}
        """The states offered (:class:`StateOffer`), with the view offered in: served to the
        members that ask for them, through the view after it, or until this member holds
        the shard's state itself."""
        self._early_offers: dict[tuple[NodeId, ShardKey], StateOffer] = {}
        """Offers made in a view this member has not installed yet (the latest per member
        and shard)."""
        self._restarting = False
        self._restart_holders: tuple[NodeId, ...] = ()
        """The view's :attr:`~pyderecho.core.events.ViewInstalled.restart_holders`."""
        self._installed: ViewLayout | None = None
        """Restart: the layout of the last view this member installed before the crash
        (:meth:`restart`)."""
        self._founders: tuple[NodeId, ...] | None = None
        """Restart: the members of the view this member founded."""
        self._stale_states: dict[ShardKey, Rebuilt] = {}
        """Restart: shards whose rebuilt states counted for nothing (an earlier stint's): the
        logs still hold them, and mark the cuts of the views that follow over them."""
        self._rejoined_marks: dict[ShardKey, int] = {}
        """A member that restarted late and rejoined: per shard its logs held, the last
        view whose cut they were marked with (-1 where a doubt made it worthless). It says
        so to the shard's members, which may wait for its word (:attr:`ShardEnd.cut_epoch`)."""
        self._outside: dict[ShardKey, _Replica] = {}
        """States this member rebuilt of shards it is not in, whose logs hold the last cut
        before a total crash: the layout moved it out right after it applied that cut. It
        offers them to the shard's members, which take one when none of theirs holds the
        cut (:meth:`_left_out_may_decide`), and keeps them until a member of the shard answers
        that it settled, or until it is in the shard again."""
        self._last_cut = -1
        """Restart: the view whose ragged-edge cleanup is the last that may have delivered
        before the crash: the one before the view a founded view follows (its epoch is two
        below the founded view's, whether that follows an installed view or a commit)."""
        self._restart_view: RestartView | None = None
        """The view this member founded when it restarted from logs, told to every member."""
        self._heard_restart: set[NodeId] = set()
        self._early_ends: dict[tuple[NodeId, ShardKey], ShardEnd] = {}

    # -- the application side ---------------------------------------------------------------

    def spec(self, type_name: str) -> TypeSpec:
        spec = self.types.get(type_name)
        if spec is None:
            known = ", ".join(sorted(self.types)) or "none"
            raise LocalProtocolError(f"no replicated class for type {type_name!r} (known: {known})")
        return spec

    def my_shard(self, type_name: str, subgroup_index: int) -> ShardRef | None:
        """This member's shard of the subgroup in the current view."""
        for ref in self._refs.values():
            if ref.type_name == type_name and ref.subgroup_index == subgroup_index:
                return ref
        return None

    def shard(self, type_name: str, subgroup_index: int, shard: int) -> ShardRef:
        """A shard of the current view by its stable name; :class:`NotInShard` if none."""
        layout = self.layout
        if layout is None or not layout.adequate:
            raise NotInShard(f"view {self.view.epoch} is inadequate: no shard serves calls")
        for ref in layout.shards:
            if (ref.type_name, ref.subgroup_index, ref.shard) == (type_name, subgroup_index, shard):
                return ref
        raise NotInShard(
            f"view {self.view.epoch} has no shard {shard} of {type_name}[{subgroup_index}]"
        )

    def prepare_call(
        self,
        type_name: str,
        subgroup_index: int,
        method: str,
        *,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timestamp: float,
        own: bool = False,
    ) -> tuple[int, int, bytes]:
        """Check and encode an ordered call: (call id, flattened subgroup id, payload) for the
        driver to multicast. Its replies come as one :class:`CallDone` with that id: every
        replica's, or with ``own`` this member's replica's alone, as soon as it applied the
        call (the other replicas are asked not to reply)."""
        spec = self.spec(type_name).method(method, "ordered")
        ref = self.my_shard(type_name, subgroup_index)
        if ref is None:
            raise NotInShard(
                f"member {self.node_id} is in no shard of {type_name}[{subgroup_index}] in view "
                f"{self.view.epoch}: only a shard's members make ordered calls (ask a member "
                "with a query that orders on your behalf)"
            )
        args_bytes = spec.encode_args(args, kwargs)
        call_id = next(self._ids)
        payload = encoder.encode(
            Call(call_id, method, timestamp, msgspec.Raw(args_bytes), replies=not own)
        )
        self._calls[call_id] = _PendingCall(spec, own)
        return call_id, ref.subgroup, payload

    def cancel_call(self, call_id: int) -> None:
        """The driver could not send the call: forget it."""
        self._calls.pop(call_id, None)

    def prepare_query(
        self,
        type_name: str,
        subgroup_index: int,
        shard: int | None,
        method: str,
        *,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> int:
        """Send a query to one replica: this member when it holds the shard, otherwise the
        shard's member at position ``node_id % len(members)`` (a fixed spread of callers over
        replicas). Its result comes as one :class:`QueryDone`."""
        spec = self.spec(type_name).method(method, "query")
        if shard is None:
            mine = self.my_shard(type_name, subgroup_index)
            if mine is None:
                raise NotInShard(
                    f"member {self.node_id} is in no shard of {type_name}[{subgroup_index}]: "
                    "name the shard to query"
                )
            shard = mine.shard
        ref = self.shard(type_name, subgroup_index, shard)
        members = ref.layout.members
        target = self.node_id if self.node_id in members else members[self.node_id % len(members)]
        args_bytes = spec.encode_args(args, kwargs)
        if len(args_bytes) > MAX_RESULT_BYTES:
            raise LocalProtocolError(
                f"{method}(): {len(args_bytes)} bytes of arguments exceed the query limit "
                f"({MAX_RESULT_BYTES}); make large updates ordered calls"
            )
        query_id = next(self._ids)
        self._queries[query_id] = _PendingQuery(spec, target)
        request = QueryRequest(
            query_id, type_name, subgroup_index, shard, method, msgspec.Raw(args_bytes)
        )
        self._send(target, request)
        return query_id

    def finish_query(
        self,
        src: NodeId,
        query_id: int,
        method: MethodSpec,
        result: Any,
        error: BaseException | None,
    ) -> None:
        """An async query method that :class:`RunQuery` started has returned or raised."""
        outcome = self._outcome(method, result, error)
        self._send(src, QueryReply(query_id, outcome))

    def replica(self, type_name: str, subgroup_index: int = 0, shard: int | None = None) -> Any:
        """This member's instance for the shard (None while its state is on the way)."""
        for (name, index, number), replica in self._replicas.items():
            if name == type_name and index == subgroup_index and shard in (None, number):
                return replica.obj
        return None

    def replicas(self) -> dict[ShardKey, Any]:
        """Every replica this member holds, by shard."""
        return {key: replica.obj for key, replica in self._replicas.items()}

    def holds(self, key: ShardKey) -> bool:
        """Whether this member holds a state of ``key``: its replica's, or one it keeps for
        the shard's newcomers after the layout moved it out."""
        replica = self._replicas.get(key) or self._retired.get(key) or self._outside.get(key)
        return replica is not None and replica.obj is not None

    def restart(
        self, recovered: Mapping[ShardKey, Rebuilt], installed: ViewLayout | None = None
    ) -> None:
        """This member restarts from its logs after the whole group stopped: ``recovered``
        holds, per ``Paxos`` shard, the state it rebuilt (snapshot and log) and the position
        that state reaches; ``installed`` is the layout of the last view it installed (its
        logs' view). Call before the first view.

        Should the group have gone on without it (it joins anew), it asks for only the
        updates after the states it rebuilt, and takes a whole state only from a member that
        no longer keeps those updates (``catch_up_bytes``).

        In each view until they agree, each ``Paxos`` shard's members tell each other how far
        the states they hold reach (:class:`ShardEnd`); once every member of the shard in the
        view has spoken, those behind take the state of the one furthest along (lowest rank on
        a tie) by state transfer and say so. What only a shorter log lacks was never delivered
        anywhere: a Paxos shard delivers a message only once every member has logged it.

        No member applies a delivery to the state until every member of the shard in the view
        said it holds that same state. Until then a later view may choose another (the holder
        left before all had it), which is safe only while nobody answered a call from the
        first: Paxos seed 7644 had a member that received a state and applied calls to it,
        and the others chose again a shorter one once its holder was removed. Once all hold
        it, every later view's members hold it too, and so choose it again.
        """
        assert self.view.epoch < 0, "restart() comes before the first view"
        self._recovered = dict(recovered)
        self._restarting = True
        self._installed = installed

    def saved(self, key: ShardKey, position: Position) -> None:
        """The driver made the snapshot of ``key`` at ``position`` durable (a
        :class:`SaveState` it carried out).

        While a restart compares states, a member says it holds a state it received only
        from then: once every member holds it they apply the calls the view delivered,
        which their logs keep, and should the whole group crash again, a member must
        restart from that snapshot and those calls, not from its own older snapshot with
        the same calls, which would reach the same position with another state."""
        replica = self._replicas.get(key)
        unsaved = replica.unsaved if replica is not None else None
        if replica is None or unsaved is None or unsaved.position != position:
            return
        replica.unsaved = None
        replica.recovered = (unsaved.obj, position)
        replica.recovered_checksum = unsaved.checksum
        if replica.ends is None or replica.my_end is None:
            # The comparison found no holder meanwhile: its holder left, and the members left
            # hold nothing but copies of its state still unsaved, like this one, which said
            # so. Each waits as a holderless shard (``StateWaiting``). This one now holds that
            # state, the furthest, as the others' copies are: it serves it, and they take it
            # from it in the next view (a copy of theirs saved meanwhile serves alike).
            self._release(replica, position, unsaved.checksum)
            return
        if unsaved.start is not None:
            self._release(replica, unsaved.start, unsaved.start_checksum)
        else:
            self._say_end(replica, replica.my_end.epoch)
            self._reconcile(replica)

    def state_digest(self, key: ShardKey) -> tuple[Position, str] | None:
        """The position and digest of this member's replica of ``key`` (None while pending)."""
        replica = self._replicas.get(key)
        if replica is None or replica.obj is None:
            return None
        return _state_position(replica), digest(snapshot(replica.spec, replica.obj))

    def outputs(self) -> list[Output]:
        """What to do and report since the last call, oldest first."""
        self._flush_replies()
        out = self._out
        self._out = []
        return out

    # -- the core's events ------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """One event from the core, in the order the core reported it."""
        if isinstance(event, Delivered):
            if event.mode is not Mode.RAW:
                self._on_delivered(event)
        elif isinstance(event, PeerMessage):
            try:
                message = decode_peer(event.payload)
            except RemoteProtocolError:
                self.stats["malformed_peer_message"] += 1
                return
            self._on_peer(event.src, message)
        elif isinstance(event, ViewInstalled):
            self._on_view(event)
            offers, self._early_offers = self._early_offers, {}
            for (src, _), offer in offers.items():
                self._on_state_offer(src, offer)  # before requests, as they were sent
            early, self._early_requests = self._early_requests, {}
            for (src, _), request in early.items():
                self._on_state_request(src, request)
        elif isinstance(event, Abandoned):
            try:
                call = decode_call(event.payload)
            except RemoteProtocolError:
                return
            if self._calls.pop(call.call_id, None) is not None:
                self._out.append(
                    CallFailed(
                        call.call_id,
                        CallAbandoned(
                            f"call {call.method} was cut by a view change and this member no "
                            f"longer sends in {event.type_name}[{event.subgroup_index}]"
                        ),
                    )
                )

    # -- ordered calls ----------------------------------------------------------------------

    def _on_delivered(self, event: Delivered) -> None:
        ref = self._refs.get(event.subgroup)
        if ref is None:
            self.stats["delivery_outside_shards"] += 1
            return
        replica = self._replicas.get((ref.type_name, ref.subgroup_index, ref.shard))
        if replica is None:
            return  # a type this member has no class for: refused when the view installed
        epoch, count = replica.position
        position = (event.epoch, count + 1 if epoch == event.epoch else 1)
        replica.position = position
        if replica.paxos and self.catch_up_bytes:
            # Kept for members that come back: a few hundred nanoseconds a delivery, and a
            # trim only once a quarter of the budget has come in since the last.
            payload = event.payload
            replica.tail.append(
                CaughtUpdate(
                    event.epoch,
                    position[1],
                    event.sender,
                    event.timestamp,
                    payload if type(payload) is bytes else bytes(payload),
                )
            )
            replica.tail_bytes += len(payload) + KEPT_UPDATE_OVERHEAD
            if replica.tail_bytes > self.catch_up_bytes:
                self._trim(replica)
        call = self._call_of(event.payload, event.timestamp)
        if call is not None and event.sender == self.node_id:
            pending = self._calls.get(call.call_id)
            if pending is not None:
                pending.expected = (self.node_id,) if pending.own else ref.layout.members
        if replica.obj is None:
            replica.buffered.append(_Buffered(position, event.sender, event.timestamp, call))
        elif position <= replica.skip_until:
            self._caught_up(event.sender, call)
        else:
            self._apply(replica, position, event.sender, call)

    def _call_of(self, payload: bytes | memoryview, timestamp: int) -> Call | None:
        """The call a delivery carries (None, counted, if it carries none), with a Paxos
        shard's hybrid logical timestamp: the caller's clock, kept rising in the shard's
        order, and the one the log holds."""
        try:
            call = decode_call(payload)
        except RemoteProtocolError:
            self.stats["malformed_call"] += 1
            return None
        if timestamp:
            call = msgspec.structs.replace(call, timestamp=timestamp / 1_000_000)
        return call

    def _apply(
        self,
        replica: _Replica,
        position: Position,
        sender: NodeId,
        call: Call | None,
        *,
        answered: bool = False,
    ) -> None:
        """Apply one delivery and answer its caller (``answered``: a member that counted it
        before this one did, and no longer applies it, has)."""
        if call is None:
            return  # counted as malformed: nobody waits for a reply to bytes that are no call
        if replica.paxos:
            # The largest, not the last: should a view's first timestamps fall below the
            # view before's (they rise strictly within a view), the frontier stays put.
            replica.applied_timestamp = max(replica.applied_timestamp, call.timestamp)
        spec = replica.spec.methods.get(call.method)
        if spec is None or spec.kind != "ordered":
            if not answered:
                self._reply(
                    sender,
                    call,
                    _error(
                        "UnknownMethod",
                        f"{replica.spec.cls.__qualname__} has no @ordered {call.method!r}",
                    ),
                )
            return
        try:
            arguments = spec.args_decoder.decode(call.args)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            if not answered:
                self._reply(sender, call, _error("InvalidArguments", str(exc)))
            return
        token = ctx.enter(
            ctx.CallContext(sender, self.node_id, replica.key, position, call.timestamp, self.group)
        )
        try:
            method = getattr(replica.obj, call.method)
            if spec.positional:
                result = method(*msgspec.structs.astuple(arguments))
            else:
                result = method(**msgspec.structs.asdict(arguments))
            error: BaseException | None = None
        except Exception as exc:
            result, error = None, exc
        finally:
            ctx.leave(token)
        if not answered:
            self._reply(sender, call, self._outcome(spec, result, error))
        if replica.paxos:
            replica.since_save += 1
            if replica.since_save >= self.snapshot_every:
                self._save(replica, position)

    def _abandon_buffered(self, replica: _Replica) -> None:
        """This member leaves a shard before it held the state to apply what it buffered."""
        self._answer_unapplied(
            replica.buffered,
            _error(
                "LeftShard",
                f"member {self.node_id} left the shard before it held the state to apply "
                "this update (the members that stay applied it)",
            ),
        )
        replica.buffered.clear()

    def _answer_unapplied(self, entries: Sequence[_Buffered], outcome: Outcome) -> int:
        """Deliveries this replica buffered and will never apply: each caller still hears
        from it, with ``outcome`` (it waits for one reply per member of the shard), unless a
        member that counted the delivery before answered it. How many were answered."""
        answered = 0
        for entry in entries:
            if entry.call is not None and not entry.answered:
                self._reply(entry.sender, entry.call, outcome)
                answered += 1
        return answered

    def _caught_up(self, sender: NodeId, call: Call | None) -> None:
        if call is not None:
            self._reply(
                sender,
                call,
                _error(
                    "StateTransferred",
                    "this replica received the update inside transferred state; its return "
                    "value is not known here",
                ),
            )

    def _outcome(self, spec: MethodSpec, result: Any, error: BaseException | None) -> Outcome:
        if error is not None:
            return _error(type(error).__name__, str(error))
        try:
            encoded = encoder.encode(result)
        except (TypeError, msgspec.EncodeError) as exc:
            return _error(
                "UnencodableResult", f"{spec.name} returned {type(result).__name__}: {exc}"
            )
        if len(encoded) > MAX_RESULT_BYTES:
            return _error(
                "ResultTooLarge",
                f"{spec.name} returned {len(encoded)} bytes; replies carry at most "
                f"{MAX_RESULT_BYTES}",
            )
        return Outcome(True, msgspec.Raw(encoded))

    def _reply(self, caller: NodeId, call: Call, outcome: Outcome) -> None:
        if caller == self.node_id:
            self._on_reply(self.node_id, call.call_id, outcome)
        elif call.replies:
            self._replies.setdefault(caller, []).append(Reply(call.call_id, outcome))

    def _flush_replies(self) -> None:
        replies, self._replies = self._replies, {}
        for caller, batch in replies.items():
            # Each outcome fits in a message; a burst of them is split to keep it so.
            start, size = 0, 0
            for i, reply in enumerate(batch):
                size += len(reply.outcome.result) + len(reply.outcome.error) + 64
                if size > MAX_RESULT_BYTES and i > start:
                    self._send(caller, Replies(tuple(batch[start:i])))
                    start, size = i, len(reply.outcome.result) + len(reply.outcome.error) + 64
            self._send(caller, Replies(tuple(batch[start:])))

    def _on_reply(self, src: NodeId, call_id: int, outcome: Outcome | RemoteError) -> None:
        pending = self._calls.get(call_id)
        if pending is None:
            self.stats["stale_reply"] += 1
            return
        # Decoded now: an outcome's bytes may be a view into a frame the transport reuses.
        pending.outcomes[src] = self._result(src, pending.method, outcome)
        self._complete_call(call_id, pending)

    def _complete_call(self, call_id: int, pending: _PendingCall) -> None:
        expected = pending.expected
        if expected is None or any(m not in pending.outcomes for m in expected):
            return
        del self._calls[call_id]
        replies = {m: pending.outcomes[m] for m in expected}
        self._out.append(CallDone(call_id, replies))

    def _result(self, member: NodeId, method: MethodSpec, outcome: Outcome | RemoteError) -> Any:
        if isinstance(outcome, RemoteError):
            return outcome
        if not outcome.ok:
            return RemoteError(member, outcome.error_type, outcome.error)
        try:
            return method.result_decoder.decode(outcome.result)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.stats["undecodable_result"] += 1
            return RemoteError(member, "InvalidResult", str(exc))

    # -- queries ----------------------------------------------------------------------------

    def _on_query(self, src: NodeId, request: QueryRequest) -> None:
        key = (request.type_name, request.subgroup_index, request.shard)
        replica = self._replicas.get(key)
        if replica is None or replica.obj is None:
            why = "holds no replica of" if replica is None else "is still receiving the state of"
            self._send(
                src,
                QueryReply(
                    request.query_id, _error("NotInShard", f"member {self.node_id} {why} {key}")
                ),
            )
            return
        spec = replica.spec.methods.get(request.method)
        if spec is None or spec.kind != "query":
            message = f"{replica.spec.cls.__qualname__} has no @query {request.method!r}"
            self._send(src, QueryReply(request.query_id, _error("UnknownMethod", message)))
            return
        try:
            arguments = spec.args_decoder.decode(request.args)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._send(src, QueryReply(request.query_id, _error("InvalidArguments", str(exc))))
            return
        call = ctx.CallContext(
            src,
            self.node_id,
            key,
            None,
            0.0,
            self.group,
            applied_version=_state_position(replica),
            applied_timestamp=replica.applied_timestamp if replica.paxos else None,
        )
        context = contextvars.copy_context()
        context.run(ctx.enter, call)
        try:
            result = context.run(
                getattr(replica.obj, request.method), **msgspec.structs.asdict(arguments)
            )
        except Exception as exc:
            self._send(src, QueryReply(request.query_id, self._outcome(spec, None, exc)))
            return
        if spec.is_async:
            coroutine: Coroutine[Any, Any, Any] = result
            self._out.append(RunQuery(src, request.query_id, spec, coroutine, context))
        else:
            self._send(src, QueryReply(request.query_id, self._outcome(spec, result, None)))

    def _on_query_reply(self, src: NodeId, reply: QueryReply) -> None:
        pending = self._queries.get(reply.query_id)
        if pending is None or pending.target != src:
            self.stats["stale_reply"] += 1
            return
        del self._queries[reply.query_id]
        self._out.append(
            QueryDone(reply.query_id, self._result(src, pending.method, reply.outcome))
        )

    # -- views ------------------------------------------------------------------------------

    def _on_view(self, event: ViewInstalled) -> None:
        view, layout = event.view, event.layout
        if self.record_digests:
            for replica in self._replicas.values():
                self._record_digest(replica, "view")
        self.view = view
        if self._restarting and self.node_id in view.joined:
            # Restarted from logs, but the group went on without this member: it joined
            # anew, and asks for each state like any joiner, but only for the updates after
            # the one it rebuilt where it rebuilt any.
            self._restarting = False
            self._rejoining = {k: r for k, r in self._recovered.items() if r.last is not None}
            self._rejoined_marks = _cut_marks(self._recovered)
            # A state under a doubt may lack what members it names delivered: not offered.
            self._rejoined_states = {k: r for k, r in self._recovered.items() if not r.doubted}
            self._recovered = {}
        for call_id, pending in list(self._calls.items()):
            if pending.expected is not None:
                for member in pending.expected:
                    if member not in pending.outcomes and member not in view:
                        pending.outcomes[member] = MemberRemoved(member, view.epoch)
                self._complete_call(call_id, pending)
        for query_id, query in list(self._queries.items()):
            if query.target not in view:
                del self._queries[query_id]
                self._out.append(QueryDone(query_id, MemberRemoved(query.target, view.epoch)))
        for read_id in [r for r, (src, _) in self._reads.items() if src not in view]:
            # Its requester was removed: a later incarnation under the same id asks anew.
            del self._reads[read_id]
        for gone in [k for k in self._outgoing if k[0] not in view]:
            del self._outgoing[gone]
        if self._restarting and event.restarted_shards is not None:
            # A state rebuilt from an earlier stint in a shard, which went on without this
            # member, says nothing of what the shard delivered since: it holds none there.
            # Filtered here, in the founded view, even where it cannot run the layout: the
            # comparison then waits for the first view that can.
            current = event.restarted_shards
            self._stale_states = {k: r for k, r in self._recovered.items() if k not in current}
            self._recovered = {k: r for k, r in self._recovered.items() if k in current}
        self._restart_holders = event.restart_holders
        if self._restarting and self._founders is None:
            self._founders = view.members  # the founded view: the first installed here
            self._last_cut = view.epoch - 2
        if not layout.adequate:
            self._refs = {}
            return  # replicas wait, state and all, for a view that can run them
        self._shard_before = view.epoch - 1 if event.previous is None else event.previous.view.epoch
        self.layout = layout
        mine = [ref for ref in layout.shards_of(self.node_id) if ref.layout.mode is not Mode.RAW]
        missing = sorted({ref.type_name for ref in mine} - self.types.keys())
        if missing:
            self._out.append(
                HostFailed(
                    f"the layout places member {self.node_id} in shards of {missing} in view "
                    f"{view.epoch}, but the group was given no class for them"
                )
            )
            return
        self._refs = {ref.subgroup: ref for ref in mine}
        keys = {(ref.type_name, ref.subgroup_index, ref.shard): ref for ref in mine}
        self._retired = {}
        self._histories = {}
        for key in [k for k in self._replicas if k not in keys]:
            replica = self._replicas.pop(key)
            if replica.recovered is not None and not _may_hand_on(replica):
                # Moved out while it waited for a member that may have applied the last cut
                # without it: its state may lack what that cut delivered, and handed to the
                # shard's newcomers it would become the shard's. They wait instead.
                self.stats["unvouched_states_dropped"] += 1
                replica.recovered = None
                named = _awaited(replica)
                self._out.append(
                    StateWaiting(
                        *key,
                        view.epoch,
                        f"member {self.node_id}, moved out of the shard, holds a state of it "
                        f"that may lack the cut of view {self._last_cut}'s cleanup, which "
                        f"members {list(named)} may have applied: it hands it to no newcomer, "
                        "and the shard waits for one of them",
                        named,
                    )
                )
            if replica.obj is None and replica.recovered is not None:
                # Moved out while a restart still compared states. The members that stay
                # compare without it, so it applies nothing (Paxos seed 4531: one applied what
                # it had buffered to its own shorter state, and answered a call with another
                # result). It keeps the state it holds, as it is, for the shard's newcomers,
                # which ask it only when no member that stays can serve them (seed 1098: the
                # shard's every member was new).
                self._abandon_buffered(replica)
                replica.obj, replica.skip_until = replica.recovered
                replica.position = replica.skip_until
                replica.recovered = replica.ends = None
            if replica.obj is not None:
                self._retired[key] = replica
            else:
                history = _history(replica)
                if history is not None:
                    self._histories[key] = history
                self._abandon_buffered(replica)
                # Members it kept waiting for the state it will not hold here: answered as
                # a newcomer that asks now is (they may still ask it, and no other).
                for member in replica.waiting:
                    if member in view:
                        self.stats["kept_requests_answered"] += 1
                        self._answer_moved_out(member, key, view.epoch)
        if self._restarting and self._restart_view is None:
            self._restart_view = RestartView(view.epoch, view.members)
            for member in view.members:
                if member != self.node_id:
                    self._send(member, self._restart_view)
        self._offered = {k: o for k, o in self._offered.items() if o[0] >= view.epoch - 1}
        if self._rejoined_states:
            # Before any request of this member's: a member asked for the state it offers
            # keeps this member's own request until it has the state.
            self._offer_rebuilt(layout, self._rejoined_states)
            self._rejoined_states = {}
        previous = _members_by_key(event.previous)
        for key, ref in keys.items():
            self._plan(key, ref, previous.get(key))
        if self._rejoined_marks:
            self._say_marks(layout, self._rejoined_marks)
        if self._restarting:
            rebuilt = {**self._stale_states, **self._recovered}
            self._keep_outside(rebuilt, keys)
            # The others' comparisons may wait for this member's word on shards it is not
            # in: it was in one in the last view it installed, and its logs of it lack
            # the last cut (typed Paxos seed 18 waited so, for a founder moved out).
            self._say_marks(layout, _cut_marks(rebuilt), skip={*keys, *self._outside})
        for key in [k for k in self._outside if k in keys]:
            del self._outside[key]  # in the shard again: its replica there is what counts
        self._offer_outside()
        self._restarting = False
        self._recovered = {}
        self._stale_states = {}
        self._rejoining = {}
        self._rejoined_marks = {}
        early, self._early_ends = self._early_ends, {}
        for (src, _), end in early.items():
            self._on_shard_end(src, end)  # said in this view before it installed here
        for replica in self._replicas.values():
            if replica.obj is not None:
                self._tell_view(replica)

    def _keep_outside(self, rebuilt: Mapping[ShardKey, Rebuilt], mine: Container[ShardKey]) -> None:
        """Of the states rebuilt at a restart for shards this member is not in, keep those
        whose logs hold the last cut: their shards' members may need one (seed 8829 with a
        member lost at the total crash: member 5 applied view 3's cut of a shard the next
        view moved it out of; the members that stayed had crashed during that cleanup, and
        without 5's state their comparison waited for good)."""
        for key, state in rebuilt.items():
            if key in mine or key[0] not in self.types or state.doubted:
                continue
            if state.cut_epoch < self._last_cut:
                continue
            replica = self._standing(key, state)
            replica.recovered_checksum = self._checksum(replica, state.obj)
            self._outside[key] = replica

    def _say_marks(
        self, layout: ViewLayout, marks: Mapping[ShardKey, int], skip: Container[ShardKey] = ()
    ) -> None:
        """Tell the members of every ``Paxos`` shard but those in ``skip`` which cut this
        member's logs of it hold (``marks``; -1: none), since members still comparing may
        wait for its word on the last cut: once back late from a restart and joined anew
        (beyond-budget seeds 16460, 56737: they waited for a member the founded view had
        removed before it came back, and that joined another shard), and once as a founder,
        for the shards it is not in."""
        for ref in layout.shards:
            key = (ref.type_name, ref.subgroup_index, ref.shard)
            if ref.layout.mode is not Mode.PAXOS or key in skip:
                continue
            word = ShardEnd(*key, self.view.epoch, False, -1, 0, cut_epoch=marks.get(key, -1))
            self._tell_shard(ref, word)

    def _offer_outside(self) -> None:
        """Tell the members of each shard this member keeps an outside state of that it holds
        one with the last cut, in this view (what was said in a view counts only there)."""
        layout = self.layout
        if layout is None:
            return
        for key, replica in self._outside.items():
            ref = next(
                (r for r in layout.shards if (r.type_name, r.subgroup_index, r.shard) == key),
                None,
            )
            if ref is None:
                continue
            end = ShardEnd(
                *key,
                self.view.epoch,
                True,
                *replica.position,
                False,
                replica.recovered_checksum,
                True,
            )
            self._tell_shard(ref, end)

    def _offer_rebuilt(self, layout: ViewLayout, states: Mapping[ShardKey, Rebuilt]) -> None:
        """Back while the group runs: tell each ``Paxos`` shard's members how far the state
        this member's logs rebuilt of it reaches. A shard whose every holder failed waits
        for one to come back (promise 19); its members take this state where it meets the
        deliveries they hold (:meth:`_on_state_offer`), whether or not the layout places
        this member in the shard again."""
        for ref in layout.shards:
            key = (ref.type_name, ref.subgroup_index, ref.shard)
            state = states.get(key)
            if ref.layout.mode is not Mode.PAXOS or state is None or key[0] not in self.types:
                continue
            sender, timestamp = state.last if state.last is not None else (-1, 0)
            offer = StateOffer(
                *key, self.view.epoch, *state.position, sender, timestamp, state.cut_epoch
            )
            self._offered[key] = (self.view.epoch, self._standing(key, state), offer)
            self._tell_shard(ref, offer)

    def _standing(self, key: ShardKey, state: Rebuilt) -> _Replica:
        """A replica of ``key`` standing at the state ``state`` rebuilt, held for others:
        kept outside the shard (:meth:`_keep_outside`) or offered (:meth:`_offer_rebuilt`)."""
        replica = _Replica(key, self.types[key[0]], state.obj, paxos=True)
        replica.position = replica.skip_until = state.position
        replica.saved_bytes = state.state_bytes
        return replica

    def _tell_shard(self, ref: ShardRef, message: PeerPayload) -> None:
        """Send ``message`` to each of the shard's members but this one."""
        for member in ref.layout.members:
            if member != self.node_id:
                self._send(member, message)

    def _on_state_offer(self, src: NodeId, offer: StateOffer) -> None:
        """A member back from its logs offers a state: kept by a member of the shard that
        holds none, and taken once no old member it asks holds one (:meth:`_take_offer`)."""
        key = (offer.type_name, offer.subgroup_index, offer.shard)
        if offer.epoch > self.view.epoch:
            self._early_offers[(src, key)] = offer
            return
        replica = self._replicas.get(key)
        if (
            replica is None
            or offer.epoch < self.view.epoch - 1  # the offerer serves it through the next
            or replica.obj is not None
            or not replica.paxos
            or replica.ends is not None
            or replica.history_from < 0
        ):
            return  # it holds the state, or compares states after a restart
        replica.offers[src] = offer
        if replica.asking is None and replica.incoming is None:
            self._take_offer(replica)

    def _take_offer(self, replica: _Replica) -> bool:
        """Ask for an offered state that meets the deliveries this member holds
        (:func:`_meets_history`), the lowest id's first; whether one was."""
        for src in sorted(replica.offers):
            offer = replica.offers.pop(src)
            if src not in self.view:
                continue
            if not _meets_history(replica, src, offer):
                self.stats["offers_refused"] += 1
                continue
            self.stats["offers_taken"] += 1
            replica.candidates, replica.asked = [src], {src}
            replica.asking, replica.asking_offered = src, True
            replica.asked_in = self.view.epoch
            self._send(src, StateRequest(*replica.key, self.view.epoch, offered=True))
            return True
        return False

    def _plan(self, key: ShardKey, ref: ShardRef, before: tuple[NodeId, ...] | None) -> None:
        members = ref.layout.members
        paxos = ref.layout.mode is Mode.PAXOS
        replica = self._replicas.get(key)
        if replica is not None and replica.ends is not None:
            self._compare_again(replica, ref, before)
            return
        if self._restarting and paxos and replica is None and before is None:
            replica = self._replicas[key] = _Replica(key, self.types[key[0]], None, paxos=True)
            rebuilt = self._recovered.pop(key, None)
            if rebuilt is not None:
                replica.recovered = (rebuilt.obj, rebuilt.position)
                replica.saved_bytes = rebuilt.state_bytes
                replica.recovered_checksum = self._checksum(replica, rebuilt.obj)
                replica.my_doubts = rebuilt.doubted
                replica.holds_last_cut = not rebuilt.doubted and (
                    rebuilt.cut_epoch >= self._last_cut or rebuilt.position[0] > self._last_cut
                )
            installed = self._installed
            if (
                not replica.holds_last_cut
                and installed is not None
                and installed.view.epoch >= self._last_cut
            ):
                # The shard's members in the last view installed here, which the founded
                # view's layout may no longer place in it: one of them may have applied the
                # last cut and been moved out in the next view. The others may not know them
                # (they installed that next view), so this member says them as its doubt.
                # Such a member survived that view change, so the founded view names it;
                # one it does not name failed in it, and applied no cut of it.
                founders = self._founders or ()
                known = [m for m in _members_by_key(installed).get(key, ()) if m in founders]
                replica.my_doubts = tuple(sorted({*replica.my_doubts, *known}))
            holders = self._restart_holders
            replica.reconcilers = tuple(m for m in members if m in holders) if holders else members
            replica.doubted = tuple(sorted({*replica.reconcilers, *replica.my_doubts}))
            if (rebuilt is not None and not replica.holds_last_cut) or key in self._stale_states:
                # Marks of later cuts over this state (or over an earlier stint's, which the
                # logs still hold) must not make it look whole should the group crash again
                # before the comparison settles.
                replica.doubt_saved = True
                self._out.append(SaveDoubt(key, replica.doubted))
            self._compare_again(replica, ref, None)
            return
        if paxos and replica is None and before is None and self._restart_holders:
            # The first view able to run the layout since a restart founded a view that could
            # not: the founders compare their states here, and this member, which joined
            # since, takes the one they agree on.
            replica = self._replicas[key] = _Replica(key, self.types[key[0]], None, paxos=True)
            replica.history_from, replica.shard_before = self.view.epoch, self._shard_before
            holders = self._restart_holders
            replica.candidates = [m for m in members if m in holders]
            if replica.candidates:
                self._ask(replica)
            else:
                self._start_fresh(replica, lost=True)  # it waits for a holder
            return
        # Who held the shard and is still here: those still in it first, then those the layout
        # moved out (their replica waits for the newcomers, frozen at the cut), rank order.
        held = [m for m in self.view.members if before is not None and m in before]
        old = [m for m in held if m in members and m != self.node_id]
        old += [m for m in held if m not in members]
        if replica is None:
            replica = self._replicas[key] = _Replica(key, self.types[key[0]], None, paxos=paxos)
            replica.history_from, replica.shard_before = self.view.epoch, self._shard_before
            if (
                paxos
                and before is not None
                and not any(m in self.view and m not in self.view.joined for m in before)
            ):
                # None of them reached this view, or only as a new process back from its logs:
                # it holds no state to send, and offers the one its logs rebuilt (a lone
                # holder that failed and came back while the views between could not run the
                # layout: slow-link seeds 106 and 207, where the shard waited for good beside
                # it).
                replica.orphaned_by = before
            if before is None or not old:
                self._start_fresh(replica, lost=before is not None)
            else:
                replica.held = self._rejoining.pop(key, None) if paxos else None
                replica.candidates = old
                self._ask(replica)
        elif replica.obj is None:
            if replica.asking is not None and replica.asking not in self.view:
                replica.asking, replica.incoming = None, None
            replica.candidates = old
            replica.asked = {replica.asking} if replica.asking is not None else set()
            replica.holder_unsent = False
            if not old:
                self._start_fresh(replica, lost=True)
            elif replica.asking is None:
                self._ask(replica)
        replica.cut = None  # a cut serves the view it was taken in, no later one
        newcomers = {m for m in members if before is not None and m not in before}
        if (
            replica.obj is not None
            and newcomers
            and before is not None
            and [m for m in members if m in before][:1] == [self.node_id]
        ):
            data = self._snapshot(replica, replica.obj)
            if data is not None:
                replica.cut = _Cut(self.view.epoch, data, newcomers)

    def _start_fresh(self, replica: _Replica, *, lost: bool) -> None:
        """No old member survives: the shard starts from the constructor at this view's start,
        as every member of the shard decides alike from the same two layouts.

        Not a ``Paxos`` shard that existed: its updates are durable in the logs of members
        that are gone for now, and starting over would drop them. It waits for one of those
        members to come back (a restart from logs)."""
        if lost and replica.paxos:
            replica.candidates = []
            self._wait_for_holder(
                replica,
                "no member that holds this Paxos shard's state is in the view; it waits for "
                "one to restart from its logs rather than start over and drop durable updates",
            )
            return
        try:
            replica.obj = replica.spec.cls()
        except Exception as exc:
            self._out.append(HostFailed(f"{replica.spec.cls.__qualname__}() raised {exc!r}"))
            return
        epoch = self.view.epoch
        replica.skip_until = (epoch, 0)
        later = [b for b in replica.buffered if b.position[0] >= epoch]
        dropped = [b for b in replica.buffered if b.position[0] < epoch]
        replica.buffered = []
        replica.lost = lost
        if lost:
            self._out.append(StateLost(*replica.key, epoch))
        # Delivered in an earlier view while this member waited for the state that is now
        # lost: the shard starts over without them, and their callers hear why (they used to
        # hear nothing, and hung, where the member's request outlived that view: a slow
        # link's crossings).
        self.stats["lost_updates_answered"] += self._answer_unapplied(
            dropped,
            _error(
                "StateLost",
                f"the shard's state was lost before member {self.node_id} could apply this "
                f"update; the shard starts over in view {epoch} without it",
            ),
        )
        if replica.paxos:
            self._save(replica, (epoch, 0))
        for entry in later:
            self._apply(replica, entry.position, entry.sender, entry.call, answered=entry.answered)
        self._serve_waiting(replica)

    def _wait_for_holder(self, replica: _Replica, reason: str) -> None:
        """No member this one may ask holds the ``Paxos`` shard's state: it takes one offered
        by a member back from its logs where one meets its history (its own first), else
        waits (a holder may still come back) and says why."""
        if not (self._take_own(replica) or self._take_offer(replica)):
            self._out.append(StateWaiting(*replica.key, self.view.epoch, reason))

    def _take_own(self, replica: _Replica) -> bool:
        """Back from its logs, this member waits in a shard whose state it offered: it takes
        its own state where that meets the history a member moved out handed it (the layout
        gave this member its old place, and moved out the one that waited there). Without
        such a history its own began as it came back, and its state, from before, meets none
        the offers' rules allow; whether it did."""
        own = self._offered.get(replica.key)
        if own is None or not replica.handed_history:
            return False
        _, standing, offer = own
        if not _meets_history(replica, self.node_id, offer):
            self.stats["offers_refused"] += 1
            return False
        self.stats["own_state_taken"] += 1
        del self._offered[replica.key]  # what it holds now is the shard's
        if replica.held is not None:
            latest = replica.held.latest_timestamp / 1_000_000
            replica.applied_timestamp = max(replica.applied_timestamp, latest)
        replica.held = None
        replica.obj, replica.skip_until = standing.obj, standing.skip_until
        # In no log of this stint's (its directory was discarded as it came back).
        self._save(replica, standing.skip_until)
        self._out.append(
            StateReceived(*replica.key, self.node_id, 0, standing.skip_until, lost=False)
        )
        self._release_buffered(replica, standing.skip_until)
        self._tell_view(replica)
        self._serve_waiting(replica)
        return True

    def _snapshot(self, replica: _Replica, obj: Any) -> bytes | None:
        """``obj``'s snapshot, or None (reported as user code failing) if its class's
        snapshot raised: the caller does without, and the member goes on."""
        try:
            return snapshot(replica.spec, obj)
        except Exception as exc:
            self._user_failed(f"{replica.spec.cls.__qualname__}.snapshot", exc)
            return None

    def _checksum(self, replica: _Replica, obj: Any) -> int:
        """The CRC32C of ``obj``'s snapshot (0 if the class's snapshot raised)."""
        data = self._snapshot(replica, obj)
        return 0 if data is None else crc32c.crc32c(data)

    def _save(self, replica: _Replica, position: Position, data: bytes | None = None) -> None:
        """Have the driver write a Paxos replica's state as its shard's snapshot."""
        replica.since_save = 0
        if data is None:
            data = self._snapshot(replica, replica.obj)
            if data is None:
                return
        replica.saved_bytes = len(data)
        self._out.append(SaveState(replica.key, position, data, self.view.epoch))

    # -- restart from logs ------------------------------------------------------------------

    def _compare_again(
        self, replica: _Replica, ref: ShardRef, before: tuple[NodeId, ...] | None
    ) -> None:
        """A view in which a restart's comparison of states is not over: what was said in
        the view before no longer counts. Each member says afresh what it holds now, so that
        a state received from a member since removed counts as much as the holder did, and
        a transfer of the view before is dropped (its source may no longer be the one the
        members choose).

        The members that compared in the view before (``before``) and that the layout moved
        out of the shard keep what they hold for the shard's newcomers: should no member
        that stays hold a state, they are asked, in rank order, as the newcomers ask them
        (Paxos seed 24068 with a member lost at the total crash: the one member left that
        held the shard moved out as the comparison waited for a lost member, and the one
        that stayed, whose state had come by a transfer not yet on disk, waited for good)."""
        view = self.view
        assert self.node_id in replica.reconcilers and self.node_id not in view.joined
        members = ref.layout.members
        replica.reconcilers = tuple(
            m for m in replica.reconcilers if m in view and m not in view.joined and m in members
        )
        replica.candidates = [
            m for m in view.members if before is not None and m in before and m not in members
        ]
        replica.ends = {}
        replica.outside = {}
        replica.heard_ends = set()
        replica.asking = replica.incoming = None
        self._say_end(replica, view.epoch)
        self._reconcile(replica)

    def _say_end(self, replica: _Replica, epoch: int) -> None:
        """Tell the other members comparing what this one holds now (:func:`_end_of`)."""
        end = replica.my_end = _end_of(replica, epoch)
        for member in replica.reconcilers:
            if member != self.node_id:
                self._send(member, end)

    def _on_restart_view(self, src: NodeId, theirs: RestartView) -> None:
        """Another member restarted from logs too: both must have founded the same view. A
        member whose logs end in an older view than another's missed a view that the group
        installed; it stops (its driver leaves) rather than run a second history."""
        mine = self._restart_view
        if mine is None:
            return
        if src not in self._heard_restart:
            self._heard_restart.add(src)
            self._send(src, mine)
        if theirs.epoch > mine.epoch or (theirs.epoch == mine.epoch and theirs != mine):
            self._out.append(
                HostFailed(
                    f"member {self.node_id} restarted from its logs into view {mine.epoch} "
                    f"{list(mine.members)}, but member {src} restarted into view "
                    f"{theirs.epoch} {list(theirs.members)}: this member's logs missed a view "
                    "the group installed; move its data_dir away and join the group anew"
                )
            )

    def _on_shard_end(self, src: NodeId, end: ShardEnd) -> None:
        key = (end.type_name, end.subgroup_index, end.shard)
        replica = self._replicas.get(key)
        if end.epoch > self.view.epoch:
            self._early_ends[(src, key)] = end  # the latest per member: it supersedes
            return
        if end.released and replica is None and self._outside.pop(key, None) is not None:
            # The answer to an outside offer: the shard's members settled and serve its
            # state, so this member stops offering its own.
            return
        if replica is None or end.epoch < self.view.epoch or replica.my_end is None:
            self.stats["stale_shard_end"] += 1
            return
        if replica.ends is None:
            if replica.released_at is not None and not end.released:
                # The comparison is over here; the member still comparing hears where this
                # one started applying deliveries, which every member of the shard holds.
                self._send(
                    src,
                    ShardEnd(
                        *key,
                        end.epoch,
                        True,
                        *replica.released_at,
                        True,
                        replica.released_checksum,
                    ),
                )
            return
        if src not in replica.reconcilers and replica.my_end.epoch == end.epoch:
            if end.held and end.holds_last_cut:
                replica.outside[src] = end  # a state outside the shard, offered
                self._reconcile(replica)
                return
            if -1 <= end.cut_epoch < self._last_cut:
                replica.lacks_cut.add(src)  # back late, and its logs lack the last cut
                self._reconcile(replica)
                return
        if replica.my_end.epoch != end.epoch or src not in replica.reconcilers:
            self.stats["stale_shard_end"] += 1
            return
        if src not in replica.heard_ends:
            replica.heard_ends.add(src)
            self._send(src, replica.my_end)
        replica.ends[src] = end
        self._reconcile(replica)

    def _reconcile(self, replica: _Replica) -> None:
        """Once every member comparing has said what it holds in this view: take the
        furthest state from its holder, or, holding it, start applying deliveries once every
        member says it holds it too."""
        assert replica.ends is not None and replica.my_end is not None
        type_name, subgroup_index, shard = replica.key
        ref = self.my_shard(type_name, subgroup_index)
        if ref is None or ref.shard != shard:
            return  # no longer this member's shard: the view change dropped the replica
        ends = dict(replica.ends)
        ends[self.node_id] = replica.my_end
        for member, end in ends.items():
            # What a member says of the last cut stays true (its log can no longer gain that
            # mark), though it may leave the shard before every member has spoken.
            if not end.holds_last_cut:
                replica.lacks_cut.add(member)
            elif end.held and member != self.node_id:
                replica.said_held[member] = end
            doubted = tuple(sorted({*replica.doubted, *end.doubted}))
            if doubted != replica.doubted:
                replica.doubted = doubted
                if replica.doubt_saved:
                    # Another member's doubt names members this one's did not: on disk too,
                    # or a second total crash could leave it the doubt that forgets them.
                    self._out.append(SaveDoubt(replica.key, doubted))
        members = replica.reconcilers
        if any(m not in ends for m in members):
            return
        mine = _end_position(replica.my_end) if replica.my_end.held else None
        checksum = replica.my_end.checksum
        released = [m for m in members if ends[m].released]
        if released:
            # One member applies deliveries already: every member here holds the state it
            # started from, since it waited for each to say so, unless its own is another
            # at the same position (then, or where the checksum is not known, it takes the
            # state of a member that applies).
            start, started = _end_position(ends[released[0]]), ends[released[0]].checksum
            if mine == start and started and checksum == started:
                self._release(replica, start, started)
            elif replica.asking is None and replica.unsaved is None:
                replica.candidates, replica.asked = released, set()
                self._ask(replica)
            return
        held = [
            (_end_position(ends[m]), -rank, m) for rank, m in enumerate(members) if ends[m].held
        ]
        if not held:
            replica.ends = None  # nobody here to take it from
            if replica.candidates:
                # Those that compared before and moved out: asked as newcomers ask them, or
                # it waits like any holderless shard (_ask).
                replica.asked = set()
                self._ask(replica)
                return
            self._out.append(
                StateWaiting(
                    *replica.key,
                    self.view.epoch,
                    f"no member of the shard in view {self.view.epoch} recovered its state "
                    "from logs; it waits for one that holds it",
                )
            )
            return
        # The furthest state, and of two at that position (one rebuilt with a hole, see
        # ShardEnd.checksum) the lowest-ranked member's that could be snapshotted: all take
        # that one. Neither was ever applied to (nobody applies before all hold one state),
        # so either loses nothing anyone saw; each keeping its own would split the replicas.
        if not self._left_out_may_decide(replica, ends, held):
            return
        furthest, _, _, chosen = max((p, ends[m].checksum != 0, r, m) for p, r, m in held)
        canonical = ends[chosen].checksum
        if mine == furthest and checksum == canonical:
            if all(
                ends[m].held
                and _end_position(ends[m]) == furthest
                and ends[m].checksum == canonical
                for m in members
            ):
                self._release(replica, furthest, canonical)
            return
        if replica.asking is None and replica.unsaved is None:
            # The own state stays until the furthest one arrives: should its holders leave
            # first, the next view compares with it.
            replica.candidates = [
                m
                for p, _, m in sorted(held, reverse=True)
                if p == furthest and ends[m].checksum == canonical
            ]
            replica.asked = set()
            self._ask(replica)

    def _left_out_may_decide(
        self,
        replica: _Replica,
        ends: Mapping[NodeId, ShardEnd],
        held: list[tuple[Position, int, NodeId]],
    ) -> bool:
        """Whether the states held may decide the shard, as far as the last cleanup before
        the crash goes: yes if one holds that cleanup's cut, or if every member of the shard
        in the founded view said its log lacks it (then none applied it: a member applies a
        ``Paxos`` cut only once every member it counts on logged it and the mark that says
        so). Otherwise a member missing here may have applied it after the change's leader
        excluded those that are here (they crashed during the cleanup): their states may
        lack updates it delivered, so the shard waits for it (seed 1233 with two members lost
        for good: member 1 alone applied the cut of view 0, then was lost; 0 and 2, excluded,
        restarted one update short, and the update 1 had applied was gone)."""
        holding = [position for position, _, m in held if ends[m].holds_last_cut]
        if holding:
            least = min(holding)
            if replica.cut_held_at is None or least < replica.cut_held_at:
                replica.cut_held_at = least
            return True
        offers = {**replica.said_held, **replica.outside}
        offered = [
            (_end_position(end), -rank, m)
            for rank, (m, end) in enumerate(sorted(offers.items()))
            if m in self.view
        ]
        if offered:
            # A member outside the shard holds the cut: take its state, unless the own one
            # reaches as far, which then holds the cut too.
            position, _, source = max(offered)
            replica.cut_held_at = position
            mine = replica.recovered
            if (
                mine is not None
                and replica.unsaved is None
                and (
                    mine[1] > position
                    or (
                        mine[1] == position
                        and replica.recovered_checksum == offers[source].checksum
                    )
                )
            ):
                self._say_end(replica, self.view.epoch)  # it now says it holds the cut
                assert replica.my_end is not None and replica.my_end.holds_last_cut
                return True
            if replica.asking is None and replica.unsaved is None:
                replica.candidates = [m for _, _, m in sorted(offered, reverse=True)]
                replica.asked = set()
                self._ask(replica)
            return False
        missing = list(_awaited(replica))
        if not missing:
            return True
        if replica.waiting_said != self.view.epoch:
            replica.waiting_said = self.view.epoch
            self._out.append(
                StateWaiting(
                    *replica.key,
                    self.view.epoch,
                    f"the logs here lack the cut of view {self._last_cut}'s cleanup, which "
                    f"members {missing} may have applied without them: it waits for one of "
                    "those members (or one whose log holds the cut) rather than go on "
                    "without the updates that cut delivered",
                    tuple(missing),
                )
            )
        return False

    def _release(self, replica: _Replica, start: Position, checksum: int) -> None:
        """The comparison is over, all holding the state at ``start`` (whose CRC32C is
        ``checksum``): apply what was buffered to the state held (``start``'s, or one taken
        since from a member that applied more), and serve it."""
        assert replica.recovered is not None and replica.recovered[1] >= start
        obj, position = replica.recovered
        replica.recovered = replica.ends = None
        if replica.doubt_saved:
            replica.doubt_saved = False
            self._out.append(SaveDoubt(replica.key, ()))
        replica.released_at = start
        replica.released_checksum = checksum
        replica.obj = obj
        replica.skip_until = position
        self._release_buffered(replica, position)
        self._tell_view(replica)
        self._serve_waiting(replica)

    def _release_buffered(self, replica: _Replica, position: Position) -> None:
        """The replica now holds a state at ``position``: the deliveries it buffered while it
        waited are either inside that state (their callers hear so) or applied after it."""
        buffered, replica.buffered = replica.buffered, []
        for entry in buffered:
            if entry.position <= position:
                if not entry.answered:
                    self._caught_up(entry.sender, entry.call)
            else:
                self._apply(
                    replica, entry.position, entry.sender, entry.call, answered=entry.answered
                )
        if any(entry.answered and entry.position > position for entry in buffered):
            # Handed on by a member moved out: in no log of this member's, so in its state
            # on disk before it counts as held here.
            self._save(replica, replica.position)

    def _tell_view(self, replica: _Replica) -> None:
        on_view = getattr(replica.obj, "on_view", None)
        if callable(on_view):
            try:
                on_view(self.view)
            except Exception as exc:
                self._user_failed(f"{replica.spec.cls.__qualname__}.on_view", exc)

    def _user_failed(self, where: str, exc: BaseException) -> None:
        self.stats["user_code_failed"] += 1
        self._out.append(UserCodeFailed(where, f"{type(exc).__name__}: {exc}"))

    # -- state transfer ---------------------------------------------------------------------

    def _ask(self, replica: _Replica) -> None:
        replica.asking_offered = False
        for candidate in replica.candidates:
            if candidate not in replica.asked and candidate in self.view:
                replica.asking = candidate
                replica.asked.add(candidate)
                self._request(replica)
                return
        replica.asking = None
        if not (replica.paxos or replica.rejected or replica.holder_unsent):
            # Every member asked holds nothing: the shard's holders all left before any of
            # them had its state (typed seed 7796: the one holder of a shard whose other
            # members were all new failed before its transfer). The state is lost, and
            # waiting would hold every caller for good. Each member of the shard that has no
            # state comes here in this view, and all start alike from the constructor at its
            # start; one that comes to the next view instead asks those, which now hold it.
            self._start_fresh(replica, lost=True)
            return
        if replica.paxos and not replica.rejected:
            self._wait_for_holder(
                replica,
                "no member asked holds this Paxos shard's state; it waits for one that does "
                "(a restart from logs) rather than start over",
            )
            return
        if replica.rejected:
            # Every old member sent a state this member cannot install: it cannot serve the
            # shard, and waiting would hold every caller's replies. Its driver leaves.
            self._out.append(
                HostFailed(
                    f"no state of {replica.key} could be installed: " + "; ".join(replica.rejected)
                )
            )
        # Otherwise a member asked holds the state but could not send it: the next view asks
        # again.

    def _request(self, replica: _Replica) -> None:
        """Ask ``replica.asking`` for the state in this view (for only the updates after the
        state this member rebuilt, where it rebuilt one)."""
        assert replica.asking is not None
        held = replica.held
        request = (
            StateRequest(*replica.key, self.view.epoch)
            if held is None or held.last is None
            else StateRequest(*replica.key, self.view.epoch, *held.position, *held.last)
        )
        replica.asked_in = self.view.epoch
        self._send(replica.asking, request)

    def log_read(self, read_id: int, records: Sequence[LoggedUpdate] | None) -> None:
        """The driver read a shard's log for the :class:`ReadLog` ``read_id``: ``records``
        are the log's from the update at its ``after`` on, oldest first (None: the log does
        not hold that update, or the read failed or passed its limit). The request it was
        read for is answered now, with the updates where the log and the updates kept in
        memory since reach from the requester's state to this replica's, else the state."""
        pending = self._reads.pop(read_id, None)
        if pending is None:
            return
        src, request = pending
        if src in self.view:
            self._on_state_request(src, request, () if records is None else records)

    def _on_state_request(
        self, src: NodeId, request: StateRequest, logged: Sequence[LoggedUpdate] | None = None
    ) -> None:
        if request.epoch > self.view.epoch:
            # The requester installed a view that this member has not: it may still deliver
            # messages of the old one, which a state sent now would lack. Answer once there.
            key = (request.type_name, request.subgroup_index, request.shard)
            self._early_requests[(src, key)] = request
            return
        key = (request.type_name, request.subgroup_index, request.shard)
        replica = self._replicas.get(key) or self._retired.get(key) or self._outside.get(key)
        offered = self._offered.get(key)
        if request.offered and (replica is None or replica.obj is None):
            # The state this member offered, which the requester found meets its history.
            if offered is None:
                self._send(src, _not_held(key, request))
            else:
                self.stats["offered_states_sent"] += 1
                self._send_state(offered[1], src, request.epoch)
        elif replica is None and key in self._histories:
            self._answer_moved_out(src, key, request.epoch)
        elif replica is None:
            self._send(src, _not_held(key, request))
        elif replica.obj is None:
            if replica.ends is not None and replica.recovered is not None:
                if src in replica.reconcilers:
                    self._send_state(replica, src, request.epoch)  # chosen in the comparison
                elif src not in replica.waiting:
                    replica.waiting.append(src)  # a newcomer: served the state agreed on
            elif replica.paxos and replica.asking is None and replica.ends is None:
                # It waits for a holder itself, with nobody left to ask: the asker should
                # know it waits too, rather than wait on a member that cannot answer.
                self._send(src, _not_held(key, request))
            elif replica.asking == src and replica.asking_offered:
                # The member whose offered state this one takes: served once it has it.
                if src not in replica.waiting:
                    replica.waiting.append(src)
            elif (
                replica.asking == src and replica.ends is None and request.epoch == self.view.epoch
            ):
                # The member this one asks asks it in turn: neither holds the state (a member
                # asks only while it has none), and each waiting for the other would hold both
                # for good (Paxos seed 9511: the two members left of a shard whose every
                # holder failed before either had its state). It says so and asks on; the
                # other does the same when this one's request reaches it. Not a request of
                # an earlier view, which says nothing of what its sender holds now: the
                # holder this member had just asked once sent it one as a joiner, and it
                # reached this member's next incarnation three views later (stay-down seed
                # 46442 beyond the fault budget), which then gave up asking and waited.
                # Kept from an earlier view (below), its older request is answered by this.
                self._send(src, _not_held(key, request))
                if src in replica.waiting:
                    replica.waiting.remove(src)
                self._ask(replica)
            else:
                if (
                    replica.asking == src
                    and replica.ends is None
                    and replica.asked_in < self.view.epoch
                ):
                    # The two asked each other before this view, and each request reached a
                    # member that had installed it: kept by both, they would hold both for
                    # good. Asked again in this view, each learns in it that the other
                    # holds nothing (the rule above), as when the requests do not cross.
                    self.stats["state_asked_again"] += 1
                    self._request(replica)
                if src not in replica.waiting:
                    replica.waiting.append(src)
        else:
            self._send_state(replica, src, request.epoch, request, logged)

    def _answer_moved_out(self, dst: NodeId, key: ShardKey, epoch: int) -> None:
        """Moved out of the shard in this view while it waited: answer ``dst``'s request (of
        view ``epoch``) with the history it counted there, or that it holds nothing."""
        history = self._histories.get(key)
        if history is None:
            self._send(dst, StateHeader(*key, StateStatus.NOT_HELD, epoch))
            return
        self.stats["histories_sent"] += 1
        history_from, shard_before, orphaned_by, updates = history
        self._send(dst, StateHistory(*key, epoch, history_from, shard_before, orphaned_by, updates))

    def _send_state(
        self,
        replica: _Replica,
        dst: NodeId,
        epoch: int,
        request: StateRequest | None = None,
        logged: Sequence[LoggedUpdate] | None = None,
    ) -> None:
        """Send ``dst`` the shard's state: only the updates after the state its ``request``
        says it holds where this member keeps them (with the checksum of the state they lead
        to), else the snapshot taken at view ``epoch``'s cut, else the current state. Where
        memory no longer reaches back to that state, the log is read first (``logged``: what
        the read gave)."""
        cut = replica.cut
        updates = self._updates_after(replica, request, logged) if request is not None else None
        if isinstance(updates, ReadLog):
            assert request is not None
            self._reads[updates.read_id] = (dst, request)
            self.stats["catch_up_log_reads"] += 1
            self._out.append(updates)
            return
        from_cut = (
            cut is not None and dst in cut.waiting and (updates is not None or cut.epoch == epoch)
        )
        if cut is not None and from_cut:
            # Served, by the cut or by the updates after the state it holds.
            cut.waiting.discard(dst)
            if not cut.waiting:
                replica.cut = None
        checksum, state_digest = 0, ""
        if cut is not None and from_cut and updates is None:
            # Taken as view ``epoch`` installed: before that view's first delivery.
            data, position = cut.data, (epoch, 0)
        else:
            obj, position = (
                (replica.obj, _state_position(replica))
                if replica.recovered is None
                else replica.recovered
            )
            snapped = self._snapshot(replica, obj)
            if snapped is None:
                self._send(dst, StateHeader(*replica.key, StateStatus.UNSENT))
                return
            data = snapped
            encoded = b"" if updates is None else encoder.encode(updates)
            if updates is not None and logged is not None and len(encoded) >= len(data):
                # Read back from the log, the updates would cost more to send and to apply
                # than the state they lead to: the state, the cut's where it serves this view.
                self.stats["catch_up_log_larger"] += 1
                updates = None
                if cut is not None and from_cut and cut.epoch == epoch:
                    data, position = cut.data, (epoch, 0)
            if updates is not None:
                checksum = crc32c.crc32c(data)
                state_digest = digest(data) if self.record_digests else ""
                data = encoded
                self.stats["catch_up_sent"] += 1
                if logged is not None:
                    self.stats["catch_up_from_log"] += 1
        header = StateHeader(
            *replica.key,
            StateStatus.SENDING,
            position[0],
            position[1],
            len(data),
            replica.lost,
            updates is not None,
            checksum,
        )
        self._send(dst, header)
        transfer = _Outgoing(
            dst, replica.key, memoryview(data), position, state_digest=state_digest
        )
        if header.size == 0:
            self._record_sent(transfer)
            return
        self._outgoing[(dst, replica.key)] = transfer
        self._pump(transfer)

    def _updates_after(
        self,
        replica: _Replica,
        request: StateRequest,
        logged: Sequence[LoggedUpdate] | None = None,
    ) -> list[CaughtUpdate] | ReadLog | None:
        """The updates after the state ``request`` says its member holds, up to this
        replica's position, if this member keeps them all (in memory, or in its log and
        memory: ``logged``) and its own history holds the update the requester's state ends
        with at that position (None: send the state; a :class:`ReadLog`: memory does not reach
        back that far, read the log first)."""
        have = (request.have_epoch, request.have_count)
        if have[0] < 0 or not replica.paxos or replica.obj is None or replica.recovered is not None:
            return None
        if logged is not None:
            history = _log_and_tail(replica, logged)
        elif replica.skip_until > replica.position:
            # The state came whole (received, or kept in a restart) after the last delivery
            # counted: memory holds nothing that leads to it, the log may.
            history = []
        else:
            history = replica.tail
        at = bisect.bisect_left(history, have, key=_update_position)
        if at == len(history) or _update_position(history[at]) != have:
            if (
                logged is None
                and self.reads_logs
                and (not history or have < _update_position(history[0]))
            ):
                # Past twice the last snapshot's size (the state may have grown since), the
                # updates would cost more than the state; the default budget of memory is the
                # floor (a replica a restart rebuilt has not snapshotted).
                limit = max(2 * replica.saved_bytes, DEFAULT_CATCH_UP_BYTES)
                return ReadLog(next(self._ids), replica.key, have, limit)
            self.stats["catch_up_not_kept"] += 1
            return None
        found = history[at]
        if (found.sender, found.timestamp) != (request.have_sender, request.have_timestamp):
            # Not this history's update at that position: the requester's logs hold another.
            self.stats["catch_up_mismatch"] += 1
            return None
        assert _update_position(history[-1]) == _state_position(replica), "they end at it"
        return history[at + 1 :]

    def _trim(self, replica: _Replica) -> None:
        """Drop the oldest kept updates, down to three quarters of the budget."""
        tail = replica.tail
        keep = self.catch_up_bytes * 3 // 4
        dropped = 0
        while replica.tail_bytes > keep and dropped < len(tail):
            replica.tail_bytes -= len(tail[dropped].payload) + KEPT_UPDATE_OVERHEAD
            dropped += 1
        del tail[:dropped]

    def _record_sent(self, transfer: _Outgoing) -> None:
        if self.record_digests:
            self._out.append(
                StateDigest(
                    transfer.dst,
                    transfer.key,
                    transfer.position,
                    transfer.state_digest or digest(transfer.data),
                    "sent",
                )
            )

    def _pump(self, transfer: _Outgoing) -> None:
        size = transfer.data.nbytes
        window = WINDOW_CHUNKS * self.chunk_size
        while transfer.sent < size and transfer.sent - transfer.acked < window:
            end = min(size, transfer.sent + self.chunk_size)
            data = transfer.data[transfer.sent : end]
            transfer.checksum = crc32c.crc32c(data, transfer.checksum)
            self._send(
                transfer.dst, StateChunk(*transfer.key, transfer.sent, data, transfer.checksum)
            )
            transfer.sent = end
            if end == size:
                self._record_sent(transfer)
        if transfer.acked >= size:
            del self._outgoing[(transfer.dst, transfer.key)]

    def _on_state_header(self, src: NodeId, header: StateHeader) -> None:
        key = (header.type_name, header.subgroup_index, header.shard)
        replica = self._replicas.get(key)
        if (
            replica is not None
            and replica.asking is None
            and replica.obj is None
            and replica.ends is None
            and header.status is StateStatus.SENDING
            and src in replica.asked
        ):
            # A member asked in this view sends the state after this one stopped asking (it
            # found nobody holding one, and waits): the member had none when asked, and has
            # one now (one offered by a member back from its logs). Taken.
            self.stats["state_taken_late"] += 1
            replica.asking, replica.asking_offered = src, False
        if replica is None or replica.obj is not None or replica.asking != src:
            self.stats["stale_state"] += 1
            return
        if header.status is StateStatus.NOT_HELD and header.offered != replica.asking_offered:
            # The answer to a plain request this member sent the member it asks for the state
            # that member offered, or the other way round (a plain request asked since):
            # the request it asks with now is answered in turn.
            self.stats["stale_state"] += 1
            return
        if header.status is StateStatus.NOT_HELD and not replica.asking_offered:
            if header.epoch < replica.asked_in:
                # It answers an earlier request of this member's: the one asked since, in
                # this view, is answered in turn.
                self.stats["stale_state"] += 1
                return
            if header.epoch < self.view.epoch and replica.ends is None:
                # Said of a view before this one: a member that said so there may have
                # started the shard over there, and holds it now (one that asks on here
                # from what was said there could start it over a view later, and the two
                # would part). Asked again in this view.
                self.stats["state_asked_again"] += 1
                self._request(replica)
                return
        if header.status is not StateStatus.SENDING:
            if replica.ends is not None:
                # The member chosen holds none after all (its replica went): choose again.
                replica.asking = None
                replica.ends[src] = _holds_nothing(key, self.view.epoch)
                self._reconcile(replica)
                return
            if header.status is StateStatus.UNSENT:
                replica.holder_unsent = True
            if replica.asking_offered and src in replica.waiting:
                # Its offer came to nothing: its own request, kept for the state it offered,
                # gets the answer any waiting member gives.
                replica.waiting.remove(src)
                self._send(src, StateHeader(*key, StateStatus.NOT_HELD, self.view.epoch))
            self._ask(replica)
            return
        if header.updates and (replica.held is None or replica.ends is not None):
            # Updates to catch up with, though this member said it holds no state to apply
            # them to: refused like a state it cannot install.
            self.stats["state_rejected"] += 1
            replica.rejected.append(f"from {src}: updates this member did not ask for")
            self._ask(replica)
            return
        # Grown as chunks arrive, not sized from the header: memory follows the bytes that
        # actually came, whatever size a peer announced.
        replica.incoming = _Incoming(src, header, bytearray())
        if header.size == 0:
            self._install_state(replica)

    def _on_state_history(self, src: NodeId, history: StateHistory) -> None:
        """A member moved out of the shard while it waited answers with the deliveries it
        counted there: taken where they reach back before this member's own, which they
        then precede (it asked that member as an old member, so they end where its own
        begin); otherwise the answer is that the state is not held."""
        key = (history.type_name, history.subgroup_index, history.shard)
        replica = self._replicas.get(key)
        if replica is None or replica.obj is not None or replica.asking != src:
            self.stats["stale_state"] += 1
            return
        if (
            replica.ends is not None
            or replica.asking_offered
            or replica.handed_history
            or not 0 <= history.history_from < replica.history_from
        ):
            self._on_state_header(src, StateHeader(*key, StateStatus.NOT_HELD, history.epoch))
            return
        # Asked in a later view than the one this member entered in, the member moved out
        # counted some of this member's own deliveries too: only those before are new.
        earlier = [u for u in history.updates if u.epoch < replica.history_from]
        positions = [(u.epoch, u.number) for u in earlier]
        if any(p[0] < history.history_from for p in positions[:1]) or not all(
            _follows(a, b) for a, b in itertools.pairwise(positions)
        ):
            # A faulty peer's: counted, and taken for an answer that it holds nothing.
            self.stats["history_rejected"] += 1
            self._on_state_header(src, StateHeader(*key, StateStatus.NOT_HELD, history.epoch))
            return
        handed = [
            _Buffered(
                (u.epoch, u.number),
                u.sender,
                u.timestamp,
                self._call_of(u.payload, u.timestamp),
                True,
            )
            for u in earlier
        ]
        self.stats["histories_taken"] += 1
        if positions:
            # Counted now: the state's position once they are applied, before any of its own.
            replica.position = max(replica.position, positions[-1])
        own = [b.position for b in replica.buffered[:1]]
        if self.catch_up_bytes and [(u.epoch, u.number) for u in replica.tail[:1]] == own:
            # Kept for catching up only where they join the tail held: one with a gap
            # would hand a rejoining member updates that skip some.
            replica.tail = earlier + replica.tail
            replica.tail_bytes += sum(len(u.payload) + KEPT_UPDATE_OVERHEAD for u in earlier)
            if replica.tail_bytes > self.catch_up_bytes:
                self._trim(replica)
        replica.buffered = handed + replica.buffered
        replica.history_from, replica.orphaned_by = history.history_from, history.orphaned_by
        replica.shard_before = history.shard_before
        replica.handed_history = True
        self._ask(replica)

    def _on_state_chunk(self, src: NodeId, chunk: StateChunk) -> None:
        key = (chunk.type_name, chunk.subgroup_index, chunk.shard)
        replica = self._replicas.get(key)
        incoming = replica.incoming if replica is not None else None
        if replica is None or incoming is None or incoming.source != src:
            self.stats["stale_state"] += 1
            return
        end = chunk.offset + chunk.data.nbytes
        if chunk.offset != incoming.received or end > incoming.header.size:
            raise RemoteProtocolError(f"state chunk at {chunk.offset} of {incoming.header.size}")
        incoming.data += chunk.data
        incoming.checksum = crc32c.crc32c(chunk.data, incoming.checksum)
        incoming.received = end
        incoming.announced = chunk.checksum
        self._send(src, StateAck(*key, end))
        self._out.append(StateProgress(*key, src, end, incoming.header.size))
        if end == incoming.header.size:
            self._install_state(replica)

    def _on_state_ack(self, src: NodeId, ack: StateAck) -> None:
        transfer = self._outgoing.get((src, (ack.type_name, ack.subgroup_index, ack.shard)))
        if transfer is not None and transfer.sent >= ack.offset > transfer.acked:
            transfer.acked = ack.offset
            self._pump(transfer)

    def _install_state(self, replica: _Replica) -> None:
        incoming = replica.incoming
        assert incoming is not None and replica.obj is None
        replica.incoming = None
        header = incoming.header
        data = memoryview(incoming.data)
        if incoming.checksum != incoming.announced:
            self.stats["state_rejected"] += 1
            replica.rejected.append(f"from {incoming.source}: checksum mismatch")
            self._user_failed(
                "state transfer",
                ValueError(
                    f"state from {incoming.source} fails its CRC32C: "
                    f"{incoming.checksum:08x} received, {incoming.announced:08x} sent"
                ),
            )
            self._ask(replica)
            return
        position = (header.epoch, header.count)
        state: bytes | memoryview
        if header.updates:
            caught = self._catch_up(replica, incoming.source, data, header)
            if caught is None:
                self._ask(replica)
                return
            obj, state = caught
        else:
            try:
                obj = restore(replica.spec, data)
            except Exception as exc:
                self.stats["state_rejected"] += 1
                replica.rejected.append(f"from {incoming.source}: {type(exc).__name__}: {exc}")
                self._user_failed(
                    f"{replica.spec.cls.__qualname__} state from {incoming.source}", exc
                )
                self._ask(replica)
                return
            state = data
            replica.held = None
        replica.lost = header.lost
        if replica.paxos:
            self._save(replica, position, bytes(state))
        replica.asking = None
        replica.asking_offered = False
        self._offered.pop(replica.key, None)  # what it holds now is the shard's
        self._out.append(
            StateReceived(
                *replica.key, incoming.source, header.size, position, header.lost, header.updates
            )
        )
        if self.record_digests:
            self._out.append(
                StateDigest(self.node_id, replica.key, position, digest(state), "received")
            )
        if replica.ends is not None:
            # A restart compares states: this one is held, applied to by nobody until all
            # hold it, and said to be held only once its snapshot is durable (saved). Until
            # then this member holds nothing it can say: the snapshot replaces its own on
            # disk, whatever the comparison does meanwhile.
            assert replica.paxos and replica.my_end is not None
            source = replica.ends.get(incoming.source)
            released = source is not None and source.released
            replica.unsaved = _Unsaved(
                obj,
                position,
                crc32c.crc32c(state),
                _end_position(source) if source is not None and released else None,
                source.checksum if source is not None and released else 0,
            )
            self._say_end(replica, replica.my_end.epoch)
            return
        replica.obj = obj
        replica.skip_until = position
        self._release_buffered(replica, position)
        self._tell_view(replica)
        self._serve_waiting(replica)

    def _catch_up(
        self, replica: _Replica, source: NodeId, data: memoryview, header: StateHeader
    ) -> tuple[Any, bytes] | None:
        """The state this member held from its logs with the updates ``source`` sent applied,
        and that state encoded (for the snapshot the shard's directory starts from); None if
        the updates do not lead from the state held to the header's position, or to the
        state whose checksum it gives (then the state held is dropped, and ``source`` asked
        again, for its whole state)."""
        position = (header.epoch, header.count)
        held = replica.held
        assert held is not None
        try:
            updates = caught_updates_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            updates, why = [], f"undecodable updates: {exc}"
        else:
            positions = [held.position, *map(_update_position, updates)]
            why = (
                ""
                if positions[-1] == position
                and all(_follows(a, b) for a, b in itertools.pairwise(positions))
                else f"updates {positions[1:2]}...{positions[-1:]} do not lead from "
                f"{held.position} to {position}"
            )
        if why:
            self.stats["state_rejected"] += 1
            replica.rejected.append(f"from {source}: {why}")
            self._user_failed("catching up", ValueError(f"from {source}: {why}"))
            return None
        # Applied to the state held: should the updates fail to encode after, that state is
        # gone too, and the next member is asked for a whole one. So is the offer of it.
        replica.held = None
        self._offered.pop(replica.key, None)
        rebuilt = replay(
            replica.spec,
            replica.key,
            self.node_id,
            held.obj,
            position=held.position,
            records=updates,
        )
        state = self._snapshot(replica, rebuilt.obj)
        if state is None:
            return None
        if crc32c.crc32c(state) != header.state_checksum:
            # The state held was not the history's at its position (Paxos seed 12437: an
            # older snapshot and records logged after a state received by transfer, whose
            # snapshot a total crash kept from disk). Not the source's fault: the whole state.
            self.stats["catch_up_diverged"] += 1
            replica.asked.discard(source)
            return None
        latest = max(held.latest_timestamp, rebuilt.latest_timestamp)
        replica.applied_timestamp = max(replica.applied_timestamp, latest / 1_000_000)
        return rebuilt.obj, state

    def _serve_waiting(self, replica: _Replica) -> None:
        waiting, replica.waiting = replica.waiting, []
        for member in waiting:
            if member in self.view:
                self._send_state(replica, member, -1)

    def _record_digest(self, replica: _Replica, kind: str) -> None:
        if replica.obj is None:
            return
        data = self._snapshot(replica, replica.obj)
        if data is None:
            return
        self._out.append(
            StateDigest(self.node_id, replica.key, _state_position(replica), digest(data), kind)
        )

    # -- point-to-point ---------------------------------------------------------------------

    def _on_peer(self, src: NodeId, message: PeerPayload) -> None:
        try:
            if isinstance(message, Replies):
                for reply in message.replies:
                    self._on_reply(src, reply.call_id, reply.outcome)
            elif isinstance(message, QueryRequest):
                self._on_query(src, message)
            elif isinstance(message, QueryReply):
                self._on_query_reply(src, message)
            elif isinstance(message, StateRequest):
                self._on_state_request(src, message)
            elif isinstance(message, StateOffer):
                self._on_state_offer(src, message)
            elif isinstance(message, StateHistory):
                self._on_state_history(src, message)
            elif isinstance(message, StateHeader):
                self._on_state_header(src, message)
            elif isinstance(message, StateChunk):
                self._on_state_chunk(src, message)
            elif isinstance(message, ShardEnd):
                self._on_shard_end(src, message)
            elif isinstance(message, RestartView):
                self._on_restart_view(src, message)
            else:
                self._on_state_ack(src, message)
        except RemoteProtocolError:
            self.stats["rejected_peer_message"] += 1

    def _send(self, dst: NodeId, message: PeerPayload) -> None:
        if dst == self.node_id:
            self._on_peer(dst, message)
        else:
            self._out.append(SendPeer(dst, encoder.encode(message)))


def _state_position(replica: _Replica) -> Position:
    """The last delivery a replica's state includes: the last one it counted, unless the
    state it started from (received, or fresh at a view's start) is ahead of its counting, as
    when a joiner installs state before the deliveries that state holds reach it."""
    return max(replica.position, replica.skip_until)


def _log_and_tail(replica: _Replica, logged: Sequence[LoggedUpdate]) -> list[CaughtUpdate]:
    """The shard's history as this member's log holds it up to the replica's state (a log
    runs ahead of delivery: a Paxos shard logs an update before it delivers it), with the
    updates kept in memory after the log's last (those delivered while it was read); empty
    where the two do not meet, or do not reach the state."""
    upto = _state_position(replica)
    history = [
        CaughtUpdate(r.epoch, r.number, r.sender, r.timestamp, bytes(r.payload))
        for r in logged
        if (r.epoch, r.number) <= upto
    ]
    if not history:
        return []
    last = _update_position(history[-1])
    if last != upto:
        tail = replica.tail
        at = bisect.bisect_left(tail, last, key=_update_position)
        if at == len(tail) or _update_position(tail[at]) != last:
            return []
        history += tail[at + 1 :]
    return history if _update_position(history[-1]) == upto else []


def _update_position(update: CaughtUpdate) -> Position:
    return (update.epoch, update.number)


def _follows(before: Position, after: Position) -> bool:
    """Whether ``after`` can be the delivery right after ``before``: the next in its view,
    or the first of a later one (how many a view delivered is not known here)."""
    return after == (before[0], before[1] + 1) or (after[0] > before[0] and after[1] == 1)


def _not_held(key: ShardKey, request: StateRequest) -> StateHeader:
    """The answer that ``request``'s state is not held here, naming the view it was asked in
    (:attr:`_Replica.asked_in`) and whether it was asked for an offered state."""
    return StateHeader(*key, StateStatus.NOT_HELD, request.epoch, offered=request.offered)


def _error(error_type: str, message: str) -> Outcome:
    return Outcome(False, error_type=error_type, error=message)


def _end_position(end: ShardEnd) -> Position:
    return (end.position_epoch, end.position_count)


def _end_of(replica: _Replica, epoch: int) -> ShardEnd:
    """What a member comparing states says in view ``epoch``: the state it holds, on disk
    as in memory (none while the snapshot of one it received is not durable yet)."""
    if replica.recovered is None or replica.unsaved is not None:
        return ShardEnd(
            *replica.key, epoch, False, -1, 0, False, 0, replica.holds_last_cut, replica.my_doubts
        )
    if _reaches_cut(replica):
        replica.holds_last_cut = True  # taken from the state chosen, or as far along
    return ShardEnd(
        *replica.key,
        epoch,
        True,
        *replica.recovered[1],
        False,
        replica.recovered_checksum,
        replica.holds_last_cut,
        replica.my_doubts,
    )


def _may_hand_on(replica: _Replica) -> bool:
    """Whether a state held while a restart compares may become the shard's without the
    comparison: it holds the last cut (:attr:`_Replica.holds_last_cut`, or it reaches a state
    said to hold it), or every member that may have applied that cut said its log lacks it.
    Then it holds every update the shard delivered (a ``Paxos`` update is delivered only
    once every member counted logged it)."""
    assert replica.recovered is not None
    if replica.holds_last_cut or _reaches_cut(replica):
        return True
    return bool(replica.doubted) and not _awaited(replica)


def _meets_history(replica: _Replica, src: NodeId, offer: StateOffer) -> bool:
    """Whether the state ``src`` offers, with the deliveries ``replica`` buffered after it,
    is the shard's state: every delivery since the view this member began counting in
    (``history_from``, j) is buffered here, so the state must hold every earlier one, and
    two members that take offered states must take the same one.

    A member's log holds only stable messages, from the snapshot of its stint on (an earlier
    stint's directory is discarded before a new stint logs anything), and each delivery
    waited for every shard member's log. So the offered state meets this history if its last
    update is one buffered here (same position, sender and timestamp): everything before it
    was delivered too. Or, ending before view j, if its log is marked with the cut of view
    k (``shard_before``, the last view before j that ran the shard: j - 1 unless the views
    between could not run the layout, and delivered nothing of it) and of no later view this
    member buffered deliveries of: it logged what that view's cleanup kept, and the cleanup
    trims no stable message, so it holds exactly what the shard delivered. Or if ``src`` was
    the shard's one member in view k and did not reach view j but as a new process back
    from its logs (``orphaned_by``), and its log is marked with the cut of view k - 1 (none
    for a founder, k = 0): it held the state as k began, and every delivery of k, its
    cleanup's too, waited for its log. Its log may hold a stable message it logged but
    never delivered; every member that takes a state by this rule takes that one. Not of
    two members: one may have logged such a message and the other not, and two waiting
    members, each taking one of the states, would part."""
    have = (offer.have_epoch, offer.have_count)
    j, k = replica.history_from, replica.shard_before
    if have[0] >= j:
        same = [b for b in replica.buffered if b.position == have]
        return bool(same) and (same[0].sender, same[0].timestamp) == (
            offer.have_sender,
            offer.have_timestamp,
        )
    if replica.orphaned_by == (src,) and offer.cut_epoch >= k - 1:
        return True
    return offer.cut_epoch >= k and all(b.position[0] > offer.cut_epoch for b in replica.buffered)


def _history(
    replica: _Replica,
) -> tuple[int, int, tuple[NodeId, ...], list[CaughtUpdate]] | None:
    """What a member moved out of a ``Paxos`` shard while it waited for the state hands to
    the newcomer that asks: every delivery it counted since ``history_from``, with payloads
    (kept in its tail), or None where it has no such history, its tail no longer holds
    all of it (trimmed to the catch-up budget), or it is larger than one message carries."""
    if not replica.paxos or replica.history_from < 0 or replica.ends is not None:
        return None
    updates = (
        [u for u in replica.tail if (u.epoch, u.number) >= replica.buffered[0].position]
        if replica.buffered
        else []
    )
    if [(u.epoch, u.number) for u in updates] != [b.position for b in replica.buffered]:
        return None
    if sum(len(u.payload) + 32 for u in updates) > MAX_HISTORY_BYTES:
        return None  # more than one message carries
    return replica.history_from, replica.shard_before, replica.orphaned_by, updates


def _reaches_cut(replica: _Replica) -> bool:
    """Whether the state held reaches as far as one said to hold the last cut
    (:attr:`_Replica.cut_held_at`): then it holds that cut too."""
    at = replica.cut_held_at
    return replica.recovered is not None and at is not None and replica.recovered[1] >= at


def _awaited(replica: _Replica) -> tuple[NodeId, ...]:
    """The members that may have applied the last cut and have not said their logs lack it:
    the ones a comparison lacking that cut waits for."""
    return tuple(m for m in replica.doubted if m not in replica.lacks_cut)


def _cut_marks(states: Mapping[ShardKey, Rebuilt]) -> dict[ShardKey, int]:
    """The cut each rebuilt state's log holds, as a member says it to the shards' members:
    -1 (none) for a state under a doubt, which may lack what the members it names delivered."""
    return {k: -1 if r.doubted else r.cut_epoch for k, r in states.items()}


def _holds_nothing(key: ShardKey, epoch: int) -> ShardEnd:
    return ShardEnd(*key, epoch, False, -1, 0)


def _members_by_key(layout: ViewLayout | None) -> dict[ShardKey, tuple[NodeId, ...]]:
    if layout is None or not layout.adequate:
        return {}
    return {(r.type_name, r.subgroup_index, r.shard): r.layout.members for r in layout.shards}
