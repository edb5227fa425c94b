"""The in-process transport passes the same conformance suite as TCP and shared memory, and
carries a whole group of runtime members in one event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

import transport_conformance as conformance
from pyderecho.core.config import CoreConfig
from pyderecho.core.node import Node
from pyderecho.core.view import View
from pyderecho.layouts import resolve_layout
from pyderecho.runtime import Member, deliveries
from pyderecho.transport.base import Transport
from pyderecho.transport.memory import MemoryNetwork, MemoryTransport
from transport_conformance import Recorder, TransportFactory


async def make_memory(recorders: Sequence[Recorder]) -> list[Transport]:
    network = MemoryNetwork()
    transports = [MemoryTransport(i, network, f"mem-{i}") for i in range(len(recorders))]
    for transport, recorder in zip(transports, recorders, strict=True):
        await transport.start(recorder.on_frame, recorder.on_peer_lost)
    for a in transports:
        for b in transports:
            if a is not b:
                a.connect(b.node_id, b.address)
    return list(transports)


CHECKS: list[Callable[[TransportFactory], Awaitable[None]]] = [
    conformance.check_fifo_and_integrity,
    conformance.check_all_to_all,
    conformance.check_large_frames,
    conformance.check_peer_lost_on_close,
    conformance.check_disconnect,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_conformance(check: Callable[[TransportFactory], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(check(make_memory), 60))


def test_a_group_runs_in_one_loop_and_survives_a_closed_member() -> None:
    async def scenario() -> None:
        network = MemoryNetwork()
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
