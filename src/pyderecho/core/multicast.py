"""Multicast inside one view, for one shard (DESIGN.md 3.2).

Each sender has a window of ``window_size`` messages: it may send message ``i`` only once every
member holds message ``i - window_size`` (the ``received`` columns of the table say so), and
only while the payloads it sent that some member does not yet hold stay within ``window_bytes``
(one message may always go). That is the whole flow control. In ``AtomicMulticast`` and
``Paxos`` shards the total order is the round robin over the senders: message ``i`` of the
sender of rank ``r`` among ``s`` senders has global index ``i*s + r``. A member delivers global
index ``k`` once every member's ``seq`` is at least ``k``: it is then *stable*, held
everywhere, so every survivor can deliver it. A sender with nothing to send sends nulls when
others have run ahead of its turn, so the round robin never waits on an idle sender. ``Raw``
shards deliver each sender's messages as they arrive, in per-sender order, and never send
nulls.

A ``Raw`` row serves only flow control, and only the sender reads its own column: so a member
acknowledges what it received to that sender alone, once a quarter of the window has arrived
since it last told it, or once the sender has been quiet for half a heartbeat timeout (then the
sender learns that its last messages are held everywhere). Pushing the row to every member on
every arrival, as ordered shards must (stability reads every column), cost each member n frames
per message: in one ``Raw`` shard of 64 members at 5 messages a second each, 560 rows a second
at every member against 150 messages.

``Paxos`` shards add one step between stability and delivery: a stable message is handed to
the driver to log (:class:`~pyderecho.core.events.PersistRequested`), each member's row
publishes how far it has logged (``persisted``), and a message is delivered once every member
of the shard has logged it. Logging only stable messages keeps every member's log a prefix of
the shard's one order: a ragged-edge cleanup never trims a stable message, so no log ever holds
a message the shard did not deliver in its epoch. Each message gets a hybrid logical timestamp
there too: the sender's clock at send, raised above the shard's previous timestamp, computed
in the same order everywhere and so the same at every member.

Messages of one block go straight from the sender to every member. Larger ones are split into
blocks relayed along a chain (the sender, then the members after it in rank order): every block
crosses each link once and the sender transmits it once, so the time approaches size/bandwidth
rather than size times the number of receivers. A message sent alone goes in blocks of
``block_size``, which pipeline along the chain; one sent while at least a block's worth of its
sender's others are in flight or queued, in larger blocks (:data:`BUSY_BLOCKS`), which cost
fewer frames; each block says its message's block size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import msgspec

from pyderecho.core.buffers import BufferPool
from pyderecho.core.config import CoreConfig
from pyderecho.core.errors import LocalProtocolError, RemoteProtocolError
from pyderecho.core.events import (
    CutLogRequested,
    Delivered,
    Event,
    LogRecord,
    MessageSent,
    NullsSent,
    Persisted,
    PersistRequested,
)
from pyderecho.core.layout import Mode, ShardRef
from pyderecho.core.sst import ShardTable
from pyderecho.core.view import NodeId
from pyderecho.wire import Block, Data, Nulls, ShardMessage, ShardRow, WireMessage

Outbox = list[tuple[NodeId, WireMessage]]


class SendClock:
    """The time of the input being handled, set by the node before each one: the core reads
    no clock, but a ``Paxos`` sender stamps its messages with the driver's ``now``."""

    __slots__ = ("now",)

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def stamp(self) -> int:
        """``now`` in whole microseconds."""
        return int(self.now * 1_000_000)


BUSY_BLOCKS = 4
"""A large message sent while at least a block's worth of its sender's others are in flight
or queued goes in blocks of this many times ``block_size``
(:meth:`ShardMulticast._block_size_for`)..."""
BUSY_BLOCK_BYTES = 1 << 20
"""... up to this (never below ``block_size``, never past the message): 1 MiB frames by
default, well inside the transports' default frame limit (16 MiB) and half a shared-memory
ring."""


class _Assembly:
    """A large message arriving block by block, in any order; once whole, it is held until
    delivery and then handed over as a read-only view of its buffer."""

    __slots__ = ("block_size", "buffer", "have", "missing", "placed")

    def __init__(self, buffer: bytearray, block_size: int, num_blocks: int) -> None:
        self.buffer = buffer
        self.block_size = block_size
        """The sender's block size for this message: every block of it must say the same."""
        self.have = [False] * num_blocks
        self.missing = num_blocks
        self.placed: set[int] = set()
        """Blocks whose data a transport reads straight into ``buffer``
        (:meth:`ShardMulticast.place_block`) until they arrive; one whose frame was cut off
        stays here (its link broke, so the epoch ends without it)."""


Payload = bytes | memoryview | _Assembly | None
"""A message held until delivery: ``bytes`` (a copy, or the sender's own), a ``memoryview`` into
a frame (valid only during the frame's callback: a Raw shard delivers it before that ends), a
whole large message (its buffer is handed over at delivery as a read-only view, without a copy)
or ``None`` (a null).
"""


class ShardMulticast:
    """One member's side of one shard's multicast in one epoch."""

    def __init__(
        self,
        me: NodeId,
        epoch: int,
        ref: ShardRef,
        config: CoreConfig,
        *,
        outbox: Outbox,
        events: list[Event],
        buffers: BufferPool | None = None,
        clock: SendClock | None = None,
        floor: int = 0,
    ) -> None:
        """``floor``: in a ``Paxos`` shard, the last timestamp this member saw the shard
        deliver before this epoch (0 if none)."""
        self.epoch = epoch
        self.subgroup = ref.subgroup
        self.shard = ref.shard
        self.mode = ref.layout.mode
        self.persistent = self.mode is Mode.PAXOS
        self.members = ref.layout.members
        self.rank = self.members.index(me)
        self.member_rank = {node: rank for rank, node in enumerate(self.members)}
        self.senders = ref.layout.sending_members
        self.sender_rank = {node: rank for rank, node in enumerate(self.senders)}
        self.my_sender_rank = self.sender_rank.get(me, -1)
        self.peers = tuple(m for m in self.members if m != me)
        self._config = config
        self._outbox = outbox
        self._events = events
        self.table = ShardTable(len(self.members), len(self.senders))
        self.table.floor[self.rank] = floor
        self.pending: deque[bytes] = deque()
        """Messages the application sent that wait for a window slot."""
        self.pending_bytes = 0
        self.next_index = 0
        self._in_flight: deque[tuple[int, int]] = deque()
        """Own batches not yet received everywhere: (the last index of the batch, its payload
        bytes), for the window in bytes."""
        self._in_flight_bytes = 0
        self._held: list[dict[int, Payload]] = [{} for _ in self.senders]
        """Per sender: messages (None for a null) held and not yet delivered."""
        self._assembling: dict[tuple[int, int], _Assembly] = {}
        self._buffers = buffers or BufferPool()
        self.delivered_upto = -1
        """Ordered: the last global index delivered (or skipped, for a null)."""
        self._clock = clock or SendClock()
        self._stamps: list[dict[int, int]] = [{} for _ in self.senders]
        """Paxos: per sender, the send stamps of held messages."""
        self._timestamps: dict[int, int] = {}
        """Paxos: hybrid logical timestamps of requested, undelivered messages, by global
        index."""
        self.persist_requested = -1
        """Paxos: the global index up to which messages were handed to the driver to log."""
        self._last_timestamp = 0
        self._logged = 0
        """Paxos: non-null messages handed over to log in this epoch."""
        self._reported_everywhere = -1
        self.duplicates = 0
        self.dirty = False
        """The own row changed since it was last pushed, in a way some member waits for."""
        self.furthest = -1
        """Ordered: the global index of the furthest message (not a null) another sender's
        arrival moved this member's ``received`` count to, in this epoch; this member's turns
        before that sender's next one are filled with nulls while it has nothing to send
        (:meth:`_send_nulls`)."""
        self.lagging = False
        """The own row changed since it was last pushed only in what no member waits for
        (nulls held or logged): it goes with the next push, or at the next tick
        (:meth:`_row_moved`)."""
        self.unsent_nulls = 0
        """The own last turns filled with nulls that no frame carried yet: they go on the next
        row pushed to every member (:meth:`row`), or as a frame of their own before the next
        message (:meth:`send_unsent_nulls`)."""
        self.acks_due: set[int] = set()
        """``Raw``: ranks of the senders to push the own row to now (see the module's text)."""
        self._acked = [0] * len(self.senders)
        """``Raw``: per sender, the ``received`` count this member last told it."""
        self._last_arrival = [0.0] * len(self.senders)
        self._unacked = False
        """``Raw``: some sender may not yet have been told all this member received of it."""
        self._ack_every = max(1, config.window_size // 4)
        self._ack_every_bytes = max(1, config.window_bytes // 4)
        self._unacked_bytes = [0] * len(self.senders)
        """``Raw``: per sender, payload bytes that arrived since this member last told it."""
        self.pushed_to: tuple[NodeId, ...] | None = None
        """Wedged, outside ``Paxos``: the members the own row last went to alone (the
        cleanup's leader, and the view change's), or None while it goes to every member."""
        self.wedged = False
        """No more sending or ordered delivery in this epoch: a view change is under way."""
        self.logging_cutoff = False
        """Paxos: the decision is known, and its delivery waits for the survivors' logs."""
        n = len(self.members)
        self._relay_next: list[NodeId | None] = []
        for sender in self.senders:
            position = (self.rank - self.member_rank[sender]) % n
            self._relay_next.append(self.members[(self.rank + 1) % n] if position + 1 < n else None)

    # -- the application side ---------------------------------------------------------------

    def send(self, payload: bytes, *, now: bool = True) -> None:
        """Queue ``payload``; it goes out as soon as the window has room.

        With ``now=False`` it only waits in the queue until :meth:`pump`: a driver that queues
        a burst first sends it as one batch.
        """
        if self.my_sender_rank < 0:
            raise LocalProtocolError(
                f"member {self.members[self.rank]} is not a sender of subgroup {self.subgroup} "
                f"shard {self.shard}"
            )
        if len(payload) > self._config.max_message_size:
            raise LocalProtocolError(
                f"message of {len(payload)} bytes exceeds max_message_size "
                f"({self._config.max_message_size})"
            )
        self.pending.append(payload)
        self.pending_bytes += len(payload)
        if now:
            self._pump()

    def pump(self) -> None:
        """Send what the window allows of the queue."""
        self._pump()

    # -- the peer side ----------------------------------------------------------------------

    def receive(self, src: NodeId, message: ShardMessage) -> None:
        """Handle a message of this shard and epoch from ``src``."""
        src_rank = self.member_rank.get(src)
        if src_rank is None:
            raise RemoteProtocolError(
                f"{src} is not a member of subgroup {self.subgroup} shard {self.shard}"
            )
        if isinstance(message, ShardRow):
            self._receive_row(src, src_rank, message)
            return
        sender = self.sender_rank.get(message.sender)
        if sender is None:
            raise RemoteProtocolError(
                f"{message.sender} is not a sender of subgroup {self.subgroup} shard {self.shard}"
            )
        if isinstance(message, Data):
            if message.sender != src:
                raise RemoteProtocolError(f"{src} sent a message in the name of {message.sender}")
            # Raw deliveries happen during this call, while the frame is alive: they keep the
            # view. Ordered ones wait for stability, past the frame's life: copy them now.
            keep = self.mode is Mode.RAW
            held = self._held[sender]
            floor = self.table.received[self.rank][sender]
            index = message.index
            for payload in message.payloads:  # _hold inlined: once per message received
                if index < floor or index in held:
                    self.duplicates += 1
                else:
                    held[index] = payload if keep else bytes(payload)
                index += 1
            if self.persistent:
                stamps = self._stamps[sender]
                for index in range(message.index, message.index + len(message.payloads)):
                    stamps.setdefault(index, message.stamp)
            self._after_arrival(sender)
            row = message.row
            if row is not None:
                if (row.epoch, row.subgroup, row.shard) != (
                    message.epoch,
                    message.subgroup,
                    message.shard,
                ):
                    raise RemoteProtocolError(f"{src} sent a row of another shard with a batch")
                self._receive_row(src, src_rank, row)
        elif isinstance(message, Nulls):
            if message.sender != src or message.count < 1 or self.mode is Mode.RAW:
                raise RemoteProtocolError(f"bad null run from {src}: {message}")
            for index in range(message.first, message.first + message.count):
                self._hold(sender, index, None)
            self._after_arrival(sender)
        else:
            self._receive_block(sender, message)

    def _receive_row(self, src: NodeId, src_rank: int, row: ShardRow) -> None:
        """Take ``src``'s row: the nulls it carries, then its columns."""
        if row.nulls:
            self._take_row_nulls(src, row)
        if self.table.merge(src_rank, row):
            self._deliver_stable()
            self._pump()

    def _take_row_nulls(self, src: NodeId, row: ShardRow) -> None:
        """Hold the nulls a row carries: its pusher's last ``row.nulls`` turns."""
        sender = self.sender_rank.get(src)
        if sender is None or self.mode is Mode.RAW or len(row.received) != len(self.senders):
            raise RemoteProtocolError(f"{src} pushed nulls in a row it cannot carry them in")
        end = row.received[sender]
        if not 0 < row.nulls <= end:
            raise RemoteProtocolError(f"{src} pushed {row.nulls} nulls below its count {end}")
        for index in range(end - row.nulls, end):
            self._hold(sender, index, None)
        self._after_arrival(sender)

    def place_block(self, src: NodeId, block: Block, data_bytes: int) -> memoryview | None:
        """Where the data of ``block``, still on its way from ``src`` (``data_bytes`` of it),
        can be read to directly: its place in the message's reassembly buffer. None if it
        cannot (a block not expected from ``src``, one held or placed already, a bad one, a
        wedged shard): it is then copied there on arrival, or refused, as usual.

        Only the member that relays the sender's blocks to this one gets a place, and only
        once per block: the buffer holds the message's other blocks, and whatever a
        transport reads into it is that block's data, which :meth:`receive` then finds in
        place (and does not copy) once the block has arrived whole.
        """
        sender = self.sender_rank.get(block.sender)
        src_rank = self.member_rank.get(src)
        if sender is None or src_rank is None or self.wedged:
            return None
        n = len(self.members)
        if src_rank == self.rank or (src_rank + 1) % n != self.rank:
            return None
        if (self.rank - self.member_rank[block.sender]) % n == 0:
            return None  # its own message: never relayed back
        try:
            assembly, start, expected = self._block_place(sender, block, data_bytes)
        except RemoteProtocolError:
            return None
        if assembly is None or block.block in assembly.placed:
            return None
        assembly.placed.add(block.block)
        return memoryview(assembly.buffer)[start : start + expected]

    def _block_place(
        self, sender: int, block: Block, data_bytes: int
    ) -> tuple[_Assembly | None, int, int]:
        """The assembly ``block`` belongs to (started if it is the first block to come; None
        for a message or block already held), and the block's offset and length in it.
        Raises :class:`RemoteProtocolError` for a block that cannot be part of its message."""
        size = block.block_size
        if not self._config.block_size <= size <= self._config.max_message_size:
            # Below the shard's block size, a message could come in more pieces (each a
            # flag in its assembly) than the configuration allows for.
            raise RemoteProtocolError(f"a block size of {size} bytes")
        num_blocks = -(-block.size // size)
        if not 0 <= block.block < num_blocks or block.size > self._config.max_message_size:
            raise RemoteProtocolError(f"block {block.block} of a {block.size}-byte message")
        start = block.block * size
        expected = min(size, block.size - start)
        if data_bytes != expected:
            raise RemoteProtocolError(
                f"block {block.block} carries {data_bytes} bytes, expected {expected}"
            )
        if self._already_held(sender, block.index):
            return None, start, expected
        key = (sender, block.index)
        assembly = self._assembling.get(key)
        if assembly is None:
            buffer = self._buffers.take(block.size)
            assembly = self._assembling[key] = _Assembly(buffer, size, num_blocks)
        elif assembly.block_size != size:
            raise RemoteProtocolError(
                f"block {block.block} of message {block.index} says blocks of {size} bytes, "
                f"an earlier one {assembly.block_size}"
            )
        if assembly.have[block.block]:
            return None, start, expected
        return assembly, start, expected

    def _receive_block(self, sender: int, block: Block) -> None:
        key = (sender, block.index)
        assembly, start, expected = self._block_place(sender, block, len(block.data))
        if assembly is None:
            self.duplicates += 1
            return
        if block.block in assembly.placed:
            # Only place_block makes views of the buffer that come back here: this one is the
            # view it gave for this block, its data already in place.
            if block.data.obj is not assembly.buffer:
                # The same block from another member while the relaying one's is still being
                # read into place: taking it would let that read go on writing into a block
                # held, relayed and perhaps delivered. The placed one is the one taken.
                self.duplicates += 1
                return
            assembly.placed.discard(block.block)
        else:
            assembly.buffer[start : start + expected] = block.data
        relay_to = self._relay_next[sender]
        if relay_to is not None:
            # Relayed from the reassembly buffer, not from the frame, whose memory the
            # transport reuses: the block may wait in a send queue. The pool does not reuse a
            # buffer while a queued block still views it.
            data = memoryview(assembly.buffer)[start : start + expected]
            self._outbox.append((relay_to, msgspec.structs.replace(block, data=data)))
        assembly.have[block.block] = True
        assembly.missing -= 1
        if assembly.missing == 0:
            del self._assembling[key]
            self._hold(sender, block.index, assembly)
            if self.persistent:
                self._stamps[sender].setdefault(block.index, block.stamp)
            self._after_arrival(sender)

    # -- internals --------------------------------------------------------------------------

    def _already_held(self, sender: int, index: int) -> bool:
        return index < self.table.received[self.rank][sender] or index in self._held[sender]

    def _hold(self, sender: int, index: int, payload: Payload) -> None:
        if self._already_held(sender, index):
            self.duplicates += 1
            return
        self._held[sender][index] = payload

    def _after_arrival(self, sender: int) -> None:
        """Advance the own ``received`` counter over what is now contiguous (messages or
        nulls), then deliver."""
        received = self.table.received[self.rank]
        held = self._held[sender]
        count = received[sender]
        if self.mode is Mode.RAW:
            arrived = 0
            while count in held:
                payload = held.pop(count)
                if isinstance(payload, _Assembly):
                    arrived += len(payload.buffer)
                elif payload is not None:
                    arrived += len(payload)
                self._deliver(sender, count, payload)
                count += 1
            self._unacked_bytes[sender] += arrived
            for index, payload in held.items():
                if isinstance(payload, memoryview):
                    held[index] = bytes(payload)  # it outlives its frame: a gap before it
        else:
            while count in held:
                count += 1
        if count == received[sender]:
            return
        was = received[sender]
        received[sender] = count
        if self.mode is Mode.RAW:
            if (
                count - self._acked[sender] >= self._ack_every
                or self._unacked_bytes[sender] >= self._ack_every_bytes
            ):
                self.acks_due.add(sender)
            self._last_arrival[sender] = self._clock.now
            self._unacked = True
            return
        # The last message (not a null) among those now held without a gap: what a malformed
        # index sends ahead of the rest moves nothing. Looked for whatever arrived: a relayed
        # large message may come after the nulls that follow it, and before the nulls that
        # precede it (they come straight from its sender, it along the relay chain), which
        # then close the gap before a message already held. Missed there, it never moved
        # ``furthest``: this member did not fill its turns before it, and the shard stalled.
        index = count - 1
        while index >= was and held[index] is None:
            index -= 1
        holds_message = index >= was
        self._row_moved(urgent=holds_message)
        if holds_message:
            self.furthest = max(self.furthest, index * len(received) + sender)
        self._advance_seq()
        self._pump()

    def _row_moved(self, *, urgent: bool) -> None:
        """The own row changed: push it at the end of this input if ``urgent``, else with the
        next push or at the next tick.

        A change is not urgent when only nulls made it (they arrived, or, in a ``Paxos``
        shard, they count as logged) and no message lies in the stretch of global indices it
        covers: no member waits for it, since a null is delivered as
        nothing, and the next message, whoever sends it, makes every member push its row
        anyway, with what it holds and logged of the nulls before it. This is the case of one
        member sending alone: the others fill their turns of its rounds with nulls, and the
        rows that showed those nulls held (and logged) cost each member a second push per
        message (2.3 rows a message in a shard of three, not 1). Once wedged, every change
        goes at once: the ragged-edge cleanup reads the rows.
        """
        if urgent or self.wedged:
            self.dirty = True
        else:
            self.lagging = True

    def _advance_seq(self) -> None:
        """Move the own ``seq`` over what is now held without a gap, and deliver."""
        received = self.table.received[self.rank]
        # The global index after the last one held without a gap: the first missing message
        # is the lowest count's, at the lowest rank among equals (count * s + rank, computed
        # in C: this runs on every arrival).
        lowest = min(received)
        seq = lowest * len(received) + received.index(lowest) - 1
        before = self.table.seq[self.rank]
        if seq > before:
            self.table.seq[self.rank] = seq
            if not self.dirty:
                self._row_moved(urgent=self._holds_message(before + 1, seq))
            self._deliver_stable()

    def _holds_message(self, first: int, last: int) -> bool:
        """Whether a message (not a null) waits for delivery at a global index in
        ``first..last``."""
        s = len(self.senders)
        held = self._held
        return any(held[k % s].get(k // s) is not None for k in range(first, last + 1))

    def _deliver_stable(self) -> None:
        if self.mode is Mode.RAW or self.wedged:
            return
        stable = self.table.min_seq()
        if self.persistent:
            if stable > self.persist_requested:
                self._request_persist(stable)
            stable = min(stable, self._everywhere())
        if stable <= self.delivered_upto:
            return
        self._deliver_upto(stable)

    def _deliver_upto(self, last: int) -> None:
        # The per-delivery loop of every ordered and Paxos message, its lookups hoisted (a
        # sixth of a saturated member's CPU was this loop when it called _deliver for each).
        s = len(self.senders)
        held, senders, append = self._held, self.senders, self._events.append
        epoch, subgroup, shard, mode = self.epoch, self.subgroup, self.shard, self.mode
        persistent, timestamps = self.persistent, self._timestamps
        for k in range(self.delivered_upto + 1, last + 1):
            sender, index = k % s, k // s
            payload = held[sender].pop(index)
            if payload is None:
                continue
            if isinstance(payload, _Assembly):
                payload = memoryview(payload.buffer).toreadonly()
            timestamp = timestamps.pop(k, 0) if persistent else 0
            append(
                Delivered(epoch, subgroup, shard, mode, senders[sender], index, payload, timestamp)
            )
        self.delivered_upto = last
        # No push for this alone: no member acts on another's ``delivered`` column (it is
        # there for anyone inspecting the table), and a push per delivery would double the
        # frames every message costs at light load. It travels with the next push.
        self.table.delivered[self.rank] = last

    def _deliver(self, sender: int, index: int, payload: Payload) -> None:
        """Deliver one message of a ``Raw`` shard as it arrives (ordered and ``Paxos`` shards
        deliver in :meth:`_deliver_upto`)."""
        assert self.mode is Mode.RAW, "only Raw shards deliver on arrival"
        if isinstance(payload, _Assembly):
            payload = memoryview(payload.buffer).toreadonly()
        if payload is not None:
            self._events.append(
                Delivered(
                    self.epoch,
                    self.subgroup,
                    self.shard,
                    self.mode,
                    self.senders[sender],
                    index,
                    payload,
                )
            )

    # -- persistence (Paxos) ----------------------------------------------------------------

    def _request_persist(self, upto: int) -> None:
        """Hand the held messages after the last request, up to global index ``upto``, to the
        driver to log, with their timestamps, in the shard's order."""
        s = len(self.senders)
        records: list[LogRecord] = []
        # Stable means every member's row arrived, floors included: the same here as at every
        # other member, so the first timestamp of the epoch is raised alike.
        floor = max(self.table.floor)
        for k in range(self.persist_requested + 1, upto + 1):
            sender, index = k % s, k // s
            held = self._held[sender]
            if index not in held:
                raise RemoteProtocolError(
                    f"asked to log message {index} of sender {sender}, not held here"
                )
            payload = held[index]
            stamp = self._stamps[sender].pop(index, 0)
            if payload is None:
                continue
            if isinstance(payload, _Assembly):
                payload = memoryview(payload.buffer).toreadonly()
            timestamp = max(self._last_timestamp + 1, floor + 1, stamp)
            self._last_timestamp = timestamp
            self._timestamps[k] = timestamp
            self._logged += 1
            records.append(
                LogRecord(self.epoch, k, self._logged, self.senders[sender], timestamp, payload)
            )
        if (
            not records
            and not self.wedged
            and self.table.persisted[self.rank] == self.persist_requested
        ):
            # Nulls alone, and nothing of this member's is being logged: logged as they
            # stand. (A request for nothing cost the driver a turn of its loop to answer, and
            # each member a push of the row that showed it.)
            self.persist_requested = self.table.persisted[self.rank] = upto
            self._row_moved(urgent=False)
            return
        self.persist_requested = upto
        self._events.append(
            PersistRequested(self.epoch, self.subgroup, self.shard, upto, tuple(records))
        )

    def cut_logged(self) -> None:
        """The driver logged durably the mark that this member's log holds the decision it
        published (:class:`~pyderecho.core.events.CutLogRequested`), after every record."""
        if not self.persistent:
            raise LocalProtocolError(f"subgroup {self.subgroup} is not a Paxos shard")
        if not self.table.cutoff[self.rank]:
            raise LocalProtocolError("a cut logged before this member published a decision")
        if not self.table.cut_logged[self.rank]:
            self.table.cut_logged[self.rank] = True
            self._row_moved(urgent=True)

    def persisted(self, upto: int) -> None:
        """The driver logged durably everything requested up to global index ``upto``."""
        if not self.persistent:
            raise LocalProtocolError(f"subgroup {self.subgroup} is not a Paxos shard")
        if upto > self.persist_requested:
            raise LocalProtocolError(
                f"persisted up to {upto}, but only {self.persist_requested} was requested"
            )
        persisted = self.table.persisted
        before = persisted[self.rank]
        if upto <= before:
            return
        persisted[self.rank] = upto
        if not self.dirty:
            self._row_moved(urgent=self._holds_message(before + 1, upto))
        self._report_frontiers()
        self._deliver_stable()

    def _everywhere(self) -> int:
        everywhere = self.table.min_persisted()
        if everywhere > self._reported_everywhere:
            self._report_frontiers()
        return everywhere

    def _report_frontiers(self) -> None:
        everywhere = self.table.min_persisted()
        self._reported_everywhere = everywhere
        self._events.append(
            Persisted(
                self.epoch, self.subgroup, self.shard, self.table.persisted[self.rank], everywhere
            )
        )

    def _pump(self) -> None:
        """Send what the window allows, then nulls if the round robin waits on this sender."""
        me = self.my_sender_rank
        if me < 0 or self.wedged:
            return
        limit = self._config.block_size
        window_bytes = self._config.window_bytes
        # Sending moves this member's own counter, which can open the window further (in a
        # shard of one it is the only counter): go round until the window stops moving.
        while self.pending:
            received = self.table.min_received(me)
            in_flight = self._in_flight
            while in_flight and in_flight[0][0] < received:
                self._in_flight_bytes -= in_flight.popleft()[1]
            window_end = received + self._config.window_size
            if self.next_index >= window_end:
                break
            room = window_bytes - self._in_flight_bytes
            if room < len(self.pending[0]) and self._in_flight_bytes:
                break
            batch: list[bytes] = []
            batch_bytes = 0
            while self.pending and self.next_index + len(batch) < window_end:
                payload = self.pending[0]
                size = len(payload)
                if size > room and (batch or self._in_flight_bytes):
                    break
                self.pending.popleft()
                self.pending_bytes -= size
                room -= size
                if size > limit or batch_bytes + size > limit:
                    self._transmit_small(batch, batch_bytes)
                    batch, batch_bytes = [], 0
                if size > limit:
                    self._transmit_large(payload)
                else:
                    batch.append(payload)
                    batch_bytes += size
            self._transmit_small(batch, batch_bytes)
        if not self.pending and self.mode is not Mode.RAW:
            self._send_nulls()

    def _transmit_small(self, payloads: list[bytes], size: int) -> None:
        if not payloads:
            return
        self.send_unsent_nulls()
        me = self.my_sender_rank
        first = self.next_index
        self._in_flight.append((first + len(payloads) - 1, size))
        self._in_flight_bytes += size
        views: tuple[memoryview, ...] = tuple(map(memoryview, payloads))
        stamp = self._clock.stamp() if self.persistent else 0
        data = Data(self.epoch, self.subgroup, self.shard, self.senders[me], first, views, stamp)
        self._outbox.extend((peer, data) for peer in self.peers)
        held = self._held[me]
        if self.persistent:
            stamps = self._stamps[me]
            for offset in range(len(payloads)):
                stamps[first + offset] = stamp
        epoch, subgroup, shard, append = self.epoch, self.subgroup, self.shard, self._events.append
        index = first
        for payload in payloads:
            append(MessageSent(epoch, subgroup, shard, index, payload))
            held[index] = payload
            index += 1
        self._claim_indices(first + len(payloads))

    def _transmit_large(self, payload: bytes) -> None:
        self.send_unsent_nulls()
        me = self.my_sender_rank
        index = self.next_index
        self._in_flight.append((index, len(payload)))
        self._in_flight_bytes += len(payload)
        sender = self.senders[me]
        self._events.append(MessageSent(self.epoch, self.subgroup, self.shard, index, payload))
        relay_to = self._relay_next[me]
        size = self._block_size_for(len(payload))
        view = memoryview(payload)
        stamp = self._clock.stamp() if self.persistent else 0
        if self.persistent:
            self._stamps[me][index] = stamp
        for number, start in enumerate(range(0, len(payload), size)):
            block = Block(
                self.epoch,
                self.subgroup,
                self.shard,
                sender,
                index,
                len(payload),
                number,
                size,
                stamp,
                view[start : start + size],
            )
            if relay_to is not None:
                self._outbox.append((relay_to, block))
        self._held[me][index] = payload
        self._claim_indices(index + 1)

    def _block_size_for(self, size: int) -> int:
        """The block size of this sender's next large message, of ``size`` bytes (already
        counted in flight): the shard's ``block_size`` when it goes alone, since small blocks
        pipeline along the chain (with k blocks and h hops a message takes about (k+h-1)/k
        times a link's transfer of it); :data:`BUSY_BLOCKS` times that, up to
        :data:`BUSY_BLOCK_BYTES`, when other messages of this sender, at least a block's worth,
        are in flight or wait behind it (a few small ones leave the links free). Then every
        link is busy with some message anyway, pipelining gains nothing, and each block costs
        a frame's handling at every member it crosses: fewer, larger blocks carried 1 MiB
        messages over TCP ~45% faster, 4 MiB ones ~10-30% (docs/architecture.md)."""
        block_size = self._config.block_size
        if self._in_flight_bytes - size + self.pending_bytes >= block_size:
            # One block at most: a block size past the message's would be past the largest
            # message a receiver accepts.
            return max(block_size, min(BUSY_BLOCKS * block_size, BUSY_BLOCK_BYTES, size))
        return block_size

    def _send_nulls(self) -> None:
        """Fill this sender's turns before the next turn of the sender of the furthest
        message received.

        Turns before the furthest message must be filled for it to be delivered. The turns
        after it up to its sender's next one are filled too: a member that sends alone (one
        client calling one member) then finds every other member's turn before its next
        message already filled and held everywhere, and that message is stable after one
        round of rows, not two (the second waiting for the nulls to reach every member).
        Only messages move this bound, never nulls, and nothing beyond that next turn is
        filled ahead, so an idle group stops sending nulls. (Filling to the end of the
        furthest round, as before, left the turns before a lone sender's next one empty for
        every sender but the first: each of its messages then waited for nulls sent in answer
        to it, a second round of rows.)
        """
        furthest = self.furthest
        if furthest < 0:
            return
        me, s = self.my_sender_rank, len(self.senders)
        # The own turns at global indices below the furthest message's sender's next turn,
        # ``furthest + s``: index i is at i*s + me.
        upto = (furthest + 2 * s - me - 1) // s
        assert self.table.received[self.rank][me] == self.next_index, "own count is next_index"
        if upto <= self.next_index:
            return
        first, count = self.next_index, upto - self.next_index
        self._events.append(NullsSent(self.epoch, self.subgroup, self.shard, first, count))
        held = self._held[me]
        for index in range(first, upto):
            held[index] = None
        # They ride on the row pushed at the end of this input (the own count moved).
        self.unsent_nulls += count
        self._claim_indices(upto)

    def send_unsent_nulls(self) -> None:
        """Send the nulls no frame carried yet as a frame of their own: before a message
        (a row carries only the last turns), or when the own row goes to some members only."""
        count = self.unsent_nulls
        if count:
            self.unsent_nulls = 0
            me = self.senders[self.my_sender_rank]
            nulls = Nulls(self.epoch, self.subgroup, self.shard, me, self.next_index - count, count)
            self._outbox.extend((peer, nulls) for peer in self.peers)

    def _claim_indices(self, upto: int) -> None:
        """Own messages (or nulls) below ``upto`` are sent: count them as held here."""
        me = self.my_sender_rank
        self.next_index = upto
        if self.mode is Mode.RAW:
            # No push: only this member reads its own count of its own messages.
            held = self._held[me]
            received = self.table.received[self.rank]
            for index in range(received[me], upto):
                self._deliver(me, index, held.pop(index))
            received[me] = upto
        else:
            self.dirty = True
            self.table.received[self.rank][me] = upto
            self._advance_seq()

    # -- view change ------------------------------------------------------------------------

    def wedge(self) -> None:
        """Stop sending and stop ordered delivery: from now on the ragged edge decides."""
        if not self.wedged:
            self.wedged = True
            self.table.wedged[self.rank] = True
            self.dirty = True

    def suspect(self, node: NodeId) -> None:
        """Mark ``node`` suspected in the own row, so a new shard leader knows this member no
        longer listens to it."""
        rank = self.member_rank.get(node)
        if rank is not None and not self.table.suspected[self.rank] >> rank & 1:
            self.table.suspected[self.rank] |= 1 << rank
            self.dirty = True

    def publish_cutoff(self, cutoff: tuple[int, ...]) -> bool:
        """Hold the ragged-edge decision in the own row, for the other members to echo; False,
        publishing nothing, if this member does not hold everything ``cutoff`` keeps.

        A decision is the minimum of what the members its leader counted on received, so each
        of them holds all it keeps; a member that does not was left out of it: the change's
        leader excluded it, though the exclusion has not reached it yet (a ``Raw`` shard
        delivers at receipt and holds nothing back, so it cannot tell). A member publishes one
        decision, ever: once it has, this is a no-op.

        A ``Paxos`` shard starts logging what the decision keeps at once, then the mark that
        its log holds this epoch's cut (:class:`~pyderecho.core.events.CutLogRequested`): the
        others wait for both before they deliver, even while it still collects their echoes.
        """
        if self.table.cutoff[self.rank]:
            return True
        if self.mode is not Mode.RAW and not self._walk_kept(cutoff)[1]:
            return False
        self.table.cutoff[self.rank] = cutoff
        self.dirty = True
        if self.persistent:
            last = self._cutoff_last()
            if last > self.persist_requested:
                self._request_persist(last)
            self._events.append(CutLogRequested(self.epoch, self.subgroup, self.shard))
        return True

    def _walk_kept(self, cutoff: tuple[int, ...]) -> tuple[int, bool]:
        """Walk the normal order from the first undelivered message through what ``cutoff``
        keeps: the global index where the walk stopped, and True if it stopped past the last
        message kept, False if on one not held here."""
        s = len(self.senders)
        k = self.delivered_upto + 1
        while k // s < cutoff[k % s]:
            if k // s not in self._held[k % s]:
                return k, False
            k += 1
        return k, True

    def _cutoff_last(self) -> int:
        """The last global index the published decision keeps; every message up to it must be
        held here (the decision is the minimum over the survivors of what they hold, and a
        member publishes only a decision it holds: :meth:`publish_cutoff`)."""
        cutoff = self.table.cutoff[self.rank]
        end, held = self._walk_kept(cutoff)
        if not held:
            s = len(self.senders)
            raise RemoteProtocolError(
                f"cutoff {cutoff} keeps message {end // s} of sender {end % s}, not held here"
            )
        return end - 1

    def apply_cutoff(self, live: list[int]) -> list[int]:
        """Deliver exactly what the published ragged-edge decision keeps, in the normal order;
        the rest of this epoch is discarded here and at every other survivor.

        ``live`` are the ranks of the surviving members this member listens to. A ``Paxos``
        shard first logs what the decision keeps and delivers it only once every live member
        has logged it too, with the mark that says so (``cut_logged``), so that whatever any
        survivor delivers is in every survivor's log, and a member whose disk lacks the mark
        is one that no survivor counted on when it delivered the cut.
        Returns the ranks it still waits on (empty once applied).
        """
        if self.mode is not Mode.RAW:
            last = self._cutoff_last()
            if self.persistent:
                assert last <= self.persist_requested, "publish_cutoff asked to log the cut"
                waiting = [rank for rank in live if not self.table.cut_logged[rank]]
                self.logging_cutoff = bool(waiting)
                if waiting:
                    return waiting
            self._deliver_upto(last)
        self.table.cleaned[self.rank] = True
        self.dirty = True  # the members that follow this one apply the decision once it has
        return []

    @property
    def cleaned(self) -> bool:
        """The ragged-edge decision has been applied: this epoch's deliveries are final (the
        own row's ``cleaned`` column, which the other members read)."""
        return self.table.cleaned[self.rank]

    @property
    def flushed(self) -> bool:
        """Every message this member sent is delivered (ordered) or held everywhere (raw)."""
        me = self.my_sender_rank
        if me < 0:
            return True
        if self.pending:
            return False
        if self.mode is Mode.RAW:
            return self.table.min_received(me) >= self.next_index
        return not any(payload is not None for payload in self._held[me].values())

    @property
    def idle(self) -> bool:
        """Nothing queued, in flight or undelivered here: with every member idle, every message
        sent has been delivered everywhere."""
        return (
            self.flushed
            and not any(self._held)
            and not self._assembling
            and self.table.persisted[self.rank] >= self.persist_requested
        )

    def leftover(self) -> list[bytes]:
        """Own messages this epoch did not deliver, oldest first: they are re-sent in the next
        view. Raw shards never re-send (a raw message may have been delivered somewhere)."""
        me = self.my_sender_rank
        unsent = list(self.pending)
        if me < 0 or self.mode is Mode.RAW:
            return unsent
        held = self._held[me]
        trimmed: list[bytes] = []
        for index in sorted(held):
            payload = held[index]
            assert not isinstance(payload, _Assembly), "a sender holds its messages as sent"
            if payload is not None:
                trimmed.append(bytes(payload))
        return trimmed + unsent

    @property
    def last_timestamp(self) -> int:
        """``Paxos``: the last timestamp this shard gave a message in this epoch, or the floor
        it started from: what the next epoch's timestamps rise above."""
        return max(self._last_timestamp, self.table.floor[self.rank])

    def row(self, *, to_every_member: bool = False) -> ShardRow:
        """The own row, to push to the other members; going ``to_every_member``, it carries
        the nulls no frame carried yet."""
        self.dirty = self.lagging = False
        nulls = 0
        if to_every_member:
            nulls, self.unsent_nulls = self.unsent_nulls, 0
        return self.table.row(self.rank, self.epoch, self.subgroup, self.shard, nulls)

    def row_as_it_stands(self) -> ShardRow:
        """The own row, for one member that asked for it: not a push, so whatever was due
        to go to the others still goes."""
        return self.table.row(self.rank, self.epoch, self.subgroup, self.shard)

    def push_lagging_row(self) -> None:
        """At a tick: a row that moved only by nulls (:meth:`_row_moved`) and went with no
        push since goes now, so a group that fell quiet ends with every null stable."""
        if self.lagging:
            self.dirty = True

    def acknowledge_quiet_senders(self, now: float, after: float) -> None:
        """``Raw``: owe an acknowledgement to each sender that sent nothing for ``after``
        seconds and has not been told all this member received of it."""
        if not self._unacked:
            return  # an idle member's tick stays a few operations, whatever the shard's size
        received = self.table.received[self.rank]
        lagging = False
        for sender, count in enumerate(received):
            if count > self._acked[sender] and sender != self.my_sender_rank:
                lagging = True
                if now - self._last_arrival[sender] >= after:
                    self.acks_due.add(sender)
        self._unacked = lagging

    def told(self, senders: Iterable[int]) -> None:
        """``Raw``: the own row, as it is now, went to these senders (ranks)."""
        received = self.table.received[self.rank]
        for sender in senders:
            self._acked[sender] = received[sender]
            self._unacked_bytes[sender] = 0
        self.acks_due.clear()
