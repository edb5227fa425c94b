"""An in-process transport: members of one event loop exchanging frames through a switchboard.

It keeps the :class:`~pyderecho.transport.base.Transport` contract (FIFO per peer, whole
frames, a lost peer reported once) without sockets, so applications and their tests can run a
whole group of real :class:`~pyderecho.runtime.Member` objects in one process, and so the
transport conformance suite has a reference implementation to hold the real ones against.
Frames are copied once on send, because the caller may reuse its buffer.

By default a frame arrives on the loop's next turn. A network built on the simulator's link
model (``MemoryNetwork(links=SimLinks(...))``) delivers each frame when that model says instead,
so runtime members meet the simulator's latency, bandwidth and reordering across links; the
conformance suite runs over it too, which checks that the model keeps the contract.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable
from functools import partial

from pyderecho.core.errors import LocalProtocolError
from pyderecho.core.view import NodeId
from pyderecho.sim.links import SimLinks
from pyderecho.transport.base import (
    Frame,
    FrameHandler,
    LargeFrameHandler,
    PeerLostHandler,
    joined,
)


class MemoryNetwork:
    """Where in-process transports find each other by address, and how frames cross.

    ``links`` times every frame on the event loop's clock (seconds of ``loop.time()``); without
    it frames cross at once. One :class:`SimLinks` serves one network: it remembers each link's
    last arrival to keep frames in order.
    """

    def __init__(self, links: SimLinks | None = None) -> None:
        self.listening: dict[str, MemoryTransport] = {}
        self.links = links


class MemoryTransport:
    """One member's end of a :class:`MemoryNetwork`."""

    def __init__(self, node_id: NodeId, network: MemoryNetwork, address: str) -> None:
        self.node_id = node_id
        self.address = address
        self.stats: Counter[str] = Counter()
        self._network = network
        self._links: dict[NodeId, str] = {}
        self._on_frame: FrameHandler | None = None
        self._on_peer_lost: PeerLostHandler | None = None
        self._lost: set[NodeId] = set()
        self._in_flight: dict[NodeId, deque[tuple[float, Callable[[], None]]]] = {}
        """Per sender, what is on its link to here, oldest first, each with its arrival time."""
        self._closed = False

    async def start(
        self,
        on_frame: FrameHandler,
        on_peer_lost: PeerLostHandler,
        on_large_frame: LargeFrameHandler | None = None,
    ) -> None:
        if self.address in self._network.listening:
            raise LocalProtocolError(f"address {self.address!r} is already taken")
        self._on_frame, self._on_peer_lost = on_frame, on_peer_lost
        self._network.listening[self.address] = self

    def connect(self, peer: NodeId, address: str) -> None:
        if peer == self.node_id:
            raise LocalProtocolError("a member cannot connect to itself")
        self._links[peer] = address
        self._lost.discard(peer)

    def send(self, peer: NodeId, frame: Frame, *, caller_flushes: bool = False) -> None:
        address = self._links.get(peer)
        target = self._network.listening.get(address) if address is not None else None
        if target is None or self._closed:
            self.stats["send_no_link"] += 1
            return
        data = bytes(joined(frame))
        self._put(target, len(data), partial(target._deliver, self.node_id, data))
        self.stats["frames_sent"] += 1

    def flush(self) -> None:
        """Frames are on their links as soon as they are sent: nothing waits here."""

    def disconnect(self, peer: NodeId) -> None:
        address = self._links.pop(peer, None)
        target = self._network.listening.get(address) if address is not None else None
        if target is not None:
            self._put(target, None, partial(target._lose, self.node_id, "disconnected"))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._network.listening.pop(self.address, None)
        for other in list(self._network.listening.values()):
            if self.node_id in other._links or other.node_id in self._links:
                self._put(other, None, partial(other._lose, self.node_id, "closed"))
        self._links.clear()

    def _put(self, target: MemoryTransport, size: int | None, handle: Callable[[], None]) -> None:
        """Put ``handle`` on the link to ``target``, behind everything already on it.

        ``size`` is a frame's length; ``None`` marks the notice that the link broke, which takes
        no link time and follows the last frame in flight (as a FIN follows the data), so a peer
        hears of the loss only after every frame sent before it. Each timer runs whatever is
        oldest on the link rather than its own item: timers due at the same instant may fire in
        any order, the link's queue may not.
        """
        loop = asyncio.get_running_loop()
        queue = target._in_flight.setdefault(self.node_id, deque())
        links = self._network.links
        now = loop.time()
        if links is None:
            queue.append((now, handle))
            loop.call_soon(target._arrive, self.node_id)
            return
        if size is None:
            when = max(now, queue[-1][0]) if queue else now
        else:
            when = links.arrival(self.node_id, target.node_id, size, now)
        queue.append((when, handle))
        loop.call_at(when, target._arrive, self.node_id)

    def _arrive(self, src: NodeId) -> None:
        _, handle = self._in_flight[src].popleft()
        handle()

    def _deliver(self, src: NodeId, data: bytes) -> None:
        if self._closed or self._on_frame is None or src in self._lost:
            return
        self.stats["frames_received"] += 1
        self._on_frame(src, memoryview(data))

    def _lose(self, peer: NodeId, reason: str) -> None:
        if self._closed or peer in self._lost or self._on_peer_lost is None:
            return
        self._lost.add(peer)
        self._links.pop(peer, None)
        self._on_peer_lost(peer, reason)
