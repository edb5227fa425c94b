"""Run a layout in the simulator under a random workload and faults, then check the history.

This is what ``pyderecho simulate`` runs: a way to size a design (how many members, shards,
which modes) before any process starts, and the protocol's own swarm test: every fault, its
time and its target are drawn from the seed, so a failing seed replays exactly.

Besides the history checker's promises, a run checks what a user would: no message is delivered
twice at a member, every message a member that is still running sent was delivered to it (or
reported abandoned), members on the minority side of a partition install no view after it, and
once the last fault is over the group settles within a bound.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pyderecho.core.config import CoreConfig
from pyderecho.core.errors import LocalProtocolError
from pyderecho.core.events import Abandoned, Delivered, Event, Suspected, ViewInstalled
from pyderecho.core.layout import Allocation, LayoutFunction, Mode
from pyderecho.core.view import NodeId, View
from pyderecho.sim.simulation import LinkModel, Simulation


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
    crash: int = 0
    join: int = 0
    leave: int = 0
    pauses: int = 0
    """Members frozen for longer than the failure timeout at random times."""
    partition: bool = False
    """Split the group in a majority and a minority for a while, then heal."""
    config: CoreConfig = field(default_factory=CoreConfig)
    link: LinkModel = field(default_factory=LinkModel)

    @property
    def faulty(self) -> bool:
        return bool(self.crash or self.join or self.leave or self.pauses or self.partition)


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
    views_installed: int
    view_change_ms: list[float]
    stopped: dict[str, str]
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


class _Run:
    """One scenario: the workload and faults drawn from the seed, and what the run observed."""

    def __init__(self, spec: SimulationSpec) -> None:
        self.spec = spec
        layout = spec.layout if spec.mode is None else with_mode(spec.layout, spec.mode)
        self.sim = Simulation(
            spec.members, layout, seed=spec.seed, config=spec.config, link=spec.link
        )
        self.sent: dict[NodeId, set[bytes]] = {}
        self.delivered: dict[NodeId, Counter[bytes]] = {}
        self.abandoned: dict[NodeId, set[bytes]] = {}
        self.first_suspicion: float | None = None
        self.join_started: dict[NodeId, float] = {}
        self.view_changes: dict[int, float] = {}
        self.minority: set[NodeId] = set()
        self.partition_epoch: dict[NodeId, int] = {}
        self.sim.on_event = self._observe
        timeout = spec.config.heartbeat_timeout
        self.traffic_s = 6 * timeout if spec.faulty else 0.0
        self.quiet_at = 0.0
        """When the last fault is over; from then on the group must settle within a bound."""

    def _observe(self, member: NodeId, event: Event) -> None:
        if isinstance(event, Delivered):
            self.delivered.setdefault(member, Counter())[bytes(event.payload)] += 1
        elif isinstance(event, Abandoned):
            self.abandoned.setdefault(member, set()).add(event.payload)
        elif isinstance(event, Suspected):
            if self.first_suspicion is None:
                self.first_suspicion = self.sim.now
        elif isinstance(event, ViewInstalled) and event.view.epoch > 0:
            # A change starts at its first suspicion, or when its first joiner started asking.
            starts = [self.join_started[j] for j in event.view.joined if j in self.join_started]
            if self.first_suspicion is not None:
                starts.append(self.first_suspicion)
            start = min(starts, default=self.sim.now)
            self.view_changes.setdefault(event.view.epoch, (self.sim.now - start) * 1e3)
            self.first_suspicion = None

    def schedule(self) -> None:
        spec, sim, rng = self.spec, self.sim, self.sim.rng
        for number in range(spec.messages):
            sim.call(rng.uniform(0, self.traffic_s), functools.partial(self._send_one, number))
        founders = list(sim.view.members)
        rng.shuffle(founders)
        timeout = spec.config.heartbeat_timeout
        # Faults spread over most of the run, so some land in separate view changes and some
        # during a change already under way.
        window = (0.1 * self.traffic_s, 0.8 * self.traffic_s)
        victims = founders[: spec.crash + spec.leave + spec.pauses]
        for member in victims[: spec.crash]:
            sim.crash(member, at=rng.uniform(*window))
        for member in victims[spec.crash : spec.crash + spec.leave]:
            sim.leave(member, at=rng.uniform(*window))
        for member in victims[spec.crash + spec.leave :]:
            start = rng.uniform(*window)
            sim.pause(member, at=start, duration=2.5 * timeout)
            self.quiet_at = max(self.quiet_at, start + 2.5 * timeout)
        if spec.partition:
            side = rng.sample(founders, (len(founders) - 1) // 2)
            self.minority = set(side)
            start = rng.uniform(*window)
            heal = start + 3 * timeout
            majority = [m for m in founders if m not in self.minority]
            sim.partition([side, majority], at=start, heal_at=heal)
            sim.call(start, self._note_partition)
            self.quiet_at = max(self.quiet_at, heal)
        # A joiner needs a contact that is still there: pick among members no fault touches.
        steady = [m for m in founders if m not in victims and m not in self.minority]
        for number in range(spec.join):
            contacts = rng.sample(steady, min(3, len(steady)))
            at = rng.uniform(*window)
            self.join_started[spec.members + number] = at
            sim.join(spec.members + number, at=at, contacts=contacts)
        self.quiet_at = max(self.quiet_at, window[1], self.traffic_s)

    def _note_partition(self) -> None:
        for member in self.minority:
            self.partition_epoch[member] = self.sim.nodes[member].view.epoch

    def _send_one(self, number: int) -> None:
        sim, rng = self.sim, self.sim.rng
        candidates = [m for m in sim.running if sim.nodes[m].layout.adequate]
        if not candidates:
            return
        member = rng.choice(candidates)
        node = sim.nodes[member]
        subgroups = sorted(
            ref.subgroup
            for ref in node.layout.shards_of(member)
            if member in ref.layout.sending_members
        )
        if not subgroups or node.membership is None:
            return
        payload = _payload(member, number, self.spec.size)
        try:
            sim.send_now(member, rng.choice(subgroups), payload)
        except LocalProtocolError:
            return  # leaving, or the view became inadequate: the application is told so
        self.sent.setdefault(member, set()).add(payload)

    def check(self, settled: bool) -> list[str]:
        sim = self.sim
        recorder = sim.recorder
        complete = not self.spec.faulty
        members_of = recorder.members_of() if complete else None
        problems = [str(v) for v in recorder.check(complete=complete, members_of=members_of)]
        if not settled:
            problems.append(
                f"progress: the group did not settle by {sim.now:.3f} s (last fault over at "
                f"{self.quiet_at:.3f} s)"
            )
        for member, counts in sorted(self.delivered.items()):
            twice = [p for p, n in counts.items() if n > 1]
            if twice:
                problems.append(f"duplicate: member {member} delivered {len(twice)} payloads twice")
        for member in sim.running:
            if not sim.nodes[member].layout.adequate:
                continue  # its messages wait for enough members to join
            lost = self.sent.get(member, set()) - set(self.delivered.get(member, {}))
            lost -= self.abandoned.get(member, set())
            if lost and settled:
                problems.append(f"lost: {len(lost)} messages sent by {member} never delivered")
        for member in sorted(self.minority):
            later = [v.epoch for v in sim.recorder.views.get(member, [])]
            cut = self.partition_epoch.get(member)
            if cut is not None and later and max(later) > cut:
                problems.append(
                    f"partition: minority member {member} installed view {max(later)} after "
                    f"the partition began in view {cut}"
                )
        return problems


def run_simulation(spec: SimulationSpec) -> SimulationReport:
    """Build the group, run the workload and faults the seed draws, settle, check."""
    started = time.perf_counter()
    run = _Run(spec)
    sim = run.sim
    view_layout = sim.nodes[sim.view.members[0]].layout
    if not view_layout.adequate:
        raise ValueError(
            f"the layout is inadequate for {spec.members} members: {view_layout.reason}"
        )
    if 2 * (spec.crash + spec.pauses + spec.leave) >= spec.members:
        raise ValueError(
            f"{spec.crash} crashes, {spec.pauses} pauses and {spec.leave} leaves would take "
            f"half of {spec.members} members: no majority would be left to go on"
        )
    run.schedule()
    bound = 20 * spec.config.heartbeat_timeout
    settled = sim.settle(limit=run.quiet_at + bound)
    running = sim.running
    final_epochs = {sim.nodes[m].view.epoch for m in running}
    return SimulationReport(
        seed=spec.seed,
        members=spec.members,
        subgroups=len(view_layout.subgroup_ids),
        shards=len(view_layout.shards),
        messages=spec.messages,
        delivered=sim.deliveries,
        violations=run.check(settled),
        views_installed=max(final_epochs, default=0),
        view_change_ms=[round(run.view_changes[e], 3) for e in sorted(run.view_changes)],
        stopped={str(m): reason for m, reason in sorted(sim.stopped.items())},
        sim_time_s=sim.last_progress,
        wall_s=round(time.perf_counter() - started, 3),
        events=sim.events_processed,
        wire_messages=sum(sim.messages_sent.values()),
        wire_bytes=sum(sim.bytes_sent.values()),
        trace=sim.trace_digest,
    )
