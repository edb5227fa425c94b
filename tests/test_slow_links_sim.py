"""Replicated shards over a network where some links are slow: the simulator's other
families draw every link from one model, so that a message sent over one link rarely reaches
its receiver after messages sent later over others, and a request for a shard's state
rarely outlives the view it was sent in. Here a quarter or half of the links (each
direction on its own) add 10-60 ms to every frame, and the groups are small, with small
shards, crashes and joiners: shards lose every holder, newcomers wait for their state
across view changes, and members crashed from ``Paxos`` shards come back from their disks.

This family found two faults its first sweep (seeds 0-999): callers of an ordered shard
that started over a view after the calls were delivered never heard from the member that
dropped them (305, 918); and a ``Paxos`` shard whose one holder failed and came back while
the views between could not run the layout waited for good beside it (106, 207). Its
sweep of seeds 0-9999 then found the simulator checking a run before the group had removed
a crashed member (9274)."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from pyderecho.core.layout import Mode, layout_of, sharded
from pyderecho.core.membership import Membership
from pyderecho.replicated import host as host_module
from pyderecho.sim.links import LinkModel, SimLinks
from pyderecho.sim.simulation import DiskModel
from pyderecho.sim.swarm import SimulationSpec, _Run, run_simulation
from test_membership_sim import scenario as membership_scenario
from test_paxos_sim import FAST, SLOW_DISK, hosts_of, stats_of


def slow_link_scenario(seed: int) -> SimulationSpec:
    """Three to six members in two or three shards (three shards of three members leave a
    view with a crash unable to run the layout), ordered or ``Paxos``, one crash or more
    within the fault budget (in ``Paxos`` mode some come back from their disks), one to
    three joiners, and slow links."""
    rng = random.Random(seed * 7919 + 5)
    members = rng.randint(3, 6)
    paxos = rng.random() < 0.5
    crash = rng.randint(1, (members - 1) // 2)
    return SimulationSpec(
        members=members,
        layout=rng.choice(
            [layout_of({"KV": sharded(2, min_size=1)}), layout_of({"KV": sharded(3, min_size=1)})]
        ),
        seed=seed,
        mode=Mode.PAXOS if paxos else Mode.ORDERED,
        replicated=True,
        messages=rng.randint(20, 80),
        crash=crash,
        rejoin=rng.randint(0, crash) if paxos else 0,
        join=rng.randint(1, 3),
        config=dataclasses.replace(FAST, window_size=rng.choice([4, 16, 100])),
        link=LinkModel(
            latency_s=rng.choice([20e-6, 2e-3]),
            jitter_s=rng.choice([30e-6, 3e-3]),
            slow_share=rng.choice([0.25, 0.5]),
            slow_latency_s=rng.uniform(0.01, 0.06),
            beats_in_memory=rng.random() < 0.5,
        ),
        disk=rng.choice([DiskModel(), SLOW_DISK]),
    )


@pytest.mark.parametrize("seed", range(200))
def test_slow_link_seed_sweep(seed: int) -> None:
    assert run_simulation(slow_link_scenario(seed)).violations == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(200, 2200))
def test_long_slow_link_seed_sweep(seed: int) -> None:
    assert run_simulation(slow_link_scenario(seed)).violations == []


def with_slow_links(spec: SimulationSpec, share: float, latency_s: float) -> SimulationSpec:
    """``spec`` with ``share`` of its links ``latency_s`` slower, the rest of its link model
    as drawn."""
    slow = dataclasses.replace(spec.link, slow_share=share, slow_latency_s=latency_s)
    return dataclasses.replace(spec, link=slow)


def membership_over_slow_links(seed: int) -> SimulationSpec:
    """Membership seed ``seed`` (its sizes, faults and timeouts) with a quarter or half of the
    links 10-30 ms slow: round trips of up to 60 ms, under a quarter of the family's 0.5-1 s
    timeouts, within which members that are only slow must never be removed (README, "Run it
    in the simulator"; at 60 ms a few seeds per thousand remove one)."""
    rng = random.Random(f"slow links {seed}")
    return with_slow_links(
        membership_scenario(seed), rng.choice([0.25, 0.5]), rng.uniform(0.01, 0.03)
    )


@pytest.mark.parametrize("seed", range(100))
def test_membership_over_slow_links_seed_sweep(seed: int) -> None:
    assert run_simulation(membership_over_slow_links(seed)).violations == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 1100))
def test_long_membership_over_slow_links_seed_sweep(seed: int) -> None:
    assert run_simulation(membership_over_slow_links(seed)).violations == []


def test_survivors_do_not_follow_a_leaver_once_the_leader_crashes() -> None:
    """Membership seed 452 with half the links 15 ms slow: 1 left, and exited once the
    change that let it go was final; the leader 0 crashed before the cleanup was done, and
    the survivors, suspecting 0 alone, took 1 for the next leader and waited for it for
    good. Once final, a member the final leaves out leads only if it leads already."""
    spec = membership_over_slow_links(452)
    assert spec.leave and spec.crash
    assert run_simulation(spec).violations == []


@pytest.mark.patches_compiled
def test_following_a_leaver_that_exited_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: once final, only members that moved on are passed over as leaders."""
    monkeypatch.setattr(Membership, "_leads_no_more", lambda self, member: self._moved_on(member))
    violations = run_simulation(membership_over_slow_links(452)).violations
    assert any("did not settle" in v for v in violations), violations


@pytest.mark.parametrize("seed", [305, 918])
def test_calls_a_shard_delivered_before_it_started_over_are_answered(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ordered shard whose one holder crashed while its newcomers waited for the state:
    they delivered calls in that view, and buffered them, and their request outlived the
    view over a slow link. In the next view nobody held the state, and the shard started
    over at that view's start, without the calls: their callers, which wait for every
    member's reply, heard nothing and hung. They now hear ``StateLost`` (the checker takes
    it only from a member that started the shard over in a later view)."""
    spec = slow_link_scenario(seed)
    assert spec.mode is Mode.ORDERED
    hosts = hosts_of(monkeypatch)
    assert run_simulation(spec).violations == []
    assert stats_of(hosts)["lost_updates_answered"] > 0


def test_a_state_said_lost_by_a_member_that_did_not_start_over_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted: a member moved out of a shard while it waited answers the calls it held
    with ``StateLost`` instead of ``LeftShard`` (they took effect at the members that
    stay); it never started the shard over, and the checker says so."""
    real = host_module._error

    def lost_for_left(error_type: str, message: str) -> Any:
        return real("StateLost" if error_type == "LeftShard" else error_type, message)

    monkeypatch.setattr(host_module, "_error", lost_for_left)
    violations = run_simulation(slow_link_scenario(84)).violations  # 8 of seeds 0-299
    assert any("said the state was lost" in v for v in violations), violations


@pytest.mark.parametrize("seed", [106, 207])
def test_a_lone_holder_back_after_views_that_could_not_run_the_layout_is_taken(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three members in three ``Paxos`` shards of one: member 1 crashed in view 0, and view
    1, of two members, could not run the layout. It came back in view 2, where its shard
    went to member 2, and offered the state its logs rebuilt. The offer rules counted the
    view before 2, which ran no shard, instead of view 0, the last that ran this one, and
    took member 1 for no member of it: member 2 refused the offer and waited, and so did
    member 1 once the layout gave it its shard back. Every call to the shard hung beside
    its one holder."""
    spec = slow_link_scenario(seed)
    assert spec.mode is Mode.PAXOS
    hosts = hosts_of(monkeypatch)
    assert run_simulation(spec).violations == []
    stats = stats_of(hosts)
    assert stats["offers_taken"] + stats["own_state_taken"] > 0, dict(stats)


def test_slow_links_are_the_same_for_the_same_seed_and_keep_their_order() -> None:
    model = LinkModel(latency_s=1e-3, jitter_s=0.0, slow_share=0.5, slow_latency_s=0.05)
    links = SimLinks(model, seed=7)
    pairs = [(a, b) for a in range(8) for b in range(8) if a != b]
    slow = {pair for pair in pairs if links.slow(*pair)}
    assert slow == {pair for pair in pairs if SimLinks(model, seed=7).slow(*pair)}
    assert 0 < len(slow) < len(pairs)
    assert any((b, a) not in slow for a, b in slow)  # each direction drawn on its own
    for a, b in pairs:
        first = links.arrival(a, b, 100, 0.0)
        assert first == pytest.approx(1e-3 + (0.05 if (a, b) in slow else 0.0), abs=1e-5)
        assert links.arrival(a, b, 100, 0.0) >= first
    assert not SimLinks(LinkModel(), seed=7).slow(0, 1)


def test_a_run_is_not_checked_before_its_crashed_members_are_removed() -> None:
    """Seed 9274: member 2 crashed while the change that let 3 join was final. A member not
    heard from yet in a view is suspected there only after twice the timeout, and the
    group, idle meanwhile, read as settled 50 ms before 2 was suspected: the checks then
    found 3 waiting for its shard's state from 2, and two of its calls unanswered. The run
    now goes on while running members that hold a majority of their view still have a
    crashed member in it."""
    run = _Run(slow_link_scenario(9274))
    assert run.play()
    assert 2 in run.sim.crashed
    assert all(2 not in run.sim.nodes[m].view for m in run.sim.running)
    assert run_simulation(slow_link_scenario(9274)).violations == []


def test_checking_a_run_before_its_crashed_members_are_removed_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted: the run is checked once idle, crashed members in the view or not."""
    monkeypatch.setattr(_Run, "_crash_still_due", lambda self: False)
    violations = run_simulation(slow_link_scenario(9274)).violations
    assert any("never resolved" in v for v in violations), violations


def rolling_over_slow_links(seed: int) -> SimulationSpec:
    """Membership seed ``seed`` (a rolling restart: each founder in turn makes way for a new
    process) with half the links 60 ms slow."""
    spec = membership_scenario(seed)
    assert spec.rolling
    return with_slow_links(spec, 0.5, 0.06)


@pytest.mark.parametrize("seed", [675, 1729, 1758])
def test_a_joiner_gets_in_while_the_leaders_leave_in_turn(seed: int) -> None:
    """Seed 1758: five founders leave one after another, each a second after a new process
    joins. Joiner 6 asked contact 4, which forwarded it to the leader, 0; it came while the
    change that removed 3 was under way, and waited for the next change, but the view that
    change installed has a new membership, which knew nothing of it, and the next change was
    0's own leave. 6 asked again a timeout later, through 1, which forwarded it to 0, leaving;
    then through 2, gone; then 4 again, whose leader, 1, was leaving too; then contacts that
    had all left, until its join timed out after 10 s. A leader now hands the joins it has
    not proposed on to the next view (to itself, or to the next view's leader as it
    leaves)."""
    assert run_simulation(rolling_over_slow_links(seed)).violations == []


@pytest.mark.patches_compiled
def test_dropping_the_joins_a_leader_has_not_proposed_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted: a leader's joins not yet proposed are dropped with its view's membership."""
    monkeypatch.setattr(Membership, "unproposed_joins", property(lambda self: ()))
    violations = run_simulation(rolling_over_slow_links(1758)).violations
    assert any("could not join" in v for v in violations), violations
