"""Heartbeats over TCP that wake nobody: an idle member wakes for its tick, not for each beat.

A receiver whose tick finds a link holding nothing but beats raises its receive low-water
mark (``SO_RCVLOWAT``) to :data:`~pyderecho.transport.framing.QUIET_BYTES`: a heartbeat, a
dozen bytes, then waits in the kernel until the receiver reads it at its next tick
(:meth:`TcpTransport.beats_seen`), and every other write is padded past the mark by its
sender, so it wakes the receiver at once, whose first read lowers the mark again.
These tests check the transport on its own (a beat waits and is read at the tick, a frame
behind it wakes the receiver, beats from a peer nobody reads wake it once they fill the mark),
and a quiet group of real members that keeps its view on beats read that way. Planted: a frame
sent without the padding (as a beat is) waits unread, and members whose beats all go as
padded frames are woken for each, which the count of the quiet group catches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from typing import cast

from pyderecho.cli.demo import free_ports
from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Event, PeerMessage, Suspected, ViewInstalled
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.runtime.member import Member
from pyderecho.testing import MemoryNetwork, MemoryTransport
from pyderecho.transport.base import (
    Frame,
    FrameHandler,
    QuietBeats,
    Transport,
)
from pyderecho.transport.framing import QUIET_BYTES
from pyderecho.transport.tcp import TcpTransport
from pyderecho.wire import P2P, Heartbeat, decode, encode
from test_tcp_transport import GROUP, HERE, SECRET, legit_pair, run
from transport_conformance import digest
from wrapped_transport import WrappedTransport

UNREAD_S = 0.3
"""How long a beat is shown to wait unread: a wake-up would hand it on in microseconds."""
CONFIG = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5)
LAYOUT = layout_of({"Log": every_member(Mode.ORDERED)})
QUIET_S = 2.0
"""Four heartbeat timeouts with nothing but beats."""


def test_a_beat_waits_for_the_receivers_read_and_a_frame_behind_it_wakes_the_receiver() -> None:
    async def scenario() -> None:
        async with legit_pair() as (transports, recorders):
            sender, receiver = cast(list[TcpTransport], transports)
            assert isinstance(sender, QuietBeats)
            frames = recorders[1].frames[0]
            before = len(frames)
            assert receiver.beats_seen([0]) == []  # a tick found the link quiet: mark up
            assert sender.beat(1, 7, encode(Heartbeat(7)))
            sender.flush()
            await asyncio.sleep(UNREAD_S)
            assert len(frames) == before, "a beat woke its receiver"
            assert receiver.beats_seen([5]) == [] and len(frames) == before, "read for node 5"
            assert receiver.beats_seen([0]) == []
            assert frames[before:] == [digest(encode(Heartbeat(7)))], "not read at the tick"
            # A frame that must wake the receiver, sent behind a beat, takes the beat along.
            assert sender.beat(1, 8, encode(Heartbeat(8)))
            sender.send(1, b"x")
            sender.flush()
            await recorders[1].wait_for_frames(0, before + 3)
            assert frames[before + 1 :] == [digest(encode(Heartbeat(8))), digest(b"x")]
            assert receiver.stats["beat_reads"] == 1

    run(scenario())


def test_beats_nobody_reads_wake_the_receiver_once_they_fill_the_mark() -> None:
    """A peer this member does not expect beats from (one in another view) is read late, not
    never: its beats pile up in the kernel until they reach the low-water mark."""

    async def scenario() -> None:
        async with legit_pair() as (transports, recorders):
            sender, receiver = cast(list[TcpTransport], transports)
            frames = recorders[1].frames[0]
            before = len(frames)
            receiver.beats_seen([0])  # the last tick found the link quiet, then read it no more
            beat = encode(Heartbeat(3))
            needed = -(-QUIET_BYTES // (len(beat) + 4))
            for _ in range(needed - 1):
                assert sender.beat(1, 3, beat)
                sender.flush()
            await asyncio.sleep(UNREAD_S)
            assert len(frames) == before, "fewer beats than the mark woke the receiver"
            assert sender.beat(1, 3, beat)
            sender.flush()
            await recorders[1].wait_for_frames(0, before + needed)

    run(scenario())


def test_planted_a_frame_sent_without_padding_waits_unread() -> None:
    """Planted: the padding is what wakes the receiver. A reply sent as a beat is (no padding)
    is not handed on until the receiver looks."""

    async def scenario() -> None:
        async with legit_pair() as (transports, recorders):
            sender, receiver = cast(list[TcpTransport], transports)
            before = len(recorders[1].frames[0])
            receiver.beats_seen([0])
            assert sender.beat(1, 0, b"a reply the receiver waits for")
            sender.flush()
            await asyncio.sleep(UNREAD_S)
            assert len(recorders[1].frames[0]) == before
            receiver.beats_seen(None)
            assert len(recorders[1].frames[0]) == before + 1

    run(scenario())


def test_a_large_frame_to_a_quiet_link_is_read_to_its_end() -> None:
    """A large frame's last segment may bring fewer bytes than the mark once the loop read
    the rest: the first bytes the loop reads lower the mark again, so nothing of a frame
    ever waits under it (with the mark left up, the frames below stalled: the conformance
    check of large frames caught it). A tick read mid-frame leaves the mark down."""

    async def scenario() -> None:
        async with legit_pair() as (transports, recorders):
            sender, receiver = cast(list[TcpTransport], transports)
            frames = recorders[1].frames[0]
            before = len(frames)
            large = bytes(range(256)) * (16 * 1024 + 3)  # 4 MiB and a little, in many reads
            for size in (len(large), 1000, 70_001, 63):
                receiver.beats_seen([0])
                sender.send(1, large[:size])
                sender.send(1, b"t")
                sender.flush()
                receiver.beats_seen([0])
                before += 2
                await recorders[1].wait_for_frames(0, before)
                assert frames[-2:] == [digest(large[:size]), digest(b"t")]

    run(scenario())


class TickReadsOneBuffer(WrappedTransport[MemoryTransport]):
    """A memory transport whose tick (:meth:`beats_seen`) hands the member point-to-point
    frames read into one receive buffer, each read over the one before, as TCP's tick reads
    a busy link: its receiver reuses its buffer once the frames in it are taken."""

    def __init__(self, inner: MemoryTransport, frames: list[bytes]) -> None:
        super().__init__(inner)
        self.frames = frames

    def beat(self, peer: NodeId, epoch: int, frame: Frame) -> bool:
        return False

    def beats_seen(self, expected: Collection[NodeId] | None) -> list[tuple[NodeId, int]]:
        frames, self.frames = self.frames, []
        buffer = bytearray(max(map(len, frames), default=0))
        for frame in frames:
            assert self.on_frame is not None
            buffer[: len(frame)] = frame
            self.on_frame(0, memoryview(buffer)[: len(frame)])
        return []


def test_a_message_read_at_a_tick_is_handed_on_before_the_next_read() -> None:
    """A tick reads what waits on the links of the members it watches and hands it to the
    member without a step per frame, which suits beats: they give nothing to hand on. A
    point-to-point message read there (a state chunk, a reply) is a view into the receive
    buffer, which the tick's next read reuses: handed on at the tick's end, it was read
    from the next message's bytes. A 128 MiB state transfer to a member back while the
    group ran stalled so for good, about one whole-state round in six of
    ``benchmarks/rejoin_time.py`` (a chunk decoded twice, the one before it never). The
    member now hands on what a frame read at a tick gave before the next read."""
    sent = [f"message {number} ".encode() * 1000 for number in range(3)]

    async def scenario() -> list[bytes]:
        network = MemoryNetwork()
        addresses = {i: f"mem-{i}" for i in range(2)}
        frames = [encode(P2P(memoryview(payload))) for payload in sent]
        transport = TickReadsOneBuffer(MemoryTransport(1, network, addresses[1]), frames)
        received: list[bytes] = []

        def keep(event: Event) -> None:
            if isinstance(event, PeerMessage):
                received.append(bytes(event.payload))

        node = Node(1, View(0, (0, 1)), LAYOUT, CONFIG, addresses=addresses)
        member = Member(node, cast(Transport, transport), on_event=keep)
        await member.start()
        try:
            while transport.frames:
                await asyncio.sleep(CONFIG.heartbeat_interval / 2)
            return received
        finally:
            await member.close()

    assert asyncio.run(scenario()) == sent


class CountingTcp(WrappedTransport[TcpTransport]):
    """A member's TCP transport that counts the heartbeat frames handed to its member outside
    :meth:`beats_seen` (each one a wake-up of its own). With ``quiet`` false its beats go as
    ordinary, padded frames (planted: the quiet half of the mechanism is gone)."""

    def __init__(self, node_id: NodeId, listen: str, *, quiet: bool) -> None:
        super().__init__(TcpTransport(node_id, listen, group=GROUP, secret=SECRET))
        self.quiet = quiet
        self.reading = False
        self.woken_by_beats = 0

    def taking(self, on_frame: FrameHandler) -> FrameHandler:
        def counting(src: NodeId, frame: memoryview) -> None:
            if not self.reading and isinstance(decode(frame), Heartbeat):
                self.woken_by_beats += 1
            on_frame(src, frame)

        return counting

    def beat(self, peer: NodeId, epoch: int, frame: Frame) -> bool:
        return self.quiet and self.inner.beat(peer, epoch, frame)

    def beats_seen(self, expected: Collection[NodeId] | None) -> list[tuple[NodeId, int]]:
        self.reading = True
        try:
            return self.inner.beats_seen(expected)
        finally:
            self.reading = False


async def run_quiet_group(
    transports: Sequence[Transport],
    addresses: dict[NodeId, str],
    mark: Callable[[], Callable[[], None]],
) -> list[Event]:
    """Three members over ``transports`` send one message each, then nothing for ``QUIET_S``;
    their events of that time. ``mark()`` is called as the quiet begins and what it returns
    as it ends, so that the transports' counters cover the quiet alone."""
    view = View(0, (0, 1, 2))
    events: list[Event] = []
    members = [
        Member(
            Node(i, view, LAYOUT, CONFIG, addresses=addresses), transport, on_event=events.append
        )
        for i, transport in enumerate(transports)
    ]
    for member in members:
        await member.start()
    try:
        for member in members:
            await member.send(0, b"open the links")
        await asyncio.sleep(0.3)
        end = mark()
        await asyncio.sleep(QUIET_S)
        end()
        return list(events)  # closing breaks the links, which the others suspect
    finally:
        for member in members:
            await member.close()


def quiet_group(*, quiet: bool) -> tuple[list[CountingTcp], list[Event]]:
    """Three members over TCP that send one message each, then nothing for ``QUIET_S``."""

    async def scenario() -> tuple[list[CountingTcp], list[Event]]:
        addresses = {i: f"{HERE}:{port}" for i, port in enumerate(free_ports(3))}
        transports = [CountingTcp(i, addresses[i], quiet=quiet) for i in range(3)]

        def mark() -> Callable[[], None]:
            woken = [t.woken_by_beats for t in transports]

            def end() -> None:
                for transport, before in zip(transports, woken, strict=True):
                    transport.woken_by_beats -= before

            return end

        tcp = [cast(Transport, t) for t in transports]
        return transports, await run_quiet_group(tcp, addresses, mark)

    return asyncio.run(scenario())


def test_a_quiet_group_over_tcp_keeps_its_view_on_beats_read_at_its_ticks() -> None:
    transports, events = quiet_group(quiet=True)
    changes = [
        e
        for e in events
        if isinstance(e, Suspected) or (isinstance(e, ViewInstalled) and e.view.epoch > 0)
    ]
    assert changes == [], changes
    # Each member beats to its two watchers every interval: QUIET_S / interval = 40 rounds,
    # of which at least half are read at a tick (a slow machine may run ticks late).
    assert all(t.stats["beats_written"] >= 2 * 20 for t in transports), [
        t.stats for t in transports
    ]
    assert all(t.stats["beat_reads"] >= 20 for t in transports)
    # Beats wait for the tick. Only a tick held up for five beats' time (a loaded machine)
    # lets enough pile up to wake the loop; allow one beat in ten for that.
    written = sum(t.stats["beats_written"] for t in transports)
    woken = [t.woken_by_beats for t in transports]
    assert sum(woken) <= written // 10, (woken, written)


def test_planted_beats_sent_as_frames_wake_their_receivers() -> None:
    """Planted: with every beat an ordinary frame, the count above sees the wake-ups. (The
    three members share one loop and tick in turn on the same grid: the last to tick finds
    the others' beats of the round waiting, the first is woken by both its watched members'
    beats, each round: 2 x 40 for it alone.)"""
    transports, _ = quiet_group(quiet=False)
    woken = [t.woken_by_beats for t in transports]
    assert sum(woken) >= 2 * 20, woken
