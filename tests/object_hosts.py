"""Object hosts driven by hand through the object layer alone (sans-IO), for the tests of
state transfer: the test routes the members' point-to-point messages, and may hold back or
alter the ones a scenario needs lost or damaged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyderecho.core.events import Delivered, PeerMessage, ViewInstalled
from pyderecho.core.layout import Mode, ViewLayout, compute_layout, every_member, layout_of
from pyderecho.core.view import NodeId, View
from pyderecho.replicated.events import ReadLog, SaveState, SendPeer
from pyderecho.replicated.host import ObjectHost
from pyderecho.replicated.messages import CaughtUpdate
from pyderecho.replicated.recovery import updates_from
from pyderecho.sim.swarm import KV

KEY = ("KV", 0, 0)

Tamper = Callable[[NodeId, NodeId, bytes], bytes]
"""What the route hands on for a message from ``src`` to ``dst`` with this payload."""


class Members:
    """Object hosts of one ``KV`` subgroup of every member whose point-to-point messages the
    test routes; what each reported. ``host_options`` go to every :class:`ObjectHost`."""

    def __init__(self, count: int, mode: Mode, **host_options: Any) -> None:
        self.mode = mode
        self.plan = layout_of({"KV": every_member(mode)})
        self.hosts = {m: ObjectHost(m, {"KV": KV}, **host_options) for m in range(count)}
        self.outputs: dict[NodeId, list[Any]] = {m: [] for m in self.hosts}
        self.layout: ViewLayout | None = None
        self.down: set[NodeId] = set()
        self.logs: dict[NodeId, list[CaughtUpdate]] = {m: [] for m in self.hosts}
        """Each member's log of the shard, as :meth:`call` delivers: what a
        :class:`ReadLog` reads back (a test may cut its start, as compaction does)."""
        self.hold_reads = False
        """Keep the answers to reads in :attr:`reads` instead of handing them over."""
        self.reads: list[tuple[NodeId, int, list[CaughtUpdate] | None]] = []

    def install(self, view: View) -> None:
        layout = compute_layout(self.plan, view)
        for m in view.members:
            self.hosts[m].handle(ViewInstalled(view, layout, self.layout))
        self.layout = layout

    def route(self, tamper: Tamper | None = None) -> None:
        """Hand over every message until none is left (through ``tamper`` when given);
        nothing reaches or leaves a member that is down."""
        moved = True
        while moved:
            moved = False
            for src, host in self.hosts.items():
                for output in host.outputs():
                    self.outputs[src].append(output)
                    if isinstance(output, SaveState):
                        host.saved(output.key, output.position)
                        moved = True
                    if isinstance(output, ReadLog):
                        # Read as the log is now, handed over now or when the test says.
                        self.reads.append((src, output.read_id, self.read_log(src, output)))
                        if not self.hold_reads:
                            self.hand_over_reads()
                        moved = True
                    if not isinstance(output, SendPeer) or {src, output.dst} & self.down:
                        continue
                    payload = output.payload
                    if tamper is not None:
                        payload = tamper(src, output.dst, payload)
                    self.hosts[output.dst].handle(PeerMessage(src, payload))
                    moved = True

    def read_log(self, member: NodeId, read: ReadLog) -> list[CaughtUpdate] | None:
        """What the driver's read gives: the records from the one at ``read.after`` on."""
        return updates_from(self.logs[member], read.after, read.limit_bytes)

    def hand_over_reads(self) -> None:
        reads, self.reads = self.reads, []
        for member, read_id, records in reads:
            self.hosts[member].log_read(read_id, records)

    def call(
        self, caller: NodeId, epoch: int, index: int, members: tuple[NodeId, ...], key: str = "c"
    ) -> int:
        """Member ``caller`` calls ``put`` of ``key`` and ``index``; the shard delivers it at
        ``members``."""
        call_id, subgroup, payload = self.hosts[caller].prepare_call(
            "KV", 0, "put", args=(f"{key}{index}", index), kwargs={}, timestamp=0.0
        )
        for m in members:
            self.hosts[m].handle(Delivered(epoch, subgroup, 0, self.mode, caller, index, payload))
            self.logs[m].append(CaughtUpdate(epoch, index, caller, 0, payload))
        return call_id

    def reported(self, member: NodeId, kind: type) -> list[Any]:
        return [o for o in self.outputs[member] if isinstance(o, kind)]
