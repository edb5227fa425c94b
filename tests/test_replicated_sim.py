"""Typed groups in the deterministic simulator: the object layer under faults, and the state rule.

Every simulated member runs the same :class:`~pyderecho.replicated.host.ObjectHost` a real
member runs. The sweep draws per seed a group, a layout whose shards follow the view (so view
changes move members between shards), joins that force state transfer, and crashes, leaves,
pauses and partitions, under a workload of ordered ``put`` calls on :class:`KV`. Each run must keep
the history checker's promises, the state rule (replicas at the same position hold the same
state; a receiver installs what its sender sent), resolve every call of a running member, and
give each call one reply per member of the shard that delivered it. Planted bugs (a skipped
transfer, a message applied twice) prove that the rule bites.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered, Event, ViewInstalled
from pyderecho.core.layout import ViewLayout, every_member, layout_of, one_subgroup, sharded
from pyderecho.core.membership import Membership
from pyderecho.core.view import NodeId
from pyderecho.replicated import host as host_module
from pyderecho.replicated.errors import MemberRemoved, NotInShard, RemoteError
from pyderecho.replicated.events import CallDone, HostFailed, QueryDone, StateReceived
from pyderecho.replicated.host import ObjectHost
from pyderecho.replicated.messages import decode_call
from pyderecho.replicated.methods import ordered, query
from pyderecho.sim.simulation import LinkModel, Simulation
from pyderecho.sim.swarm import KV, SimulationSpec, run_simulation

SLOW_LINKS = LinkModel(latency_s=2e-3, jitter_s=3e-3)
FAST = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5)

LAYOUTS = {
    # Two KV shards of 1-3 members over the lowest-ranked six, and a log of everyone: a join
    # or a departure below the sixth rank shifts the shard boundaries.
    "relayout": lambda: layout_of(
        {"KV": sharded(2, min_size=1, max_size=3), "Log": every_member()}
    ),
    # Every member in one of two shards, split evenly: nearly every change moves someone.
    "pool": lambda: layout_of({"KV": sharded(2, min_size=1)}),
    # The three lowest-ranked members: a departure among them brings in a new one.
    "trio": lambda: layout_of({"Log": every_member(), "Trio": one_subgroup(3)}),
}


def typed_scenario(seed: int) -> SimulationSpec:
    """The replicated fault mix for ``seed``: 3-8 members, one fault profile, and joins in most
    runs so that state transfer is the rule rather than the exception."""
    rng = random.Random(seed)
    members = rng.randint(3, 8)
    layout = rng.choice(sorted(LAYOUTS))
    budget = (members - 1) // 2
    profile = rng.choice(["crash", "churn", "join", "mixed", "partition", "pause"])
    crash = pauses = leave = joins = 0
    if profile == "crash":
        crash, joins = rng.randint(1, budget), rng.randint(0, 1)
    elif profile == "pause":
        pauses = rng.randint(1, budget)
    elif profile == "churn":
        joins, leave = rng.randint(1, 3), rng.randint(1, min(2, budget))
    elif profile == "join":
        joins = rng.randint(1, 3)
    elif profile == "mixed":
        crash = rng.randint(0, budget)
        pauses = rng.randint(0, budget - crash)
        leave = rng.randint(0, min(1, budget - crash - pauses))
        joins = rng.randint(1, 2)
    else:
        joins = rng.randint(0, 1)
    spec = SimulationSpec(
        members=members,
        layout=LAYOUTS[layout](),
        seed=seed,
        messages=rng.randint(20, 80),
        crash=crash,
        join=joins,
        leave=leave,
        pauses=pauses,
        partition=profile == "partition",
        replicated=True,
        config=CoreConfig(
            block_size=1024,
            window_size=rng.choice([4, 16, 100]),
            heartbeat_interval=0.05,
            heartbeat_timeout=0.5,
        ),
        link=rng.choice([LinkModel(), SLOW_LINKS]),
    )
    # Drawn last, so that every other choice of a seed stays what it was.
    return dataclasses.replace(
        spec, link=dataclasses.replace(spec.link, beats_in_memory=rng.random() < 0.5)
    )


def describe(spec: SimulationSpec) -> str:
    return (
        f"seed {spec.seed}: {spec.members} members, crash {spec.crash}, join {spec.join}, "
        f"leave {spec.leave}, pause {spec.pauses}, partition {spec.partition}, "
        f"beats in memory {spec.link.beats_in_memory}"
    )


@pytest.mark.parametrize("seed", range(200))
def test_typed_seed_sweep(seed: int) -> None:
    spec = typed_scenario(seed)
    assert run_simulation(spec).violations == [], describe(spec)


def test_a_minority_member_may_install_a_view_decided_before_the_partition() -> None:
    """Seed 1193 of the long sweep: the partition began as the leader of a join's view change
    (on the minority side) waited for every survivor's cleanup; member 2, beside it, then
    installed the view the majority had agreed on before the partition. That is no progress
    of the minority's, and the partition check counts from the last view decided anywhere."""
    spec = typed_scenario(1193)
    assert spec.partition
    assert run_simulation(spec).violations == [], describe(spec)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(200, 2200))
def test_long_typed_seed_sweep(seed: int) -> None:
    spec = typed_scenario(seed)
    assert run_simulation(spec).violations == [], describe(spec)


@pytest.mark.parametrize("seed", range(100))
def test_own_reply_seed_sweep(seed: int) -> None:
    """The typed fault mix with every other call waiting for the caller's replica alone:
    such a call completes only once its caller delivered it, with that one outcome, and the
    state rule holds with the replies the other replicas no longer send."""
    spec = dataclasses.replace(typed_scenario(seed), own_replies=True)
    assert run_simulation(spec).violations == [], describe(spec)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 600))
def test_long_own_reply_seed_sweep(seed: int) -> None:
    spec = dataclasses.replace(typed_scenario(seed), own_replies=True)
    assert run_simulation(spec).violations == [], describe(spec)


def test_an_own_reply_call_that_waits_for_every_replica_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted bug: the caller forgets that it asked for its own reply alone, so it waits
    for replicas that were told not to answer. The sweep's check names the stuck calls."""

    @dataclasses.dataclass
    class Forgetful(host_module._PendingCall):
        def __post_init__(self) -> None:
            self.own = False

    monkeypatch.setattr(host_module, "_PendingCall", Forgetful)
    caught = [
        v
        for seed in range(5)
        for v in run_simulation(
            dataclasses.replace(typed_scenario(seed), own_replies=True)
        ).violations
    ]
    assert any("never resolved" in v for v in caught), caught[:3]


def test_regression_a_stalled_cleanup_blames_a_crashed_member_while_the_leader_is_heard() -> None:
    """Seed 955: member 5's cleanup waited on member 4, which crashed before its cut; the
    leader had moved on and was heard. Sparing 4 for a period (as a cleanup does while the
    leader is silent, since 4 might wait for its final) let the leader time 5 out instead."""
    spec = typed_scenario(955)
    report = run_simulation(spec)
    assert report.violations == [], describe(spec)
    assert "5" not in report.stopped


def test_an_ordered_shard_left_without_a_holder_starts_over_at_its_members() -> None:
    """Seed 7796, beyond the sweeps: shard ('KV', 0, 1) of view 1 was 5, its one holder, and
    6 and 7, new to it; 5 failed before either had the state. In view 2, 6 and 7 asked each
    other and kept each other's request, and their calls hung for good. Each now says it
    holds nothing, and once every member asked has said so, the state is lost: both start
    from the constructor at view 2 (``StateLost``), as they would had the layout left no
    old member."""
    spec = typed_scenario(7796)
    report = run_simulation(spec)
    assert report.violations == [], describe(spec)


def test_a_joiner_is_not_blamed_while_the_member_that_welcomes_it_is_behind() -> None:
    """Seed 33304, beyond the sweeps: view 1 admitted joiner 5 as a partition cut 1 and 3
    off. Member 2 installed view 1 at once; leader 0, whose cleanup waited on the far side,
    installed it (and welcomed 5) a second later. 2 blamed 5, silent for twice the timeout,
    and with 1 and 3 it suspected half the view and stopped, and the rest with it. 0 still
    sent frames of view 0, so 2 knew 5 could not be there yet."""
    spec = typed_scenario(33304)
    assert run_simulation(spec).violations == [], describe(spec)


@pytest.mark.patches_compiled
def test_blaming_a_joiner_while_its_welcome_is_held_up_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Membership, "heard_behind", lambda self, src, now: None)
    violations = run_simulation(typed_scenario(33304)).violations
    assert any(v.startswith("availability: ") for v in violations), violations


def test_the_last_member_cleaning_up_does_not_step_down_once_the_change_is_final() -> None:
    """Seed 30672, beyond the sweeps: leader 0 made view 1 final and paused, as did 3. Member
    4, the last one still cleaning up view 0, took the lead, suspected both, and with no one
    else left in view 0 to say it reached them, took itself for the smaller side of a cut
    and stepped down. View 1 lost 0, 3 and 4, half of it, and stopped."""
    spec = typed_scenario(30672)
    assert run_simulation(spec).violations == [], describe(spec)


@pytest.mark.patches_compiled
def test_stepping_down_after_the_final_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Membership, "_may_step_down", lambda self, links, now: True)
    violations = run_simulation(typed_scenario(30672)).violations
    assert any(v.startswith("availability: ") for v in violations), violations


def test_the_typed_sweep_covers_transfers_moves_and_faults() -> None:
    specs = [typed_scenario(seed) for seed in range(200)]
    assert sum(s.join > 0 for s in specs) > 120
    assert sum(s.crash > 0 for s in specs) > 30
    assert sum(s.leave > 0 for s in specs) > 20
    assert sum(s.pauses > 0 for s in specs) > 30
    assert sum(s.partition for s in specs) > 20
    reports = [run_simulation(typed_scenario(seed)) for seed in range(12)]
    assert sum(r.state_transfers for r in reports) > 20
    assert sum(r.shard_moves for r in reports) > 3
    assert all(r.calls > 0 for r in reports)


def test_typed_runs_replay_from_their_seed() -> None:
    spec = typed_scenario(6)
    first, second = run_simulation(spec), run_simulation(spec)
    assert first.trace == second.trace
    assert first.state_transfers == second.state_transfers > 0


# The simulator's object API.


class Counter:
    total: int

    def __init__(self) -> None:
        self.total = 0

    @ordered
    def add(self, amount: int) -> int:
        if amount < 0:
            raise ValueError("negative")
        self.total += amount
        return self.total

    @query
    def read(self) -> int:
        return self.total

    @query
    async def read_async(self) -> int:
        return self.total

    @query
    async def read_later(self) -> int:
        await _Suspend()
        return self.total


class _Suspend:
    def __await__(self) -> Any:
        yield


def counter_sim(members: int = 3, seed: int = 1) -> Simulation:
    layout = layout_of({"Counter": every_member()})
    return Simulation(members, layout, seed=seed, config=FAST, types={"Counter": Counter})


def test_ordered_calls_and_queries_run_on_the_hosts() -> None:
    sim = counter_sim()
    sim.call_ordered(0, "Counter", 0, "add", 5, at=0.01)
    sim.call_ordered(1, "Counter", 0, "add", amount=2, at=0.02)
    sim.call_ordered(2, "Counter", 0, "add", -1, at=0.03)
    sim.query(2, "Counter", 0, None, "read", at=0.5)
    sim.query(1, "Counter", 0, 0, "read_async", at=0.5)
    sim.query(0, "Counter", 0, 0, "read_later", at=0.5)
    assert sim.settle(limit=5.0)
    assert sim.results[0][1] == CallDone(1, {0: 5, 1: 5, 2: 5})
    assert sim.results[1][1] == CallDone(1, {0: 7, 1: 7, 2: 7})
    failed = sim.results[2][1]
    assert isinstance(failed, CallDone)
    assert failed.replies == {m: RemoteError(m, "ValueError", "negative") for m in (0, 1, 2)}
    assert sim.results[2][2] == QueryDone(2, 7)
    assert sim.results[1][2] == QueryDone(2, 7)
    suspended = sim.results[0][2]
    assert isinstance(suspended, QueryDone) and isinstance(suspended.result, RemoteError)
    assert suspended.result.error_type == "RuntimeError"
    assert sim.stats["unsupported_async_query"] == 1
    assert [sim.hosts[m].replica("Counter").total for m in (0, 1, 2)] == [7, 7, 7]
    sim.record_states()
    assert sim.recorder.check() == []
    assert {r.kind for r in sim.recorder.states} == {"final"}


def test_calls_the_member_cannot_make_are_refused_at_the_call_site() -> None:
    layout = layout_of({"Counter": one_subgroup(2), "Other": one_subgroup(1)})
    sim = Simulation(3, layout, seed=1, config=FAST, types={"Counter": Counter, "Other": Counter})
    with pytest.raises(NotInShard):
        sim.call_ordered_now(2, "Counter", 0, "add", 1)
    with pytest.raises(TypeError):
        sim.call_ordered_now(0, "Counter", 0, "add", "one")
    with pytest.raises(AttributeError):
        sim.call_ordered_now(0, "Counter", 0, "nope")
    sim.crash(1, at=0.1)
    sim.call_ordered(1, "Counter", 0, "add", 1, at=0.2)
    sim.run(until=0.3)
    assert sim.refused == [(1, 0.2, "member 1 has crashed")]


def test_a_layout_type_without_a_class_fails_the_host() -> None:
    layout = layout_of({"Counter": every_member(), "Unknown": one_subgroup(1)})
    sim = Simulation(2, layout, seed=1, config=FAST, types={"Counter": Counter})
    assert list(sim.host_failed) == [0]
    assert isinstance(sim.host_events[0][0], HostFailed)


def test_untyped_simulations_run_no_hosts_and_replay_as_before() -> None:
    layout = layout_of({"Counter": every_member()})
    sim = Simulation(3, layout, seed=2, config=FAST)
    sim.send(0, 0, b"bytes", at=0.01)
    assert sim.settle(limit=5.0)
    assert sim.hosts == {}
    with pytest.raises(Exception, match="no replicated types"):
        sim.call_ordered_now(0, "Counter", 0, "add", 1)


def test_a_joiner_receives_state_and_then_applies_calls_itself() -> None:
    sim = counter_sim()
    for number in range(30):
        sim.call_ordered(number % 3, "Counter", 0, "add", 1, at=number * 0.01)
    sim.join(3, at=0.15, contacts=[0, 1])
    for number in range(30, 40):
        sim.call_ordered(number % 4, "Counter", 0, "add", 1, at=1.0 + number * 0.01)
    assert sim.settle(limit=10.0)
    received = [e for e in sim.host_events.get(3, []) if isinstance(e, StateReceived)]
    assert len(received) == 1 and received[0].source == 0
    assert [sim.hosts[m].replica("Counter").total for m in range(4)] == [40] * 4
    sim.record_states()
    kinds = {r.kind for r in sim.recorder.states}
    assert kinds == {"view", "sent", "received", "final"}
    assert sim.recorder.check() == []


# Reply semantics of ordered calls.


def test_every_reply_set_is_the_delivering_shard_with_removed_members_marked() -> None:
    """Calls in flight while a member crashes: each CallDone names exactly the shard's members
    in the view where the caller delivered the call; the crashed member's slot says it was
    removed when it never replied, and every other replica returns the same number."""
    sim = Simulation(
        5,
        layout_of({"KV": every_member()}),
        seed=3,
        config=FAST,
        link=SLOW_LINKS,
        types={"KV": KV},
    )
    layouts: dict[int, ViewLayout] = {0: sim.nodes[0].layout}
    delivered_in: dict[tuple[NodeId, int], tuple[NodeId, ...]] = {}

    def observe(member: NodeId, event: Event) -> None:
        if isinstance(event, ViewInstalled):
            layouts.setdefault(event.view.epoch, event.layout)
        elif isinstance(event, Delivered) and event.sender == member:
            ref = next(r for r in layouts[event.epoch].shards if r.subgroup == event.subgroup)
            delivered_in[(member, decode_call(event.payload).call_id)] = ref.layout.members

    sim.on_event = observe
    for number in range(200):
        sim.call_ordered(number % 5, "KV", 0, "put", f"k{number}", number, at=number * 1e-3)
    sim.crash(4, at=0.1)
    assert sim.settle(limit=10.0)
    done = [
        (member, result)
        for member in sim.running
        for result in sim.results[member].values()
        if isinstance(result, CallDone)
    ]
    assert len(done) > 100
    removed = 0
    for member, result in done:
        members = delivered_in[(member, result.call_id)]
        assert tuple(result.replies) == members
        values = set()
        for replica, reply in result.replies.items():
            if isinstance(reply, MemberRemoved):
                assert replica == 4
                removed += 1
            else:
                values.add(reply)
        assert len(values) == 1, result
    assert removed > 0
    assert sim.recorder.check() == []


# Planted bugs: the state rule must catch an object layer that cuts corners.


def planted_runs(seeds: range) -> list[str]:
    caught: list[str] = []
    for seed in seeds:
        spec = SimulationSpec(
            members=5,
            layout=LAYOUTS["relayout"](),
            seed=seed,
            messages=80,
            join=2,
            replicated=True,
            config=FAST,
        )
        caught += run_simulation(spec).violations
    return caught


def test_installing_the_constructors_state_instead_of_the_received_one_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pyderecho.replicated.host.restore", lambda spec, data: spec.cls())
    caught = planted_runs(range(3))
    assert any(v.startswith("state:") for v in caught), caught[:3]


def test_a_joiner_that_skips_the_transfer_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def start_without_asking(self: ObjectHost, replica: Any) -> None:
        self._start_fresh(replica, lost=False)

    monkeypatch.setattr(ObjectHost, "_ask", start_without_asking)
    caught = planted_runs(range(3))
    assert any(v.startswith("state:") for v in caught), caught[:3]


def test_applying_a_message_twice_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ObjectHost._apply

    def apply_some_twice(
        self: ObjectHost, replica: Any, position: tuple[int, int], sender: NodeId, call: Any
    ) -> None:
        original(self, replica, position, sender, call)
        if self.node_id == 1 and position[1] == 3:
            original(self, replica, position, sender, call)

    monkeypatch.setattr(ObjectHost, "_apply", apply_some_twice)
    caught = planted_runs(range(2))
    assert any(v.startswith("state:") and "member 1," in v for v in caught), caught[:3]


def test_declaring_a_shard_lost_while_a_holder_is_alive_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def give_up_at_once(self: ObjectHost, replica: Any) -> None:
        self._start_fresh(replica, lost=True)

    monkeypatch.setattr(ObjectHost, "_ask", give_up_at_once)
    caught = planted_runs(range(3))
    assert any(v.startswith("state-lost:") for v in caught), caught[:3]


def test_a_reply_reported_removed_for_a_member_still_in_the_view_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted: at every view change, the members that have not replied yet are reported
    removed, those still in the view too."""
    original = ObjectHost._on_view

    def remove_the_silent(self: ObjectHost, event: Any) -> None:
        for pending in self._calls.values():
            for member in pending.expected or ():
                pending.outcomes.setdefault(member, MemberRemoved(member, event.view.epoch))
        original(self, event)

    monkeypatch.setattr(ObjectHost, "_on_view", remove_the_silent)
    caught = [v for seed in (0, 3) for v in run_simulation(typed_scenario(seed)).violations]
    assert any("reported removed but is in every view since" in v for v in caught), caught[:3]
