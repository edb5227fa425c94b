"""Object hosts driven by hand through the object layer alone (sans-IO), for the tests of
state transfer: the test routes the members' point-to-point messages, and may hold back or
alter the ones a scenario needs lost or damaged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyderecho.core.events import Delivered, PeerMessage, ViewInstalled
from pyderecho.core.layout import Mode, ViewLayout, compute_layout, every_member, layout_of
from pyderecho.core.view import NodeId, View
from pyderecho.replicated.events import SaveState, SendPeer
from pyderecho.replicated.host import ObjectHost
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
                    if not isinstance(output, SendPeer) or {src, output.dst} & self.down:
                        continue
                    payload = output.payload
                    if tamper is not None:
                        payload = tamper(src, output.dst, payload)
                    self.hosts[output.dst].handle(PeerMessage(src, payload))
                    moved = True

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
        return call_id

    def reported(self, member: NodeId, kind: type) -> list[Any]:
        return [o for o in self.outputs[member] if isinstance(o, kind)]
