"""What the object layer sends: an ordered call inside the shard's multicast, and the
point-to-point messages (replies, queries, state transfer) in one strictly decoded union.

Everything is msgpack through msgspec; arguments and results are carried as pre-encoded
``Raw`` so that only the replica that knows the method's annotations decodes them, with those
annotations as the schema.
"""

from __future__ import annotations

import enum

import msgspec

from pyderecho.core.errors import RemoteProtocolError


class Call(msgspec.Struct, frozen=True, array_like=True):
    """An ordered call, multicast in the caller's shard: every replica applies it in order."""

    call_id: int
    """Unique per caller: the caller matches replies by it."""
    method: str
    timestamp: float
    """The caller's clock when it called: the same at every replica, so methods need none."""
    args: msgspec.Raw
    replies: bool = True
    """Whether every replica answers the caller; False: only the caller's own replica, whose
    result the caller takes (``replies="own"``), so the others send nothing back."""


class Outcome(msgspec.Struct, frozen=True, array_like=True):
    """What one replica's method gave: a result, or the exception it raised."""

    ok: bool
    result: msgspec.Raw = msgspec.Raw(b"\xc0")
    error_type: str = ""
    error: str = ""


class Reply(msgspec.Struct, frozen=True, array_like=True):
    """One replica's outcome of one ordered call."""

    call_id: int
    outcome: Outcome


class Replies(msgspec.Struct, frozen=True, array_like=True, tag="R"):
    """A replica's outcomes for one caller, batched per delivery burst."""

    replies: tuple[Reply, ...]


class QueryRequest(msgspec.Struct, frozen=True, array_like=True, tag="Q"):
    query_id: int
    type_name: str
    subgroup_index: int
    shard: int
    method: str
    args: msgspec.Raw


class QueryReply(msgspec.Struct, frozen=True, array_like=True, tag="A"):
    query_id: int
    outcome: Outcome


class StateRequest(msgspec.Struct, frozen=True, array_like=True, tag="S"):
    """A member new to a shard asks an old member for the shard's state."""

    type_name: str
    subgroup_index: int
    shard: int
    epoch: int
    """The view the requester asks in: the one it became a member of the shard in, or a
    later one where it asks again. An answer that the state is not held names it."""
    have_epoch: int = -1
    """A member back while the group runs holds the shard's state up to (have_epoch,
    have_count) from its own logs, and needs only the updates after it; -1: none."""
    have_count: int = 0
    have_sender: int = -1
    """The sender and timestamp of the update at that position, by which the asked member
    checks that its own history holds that update there."""
    have_timestamp: int = 0
    offered: bool = False
    """The requester asks for the state the asked member offered (:class:`StateOffer`),
    which it found meets the deliveries it holds."""


class StateOffer(msgspec.Struct, frozen=True, array_like=True, tag="O"):
    """A member back while the group runs, from its logs, tells a ``Paxos`` shard's members
    how far the state its logs rebuilt reaches: members that wait for a holder (every one
    failed) take it where it meets the deliveries they hold."""

    type_name: str
    subgroup_index: int
    shard: int
    epoch: int
    """The view it offers in."""
    have_epoch: int
    have_count: int
    have_sender: int
    """The sender and timestamp of the update at (have_epoch, have_count); -1 and 0 where the
    state is its snapshot's, with no update replayed after it."""
    have_timestamp: int
    cut_epoch: int
    """The last view whose cut its log of the shard is marked to hold (-1: none)."""


class StateStatus(enum.IntEnum):
    SENDING = 0
    """The state follows in chunks."""
    NOT_HELD = 1
    """The asked member holds no state of this shard (it left the shard, or never had it)."""
    UNSENT = 2
    """The asked member holds the state but could not snapshot it (the class's ``snapshot``
    raised): the asker asks on, but does not take the state for lost."""


class StateHeader(msgspec.Struct, frozen=True, array_like=True, tag="H"):
    """The answer to a request: the state's position and size, or why none comes."""

    type_name: str
    subgroup_index: int
    shard: int
    status: StateStatus
    epoch: int = -1
    """The state includes exactly the shard's deliveries up to (epoch, count). ``NOT_HELD``:
    the view of the request it answers (:attr:`StateRequest.epoch`), or the view it was said
    in where the request was kept until then."""
    count: int = 0
    size: int = 0
    lost: bool = False
    """The sender's state was restarted from the constructor when every holder failed."""
    updates: bool = False
    """What follows is not a state but the updates after the position the requester said
    it holds (:class:`CaughtUpdates`), up to (epoch, count)."""
    state_checksum: int = 0
    """With ``updates``: the CRC32C of the sender's encoded state at (epoch, count), which the
    requester's must equal once it applied them. A state rebuilt from logs can claim a
    position it does not hold (an older snapshot, and records logged after a state received
    by transfer whose snapshot a crash kept from disk): applied to, it would go on wrong."""
    offered: bool = False
    """It answers a request for the state the sender offered (:attr:`StateRequest.offered`):
    told apart from the answer to a plain request the requester sent it before."""


class StateChunk(msgspec.Struct, frozen=True, array_like=True, tag="C"):
    type_name: str
    subgroup_index: int
    shard: int
    offset: int
    data: memoryview
    """A view into the received frame: copied once, into the state's buffer."""
    checksum: int = 0
    """CRC32C of the encoded state up to this chunk's end: the receiver checks the last
    chunk's against its own before installing the state. Both sides sum chunk by chunk, so a
    large state never stops the event loop for one long pass (heartbeats would wait on it).
    CRC32C, as the logs' records use, not a cryptographic hash: it guards against damage on
    the way, which is all a digest here can do (a member that holds the group's secret could
    send any state with a matching hash), and runs at several GB/s where SHA-256 ran at under
    one, which made it a third of a large transfer's time."""


class StateAck(msgspec.Struct, frozen=True, array_like=True, tag="K"):
    """The receiver holds the state up to ``offset``: the sender's flow control."""

    type_name: str
    subgroup_index: int
    shard: int
    offset: int


class ShardEnd(msgspec.Struct, frozen=True, array_like=True, tag="E"):
    """After a restart from logs: how far the state of a ``Paxos`` shard that this member
    holds reaches (``held`` False: it holds none), said afresh in each view until the shard's
    members agree. They compare, the one furthest along gives its state to those behind,
    and each says so again once it holds it."""

    type_name: str
    subgroup_index: int
    shard: int
    epoch: int
    """The view this is said in: only what was said in the current view counts."""
    held: bool
    position_epoch: int
    position_count: int
    released: bool = False
    """The member applies deliveries to this state already: the comparison is over, and
    ``position`` is where it started applying them."""
    checksum: int = 0
    """The CRC32C of the state held (released: of the state it started applying to; 0: not
    known). Two states can claim one position: a member that crashed in a restart's
    comparison before the state it was behind reached its disk rebuilds its own older state
    with the restart view's records on top. The members then all take one of them rather
    than each keep its own."""
    holds_last_cut: bool = False
    """The state held is known to hold everything the last ragged-edge cleanup before the
    crash delivered (the log is marked with its cut). False: the member may have been left
    out of that cleanup, which then delivered what its log lacks."""
    doubted: tuple[int, ...] = ()
    """Members an earlier restart, whose comparison never settled, found may hold updates
    this member's state lacks: every member comparing waits for their word too."""
    cut_epoch: int = -2
    """From a member that restarted after the others had founded their view and rejoined
    the group: the last view whose cut its logs of the shard were marked with (-1: none).
    Members still comparing that wait for its word on the last cut take it from this
    (-2: not such a word)."""


class RestartView(msgspec.Struct, frozen=True, array_like=True, tag="V"):
    """After a restart from logs: the view this member founded (the one after the last view
    its logs recorded). Members that restarted from different views compare: one whose view
    is older than another's has logs that missed a view, and must not go on."""

    epoch: int
    members: tuple[int, ...]


class CaughtUpdate(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One update of a ``Paxos`` shard as its log holds it (the fields replay needs): a
    member that holds the state up to some position catches up by applying these."""

    epoch: int
    number: int
    sender: int
    timestamp: int
    """The update's hybrid logical timestamp, in microseconds."""
    payload: bytes
    """The encoded call."""


class StateHistory(msgspec.Struct, frozen=True, array_like=True, tag="Y"):
    """The answer of a member that the layout moved out of a ``Paxos`` shard while it waited
    for the shard's state (every holder had failed): the deliveries it counted there since
    it began waiting. The newcomer that asked counted none of them, and waits on with the
    longer history: a state a holder back from its logs offers is weighed against it."""

    type_name: str
    subgroup_index: int
    shard: int
    epoch: int
    """The view of the request it answers."""
    history_from: int
    """The view from which the sender counted every delivery of the shard."""
    shard_before: int
    """The last view before ``history_from`` whose layout ran the shard."""
    orphaned_by: tuple[int, ...]
    """The shard's members in view ``shard_before``."""
    updates: list[CaughtUpdate]


CaughtUpdates = list[CaughtUpdate]
"""The data of a transfer whose header says ``updates``: the updates in order."""

caught_updates_decoder: msgspec.msgpack.Decoder[CaughtUpdates] = msgspec.msgpack.Decoder(
    CaughtUpdates
)


PeerPayload = (
    Replies
    | RestartView
    | QueryRequest
    | QueryReply
    | StateRequest
    | StateOffer
    | StateHistory
    | StateHeader
    | StateChunk
    | StateAck
    | ShardEnd
)

encoder = msgspec.msgpack.Encoder()
_call_decoder = msgspec.msgpack.Decoder(Call)
_peer_decoder: msgspec.msgpack.Decoder[PeerPayload] = msgspec.msgpack.Decoder(PeerPayload)


def decode_call(data: bytes | memoryview) -> Call:
    try:
        return _call_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RemoteProtocolError(f"malformed ordered call: {exc}") from exc


def decode_peer(data: bytes | memoryview) -> PeerPayload:
    try:
        return _peer_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RemoteProtocolError(f"malformed point-to-point message: {exc}") from exc
