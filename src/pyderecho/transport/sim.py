"""A deterministic simulator: many members in one process, a virtual clock, a seeded RNG.

Every source of variation (link delay and jitter, the workload a caller builds from
:attr:`Simulation.rng`) flows from one root seed, ties in the event heap break by insertion
order, and nothing iterates a set, so the same seed replays the same run event for event; the
run's :attr:`~Simulation.trace_digest` proves it.

Every message is encoded to its wire frame and decoded at the receiver, as on a real transport.
Links are reliable and FIFO, as the protocol assumes of TCP: each message takes the sender's
link time (size over bandwidth, one message at a time per sender) plus latency and jitter, and a
message never overtakes an earlier one on the same link. Messages on different links reorder
freely. Faults: a member can be paused (it handles nothing until it resumes, then everything
queued for it, in order) or crashed (it stops for good and its links go silent).
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered, Event, MessageSent, NullsSent
from pyderecho.core.layout import LayoutFunction, ViewLayout
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.history.checker import HistoryRecorder
from pyderecho.history.records import DeliveryRecord, SentRecord, payload_digest
from pyderecho.wire import WireMessage, encode


@dataclass(frozen=True, slots=True)
class LinkModel:
    """How long a message takes between two members."""

    latency_s: float = 20e-6
    jitter_s: float = 30e-6
    """Uniform extra delay per message; it reorders messages across links, never within one."""
    bandwidth_bytes_per_s: float = 1.25e9
    """Each member's outgoing link (10 Gbit/s by default): sends queue behind each other."""
    overhead_bytes: int = 64
    """Framing and headers charged to every message on top of its encoded size."""


_ARRIVE, _SEND, _PAUSE, _RESUME, _CRASH, _CALL = range(6)


class Simulation:
    """A group of simulated members driven by one virtual clock."""

    def __init__(
        self,
        members: int | Sequence[NodeId],
        layout: LayoutFunction,
        *,
        seed: int,
        config: CoreConfig | None = None,
        link: LinkModel | None = None,
    ) -> None:
        self.seed = seed
        root = random.Random(seed)
        self.rng = random.Random(root.getrandbits(64))
        """For the caller's workload and faults: drawn from the same root seed."""
        self._link_rng = random.Random(root.getrandbits(64))
        self.link = link or LinkModel()
        member_ids = tuple(range(members)) if isinstance(members, int) else tuple(members)
        self.view = View(epoch=0, members=member_ids)
        layouts: dict[tuple[int, tuple[NodeId, ...]], ViewLayout] = {}
        self.nodes: dict[NodeId, Node] = {
            node: Node(node, self.view, layout, config, layout_cache=layouts) for node in member_ids
        }
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Any, Any, Any]] = []
        self._counter = 0
        self._link_free: dict[NodeId, float] = {}
        self._last_arrival: dict[tuple[NodeId, NodeId], float] = {}
        self._paused: dict[NodeId, list[tuple[int, Any, Any, Any]]] = {}
        self.crashed: set[NodeId] = set()
        self.recorder = HistoryRecorder()
        """Every send and delivery, for :mod:`pyderecho.history.checker`."""
        self.messages_sent: dict[NodeId, int] = dict.fromkeys(member_ids, 0)
        self.bytes_sent: dict[NodeId, int] = dict.fromkeys(member_ids, 0)
        self.events_processed = 0
        self.deliveries = 0
        self._trace = hashlib.blake2b(digest_size=16)
        self.on_event: Callable[[NodeId, Event], None] | None = None
        """Called for every event a member reports, after the simulator's own bookkeeping."""
        for node in member_ids:
            self._drain(node)

    # -- scheduling -------------------------------------------------------------------------

    def _push(self, time: float, kind: int, a: Any, b: Any = None, c: Any = None) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (time, self._counter, kind, a, b, c))

    def send(self, member: NodeId, subgroup: int, payload: bytes, at: float | None = None) -> None:
        """Have ``member``'s application multicast ``payload`` in ``subgroup`` at time ``at``."""
        self._push(self.now if at is None else at, _SEND, member, subgroup, payload)

    def call(self, at: float, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual time ``at``: for workloads that react to the run."""
        self._push(at, _CALL, action)

    def pause(self, member: NodeId, at: float, duration: float) -> None:
        """Freeze ``member`` from ``at`` for ``duration``: it handles nothing meanwhile."""
        self._push(at, _PAUSE, member)
        self._push(at + duration, _RESUME, member)

    def crash(self, member: NodeId, at: float) -> None:
        """Stop ``member`` for good at ``at``."""
        self._push(at, _CRASH, member)

    # -- running ----------------------------------------------------------------------------

    def run(self, until: float | None = None, max_events: int | None = None) -> None:
        """Process events in time order until none are left, ``until`` or ``max_events``."""
        heap = self._heap
        processed = 0
        while heap:
            if until is not None and heap[0][0] > until:
                self.now = until
                return
            if max_events is not None and processed >= max_events:
                return
            time, _, kind, a, b, c = heapq.heappop(heap)
            self.now = time
            processed += 1
            self.events_processed += 1
            self._dispatch(kind, a, b, c)

    def _dispatch(self, kind: int, a: Any, b: Any, c: Any) -> None:
        if kind == _CALL:
            a()
            return
        node_id: NodeId = a
        if node_id in self.crashed:
            return
        held = self._paused.get(node_id)
        if kind == _PAUSE:
            self._paused.setdefault(node_id, [])
            return
        if kind == _RESUME:
            if held is not None:
                del self._paused[node_id]
                for event in held:
                    self._dispatch(*event)
            return
        if kind == _CRASH:
            self.crashed.add(node_id)
            self._paused.pop(node_id, None)
            return
        if held is not None:
            held.append((kind, a, b, c))
            return
        node = self.nodes[node_id]
        if kind == _ARRIVE:
            self._trace.update(f"{self.now!r} {b}>{node_id} {len(c)}".encode())
            node.receive_bytes(b, c)
        else:
            node.send(b, c)
        self._drain(node_id)

    def _drain(self, node_id: NodeId) -> None:
        node = self.nodes[node_id]
        for dst, message in node.outbox():
            self._transmit(node_id, dst, message)
        for event in node.events():
            self._record(node_id, event)
            if self.on_event is not None:
                self.on_event(node_id, event)

    def _transmit(self, src: NodeId, dst: NodeId, message: WireMessage) -> None:
        link = self.link
        frame = encode(message)
        size = len(frame) + link.overhead_bytes
        self.messages_sent[src] += 1
        self.bytes_sent[src] += size
        departure = max(self.now, self._link_free.get(src, 0.0)) + size / link.bandwidth_bytes_per_s
        self._link_free[src] = departure
        arrival = departure + link.latency_s + link.jitter_s * self._link_rng.random()
        key = (src, dst)
        arrival = max(arrival, self._last_arrival.get(key, 0.0))
        self._last_arrival[key] = arrival
        self._push(arrival, _ARRIVE, dst, src, frame)

    def _record(self, node_id: NodeId, event: Event) -> None:
        if isinstance(event, Delivered):
            self.deliveries += 1
            digest = payload_digest(event.payload)
            self._trace.update(f"D{node_id} {event.sender}:{event.index} {digest}".encode())
            self.recorder.record_delivery(
                DeliveryRecord(
                    node_id,
                    event.epoch,
                    event.subgroup,
                    event.shard,
                    event.mode,
                    event.sender,
                    event.index,
                    len(event.payload),
                    digest,
                )
            )
        elif isinstance(event, MessageSent):
            self.recorder.record_sent(
                SentRecord(
                    node_id,
                    event.epoch,
                    event.subgroup,
                    event.shard,
                    event.index,
                    payload_digest(event.payload),
                )
            )
        elif isinstance(event, NullsSent):
            for index in range(event.first, event.first + event.count):
                self.recorder.record_sent(
                    SentRecord(
                        node_id, event.epoch, event.subgroup, event.shard, index, "", null=True
                    )
                )

    @property
    def trace_digest(self) -> str:
        """A hash over every arrival and delivery so far: equal for equal runs."""
        return self._trace.hexdigest()
