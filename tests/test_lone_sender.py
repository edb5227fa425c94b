"""One member sending alone, one message at a time (one client calling one member, the
commonest light load): whichever member it is, its message is delivered everywhere one hop and
one round of rows after it leaves, and each member pushes its row once per message. The others
fill their turns before the sender's next one with nulls as they answer, and the rows that only
show those nulls held (or, in a ``Paxos`` shard, logged) go with the next push, or at a tick.

The members here are cores with a FIFO exchange in rounds: in each round every frame queued so
far reaches its destination, and each member then flushes, as the runtime does at the end of
a loop turn."""

from __future__ import annotations

import pytest

from pyderecho.core.config import CoreConfig
from pyderecho.core.events import CutLogRequested, Delivered, PersistRequested
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.node import Node
from pyderecho.core.view import View
from pyderecho.wire import Data, ShardRow

CONFIG = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5)
VIEW = View(0, (0, 1, 2))


class Exchange:
    """Three cores, frames moved in rounds; a ``Paxos`` member logs what it is asked to at
    once, and its row shows it in the next round."""

    def __init__(self, mode: Mode) -> None:
        layout = layout_of({"Log": every_member(mode)})
        self.nodes = [Node(n, VIEW, layout, CONFIG) for n in VIEW.members]
        self.rows = 0
        self.frames = 0
        self.delivered: list[list[bytes]] = [[] for _ in self.nodes]
        self.now = 0.0

    def round(self) -> None:
        frames = [(node.node_id, dst, m) for node in self.nodes for dst, m in node.outbox()]
        self.rows += sum(
            isinstance(m, ShardRow) or (isinstance(m, Data) and m.row is not None)
            for _, _, m in frames
        )
        self.frames += len(frames)
        for src, dst, message in frames:
            self.nodes[dst].receive(src, message, self.now, flush=False)
        for node in self.nodes:
            node.flush(self.now)
        self._take_events()

    def _take_events(self) -> None:
        for node in self.nodes:
            for event in node.events():
                if isinstance(event, Delivered):
                    self.delivered[node.node_id].append(bytes(event.payload))
                elif isinstance(event, PersistRequested):
                    node.persisted(event.subgroup, event.epoch, event.upto, self.now)
                elif isinstance(event, CutLogRequested):
                    node.cut_logged(event.subgroup, event.epoch, self.now)

    def send(self, member: int, payload: bytes) -> int:
        """Send ``payload`` from ``member`` and run rounds until every member delivered it;
        returns the rounds it took."""
        self.nodes[member].send(0, payload, self.now)
        self._take_events()
        for rounds in range(1, 20):
            self.round()
            if all(payload in delivered for delivered in self.delivered):
                return rounds
        raise AssertionError(f"{payload!r} was not delivered everywhere in 20 rounds")

    def tick(self) -> None:
        self.now += CONFIG.heartbeat_interval
        for node in self.nodes:
            node.tick(self.now)
        self._take_events()


@pytest.mark.parametrize(("mode", "rounds", "rows"), [(Mode.ORDERED, 2, 6), (Mode.PAXOS, 3, 12)])
def test_a_lone_senders_message_takes_one_round_of_rows_whoever_sends(
    mode: Mode, rounds: int, rows: int
) -> None:
    """Ordered: the message's hop, then one row from each member to each other (6 rows,
    the sender's in the frame of its message). ``Paxos``: one more round, the rows that show
    it logged (6 more). Nothing else: the nulls ride on the rows. Filling only to the end of
    the round of the furthest message, as before, cost every sender but the first one more
    round each time; pushing the rows that showed nothing but nulls held cost 12 rows a
    message (ordered); the sender's row in a frame of its own, 2 frames more."""
    exchange = Exchange(mode)
    for run, sender in enumerate((0, 1, 2, 0, 2, 1)):
        exchange.send(sender, b"%d: first" % run)  # may wait for the others' nulls
        for number in range(5):
            exchange.rows = exchange.frames = 0
            taken = exchange.send(sender, b"%d: %d" % (run, number))
            assert taken == rounds, f"member {sender}'s message {number}: {taken} rounds"
            assert exchange.rows == rows, f"member {sender}'s message {number}: {exchange.rows}"
            # The message to each other member with its sender's row, and the others' rows:
            # the nulls ride on the rows.
            assert exchange.frames == rows, exchange.frames
    assert exchange.delivered[0] == exchange.delivered[1] == exchange.delivered[2]


@pytest.mark.parametrize("mode", [Mode.ORDERED, Mode.PAXOS])
def test_rows_that_only_show_nulls_go_at_the_next_tick_and_the_group_falls_quiet(
    mode: Mode,
) -> None:
    exchange = Exchange(mode)
    for run, sender in enumerate((1, 2, 2, 2)):
        exchange.send(sender, b"%d from %d" % (run, sender))
    for _ in range(3):
        exchange.round()
    assert not all(node.idle for node in exchange.nodes), "the last nulls wait for a push"
    exchange.tick()
    for _ in range(3):
        exchange.round()
    assert all(node.idle for node in exchange.nodes), "the tick's rows made every null stable"
    exchange.rows = 0
    exchange.tick()
    exchange.round()
    assert exchange.rows == 0, "a quiet group pushes no rows"


@pytest.mark.parametrize(
    ("src", "received", "nulls"),
    [(1, (0, 2, 0), 3), (1, (0, 2, 0), -1), (1, (0, 2), 1)],
    ids=["more-nulls-than-turns", "negative", "short-row"],
)
def test_a_row_with_nulls_it_cannot_carry_is_refused_and_counted(
    src: int, received: tuple[int, ...], nulls: int
) -> None:
    node = Node(0, VIEW, layout_of({"Log": every_member(Mode.ORDERED)}), CONFIG)
    row = ShardRow(0, 0, 0, received, seq=-1, delivered=-1, nulls=nulls)
    node.receive(src, row, 0.0)
    assert node.stats["rejected"] == 1
    shard = node.shard_of(0)
    assert shard is not None and shard.table.received[shard.rank] == [0, 0, 0]


def test_nulls_a_row_carries_are_held_as_nulls_are() -> None:
    node = Node(0, VIEW, layout_of({"Log": every_member(Mode.ORDERED)}), CONFIG)
    node.receive(2, ShardRow(0, 0, 0, (0, 0, 2), seq=-1, delivered=-1, nulls=2), 0.0)
    shard = node.shard_of(0)
    assert shard is not None and shard.table.received[shard.rank] == [0, 0, 2]
    assert node.stats["rejected"] == 0
