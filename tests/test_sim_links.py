"""The simulator's link model on its own, and the proof that the simulator and the memory
network time frames with it alike: the same seed and the same sends give the same arrivals."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

import pytest

from pyderecho.core.node import Node
from pyderecho.core.view import NodeId
from pyderecho.layouts import resolve_layout
from pyderecho.testing import LinkModel, MemoryNetwork, MemoryTransport, SimLinks, Simulation

JITTERY = LinkModel(latency_s=50e-6, jitter_s=200e-6)
"""Jitter four times the latency: consecutive frames on two links often swap."""

Link = tuple[NodeId, NodeId]
Send = tuple[NodeId, NodeId, int, float]
"""A question to the model: source, destination, frame size, send time."""


def test_a_link_keeps_its_order_and_different_links_reorder() -> None:
    links = SimLinks(JITTERY, seed=3)
    arrivals: dict[Link, list[float]] = defaultdict(list)
    order: list[Link] = []
    for step in range(200):
        now = step * 10e-6
        for src in (0, 1):
            arrivals[src, 2].append(links.arrival(src, 2, 100, now))
            order.append((src, 2))
    for times in arrivals.values():
        assert times == sorted(times)
    sent_first_arrived_later = sum(
        a0 > a1 for a0, a1 in zip(arrivals[0, 2], arrivals[1, 2], strict=True)
    )
    assert 0 < sent_first_arrived_later < 200


def test_a_sender_link_carries_one_frame_at_a_time() -> None:
    model = LinkModel(latency_s=1e-3, jitter_s=0.0, bandwidth_bytes_per_s=1e6, overhead_bytes=0)
    links = SimLinks(model, seed=0)
    first = links.arrival(0, 1, 1000, 0.0)
    to_another_peer = links.arrival(0, 2, 1000, 0.0)
    from_another_sender = links.arrival(3, 1, 1000, 0.0)
    assert first == pytest.approx(2e-3)
    assert to_another_peer == pytest.approx(3e-3)  # queued behind the first on 0's link
    assert from_another_sender == pytest.approx(2e-3)


def test_the_same_seed_gives_the_same_answers() -> None:
    sends = [(i % 3, (i + 1) % 3, 37 * i, i * 5e-6) for i in range(100)]

    def answers(seed: int) -> list[float]:
        links = SimLinks(JITTERY, seed=seed)
        return [links.arrival(*send) for send in sends]

    assert answers(9) == answers(9)
    assert answers(9) != answers(10)


def spy_receive(node: Node, times: dict[NodeId, list[float]]) -> Callable[..., None]:
    """``node.receive_bytes`` that also notes, per sender, when each frame arrived."""
    take = node.receive_bytes

    def receive(src: NodeId, data: bytes | memoryview, now: float, *, flush: bool = True) -> None:
        times[src].append(now)
        take(src, data, now, flush=flush)

    return receive


def simulated_run(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Simulation, list[Send], dict[Link, list[float]]]:
    """A short group run in the simulator: every frame it sent, in order, and when each reached
    its receiver, by link (checked against the receivers' own clocks)."""
    sim = Simulation(3, resolve_layout("every-member"), seed=5, link=JITTERY)
    sends: list[Send] = []
    answers: dict[Link, list[float]] = defaultdict(list)
    received: dict[NodeId, dict[NodeId, list[float]]] = defaultdict(lambda: defaultdict(list))
    ask = sim.links.arrival

    def spy_arrival(src: NodeId, dst: NodeId, size: int, now: float) -> float:
        sends.append((src, dst, size, now))
        answers[src, dst].append(ask(src, dst, size, now))
        return answers[src, dst][-1]

    monkeypatch.setattr(sim.links, "arrival", spy_arrival)
    for node in sim.nodes.values():
        monkeypatch.setattr(node, "receive_bytes", spy_receive(node, received[node.node_id]))
    for number in range(30):
        sim.send(number % 3, 0, b"m%d" % number, at=number * 20e-6)
    until = 0.01
    sim.run(until=until)
    assert sum(len(times) for by_src in received.values() for times in by_src.values()) > 100
    for link, times in answers.items():
        assert received[link[1]][link[0]] == [t for t in times if t <= until], link
    return sim, sends, answers


class ManualClock(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the test moves it, so a memory network's sends
    happen at exactly the simulator's times."""

    now = 0.0

    def time(self) -> float:
        return self.now


@pytest.mark.patches_compiled
def test_the_simulator_and_a_memory_network_deliver_the_same_sends_at_the_same_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sim, sends, arrivals = simulated_run(monkeypatch)

    async def scenario(loop: ManualClock) -> dict[Link, list[float]]:
        network = MemoryNetwork(links=SimLinks(sim.links.model, seed=sim.links.seed))
        delivered: dict[Link, list[float]] = defaultdict(list)
        transports = [MemoryTransport(i, network, f"mem-{i}") for i in range(3)]
        for transport in transports:

            def on_frame(src: NodeId, _: memoryview, dst: NodeId = transport.node_id) -> None:
                delivered[src, dst].append(loop.time())

            await transport.start(on_frame, lambda peer, reason: None)
        for a in transports:
            for b in transports:
                if a is not b:
                    a.connect(b.node_id, b.address)
        pending = list(reversed(sends))
        moments = {now for *_, now in sends} | {t for times in arrivals.values() for t in times}
        for moment in sorted(moments):
            loop.now = moment
            for _ in range(2):  # one turn moves due timers to the ready queue, one runs them
                await asyncio.sleep(0)
            while pending and pending[-1][3] == moment:
                src, dst, size, _ = pending.pop()
                transports[src].send(dst, bytes(size))
        for transport in transports:
            await transport.close()
        return delivered

    with asyncio.Runner(loop_factory=ManualClock) as runner:
        loop = runner.get_loop()
        assert isinstance(loop, ManualClock)
        delivered = runner.run(scenario(loop))
    assert delivered == arrivals
