"""The fault proxy: it must forward faithfully when healthy, or faults found through it would be
the proxy's own. Then each fault does what it says, and a pyderecho link through it shows it.

Timing is asserted only as lower bounds (a delay of d cannot deliver sooner than d) or as the
absence of data over a short window while paused or blackholed; nothing asserts how fast.
Every socket is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress

import pytest

from pyderecho.cli.demo import free_ports
from pyderecho.core.config import CoreConfig
from pyderecho.core.events import (
    Delivered,
    Event,
    Stopped,
)
from pyderecho.core.layout import every_member_layout
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.runtime.member import GroupStopped, Member
from pyderecho.testing import HistoryRecorder
from pyderecho.testing.fault_proxy import FaultProxy
from pyderecho.transport.tcp import TcpTransport, parse_address
from transport_conformance import Recorder, digest

HERE = "127.0.0.1"
QUIET_S = 0.3
"""How long a paused or blackholed link must stay silent: long against a loopback hop."""


def run(coro: Awaitable[None], timeout: float = 30.0) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await coro

    asyncio.run(bounded())


class Target:
    """A server behind the proxy: echoes (or only records) what each connection sends."""

    def __init__(self, *, echo: bool = True) -> None:
        self.echo = echo
        self.received = bytearray()
        self.closed = asyncio.Event()
        self.accepted = 0
        self.got_data = asyncio.Event()
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, HERE, 0)
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        try:
            while data := await reader.read(65536):
                self.received += data
                self.got_data.set()
                if self.echo:
                    writer.write(data)
                    await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            pass
        finally:
            self.closed.set()

    async def close(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@asynccontextmanager
async def proxied(
    *, echo: bool = True, seed: int = 7
) -> AsyncIterator[tuple[FaultProxy, Target, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A target, a proxy in front of it and one client connected through the proxy."""
    target = Target(echo=echo)
    address = await target.start()
    try:
        async with FaultProxy(f"{HERE}:0", address, seed=seed) as proxy:
            host, port = parse_address(proxy.address)
            reader, writer = await asyncio.open_connection(host, port)
            try:
                yield proxy, target, reader, writer
            finally:
                writer.transport.abort()
    finally:
        await target.close()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """What arrives before the connection ends (by a clean close or by a reset)."""
    try:
        return await reader.read()
    except ConnectionError:
        return b""


@pytest.mark.parametrize(("fixed", "jitter"), [(0.0, 0.0), (0.001, 0.004)])
def test_forwards_bytes_unchanged_and_in_order(fixed: float, jitter: float) -> None:
    """2 MiB of random bytes, written in uneven pieces, come back through an echo server
    byte-identical, with or without jitter (jitter must never reorder chunks); the end of the
    stream is forwarded too, and the connection then closes on both sides."""

    async def scenario() -> None:
        rng = random.Random(1)
        data = rng.randbytes(2 * 1024 * 1024)
        async with proxied() as (proxy, target, reader, writer):
            proxy.delay(fixed, jitter)

            async def send() -> None:
                at = 0
                while at < len(data):
                    step = rng.randint(1, 100_000)
                    writer.write(data[at : at + step])
                    await writer.drain()
                    at += step
                writer.write_eof()

            sending = asyncio.ensure_future(send())
            echoed = await reader.read()  # until the echoed end of stream
            await sending
            assert echoed == data
            assert bytes(target.received) == data
            assert proxy.stats["bytes_up"] == proxy.stats["bytes_down"] == len(data)
            await proxy.wait_idle(5)

    run(scenario())


def test_delay_holds_each_chunk_at_least_the_fixed_delay() -> None:
    """With a fixed delay d, an echo through the proxy (two passes) takes at least 2d; the
    lower bound is the only timing asserted."""

    async def scenario() -> None:
        async with proxied() as (proxy, _target, reader, writer):
            writer.write(b"warm-up")
            assert await reader.readexactly(7) == b"warm-up"
            proxy.delay(0.1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            assert loop.time() - started >= 0.19

    run(scenario())


def test_pause_holds_data_until_resume() -> None:
    """While paused nothing reaches the target; on resume everything held arrives, in order,
    and nothing is lost."""

    async def scenario() -> None:
        async with proxied(echo=False) as (proxy, target, _reader, writer):
            writer.write(b"before ")
            await writer.drain()
            await asyncio.wait_for(target.got_data.wait(), 5)
            proxy.pause()
            target.got_data.clear()
            for i in range(100):
                writer.write(b"%d," % i)
            await writer.drain()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(target.got_data.wait(), QUIET_S)
            assert bytes(target.received) == b"before "
            proxy.resume()
            want = b"before " + b"".join(b"%d," % i for i in range(100))
            async with asyncio.timeout(5):
                while len(target.received) < len(want):
                    target.got_data.clear()
                    await target.got_data.wait()
            assert bytes(target.received) == want

    run(scenario())


def test_pause_defers_new_connections_until_resume() -> None:
    """A connection accepted while paused is not dialed through until resume: the target sees
    nothing at all, not even a connection."""

    async def scenario() -> None:
        async with proxied(echo=True) as (proxy, target, _reader, _writer):
            await proxy.wait_for_connections(1)
            proxy.pause()
            host, port = parse_address(proxy.address)
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"held")
                await proxy.wait_for_connections(2)
                await asyncio.sleep(QUIET_S)
                assert target.accepted == 1
                proxy.resume()
                assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
                assert target.accepted == 2
            finally:
                writer.transport.abort()

    run(scenario())


def test_drop_closes_both_sides() -> None:
    """After drop_connections, the client's read ends and the target sees its connection end;
    the proxy keeps accepting, and a new connection works."""

    async def scenario() -> None:
        async with proxied() as (proxy, target, reader, writer):
            writer.write(b"hello")
            assert await reader.readexactly(5) == b"hello"
            assert proxy.drop_connections() == 1
            assert await asyncio.wait_for(read_until_closed(reader), 5) == b""
            await asyncio.wait_for(target.closed.wait(), 5)
            assert proxy.connections == 0
            host, port = parse_address(proxy.address)
            reader2, writer2 = await asyncio.open_connection(host, port)
            try:
                writer2.write(b"again")
                assert await asyncio.wait_for(reader2.readexactly(5), 5) == b"again"
            finally:
                writer2.transport.abort()

    run(scenario())


def test_blackhole_stops_delivery_without_closing() -> None:
    """A blackholed link forwards nothing either way and closes nothing; heal() resets the
    connection that lost bytes (its stream has a hole), and new connections work again."""

    async def scenario() -> None:
        async with proxied() as (proxy, target, reader, writer):
            writer.write(b"one")
            assert await reader.readexactly(3) == b"one"
            proxy.blackhole()
            target.got_data.clear()
            writer.write(b"swallowed")
            await writer.drain()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), QUIET_S)  # no echo, and no end either
            assert not target.got_data.is_set()
            assert not target.closed.is_set()
            assert proxy.connections == 1
            assert proxy.stats["blackholed_bytes"] == len(b"swallowed")
            proxy.heal()
            assert await asyncio.wait_for(read_until_closed(reader), 5) == b""
            host, port = parse_address(proxy.address)
            reader2, writer2 = await asyncio.open_connection(host, port)
            try:
                writer2.write(b"healed")
                assert await asyncio.wait_for(reader2.readexactly(6), 5) == b"healed"
            finally:
                writer2.transport.abort()

    run(scenario())


def test_blackhole_hides_resets_and_swallows_new_connections() -> None:
    """Behind a blackhole even a reset does not get through (the target's side stays open
    until heal), and a connection opened meanwhile is never dialed: heal resets it."""

    async def scenario() -> None:
        async with proxied() as (proxy, target, reader, writer):
            writer.write(b"one")
            assert await reader.readexactly(3) == b"one"
            proxy.blackhole()
            writer.transport.abort()  # the client resets its connection
            host, port = parse_address(proxy.address)
            late_reader, late_writer = await asyncio.open_connection(host, port)
            try:
                late_writer.write(b"into the void")
                await proxy.wait_for_connections(2)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(target.closed.wait(), QUIET_S)
                assert target.accepted == 1
                proxy.heal()
                await asyncio.wait_for(target.closed.wait(), 5)
                assert await asyncio.wait_for(read_until_closed(late_reader), 5) == b""
                await proxy.wait_idle(5)
                assert target.accepted == 1
            finally:
                late_writer.transport.abort()

    run(scenario())


def test_a_pyderecho_link_through_the_proxy() -> None:
    """Member 0 sends to member 1 through the proxy: frames pass intact; paused, none arrive
    and the link stays up; resumed, all arrive in order; dropped, both members lose the link."""

    async def scenario() -> None:
        secret = b"fault proxy test secret!"
        ra, rb = Recorder(), Recorder()
        a = TcpTransport(0, f"{HERE}:0", group="g", secret=secret)
        b = TcpTransport(1, f"{HERE}:0", group="g", secret=secret)
        await a.start(ra.on_frame, ra.on_peer_lost)
        await b.start(rb.on_frame, rb.on_peer_lost)
        try:
            async with FaultProxy(f"{HERE}:0", b.address) as proxy:
                a.connect(1, proxy.address)
                frames = [random.Random(i).randbytes(100 + 997 * i) for i in range(40)]
                for frame in frames[:10]:
                    a.send(1, frame)
                await rb.wait_for_frames(0, 10)
                proxy.pause()
                for frame in frames[10:]:
                    a.send(1, frame)
                await asyncio.sleep(QUIET_S)
                assert len(rb.frames[0]) == 10
                assert not ra.lost and not rb.lost
                proxy.resume()
                await rb.wait_for_frames(0, len(frames))
                assert rb.frames[0] == [digest(frame) for frame in frames]
                proxy.drop_connections()
                await ra.wait_for_loss(1)
                await rb.wait_for_loss(0)
        finally:
            with suppress(Exception):
                await a.close()
            await b.close()

    run(scenario())


class History:
    """Every member's events, fed to the project's history checker at the end."""

    def __init__(self) -> None:
        self.recorder = HistoryRecorder()
        self.stopped: dict[NodeId, str] = {}
        self.delivered: Counter[NodeId] = Counter()
        self.changed = asyncio.Event()

    def hook(self, member: NodeId) -> Callable[[Event], None]:
        def record(event: Event) -> None:
            self.recorder.record_event(member, event)
            if isinstance(event, Delivered):
                self.delivered[member] += 1
            elif isinstance(event, Stopped):
                self.stopped[member] = event.reason
            self.changed.set()

        return record

    async def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None


def test_a_live_group_over_slow_links_survives_an_isolated_member() -> None:
    """Three members, every directed link through its own proxy with 2-10 ms of jittered
    delay, all multicasting. Member 2 is then blackholed both ways: 0 and 1 install a view
    without it and go on, 2 stops as a partitioned minority, and the history checker finds
    every delivery consistent (order, FIFO, virtual synchrony)."""

    async def scenario() -> None:
        ids = (0, 1, 2)
        real = {m: f"{HERE}:{port}" for m, port in zip(ids, free_ports(3), strict=True)}
        history = History()
        async with AsyncExitStack() as stack:
            links: dict[tuple[NodeId, NodeId], FaultProxy] = {}
            for a in ids:
                for b in ids:
                    if a != b:
                        proxy = FaultProxy(f"{HERE}:0", real[b], seed=10 * a + b)
                        links[(a, b)] = await stack.enter_async_context(proxy)
                        proxy.delay(0.002, jitter=0.008)
            loop = asyncio.get_running_loop()
            config = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5)
            members: dict[NodeId, Member] = {}
            for m in ids:
                # Member m reaches each peer through the proxy of that directed link.
                addresses = {b: real[b] if b == m else links[(m, b)].address for b in ids}
                node = Node(
                    m,
                    View(0, ids),
                    every_member_layout(),
                    config,
                    now=loop.time(),
                    addresses=addresses,
                )
                transport = TcpTransport(m, real[m], group="g", secret=b"s" * 16)
                members[m] = Member(node, transport, on_event=history.hook(m))
            for member in members.values():
                await stack.enter_async_context(member)

            async def send(m: NodeId, count: int) -> None:
                for i in range(count):
                    try:
                        await members[m].send(0, b"%d:%d" % (m, i))
                    except GroupStopped:
                        return
                    await asyncio.sleep(0.005)  # the workload's pace

            await asyncio.gather(*(send(m, 30) for m in ids))
            await history.wait(
                lambda: all(history.delivered[m] >= 90 for m in ids), "view 0's deliveries"
            )
            senders = [asyncio.ensure_future(send(m, 40)) for m in ids]
            await asyncio.sleep(0.05)
            for (a, b), proxy in links.items():
                if 2 in (a, b):
                    proxy.blackhole()
            await history.wait(lambda: 2 in history.stopped, "member 2 to stop")
            await history.wait(
                lambda: all(members[m].view.members == (0, 1) for m in (0, 1)),
                "members 0 and 1 to install a view without 2",
            )
            await asyncio.gather(*senders)
            before = {m: history.delivered[m] for m in (0, 1)}
            await asyncio.gather(send(0, 20), send(1, 20))
            await history.wait(
                lambda: all(history.delivered[m] >= before[m] + 40 for m in (0, 1)),
                "deliveries in the new view",
            )
            assert history.stopped[2].startswith("partitioned"), history.stopped
            assert not members[0].node.stopped and not members[1].node.stopped
            for proxy in links.values():
                proxy.heal()
        assert history.recorder.check() == []

    run(scenario())
