"""A deterministic simulator: many members in one process, a virtual clock, a seeded RNG.

Every source of variation (link delay and jitter, the workload and faults a caller draws from
:attr:`Simulation.rng`) flows from one root seed, ties in the event heap break by insertion
order, and nothing iterates a set, so the same seed replays the same run event for event; the
run's :attr:`~Simulation.trace_digest` proves it.

Every message is encoded to its wire frame and decoded at the receiver, as on a real transport.
Links are reliable and FIFO, as the protocol assumes of TCP: each message takes the sender's
link time (size over bandwidth, one message at a time per sender) plus latency and jitter, and a
message never overtakes an earlier one on the same link. Messages on different links reorder
freely. That timing is :class:`~pyderecho.sim.links.SimLinks`, the same model the
in-process memory transport runs on when given it (``MemoryNetwork(links=...)``).

Faults are the simulator's own: a member can be paused (it handles nothing until it resumes,
then everything queued for it, in order), crashed (it stops for good; what it had in flight is
lost on a random half of its links), or cut off by a partition (links across it break: what
crosses them while it lasts is lost).
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable, Collection, Sequence
from typing import Any

from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered, Event, MessageSent, NullsSent, Stopped, ViewInstalled
from pyderecho.core.layout import LayoutFunction, ViewLayout
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.history.checker import HistoryRecorder
from pyderecho.history.records import payload_digest
from pyderecho.sim.links import LinkModel, SimLinks
from pyderecho.wire import WireMessage, encode

__all__ = ["LinkModel", "Simulation"]

_ARRIVE, _SEND, _PAUSE, _RESUME, _CRASH, _CALL, _TICK, _JOIN, _LEAVE = range(9)


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
        self.links = SimLinks(link, seed=root.getrandbits(64))
        """Every message's timing (drawn from the same root seed)."""
        self._crash_rng = random.Random(root.getrandbits(64))
        self.config = config or CoreConfig()
        self._layout = layout
        member_ids = tuple(range(members)) if isinstance(members, int) else tuple(members)
        self.view = View(epoch=0, members=member_ids)
        """The founding view."""
        self._layouts: dict[tuple[int, tuple[NodeId, ...]], ViewLayout] = {}
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Any, Any, Any]] = []
        self._counter = 0
        self._scheduled = 0
        """Sends, faults and calls still in the heap: the run is not over while any remain."""
        self._paused: dict[NodeId, list[tuple[int, Any, Any, Any]]] = {}
        self._tick_at: dict[NodeId, float] = {}
        self._side: dict[NodeId, int] = {}
        """While a partition lasts: each member's side; links between sides are cut."""
        self.crashed: set[NodeId] = set()
        self._severed: set[tuple[NodeId, NodeId]] = set()
        """Links whose in-flight messages a crash destroyed."""
        self.stopped: dict[NodeId, str] = {}
        self.recorder = HistoryRecorder()
        """Every send, delivery and view, for :mod:`pyderecho.history.checker`."""
        self.messages_sent: dict[NodeId, int] = {}
        self.bytes_sent: dict[NodeId, int] = {}
        self.events_processed = 0
        self.deliveries = 0
        self.last_progress = 0.0
        """When a member last delivered, installed a view or stopped."""
        self._trace = hashlib.blake2b(digest_size=16)
        self.on_event: Callable[[NodeId, Event], None] | None = None
        """Called for every event a member reports, after the simulator's own bookkeeping."""
        self.nodes: dict[NodeId, Node] = {}
        for node in member_ids:
            self._add(node, Node(node, self.view, layout, self.config, layout_cache=self._layouts))

    def _add(self, node_id: NodeId, node: Node) -> None:
        self.nodes[node_id] = node
        self.messages_sent.setdefault(node_id, 0)
        self.bytes_sent.setdefault(node_id, 0)
        self._drain(node_id)

    # -- scheduling -------------------------------------------------------------------------

    def _push(self, time: float, kind: int, a: Any, b: Any = None, c: Any = None) -> None:
        self._counter += 1
        if kind not in (_ARRIVE, _TICK):
            self._scheduled += 1
        heapq.heappush(self._heap, (time, self._counter, kind, a, b, c))

    def send(self, member: NodeId, subgroup: int, payload: bytes, at: float | None = None) -> None:
        """Have ``member``'s application multicast ``payload`` in ``subgroup`` at time ``at``."""
        self._push(self.now if at is None else at, _SEND, member, subgroup, payload)

    def send_now(self, member: NodeId, subgroup: int, payload: bytes) -> None:
        """Multicast right away, from inside a :meth:`call`; raises what ``Node.send`` raises
        (:class:`~pyderecho.core.errors.LocalProtocolError` when the member cannot send)."""
        self.nodes[member].send(subgroup, payload, self.now)
        self._drain(member)

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

    def join(self, member: NodeId, at: float, contacts: Sequence[NodeId]) -> None:
        """Start a new process ``member`` at ``at`` that asks ``contacts`` to let it join."""
        self._push(at, _JOIN, member, tuple(contacts))

    def leave(self, member: NodeId, at: float) -> None:
        """Have ``member`` leave the group cleanly at ``at``."""
        self._push(at, _LEAVE, member)

    def partition(self, sides: Sequence[Collection[NodeId]], at: float, heal_at: float) -> None:
        """Cut every link between ``sides`` from ``at`` until ``heal_at``."""
        side_of = {node: number for number, side in enumerate(sides) for node in side}
        self.call(at, lambda: self._side.update(side_of))
        self.call(heal_at, self._side.clear)

    # -- running ----------------------------------------------------------------------------

    def run(self, until: float | None = None, max_events: int | None = None) -> None:
        """Process events in time order until none are left, ``until`` or ``max_events``.

        Running members keep their heartbeat timers armed, so a run without ``until`` ends only
        once every member has crashed or stopped: pass ``until`` or use :meth:`run_until`.
        """
        heap = self._heap
        processed = 0
        while heap:
            if until is not None and heap[0][0] > until:
                self.now = until
                return
            if max_events is not None and processed >= max_events:
                return
            time, _, kind, a, b, c = heapq.heappop(heap)
            if kind not in (_ARRIVE, _TICK):
                self._scheduled -= 1
            self.now = time
            processed += 1
            self.events_processed += 1
            self._dispatch(kind, a, b, c)

    def run_until(self, done: Callable[[], bool], limit: float, check_every: int = 500) -> bool:
        """Run until ``done()`` holds (checked every ``check_every`` events) or the clock
        reaches ``limit``; True when ``done`` held."""
        while not done():
            if not self._heap or self._heap[0][0] > limit:
                return False
            self.run(until=limit, max_events=check_every)
        return True

    def settle(self, limit: float) -> bool:
        """Run until the group is at rest: no scheduled sends or faults left, no view change
        under way, and every message sent delivered everywhere. False if ``limit`` came first."""
        return self.run_until(self.settled, limit)

    def settled(self) -> bool:
        if self._scheduled:
            return False
        return all(self.nodes[n].idle for n in self.running)

    @property
    def running(self) -> list[NodeId]:
        """Members neither crashed nor stopped, in id order."""
        return sorted(n for n in self.nodes if n not in self.crashed and n not in self.stopped)

    def _dispatch(self, kind: int, a: Any, b: Any, c: Any) -> None:
        if kind == _CALL:
            a()
            return
        node_id: NodeId = a
        if kind == _JOIN:
            node = Node(
                node_id,
                None,
                self._layout,
                self.config,
                now=self.now,
                contacts=b,
                layout_cache=self._layouts,
            )
            self._add(node_id, node)
            return
        if node_id in self.crashed or node_id not in self.nodes:
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
            # A crash breaks its connections before what they buffered got out, on some links
            # and not others: that is what leaves survivors holding different messages.
            self.crashed.add(node_id)
            self._paused.pop(node_id, None)
            for peer in sorted(self.nodes):
                if self._crash_rng.random() < 0.5:
                    self._severed.add((node_id, peer))
            return
        if held is not None:
            held.append((kind, a, b, c))
            return
        node = self.nodes[node_id]
        if kind == _ARRIVE:
            if self._cut(b, node_id) or (b, node_id) in self._severed:
                return
            self._trace.update(f"{self.now!r} {b}>{node_id} {len(c)}".encode())
            node.receive_bytes(b, c, self.now)
        elif kind == _TICK:
            if self._tick_at.get(node_id) != b:
                return  # superseded by an earlier deadline
            del self._tick_at[node_id]
            node.tick(self.now)
        elif kind == _LEAVE:
            if not node.stopped:
                node.leave(self.now)
        elif not node.stopped:
            node.send(b, c, self.now)
        self._drain(node_id)

    def _cut(self, src: NodeId, dst: NodeId) -> bool:
        side = self._side
        return bool(side) and side.get(src, -1) != side.get(dst, -1)

    def _drain(self, node_id: NodeId) -> None:
        node = self.nodes[node_id]
        for dst, message in node.outbox():
            self._transmit(node_id, dst, message)
        for event in node.events():
            self._record(node_id, event)
            if self.on_event is not None:
                self.on_event(node_id, event)
        deadline = node.next_deadline()
        if deadline is not None:
            deadline = max(deadline, self.now)
            scheduled = self._tick_at.get(node_id)
            if scheduled is None or deadline < scheduled:
                self._tick_at[node_id] = deadline
                self._push(deadline, _TICK, node_id, deadline)

    def _transmit(self, src: NodeId, dst: NodeId, message: WireMessage) -> None:
        if self._cut(src, dst):
            return
        frame = encode(message)
        self.messages_sent[src] += 1
        self.bytes_sent[src] += len(frame) + self.links.model.overhead_bytes
        self._push(self.links.arrival(src, dst, len(frame), self.now), _ARRIVE, dst, src, frame)

    def _record(self, node_id: NodeId, event: Event) -> None:
        self.recorder.record_event(node_id, event)
        if not isinstance(event, MessageSent | NullsSent):
            self.last_progress = self.now
        if isinstance(event, Delivered):
            self.deliveries += 1
            digest = payload_digest(event.payload)
            self._trace.update(f"D{node_id} {event.sender}:{event.index} {digest}".encode())
        elif isinstance(event, ViewInstalled):
            self._trace.update(f"V{node_id} {event.view.epoch} {event.view.members}".encode())
        elif isinstance(event, Stopped):
            self._trace.update(f"S{node_id} {event.reason}".encode())
            self.stopped[node_id] = event.reason

    @property
    def trace_digest(self) -> str:
        """A hash over every arrival, delivery and view so far: equal for equal runs."""
        return self._trace.hexdigest()
