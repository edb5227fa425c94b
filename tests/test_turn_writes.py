"""What a member sends in answer to one frame leaves in one write per peer, as one frame.

A member that receives another's message answers with its nulls for the round robin's turns
it passed (filled while the frame is handled) and its row (pushed by the end-of-turn flush):
the nulls ride on the row. Sent apart, as two frames or two writes, they doubled the frames
the peers read and the turns they spend on them, at light load one more wakeup per message.
Real TCP on 127.0.0.1; the transport below only records, per flush, what it writes.
"""

from __future__ import annotations

import asyncio

import pytest

from pyderecho.cli.demo import free_ports
from pyderecho.core.config import CoreConfig
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.runtime.member import Member
from pyderecho.transport.base import Frame
from pyderecho.transport.tcp import TcpTransport
from pyderecho.wire import Data, Nulls, ShardRow, decode

SECRET = b"turn-writes-secret!!"
CONFIG = CoreConfig(heartbeat_interval=0.2, heartbeat_timeout=2.0)


class RecordingTcp(TcpTransport):
    """TCP that notes, for each flush that writes anything, the kinds of messages it wrote."""

    def __init__(self, node_id: NodeId, address: str) -> None:
        super().__init__(node_id, address, group="turn-writes", secret=SECRET)
        self.queued: list[str] = []
        self.writes: list[list[str]] = []

    def send(self, peer: NodeId, frame: Frame, *, caller_flushes: bool = False) -> None:
        if peer == 1:
            data = frame if isinstance(frame, bytes) else b"".join(bytes(p) for p in frame)
            message = decode(data)
            carries = isinstance(message, ShardRow) and message.nulls
            self.queued.append("row with nulls" if carries else type(message).__name__)
        super().send(peer, frame, caller_flushes=caller_flushes)

    def flush(self) -> None:
        if self.queued:
            self.writes.append(self.queued)
            self.queued = []
        super().flush()


async def delivered_upto(member: Member, position: int) -> None:
    """Wait until ``member`` delivered the shard's message at global ``position``."""
    while (shard := member.node.shard_of(0)) is None or shard.delivered_upto < position:
        await member.wait_progress()


@pytest.mark.patches_compiled
def test_nulls_and_the_row_answering_a_message_leave_as_one_frame() -> None:
    async def scenario() -> list[list[str]]:
        addresses = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(2))}
        layout = layout_of({"Log": every_member(Mode.ORDERED)})
        view = View(0, (0, 1))
        transports = [RecordingTcp(i, addresses[i]) for i in (0, 1)]
        members = [
            Member(Node(i, view, layout, CONFIG, addresses=addresses), transports[i])
            for i in (0, 1)
        ]
        for member in members:
            await member.start()
        try:
            for number in range(20):
                await members[1].send(0, b"m%d" % number)
                # Member 1 sends alone, in turns after member 0's: member 0 fills its turn
                # with a null each time, and its row says it holds the message.
                await asyncio.wait_for(delivered_upto(members[1], 2 * number + 1), 10)
        finally:
            for member in members:
                await member.close()
        return transports[0].writes

    writes = asyncio.run(scenario())
    answers = [w for w in writes if "row with nulls" in w]
    assert len(answers) >= 20, writes
    assert not any(Nulls.__name__ in w for w in writes), "no frame of nulls of their own"
    assert not any(Data.__name__ in w for w in writes), "member 0 sent no message of its own"
