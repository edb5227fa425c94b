"""The in-process transport passes the same conformance suite as TCP and shared memory, both
with frames crossing at once and over the simulator's link model (so that model keeps the
transport contract too), and carries a whole group of runtime members in one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

import transport_conformance as conformance
from pyderecho.core.config import CoreConfig
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.layouts import resolve_layout
from pyderecho.runtime.member import Member, deliveries
from pyderecho.sim.links import LinkModel, SimLinks
from pyderecho.transport.base import Transport
from pyderecho.transport.memory import MemoryNetwork, MemoryTransport
from transport_conformance import Recorder, TransportFactory, start_all_to_all

JITTERY = LinkModel(latency_s=50e-6, jitter_s=200e-6)
"""Jitter four times the latency: frames on different links overtake each other often."""


def memory_factory(links: Callable[[], SimLinks | None]) -> TransportFactory:
    """A conformance factory: each group on a fresh network with ``links()``, all dialing all."""

    async def make(recorders: Sequence[Recorder]) -> list[Transport]:
        network = MemoryNetwork(links=links())
        transports = [MemoryTransport(i, network, f"mem-{i}") for i in range(len(recorders))]
        return await start_all_to_all(transports, recorders)

    return make


NETWORKS: dict[str, Callable[[], SimLinks | None]] = {
    "immediate": lambda: None,
    "sim-links": lambda: SimLinks(JITTERY, seed=1),
}

CHECKS: list[Callable[[TransportFactory], Awaitable[None]]] = [
    getattr(conformance, name) for name in sorted(dir(conformance)) if name.startswith("check_")
]
"""Every check of the suite, so a new one cannot be forgotten here."""


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance(check: Callable[[TransportFactory], Awaitable[None]], network: str) -> None:
    asyncio.run(asyncio.wait_for(check(memory_factory(NETWORKS[network])), 60))


class ArrivalOrder(Recorder):
    """A recorder that also keeps the order of arrivals across senders."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[NodeId, int]] = []

    def on_frame(self, peer: NodeId, frame: memoryview) -> None:
        self.arrivals.append((peer, int(bytes(frame))))
        super().on_frame(peer, frame)


@pytest.mark.parametrize(("network", "reordered"), [("immediate", False), ("sim-links", True)])
def test_the_link_model_reorders_across_links_and_never_within_one(
    network: str, reordered: bool
) -> None:
    """Two members send to a third in strict alternation. Over the simulator's links the third
    sees the senders interleaved otherwise, so the suite's FIFO checks above meet real
    reordering; each sender's own frames still come in order."""

    async def scenario() -> None:
        receiver = ArrivalOrder()
        transports = await memory_factory(NETWORKS[network])([Recorder(), Recorder(), receiver])
        sent = [(src, number) for number in range(100) for src in (0, 1)]
        for src, number in sent:
            transports[src].send(2, b"%d" % number)
        for src in (0, 1):
            await receiver.wait_for_frames(src, 100)
        for src in (0, 1):
            assert [n for peer, n in receiver.arrivals if peer == src] == list(range(100))
        assert (receiver.arrivals != sent) == reordered
        for transport in transports:
            await transport.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("links", NETWORKS)
def test_a_group_runs_in_one_loop_and_survives_a_closed_member(links: str) -> None:
    async def scenario() -> None:
        network = MemoryNetwork(links=NETWORKS[links]())
        config = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5)
        addresses = {i: f"mem-{i}" for i in range(4)}
        members = [
            Member(
                Node(
                    i,
                    View(0, (0, 1, 2, 3)),
                    resolve_layout("every-member"),
                    config,
                    addresses=addresses,
                ),
                MemoryTransport(i, network, addresses[i]),
            )
            for i in range(4)
        ]
        queues = [deliveries(m) for m in members]
        for member in members:
            await member.start()
        for number in range(100):
            await members[number % 4].send(0, b"%d" % number)
        orders = [
            [(d.sender, d.index) for d in [await asyncio.wait_for(q.get(), 10) for _ in range(100)]]
            for q in queues
        ]
        assert all(order == orders[0] for order in orders)
        await members[3].close()
        view = await members[0].wait_for_view(lambda v: v.epoch == 1, timeout=10)
        assert view.members == (0, 1, 2)
        for member in members[:3]:
            await member.close()

    asyncio.run(scenario())
