"""Run a layout in the simulator under a random workload and check the history.

This is what ``pyderecho simulate`` runs: a way to size a design (how many members, shards,
which modes) before any process starts, and a regression check for the protocol itself.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from pyderecho.core.config import CoreConfig
from pyderecho.core.layout import Allocation, LayoutFunction, Mode
from pyderecho.core.view import View
from pyderecho.transport.sim import LinkModel, Simulation


@dataclass(frozen=True, slots=True)
class SimulationSpec:
    """Everything that determines one simulated run: the same spec gives the same run."""

    members: int
    layout: LayoutFunction
    seed: int = 1
    mode: Mode | None = None
    """Force every shard to this mode; ``None`` keeps the layout's own modes."""
    messages: int = 1000
    size: int = 64
    pauses: int = 0
    """Members frozen for a while at random times during the run."""
    config: CoreConfig = field(default_factory=CoreConfig)
    link: LinkModel = field(default_factory=LinkModel)


@dataclass(slots=True)
class SimulationReport:
    """The outcome of a run, as ``pyderecho simulate --json`` prints it."""

    seed: int
    members: int
    subgroups: int
    shards: int
    messages: int
    delivered: int
    violations: list[str]
    sim_time_s: float
    wall_s: float
    events: int
    wire_messages: int
    wire_bytes: int
    trace: str

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def with_mode(layout: LayoutFunction, mode: Mode) -> LayoutFunction:
    """The same layout with every shard switched to ``mode``."""

    def forced(view: View) -> Allocation:
        return {
            name: [
                [dataclasses.replace(shard, mode=mode) for shard in shards] for shards in subgroups
            ]
            for name, subgroups in layout(view).items()
        }

    return forced


def _payload(member: int, number: int, size: int) -> bytes:
    """A payload unique to (member, number), padded to ``size`` bytes."""
    tag = b"%d:%d:" % (member, number)
    return (tag * (size // len(tag) + 1))[: max(size, len(tag))]


def run_simulation(spec: SimulationSpec) -> SimulationReport:
    """Build the group, send ``spec.messages`` messages from random senders, run, check."""
    layout = spec.layout if spec.mode is None else with_mode(spec.layout, spec.mode)
    started = time.perf_counter()
    sim = Simulation(spec.members, layout, seed=spec.seed, config=spec.config, link=spec.link)
    view_layout = next(iter(sim.nodes.values())).layout
    if not view_layout.adequate:
        raise ValueError(
            f"the layout is inadequate for {spec.members} members: {view_layout.reason}"
        )
    shards = view_layout.shards
    rng = sim.rng
    for number in range(spec.messages):
        ref = shards[rng.randrange(len(shards))]
        sender = rng.choice(ref.layout.sending_members)
        sim.send(sender, ref.subgroup, _payload(sender, number, spec.size))
    members = list(sim.nodes)
    for _ in range(spec.pauses):
        sim.pause(rng.choice(members), at=rng.uniform(0, 1e-3), duration=rng.uniform(1e-4, 2e-3))
    sim.run()
    members_of = {(0, ref.subgroup, ref.shard): ref.layout.members for ref in shards}
    violations = sim.recorder.check(complete=True, members_of=members_of)
    return SimulationReport(
        seed=spec.seed,
        members=spec.members,
        subgroups=len(view_layout.subgroup_ids),
        shards=len(shards),
        messages=spec.messages,
        delivered=sim.deliveries,
        violations=[str(v) for v in violations],
        sim_time_s=sim.now,
        wall_s=round(time.perf_counter() - started, 3),
        events=sim.events_processed,
        wire_messages=sum(sim.messages_sent.values()),
        wire_bytes=sum(sim.bytes_sent.values()),
        trace=sim.trace_digest,
    )
