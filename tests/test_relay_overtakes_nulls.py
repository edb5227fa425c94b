"""A large message relayed along the chain can reach a member before the nulls its sender sent
before it: the nulls come straight from the sender, the message's blocks through the members
before this one in the chain. The nulls then close the gap before a message already held, and
the member must count that message as arrived, fill its own turns before it and deliver it.

It did not: only an arriving message moved the furthest message a member fills its turns up
to, so the message waited for a turn nobody filled and the shard stopped delivering while
every member stayed up (found by a benchmark of 200 KiB messages in 64 KiB blocks that stalled
about once in forty runs on a loaded machine). Three cores, the frames moved by hand.
"""

from __future__ import annotations

from collections import defaultdict, deque

from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.wire import WireMessage

CONFIG = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5, block_size=1024)
VIEW = View(0, (0, 1, 2))
LARGE = bytes(range(256)) * 12  # three blocks


class Links:
    """Three cores and a FIFO queue per directed link, moved one link at a time."""

    def __init__(self) -> None:
        layout = layout_of({"Log": every_member(Mode.ORDERED)})
        self.nodes = [Node(n, VIEW, layout, CONFIG) for n in VIEW.members]
        self.queues: defaultdict[tuple[NodeId, NodeId], deque[WireMessage]] = defaultdict(deque)
        self.delivered: list[list[bytes]] = [[] for _ in self.nodes]
        self._collect()

    def _collect(self) -> None:
        for node in self.nodes:
            for dst, message in node.outbox():
                self.queues[(node.node_id, dst)].append(message)
            for event in node.events():
                if isinstance(event, Delivered):
                    self.delivered[node.node_id].append(bytes(event.payload))

    def send(self, member: NodeId, payload: bytes) -> None:
        self.nodes[member].send(0, payload, 0.0)
        self._collect()

    def move(self, src: NodeId, dst: NodeId) -> None:
        """Everything now on the link from ``src`` to ``dst`` arrives, in order."""
        queue = self.queues[(src, dst)]
        while queue:
            self.nodes[dst].receive(src, queue.popleft(), 0.0)
            self._collect()

    def settle(self) -> None:
        """Move every link until nothing is left on any."""
        while any(self.queues.values()):
            for src, dst in list(self.queues):
                self.move(src, dst)


def test_nulls_that_close_the_gap_before_a_relayed_message_let_it_be_delivered() -> None:
    links = Links()
    links.send(0, b"small")
    # Members 1 and 2 hear it and fill their turns of its round with nulls (not moved yet).
    links.move(0, 1)
    links.move(0, 2)
    # Member 2 sends a large message: its nulls go straight to member 1, the blocks go to
    # member 0, which relays them to member 1, and they arrive first.
    links.send(2, LARGE)
    links.move(2, 0)
    links.move(0, 1)
    shard = links.nodes[1].shard_of(0)
    assert shard is not None
    assert shard.table.received[1][2] == 0, "member 1 holds the message, not the nulls before it"
    links.move(2, 1)
    links.settle()
    for delivered in links.delivered:
        assert delivered == [b"small", LARGE], links.delivered
