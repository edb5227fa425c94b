"""Messages cut by a view change go out again only in the same shard.

A member that is wedged when it sends keeps the message for the next view. If the next view's
layout moves that member to another shard of the subgroup, replaying the message there would
apply it to another partition of the state (a key owned by another shard): it is abandoned
instead, and the application hears so.
"""

from __future__ import annotations

from pyderecho.core.events import Abandoned, Delivered, Event, Suspected
from pyderecho.core.layout import layout_of, sharded
from pyderecho.core.view import NodeId
from pyderecho.testing import Simulation

# Over members 0, 1, 2: shards [0, 1] and [2]. Without 2: [0] and [1], member 1 moves.
LAYOUT = layout_of({"KV": sharded(2, min_size=1, max_size=3)})


def run_cut_send(layout_moves_member: bool) -> tuple[list[Abandoned], list[tuple[int, bytes]]]:
    sim = Simulation(3, LAYOUT, seed=5)
    abandoned: list[Abandoned] = []
    delivered: list[tuple[int, bytes]] = []
    sender: NodeId = 1 if layout_moves_member else 0
    sent = False

    def observe(member: NodeId, event: Event) -> None:
        nonlocal sent
        if isinstance(event, Abandoned):
            abandoned.append(event)
        elif isinstance(event, Delivered) and event.sender == sender:
            delivered.append((event.shard, bytes(event.payload)))
        elif isinstance(event, Suspected) and member == sender and not sent:
            sent = True  # wedged now: the message waits for the next view
            sim.call(sim.now, lambda: sim.send_now(sender, 0, b"meant for shard 0"))

    sim.on_event = observe
    sim.crash(2, at=0.5)
    assert sim.run_until(lambda: sim.nodes[0].view.epoch >= 1 and sim.settled(), limit=30.0)
    assert sent
    return abandoned, delivered


def test_a_member_moved_to_another_shard_abandons_what_it_sent_for_the_first() -> None:
    abandoned, delivered = run_cut_send(layout_moves_member=True)
    assert [(a.type_name, a.subgroup_index, a.shard, a.payload) for a in abandoned] == [
        ("KV", 0, 0, b"meant for shard 0")
    ]
    assert delivered == []


def test_a_member_that_stays_in_its_shard_sends_the_cut_message_again() -> None:
    abandoned, delivered = run_cut_send(layout_moves_member=False)
    assert abandoned == []
    assert delivered == [(0, b"meant for shard 0")]
