"""Typed wire messages: one tagged union of msgspec Structs, decoded strictly.

Never pickle on the wire: a peer's bytes are only ever decoded into these types, and anything
else is a :class:`~pyderecho.core.errors.RemoteProtocolError`. Structs are array-like so a small
row push costs a few bytes of framing, not a dictionary of field names.
"""

from __future__ import annotations

import enum
import struct

import msgspec

from pyderecho.core.errors import RemoteProtocolError

WIRE_VERSION = 5
"""Checked in every link's handshake (:mod:`pyderecho.transport.auth`), so that members whose
messages are encoded differently refuse each other with a clear error instead of rejecting
each other's frames one by one. 2: :attr:`Block.block_size`, :attr:`Data.row`. 3:
:attr:`ChangeKind.EXCLUDE`, :attr:`ShardRow.cleaned`, :attr:`MembershipRow.cleaned` (the
ragged-edge cleanup's rules changed with them: members of 2 and 3 cannot share a group). 4:
pad words between TCP frames (:data:`pyderecho.transport.framing.PAD`), which a member of 3
refuses as an oversized frame, and ``StateStatus.UNSENT`` in state transfer's headers. 5:
:attr:`MembershipRow.heard_since`, which changes whom a leader's cover removes (members of 4
and 5 would choose differently)."""


class ShardRow(msgspec.Struct, frozen=True, array_like=True, tag="r"):
    """A member's row of one shard's slice of the shared state table.

    Every column is monotonic within the epoch, so the receiver merges by maximum and a late or
    duplicated push changes nothing.
    """

    epoch: int
    subgroup: int
    shard: int
    received: tuple[int, ...]
    """How many messages of each sender (by sender rank) the member holds with no gap."""
    seq: int
    """Largest global index the member holds with no gap, -1 for none."""
    delivered: int
    """Largest global index the member has delivered (ordered) or -1."""
    wedged: bool = False
    """The member has stopped sending in this epoch: its ``received`` counters above are what a
    ragged-edge decision may safely be computed from."""
    suspected: int = 0
    """Bit ``r`` set: the member suspects the shard member of rank ``r`` and ignores it."""
    cutoff: tuple[int, ...] = ()
    """The ragged-edge decision once known: per sender, how many of its messages are delivered
    in this epoch. Empty until decided; never changes once set."""
    persisted: int = -1
    """``Paxos`` shards: largest global index the member has logged durably (with every
    message before it), -1 for none. A message is delivered once every member's is past it."""
    floor: int = 0
    """``Paxos`` shards: the last timestamp the member knows the shard to have delivered
    before this epoch (0 if it knows none). This epoch's timestamps rise above the largest, so
    that they rise in the shard's order across views, not only within one."""
    nulls: int = 0
    """How many of the pushing member's own last turns, below its ``received`` count of its
    own messages, are nulls that no earlier frame carried. A member fills its turns as it
    answers another's message, in the same turn as it pushes its row: the nulls ride on that
    row instead of a frame of their own (:class:`Nulls`), which halved the frames a member
    answering a lone sender sends."""
    cleanup: int = 0
    """The member's progress in the ragged-edge cleanup, as bits (one field, so that a row
    is as long as it was before the second bit existed): :data:`CLEANED` and
    :data:`CUT_LOGGED`, read as :attr:`cleaned` and :attr:`cut_logged`."""

    @property
    def cleaned(self) -> bool:
        """The member applied the ragged-edge decision its ``cutoff`` holds. A member that
        follows a cleanup's leader applies the decision only once the leader has (which it
        does once every member it counts on echoes it), or once any member has: a decision
        applied anywhere is the only one there can be, and every survivor then holds it or
        can no longer apply another."""
        return bool(self.cleanup & CLEANED)

    @property
    def cut_logged(self) -> bool:
        """``Paxos`` shards: the member's log holds everything its published ``cutoff``
        keeps, and its disk says so (a durable mark of this epoch's cut,
        :class:`~pyderecho.core.events.CutLogRequested`). A cleanup applies its decision
        only once every member it counts on shows this: a restart can then tell a member
        whose log holds the cut from one the cleanup left out, which may lack what the cut
        delivered."""
        return bool(self.cleanup & CUT_LOGGED)


CLEANED = 1
""":attr:`ShardRow.cleanup` bit: the decision is applied."""
CUT_LOGGED = 2
""":attr:`ShardRow.cleanup` bit: the log holds the cut, and is marked so."""


class Data(msgspec.Struct, frozen=True, array_like=True, tag="d"):
    """Consecutive messages that each fit in one block, sent straight from their sender to each
    member. A sender batches what its window lets out at once, so a burst of small messages
    costs one frame, one decode and one row push per receiver instead of one per message."""

    epoch: int
    subgroup: int
    shard: int
    sender: int
    index: int
    """The index of the first message; the others follow in order."""
    payloads: tuple[memoryview, ...]
    """Decoded as views into the received frame, without copying: a ``Raw`` shard hands them
    to the application as they are, anything kept past the frame's callback is copied."""
    stamp: int = 0
    """``Paxos`` shards: the sender's clock when the batch left, in microseconds; the
    receivers turn it into the same hybrid logical timestamp for each message."""
    row: ShardRow | None = None
    """The sender's own row of the shard, when it pushed one right after this batch to the
    same members: taken as if it came in a frame of its own just after, at the cost of one
    frame instead of two (a message alone in a shard of three costs 6 frames, not 8)."""


class Nulls(msgspec.Struct, frozen=True, array_like=True, tag="n"):
    """``count`` null messages from ``first`` on: they keep the round robin moving and are
    never delivered."""

    epoch: int
    subgroup: int
    shard: int
    sender: int
    first: int
    count: int


class Block(msgspec.Struct, frozen=True, array_like=True, tag="b"):
    """One block of a large message, relayed from member to member along the shard's chain."""

    epoch: int
    subgroup: int
    shard: int
    sender: int
    index: int
    size: int
    """Total size of the message, so the first block to arrive can size the buffer."""
    block: int
    block_size: int
    """Bytes in each of the message's blocks but the last: the sender's choice for this
    message, at least the shard's ``block_size`` (larger while the sender has more to send)."""
    stamp: int
    """``Paxos`` shards: the sender's clock at send, in microseconds (as :attr:`Data.stamp`)."""
    data: memoryview
    """Decoded as a view into the received frame: it is copied once, into the message's
    reassembly buffer, and relayed to the next member before the frame's callback returns."""


class Heartbeat(msgspec.Struct, frozen=True, array_like=True, tag="h"):
    """I am alive (sent to the members that monitor the sender).

    A *periodic* beat (neither a probe nor an answer) says nothing but that its sender is alive
    in ``epoch``, so a driver whose transport can show that without a frame may do so: the
    shared-memory transport writes it into the link's segment, where the receiver reads it at
    its own tick and hands the core this message (:meth:`pyderecho.core.node.Node.receive`),
    and nobody is woken for it. Probes and answers are always frames: an answer must come
    over the link it vouches for."""

    epoch: int
    probe: bool = False
    """Answer me: another member says you are gone, and I check for myself before I agree."""
    answer: bool = False
    """This answers a probe."""

    @property
    def periodic(self) -> bool:
        """Neither a probe nor an answer: it may travel outside the link's frames."""
        return not (self.probe or self.answer)


class ChangeKind(enum.IntEnum):
    REMOVE = 0
    """The member is suspected to have failed."""
    JOIN = 1
    LEAVE = 2
    """The member asked to leave: it is removed, but nobody suspects it."""
    EXCLUDE = 3
    """Once the change is final: a member the next view keeps was found failed or cut off
    during the ragged-edge cleanup. The cleanups go on without it and it stops; the next
    view's change removes it. Only the change's leader decides this, like any change, so
    that the survivors of a shard never leave out different members (two survivors that
    each left out the other used to apply different cuts under a partial cut)."""


class Change(msgspec.Struct, frozen=True, array_like=True):
    """One membership change to ``node``."""

    node: int
    kind: ChangeKind = ChangeKind.REMOVE
    address: str = ""
    """Where a joiner listens (empty in the simulator)."""
    incarnation: int = 0
    """A joiner's process, as its :class:`JoinRequest` named it: a member asked again to let
    ``node`` in welcomes only that process, never another started under the same id."""


class MembershipRow(msgspec.Struct, frozen=True, array_like=True, tag="m"):
    """A member's row of the membership columns of the shared state table.

    Only its owner writes a row, and each push carries a higher ``version``; a receiver keeps the
    newest version it has seen, so duplicated or late pushes are harmless.
    """

    epoch: int
    version: int
    suspected: tuple[int, ...]
    """Members this member suspects (node ids), sorted."""
    leader: int
    """The member this row follows as leader of the view change."""
    leader_version: int
    """The version of the leader's row whose changes, commit and final this row echoes."""
    changes: tuple[Change, ...] = ()
    """The proposed changes: the leader's own list, or a member's echo of it."""
    committed: int = 0
    """How many of ``changes`` are committed (every unsuspected member acknowledged them)."""
    final: int = 0
    """How many of ``changes`` the next view installs: set once every unsuspected member holds
    the commit, so a later leader always finds it."""
    leaving: bool = False
    collecting: bool = False
    """The row's owner has just taken over as leader and is still collecting every member's
    row: followers report to it but must not echo it yet."""
    cut: tuple[tuple[int, int], ...] = ()
    """Cut links this member found, as (accuser, accused): the accused answered this member's
    probe, so it is alive and reachable, and its accuser is cut off from it, not it from the
    group. The leader covers the links everyone reports (:mod:`pyderecho.core.membership`)."""
    cleaned: bool = False
    """The change is final and this member applied the ragged-edge decision of every shard
    it belongs to: it moves on to the next view. The change's leader stays in this view until
    every survivor says so or is excluded (:attr:`ChangeKind.EXCLUDE`), since only it decides
    whom a stalled cleanup goes on without."""
    heard_since: tuple[int, ...] = ()
    """Members this member suspects and has heard from since, sorted: their link to it works,
    so its accusation of them came from their silence (a stalled process), not from a cut. The
    leader's cover then removes the accused rather than the accuser."""


class JoinRequest(msgspec.Struct, frozen=True, array_like=True, tag="j"):
    """A process asks to join; members that do not lead forward it to the leader."""

    node: int
    address: str = ""
    incarnation: int = 0
    """A number the process drew at start: a process that took over a crashed one's id (a
    restart with ``--join``) is told from it, so it cannot be welcomed into a view that
    admitted the other (and send under the indices that one used)."""


class Welcome(msgspec.Struct, frozen=True, array_like=True, tag="w"):
    """Sent to a joiner: the view it is a member of."""

    epoch: int
    members: tuple[int, ...]
    joined: tuple[int, ...]
    departed: tuple[int, ...]
    addresses: tuple[str, ...] = ()
    """Where each member listens, in ``members`` order (empty in the simulator)."""
    previous_epoch: int = -1
    """The last adequate view before this one (-1: none), so that the joiner computes the same
    state-transfer plan as the members that were there: who held each shard's state."""
    previous_members: tuple[int, ...] = ()
    incarnation: int = 0
    """The joiner's process this welcome is for (its :class:`JoinRequest`'s): a frame queued
    for a process that died must not let in another started under the same id."""
    restart_holders: tuple[int, ...] = ()
    """The members of the view a restart from logs founded, while no view since was adequate
    (``previous_epoch`` is -1): the joiner gets each ``Paxos`` shard's state from them
    (:attr:`~pyderecho.core.events.ViewInstalled.restart_holders`)."""


class P2P(msgspec.Struct, frozen=True, array_like=True, tag="p"):
    """Opaque bytes from one member to another: the object layer's queries, replies and state
    chunks. Not tied to a view: a reply or a state transfer may cross a view change, and the
    link's authentication already says who sent it."""

    payload: memoryview
    """Decoded as a view into the received frame, valid while the frame's callback runs."""


class Removed(msgspec.Struct, frozen=True, array_like=True, tag="x"):
    """Sent to a process that speaks in an old view it has been removed from."""

    epoch: int


class RestartPhase(enum.IntEnum):
    RESTARTING = 0
    """Still agreeing on the view to found."""
    FOUNDED = 1
    """Runs the view its restart founded: a member of it that restarts later joins in."""
    RUNNING = 2
    """Runs a later view: the group went on."""


class RestartState(msgspec.Struct, frozen=True, array_like=True, tag="s"):
    """After the whole group stopped: the last view the sender's logs say it installed and
    the commit of the next one it logged, if any (epoch -1: none; see
    :mod:`pyderecho.core.restart`), or, once it runs again, the view it runs."""

    epoch: int
    members: tuple[int, ...]
    commit_epoch: int
    commit_members: tuple[int, ...]
    commit_failed: tuple[int, ...]
    """Members the commit removes as failed (they never log it)."""
    phase: RestartPhase
    incarnation: int
    """The sender's restart (a number its driver draws), 0 once it runs."""
    answering: int
    """0 for a question; in an answer, the incarnation asked: only an answer to its own
    question counts for a restarting member, since a state sent to an earlier incarnation
    (queued while it was down) may no longer be true."""


ShardMessage = ShardRow | Data | Nulls | Block
"""Messages that belong to one shard of one epoch."""

WireMessage = (
    ShardRow
    | Data
    | Nulls
    | Block
    | Heartbeat
    | MembershipRow
    | JoinRequest
    | Welcome
    | Removed
    | P2P
    | RestartState
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[WireMessage] = msgspec.msgpack.Decoder(WireMessage)


def encode(message: WireMessage) -> bytes:
    return _encoder.encode(message)


SEPARATE_DATA_BYTES = 64 * 1024
"""A block carrying at least this much is encoded as two parts (see :func:`encode_parts`)."""
_NO_DATA = memoryview(b"")
_BIN32 = struct.Struct(">BI")
"""msgpack's header for binary data of any length up to 4 GiB - 1: 0xc6, then the length."""


def encode_parts(message: WireMessage) -> bytes | tuple[bytes, memoryview]:
    """``message`` encoded for a transport: one buffer, except that a large block (or a large
    point-to-point payload) comes as its header and its data, which together are exactly what
    :func:`encode` would give but for the data's length prefix (always the 4-byte form here,
    which decoders accept for any length). The data is not copied: a block leaves from the
    sender's own payload, or from the relaying member's reassembly buffer, straight to the
    transport."""
    if isinstance(message, Block) and message.data.nbytes >= SEPARATE_DATA_BYTES:
        data = message.data
        return _block_head(message, data.nbytes), data
    if isinstance(message, P2P) and message.payload.nbytes >= SEPARATE_DATA_BYTES:
        data = message.payload
        return _with_length(_encoder.encode(P2P(_NO_DATA)), data.nbytes), data
    return _encoder.encode(message)


def _block_head(block: Block, data_bytes: int) -> bytes:
    """What goes before ``data_bytes`` of data in a two-part block."""
    return _with_length(_encoder.encode(msgspec.structs.replace(block, data=_NO_DATA)), data_bytes)


def _with_length(encoded: bytes, data_bytes: int) -> bytes:
    # The data is the struct's last field, so the encoding ends with it: an empty binary is
    # b"\xc4\x00", replaced by the 4-byte form with the real length.
    return encoded[:-2] + _BIN32.pack(0xC6, data_bytes)


_block_decoder = msgspec.msgpack.Decoder(Block)


def split_block(prefix: memoryview, length: int) -> tuple[int, Block] | None:
    """Where the data of a large block's frame begins, and the block with empty data, from the
    frame's first bytes (``prefix``: the head is at most 89 bytes, 9 integers and the data's
    length) and its ``length``; None if the frame is not a block encoded in two parts by
    :func:`encode_parts`.

    This lets a transport read a block's data straight into its reassembly buffer. The head is
    only taken once encoding the block again gives exactly its bytes, so no other frame that
    happens to look alike is ever split in the wrong place.
    """
    window = bytes(prefix[: min(prefix.nbytes, length)])
    at = window.find(0xC6)
    while 0 <= at <= len(window) - 5:
        head = at + 5
        data = length - head
        if data >= SEPARATE_DATA_BYTES and _BIN32.unpack_from(window, at)[1] == data:
            try:
                block = _block_decoder.decode(window[:at] + b"\xc4\x00")
            except (msgspec.DecodeError, msgspec.ValidationError):
                block = None
            if block is not None and _block_head(block, data) == window[:head]:
                return head, block
        at = window.find(0xC6, at + 1)
    return None


def decode(data: bytes | memoryview) -> WireMessage:
    """Decode one message, strictly; anything malformed is the peer's fault."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RemoteProtocolError(f"malformed message: {exc}") from exc
