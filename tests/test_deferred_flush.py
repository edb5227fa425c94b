"""Frames taken in with ``flush=False``: their deliveries happen at once, the rows they change
leave once for the whole burst at :meth:`Node.flush`, and the outcome is the same as taking
each frame with its own flush (the runtime's loop-turn batching)."""

from __future__ import annotations

import msgspec

from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered, PersistRequested
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.node import Node
from pyderecho.core.view import View
from pyderecho.wire import Data, ShardRow, WireMessage

CONFIG = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5)
ORDERED = layout_of({"Log": every_member(Mode.ORDERED)})
VIEW = View(0, (0, 1))


def _data_frames(sender: Node, count: int) -> list[WireMessage]:
    """``count`` separate Data frames from ``sender`` to member 1, one message each, without
    the sender's rows they carry (``Data.row``): the batches alone."""
    frames: list[WireMessage] = []
    for number in range(count):
        sender.send(0, b"m%d" % number, 0.0)
        frames.extend(
            msgspec.structs.replace(m, row=None)
            for dst, m in sender.outbox()
            if dst == 1 and isinstance(m, Data)
        )
    assert len(frames) == count, "each send left as its own frame"
    return frames


def _rows(node: Node) -> list[ShardRow]:
    return [m for _, m in node.outbox() if isinstance(m, ShardRow)]


def test_a_burst_taken_without_flushing_pushes_one_row_for_all_of_it() -> None:
    frames = _data_frames(Node(0, VIEW, ORDERED, CONFIG), 3)
    receiver = Node(1, VIEW, ORDERED, CONFIG)
    receiver.outbox()
    for frame in frames:
        receiver.receive(0, frame, 0.0, flush=False)
    assert _rows(receiver) == [], "nothing is pushed before the flush"
    receiver.flush(0.0)
    rows = _rows(receiver)
    assert len(rows) == 1, rows

    one_by_one = Node(1, VIEW, ORDERED, CONFIG)
    one_by_one.outbox()
    pushed: list[ShardRow] = []
    for frame in frames:
        one_by_one.receive(0, frame, 0.0)
        pushed.extend(_rows(one_by_one))
    assert len(pushed) == 3, "a flush per frame pushes a row per frame"
    assert rows[0].nulls == 3, "the nulls answering the whole burst ride on the one row"
    assert [row.nulls for row in pushed] == [1, 1, 1]
    same = msgspec.structs.replace(rows[0], nulls=1)
    assert same == pushed[-1], "the one row says what the last of the three did"


def test_deliveries_happen_as_the_frames_are_taken_in() -> None:
    sender = Node(0, VIEW, ORDERED, CONFIG)
    receiver = Node(1, VIEW, ORDERED, CONFIG)
    receiver.outbox()
    for frame in _data_frames(sender, 2):
        receiver.receive(0, frame, 0.0, flush=False)
    receiver.flush(0.0)  # its row, and its nulls for the round robin's turns it passed
    for _, message in receiver.outbox():
        sender.receive(1, message, 0.0)
    receiver.events()
    for row in _rows(sender):
        receiver.receive(0, row, 0.0, flush=False)
    delivered = [e.payload for e in receiver.events() if isinstance(e, Delivered)]
    assert delivered == [b"m0", b"m1"], "delivered as the row was taken in, before a flush"


def test_a_durability_report_taken_without_flushing_is_pushed_by_the_flush() -> None:
    paxos = layout_of({"Log": every_member(Mode.PAXOS)})
    nodes = [Node(i, VIEW, paxos, CONFIG) for i in (0, 1)]
    nodes[0].send(0, b"m", 0.0)
    receiver = nodes[1]
    requests: list[PersistRequested] = []
    for _ in range(6):  # until both hold the message stable and ask to log it
        for node in nodes:
            for dst, message in node.outbox():
                nodes[dst].receive(node.node_id, message, 0.0)
        for node in nodes:
            events = node.events()
            if node is receiver:
                requests += [e for e in events if isinstance(e, PersistRequested)]
    upto = max(r.upto for r in requests)
    assert upto >= 0 and receiver.outbox() == []

    receiver.persisted(0, 0, upto, 0.0, flush=False)
    assert _rows(receiver) == [], "the row waits for the end-of-turn flush"
    assert receiver.flush_due
    receiver.flush(0.0)
    rows = _rows(receiver)
    assert len(rows) == 1 and rows[0].persisted == upto, rows
