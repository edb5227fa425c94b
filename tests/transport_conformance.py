"""What every transport promises the protocol core, as reusable async checks.

Each ``check_*`` builds its own group of transports through a :data:`TransportFactory`, runs one
property of the :class:`~pyderecho.transport.base.Transport` contract against it, closes every
transport and verifies that no asyncio task is left behind. A transport's test module runs each
check inside an event loop, for example::

    def test_fifo() -> None:
        asyncio.run(check_fifo_and_integrity(make_my_transports))

The factory receives one :class:`Recorder` per transport wanted and must return started, fully
connected transports, the i-th started with ``recorders[i].on_frame`` and
``recorders[i].on_peer_lost``, with distinct node ids::

    async def make_my_transports(recorders: Sequence[Recorder]) -> list[Transport]:
        transports = [MyTransport(node_id=i, ...) for i in range(len(recorders))]
        return await start_all_to_all(transports, recorders)  # start each, each dials all

``close()`` must be idempotent (a check may close a member early; all are closed at the end).
The factory owns the callbacks' wiring because :meth:`Transport.start` is the only way to install
them, and the checks must observe every delivery. Frames of up to :data:`LARGE_FRAME` bytes must
be accepted, and each peer's send queue must hold :data:`WINDOW_BYTES` (the checks never have
more than that outstanding to one peer).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from pyderecho.core.view import NodeId
from pyderecho.transport.base import Frame, Transport, frame_size, joined

MiB = 1 << 20
MAX_RANDOM_FRAME = 1 * MiB
"""The largest frame of the random mixes."""
LARGE_FRAME = 4 * MiB
"""The frame size :func:`check_large_frames` sends by default."""
WINDOW_BYTES = 8 * MiB
"""The most a check has in flight to one peer before waiting for the peer to catch up."""
TIMEOUT_S = 20.0
"""How long any single wait may take before the check fails (instead of hanging)."""

Digest = tuple[int, bytes]
"""A frame as the checks remember it: its length and a hash of its content."""


def digest(frame: Frame) -> Digest:
    data = joined(frame)
    return len(memoryview(data).cast("B")), hashlib.blake2b(data, digest_size=16).digest()


class Recorder:
    """The callbacks of one transport: remembers every frame (as a digest) and every loss.

    Waiting is driven by the callbacks themselves (an event set on each one), never by polling.
    """

    def __init__(self) -> None:
        self.frames: defaultdict[NodeId, list[Digest]] = defaultdict(list)
        self.lost: list[tuple[NodeId, str]] = []
        self.answer_with: Transport | None = None
        """When set, every frame is answered on this transport, as a member answers with a
        row (:func:`check_a_closing_transport_hands_over_no_frames`)."""
        self._changed = asyncio.Event()

    def on_frame(self, peer: NodeId, frame: memoryview) -> None:
        self.frames[peer].append(digest(frame))
        self._changed.set()
        if self.answer_with is not None:
            self.answer_with.send(peer, b"answer")

    def on_peer_lost(self, peer: NodeId, reason: str) -> None:
        self.lost.append((peer, reason))
        self._changed.set()

    def lost_peers(self) -> list[NodeId]:
        return [peer for peer, _ in self.lost]

    async def wait_for_frames(self, sender: NodeId, count: int) -> None:
        """Return once ``count`` frames from ``sender`` have arrived in all."""
        await self.wait_until(
            lambda: len(self.frames[sender]) >= count, f"{count} frames from node {sender}"
        )

    async def wait_for_loss(self, peer: NodeId) -> None:
        """Return once ``on_peer_lost(peer, ...)`` has been called."""
        await self.wait_until(lambda: peer in self.lost_peers(), f"node {peer} to be lost")

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        """Return once ``predicate()`` holds; fail with ``what`` after :data:`TIMEOUT_S`."""
        try:
            async with asyncio.timeout(TIMEOUT_S):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {TIMEOUT_S} s waiting for {what}") from None


TransportFactory = Callable[[Sequence[Recorder]], Awaitable[list[Transport]]]


class ListeningTransport(Transport, Protocol):
    """A transport that knows the address its peers reach it at, once started."""

    @property
    def address(self) -> str: ...


async def start_all_to_all(
    transports: Sequence[ListeningTransport], recorders: Sequence[Recorder]
) -> list[Transport]:
    """Start each transport with its recorder's callbacks and have each dial all the others:
    what a factory returns."""
    for transport, recorder in zip(transports, recorders, strict=True):
        await transport.start(recorder.on_frame, recorder.on_peer_lost)
    for a in transports:
        for b in transports:
            if a is not b:
                a.connect(b.node_id, b.address)
    return list(transports)


"""Builds ``len(recorders)`` started and connected transports (see the module docstring)."""


@asynccontextmanager
async def group_of(
    make: TransportFactory, size: int
) -> AsyncIterator[tuple[list[Transport], list[Recorder]]]:
    """Build ``size`` transports; on the way out close them all and require that no task the
    transports started outlives :meth:`Transport.close`."""
    before = asyncio.all_tasks()
    recorders = [Recorder() for _ in range(size)]
    transports = await make(recorders)
    assert len(transports) == size
    assert len({t.node_id for t in transports}) == size, "node ids must be distinct"
    try:
        yield transports, recorders
    finally:
        for transport in transports:
            await transport.close()
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not leaked, f"tasks left running after close(): {leaked}"


def random_frames(rng: random.Random, count: int, pool: bytes) -> list[Frame]:
    """``count`` frames of mixed sizes (mostly small, some up to :data:`MAX_RANDOM_FRAME`),
    always including an empty one and a maximal one; some are memoryview slices of ``pool``,
    some ``bytes`` and some given in parts (as a large block goes: header, then data), so
    every kind of frame travels."""
    view = memoryview(pool)
    frames: list[Frame] = []
    for i in range(count):
        kind = rng.random()
        if i == 0:
            size = 0
        elif i == 1:
            size = MAX_RANDOM_FRAME
        elif kind < 0.5:
            size = rng.randrange(0, 64)
        elif kind < 0.9:
            size = rng.randrange(0, 64 * 1024)
        else:
            size = rng.randrange(0, MAX_RANDOM_FRAME + 1)
        start = rng.randrange(0, len(pool) - size + 1)
        piece = view[start : start + size]
        if i % 3 == 2 and size:
            cut = rng.randrange(size + 1)
            frames.append((bytes(piece[:cut]), piece[cut:]))
        else:
            frames.append(piece if i % 3 else bytes(piece))
    rng.shuffle(frames)
    return frames


async def exchange(
    transports: Sequence[Transport],
    recorders: Sequence[Recorder],
    plan: dict[tuple[int, int], list[Frame]],
) -> None:
    """Send ``plan[(i, j)]`` from transport ``i`` to transport ``j`` (indices), interleaving all
    pairs, and wait until every frame arrived; then require exact, in-order, intact delivery.

    At most :data:`WINDOW_BYTES` are outstanding per pair: a round sends up to that much on each
    pair, then waits for the receivers to hold it all.
    """
    ids = [t.node_id for t in transports]
    start = {
        pair: len(recorders[pair[1]].frames[ids[pair[0]]]) for pair in plan
    }  # frames delivered before this exchange
    cursor = dict.fromkeys(plan, 0)
    while any(cursor[pair] < len(frames) for pair, frames in plan.items()):
        for (src, dst), frames in plan.items():
            budget = WINDOW_BYTES
            while cursor[src, dst] < len(frames):
                frame = frames[cursor[src, dst]]
                size = frame_size(frame)
                if size > budget and budget < WINDOW_BYTES:
                    break
                transports[src].send(ids[dst], frame)
                budget -= size
                cursor[src, dst] += 1
        for (src, dst), count in cursor.items():
            await recorders[dst].wait_for_frames(ids[src], start[src, dst] + count)
    for (src, dst), frames in plan.items():
        got = recorders[dst].frames[ids[src]][start[src, dst] :]
        want = [digest(frame) for frame in frames]
        assert len(got) == len(want), f"{ids[src]}->{ids[dst]}: {len(got)} frames, not {len(want)}"
        for index, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"{ids[src]}->{ids[dst]}: frame {index} differs ({g[0]} vs {w[0]} bytes)"


async def ping(
    transports: Sequence[Transport], recorders: Sequence[Recorder], pairs: Sequence[tuple[int, int]]
) -> None:
    """One small frame on each ``(i, j)`` pair, delivered: the links still work."""
    await exchange(transports, recorders, {pair: [b"ping %d %d" % pair] for pair in pairs})


async def check_fifo_and_integrity(make: TransportFactory, *, frames: int = 150) -> None:
    """Two members send each other ``frames`` frames at once, sizes 0..1 MiB (bytes and
    memoryview slices mixed): each side receives exactly the other's frames, each intact, in the
    order sent, with nothing lost, duplicated or reordered."""
    rng = random.Random(1)
    pool = rng.randbytes(2 * MAX_RANDOM_FRAME)
    async with group_of(make, 2) as (transports, recorders):
        plan = {
            (0, 1): random_frames(rng, frames, pool),
            (1, 0): random_frames(rng, frames, pool),
        }
        await exchange(transports, recorders, plan)
        assert all(not r.lost for r in recorders), [r.lost for r in recorders]


async def check_all_to_all(make: TransportFactory, *, size: int = 4, frames: int = 40) -> None:
    """Every member of a group of ``size`` sends to every other at once: each receiver keeps
    each sender's order, and frames from different senders never bleed into each other."""
    rng = random.Random(2)
    pool = rng.randbytes(2 * MAX_RANDOM_FRAME)
    async with group_of(make, size) as (transports, recorders):
        plan = {
            (i, j): random_frames(rng, frames, pool)
            for i in range(size)
            for j in range(size)
            if i != j
        }
        await exchange(transports, recorders, plan)
        assert all(not r.lost for r in recorders), [r.lost for r in recorders]


async def check_large_frames(make: TransportFactory, *, size: int = LARGE_FRAME) -> None:
    """Frames of ``size`` bytes, interleaved with tiny ones, arrive whole and in order both
    ways (a large frame must not hold up, or be cut by, the small ones behind it)."""
    rng = random.Random(3)
    big = [rng.randbytes(size) for _ in range(2)]
    async with group_of(make, 2) as (transports, recorders):
        halves = (memoryview(big[1])[:7], memoryview(big[1])[7:])
        mixed: list[Frame] = [big[0], b"a", memoryview(big[1]), b"", b"b", halves]
        await exchange(transports, recorders, {(0, 1): mixed, (1, 0): mixed[::-1]})


async def check_peer_lost_on_close(make: TransportFactory) -> None:
    """When a member closes its transport, every peer hears ``on_peer_lost`` for it exactly
    once; the closing member hears nothing; sending to the lost peer is harmless; and the
    survivors keep exchanging frames."""
    async with group_of(make, 3) as (transports, recorders):
        everyone = [(i, j) for i in range(3) for j in range(3) if i != j]
        await ping(transports, recorders, everyone)
        gone = transports[2].node_id
        await transports[2].close()
        for recorder in recorders[:2]:
            await recorder.wait_for_loss(gone)
        transports[0].send(gone, b"into the void")
        await ping(transports, recorders, [(0, 1), (1, 0)])
        assert recorders[0].lost_peers() == [gone]
        assert recorders[1].lost_peers() == [gone]
        assert recorders[2].lost == []


async def check_disconnect(make: TransportFactory) -> None:
    """``a.disconnect(b)`` is silent at ``a`` (it decided), ``b`` hears ``on_peer_lost(a)``
    once (a removed member must notice it is cut off), and ``a``'s other links carry on."""
    async with group_of(make, 3) as (transports, recorders):
        everyone = [(i, j) for i in range(3) for j in range(3) if i != j]
        await ping(transports, recorders, everyone)
        a, b = transports[0].node_id, transports[1].node_id
        transports[0].disconnect(b)
        await recorders[1].wait_for_loss(a)
        transports[0].send(b, b"not for you")
        await ping(transports, recorders, [(0, 2), (2, 0), (1, 2), (2, 1)])
        assert recorders[0].lost == []
        assert recorders[1].lost_peers() == [a]
        assert recorders[2].lost == []


async def check_a_closing_transport_hands_over_no_frames(
    make: TransportFactory, nowhere: str = "nowhere"
) -> None:
    """Frames that arrive while a transport closes are dropped, not handed to the handler: a
    member answers a frame with a send, which a closing transport refuses, and the handler's
    error would be logged and counted against the innocent peer. ``nowhere`` is an address no
    member listens at, in the transport's form (the in-memory one takes any name): a dial to it
    is still in flight when close() waits for its task, and frames keep arriving meanwhile."""
    async with group_of(make, 2) as (transports, recorders):
        await ping(transports, recorders, [(0, 1), (1, 0)])
        recorders[1].answer_with = transports[1]
        closing = asyncio.Event()

        async def keep_sending() -> None:
            while not closing.is_set():
                transports[0].send(1, b"more")
                transports[0].flush()
                await asyncio.sleep(0)

        sender = asyncio.create_task(keep_sending())
        await recorders[1].wait_for_frames(0, 100)
        transports[1].connect(99, nowhere)
        await transports[1].close()
        closing.set()
        await sender
        assert transports[1].stats["handler_error"] == 0


ListeningFactory = Callable[[NodeId], ListeningTransport]
"""Makes one unstarted transport for a node id, for the ``threaded_check_*`` checks: they run
two members on two threads' event loops, so only a transport with real links between loops
(not the in-process memory transport) can take them."""


@asynccontextmanager
async def _linked_to_a_thread(
    make_one: ListeningFactory,
) -> AsyncIterator[tuple[ListeningTransport, threading.Event]]:
    """A receiver (node 1) on an event loop of its own thread and a sender (node 0) on this
    one, linked, the first frame across: yields the sender and an event the receiver sets at
    each frame. With the receiver on another thread, a frame arrives while this loop is
    blocked only if it was written already."""
    arrived = threading.Event()
    address: list[str] = []
    started = threading.Event()
    stop: asyncio.Future[None] | None = None
    receiver_loop: asyncio.AbstractEventLoop | None = None

    async def receive() -> None:
        nonlocal stop, receiver_loop
        receiver_loop = asyncio.get_running_loop()
        stop = receiver_loop.create_future()
        transport = make_one(1)
        await transport.start(lambda src, frame: arrived.set(), lambda peer, reason: None)
        address.append(transport.address)
        started.set()
        try:
            await stop
        finally:
            await transport.close()

    thread = threading.Thread(target=asyncio.run, args=(receive(),), daemon=True)
    thread.start()
    assert started.wait(TIMEOUT_S), "the receiver did not start"
    sender = make_one(0)
    await sender.start(lambda src, frame: None, lambda peer, reason: None)
    try:
        sender.connect(1, address[0])
        async with asyncio.timeout(TIMEOUT_S):
            sender.send(1, b"hello")
            while not arrived.is_set():  # the link opens and the first frame crosses
                await asyncio.sleep(0.01)
        arrived.clear()
        yield sender, arrived
    finally:
        await sender.close()
        assert receiver_loop is not None and stop is not None
        receiver_loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(TIMEOUT_S)


async def threaded_check_flush_sends_without_a_turn_of_the_loop(make_one: ListeningFactory) -> None:
    """:meth:`Transport.flush` puts what :meth:`Transport.send` queued on the link at once: a
    receiver on another thread gets the frame while the sender's loop is blocked. Without the
    flush the frame waits for the sender's loop to turn, which is what the check proves too
    (else it could not tell a flush from a send that writes at once)."""
    async with _linked_to_a_thread(make_one) as (sender, arrived):
        sender.send(1, b"queued")
        assert not arrived.wait(0.3), "a frame left without a flush or a turn of the loop"
        sender.flush()
        assert arrived.wait(TIMEOUT_S), "flush() did not put the frame on the link"


async def threaded_check_caller_flushes_leaves_the_write_to_flush(
    make_one: ListeningFactory,
) -> None:
    """A frame sent with ``caller_flushes`` waits for :meth:`Transport.flush`, however often
    the loop turns (the transport scheduled no flush of its own), and leaves with it; a frame
    sent without it leaves once the loop turns, also behind one that waits for the caller on
    the same link."""
    async with _linked_to_a_thread(make_one) as (sender, arrived):
        sender.send(1, b"the caller flushes", caller_flushes=True)
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not arrived.is_set(), "a frame sent with caller_flushes left without flush()"
        sender.flush()
        assert arrived.wait(TIMEOUT_S), "flush() did not put the frame on the link"
        for waiting in (False, True):
            arrived.clear()
            if waiting:
                sender.send(1, b"the caller flushes, later", caller_flushes=True)
            sender.send(1, b"the transport flushes")
            async with asyncio.timeout(TIMEOUT_S):
                while not arrived.is_set():
                    await asyncio.sleep(0.01)
