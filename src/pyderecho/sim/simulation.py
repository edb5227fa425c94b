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

Heartbeats in memory. With :attr:`LinkModel.beats_in_memory` a periodic heartbeat is no frame,
as on the shared-memory transport: it overwrites a word of the link (the sender's epoch) and the
receiver reads the words of its inbound links at each of its ticks, handing the core a beat for
each that changed since its last look. Such beats wake nobody, arrive up to a heartbeat interval
late, and are not ordered with the link's frames. A word lives as long as its link: a restarted
or new process starts without words, and the words of a process that was killed or exited are
read no more (its sockets closed); a crash that closes nothing leaves its last words readable,
but on the links it severed.

Faults are the simulator's own: a member can be paused (it handles nothing until it resumes,
then everything queued for it, in order), crashed (it stops for good; what it had in flight is
lost on a random half of its links, what its disk had not synced is lost), cut off by a
partition (links across it break: what crosses them while it lasts is lost), or lose its disk
(the next sync fails and the member stops, as a real one does on a failed fsync).

A member that stops (it left, was removed, or lost its majority) exits as a real process does:
its links close once the frames it sent before reach their peers, and each peer that still
counts it a member hears of the broken link, as a transport reports it. A leaver may thus be
gone before the others installed the view without it, which is what real leaves look like.

``Paxos`` shards log to each member's simulated disk (:mod:`pyderecho.sim.disk`), with group
commit, and :meth:`Simulation.durability_violations` checks the delivery rule after the fact:
a message delivered anywhere was already durable at every member of its shard that lived on
into a later view or still runs.

Typed groups. Given ``types`` (replicated type name -> class), every member also runs an
:class:`~pyderecho.replicated.host.ObjectHost`, the same object layer real members run: each of
the core's events goes to the host, and the host's outputs are acted on at once (point-to-point
messages leave through the node, call results are kept in :attr:`Simulation.results`, state
digests go to the history recorder for the state rule). A workload makes ordered calls and
queries with :meth:`Simulation.call_ordered` and :meth:`Simulation.query`; tests read the
replicas through :attr:`Simulation.hosts`. An ``async`` query method runs only if it completes
without suspending (there is no event loop here); one that suspends fails with an error and is
counted in :attr:`Simulation.stats`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import heapq
import random
import struct
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from pyderecho.config import DEFAULT_CATCH_UP_BYTES
from pyderecho.core.config import CoreConfig
from pyderecho.core.errors import LocalProtocolError
from pyderecho.core.events import (
    CutLogRequested,
    Delivered,
    Event,
    MessageSent,
    NullsSent,
    PersistRequested,
    Stopped,
    Suspected,
    ViewInstalled,
    ViewLogRequested,
)
from pyderecho.core.layout import LayoutFunction, Mode, ViewLayout, compute_layout
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.history.checker import HistoryRecorder
from pyderecho.history.records import StateRecord, payload_digest
from pyderecho.replicated.events import (
    CallDone,
    CallFailed,
    HostFailed,
    QueryDone,
    ReadLog,
    RunQuery,
    SaveDoubt,
    SaveState,
    SendPeer,
    StateDigest,
    StateLost,
    StateReceived,
    StateWaiting,
    UserCodeFailed,
)
from pyderecho.replicated.host import ObjectHost, Output
from pyderecho.replicated.recovery import Rebuilt, rebuild
from pyderecho.sim.disk import DiskModel, SimDisks
from pyderecho.sim.links import LinkModel, SimLinks
from pyderecho.wire import P2P, Heartbeat, WireMessage, encode

_ARRIVAL = struct.Struct("<dqqq")
"""An arrival in the trace digest: time, source, destination, frame length (packed, not
formatted: the simulator hashes every arrival)."""
_BEAT = struct.Struct("<cdqqq")
"""A heartbeat read from memory in the trace digest: ``b"B"``, time, source, destination,
epoch."""

__all__ = ["CallResult", "DiskModel", "HostEvent", "LinkModel", "Simulation"]

CallResult = CallDone | CallFailed | QueryDone
"""How an ordered call or a query made through the simulator ended."""
HostEvent = StateReceived | StateLost | StateWaiting | UserCodeFailed | HostFailed
"""What a member's object layer reported for its application."""

(
    _ARRIVE,
    _SEND,
    _PAUSE,
    _RESUME,
    _CRASH,
    _CALL,
    _TICK,
    _JOIN,
    _LEAVE,
    _ARRIVE_P2P,
    _SYNCED,
    _FAIL_DISK,
    _RESTART,
    _FLUSH,
    _LOG_READ,
) = range(15)
"""Event kinds. A point-to-point frame (a reply, a query, a chunk of state) arrives as
``_ARRIVE_P2P``, which counts as scheduled work: a run is not settled while one is in flight,
since the object layer's progress rides on them and the core's idleness does not see them."""


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
        types: Mapping[str, type[Any]] | None = None,
        disk: DiskModel | None = None,
        catch_up_bytes: int = DEFAULT_CATCH_UP_BYTES,
    ) -> None:
        """``types`` maps the layout's replicated type names to their classes: with it, every
        member runs an object host (see the module's docstring); without it, members move
        bytes only. ``catch_up_bytes``: each host's budget of updates kept in memory for
        members that come back (a small one has them read back from the disks instead)."""
        self.catch_up_bytes = catch_up_bytes
        self.seed = seed
        root = random.Random(seed)
        self.rng = random.Random(root.getrandbits(64))
        """For the caller's workload and faults: drawn from the same root seed."""
        self.links = SimLinks(link, seed=root.getrandbits(64))
        """Every message's timing (drawn from the same root seed)."""
        self._crash_rng = random.Random(root.getrandbits(64))
        self.disks = SimDisks(disk, seed=root.getrandbits(64))
        """Every member's log of its ``Paxos`` shards (drawn from the same root seed)."""
        self._batch_rng = random.Random(root.getrandbits(64))
        self._flush_due: set[NodeId] = set()
        """Members that took frames in without flushing: a ``_FLUSH`` of theirs is queued."""
        self._paxos_deliveries: list[tuple[NodeId, float, tuple[int, int, int, int, int]]] = []
        self._paxos_shards: dict[tuple[int, int, int], tuple[NodeId, ...]] = {}
        """Members of each ``Paxos`` shard, by (epoch, subgroup, shard)."""
        self._shard_names: dict[tuple[int, int, int], tuple[str, int, int]] = {}
        """(type name, subgroup index, shard) of each (epoch, subgroup id, shard)."""
        self._founded: set[tuple[NodeId, View]] = set()
        """(member, view) of each view a restart founded."""
        self._suspected_at: dict[tuple[NodeId, NodeId, int], float] = {}
        """When each member first suspected another, by (member, suspect, epoch)."""
        self._event_epoch: dict[NodeId, int] = {}
        """The epoch of each member's events as they are recorded: a batch can hold a
        suspicion raised in one view and then the next view's installation."""
        self._agreeing: set[NodeId] = set()
        """Restarted members that have not installed their first view yet."""
        self._restarting: Counter[NodeId] = Counter()
        """Crashed members with a restart scheduled: frames sent to them after their crash
        wait for them (a peer's TCP link keeps them queued while it reconnects)."""
        self._killed: set[NodeId] = set()
        """Members :meth:`kill` stops: their crash breaks their peers' links at once."""
        self._crashed_at: dict[NodeId, int] = {}
        """The event counter when each member crashed: frames pushed before were sent to the
        process that crashed, and die with it."""
        self._parked: dict[NodeId, list[tuple[int, Any, Any, Any]]] = {}
        self._handling = 0
        """The event counter of the event being handled (a frame's: when it was sent)."""
        self.restarts: list[tuple[float, NodeId, View]] = []
        """(time, member, view founded) of every restart from the simulated disks."""
        self.crashes: list[tuple[float, NodeId]] = []
        """(time, member) of every crash."""
        self.rejoins: list[tuple[float, NodeId, View]] = []
        """(time, member, view joined) of every restarted member that joined anew."""
        self._last_epoch: dict[NodeId, int] = {}
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
        self._bridges: frozenset[NodeId] = frozenset()
        """While a partial cut lasts: members that reach every side (no side of their own)."""
        self._held_until = 0.0
        """While a partial cut lasts, its end: frames across it wait until then, as TCP holds
        and retransmits them (a partition's frames are lost instead, as when its links break)."""
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
        self.types: dict[str, type[Any]] | None = None if types is None else dict(types)
        self.hosts: dict[NodeId, ObjectHost] = {}
        """Each member's object layer (typed groups only): ``hosts[m].replica("KV")``."""
        self.results: dict[NodeId, dict[int, CallResult]] = {}
        """Per member, how each of its ordered calls and queries ended, by call or query id."""
        self.host_events: dict[NodeId, list[HostEvent]] = {}
        """Per member, what its object layer reported for the application, in order."""
        self.host_failed: dict[NodeId, str] = {}
        """Members whose object layer failed (:class:`HostFailed`): a real member would stop.
        Their hosts get no more events; a run that has any is broken."""
        self.refused: list[tuple[NodeId, float, str]] = []
        """Scheduled calls and queries refused at the call site: (member, time, error)."""
        self.stats: Counter[str] = Counter()
        """What the simulator could not do as a runtime would (``unsupported_async_query``),
        dropped (``p2p_after_stop``), or showed in memory instead of sending
        (``memory_beats``: heartbeats written into link words)."""
        self._beats_in_memory = self.links.model.beats_in_memory
        self._unread_beats: dict[NodeId, dict[NodeId, int]] = {}
        """The link words its receiver has not read since they changed: by receiver, the
        epoch of each sender's latest beat (a word overwritten before a read is one beat)."""
        self.on_output: Callable[[NodeId, Output], None] | None = None
        """Called for every output a member's object layer reports, after the bookkeeping."""
        self.nodes: dict[NodeId, Node] = {}
        for node in member_ids:
            self._add(node, Node(node, self.view, layout, self.config, layout_cache=self._layouts))

    def _new_host(self, member: NodeId) -> ObjectHost:
        assert self.types is not None
        return ObjectHost(
            member,
            self.types,
            record_digests=True,
            catch_up_bytes=self.catch_up_bytes,
            reads_logs=True,
        )

    def _add(self, node_id: NodeId, node: Node) -> None:
        self.nodes[node_id] = node
        self._event_epoch.pop(node_id, None)  # a restarted process starts its history afresh
        if self.types is not None:
            self.hosts[node_id] = self._new_host(node_id)
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
        (:class:`~pyderecho.core.errors.LocalProtocolError` when the member cannot send).
        A paused member's application is paused too: its send waits until it resumes."""
        held = self._paused.get(member)
        if held is not None:
            held.append((_SEND, member, subgroup, payload))
            return
        self.nodes[member].send(subgroup, payload, self.now)
        self._drain(member)

    def call_ordered(
        self,
        member: NodeId,
        type_name: str,
        subgroup_index: int,
        method: str,
        *args: Any,
        at: float | None = None,
        **kwargs: Any,
    ) -> None:
        """Have ``member`` call the ordered ``method`` in its shard of ``type_name[subgroup_index]``
        at time ``at`` (typed groups only). How it ends lands in :attr:`results`; a call the
        member cannot make then (it crashed, stopped, is in no such shard) in :attr:`refused`."""
        attempt = functools.partial(
            self.call_ordered_now, member, type_name, subgroup_index, method, *args, **kwargs
        )
        self.call(self.now if at is None else at, functools.partial(self._attempt, member, attempt))

    def call_ordered_now(
        self,
        member: NodeId,
        type_name: str,
        subgroup_index: int,
        method: str,
        *args: Any,
        own_reply: bool = False,
        **kwargs: Any,
    ) -> int:
        """Make the ordered call right away, from inside a :meth:`call`; returns its call id
        (its :class:`CallDone` or :class:`CallFailed` lands in ``results[member][id]``; with
        ``own_reply``, holding the caller's own replica's outcome alone). Raises at
        the call site as a member would: ``TypeError``/``AttributeError`` for a wrong method or
        arguments, :class:`~pyderecho.core.errors.LocalProtocolError` (``NotInShard`` among
        them) when the member cannot make it."""
        host = self._host(member)
        call_id, subgroup, payload = host.prepare_call(
            type_name,
            subgroup_index,
            method,
            args=args,
            kwargs=kwargs,
            timestamp=self.now,
            own=own_reply,
        )
        try:
            self.nodes[member].send(subgroup, payload, self.now)
        except LocalProtocolError:
            host.cancel_call(call_id)
            raise
        self._drain(member)
        return call_id

    def query(
        self,
        member: NodeId,
        type_name: str,
        subgroup_index: int,
        shard: int | None,
        method: str,
        *args: Any,
        at: float | None = None,
        **kwargs: Any,
    ) -> None:
        """Have ``member`` query ``method`` on one replica of the shard at time ``at`` (``shard``
        None: the member's own shard of the subgroup). The :class:`QueryDone` lands in
        :attr:`results`; a query refused at the call site in :attr:`refused`."""
        attempt = functools.partial(
            self.query_now, member, type_name, subgroup_index, shard, method, *args, **kwargs
        )
        self.call(self.now if at is None else at, functools.partial(self._attempt, member, attempt))

    def query_now(
        self,
        member: NodeId,
        type_name: str,
        subgroup_index: int,
        shard: int | None,
        method: str,
        *args: Any,
        **kwargs: Any,
    ) -> int:
        """Send the query right away; returns its id (see :meth:`call_ordered_now`)."""
        host = self._host(member)
        if self.nodes[member].stopped:
            raise LocalProtocolError(f"member {member} has stopped: {self.nodes[member].stopped}")
        query_id = host.prepare_query(
            type_name, subgroup_index, shard, method, args=args, kwargs=kwargs
        )
        self._drain(member)
        return query_id

    def _host(self, member: NodeId) -> ObjectHost:
        host = self.hosts.get(member)
        if host is None:
            if self.types is None:
                raise LocalProtocolError("this simulation runs no replicated types (types=None)")
            raise LocalProtocolError(f"member {member} is not running")
        if member in self.crashed:
            raise LocalProtocolError(f"member {member} has crashed")
        if member in self.host_failed:
            raise LocalProtocolError(f"member {member}'s object layer failed")
        return host

    def record_states(self) -> None:
        """Record every running member's replicas as they are now (kind "final"), so that the
        state rule also compares the states a run ends with, not only those at view
        boundaries and transfers."""
        for member in self.running:
            host = self.hosts.get(member)
            if host is None or member in self.host_failed:
                continue
            for key in host.replicas():
                now = host.state_digest(key)
                if now is not None:
                    position, digest = now
                    self.recorder.record_state(
                        StateRecord(member, member, *key, position, digest, "final")
                    )

    def _attempt(self, member: NodeId, attempt: Callable[[], int]) -> None:
        try:
            attempt()
        except LocalProtocolError as exc:
            self.refused.append((member, self.now, str(exc)))

    def call(self, at: float, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual time ``at``: for workloads that react to the run."""
        self._push(at, _CALL, action)

    def pause(self, member: NodeId, at: float, duration: float) -> None:
        """Freeze ``member`` from ``at`` for ``duration``: it handles nothing meanwhile."""
        self._push(at, _PAUSE, member)
        self._push(at + duration, _RESUME, member)

    def crash(self, member: NodeId, at: float) -> None:
        """Stop ``member`` for good at ``at``, as a power cut does: its peers hear nothing more
        and suspect it once it has been silent for their timeout."""
        self._push(at, _CRASH, member)

    def kill(self, member: NodeId, at: float) -> None:
        """Stop ``member`` for good at ``at``, as SIGKILL does: its operating system closes its
        sockets, so every peer's link to it breaks at once (no timeout to wait for)."""
        self._killed.add(member)
        self._push(at, _CRASH, member)

    def fail_disk(self, member: NodeId, at: float, reason: str = "EIO") -> None:
        """From ``at``, ``member``'s next sync fails with ``reason``: the member stops."""
        self._push(at, _FAIL_DISK, member, reason)

    def restart(self, member: NodeId, at: float) -> None:
        """Start crashed ``member`` again at ``at`` on what its disk kept: it rebuilds its
        Paxos replicas from snapshot and log and founds the view after the last one its disk
        recorded, as a real member restarting on its data directory does."""
        self._restarting[member] += 1
        self._push(at, _RESTART, member)

    def join(self, member: NodeId, at: float, contacts: Sequence[NodeId]) -> None:
        """Start a new process ``member`` at ``at`` that asks ``contacts`` to let it join.

        ``member`` may be the id of a member that has crashed or stopped by then: the new
        process takes its id with nothing of the old one's (as ``pyderecho node --join`` run
        again after a kill), and its history starts afresh in the view it joins.
        """
        if member in self.nodes:
            self._restarting[member] += 1  # killed, not powered off: its links break at once
        self._push(at, _JOIN, member, tuple(contacts))

    def leave(self, member: NodeId, at: float) -> None:
        """Have ``member`` leave the group cleanly at ``at``."""
        self._push(at, _LEAVE, member)

    def partition(
        self,
        sides: Sequence[Collection[NodeId]],
        at: float,
        heal_at: float,
        bridges: Collection[NodeId] = (),
    ) -> None:
        """Cut every link between ``sides`` from ``at`` until ``heal_at``.

        Members in no side are cut off from everyone, except ``bridges``: they keep their links
        to every side, which makes the fault a *partial cut* (one side cannot reach the other,
        yet both reach the bridges), the fault that makes two groups of members each suspect
        the other while a third hears both.
        """
        side_of = {node: number for number, side in enumerate(sides) for node in side}
        assert not side_of.keys() & set(bridges), "a bridge belongs to no side"
        held = heal_at if bridges else 0.0
        self.call(at, lambda: self._cut_off(side_of, frozenset(bridges), held))
        self.call(heal_at, lambda: self._cut_off({}, frozenset(), 0.0))

    def _cut_off(
        self, side_of: dict[NodeId, int], bridges: frozenset[NodeId], held_until: float
    ) -> None:
        self._side = side_of
        self._bridges = bridges
        self._held_until = held_until

    # -- running ----------------------------------------------------------------------------

    def run(self, until: float | None = None, max_events: int | None = None) -> None:
        """Process events in time order until none are left, ``until`` or ``max_events``.

        Running members keep their heartbeat timers armed, so a run without ``until`` ends only
        once every member has crashed or stopped: pass ``until`` or use :meth:`run_until`.
        """
        heap, pop, dispatch = self._heap, heapq.heappop, self._dispatch
        processed = 0
        while heap:
            if until is not None and heap[0][0] > until:
                self.now = until
                return
            if max_events is not None and processed >= max_events:
                return
            time, counter, kind, a, b, c = pop(heap)
            self._handling = counter
            if kind not in (_ARRIVE, _TICK):
                self._scheduled -= 1
            self.now = time
            processed += 1
            self.events_processed += 1
            dispatch(kind, a, b, c)

    def run_until(self, done: Callable[[], bool], limit: float, check_every: int = 500) -> bool:
        """Run until ``done()`` holds (checked every ``check_every`` events) or the clock
        reaches ``limit``; True when ``done`` held.

        A check that finds nothing scheduled but frames' deferred flushes looks again after
        the next event: an idle group's events repeat with its heartbeats, so checking every
        ``check_every`` events can land at the same point of that cycle, a flush always due,
        every time."""
        while not done():
            if not self._heap or self._heap[0][0] > limit:
                return False
            self.run(until=limit, max_events=1 if self._only_flushes_due() else check_every)
        return True

    def _only_flushes_due(self) -> bool:
        return (
            bool(self._flush_due)
            and self._scheduled == len(self._flush_due)
            and all(self.nodes[n].idle for n in self.running)
        )

    def settle(self, limit: float) -> bool:
        """Run until the group is at rest: no scheduled sends or faults left, no view change
        under way, and every message sent delivered everywhere. False if ``limit`` came first."""
        return self.run_until(self.settled, limit)

    def settled(self) -> bool:
        if self._scheduled:
            return False
        return all(self.nodes[n].idle for n in self.running)

    @property
    def paused(self) -> set[NodeId]:
        """Members frozen right now: their applications are frozen with them."""
        return set(self._paused)

    @property
    def running(self) -> list[NodeId]:
        """Members neither crashed nor stopped, in id order."""
        return sorted(n for n in self.nodes if n not in self.crashed and n not in self.stopped)

    def _dispatch(self, kind: int, a: Any, b: Any, c: Any) -> None:
        if (
            kind == _ARRIVE
            and a not in self.crashed
            and a not in self._paused
            and not self._side
            and (b, a) not in self._severed
        ):
            # Most events: a frame reaching a running member over a whole link. The same steps
            # as the general path below, without testing for every other kind first.
            node = self.nodes.get(a)
            if node is not None:
                self._take_frame(a, node, b, c)
                self._drain(a)
                return
        if kind == _CALL:
            a()
            return
        node_id: NodeId = a
        if kind == _RESTART:
            self._restart(node_id)
            return
        if kind == _JOIN:
            self._join(node_id, b)
            return
        if node_id in self.crashed and kind in (_ARRIVE, _ARRIVE_P2P):
            if node_id in self._restarting and self._sent_after_crash(node_id):
                self._parked.setdefault(node_id, []).append((kind, a, b, c))
            return
        if node_id in self.crashed or node_id not in self.nodes:
            if kind == _FLUSH:
                # Its flush died with it. Left marked due, a member that never comes back
                # (lost for good) would keep :meth:`_only_flushes_due` false, and an idle group
                # whose one flush due aligns with every check would never read as settled
                # (Paxos seed 10296 with two members lost at the total crash).
                self._flush_due.discard(node_id)
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
        if kind == _FAIL_DISK:
            self.disks.fail(node_id, b)
            return
        if kind == _CRASH:
            # A crash breaks its connections before what they buffered got out, on some links
            # and not others: that is what leaves survivors holding different messages.
            self.crashed.add(node_id)
            self.crashes.append((self.now, node_id))
            self._crashed_at[node_id] = self._counter
            self._paused.pop(node_id, None)
            self.disks.crash(node_id)
            for peer in sorted(self.nodes):
                if self._crash_rng.random() < 0.5:
                    self._severed.add((node_id, peer))
            if node_id in self._restarting or node_id in self._killed:
                # A killed process (one that will be started again is one too), not one powered
                # off: its sockets close, so its peers' links break at once (a restart could
                # otherwise come back before anyone noticed, into a view where frames to it
                # were lost). Every peer's transport sees its links close, member or not: its
                # link words are read no more.
                self._drop_beats(node_id)
                for peer in self.running:
                    if node_id in self.nodes[peer].view:
                        self.call(self.now, functools.partial(self._link_broke, peer, node_id))
            return
        if held is not None:
            held.append((kind, a, b, c))
            return
        node = self.nodes[node_id]
        if kind in (_ARRIVE, _ARRIVE_P2P):
            cut = self._cut(b, node_id)
            if cut and self._held_until:
                self._push(self._held_until, kind, node_id, b, c)
                return
            if cut or (b, node_id) in self._severed:
                return
            self._take_frame(node_id, node, b, c)
        elif kind == _FLUSH:
            self._flush_due.discard(node_id)
            if node.flush_due:  # as the runtime: heartbeats of a quiet view owe no flush
                node.flush(self.now)
        elif kind == _TICK:
            if self._tick_at.get(node_id) != b:
                return  # superseded by an earlier deadline
            del self._tick_at[node_id]
            if self._beats_in_memory:
                self._read_beats(node_id, node)
            node.tick(self.now)
        elif kind == _LEAVE:
            if not node.stopped:
                node.leave(self.now)
        elif kind == _SYNCED:
            self._synced(node_id, node)
        elif kind == _LOG_READ:
            host = self.hosts.get(node_id)
            if host is not None and not node.stopped:
                host.log_read(b, c)
        elif not node.stopped:
            node.send(b, c, self.now)
        self._drain(node_id)

    def _take_frame(self, member: NodeId, node: Node, src: NodeId, frame: bytes) -> None:
        self._trace.update(_ARRIVAL.pack(self.now, src, member, len(frame)))
        node.receive_bytes(src, frame, self.now, flush=self._flush_now(member))

    def _read_beats(self, member: NodeId, node: Node) -> None:
        """At ``member``'s tick, before the tick looks for silence, hand its core a beat for
        each inbound link word written since its last look, as the runtime's driver does over
        shared memory. A word on a link that is cut, or that a crash severed, is lost as its
        frame would be."""
        unread = self._unread_beats.pop(member, None)
        if not unread:
            return
        for src in sorted(unread):
            if (src, member) in self._severed or (self._side and self._cut(src, member)):
                continue
            epoch = unread[src]
            self._trace.update(_BEAT.pack(b"B", self.now, src, member, epoch))
            node.receive(src, Heartbeat(epoch), self.now, flush=False)
        if node.flush_due:  # as the runtime: the beats' steps run before the tick
            node.flush(self.now)

    def _drop_beats(self, src: NodeId) -> None:
        """Forget, unread, the words of the links from ``src``: those links closed (a killed
        or exiting process's sockets), and a reader no longer looks at them. A beat read after
        its writer was gone, later than any frame of it could arrive, could answer a probe
        sent after the writer died (paxos sweep seed 1224)."""
        for unread in self._unread_beats.values():
            unread.pop(src, None)

    def _flush_now(self, member: NodeId) -> bool:
        """Whether ``member`` runs the steps a frame enables as it takes the frame in. A real
        driver takes in every frame of a loop turn first and flushes once at its end: here a
        frame that finds no flush due starts such a batch half the time, its flush coming up to
        a link's latency later, and the frames arriving meanwhile join it (so the sweeps check
        that deferring is safe)."""
        if member in self._flush_due:
            return False
        if self._batch_rng.random() < 0.5:
            return True
        self._flush_due.add(member)
        delay = self._batch_rng.uniform(0.0, self.links.model.latency_s)
        self._push(self.now + delay, _FLUSH, member)
        return False

    def _restart(self, member: NodeId) -> None:
        self._restarting[member] -= 1
        if not self._restarting[member]:
            del self._restarting[member]
        if member not in self.crashed:
            return
        recovered = self.disks.recovery(member)
        if recovered is None:
            self.stats["restart_without_a_view"] += 1
            return
        logs, shards = recovered
        self._start_afresh(member)
        node = Node(
            member,
            None,
            self._layout,
            self.config,
            now=self.now,
            layout_cache=self._layouts,
            restart=logs,
            incarnation=len(self.crashes) + 1,
            floors={k: d.records[-1].timestamp for k, d in shards.items() if d.records},
        )
        if self.types is not None:
            host = self._new_host(member)
            rebuilt: dict[tuple[str, int, int], Rebuilt] = {}
            for key, data in shards.items():
                spec = host.types.get(key[0])
                if spec is None or data.snapshot is None:
                    continue
                position, state = data.snapshot
                rebuilt[key] = dataclasses.replace(
                    rebuild(
                        spec, key, member, state=state, position=position, records=data.records
                    ),
                    cut_epoch=max(data.cut, data.snapshot_view - 1),
                    doubted=data.doubt,
                )
            host.restart(rebuilt, compute_layout(self._layout, logs.installed))
            self.hosts[member] = host
        self.nodes[member] = node
        self._drain(member)
        for event in self._parked.pop(member, []):
            self._dispatch(*event)

    def _join(self, member: NodeId, contacts: tuple[NodeId, ...]) -> None:
        taking_over = member in self.nodes
        if taking_over:
            self._restarting[member] -= 1
            if not self._restarting[member]:
                del self._restarting[member]
            assert member in self.crashed or member in self.stopped, (
                f"a second process under member {member}'s id while it runs"
            )
            self._start_afresh(member)
        node = Node(
            member,
            None,
            self._layout,
            self.config,
            now=self.now,
            contacts=contacts,
            layout_cache=self._layouts,
            incarnation=self._counter,
        )
        self._add(member, node)
        if taking_over:
            for event in self._parked.pop(member, []):
                self._dispatch(*event)

    def _start_afresh(self, member: NodeId) -> None:
        """A new process takes the id of ``member``, which crashed or stopped: nothing of the
        old one's is left, and its history restarts in the first view it installs."""
        self._forget_incarnation(member)
        self._unread_beats.pop(member, None)  # a new process has new links, with no words
        self._drop_beats(member)
        self.crashed.discard(member)
        self.stopped.pop(member, None)
        self.host_failed.pop(member, None)
        self._agreeing.add(member)

    def _link_broke(self, peer: NodeId, member: NodeId) -> None:
        """``peer``'s link to crashed ``member`` broke: a driver reports that as a failure
        (a paused peer learns of it when it resumes, as a stopped process reads its socket)."""
        if peer in self.running and member in self.crashed:
            if peer in self._paused:
                broke = functools.partial(self._link_broke, peer, member)
                self._paused[peer].append((_CALL, broke, None, None))
                return
            self.nodes[peer].link_lost(member, self.now)
            self._drain(peer)

    def _link_closed(self, peer: NodeId, member: NodeId) -> None:
        """``peer``'s link to stopped ``member`` closed as it exited: reported as a failure."""
        if peer in self.running and member in self.stopped and member not in self.crashed:
            if peer in self._paused:
                closed = functools.partial(self._link_closed, peer, member)
                self._paused[peer].append((_CALL, closed, None, None))
                return
            self.nodes[peer].link_lost(member, self.now)
            self._drain(peer)

    def _sent_after_crash(self, member: NodeId) -> bool:
        """The frame being handled left its sender after ``member`` crashed."""
        return self._handling > self._crashed_at.get(member, 0)

    def _forget_incarnation(self, member: NodeId) -> None:
        """A restarted process shares nothing with the one that crashed: frames still in
        flight from or to it, its timers and its disk's sync are gone (a crash reset its
        connections; a new process starts no old timer)."""
        crashed_at = self._crashed_at.get(member, 0)
        self._flush_due.discard(member)
        kept = []
        for entry in self._heap:
            _, counter, kind, a, b, _ = entry
            arrival = kind in (_ARRIVE, _ARRIVE_P2P)
            old = (arrival and b == member) or (
                a == member
                and (
                    kind in (_TICK, _SYNCED, _FLUSH, _LOG_READ)
                    or (arrival and counter < crashed_at)
                )
            )
            if old:
                if kind not in (_ARRIVE, _TICK):
                    self._scheduled -= 1
                continue
            kept.append(entry)
        self._heap[:] = kept
        heapq.heapify(self._heap)
        self._severed = {link for link in self._severed if member not in link}
        self._tick_at.pop(member, None)

    def _sync_if(self, node_id: NodeId, start: bool) -> None:
        if start:
            self._push(self.disks.start_sync(node_id, self.now), _SYNCED, node_id)

    def _synced(self, node_id: NodeId, node: Node) -> None:
        """A sync ended: report what it made durable (the newest ``upto`` per shard and
        epoch), or stop the member if the disk failed; start the next sync if records
        wait."""
        synced = self.disks.finish_sync(node_id, self.now)
        if synced.error:
            node.fail(f"storage failed: {synced.error} syncing the log of member {node_id}")
            return
        upto: dict[tuple[int, int], int] = {}
        for request in synced.requests:
            upto[(request.subgroup, request.epoch)] = request.upto
        for (subgroup, epoch), last in upto.items():
            node.persisted(subgroup, epoch, last, self.now)
        for cut in synced.cuts:
            node.cut_logged(cut.subgroup, cut.epoch, self.now)
        for view in synced.views:
            node.view_logged(view, self.now)
        host = self.hosts.get(node_id)
        if host is not None:
            for key, position in synced.snapshots:
                host.saved(key, position)
        if self.disks.pending(node_id):
            self._push(self.disks.start_sync(node_id, self.now), _SYNCED, node_id)

    def durability_violations(self) -> list[str]:
        """The ``Paxos`` delivery rule, checked after the fact: every delivery of a message
        came after it was durable at each member of its shard, but for members the next two
        views removed (a member that failed or was suspected during a view change may not
        have logged what the ragged-edge cleanup delivered), members the delivering member
        suspected by then, and members whose disk failed.
        Views a restart founded do not
        count, and deliveries in a view a restart founded again (its logs missed the view)
        are not the group's."""
        violations: list[str] = []
        installed: dict[int, tuple[NodeId, ...]] = {}
        for node, views in self.recorder.views.items():
            for view in views:
                if (node, view) not in self._founded:
                    installed.setdefault(view.epoch, view.members)
        founded_members = {(node, view.epoch): view.members for node, view in self._founded}
        # A restart founds the view after the last one installed, or after a commit of the
        # next that nobody installed (everyone crashed in its cleanup): with the members of
        # its base, so a member it lacks was removed by that commit (twice-crashed Paxos seed
        # 29867: the commit removing member 2 was logged, the cleanup delivered without it,
        # and only the restart's view ever showed the removal).
        following_views = dict(installed)
        for _, view in self._founded:
            following_views.setdefault(view.epoch, view.members)
        for member, at, key in self._paxos_deliveries:
            epoch, subgroup, shard, _, _ = key
            again = founded_members.get((member, epoch))
            if again is not None and installed.get(epoch, again) != again:
                continue  # delivered in a view its restart founded again: not the group's
            # A member the cleanup did not wait for had failed or was suspected: the next
            # view, or the one after (a suspicion after the change was final), removes it.
            following = [following_views[e] for e in (epoch + 1, epoch + 2) if e in following_views]
            for peer in self._paxos_shards.get((epoch, subgroup, shard), ()):
                if any(peer not in members for members in following) or self.disks.failed(peer):
                    continue  # removed, or its disk failed: it holds nothing to restart from
                suspected = self._suspected_at.get((member, peer, epoch))
                if suspected is not None and suspected <= at:
                    continue  # the cleanup waits only for the survivors it still listens to
                durable = self.disks.durable_at(peer, key)
                if durable is None or durable > at:
                    violations.append(
                        f"durability: member {member} delivered {key} at {at:.6f} before member "
                        f"{peer} logged it (durable at {durable})"
                    )
        return violations

    def _cut(self, src: NodeId, dst: NodeId) -> bool:
        side = self._side
        if not side or src in self._bridges or dst in self._bridges:
            return False
        return side.get(src, -1) != side.get(dst, -1)

    def _drain(self, node_id: NodeId) -> None:
        node = self.nodes[node_id]
        host = self.hosts.get(node_id)
        while True:
            outbox = node.outbox()
            last: WireMessage | None = None
            frame = b""
            for dst, message in outbox:
                if message is not last:  # one message to many peers is encoded once
                    last, frame = message, encode(message)
                self._transmit(node_id, dst, message, frame)
            events = node.events()
            for event in events:
                self._record(node_id, event)
                if isinstance(event, PersistRequested):
                    shard_key = self._shard_names[(event.epoch, event.subgroup, event.shard)]
                    self._sync_if(node_id, self.disks.write(node_id, shard_key, event))
                elif isinstance(event, ViewLogRequested):
                    logged = self.disks.log_view(node_id, event)
                    self._sync_if(node_id, logged)
                elif isinstance(event, CutLogRequested):
                    shard_key = self._shard_names[(event.epoch, event.subgroup, event.shard)]
                    self._sync_if(node_id, self.disks.log_cut(node_id, shard_key, event))
                elif isinstance(event, ViewInstalled) and event.layout.adequate:
                    mine = {
                        (ref.type_name, ref.subgroup_index, ref.shard)
                        for ref in event.layout.shards_of(node_id)
                        if ref.layout.mode is Mode.PAXOS
                    }
                    persistent = any(r.layout.mode is Mode.PAXOS for r in event.layout.shards)
                    written = self.disks.view_installed(node_id, event.view, mine, persistent)
                    self._sync_if(node_id, written)
                if host is not None and node_id not in self.host_failed:
                    host.handle(event)
                if self.on_event is not None:
                    self.on_event(node_id, event)
            if host is None:
                break
            # The host's actions (replies, state chunks) fill the node's outbox again: go on
            # until neither has anything left.
            outputs = host.outputs() if node_id not in self.host_failed else []
            for output in outputs:
                self._act(node_id, node, host, output)
            if not (outbox or events or outputs):
                break
        deadline = node.next_deadline()
        if deadline is not None:
            deadline = max(deadline, self.now)
            scheduled = self._tick_at.get(node_id)
            if scheduled is None or deadline < scheduled:
                self._tick_at[node_id] = deadline
                self._push(deadline, _TICK, node_id, deadline)

    def _act(self, node_id: NodeId, node: Node, host: ObjectHost, output: Output) -> None:
        """Carry out or record one output of ``node_id``'s object layer."""
        if isinstance(output, SendPeer):
            if node.stopped or node_id in self.crashed:
                self.stats["p2p_after_stop"] += 1
            else:
                node.send_p2p(output.dst, output.payload, self.now)
        elif isinstance(output, RunQuery):
            self._run_query(host, output)
        elif isinstance(output, SaveState):
            if node_id not in self.crashed:
                saved = self.disks.save_state(
                    node_id, output.key, output.position, output.data, output.epoch
                )
                self._sync_if(node_id, saved)
        elif isinstance(output, SaveDoubt):
            if node_id not in self.crashed:
                self._sync_if(node_id, self.disks.save_doubt(node_id, output.key, output.doubted))
        elif isinstance(output, ReadLog):
            # Read back as the member's disk holds the log now, handed over a disk's latency
            # later: deliveries go on meanwhile, as they do beside the real read's thread.
            records = self.disks.read_log(node_id, output.key, output.after, output.limit_bytes)
            self._push(
                self.now + self.disks.model.latency, _LOG_READ, node_id, output.read_id, records
            )
        elif isinstance(output, CallDone | CallFailed):
            self.results.setdefault(node_id, {})[output.call_id] = output
            outcome = output.replies if isinstance(output, CallDone) else output.error
            self._trace.update(f"C{node_id} {output.call_id} {outcome!r}".encode())
        elif isinstance(output, QueryDone):
            self.results.setdefault(node_id, {})[output.query_id] = output
            self._trace.update(f"Q{node_id} {output.query_id} {output.result!r}".encode())
        elif isinstance(output, StateDigest):
            type_name, subgroup_index, shard = output.key
            self.recorder.record_state(
                StateRecord(
                    node_id,
                    output.member,
                    type_name,
                    subgroup_index,
                    shard,
                    output.position,
                    output.digest,
                    output.kind,
                )
            )
            self._trace.update(
                f"H{node_id} {output.kind} {output.member} {output.key} {output.position} "
                f"{output.digest}".encode()
            )
        elif isinstance(
            output, StateReceived | StateLost | StateWaiting | UserCodeFailed | HostFailed
        ):
            self.host_events.setdefault(node_id, []).append(output)
            if isinstance(output, HostFailed):
                self.host_failed.setdefault(node_id, output.reason)
        if self.on_output is not None:
            self.on_output(node_id, output)

    def _run_query(self, host: ObjectHost, run: RunQuery) -> None:
        """Run an async query method to its end, if it gets there without suspending."""
        coroutine = run.coroutine
        try:
            run.context.run(coroutine.send, None)
        except StopIteration as stop:
            host.finish_query(run.src, run.query_id, run.method, stop.value, None)
            return
        except Exception as exc:
            host.finish_query(run.src, run.query_id, run.method, None, exc)
            return
        self.stats["unsupported_async_query"] += 1
        try:
            run.context.run(coroutine.close)
        except Exception:  # a coroutine that will not close is still refused below
            self.stats["unclosed_async_query"] += 1
        error = RuntimeError(
            f"{run.method.name} suspended: the simulator runs async queries only when they "
            "complete without waiting (it has no event loop)"
        )
        host.finish_query(run.src, run.query_id, run.method, None, error)

    def _transmit(self, src: NodeId, dst: NodeId, message: WireMessage, frame: bytes) -> None:
        if self._beats_in_memory and type(message) is Heartbeat and message.periodic:
            if not (self._side and self._cut(src, dst)):  # lost like a frame, never held
                self._unread_beats.setdefault(dst, {})[src] = message.epoch
                self.stats["memory_beats"] += 1
            return
        if self._side and self._cut(src, dst):
            if not self._held_until:
                return
            # Strictly after the frames already in flight, which arrive at the heal itself.
            self.links.hold(src, dst, self._held_until + 1e-6)
        size = len(frame)
        self.messages_sent[src] += 1
        self.bytes_sent[src] += size + self.links.model.overhead_bytes
        kind = _ARRIVE_P2P if isinstance(message, P2P) else _ARRIVE
        self._push(self.links.arrival(src, dst, size, self.now), kind, dst, src, frame)

    def _record(self, node_id: NodeId, event: Event) -> None:
        if isinstance(event, ViewInstalled) and node_id in self._agreeing:
            # The first view of a restarted member: the one its restart agreement founded, or
            # the one it joined when the group went on without it. Its history restarts there.
            self._agreeing.discard(node_id)
            self.recorder.record_restart(node_id, event.view.epoch)
            if event.view == self.nodes[node_id].founded:
                self.restarts.append((self.now, node_id, event.view))
                self._founded.add((node_id, event.view))
            else:
                assert node_id in event.view.joined, (node_id, event.view)
                self.rejoins.append((self.now, node_id, event.view))
        if isinstance(event, ViewInstalled):
            self._event_epoch[node_id] = event.view.epoch
        self.recorder.record_event(node_id, event)
        if not isinstance(event, MessageSent | NullsSent):
            self.last_progress = self.now
        if isinstance(event, Delivered):
            self.deliveries += 1
            if event.mode is Mode.PAXOS:
                key = (event.epoch, event.subgroup, event.shard, event.sender, event.timestamp)
                self._paxos_deliveries.append((node_id, self.now, key))
            digest = payload_digest(event.payload)
            self._trace.update(f"D{node_id} {event.sender}:{event.index} {digest}".encode())
        elif isinstance(event, ViewInstalled):
            self._trace.update(f"V{node_id} {event.view.epoch} {event.view.members}".encode())
            if (node_id, event.view) not in self._founded:
                # A view a restart founds does not say the member lived through the last one.
                self._last_epoch[node_id] = event.view.epoch
            # The first install of an epoch is the view the group agreed on: a member whose
            # restart found an epoch again (its logs missed a view) does not redefine it.
            for ref in event.layout.shards:
                shard_key = (event.view.epoch, ref.subgroup, ref.shard)
                name = (ref.type_name, ref.subgroup_index, ref.shard)
                self._shard_names.setdefault(shard_key, name)
                if ref.layout.mode is Mode.PAXOS:
                    self._paxos_shards.setdefault(shard_key, ref.layout.members)
        elif isinstance(event, Suspected):
            epoch = self._event_epoch.get(node_id, self.nodes[node_id].view.epoch)
            self._suspected_at.setdefault((node_id, event.node, epoch), self.now)
        elif isinstance(event, Stopped):
            self._trace.update(f"S{node_id} {event.reason}".encode())
            self.stopped[node_id] = event.reason
            self._exit(node_id)

    def _exit(self, member: NodeId) -> None:
        """A stopped member's process exits: each link closes after the frames it carried, and
        its link words are read no more."""
        self._drop_beats(member)
        for peer in sorted(self.nodes):
            if peer != member and peer not in self.crashed and member in self.nodes[peer].view:
                closed_at = self.links.arrival(member, peer, 0, self.now)
                self.call(closed_at, functools.partial(self._link_closed, peer, member))

    @property
    def trace_digest(self) -> str:
        """A hash over every arrival, delivery and view so far: equal for equal runs."""
        return self._trace.hexdigest()
