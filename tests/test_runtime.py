"""The asyncio runtime and its blocking face, over real TCP sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random

import pytest

from pyderecho.cli.demo import free_ports
from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered, Event, Stopped, ViewInstalled
from pyderecho.core.layout import Allocation, Mode, ShardLayout
from pyderecho.core.node import Node
from pyderecho.core.view import View
from pyderecho.layouts import resolve_layout
from pyderecho.runtime.blocking import BlockingMember
from pyderecho.runtime.member import Member, deliveries
from pyderecho.transport.tcp import TcpTransport

SECRET = b"runtime-test-secret!"
FAST = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5)


def make_node(member: int, addresses: dict[int, str], kind: type[Node] = Node) -> Node:
    view = View(0, tuple(sorted(addresses)))
    return kind(member, view, resolve_layout("every-member"), FAST, addresses=addresses)


def make_transport(member: int, addresses: dict[int, str]) -> TcpTransport:
    return TcpTransport(member, addresses[member], group="runtime", secret=SECRET)


def test_members_deliver_one_order_and_survive_a_lost_member() -> None:
    async def scenario() -> None:
        addresses = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(3))}
        members = [Member(make_node(i, addresses), make_transport(i, addresses)) for i in addresses]
        queues = [deliveries(member) for member in members]
        for member in members:
            await member.start()
        for round_ in range(200):
            for member in members:
                await member.send(0, b"%d:%d" % (member.node.node_id, round_))
        orders: list[list[tuple[int, int]]] = []
        for q in queues:
            got = [await asyncio.wait_for(q.get(), 10) for _ in range(600)]
            orders.append([(d.sender, d.index) for d in got])
        assert orders[0] == orders[1] == orders[2]
        assert sorted(orders[0]) == sorted((s, i) for s in range(3) for i in range(200))

        await members[2].close()  # its links break: the others take that as a failure
        for member in members[:2]:
            view = await member.wait_for_view(lambda v: v.epoch >= 1, timeout=10)
            assert view.members == (0, 1)
        await members[0].send(0, b"after")
        for q in queues[:2]:
            late = await asyncio.wait_for(q.get(), 10)
            assert late.payload == b"after"
        for member in members[:2]:
            await member.close()

    asyncio.run(scenario())


def test_leave_stops_the_member_cleanly_and_the_rest_go_on() -> None:
    async def scenario() -> None:
        addresses = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(3))}
        members = [Member(make_node(i, addresses), make_transport(i, addresses)) for i in addresses]
        for member in members:
            await member.start()
        assert await asyncio.wait_for(members[1].leave(), 10) == "left the group"
        view = await members[0].wait_for_view(lambda v: v.epoch >= 1, timeout=10)
        assert view.members == (0, 2)
        assert view.departed == (1,)
        for member in members:
            await member.close()

    asyncio.run(scenario())


def test_the_blocking_member_sends_and_receives_from_plain_threads() -> None:
    addresses = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(3))}
    stops: list[Event] = []
    members = [
        BlockingMember(
            make_node(i, addresses),
            make_transport(i, addresses),
            on_event=lambda e: stops.append(e) if isinstance(e, Stopped) else None,
        )
        for i in addresses
    ]
    for member in members:
        member.start()
    try:
        for number in range(50):
            members[number % 3].send(0, b"b%d" % number)
        for member in members:
            got: list[Delivered] = [member.deliveries.get(timeout=10) for _ in range(50)]
            assert sorted(bytes(d.payload) for d in got) == sorted(b"b%d" % n for n in range(50))
        assert members[2].leave() == "left the group"
        view = members[0].wait_for_view(lambda v: v.epoch >= 1, timeout=10)
        assert view.members == (0, 1)
        assert [e.reason for e in stops if isinstance(e, Stopped)] == ["left the group"]
    finally:
        for member in members:
            member.close()


def test_the_last_row_reaches_a_member_leaving_a_pair() -> None:
    """Regression: the runtime dropped the links to departed members at once, and with them
    the final row a leaving member waits for; it then stopped as "partitioned"."""

    async def scenario() -> None:
        addresses = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(2))}
        members = [Member(make_node(i, addresses), make_transport(i, addresses)) for i in addresses]
        for member in members:
            await member.start()
        assert await asyncio.wait_for(members[1].leave(), 10) == "left the group"
        view = await members[0].wait_for_view(lambda v: v.epoch >= 1, timeout=10)
        assert view.members == (0,)
        for member in members:
            await member.close()

    asyncio.run(scenario())


def test_a_founder_that_starts_late_is_not_suspected() -> None:
    """Founders start seconds apart in practice: one that has not shown up yet gets
    startup_timeout, not heartbeat_timeout."""

    async def scenario() -> None:
        addresses = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(3))}
        members = [Member(make_node(i, addresses), make_transport(i, addresses)) for i in addresses]
        await members[0].start()
        await members[1].start()
        await asyncio.sleep(4 * FAST.heartbeat_timeout)  # the late founder's start-up time
        queue = deliveries(members[2])
        await members[2].start()
        await members[0].send(0, b"all here")
        await members[1].send(0, b"late one hears it")
        got = [await asyncio.wait_for(queue.get(), 10) for _ in range(2)]
        assert [d.payload for d in got] == [b"all here", b"late one hears it"]
        assert [member.view.epoch for member in members] == [0, 0, 0]
        for member in members:  # the first to close makes the others change views
            await member.close()

    asyncio.run(scenario())


def raw_group(view: View) -> Allocation:
    return {"Group": [[ShardLayout(view.members, Mode.RAW)]]}


def test_queued_raw_deliveries_keep_their_payloads() -> None:
    """A Raw payload is a view into the received frame, whose memory the transport reuses (TCP
    reads into one buffer): the delivery queues, which hold events past their handling, must
    hold copies, or later frames overwrite what waits in the queue."""

    async def scenario() -> None:
        addresses = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(2))}
        view = View(0, (0, 1))
        members = [
            Member(
                Node(i, view, raw_group, FAST, addresses=addresses),
                make_transport(i, addresses),
            )
            for i in addresses
        ]
        queue = deliveries(members[1])
        for member in members:
            await member.start()
        sent = [b"raw message %d " % number * (1 + number % 7) for number in range(300)]
        for number, payload in enumerate(sent):
            await members[0].send(0, payload)
            if number % 10 == 0:
                await asyncio.sleep(0.001)  # several frames, so the receive buffer is reused
        got = [await asyncio.wait_for(queue.get(), 10) for _ in sent]
        assert [d.mode for d in got] == [Mode.RAW] * len(sent)
        assert [bytes(d.payload) for d in got] == sent
        for member in members:
            await member.close()

    asyncio.run(scenario())


def test_a_handler_that_raises_on_a_delivery_is_counted_and_the_next_ones_arrive() -> None:
    """Deliveries take the member's shortest path to the handler; a handler raising on one is
    counted and logged, and every later delivery (and the view event after them) still comes."""

    async def scenario() -> None:
        addresses = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(3))}
        seen: list[bytes] = []
        views: list[int] = []

        def handler(event: Event) -> None:
            if isinstance(event, Delivered):
                seen.append(bytes(event.payload))
                if event.payload == b"bad":
                    raise RuntimeError("handler bug")
            elif isinstance(event, ViewInstalled):
                views.append(event.view.epoch)

        members = [
            Member(
                make_node(i, addresses),
                make_transport(i, addresses),
                on_event=handler if i == 1 else None,
            )
            for i in addresses
        ]
        for member in members:
            await member.start()
        for payload in (b"first", b"bad", b"last"):
            await members[0].send(0, payload)
        async with asyncio.timeout(10):
            while len(seen) < 3:
                await members[1].wait_progress()
        assert seen == [b"first", b"bad", b"last"]
        assert members[1].stats["event_handler_failed"] == 1
        await members[2].close()
        await members[1].wait_for_view(lambda v: v.epoch >= 1, timeout=10)
        assert views[-1] >= 1
        for member in members[:2]:
            await member.close()

    asyncio.run(scenario())


def test_large_messages_over_tcp_are_read_into_their_buffers_and_arrive_intact() -> None:
    """Blocks of large messages are read by the TCP transport straight into the message's
    reassembly buffer (a :class:`~pyderecho.transport.base.Placement`), not copied there from
    a frame. Every member sends distinct 1 MiB messages; every member delivers every byte of
    every message, in one order, and the receivers did place the blocks they got."""

    async def scenario() -> None:
        addresses = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(3))}
        members = [Member(make_node(i, addresses), make_transport(i, addresses)) for i in addresses]
        queues = [deliveries(member) for member in members]
        for member in members:
            await member.start()
        size = (1 << 20) + 12_345  # a partial last block
        sent = {}
        for round_ in range(6):
            for member in members:
                me = member.node.node_id
                payload = bytes([me, round_]) + random.Random(me * 100 + round_).randbytes(size - 2)
                sent[(member.node.node_id, round_)] = payload
                await member.send(0, payload)
        orders = []
        for q in queues:
            got = [await asyncio.wait_for(q.get(), 30) for _ in range(18)]
            for delivery in got:
                payload = bytes(delivery.payload)
                assert payload == sent[(delivery.sender, payload[1])]
            orders.append([(d.sender, d.index) for d in got])
        assert orders[0] == orders[1] == orders[2]
        # Each member receives 5 blocks of each message of the other two (the last member in
        # a chain from its predecessor, the others as relays): most are read in place.
        for member in members:
            assert member.node.placed_blocks > 0
        for member in members:
            await member.close()

    asyncio.run(scenario())


class BrokenNode(Node):
    """A core with a bug that a frame can meet: once ``broken``, taking in a frame raises."""

    broken = False

    def receive_bytes(
        self, src: int, data: bytes | memoryview, now: float, *, flush: bool = True
    ) -> None:
        if self.broken:
            raise AssertionError("an invariant of the core does not hold")
        super().receive_bytes(src, data, now, flush=flush)


@pytest.mark.patches_compiled
def test_a_core_that_raises_on_a_frame_stops_its_member_and_blames_no_peer() -> None:
    """The core refuses a peer's bad input itself; an exception out of it is a bug in it, and
    its state may be half-changed: the member stops (as on a failed fsync), counts it, and
    says why, and the link to the peer whose frame met the bug is not dropped as that
    peer's fault. The other two go on without it."""

    async def scenario() -> None:
        addresses = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(3))}
        nodes = [make_node(i, addresses, BrokenNode if i == 1 else Node) for i in addresses]
        members = [Member(nodes[i], make_transport(i, addresses)) for i in addresses]
        queues = [deliveries(member) for member in members]
        for member in members:
            await member.start()
        await members[0].send(0, b"before")
        for q in queues:
            assert (await asyncio.wait_for(q.get(), 10)).payload == b"before"
        broken = nodes[1]
        assert isinstance(broken, BrokenNode)
        broken.broken = True
        await members[0].send(0, b"after")
        reason = await asyncio.wait_for(members[1].stopped(), 10)
        assert "the protocol core raised on a frame from node" in reason
        assert "AssertionError: an invariant of the core does not hold" in reason
        assert members[1].stats["core_failed"] == 1
        assert members[1].transport.stats["handler_error"] == 0
        for member in (members[0], members[2]):
            view = await member.wait_for_view(lambda v: 1 not in v.members, timeout=10)
            assert view.members == (0, 2)
        for q in (queues[0], queues[2]):
            assert (await asyncio.wait_for(q.get(), 10)).payload == b"after"
        for member in members:
            await member.close()

    asyncio.run(scenario())
