"""An in-process transport: members of one event loop exchanging frames through a switchboard.

It keeps the :class:`~pyderecho.transport.base.Transport` contract (FIFO per peer, whole
frames, a lost peer reported once) without sockets, so applications and their tests can run a
whole group of real :class:`~pyderecho.runtime.Member` objects in one process, and so the
transport conformance suite has a reference implementation to hold the real ones against.
Frames are copied once on send, because the caller may reuse its buffer.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from pyderecho.core.errors import LocalProtocolError
from pyderecho.core.view import NodeId
from pyderecho.transport.base import FrameHandler, PeerLostHandler


class MemoryNetwork:
    """Where in-process transports find each other by address."""

    def __init__(self) -> None:
        self.listening: dict[str, MemoryTransport] = {}


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
        self._closed = False

    async def start(self, on_frame: FrameHandler, on_peer_lost: PeerLostHandler) -> None:
        if self.address in self._network.listening:
            raise LocalProtocolError(f"address {self.address!r} is already taken")
        self._on_frame, self._on_peer_lost = on_frame, on_peer_lost
        self._network.listening[self.address] = self

    def connect(self, peer: NodeId, address: str) -> None:
        if peer == self.node_id:
            raise LocalProtocolError("a member cannot connect to itself")
        self._links[peer] = address
        self._lost.discard(peer)

    def send(self, peer: NodeId, frame: bytes | memoryview) -> None:
        address = self._links.get(peer)
        target = self._network.listening.get(address) if address is not None else None
        if target is None or self._closed:
            self.stats["send_no_link"] += 1
            return
        data = bytes(frame)
        asyncio.get_running_loop().call_soon(target._deliver, self.node_id, data)
        self.stats["frames_sent"] += 1

    def disconnect(self, peer: NodeId) -> None:
        address = self._links.pop(peer, None)
        target = self._network.listening.get(address) if address is not None else None
        if target is not None:
            asyncio.get_running_loop().call_soon(target._lose, self.node_id, "disconnected")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._network.listening.pop(self.address, None)
        loop = asyncio.get_running_loop()
        for other in list(self._network.listening.values()):
            if self.node_id in other._links or other.node_id in self._links:
                loop.call_soon(other._lose, self.node_id, "closed")
        self._links.clear()

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
