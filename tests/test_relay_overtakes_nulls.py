"""A large message relayed along the chain can reach a member before the nulls its sender sent
before it: the nulls come straight from the sender, the message's blocks through the members
before this one in the chain. The nulls then close the gap before a message already held, and
the member must count that message as arrived, fill its own turns before it and deliver it.

It did not: only an arriving message moved the furthest message a member fills its turns up
to, so the message waited for a turn nobody filled and the shard stopped delivering while
every member stayed up (found by a benchmark of 200 KiB messages in 64 KiB blocks that stalled
about once in forty runs on a loaded machine). Three cores with the frames moved by hand;
the same order in the simulator, made by a short partial cut; and a sweep of such cuts with
large messages (200 seeds here, 2,000 in the slow suite), which found it in 11 of 200 seeds
on the code before the fix where the general sweeps, without cuts, never did.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque

import pytest

from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.sim.simulation import LinkModel, Simulation
from pyderecho.wire import WireMessage
from test_multicast_sim import members_of

CONFIG = CoreConfig(block_size=512, max_message_size=8192)
LAYOUT = layout_of({"Log": every_member(Mode.ORDERED)})
VIEW = View(0, (0, 1, 2))
LARGE = bytes(range(256)) * 12  # six blocks


class Links:
    """Three cores and a FIFO queue per directed link, moved one link at a time."""

    def __init__(self) -> None:
        self.nodes = [Node(n, VIEW, LAYOUT, CONFIG) for n in VIEW.members]
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


def test_the_simulator_delivers_a_relayed_message_whose_nulls_a_partial_cut_held_back() -> None:
    """The same order, made by a fault the simulator draws in its sweeps: a short partial cut
    between members 1 and 2, bridged by member 0, holds member 2's nulls on their way to
    member 1 while its message's blocks reach member 1 through member 0."""
    sim = Simulation(3, LAYOUT, seed=7, config=CONFIG)
    subgroup = sim.nodes[0].layout.shards[0].subgroup
    sim.send(0, subgroup, b"small", at=0.0)
    sim.partition([{1}, {2}], at=0.0, heal_at=2e-3, bridges=[0])
    sim.send(2, subgroup, LARGE, at=0.5e-3)
    _check_settles(sim, "seed 7")


def _partial_cuts_and_large_messages(seed: int) -> Simulation:
    """Three to five members in one ordered shard, small and large messages from random
    senders, and short partial cuts (one pair of members apart, the others bridging them,
    healed well within the failure detector's timeout): the relay chain outruns the held
    direct links now and then."""
    rng = random.Random(seed)
    members = rng.randint(3, 5)
    link = LinkModel(jitter_s=rng.choice([0.0, 30e-6, 300e-6]))
    sim = Simulation(members, LAYOUT, seed=seed, config=CONFIG, link=link)
    subgroup = sim.nodes[0].layout.shards[0].subgroup
    for number in range(rng.randint(1, 10)):
        sender = rng.randrange(members)
        size = 3000 if rng.random() < 0.5 else 40
        payload = (b"%d/%d/" % (sender, number)).ljust(size, b".")
        sim.send(sender, subgroup, payload, at=rng.uniform(0, 4e-3))
    for _ in range(rng.randint(1, 3)):
        apart = rng.sample(range(members), 2)
        bridges = [member for member in range(members) if member not in apart]
        at = rng.uniform(0, 4e-3)
        sim.partition([{apart[0]}, {apart[1]}], at, at + rng.uniform(0.2e-3, 5e-3), bridges)
    return sim


def _check_settles(sim: Simulation, run: str) -> None:
    """Every message delivered at every member, and the checker finds nothing wrong."""
    assert sim.settle(limit=5.0), f"{run}: the shard stopped delivering"
    assert sim.recorder.check(complete=True, members_of=members_of(sim)) == [], run


@pytest.mark.parametrize("seed", range(200))
def test_partial_cuts_with_large_messages_sweep(seed: int) -> None:
    """200 seeds: the code before the fix stopped delivering in 11 of them."""
    _check_settles(_partial_cuts_and_large_messages(seed), f"seed {seed}")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(200, 2200))
def test_partial_cuts_with_large_messages_long_sweep(seed: int) -> None:
    _check_settles(_partial_cuts_and_large_messages(seed), f"seed {seed}")
