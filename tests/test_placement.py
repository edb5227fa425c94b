"""Reading a large message's blocks in place (``Node.place_frame``), driven without sockets.

A stream transport shows the core the first bytes of a large frame; the core answers with the
block's place in its message's reassembly buffer, the transport reads the rest there, and the
core takes the frame in without copying the data again. The core must only hand out a place
it can vouch for: a block of a message of its view, from the member that relays that sender's
blocks to it, that it neither holds nor has placed already. Anything else is read and copied as
before.
"""

from __future__ import annotations

import random

from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered
from pyderecho.core.node import Node
from pyderecho.core.view import View
from pyderecho.layouts import resolve_layout
from pyderecho.wire import Block, ShardRow, encode, encode_parts

BLOCK = 64 * 1024
CONFIG = CoreConfig(block_size=BLOCK, max_message_size=1 << 20)
ADDRESSES = {i: f"127.0.0.1:{7000 + i}" for i in range(3)}


def two_parts(block: Block) -> tuple[bytes, memoryview]:
    parts = encode_parts(block)
    assert isinstance(parts, tuple)
    return parts


def group() -> dict[int, Node]:
    view = View(0, (0, 1, 2))
    layout = resolve_layout("every-member")
    return {i: Node(i, view, layout, CONFIG, addresses=ADDRESSES) for i in range(3)}


def pump(nodes: dict[int, Node], *, place: bool = True) -> dict[int, list[bytes]]:
    """Carry every queued message to its destination until none is left, as a transport would:
    a two-part block through ``place_frame`` (its data written into the place given) when
    ``place``, every other frame whole. Returns each member's delivered payloads."""
    delivered: dict[int, list[bytes]] = {i: [] for i in nodes}
    moving = True
    while moving:
        moving = False
        for src, node in nodes.items():
            for dst, message in node.outbox():
                moving = True
                parts = encode_parts(message)
                if isinstance(parts, tuple):
                    head, data = parts
                    frame = head + bytes(data)
                    spot = (
                        nodes[dst].place_frame(src, memoryview(frame)[:128], len(frame))
                        if place
                        else None
                    )
                    if spot is not None:
                        spot.body[:] = frame[spot.head :]
                        nodes[dst].receive_placed(src, spot, 1.0)
                        continue
                    parts = frame
                nodes[dst].receive_bytes(src, parts, 1.0)
        for i, node in nodes.items():
            delivered[i] += [bytes(e.payload) for e in node.events() if isinstance(e, Delivered)]
    return delivered


def test_placed_blocks_are_delivered_intact_without_a_copy() -> None:
    nodes = group()
    payload = random.Random(7).randbytes(3 * BLOCK + 4000)  # 3 full blocks and a bit
    nodes[0].send(0, payload, 1.0)
    delivered = pump(nodes)
    assert all(got == [payload] for got in delivered.values()), {
        i: [len(p) for p in got] for i, got in delivered.items()
    }
    # Member 1 gets the blocks from the sender, member 2 from member 1 (the relay chain): the
    # three full blocks placed at each, the short last one (under 64 KiB) copied as before.
    assert [nodes[i].placed_blocks for i in range(3)] == [0, 3, 3]


def test_only_a_block_it_can_vouch_for_gets_a_place() -> None:
    nodes = group()
    block = Block(0, 0, 0, 0, 0, 2 * BLOCK, 0, BLOCK, 0, memoryview(bytes(BLOCK)))
    head, data = two_parts(block)
    frame = memoryview(head + bytes(data))
    prefix, length = frame[:128], len(frame)
    # Member 2 hears member 0's blocks from member 1, never from member 0 itself; member 0 is
    # their sender and never gets them back.
    assert nodes[2].place_frame(0, prefix, length) is None
    assert nodes[0].place_frame(2, prefix, length) is None
    spot = nodes[1].place_frame(0, prefix, length)
    assert spot is not None and spot.head == len(head) and spot.body.nbytes == BLOCK
    assert nodes[1].place_frame(0, prefix, length) is None  # one place per block
    other_block = Block(0, 0, 0, 0, 0, 2 * BLOCK, 1, BLOCK, 0, memoryview(bytes(BLOCK)))
    other_head, _ = two_parts(other_block)
    assert nodes[1].place_frame(0, memoryview(other_head), length) is not None
    # Another epoch, a shard this member does not have, a block longer than its message says,
    # and frames that are not blocks: no place.
    for wrong in (
        Block(1, 0, 0, 0, 0, 2 * BLOCK, 0, BLOCK, 0, memoryview(bytes(BLOCK))),
        Block(0, 5, 0, 0, 0, 2 * BLOCK, 0, BLOCK, 0, memoryview(bytes(BLOCK))),
        Block(0, 0, 0, 0, 1, BLOCK + 10, 1, BLOCK, 0, memoryview(bytes(BLOCK))),
    ):
        wrong_head, _ = two_parts(wrong)
        assert nodes[1].place_frame(0, memoryview(wrong_head), len(wrong_head) + BLOCK) is None
    row = encode(ShardRow(0, 0, 0, (0, 0, 0), -1, -1, False, 0, (), -1, 0))
    assert nodes[1].place_frame(0, memoryview(row), 100_000) is None
    assert nodes[1].placed_blocks == 2
    assert nodes[1].stats["rejected"] == 0  # refusing a place blames nobody


def test_a_placed_and_a_copied_run_deliver_the_same() -> None:
    """The planted-bug guard for :func:`pump`: with placement off the same messages arrive the
    same way, so the first test's equality is not an artefact of the helper."""
    # Two full blocks each (placed at both receivers) and a few bytes more (copied).
    payloads = [random.Random(k).randbytes(2 * BLOCK + k) for k in range(1, 4)]
    runs = []
    for place in (True, False):
        nodes = group()
        for k, payload in enumerate(payloads):
            nodes[k % 3].send(0, payload, 1.0)
        runs.append(pump(nodes, place=place))
        assert sum(n.placed_blocks for n in nodes.values()) == (12 if place else 0)
    assert runs[0] == runs[1]
    assert all(sorted(got) == sorted(payloads) for got in runs[0].values())


def test_no_place_for_a_block_held_or_in_a_wedged_shard() -> None:
    nodes = group()
    payload = random.Random(3).randbytes(2 * BLOCK)
    nodes[0].send(0, payload, 1.0)
    assert pump(nodes)[1] == [payload]
    first = Block(0, 0, 0, 0, 0, 2 * BLOCK, 0, BLOCK, 0, memoryview(payload[:BLOCK]))
    head, _ = two_parts(first)
    length = len(head) + BLOCK
    assert nodes[1].place_frame(0, memoryview(head), length) is None  # delivered already
    fresh = Block(0, 0, 0, 0, 1, 2 * BLOCK, 0, BLOCK, 0, memoryview(payload[:BLOCK]))
    fresh_head, _ = two_parts(fresh)
    shard = nodes[1].shard_of(0)
    assert shard is not None
    shard.wedge()
    assert nodes[1].place_frame(0, memoryview(fresh_head), length) is None


def test_the_same_block_from_another_member_while_one_is_placed_is_dropped() -> None:
    """While the relaying member's block is read into place, a copy of it from anyone else is
    a duplicate: taking it would let the placed read go on writing into a held block."""
    nodes = group()
    data = random.Random(5).randbytes(2 * BLOCK)
    blocks = [
        Block(0, 0, 0, 0, 0, 2 * BLOCK, b, BLOCK, 0, memoryview(data[b * BLOCK :][:BLOCK]))
        for b in (0, 1)
    ]
    heads = [two_parts(block)[0] for block in blocks]
    spot = nodes[1].place_frame(0, memoryview(heads[0]), len(heads[0]) + BLOCK)
    assert spot is not None
    shard = nodes[1].shard_of(0)
    assert shard is not None
    before = shard.duplicates
    nodes[1].receive_bytes(2, heads[0] + data[:BLOCK], 1.0)  # the same block, from member 2
    assert shard.duplicates == before + 1
    spot.body[:] = data[:BLOCK]
    nodes[1].receive_placed(0, spot, 1.0)
    nodes[1].receive_bytes(0, heads[1] + data[BLOCK:], 1.0)
    assert shard.duplicates == before + 1
    # The message is whole at member 1 with the placed block's bytes: it relays it to member 2.
    relayed = [m for dst, m in nodes[1].outbox() if isinstance(m, Block)]
    assert b"".join(bytes(block.data) for block in relayed) == data


def test_a_sender_with_messages_in_flight_sends_larger_blocks() -> None:
    """A large message sent alone goes in blocks of ``block_size`` (they pipeline along the
    chain); one sent while others of the sender's are in flight, in blocks four times that
    (fewer frames to handle at every member), and every member still delivers it whole."""
    nodes = group()
    rng = random.Random(11)
    payloads = [rng.randbytes(5 * BLOCK + 100) for _ in range(3)] + [rng.randbytes(BLOCK + 9)]
    sent: list[Block] = []
    nodes[0].send(0, payloads[0], 1.0)
    sent += [m for _, m in nodes[0].outbox() if isinstance(m, Block)]
    for payload in payloads[1:]:
        nodes[0].send(0, payload, 1.0)
    sent += [m for _, m in nodes[0].outbox() if isinstance(m, Block)]
    sizes = {index: {b.block_size for b in sent if b.index == index} for index in range(4)}
    counts = [sum(b.index == index for b in sent) for index in range(4)]
    # The last, shorter than four blocks, goes whole: a block never says more than its message.
    assert sizes == {0: {BLOCK}, 1: {4 * BLOCK}, 2: {4 * BLOCK}, 3: {BLOCK + 9}}
    assert counts == [6, 2, 2, 1]
    for block in sent:  # to member 1, the next in the chain, as a transport would
        nodes[1].receive_bytes(0, encode(block), 1.0)
    delivered = pump(nodes)
    assert all(got == payloads for got in delivered.values()), {
        i: [len(p) for p in got] for i, got in delivered.items()
    }
    # Small messages in flight leave the links free: the next large one pipelines again.
    nodes[0].send(0, b"small", 1.0)
    nodes[0].send(0, payloads[0], 1.0)
    assert {m.block_size for _, m in nodes[0].outbox() if isinstance(m, Block)} == {BLOCK}


def test_a_block_size_below_the_shards_or_unlike_its_messages_is_refused() -> None:
    """A peer cannot make a message come in more pieces than the configuration allows for,
    nor change its blocks' size midway: such a block is rejected, counted, and not taken."""
    nodes = group()
    data = memoryview(bytes(4 * BLOCK))
    small = Block(0, 0, 0, 0, 0, 4 * BLOCK, 0, BLOCK // 2, 0, data[: BLOCK // 2])
    first = Block(0, 0, 0, 0, 1, 4 * BLOCK, 0, BLOCK, 0, data[:BLOCK])
    unlike = Block(0, 0, 0, 0, 1, 4 * BLOCK, 1, 2 * BLOCK, 0, data[: 2 * BLOCK])
    for block in (small, first, unlike):
        nodes[1].receive_bytes(0, encode(block), 1.0)
    assert nodes[1].stats["rejected"] == 2
    assert nodes[1].place_frame(0, memoryview(two_parts(unlike)[0]), 2 * BLOCK + 100) is None
