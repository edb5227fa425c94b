"""Run a layout in the simulator under a random workload and faults, then check the history.

This is what ``pyderecho simulate`` runs: a way to size a design (how many members, shards,
which modes) before any process starts, and the protocol's own swarm test: every fault, its
time and its target are drawn from the seed, so a failing seed replays exactly.

Besides the history checker's promises, a run checks what a user would: no message is delivered
twice at a member, every message a member that is still running sent was delivered to it (or
reported abandoned), members on the minority side of a partition install no view after it, and
once the last fault is over the group settles within a bound.

With ``replicated=True`` every type of the layout is backed by :class:`KV`, every member runs
the object layer, and the workload is ordered ``put`` calls instead of bytes. Joins then force
state transfers, and layouts whose shards follow the view (``sharded(2, min_size=1,
max_size=3)``) move members between shards at view changes, which transfers state too. The run
also checks the state rule (replicas at the same position hold the same state, a receiver
installs what its sender sent), that every call of a running member resolves, and the reply
semantics of ordered calls: one reply per member of the shard in the view that delivered the
call, the same result from every replica that ran it, and "member removed" only for members
that are gone.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pyderecho.config import DEFAULT_CATCH_UP_BYTES
from pyderecho.core.config import CoreConfig
from pyderecho.core.errors import LocalProtocolError
from pyderecho.core.events import Abandoned, Delivered, Event, Suspected, ViewInstalled
from pyderecho.core.layout import Allocation, LayoutFunction, Mode, ViewLayout
from pyderecho.core.view import NodeId, View
from pyderecho.replicated.errors import MemberRemoved, RemoteError
from pyderecho.replicated.events import (
    CallDone,
    StateLost,
    StateReceived,
    StateWaiting,
    UserCodeFailed,
)
from pyderecho.replicated.host import Output
from pyderecho.replicated.messages import decode_call
from pyderecho.replicated.methods import ordered, query
from pyderecho.sim.simulation import DiskModel, LinkModel, Simulation


class KV:
    """The swarm's replicated type: a map whose every update also advances a counter and a
    hash chain, so that an update lost, applied twice or applied out of order changes the
    state's digest."""

    items: dict[str, int]
    applied: int
    chain: str
    history: list[str]
    """The chain after each update: a later state shows whether it grew from an earlier one."""

    def __init__(self) -> None:
        self.items = {}
        self.applied = 0
        self.chain = ""
        self.history = []

    @ordered
    def put(self, key: str, value: int) -> int:
        """Set ``key``; returns how many updates this replica has applied, the same number at
        every replica that runs this call."""
        self.items[key] = value
        self.applied += 1
        link = f"{self.chain}|{key}={value}".encode()
        self.chain = hashlib.blake2b(link, digest_size=8).hexdigest()
        self.history.append(self.chain)
        return self.applied

    @query
    def get(self, key: str) -> int | None:
        return self.items.get(key)


PARTIAL_CUTS = ("link", "halves", "leader-cut-off")
"""The kinds of :attr:`SimulationSpec.partial_cut`."""


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
    leave_at_once: bool = False
    """The leavers are told to leave within a millisecond of each other (a rolling restart's
    operator, or SIGTERM to several processes), rather than each at its own random time."""
    pauses: int = 0
    """Members frozen for longer than the failure timeout at random times."""
    stalls: int = 0
    """Members whose loop stalls again and again for just under the failure timeout, as on a
    starved CPU: others may suspect them, but they must not take their own lateness for the
    others' silence (a suspicion they raised would be adopted by everyone)."""
    pause_at_once: bool = False
    """The paused members freeze together, within a few milliseconds (a starved machine)."""
    rolling: bool = False
    """Replace every founder, one after another, as an operator's rolling restart does: a
    new process joins, then a founder leaves, one heartbeat timeout apart; the leaders leave
    in their turn like everyone else."""
    partition: bool = False
    """Split the group in a majority and a minority for a while, then heal."""
    partial_cut: str = ""
    """For a while, two groups of members cannot reach each other while the rest (and every
    joiner) reaches both: ``"link"``, one link; ``"halves"``, two halves of the group with a
    bridge member between them, the leader (lowest rank) on the larger half or the bridge;
    ``"leader-cut-off"``, the same with the leader on the smaller half (a known limit,
    docs/guarantees.md). The larger side with the bridges is a connected majority, which
    must keep a view."""
    disk_failures: int = 0
    """Members whose disk fails (the next sync of their ``Paxos`` log errs): they stop."""
    total_crash: bool = False
    """Every running member crashes at once mid-run; each restarts from its disk a moment
    later (``Paxos`` shards come back from their logs; others start over)."""
    second_total_crash: bool = False
    """With ``total_crash``: every running member crashes again up to a second after the
    first restart, often while it still compares states or transfers the chosen one, and
    restarts once more."""
    stay_down: int = 0
    """With ``total_crash``: of the members running at the (first) total crash, how many never
    come back, as machines lost with their disks. The rest restart; the group goes on if they
    are enough (a majority of the last view, a member of every ``Paxos`` shard), and no update
    any member delivered may be lost either way. A member the scenario restarts later anyway
    (``rejoin``) comes back then."""
    rejoin: int = 0
    """Of the crashed members, how many restart from their disks while the group runs on
    (before or after it removed them): each comes back as a joiner."""
    takeover: int = 0
    """Of the crashed members (after those that ``rejoin``), how many a new process replaces
    at once under the same id, with nothing of the old one's (``pyderecho node --join`` run
    again after a kill): its contact may not have removed the dead one yet. Each must end up
    a member again, in a view that admitted it."""
    replicated: bool = False
    """Back every type of the layout with :class:`KV` and send ordered ``put`` calls."""
    own_replies: bool = False
    """Replicated: every other call (the odd-numbered) waits for the caller's own replica
    alone (``replies="own"``), so the other replicas send it no reply."""
    config: CoreConfig = field(default_factory=CoreConfig)
    link: LinkModel = field(default_factory=LinkModel)
    disk: DiskModel = field(default_factory=DiskModel)
    catch_up_bytes: int = DEFAULT_CATCH_UP_BYTES
    """Each member's budget of a Paxos shard's latest updates kept in memory: a member back
    with an older state catches up from those, or from the log read back where they do
    not reach."""

    @property
    def faulty(self) -> bool:
        return bool(
            self.crash
            or self.join
            or self.leave
            or self.pauses
            or self.stalls
            or self.partition
            or self.partial_cut
            or self.disk_failures
            or self.total_crash
            or self.rolling
        )


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
    calls: int = 0
    """Ordered calls made (replicated runs)."""
    state_transfers: int = 0
    """States installed from another member (replicated runs)."""
    caught_up: int = 0
    """Of those, the ones a member back with a state of its own caught up with only the
    updates after it (``StateReceived.caught_up``)."""
    shard_moves: int = 0
    """Times a member went from one shard of a subgroup to another at a view change."""
    restart_conflicts: int = 0
    """Members whose restart from logs founded a view other than the group's (older than
    another restart's, or an epoch the group installed with other members): a violation of
    the restart agreement (docs/persistence.md)."""

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
        types = None
        if spec.replicated:
            founders = View(0, tuple(range(spec.members)))
            types = {name: KV for name in sorted(layout(founders))}
        self.sim = Simulation(
            spec.members,
            layout,
            seed=spec.seed,
            config=spec.config,
            link=spec.link,
            types=types,
            disk=spec.disk,
            catch_up_bytes=spec.catch_up_bytes,
        )
        self.sent: dict[NodeId, set[bytes]] = {}
        self.delivered: dict[NodeId, Counter[bytes]] = {}
        self.abandoned: dict[NodeId, set[bytes]] = {}
        self.first_suspicion: float | None = None
        self.join_started: dict[NodeId, float] = {}
        self.total_crashes: list[float] = []
        """When the whole group crashed: the restarts after each are compared apart."""
        self.view_changes: dict[int, float] = {}
        self.minority: set[NodeId] = set()
        self.victims: set[NodeId] = set()
        """Members a fault was aimed at (crashed, paused, left, lost their disk): they may
        stop; every other member of a group that keeps a majority must keep running."""
        self.crashed_at: list[tuple[NodeId, float]] = []
        """Each crashed member with the time of its crash, in the order they were drawn."""
        self.paused_until: list[tuple[NodeId, float]] = []
        """Each pause past the failure timeout, as (member, when it ends)."""
        self.stopped_before_crash: set[NodeId] = set()
        """Members a fault was aimed at that the protocol had stopped (removed them) when
        the whole group first crashed: no restart brings them back."""
        self.taken_over: set[NodeId] = set()
        """Crashed members a new process replaced under the same id (``takeover``)."""
        self.partition_epoch: dict[NodeId, int] = {}
        """Minority members: the last view decided when the partition began, which they may
        still install; a later one would be progress without a majority."""
        self.calls: dict[NodeId, list[int]] = {}
        """Replicated runs: each member's ordered calls, by call id."""
        self.delivered_in: dict[tuple[NodeId, int], tuple[int, tuple[NodeId, ...]]] = {}
        """(caller, call id) -> the epoch and shard members where the caller delivered it."""
        self.observed_problems: list[str] = []
        self.seen_states: dict[tuple[str, int, int], set[tuple[int, str]]] = {}
        """Per Paxos shard, the (updates applied, chain) of replicas seen when members
        crashed: delivered, hence durable, so every later replica must have grown from them."""
        self.waiting: set[NodeId] = set()
        """Members with a Paxos shard waiting for a holder to come back."""
        self.waited: set[tuple[NodeId, tuple[str, int, int]]] = set()
        """(member, shard) pairs that ever waited so: such a member never held the state."""
        self.call_shards: dict[tuple[NodeId, int], tuple[str, int, int]] = {}
        """The shard each ordered call went to, by (caller, call id)."""
        self.cut_waits: dict[tuple[NodeId, tuple[str, int, int]], tuple[NodeId, ...]] = {}
        """Restart comparisons told to wait for members that may hold the last cut."""
        self.dropped: set[tuple[NodeId, tuple[str, int, int]]] = set()
        """Of those, members moved out of the shard that kept their states from its
        newcomers rather than hand on one that may lack the last cut."""
        self.restarted: set[tuple[NodeId, tuple[str, int, int], int]] = set()
        """(member, shard, epoch) of each start from the constructor (``StateLost``)."""
        self.shards_of: dict[NodeId, dict[tuple[str, int], int]] = {}
        self.shard_moves = 0
        founding = self.sim.nodes[self.sim.view.members[0]].layout
        self.layouts: dict[int, ViewLayout] = {0: founding}
        """Each epoch's layout (the founding view's installed before observing began)."""
        for member in self.sim.view.members:
            self.shards_of[member] = {
                (ref.type_name, ref.subgroup_index): ref.shard for ref in founding.shards_of(member)
            }
        self.sim.on_event = self._observe
        self.sim.on_output = self._observe_output
        timeout = spec.config.heartbeat_timeout
        self.traffic_s = 6 * timeout if spec.faulty else 0.0
        if spec.rolling:
            self.traffic_s = (spec.members + 3) * timeout
        self.quiet_at = 0.0
        """When the last fault is over; from then on the group must settle within a bound."""

    def _observe(self, member: NodeId, event: Event) -> None:
        if isinstance(event, Delivered):
            self.delivered.setdefault(member, Counter())[bytes(event.payload)] += 1
            if self.spec.replicated and event.sender == member and event.mode is not Mode.RAW:
                self._note_own_delivery(member, event)
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
        if isinstance(event, ViewInstalled) and event.layout.adequate:
            self.layouts.setdefault(event.view.epoch, event.layout)
            now = {
                (ref.type_name, ref.subgroup_index): ref.shard
                for ref in event.layout.shards_of(member)
            }
            before = self.shards_of.get(member, {})
            self.shard_moves += sum(1 for k, s in now.items() if before.get(k, s) != s)
            self.shards_of[member] = now

    def _note_own_delivery(self, member: NodeId, event: Delivered) -> None:
        """The caller delivered its own call: the view and shard whose members must reply
        (the caller alone, for an own-reply call)."""
        layout = self.layouts[event.epoch]
        members = next(
            r.layout.members
            for r in layout.shards
            if (r.subgroup, r.shard) == (event.subgroup, event.shard)
        )
        call = decode_call(event.payload)
        if not call.replies:
            members = (member,)
        self.delivered_in[(member, call.call_id)] = (event.epoch, members)

    def _observe_output(self, member: NodeId, output: Output) -> None:
        if isinstance(output, CallDone):
            self._check_replies(member, output)
        elif isinstance(output, StateLost):
            self._check_loss(member, output)
            key = (output.type_name, output.subgroup_index, output.shard)
            self.restarted.add((member, key, output.epoch))
        elif isinstance(output, StateWaiting):
            key = (output.type_name, output.subgroup_index, output.shard)
            if output.waiting_for:
                # A restart's comparison waits for members that may hold the last cut:
                # checked once the run settles (_check_cut_wait).
                self.cut_waits[(member, key)] = output.waiting_for
                if key not in self.sim.hosts[member].replicas():
                    self.dropped.add((member, key))  # moved out, its state kept from newcomers
            else:
                # A Paxos shard with no holder left waits instead of starting over: only when
                # no holder is left, which is what a loss needs too.
                lost = StateLost(*key, output.epoch)
                self._check_loss(member, lost)
            self.waiting.add(member)
            self.waited.add((member, key))

    def _cut_wait_lasts(self, member: NodeId, key: tuple[str, int, int]) -> bool:
        """Whether ``member``'s wait for ``key``'s last cut still holds the shard once the run
        settled: it runs and still waits, or it was moved out of the shard with a state it
        would not hand on, and a member of the shard still waits for its state."""
        sim = self.sim
        if member not in sim.running:
            return False
        if key in sim.hosts[member].replicas():
            return self._waits(member, key)
        return (member, key) in self.dropped and any(self._waits(m, key) for m in sim.running)

    def _check_cut_wait(
        self, member: NodeId, key: tuple[str, int, int], waiting_for: tuple[NodeId, ...]
    ) -> list[str]:
        """A restart's comparison that still waits, once the run settled, for members that
        may hold the last cleanup's cut (``StateWaiting.waiting_for``) waits rightly only if
        one of them is not back, and no member that compared with it holds the cut on its
        disk: checked from the disks, not from the comparison's own word."""
        sim = self.sim
        view = sim.nodes[member].view
        if all(m in sim.running and m in view for m in waiting_for):
            return [
                f"state: member {member} waits for {key}'s last cut from members "
                f"{list(waiting_for)}, which are all back and in view {view.epoch}"
            ]
        founded = [v for _, m, v in sim.restarts if m == member]
        if not founded:
            return []
        last_cut = founded[-1].epoch - 2
        founders = {m for _, m, v in sim.restarts if v == founded[-1]}
        holding = [
            m
            for m in sorted(founders)
            if m in sim.running
            and m in view
            and sim.disks.holds_snapshot(m, key)
            and sim.disks.cut_of(m, key) >= last_cut
        ]
        if holding:
            return [
                f"state: member {member} waits for {key}'s cut of view {last_cut}, which the "
                f"logs of members {holding} hold"
            ]
        return []

    def _check_loss(self, member: NodeId, lost: StateLost) -> None:
        """A shard restarts from its constructor only when nobody that held it is left: the
        members of its last adequate layout (in it or moved out) are all gone from the view,
        but for those that were themselves still waiting for the state (a joiner whose
        senders all failed before the transfer), the member itself among them, those that
        started from the constructor in the same view (all of them hold what this one does),
        and those that hold no state of it, in memory or on disk (:meth:`_holds`)."""
        node = self.sim.nodes[member]
        key = (lost.type_name, lost.subgroup_index, lost.shard)
        previous = node.previous_layout
        held = next(
            (
                r.layout.members
                for r in (previous.shards if previous is not None else ())
                if (r.type_name, r.subgroup_index, r.shard) == key
            ),
            (),
        )
        alive = [
            m
            for m in held
            if m in node.view
            and m != member
            and not self._waits(m, key)
            and (m, key) not in self.waited
            and (m, key, lost.epoch) not in self.restarted
            and self._holds(m, key)
        ]
        if lost.epoch != node.view.epoch or alive:
            self.observed_problems.append(
                f"state-lost: member {member} restarted {key} in view {lost.epoch} though "
                f"{alive} held it and are in view {node.view.epoch}"
            )

    def restart_conflicts(self) -> int:
        """Restarts whose founded view is not the group's: older than another restart's
        after the same total crash, unless a restart founded the next view on it, or an epoch
        the group had installed with other members (the newer view file was not durable
        anywhere when everyone crashed).

        A founded view keeps its base's members at the next epoch, so a view of the next
        epoch with the same members was founded on it: a member that founded a view and
        crashed at once, its restart logged, is followed by the others founding the view after
        it from its log (Paxos seeds 2514, 10056 and 19256 with members lost at the total
        crash, beyond the fault budget). Not where the group had installed that epoch before
        the crash: a restart's view of the same members there would be a second history."""
        restarts = self.sim.restarts
        if not restarts:
            return 0
        installed: dict[int, set[tuple[NodeId, ...]]] = {}
        for member, views in self.sim.recorder.views.items():
            for view in views:
                if not any(m == member and v == view for _, m, v in restarts):
                    installed.setdefault(view.epoch, set()).add(view.members)
        rounds: dict[int, list[View]] = {}
        for at, _, view in restarts:
            rounds.setdefault(bisect.bisect_right(self.total_crashes, at), []).append(view)
        conflicts = 0
        for views in rounds.values():
            latest = max(view.epoch for view in views)
            bases = {(view.epoch - 1, view.members) for view in views}
            conflicts += sum(
                1
                for view in views
                if (
                    view.epoch < latest
                    and ((view.epoch, view.members) not in bases or view.epoch in installed)
                )
                or installed.get(view.epoch, {view.members}) != {view.members}
            )
        return conflicts

    def _restart_lacks_a_majority(self) -> bool:
        restarts = self.sim.restarts
        if not restarts:
            return False
        latest = max(view.epoch for _, _, view in restarts)
        view = next(v for _, _, v in restarts if v.epoch == latest)
        back = {member for _, member, v in restarts if v == view}
        # Members of that view the faults took after all: never back (a joiner of the view a
        # restart founded on has no logs to come back from; one that came back after the
        # others founded it without waiting for it may not take part in it, and waits to be
        # removed), crashed since, their disk failed, or paused past the failure timeout
        # since (Paxos seed 33248: a joiner never back, two crashes and a pause, four of
        # eight). With half of them gone, the founded view cannot go on.
        founded_at = min(t for t, _, v in restarts if v == view)
        # So is one back more than a failure timeout after the founding: a view change
        # begun meanwhile (a member crashed again) blames the members that do not echo it at
        # its stall timeout, and a suspicion stands for the view (seed 22800 with a member
        # lost at the total crash, beyond the budget: 3 crashed again 0.26 s after the
        # founding, 2 and the lost 5 were blamed 0.75 s later, and 0, 1 and 4 held three of
        # six; 2 came back 0.7 s after that).
        late = founded_at + self.spec.config.heartbeat_timeout
        gone = {
            m
            for m in view.members
            if m not in back
            or min(t for t, r, v in restarts if r == m and v == view) > late
            or m in self.sim.crashed
            or self.sim.disks.failed(m)
            or any(t > founded_at and c == m for t, c in self.sim.crashes)
            or any(end > founded_at and p == m for p, end in self.paused_until)
        }
        return 2 * len(back) <= len(view.members) or 2 * len(gone) >= len(view.members)

    def _restart_waits_on_the_lost(self) -> bool:
        """Every running member still restarts from its logs, and by the restart rules it
        must wait for members down for good (docs/guarantees.md, "Known gaps after a total
        restart"): the members of the newest view installed that are not running crashed
        for good or lost their disks, and fewer than a majority of that view came back, or a
        commit of the next view that too few of them logged for it to be chosen might have
        been chosen with the word of those that did not come back. Paxos seeds 14213 and
        27143 end so. Derived here again from the disks, not from the agreements, so that a
        restart that waits when it could decide is still caught."""
        sim = self.sim
        running = sim.running
        if not running or any(not sim.nodes[member].restart_waits_for for member in running):
            return False
        logs = {member: sim.disks.logs(member) for member in running}
        heard = {member: log for member, log in logs.items() if log is not None}
        if not heard:
            return False
        installed = max((log.installed for log in heard.values()), key=lambda view: view.epoch)
        members = installed.members
        gone = [member for member in members if member not in running]
        if any(
            m not in sim.crashed and not sim.disks.failed(m) and m not in self.stopped_before_crash
            for m in gone
        ):
            # Stopped by the protocol, not taken by a fault (seed 1224, planted). A member a
            # fault was aimed at that the group removed before the total crash is gone as a
            # crashed one is (seed 26150 beyond the budget: member 6, paused, was removed
            # 20 ms before the crash; three of view 0's seven came back).
            return False
        majority = len(members) // 2 + 1
        if sum(1 for member in members if member in heard) < majority:
            return True
        logged = Counter(
            log.commit
            for member, log in heard.items()
            if member in members
            and log.installed.epoch == installed.epoch
            and log.commit is not None
        )
        if any(count >= majority for count in logged.values()):
            return False
        return any(
            count + sum(1 for member in gone if member not in commit.departed) >= majority
            for commit, count in logged.items()
        )

    def _check_grown(self, settled: bool) -> list[str]:
        """No update a member delivered in a Paxos shard is lost, across crashes and restarts:
        every replica now running grew from every state seen when members crashed."""
        problems: list[str] = []
        if not settled:
            return problems
        for member in self.sim.running:
            host = self.sim.hosts.get(member)
            if host is None:
                continue
            for key, obj in host.replicas().items():
                if not isinstance(obj, KV):
                    continue
                for applied, chain in sorted(self.seen_states.get(key, ())):
                    if len(obj.history) < applied or obj.history[applied - 1] != chain:
                        problems.append(
                            f"durable: member {member}'s {key} did not grow from the state "
                            f"seen after {applied} updates before a crash"
                        )
                        break
        return problems

    def _holds(self, member: NodeId, key: tuple[str, int, int]) -> bool:
        """``member`` holds a state of ``key``, in memory or on its disk. Not one whose state
        came by a transfer that its crash caught before the snapshot was durable, and that
        holds none since (stay-down seed 22410 beyond the fault budget: the shard's one
        durable holder was lost for good, and the other member of the shard, its state
        gone with its crash, was counted as a holder the waiting members ignored)."""
        host = self.sim.hosts.get(member)
        return (host is not None and host.holds(key)) or self.sim.disks.holds_snapshot(member, key)

    def _waits(self, member: NodeId, key: tuple[str, int, int]) -> bool:
        host = self.sim.hosts.get(member)
        return host is not None and key in host.replicas() and host.state_digest(key) is None

    def _check_replies(self, member: NodeId, done: CallDone) -> None:
        """One reply per member of the shard in the delivering view; the same result from
        every replica that ran the call; "member removed" only for members that are gone."""
        where = self.delivered_in.get((member, done.call_id))
        problems = self.observed_problems
        name = f"call {done.call_id} of member {member}"
        if where is None:
            problems.append(f"replies: {name} completed before its caller delivered it")
            return
        epoch, members = where
        if tuple(done.replies) != members:
            problems.append(
                f"replies: {name} delivered in view {epoch} got replies from "
                f"{list(done.replies)}, the shard was {list(members)}"
            )
        # Removed: left out of a view the caller installed since the delivering one. It may be
        # in the caller's view again by now, as a new process that took its id over and
        # joined (Paxos seed 20658).
        since = [v for v in self.sim.recorder.views.get(member, []) if v.epoch > epoch]
        results = set()
        for replica, reply in done.replies.items():
            if isinstance(reply, MemberRemoved):
                if all(replica in v for v in since):
                    problems.append(
                        f"replies: {name}: member {replica} reported removed but is in every "
                        f"view since {epoch}"
                    )
            elif isinstance(reply, RemoteError):
                if reply.error_type == "StateLost":
                    # Only from a member that started the shard over in a later view.
                    key = self.call_shards.get((member, done.call_id))
                    if not any(
                        (m, k) == (replica, key) and later > epoch for m, k, later in self.restarted
                    ):
                        problems.append(
                            f"replies: {name}: member {replica} said the state was lost "
                            f"though it started {key} over in no view after {epoch}"
                        )
                elif reply.error_type not in ("StateTransferred", "LeftShard"):
                    problems.append(f"replies: {name}: member {replica} failed: {reply}")
            else:
                results.add(reply)
        if len(results) > 1:
            problems.append(f"replies: {name}: replicas returned different results {results}")

    def play(self) -> bool:
        """Run the schedule, then until the group is at rest (or the bound passes); the
        states are recorded for the checks. True if it came to rest."""
        sim = self.sim
        self.schedule()
        bound = 20 * self.spec.config.heartbeat_timeout
        if self.spec.total_crash:
            # Restarted founders wait startup_timeout for the members that do not come back:
            # the group may look at rest before that, with a restart still short of a member.
            sim.run(until=self.quiet_at)
            # That wait runs from the founded view's install, which can come later than the
            # schedule allowed for: a restart short of a majority founds only once a crashed
            # member comes back (seed 2580 crashed twice: 1.2 s after the others), and its
            # agreement asks again a while after that (seed 5992 with two members lost for good
            # founded 1.1 s after the last restart).
            founded = [at for at, _, _ in sim.restarts]
            config = self.spec.config
            waited = max(founded, default=0.0) + config.startup_timeout + config.heartbeat_timeout
            if founded and waited > sim.now:
                sim.run(until=waited)
        limit = max(self.quiet_at, sim.now) + bound
        settled = sim.settle(limit=limit)
        while settled and sim.now < limit and self._crash_still_due():
            # At rest, but with a crashed member still in the view of running members that
            # can remove it: one that crashed while a view change was final is suspected in
            # the next view only after twice the timeout there (a member not heard from yet
            # in a view gets that long), and the group is idle meanwhile. Checked then, a
            # waiting newcomer looked stuck (slow-link seed 9274 settled 50 ms early).
            sim.run(until=min(limit, sim.now + self.spec.config.heartbeat_timeout))
            settled = sim.settle(limit=limit)
        sim.record_states()
        return settled

    def _crash_still_due(self) -> bool:
        """Whether a crashed member is in the view of running members that hold a majority
        of it, and so will remove it."""
        sim = self.sim
        for member in sim.running:
            view = sim.nodes[member].view
            if any(m in sim.crashed for m in view.members):
                alive = [m for m in view.members if m in sim.running]
                if 2 * len(alive) > len(view.members):
                    return True
        return False

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
        victims = founders[: spec.crash + spec.leave + spec.pauses + spec.disk_failures]
        self.victims = set(victims)
        for number, member in enumerate(victims[: spec.crash]):
            at = rng.uniform(*window)
            sim.call(at, functools.partial(self._see_states, [member]))
            sim.crash(member, at=at)
            self.crashed_at.append((member, at))
            if number < spec.rejoin:
                sim.call(at, functools.partial(self._forget, member))
                back = at + rng.uniform(0.2, 4.0) * timeout
                sim.restart(member, at=back)
                self.quiet_at = max(self.quiet_at, back + 4 * timeout)
        for member in victims[len(victims) - spec.disk_failures :]:
            sim.fail_disk(member, at=rng.uniform(*window), reason="EIO")
        leave_at = rng.uniform(*window) if spec.leave_at_once else 0.0
        for member in victims[spec.crash : spec.crash + spec.leave]:
            at = leave_at + rng.uniform(0, 0.001) if spec.leave_at_once else rng.uniform(*window)
            sim.leave(member, at=at)
        pause_at = rng.uniform(*window) if spec.pause_at_once else 0.0
        for member in victims[spec.crash + spec.leave : len(victims) - spec.disk_failures]:
            start = pause_at + rng.uniform(0, 0.005) if spec.pause_at_once else rng.uniform(*window)
            sim.pause(member, at=start, duration=2.5 * timeout)
            end = start + 2.5 * timeout
            self.paused_until.append((member, end))
            self.quiet_at = max(self.quiet_at, end)
        if spec.total_crash:
            at = rng.uniform(0.3 * self.traffic_s, 0.7 * self.traffic_s)
            sim.call(at, self._crash_everyone)
            # Restarted founders wait up to startup_timeout for the members that do not
            # come back before the view moves on without them. That wait runs from each
            # member's install of the founded view, which follows its restart by the
            # restart's exchange of logs: a heartbeat timeout more covers it (seed 7336 of
            # the Paxos sweep founded 50 ms after the last restart, and was looked at while
            # two members that never came back still had 50 ms of grace).
            restarted_by = at + 0.5
            if spec.second_total_crash:
                again = restarted_by + rng.uniform(0.0, 1.0)
                sim.call(again, self._crash_everyone)
                restarted_by = again + 0.5
            self.quiet_at = max(
                self.quiet_at,
                restarted_by + spec.config.startup_timeout + spec.config.heartbeat_timeout,
            )
        if spec.partition:
            side = rng.sample(founders, (len(founders) - 1) // 2)
            self.minority = set(side)
            start = rng.uniform(*window)
            heal = start + 3 * timeout
            # Joiners contact members outside the minority, and sit on the majority's side: a
            # process linked to both sides is a partial cut, a harder fault (docs/guarantees.md).
            joiners = range(spec.members, spec.members + spec.join)
            majority = [m for m in founders if m not in self.minority] + list(joiners)
            sim.partition([side, majority], at=start, heal_at=heal)
            sim.call(start, self._note_partition)
            self.quiet_at = max(self.quiet_at, heal)
        if spec.partial_cut:
            self._schedule_partial_cut(founders, window)
        # A joiner needs a contact that is still there: pick among members no fault touches.
        steady = [m for m in founders if m not in self.victims and m not in self.minority]
        for number in range(spec.join):
            contacts = rng.sample(steady, min(3, len(steady)))
            at = rng.uniform(*window)
            self.join_started[spec.members + number] = at
            sim.join(spec.members + number, at=at, contacts=contacts)
        for member, at in self.crashed_at[spec.rejoin : spec.rejoin + spec.takeover]:
            sim.call(at, functools.partial(self._forget, member))
            # Within a link's latency (before anyone removed the dead process) or later.
            back = at + rng.choice([rng.uniform(0, 0.002), rng.uniform(0, 2.0) * timeout])
            sim.join(member, at=back, contacts=rng.sample(steady, min(3, len(steady))))
            self.taken_over.add(member)
            self.quiet_at = max(self.quiet_at, back + 4 * timeout)
        for member in [m for m in founders if m not in victims][: spec.stalls]:
            self.victims.add(member)
            for _ in range(4):
                stall = rng.uniform(0.5, 0.95) * timeout
                sim.pause(member, at=rng.uniform(*window), duration=stall)
        if spec.rolling:
            self._schedule_rolling(founders, first=spec.members + spec.join)
        self.quiet_at = max(self.quiet_at, window[1], self.traffic_s)

    def _schedule_partial_cut(self, founders: list[NodeId], window: tuple[float, float]) -> None:
        """Two halves of the members that do not fail, with one bridge between them, or two
        of them, cut from each other; the rest (joiners included) reach both sides. Either
        side may lose its members (they suspect each other, and a member suspected by a
        majority's view is removed), but whoever reaches everyone must not stop."""
        sim, rng = self.sim, self.sim.rng
        spared = [m for m in founders if m not in self.victims]
        if len(spared) < 3:
            return
        kind = self.spec.partial_cut
        if kind == "link":
            sides = [[member] for member in rng.sample(spared, 2)]
        else:
            leader = min(spared)
            others = rng.sample([m for m in spared if m != leader], len(spared) - 1)
            bridge = others.pop() if kind == "leader-cut-off" else rng.choice(spared)
            cut = [m for m in [leader, *others] if m != bridge]
            small = len(cut) // 2
            if kind == "leader-cut-off":
                sides = [cut[:small], cut[small:]]  # the leader first, in the smaller half
            else:
                sides = [cut[len(cut) - small :], cut[: len(cut) - small]]
        ends = {member for side in sides for member in side}
        self.victims.update(ends)
        joiners = range(self.spec.members, self.spec.members + self.spec.join)
        bridges = [m for m in founders if m not in ends] + list(joiners)
        start = rng.uniform(*window)
        heal = start + 3 * self.spec.config.heartbeat_timeout
        sim.partition(sides, at=start, heal_at=heal, bridges=bridges)
        self.quiet_at = max(self.quiet_at, heal)

    def _schedule_rolling(self, founders: list[NodeId], first: NodeId) -> None:
        """Each founder in turn makes way for a new process (ids from ``first``): the new one
        joins through members that are still there, and half a timeout later the founder
        leaves."""
        sim, rng = self.sim, self.sim.rng
        timeout = self.spec.config.heartbeat_timeout
        self.victims.update(founders)
        for turn, founder in enumerate(founders):
            newcomer = first + turn
            at = (turn + 1) * timeout
            present = founders[turn + 1 :] + [first + earlier for earlier in range(turn)]
            contacts = rng.sample(present, min(3, len(present))) if present else [founder]
            self.join_started[newcomer] = at
            sim.join(newcomer, at=at, contacts=contacts)
            sim.leave(founder, at=at + 0.5 * timeout)

    def _note_partition(self) -> None:
        """A view whose change was final somewhere when the partition began was decided by a
        majority before it: a minority member still finishing the old view's cleanup may
        install it (the change's leader waits for every survivor's cleanup before it moves
        on, so one that began the partition beside it still may)."""
        sim = self.sim
        running = [sim.nodes[n] for n in sim.running]
        decided = max(
            node.view.epoch + bool(node.membership is not None and node.membership.final)
            for node in running
        )
        for member in self.minority:
            self.partition_epoch[member] = max(sim.nodes[member].view.epoch, decided)

    def _see_states(self, members: list[NodeId]) -> None:
        """Note the Paxos replicas of ``members`` as they are now (they are about to crash)."""
        sim = self.sim
        for member in members:
            host = sim.hosts.get(member)
            if host is None or member in sim.crashed or member in sim.host_failed:
                continue
            layout = sim.nodes[member].layout
            for key, obj in host.replicas().items():
                paxos = any(
                    (r.type_name, r.subgroup_index, r.shard) == key and r.layout.mode is Mode.PAXOS
                    for r in layout.shards
                )
                if paxos and isinstance(obj, KV) and obj.applied:
                    self.seen_states.setdefault(key, set()).add((obj.applied, obj.chain))

    def _crash_everyone(self) -> None:
        """Every running member crashes now and restarts from its disk a moment later; what a
        crashed process had sent or called dies with it."""
        sim, rng = self.sim, self.sim.rng
        self.total_crashes.append(sim.now)
        victims = list(sim.running)
        self._see_states(victims)
        first = len(self.total_crashes) == 1
        if first:
            self.stopped_before_crash = {m for m in sim.stopped if m in self.victims}
        lost: set[NodeId] = set()
        if self.spec.stay_down and first:
            lost = set(rng.sample(victims, min(self.spec.stay_down, len(victims) - 1)))
        for member in victims:
            sim.crash(member, at=sim.now)
            if member not in lost:
                sim.restart(member, at=sim.now + rng.uniform(0.05, 0.5))
            self._forget(member)

    def _forget(self, member: NodeId) -> None:
        """``member`` crashed and will restart: what the crashed process sent, called or
        delivered is no part of what the new one must account for."""
        for tracked in (self.sent, self.abandoned):
            tracked.pop(member, None)
        self.delivered.pop(member, None)
        self.calls.pop(member, None)
        self.sim.results.pop(member, None)

    def _send_one(self, number: int) -> None:
        sim, rng = self.sim, self.sim.rng
        paused = sim.paused
        candidates = [m for m in sim.running if sim.nodes[m].layout.adequate and m not in paused]
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
        subgroup = rng.choice(subgroups)
        if self.spec.replicated:
            ref = next(r for r in node.layout.shards_of(member) if r.subgroup == subgroup)
            key, value = f"k{number % 17}", member * 1_000_000 + number
            try:
                call_id = sim.call_ordered_now(
                    member,
                    ref.type_name,
                    ref.subgroup_index,
                    "put",
                    key,
                    value,
                    own_reply=self.spec.own_replies and number % 2 == 1,
                )
            except LocalProtocolError:
                return
            self.calls.setdefault(member, []).append(call_id)
            self.call_shards[(member, call_id)] = (ref.type_name, ref.subgroup_index, ref.shard)
            return
        payload = _payload(member, number, self.spec.size)
        try:
            sim.send_now(member, subgroup, payload)
        except LocalProtocolError:
            return  # leaving, or the view became inadequate: the application is told so
        self.sent.setdefault(member, set()).add(payload)

    def check(self, settled: bool) -> list[str]:
        sim = self.sim
        recorder = sim.recorder
        complete = not self.spec.faulty
        members_of = recorder.members_of() if complete else None
        conflicts = self.restart_conflicts()
        if conflicts:
            # The restart agreement failed: members founded different views. Nothing else
            # about the run can be judged against one history, but durability still must hold.
            founded = sorted({(v.epoch, v.members) for _, _, v in sim.restarts})
            return [
                f"restart-conflict: {conflicts} restarted members founded views other than "
                f"the group's: {founded}",
                *sim.durability_violations(),
                *self._check_grown(settled=True),
            ]
        problems = [str(v) for v in recorder.check(complete=complete, members_of=members_of)]
        if not settled and (self._restart_lacks_a_majority() or self._restart_waits_on_the_lost()):
            # Fewer than half of the view the restart founded came back from logs that reach
            # it (the others' logs missed that view, their disks failed, or they had no view
            # yet), or the restart still waits, as its rules say, for members down for good:
            # it cannot go on, and its members stop or wait rather than guess. Only the
            # safety checks apply.
            return problems + self._check_grown(settled=True)
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
        if self.spec.replicated:
            problems += self._check_objects(settled)
        problems += sim.durability_violations()
        problems += self._check_grown(settled)
        problems += self._check_available(settled)
        problems += self._check_taken_over(settled)
        for member in sorted(self.minority):
            later = [v.epoch for v in sim.recorder.views.get(member, [])]
            cut = self.partition_epoch.get(member)
            if cut is not None and later and max(later) > cut:
                problems.append(
                    f"partition: minority member {member} installed view {max(later)}, past "
                    f"view {cut}, the last decided when the partition began"
                )
        return problems

    def _check_available(self, settled: bool) -> list[str]:
        """The availability rule (docs/guarantees.md): a group that keeps a majority of live,
        connected members keeps a view and keeps delivering. Only the members a fault took
        (or a partition's minority, or a whole-group crash) may have stopped."""
        if self.spec.total_crash or self.spec.rejoin:
            return []  # restarts have their own rules (docs/persistence.md)
        problems = [
            f"availability: member {member}, which no fault touched, stopped: {reason}"
            for member, reason in sorted(self.sim.stopped.items())
            if member not in self.victims and member not in self.minority
        ]
        if settled and not self.sim.running:
            problems.append("availability: no member is left running")
        return problems

    def _check_taken_over(self, settled: bool) -> list[str]:
        """A process that took over a crashed member's id gets in once the group settles, in
        a view that admitted it (the simulator asserts that much as it joins). Once in, it
        may be removed like any member (a joiner whose welcome a crashed leader never sent
        is suspected by those who waited for it), but it must not give up joining."""
        if not settled:
            return []
        sim = self.sim
        joined = {member for _, member, _ in sim.rejoins}
        return [
            f"takeover: the new process under member {member}'s id is not a member: "
            f"{sim.stopped.get(member) or f'view {sim.nodes[member].view.epoch}'}"
            for member in sorted(self.taken_over)
            if not (
                member in sim.running
                and any(member in sim.nodes[m].view for m in sim.running if m != member)
            )
            and not (
                member in joined
                and sim.stopped.get(member, "").startswith("removed from the group")
            )
        ]

    def _check_objects(self, settled: bool) -> list[str]:
        sim = self.sim
        problems = list(self.observed_problems)
        for member, reason in sorted(sim.host_failed.items()):
            if "missed a view" in reason:
                continue  # a restart from logs older than the group's: it stops, as it must
            problems.append(f"host: member {member}'s object layer failed: {reason}")
        for member, events in sorted(sim.host_events.items()):
            failures = [e for e in events if isinstance(e, UserCodeFailed)]
            if failures:
                problems.append(f"host: member {member}: user code failed: {failures[0]}")
        if not settled:
            return problems
        # Shards some member was told wait for a holder (StateWaiting): a member that joined
        # later asks one of those, and waits with it.
        holderless = {key for member, key in self.waited if self._waits(member, key)}
        for (member, key), waiting_for in sorted(self.cut_waits.items()):
            if self._cut_wait_lasts(member, key):
                problems.extend(self._check_cut_wait(member, key, waiting_for))
                holderless.add(key)
        for member in sim.running:
            if not sim.nodes[member].layout.adequate:
                continue  # its calls wait for enough members to join
            if member in self.waiting or any(self._waits(member, key) for key in holderless):
                continue  # a Paxos shard waits for a holder to restart: its calls wait too
            results = sim.results.get(member, {})
            # A call to a shard that waits so waits with it, though its caller moved on to
            # another shard (beyond-budget seed 7255: 3's call waited for 6's reply).
            hanging = [
                c
                for c in self.calls.get(member, [])
                if c not in results and self.call_shards.get((member, c)) not in holderless
            ]
            if hanging:
                problems.append(
                    f"calls: {len(hanging)} ordered calls of member {member} never resolved "
                    f"(first: {hanging[0]})"
                )
            pending = [r for r in sim.hosts[member].replicas().values() if r is None]
            if pending:
                problems.append(f"state: member {member} still waits for {len(pending)} states")
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
    if spec.replicated and spec.mode is Mode.RAW:
        raise ValueError("replicated runs need ordered shards: Raw shards run no objects")
    # Leaves are view changes, not failures: they shrink the view the majority counts in.
    failures = spec.crash + spec.pauses + spec.stalls + spec.disk_failures
    if spec.leave >= spec.members or 2 * failures >= spec.members - spec.leave:
        raise ValueError(
            f"{spec.crash} crashes, {spec.pauses} pauses, {spec.stalls} stalling members and "
            f"{spec.disk_failures} disk failures would take half of the "
            f"{spec.members - spec.leave} members that do not leave: no majority would be left"
        )
    if spec.rejoin + spec.takeover > spec.crash:
        raise ValueError(
            f"rejoin ({spec.rejoin}) and takeover ({spec.takeover}) are counted among the "
            f"{spec.crash} crashed members"
        )
    if spec.partial_cut and spec.partial_cut not in PARTIAL_CUTS:
        raise ValueError(
            f"partial_cut must be one of {', '.join(PARTIAL_CUTS)}, not {spec.partial_cut!r}"
        )
    if spec.stay_down and not spec.total_crash:
        raise ValueError("stay_down keeps members down after a total_crash")
    if spec.second_total_crash and not spec.total_crash:
        raise ValueError("second_total_crash crashes the group again after a total_crash")
    if spec.rolling and (spec.join or spec.leave or spec.total_crash):
        raise ValueError(
            "a rolling replacement has every founder leave: joins, leaves and a total crash "
            "would need contacts and logs it takes away; run them separately"
        )
    settled = run.play()
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
        restart_conflicts=run.restart_conflicts(),
        views_installed=max(final_epochs, default=0),
        view_change_ms=[round(run.view_changes[e], 3) for e in sorted(run.view_changes)],
        stopped={str(m): reason for m, reason in sorted(sim.stopped.items())},
        sim_time_s=sim.last_progress,
        wall_s=round(time.perf_counter() - started, 3),
        events=sim.events_processed,
        wire_messages=sum(sim.messages_sent.values()),
        wire_bytes=sum(sim.bytes_sent.values()),
        trace=sim.trace_digest,
        calls=sum(len(calls) for calls in run.calls.values()),
        state_transfers=sum(
            isinstance(e, StateReceived) for es in sim.host_events.values() for e in es
        ),
        caught_up=sum(
            isinstance(e, StateReceived) and e.caught_up
            for es in sim.host_events.values()
            for e in es
        ),
        shard_moves=run.shard_moves,
    )
