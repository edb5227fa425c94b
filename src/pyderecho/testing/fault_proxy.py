"""A TCP fault proxy for tests: put it between two members and make their link misbehave.

A :class:`FaultProxy` listens on one address and forwards every connection it accepts to a
target address, byte for byte, in both directions. A test points a member at the proxy instead of
the peer and then injects faults while the group runs::

    async with FaultProxy("127.0.0.1:0", peer_address) as proxy:
        transport.connect(peer, proxy.address)  # or: Node(..., addresses={peer: proxy.address})
        proxy.delay(0.05, jitter=0.02)  # slow link, order kept
        proxy.pause()                    # hold everything (a stalled network, no loss)
        proxy.resume()
        proxy.blackhole()                # swallow everything, close nothing
        proxy.drop_connections()         # reset both sides, as a crashed middlebox would
        proxy.heal()                     # back to a clean link

What it does not do, on purpose: reorder. TCP is one ordered byte stream, so a real network can
delay or lose segments but never hand the application bytes out of order; reordering chunks here
would corrupt the framing and test nothing a deployment can meet. The link-level faults that
*are* possible on TCP are the ones above. Loss is modelled by :meth:`FaultProxy.blackhole`: the
bytes are gone, so a connection that lost any cannot resume (its stream has a hole) and
:meth:`FaultProxy.heal` closes it; the peers must reconnect, as they would after a real outage
that outlasted TCP's retransmissions.

Memory is bounded: each direction of each connection holds at most ``max_buffered`` bytes in
flight (delayed or paused); beyond that the proxy stops reading, so the sender feels the same
back-pressure as from a slow network. Nothing here polls: waits are on events and on the
release time of the next chunk.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any

from pyderecho.transport.tcp import format_address, parse_address

__all__ = ["FaultProxy"]

_CHUNK = 64 * 1024
_MAX_BUFFERED = 4 * 1024 * 1024


class _Pipe:
    """One direction of a proxied connection: chunks read from one side wait here, each with
    its release time, until they may be written to the other side. Release times never
    decrease, so jitter slows the stream without reordering it."""

    def __init__(
        self,
        proxy: FaultProxy,
        connection: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        counter: str,
    ) -> None:
        self.proxy = proxy
        self.connection = connection
        self.reader = reader
        self.writer = writer
        self.counter = counter
        self.queue: deque[tuple[float, bytes | None]] = deque()
        """(release time, chunk); ``None`` is the end of the stream, forwarded in its turn."""
        self.buffered = 0
        self.last_release = 0.0
        self.has_data = asyncio.Event()
        self.has_room = asyncio.Event()
        self.has_room.set()
        self.finished = False

    async def pump_in(self) -> None:
        """Read chunks and stamp them; stop reading while the buffer is full."""
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        while True:
            await self.has_room.wait()
            data = await self.reader.read(proxy.chunk_size)
            if proxy._blackholed:
                self.connection.lost = True
                proxy.stats["blackholed_bytes"] += len(data)
                if not data:
                    return  # a blackhole forwards no end of stream either
                continue
            release = max(loop.time() + proxy._sample_delay(), self.last_release)
            self.last_release = release
            self.queue.append((release, data or None))
            self.has_data.set()
            if not data:
                return
            self.buffered += len(data)
            if self.buffered >= proxy.max_buffered:
                self.has_room.clear()

    async def pump_out(self) -> None:
        """Write each chunk once its release time has come and the proxy is not paused."""
        proxy = self.proxy
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                self.has_data.clear()
                await self.has_data.wait()
            await proxy._flowing.wait()
            release, data = self.queue[0]
            wait = release - loop.time()
            if wait > 0:
                # The chunk's delay, not a protocol step: then re-check pause and blackhole.
                await asyncio.sleep(wait)
                continue
            self.queue.popleft()
            if data is not None:
                self.buffered -= len(data)
                if self.buffered < proxy.max_buffered:
                    self.has_room.set()
            if proxy._blackholed:
                self.connection.lost = True
                proxy.stats["blackholed_bytes"] += len(data or b"")
                continue
            if data is None:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                self.finished = True
                self.connection.pipe_finished()
                return
            self.writer.write(data)
            proxy.stats[self.counter] += len(data)
            await self.writer.drain()


class _Connection:
    """One accepted client, its connection to the target, and the tasks moving bytes."""

    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.pipes: list[_Pipe] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.lost = False
        """Bytes of this connection were swallowed: its stream has a hole and cannot resume."""
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._guard(coro), name=f"fault-proxy-{name}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        """Any failure of one side (reset, refused write) ends the whole connection, as a
        broken middlebox would: both peers see it. Behind a blackhole nothing gets through,
        not even that: the other side stays silent until :meth:`FaultProxy.heal` resets it."""
        try:
            await coro
        except OSError:
            if self.proxy._blackholed:
                self.lost = True
            else:
                self.abort()

    def pipe_finished(self) -> None:
        """Both directions forwarded their end of stream: the connection is done."""
        if all(pipe.finished for pipe in self.pipes):
            self.close()

    def close(self) -> None:
        self._end(abort=False)

    def abort(self) -> None:
        self._end(abort=True)

    def _end(self, *, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.proxy._forget(self)
        me = asyncio.current_task()
        for task in list(self.tasks):
            if task is not me:
                task.cancel()
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            if abort:
                writer.transport.abort()
            else:
                writer.close()


class FaultProxy:
    """Forward connections from ``listen`` (``"host:port"``; port 0 picks one, see
    :attr:`address`) to ``target``, with faults injected on demand.

    Faults apply to every connection, current and future, in both directions. ``seed`` makes
    the jitter reproducible.
    """

    def __init__(
        self,
        listen: str,
        target: str,
        *,
        seed: int | None = None,
        chunk_size: int = _CHUNK,
        max_buffered: int = _MAX_BUFFERED,
        connect_timeout: float = 10.0,
    ) -> None:
        parse_address(target)
        if chunk_size < 1 or max_buffered < 1 or connect_timeout <= 0:
            raise ValueError("chunk_size, max_buffered and connect_timeout must be positive")
        self._listen = parse_address(listen)
        self.target = target
        self.chunk_size = chunk_size
        self.max_buffered = max_buffered
        self._connect_timeout = connect_timeout
        self._rng = random.Random(seed)
        self._fixed = 0.0
        self._jitter = 0.0
        self._flowing = asyncio.Event()
        """Set unless paused: every pipe waits on it before writing."""
        self._flowing.set()
        self._blackholed = False
        self.stats: Counter[str] = Counter()
        """``accepted``, ``connect_failed``, ``dropped``, ``bytes_up`` (client to target),
        ``bytes_down``, ``blackholed_bytes``."""
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._changed = asyncio.Event()

    # -- life cycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """Where clients connect, with the port actually bound."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the proxy is not listening: call start() first")
        host, port = self._server.sockets[0].getsockname()[:2]
        return format_address(host, port)

    @property
    def paused(self) -> bool:
        return not self._flowing.is_set()

    @property
    def blackholed(self) -> bool:
        return self._blackholed

    @property
    def connections(self) -> int:
        """Connections accepted and not yet closed (including any still waiting to be dialed
        while paused)."""
        return len(self._connections)

    async def start(self) -> None:
        host, port = self._listen
        self._server = await asyncio.start_server(self._accept, host, port)

    async def close(self) -> None:
        """Stop listening and reset every connection; no task of the proxy outlives this."""
        if self._server is not None:
            self._server.close()
        tasks: set[asyncio.Task[None]] = set()
        for connection in list(self._connections):
            tasks |= connection.tasks
            connection.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def wait_for_connections(self, count: int, timeout: float = 10.0) -> None:
        """Wait until at least ``count`` connections are open."""
        await self._wait(lambda: len(self._connections) >= count, timeout)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no connection is open (all ended, dropped or reset)."""
        await self._wait(lambda: not self._connections, timeout)

    async def _wait(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    # -- faults -----------------------------------------------------------------------------

    def delay(self, fixed: float, jitter: float = 0.0) -> None:
        """Hold each chunk read from now on ``fixed`` seconds plus up to ``jitter`` more
        (uniform), in order: a chunk never overtakes the one before it, so jitter shows as
        uneven gaps, never as reordering."""
        if fixed < 0 or jitter < 0:
            raise ValueError("delay and jitter must not be negative")
        self._fixed, self._jitter = fixed, jitter

    def pause(self) -> None:
        """Hold everything: nothing is forwarded (nor new connections dialed) until
        :meth:`resume`, and nothing is lost. Beyond ``max_buffered`` the senders block."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def blackhole(self) -> None:
        """Swallow every byte from now on, in both directions, without closing anything: the
        peers see a silent link, as behind a firewall that drops packets."""
        self._blackholed = True

    def drop_connections(self, *, reset: bool = True) -> int:
        """Close both sides of every open connection (a reset, or a clean close with
        ``reset=False``); returns how many. New connections are still accepted."""
        dropped = list(self._connections)
        for connection in dropped:
            if reset:
                connection.abort()
            else:
                connection.close()
        self.stats["dropped"] += len(dropped)
        return len(dropped)

    def heal(self) -> None:
        """Back to a clean link: no delay, not paused, not blackholed. Connections that lost
        bytes to the blackhole are reset, since their streams cannot resume."""
        self._fixed = self._jitter = 0.0
        self._blackholed = False
        self._flowing.set()
        broken = [c for c in self._connections if c.lost]
        for connection in broken:
            connection.abort()
        self.stats["dropped"] += len(broken)

    def _sample_delay(self) -> float:
        if self._jitter:
            return self._fixed + self._rng.uniform(0.0, self._jitter)
        return self._fixed

    # -- forwarding -------------------------------------------------------------------------

    def _forget(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        self._changed.set()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A plain callback, so the connection is registered (and reset by :meth:`close` and
        :meth:`drop_connections`) from the moment it is accepted, even before it is dialed."""
        self.stats["accepted"] += 1
        connection = _Connection(self, writer)
        self._connections.add(connection)
        self._changed.set()
        if self._blackholed:
            # Swallowed from its first byte: never dialed, reset by heal().
            connection.lost = True
            connection.spawn(self._swallow(reader), "swallow")
        else:
            connection.spawn(self._open(connection, reader), "dial")

    async def _open(self, connection: _Connection, reader: asyncio.StreamReader) -> None:
        await self._flowing.wait()
        if self._blackholed:  # blackholed while paused: this one is swallowed too
            connection.lost = True
            await self._swallow(reader)
            return
        host, port = parse_address(self.target)
        try:
            async with asyncio.timeout(self._connect_timeout):
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            self.stats["connect_failed"] += 1
            connection.abort()
            return
        if connection.closed:  # dropped while dialing
            up_writer.transport.abort()
            return
        connection.upstream = up_writer
        up = _Pipe(self, connection, reader, up_writer, "bytes_up")
        down = _Pipe(self, connection, up_reader, connection.client, "bytes_down")
        connection.pipes = [up, down]
        for pipe, name in ((up, "up"), (down, "down")):
            connection.spawn(pipe.pump_in(), f"{name}-in")
            connection.spawn(pipe.pump_out(), f"{name}-out")

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(self.chunk_size):
            self.stats["blackholed_bytes"] += len(data)
