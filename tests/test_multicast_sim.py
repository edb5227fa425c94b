"""Multicast inside one view, driven by the deterministic simulator and judged by the checker."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyderecho.core.config import CoreConfig
from pyderecho.core.errors import LocalProtocolError
from pyderecho.core.events import Delivered
from pyderecho.core.layout import Allocation, InadequateView, LayoutFunction, Mode, ShardLayout
from pyderecho.core.node import Node
from pyderecho.core.view import View
from pyderecho.sim.simulation import LinkModel, Simulation
from pyderecho.wire import Data, Nulls, ShardRow, encode


@dataclass(frozen=True)
class Scenario:
    """One randomized run: group size, modes, workload and faults, all from a seed."""

    seed: int
    members: int
    all_mode: Mode
    shard_mode: Mode
    shard_size: int
    overlap_senders: int
    messages: int
    large_every: int
    jitter_s: float
    pauses: int

    def layout(self, view: View) -> Allocation:
        """Three overlapping subgroups: everyone; disjoint shards; a subset with few senders."""
        members = view.members
        shards = [
            ShardLayout(members[i : i + self.shard_size], self.shard_mode)
            for i in range(0, len(members) - self.shard_size + 1, self.shard_size)
        ]
        subset = members[: max(2, len(members) // 2)]
        senders = subset[: min(self.overlap_senders, len(subset))]
        return {
            "All": [[ShardLayout(members, self.all_mode)]],
            "Sharded": [shards],
            "Overlap": [[ShardLayout(subset, Mode.ORDERED, senders)]],
        }


def run_scenario(scenario: Scenario) -> Simulation:
    config = CoreConfig(window_size=8, block_size=512, max_message_size=8192)
    link = LinkModel(jitter_s=scenario.jitter_s)
    sim = Simulation(
        scenario.members, scenario.layout, seed=scenario.seed, config=config, link=link
    )
    layout = sim.nodes[0].layout
    rng = sim.rng
    for number in range(scenario.messages):
        ref = layout.shards[rng.randrange(len(layout.shards))]
        sender = rng.choice(ref.layout.sending_members)
        size = 3000 if scenario.large_every and number % scenario.large_every == 0 else 40
        payload = (b"%d/%d/" % (sender, number)).ljust(size, b".")
        sim.send(sender, ref.subgroup, payload, at=rng.uniform(0, 2e-3))
    for _ in range(scenario.pauses):
        member = rng.randrange(scenario.members)
        sim.pause(member, at=rng.uniform(0, 2e-3), duration=rng.uniform(1e-4, 3e-3))
    assert sim.settle(limit=5.0)
    return sim


def members_of(sim: Simulation) -> dict[tuple[int, int, int], tuple[int, ...]]:
    layout = sim.nodes[sim.view.members[0]].layout
    return {(0, ref.subgroup, ref.shard): ref.layout.members for ref in layout.shards}


scenarios = st.builds(
    Scenario,
    seed=st.integers(0, 2**32),
    members=st.integers(2, 16),
    all_mode=st.sampled_from([Mode.RAW, Mode.ORDERED]),
    shard_mode=st.sampled_from([Mode.RAW, Mode.ORDERED]),
    shard_size=st.integers(1, 4),
    overlap_senders=st.integers(1, 3),
    messages=st.integers(0, 150),
    large_every=st.sampled_from([0, 3, 10]),
    jitter_s=st.sampled_from([0.0, 30e-6, 500e-6]),
    pauses=st.integers(0, 3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_every_member_delivers_the_same_history(scenario: Scenario) -> None:
    sim = run_scenario(scenario)
    violations = sim.recorder.check(complete=True, members_of=members_of(sim))
    assert violations == [], f"{scenario}: {[str(v) for v in violations[:5]]}"
    sent = sum(1 for record in sim.recorder.sent if not record.null)
    assert sent == scenario.messages


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios)
def test_every_member_delivers_the_same_history_long_sweep(scenario: Scenario) -> None:
    sim = run_scenario(scenario)
    assert sim.recorder.check(complete=True, members_of=members_of(sim)) == []


def test_same_seed_same_run_other_seed_other_run() -> None:
    base = Scenario(7, 9, Mode.ORDERED, Mode.RAW, 3, 2, 120, 5, 200e-6, 2)
    first, again = run_scenario(base), run_scenario(base)
    assert first.trace_digest == again.trace_digest
    assert first.events_processed == again.events_processed
    other = run_scenario(Scenario(8, *list(base.__dict__.values())[1:]))
    assert other.trace_digest != first.trace_digest


def single_shard(mode: Mode) -> LayoutFunction:
    def layout(view: View) -> Allocation:
        return {"T": [[ShardLayout(view.members, mode)]]}

    return layout


def test_large_message_is_relayed_so_the_sender_sends_each_block_once() -> None:
    size, block = 64 * 1024, 1024
    config = CoreConfig(block_size=block, max_message_size=size)
    sim = Simulation(8, single_shard(Mode.ORDERED), seed=3, config=config)
    payload = bytes(range(256)) * (size // 256)
    sim.send(0, 0, payload)
    assert sim.settle(limit=5.0)
    assert sim.recorder.check(complete=True, members_of={(0, 0, 0): tuple(range(8))}) == []
    for member in range(8):
        (record,) = sim.recorder.deliveries[member]
        assert record.size == size
    # Every byte crosses the sender's link about once, not once per receiver (7 times).
    assert size <= sim.bytes_sent[0] < 1.5 * size
    receivers = [sim.bytes_sent[m] for m in range(1, 7)]
    assert all(size <= sent < 1.5 * size for sent in receivers)  # each relays once
    assert sim.bytes_sent[7] < size / 4  # the end of the chain relays nothing


def test_relay_finishes_near_size_over_bandwidth() -> None:
    """Pipelining: the time approaches size/bandwidth, not 7 times that for 8 members."""
    size, block = 256 * 1024, 4096
    config = CoreConfig(block_size=block, max_message_size=size)
    link = LinkModel(jitter_s=0.0)
    times = {}
    for members in (2, 8):
        sim = Simulation(members, single_shard(Mode.RAW), seed=1, config=config, link=link)
        sim.send(0, 0, b"x" * size)
        assert sim.settle(limit=5.0)
        times[members] = sim.last_progress
    one_copy = size / link.bandwidth_bytes_per_s
    assert times[2] > one_copy
    # Each extra hop adds a block's time and a link latency, not another copy of the message.
    assert times[8] < 3 * one_copy
    per_hop = block / link.bandwidth_bytes_per_s + link.latency_s
    assert times[8] - times[2] < 6 * 2 * per_hop


def test_an_idle_sender_sends_nulls_and_they_are_never_delivered() -> None:
    sim = Simulation(3, single_shard(Mode.ORDERED), seed=5)
    for number in range(50):
        sim.send(1, 0, b"m%d" % number)
    assert sim.settle(limit=5.0)
    nulls = [record for record in sim.recorder.sent if record.null]
    assert {record.member for record in nulls} == {0, 2}
    for member in range(3):
        delivered = [(r.sender, r.index) for r in sim.recorder.deliveries[member]]
        assert delivered == [(1, i) for i in range(50)]
    assert sim.recorder.check(complete=True, members_of={(0, 0, 0): (0, 1, 2)}) == []


def test_raw_mode_sends_no_nulls_and_keeps_sender_fifo() -> None:
    sim = Simulation(4, single_shard(Mode.RAW), seed=2, link=LinkModel(jitter_s=1e-3))
    for number in range(40):
        sim.send(number % 4, 0, b"r%d" % number)
    assert sim.settle(limit=5.0)
    assert not [record for record in sim.recorder.sent if record.null]
    for member in range(4):
        per_sender: dict[int, list[int]] = {}
        for record in sim.recorder.deliveries[member]:
            per_sender.setdefault(record.sender, []).append(record.index)
        assert per_sender == {s: list(range(10)) for s in range(4)}


def test_window_bounds_how_far_a_sender_runs_ahead_of_a_paused_member() -> None:
    config = CoreConfig(window_size=4)
    sim = Simulation(3, single_shard(Mode.ORDERED), seed=1, config=config)
    sim.pause(2, at=0.0, duration=1.0)
    for number in range(30):
        sim.send(0, 0, b"w%d" % number, at=1e-6)
    sim.run(until=0.5)
    shard = sim.nodes[0].shard_of(0)
    assert shard is not None
    assert shard.next_index == 4
    assert len(shard.pending) == 26
    assert not sim.recorder.deliveries.get(0)  # nothing is stable while member 2 is paused
    assert sim.settle(limit=5.0)
    assert len(sim.recorder.deliveries[2]) == 30


def test_bad_input_is_counted_and_dropped() -> None:
    node = Node(0, View(0, (0, 1, 2)), single_shard(Mode.ORDERED))
    node.events()
    node.receive_bytes(1, b"\xc1 not msgpack", 0.0)
    node.receive_bytes(1, encode(ShardRow(0, 0, 0, (1, 2), 0, 0)), 0.0)  # wrong row width
    node.receive_bytes(9, encode(Data(0, 0, 0, 9, 0, (memoryview(b"x"),))), 0.0)  # not a member
    node.receive_bytes(1, encode(Data(0, 0, 0, 2, 0, (memoryview(b"x"),))), 0.0)  # 1 speaks for 2
    node.receive_bytes(
        1, encode(Data(5, 0, 0, 1, 0, (memoryview(b"x"),))), 0.0
    )  # a view not yet installed
    node.receive_bytes(1, encode(Data(0, 3, 0, 1, 0, (memoryview(b"x"),))), 0.0)  # no such subgroup
    assert node.stats == {"malformed": 1, "rejected": 3, "early": 1, "unknown_shard": 1}
    assert node.events() == []
    node.receive_bytes(1, encode(Data(0, 0, 0, 1, 0, (memoryview(b"ok"),))), 0.0)
    node.receive_bytes(1, encode(Data(0, 0, 0, 1, 0, (memoryview(b"ok"),))), 0.0)
    assert node.duplicates == 1


def test_a_batch_carries_its_senders_row_and_only_that() -> None:
    """A sender's row rides on the batch it sent in the same turn (one frame, not two), and is
    taken as a row of its own would be; a row of another shard or epoch in a batch is refused
    and counted (the batch itself is a good one, and kept)."""
    nodes = [Node(n, View(0, (0, 1, 2)), single_shard(Mode.ORDERED)) for n in range(3)]
    nodes[0].send(0, b"hello", 0.0)
    out = nodes[0].outbox()
    assert [type(m) for _, m in out] == [Data, Data]
    batch = out[0][1]
    assert isinstance(batch, Data) and batch.row is not None and batch.row.received[0] == 1
    nodes[1].receive(0, batch, 0.0)
    shard = nodes[1].shard_of(0)
    assert shard is not None and shard.table.received[0] == list(batch.row.received) == [1, 0, 0]
    assert nodes[1].stats["rejected"] == 0
    for wrong in (
        msgspec.structs.replace(batch.row, subgroup=3),
        msgspec.structs.replace(batch.row, epoch=1),
    ):
        nodes[2].receive(0, msgspec.structs.replace(batch, row=wrong), 0.0)
    assert nodes[2].stats["rejected"] == 2
    shard = nodes[2].shard_of(0)
    assert shard is not None and shard.table.received[2][0] == 1  # the batch is kept
    assert shard.table.received[0] == [0, 0, 0]  # the rows are not


def test_nulls_in_a_raw_shard_are_refused_and_counted() -> None:
    """A ``Raw`` shard has no round robin: nulls there could only make a member skip a
    sender's messages."""
    node = Node(0, View(0, (0, 1, 2)), single_shard(Mode.RAW))
    node.receive(2, Nulls(0, 0, 0, 2, 0, 2), 0.0)
    node.receive(2, ShardRow(0, 0, 0, (0, 0, 2), seq=-1, delivered=-1, nulls=2), 0.0)
    assert node.stats["rejected"] == 2
    shard = node.shard_of(0)
    assert shard is not None and shard.table.received[shard.rank] == [0, 0, 0]


def test_local_misuse_raises_local_protocol_error() -> None:
    def layout(view: View) -> Allocation:
        return {"T": [[ShardLayout(view.members, Mode.ORDERED, senders=(0,))]]}

    config = CoreConfig(block_size=16, max_message_size=32)
    sender = Node(0, View(0, (0, 1)), layout, config)
    with pytest.raises(LocalProtocolError, match="max_message_size"):
        sender.send(0, b"x" * 33, 0.0)
    with pytest.raises(LocalProtocolError, match="no shard of subgroup 4"):
        sender.send(4, b"x", 0.0)
    with pytest.raises(LocalProtocolError, match="not a sender"):
        Node(1, View(0, (0, 1)), layout, config).send(0, b"x", 0.0)

    def inadequate(view: View) -> Allocation:
        raise InadequateView("needs 5 members")

    with pytest.raises(LocalProtocolError, match="needs 5 members"):
        Node(0, View(0, (0, 1)), inadequate).send(0, b"x", 0.0)


def test_a_shard_of_one_sends_everything_queued_in_one_burst() -> None:
    """Regression: the window was computed once per pump, and in a shard of one no row ever
    arrives to pump again, so a burst beyond the window stalled."""
    config = CoreConfig(window_size=4)
    node = Node(0, View(0, (0,)), single_shard(Mode.ORDERED), config)
    for number in range(30):
        node.send(0, b"solo%d" % number, 0.0, flush=False)
    node.flush(0.0)
    delivered = [e for e in node.events() if isinstance(e, Delivered)]
    assert [d.payload for d in delivered] == [b"solo%d" % n for n in range(30)]


def test_raw_deliveries_are_views_into_the_frame_ordered_ones_are_copies() -> None:
    """Raw delivers during the frame's callback, so it hands over the decoded view without a
    copy; ordered delivery waits for stability, past the frame's life, so it copies."""
    seen: dict[Mode, set[type]] = {Mode.RAW: set(), Mode.ORDERED: set()}
    for mode in (Mode.RAW, Mode.ORDERED):
        sim = Simulation(3, single_shard(mode), seed=1)

        def note(member: int, event: object, mode: Mode = mode) -> None:
            if isinstance(event, Delivered) and member != event.sender:
                seen[mode].add(type(event.payload))

        sim.on_event = note
        for number in range(20):
            sim.send(number % 3, 0, b"v%d" % number)
        assert sim.settle(limit=5.0)
    assert seen == {Mode.RAW: {memoryview}, Mode.ORDERED: {bytes}}


def test_a_large_ordered_message_is_handed_over_in_its_reassembly_buffer() -> None:
    """Blocks are copied once, into the message's buffer; delivery hands that buffer over as a
    read-only view instead of copying it again, and it stays valid after the callback."""
    config = CoreConfig(block_size=16, max_message_size=1024)
    sim = Simulation(3, single_shard(Mode.ORDERED), seed=2, config=config)
    kept: list[tuple[bytes, memoryview]] = []
    sent = {sender: bytes(range(sender, sender + 100)) for sender in range(3)}

    def note(member: int, event: object) -> None:
        if isinstance(event, Delivered) and member != event.sender:
            assert isinstance(event.payload, memoryview)
            kept.append((sent[event.sender], event.payload))

    sim.on_event = note
    for sender, payload in sent.items():
        sim.send(sender, 0, payload)
    assert sim.settle(limit=5.0)
    assert len(kept) == 6
    for payload, view in kept:
        assert view.readonly
        assert isinstance(view.obj, bytearray)
        assert bytes(view) == payload


def test_a_large_message_buffer_is_reused_only_once_the_application_lets_go() -> None:
    """Reassembly buffers come from a pool: a buffer the application still holds a view of is
    never reused (the view keeps its content), one it dropped serves the next message."""
    config = CoreConfig(block_size=16, max_message_size=1024)
    sim = Simulation(2, single_shard(Mode.ORDERED), seed=3, config=config)
    kept: list[memoryview] = []
    buffers: list[int] = []

    def note(member: int, event: object) -> None:
        if isinstance(event, Delivered) and member == 1:
            assert isinstance(event.payload, memoryview)
            buffers.append(id(event.payload.obj))
            if event.index % 2 == 0:
                kept.append(event.payload)

    sim.on_event = note
    messages = [bytes([number]) * 100 for number in range(8)]
    for number, payload in enumerate(messages):
        sim.send(0, 0, payload, at=number * 0.01)  # one after the other
    assert sim.settle(limit=5.0)
    assert [bytes(view) for view in kept] == messages[0::2]
    assert len({id(view.obj) for view in kept}) == len(kept), "a viewed buffer was reused"
    # Each dropped buffer serves the next message: 8 messages need only 5 buffers.
    assert len(set(buffers)) == 5
    assert sim.nodes[1]._buffers.reused == 3
