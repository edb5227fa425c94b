"""The flow-control window in bytes (``window_bytes``), beside the one in messages.

A deep window in messages keeps small messages flowing through a round trip; without a bound in
bytes the same window of large messages would be gigabytes held at every member. These tests
watch, in the simulator, every frame a sender emits and check that the payload it has out that
some member does not yet hold never passes ``window_bytes`` (plus the one message that may
always go), that the window in bytes, not the one in messages, is what binds, that a message
larger than the whole window still goes (alone), and that ``Raw`` receivers acknowledge by bytes
too, so a sender of large raw messages is not left waiting for the quiet-sender timeout.
"""

from __future__ import annotations

from collections import Counter

import pytest

from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered, Event
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId
from pyderecho.sim.simulation import Simulation
from pyderecho.wire import Block, Data

KiB = 1024
CONFIG = CoreConfig(
    heartbeat_interval=0.1,
    heartbeat_timeout=1.0,
    window_size=1000,
    window_bytes=64 * KiB,
    block_size=16 * KiB,
)
SUBGROUP = 0
SENDER: NodeId = 0


class _Watch:
    """Per frame the sender emits: how many payload bytes (and messages) it has out that some
    member of its shard does not yet hold, by the sender's own table."""

    def __init__(self, sim: Simulation, sizes: dict[int, int]) -> None:
        self.sim = sim
        self.sizes = sizes
        """The payload size of each of the sender's messages, by index, as it went out."""
        self.most_bytes = 0
        self.most_messages = 0

    def look(self, node: Node, out: list[tuple[NodeId, object]]) -> None:
        shard = node.shard_of(SUBGROUP)
        if node.node_id != SENDER or shard is None:
            return
        for _, message in out:
            if isinstance(message, Data):
                for offset, payload in enumerate(message.payloads):
                    self.sizes[message.index + offset] = len(payload)
            elif isinstance(message, Block):
                self.sizes[message.index] = message.size
        held_everywhere = shard.table.min_received(shard.my_sender_rank)
        out_there = [size for index, size in self.sizes.items() if index >= held_everywhere]
        self.most_bytes = max(self.most_bytes, sum(out_there))
        self.most_messages = max(self.most_messages, len(out_there))


def _group(
    mode: Mode, seed: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[Simulation, _Watch, Counter[NodeId]]:
    layout = layout_of({"Store": every_member(mode)})
    sim = Simulation(3, layout, seed=seed, config=CONFIG)
    watch = _Watch(sim, {})
    original = Node.outbox

    def watching(node: Node) -> list[tuple[NodeId, object]]:
        out = original(node)
        watch.look(node, out)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]

    monkeypatch.setattr(Node, "outbox", watching)
    delivered: Counter[NodeId] = Counter()

    def on_event(member: NodeId, event: Event) -> None:
        if isinstance(event, Delivered) and event.sender == SENDER:
            delivered[member] += 1

    sim.on_event = on_event
    sim.run(until=0.5)
    return sim, watch, delivered


def _send(sim: Simulation, count: int, size: int) -> None:
    def send_all() -> None:
        for number in range(count):
            sim.send_now(SENDER, SUBGROUP, number.to_bytes(4, "big") * (size // 4))

    sim.call(0.5, send_all)


@pytest.mark.parametrize("mode", [Mode.ORDERED, Mode.RAW])
@pytest.mark.parametrize("seed", [1, 2])
def test_a_sender_never_has_more_than_the_window_in_bytes_out(
    mode: Mode, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 messages of 8 KiB (1.6 MiB) queued at once, a 64 KiB window in bytes and 1,000 in
    messages: at most 8 messages are ever out, and all are delivered everywhere quickly (in
    ``Raw`` too, where receivers acknowledge every quarter of the window in bytes)."""
    count, size = 200, 8 * KiB
    sim, watch, delivered = _group(mode, seed, monkeypatch)
    _send(sim, count, size)
    assert sim.run_until(
        lambda: all(delivered[m] == count for m in range(3)),
        limit=0.5 + CONFIG.heartbeat_timeout / 4,
    ), dict(delivered)
    assert len(watch.sizes) >= count
    assert watch.most_bytes <= CONFIG.window_bytes, watch.most_bytes
    assert watch.most_messages <= CONFIG.window_bytes // size < CONFIG.window_size
    # The window was used, not left shut: more than one message was out at a time.
    assert watch.most_messages > 1


@pytest.mark.parametrize("mode", [Mode.ORDERED, Mode.RAW])
def test_a_message_larger_than_the_window_in_bytes_still_goes_alone(
    mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five messages of 100 KiB against a 64 KiB window: each goes once the one before is held
    everywhere, relayed in blocks; none waits forever."""
    count, size = 5, 100 * KiB
    sim, watch, delivered = _group(mode, 3, monkeypatch)
    _send(sim, count, size)
    assert sim.run_until(
        lambda: all(delivered[m] == count for m in range(3)),
        limit=0.5 + CONFIG.heartbeat_timeout,
    ), dict(delivered)
    assert watch.most_messages == 1
    assert watch.most_bytes == size
