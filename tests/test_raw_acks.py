"""A ``Raw`` shard's rows serve flow control alone: each receiver acknowledges to the sender.

Only a sender reads its own column of the table (its window), so a receiver tells it alone,
once a quarter of the window arrived since it last did or once the sender went quiet; never
every member on every arrival, which cost each member a row to every member per message (560
rows a second at each of 64 members sending 5 messages a second: the group starved on two
cores). These tests count the rows in the simulator and check that the window still moves and
that a quiet sender still learns that its messages are held everywhere.
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
from pyderecho.wire import ShardRow

CONFIG = CoreConfig(heartbeat_interval=0.1, heartbeat_timeout=1.0, window_size=20)
TICKER = 0
"""The only subgroup: one ``Raw`` shard of every member."""


def _raw_group(
    members: int, seed: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[Simulation, Counter[NodeId], dict[NodeId, int]]:
    """A simulated group of one ``Raw`` shard, with the shard rows each member sends counted,
    and the deliveries each member made."""
    rows: Counter[NodeId] = Counter()
    original = Node.outbox

    def counting(node: Node) -> list[tuple[NodeId, object]]:
        out = original(node)
        rows[node.node_id] += sum(1 for _, message in out if isinstance(message, ShardRow))
        return out  # type: ignore[return-value]

    monkeypatch.setattr(Node, "outbox", counting)
    layout = layout_of({"Ticker": every_member(Mode.RAW)})
    sim = Simulation(members, layout, seed=seed, config=CONFIG)
    delivered: dict[NodeId, int] = Counter()

    def watch(member: NodeId, event: Event) -> None:
        if isinstance(event, Delivered):
            delivered[member] += 1

    sim.on_event = watch
    sim.run(until=0.5)
    return sim, rows, delivered


@pytest.mark.parametrize("seed", [1, 2])
def test_a_raw_message_costs_a_receiver_far_less_than_a_row_to_every_member(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every one of 24 members sends a message every 50 ms for a second. A receiver's rows
    go to the senders alone, once per quarter window from each and once when it goes quiet:
    at most 115 rows here, for 460 messages received (window 20). Pushing the row to every
    member on every arrival sent each member about 3,000."""
    members, each = 24, 20
    sim, rows, delivered = _raw_group(members, seed, monkeypatch)
    before = Counter(rows)
    for member in range(members):
        for number in range(each):
            sim.send(member, TICKER, b"tick %d %d" % (member, number), at=0.5 + number * 0.05)
    assert sim.run_until(
        lambda: all(delivered[m] == members * each for m in range(members)), limit=5.0
    ), dict(delivered)
    sim.run(until=sim.now + 2 * CONFIG.heartbeat_timeout)
    per_sender = each // (CONFIG.window_size // 4) + 1
    for member in range(members):
        sent_rows = rows[member] - before[member]
        assert sent_rows <= per_sender * (members - 1), (member, sent_rows)
    assert all(sim.nodes[m].idle for m in range(members))


def test_a_fast_raw_sender_keeps_its_window_moving(monkeypatch: pytest.MonkeyPatch) -> None:
    """One sender queues 25 windows' worth at once: acknowledgements come every quarter window
    (never only at the quiet timeout, which would stall it for half a heartbeat timeout per
    window), so everything is delivered in a small part of a timeout."""
    members, count = 12, 25 * CONFIG.window_size
    sim, rows, delivered = _raw_group(members, 3, monkeypatch)
    before = Counter(rows)

    def send_all() -> None:
        for number in range(count):
            sim.send_now(0, TICKER, b"m%d" % number)

    sim.call(0.5, send_all)
    assert sim.run_until(
        lambda: all(delivered[m] == count for m in range(members)),
        limit=0.5 + CONFIG.heartbeat_timeout / 4,
    ), dict(delivered)
    for member in range(1, members):
        acks = rows[member] - before[member]
        assert acks <= 2 * count // (CONFIG.window_size // 4), (member, acks)


def test_a_quiet_sender_learns_its_messages_are_held_everywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fewer messages than a quarter window trigger no acknowledgement; half a heartbeat
    timeout after the sender's last one, every receiver tells it, and the sender is flushed
    (what a leave waits for) and the group idle."""
    members = 8
    sim, _, delivered = _raw_group(members, 4, monkeypatch)

    def send_three() -> None:
        for number in range(3):
            sim.send_now(3, TICKER, b"m%d" % number)

    sim.call(0.5, send_three)
    assert sim.run_until(lambda: all(delivered[m] == 3 for m in range(members)), limit=1.0)
    shard = sim.nodes[3].shard_of(TICKER)
    assert shard is not None
    assert not shard.flushed  # delivered everywhere, but not yet told
    assert sim.run_until(lambda: shard.flushed, limit=0.5 + CONFIG.heartbeat_timeout)
    assert sim.now - 0.5 >= CONFIG.heartbeat_timeout / 2
    assert all(sim.nodes[m].idle for m in range(members))
