"""When a member answers the frames it reads: the first frame of a turn of its loop that changes
its row is answered at once, from inside the frame's handling; the frames read after it in the
same turn are answered together at the turn's end.

At light load a message's answer then leaves without waiting for a turn of the loop (on two
shared cores that wait cost more than a third of a lone message's latency); under load a turn
that reads many frames still pushes its row to each peer at most twice, not once per frame,
which at 32 and 64 members cost a third to two thirds of the group's rate (README, "Light
load").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from pyderecho.cli.demo import free_ports
from pyderecho.core.config import CoreConfig
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.runtime.member import Member
from pyderecho.transport.base import Frame, FrameHandler, LargeFrameHandler, PeerLostHandler
from pyderecho.transport.memory import MemoryNetwork, MemoryTransport
from pyderecho.transport.tcp import TcpTransport
from pyderecho.wire import ShardRow, decode
from test_turn_writes import delivered_upto

SECRET = b"turn-answers-secret!"
CONFIG = CoreConfig(heartbeat_interval=0.2, heartbeat_timeout=2.0)
LAYOUT = layout_of({"Log": every_member(Mode.ORDERED)})


def _kind(frame: Frame | memoryview) -> str:
    if isinstance(frame, tuple):
        frame = b"".join(bytes(part) for part in frame)
    message = decode(bytes(frame))
    return "row" if isinstance(message, ShardRow) else type(message).__name__


def _watched(on_frame: FrameHandler, log: list[str], inside: list[bool]) -> FrameHandler:
    """``on_frame`` noting each frame in ``log`` and, while it runs, ``inside[0]``."""

    def handle(src: NodeId, frame: memoryview) -> None:
        log.append(f"frame {_kind(frame)} from {src}")
        inside[0] = True
        try:
            on_frame(src, frame)
        finally:
            inside[0] = False

    return handle


class WatchingTcp(TcpTransport):
    """TCP that notes, for each flush that writes a row to peer 1, whether the flush came
    from inside the handling of a frame."""

    def __init__(self, node_id: NodeId, address: str) -> None:
        super().__init__(node_id, address, group="turn-answers", secret=SECRET)
        self.log: list[str] = []
        self.inside = [False]
        self.queued_row = False
        self.row_writes: list[bool] = []
        """Per flush that wrote a row to peer 1: whether it came while a frame was handled."""

    async def start(
        self,
        on_frame: FrameHandler,
        on_peer_lost: PeerLostHandler,
        on_large_frame: LargeFrameHandler | None = None,
    ) -> None:
        await super().start(_watched(on_frame, self.log, self.inside), on_peer_lost, on_large_frame)

    def send(self, peer: NodeId, frame: Frame, *, caller_flushes: bool = False) -> None:
        if peer == 1 and _kind(frame) == "row":
            self.queued_row = True
        super().send(peer, frame, caller_flushes=caller_flushes)

    def flush(self) -> None:
        if self.queued_row:
            self.row_writes.append(self.inside[0])
            self.queued_row = False
        super().flush()


@pytest.mark.patches_compiled
def test_a_lone_message_is_answered_from_inside_the_frames_handling() -> None:
    async def scenario() -> list[bool]:
        addresses = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(2))}
        view = View(0, (0, 1))
        transports = [WatchingTcp(i, addresses[i]) for i in (0, 1)]
        members = [
            Member(Node(i, view, LAYOUT, CONFIG, addresses=addresses), transports[i])
            for i in (0, 1)
        ]
        for member in members:
            await member.start()
        try:
            # Member 1 sends alone, one message at a time; the first opens the links.
            for number in range(21):
                if number == 1:
                    transports[0].row_writes.clear()
                await members[1].send(0, b"m%d" % number)
                await asyncio.wait_for(delivered_upto(members[1], 2 * number + 1), 10)
        finally:
            for member in members:
                await member.close()
        return transports[0].row_writes

    row_writes = asyncio.run(scenario())
    # Each of member 1's messages is a frame of its own that changes member 0's row: unless a
    # heartbeat or a row that needed an answer came first in the same turn, its answer leaves
    # while the frame is handled. (Before, every answer waited for the turn's end: 0 of 20.)
    assert sum(row_writes) >= 15, row_writes


class WatchingMemory(MemoryTransport):
    """An in-process transport that notes, in order, the frames this member handles and the
    rows it sends to peer 1."""

    def __init__(self, node_id: NodeId, network: MemoryNetwork, address: str) -> None:
        super().__init__(node_id, network, address)
        self.log: list[str] = []
        self.inside = [False]

    async def start(
        self,
        on_frame: FrameHandler,
        on_peer_lost: PeerLostHandler,
        on_large_frame: LargeFrameHandler | None = None,
    ) -> None:
        await super().start(_watched(on_frame, self.log, self.inside), on_peer_lost, on_large_frame)

    def send(self, peer: NodeId, frame: Frame, *, caller_flushes: bool = False) -> None:
        if peer == 1 and _kind(frame) == "row":
            self.log.append("row to 1 " + ("inside" if self.inside[0] else "at the turn's end"))
        super().send(peer, frame, caller_flushes=caller_flushes)


def _one_turn(log: list[str], first: Callable[[str], bool]) -> list[str]:
    """The entries of ``log`` from the first that ``first`` accepts up to the next frame that
    is not a message (the turn after reads the senders' answers)."""
    start = next(i for i, entry in enumerate(log) if first(entry))
    end = next(
        (i for i in range(start + 1, len(log)) if log[i].startswith("frame row")),
        len(log),
    )
    return log[start:end]


def test_a_turn_that_reads_many_messages_answers_them_in_two_pushes() -> None:
    async def scenario() -> list[str]:
        network = MemoryNetwork()
        view = View(0, (0, 1, 2, 3, 4))
        addresses = {i: f"mem-{i}" for i in view.members}
        transports = [WatchingMemory(i, network, addresses[i]) for i in view.members]
        members = [
            Member(Node(i, view, LAYOUT, CONFIG, addresses=addresses), transports[i])
            for i in view.members
        ]
        for member in members:
            await member.start()
        try:
            # Everyone sends once, so that the links are up, and waits for all of it.
            for member in members:
                await member.send(0, b"warm")
            await asyncio.wait_for(delivered_upto(members[0], 4), 10)
            transports[0].log.clear()
            # Members 1-4 send in the same turn: member 0 reads their four messages in one.
            for member in members[1:]:
                await member.send(0, b"burst")
            await asyncio.wait_for(delivered_upto(members[0], 9), 10)
        finally:
            for member in members:
                await member.close()
        return transports[0].log

    log = asyncio.run(scenario())
    turn = _one_turn(log, lambda entry: entry.startswith("frame Data"))
    assert [entry for entry in turn if entry.startswith("frame")] == [
        f"frame Data from {src}" for src in (1, 2, 3, 4)
    ], log
    assert turn[1] == "row to 1 inside", "the first message is answered at once"
    rows = [entry for entry in turn if entry.startswith("row")]
    assert rows == ["row to 1 inside", "row to 1 at the turn's end"], turn
