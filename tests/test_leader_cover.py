"""The leader's choice of whom to remove, driven directly on :class:`Membership`.

A leader proposes a removal once its followers agree, or once it chose the member to cover the
cut links it knows of (``_cover``); it steps down when it is the cheaper one to remove. These
tests pin the cases a starved machine and a crash bring: a broken link needs no agreement, a
member the leader suspected but hears again is slow rather than cut off from it, and of two
equal choices the member the leader suspects already goes.
"""

from __future__ import annotations

from typing import Any

import pytest

from pyderecho.core.config import CoreConfig
from pyderecho.core.membership import Membership, _greedy_cover, _least_cover
from pyderecho.core.multicast import Outbox
from pyderecho.core.view import View
from pyderecho.wire import Change, ChangeKind, Heartbeat, MembershipRow

CONFIG = CoreConfig(heartbeat_interval=0.1, heartbeat_timeout=1.0)
VIEW = View(0, (0, 1, 2, 3, 4))


def ready_leader() -> Membership:
    """Member 0, leading view 0, every follower's row in and every member heard at 0.5 s."""
    outbox: Outbox = []
    leader = Membership(0, VIEW, CONFIG, outbox, 0.0)
    for member in (1, 2, 3, 4):
        leader.receive_row(member, follower_row(1), 0.1)
    run(leader, 0.0, 0.5, alive=(1, 2, 3, 4))
    assert leader.leads and not leader.suspected
    return leader


def follower_row(
    version: int,
    *,
    cut: tuple[tuple[int, int], ...] = (),
    suspected: tuple[int, ...] = (),
    heard_since: tuple[int, ...] = (),
    leader_version: int = 0,
    changes: tuple[Change, ...] = (),
    committed: int = 0,
    final: int = 0,
    cleaned: bool = False,
) -> MembershipRow:
    return MembershipRow(
        epoch=0,
        version=version,
        suspected=suspected,
        leader=0,
        leader_version=leader_version,
        changes=changes,
        committed=committed,
        final=final,
        cut=cut,
        heard_since=heard_since,
        cleaned=cleaned,
    )


def run(leader: Membership, start: float, end: float, *, alive: tuple[int, ...]) -> float:
    """Tick every interval from ``start`` to ``end``, hearing from ``alive`` at each tick."""
    now = start
    while now < end - 1e-9:
        now = round(now + CONFIG.heartbeat_interval, 6)
        for member in alive:
            leader.heard_from(member, now)
        leader.tick(now)
        leader.step(now)
    return now


def removals(leader: Membership) -> set[int]:
    return {c.node for c in leader.changes if c.kind is ChangeKind.REMOVE}


def test_a_broken_link_is_proposed_at_once_a_silence_only_after_the_followers_probed() -> None:
    leader = ready_leader()
    now = run(leader, 0.5, 1.7, alive=(1, 3, 4))  # 2 falls silent at 0.5 s
    assert leader.suspected == {2}
    assert removals(leader) == set()  # it waits for its followers to agree, or to hear 2
    leader.link_lost(3, now)
    leader.step(now)
    assert removals(leader) == {3}


def test_a_suspected_member_heard_again_restarts_the_wait_for_the_cut_to_settle() -> None:
    """2 falls silent at 0.5 s and is suspected at 1.6 s; the cover would weigh it half a
    timeout after that, at 2.1 s, but 2 is heard again at 2.0 s: the links to it changed, so
    the cover waits half a timeout from then, and only then removes 2, slow, as suspected.
    Covering at once saw the leader's own links to a healed cut's far side work and its
    followers' still cut, and removed members of its own side (partial-cut seed 35033)."""
    leader = ready_leader()
    now = run(leader, 0.5, 1.5, alive=(1, 3, 4))
    leader.receive_row(1, follower_row(2, suspected=(2,)), 1.6)
    now = run(leader, now, 1.9, alive=(1, 3, 4))
    assert leader.suspected == {2} and removals(leader) == set()
    now = run(leader, now, 2.4, alive=(1, 2, 3, 4))
    assert removals(leader) == set()
    run(leader, now, 2.5, alive=(1, 2, 3, 4))
    assert removals(leader) == {2}


@pytest.mark.patches_compiled
def test_covering_at_once_when_a_suspected_member_resurfaces_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted: a member heard again is noted as slow, but the wait is not restarted."""

    def without_settling(self: Membership, member: int, now: float) -> None:
        self._resurfaced.add(member)
        self._dirty = True

    monkeypatch.setattr(Membership, "_resurface", without_settling)
    with pytest.raises(AssertionError):
        test_a_suspected_member_heard_again_restarts_the_wait_for_the_cut_to_settle()


def test_slow_members_the_leader_hears_again_do_not_make_it_step_down() -> None:
    """Planted by construction: were the links to 1 and 2 counted as cut from the leader,
    removing the leader alone (one member) would be cheaper than removing both, and it would
    step down; that is what a leader of 64 members on two cores did after a crash."""
    leader = ready_leader()
    now = run(leader, 0.5, 1.7, alive=(3, 4))  # 1 and 2 are late past the timeout...
    assert leader.suspected == {1, 2}
    now = run(leader, now, 1.8, alive=(1, 2, 3, 4))  # ...and heard from again
    # 3 and 4 probed them as the leader's row asked, were answered, and report the links.
    for member in (3, 4):
        leader.receive_row(member, follower_row(2, cut=((0, 1), (0, 2))), now)
    run(leader, now, 3.0, alive=(1, 2, 3, 4))
    assert not leader.stopped, leader.stopped
    assert removals(leader) == {1, 2}


def test_of_two_equal_choices_the_member_already_suspected_goes() -> None:
    # 4 accuses 2: the accuser goes when nothing else tells them apart...
    assert _greedy_cover({(4, 2)}, VIEW) == [4]
    # ...but removing 2, whom the leader suspects already, costs its majority nothing more.
    assert _greedy_cover({(4, 2)}, VIEW, frozenset({2})) == [2]
    # The number of cut links still comes first.
    assert _greedy_cover({(4, 2), (4, 3)}, VIEW, frozenset({2})) == [4]


# The cut links leader 0 knew of in partial-cut seed 30508: {1, 4, 5, 8, 10, 11, 12} cut from
# {2, 3, 6, 7, 9, 13, 14}, each member accusing only the ones it watches.
SPARSE_CUT = {
    (3, 1), (13, 1), (14, 1), (4, 13), (5, 13), (10, 13), (11, 13), (12, 13), (2, 4), (3, 4),
    (2, 5), (3, 5), (4, 6), (5, 6), (4, 7), (5, 7), (1, 2), (4, 2), (5, 2), (1, 3), (4, 3),
    (5, 3), (9, 10), (3, 10), (7, 10), (9, 11), (3, 11), (9, 12), (3, 12), (3, 8), (6, 8),
    (7, 8), (8, 9), (4, 9), (5, 9), (4, 14), (11, 14), (12, 14), (5, 14),
}  # fmt: skip
FIFTEEN = View(0, tuple(range(15)))


def covers(members: list[int], links: set[tuple[int, int]]) -> bool:
    return all(a in members or b in members for a, b in links)


def test_a_sparse_cut_is_covered_by_a_side_where_greedy_takes_members_of_both() -> None:
    greedy = _greedy_cover(SPARSE_CUT, FIFTEEN)
    assert covers(greedy, SPARSE_CUT) and len(greedy) == 9
    least = _least_cover(SPARSE_CUT, FIFTEEN)
    assert covers(least, SPARSE_CUT)
    assert set(least) in ({1, 4, 5, 8, 10, 11, 12}, {2, 3, 6, 7, 9, 13, 14}), least


def test_a_cover_no_smaller_than_greedys_is_greedys() -> None:
    """Greedy's preferences (the suspected, the slow, the accuser) choose between covers of
    one size; the search only ever replaces a larger cover."""
    assert _least_cover({(4, 2)}, VIEW) == [4]
    assert _least_cover({(4, 2)}, VIEW, frozenset({2})) == [2]
    assert _least_cover({(4, 2)}, VIEW, frozenset(), {(4, 2)}) == [2]


def test_the_search_for_a_smaller_cover_ends_on_a_large_graph() -> None:
    """Two hundred members cut from two hundred, each accusing its three ring predecessors on
    the far side: the search stops at its budget with a cover no larger than greedy's."""
    members = View(0, tuple(range(400)))
    links = {(a, 200 + (a + step) % 200) for a in range(200) for step in (1, 2, 3)}
    links |= {(200 + a, (a + step) % 200) for a in range(200) for step in (1, 2, 3)}
    least = _least_cover(links, members)
    assert covers(least, links)
    assert len(least) <= len(_greedy_cover(links, members))


def accused_by_4(heard_since: tuple[int, ...]) -> set[int]:
    """4 suspects 2, which answers the leader's probe (and everyone else): a one-way
    accusation. Returns whom the leader removes."""
    leader = ready_leader()
    leader.receive_row(4, follower_row(2, suspected=(2,), heard_since=heard_since), 0.55)
    run(leader, 0.5, 2.5, alive=(1, 2, 3, 4))
    assert not leader.stopped, leader.stopped
    return removals(leader)


def test_of_a_one_way_accusation_the_accuser_goes_unless_it_heard_the_accused_since() -> None:
    """An accused member that answers everyone while its accuser alone cannot hear it is the
    likelier to be fine: the accuser goes. But an accuser that has heard the accused again
    since (its row's ``heard_since``) has a working link to it: the accused was silent for a
    while, a stalled process, and goes as accused (membership seed 13813 removed the innocent
    watcher of a member that stalled 0.92 s). Each half fails if the rule is reversed."""
    assert accused_by_4(heard_since=()) == {4}
    assert accused_by_4(heard_since=(2,)) == {2}


def test_a_slow_link_weighs_less_than_more_cut_links() -> None:
    # 4 accuses 1, 2 and 3 and heard them all since: 4 is the one with the most cut links.
    links = {(4, 1), (4, 2), (4, 3)}
    assert _greedy_cover(links, VIEW, frozenset(), links) == [4]
    assert _greedy_cover({(4, 2)}, VIEW, frozenset(), {(4, 2)}) == [2]


def test_a_stall_that_would_cost_the_majority_asks_the_silent_before_blaming_them() -> None:
    """A leader blames the members a stalled step waits on, but when that would cost it its
    majority it first asks them to answer: not hearing a member is not silence (a bridge of
    a partial cut follows the other side's leader and sends this one nothing; partial-cut
    seed 4034). Seven members; 1 crashed; 4, 5 and 6, which the leader does not watch, send
    it nothing but answer when asked. Blaming them at once (the code before) would leave the
    leader suspecting four of seven, and it would stop: the planted twin below."""
    view = View(0, tuple(range(7)))
    leader = Membership(0, view, CONFIG, [], 0.0)
    for member in range(1, 7):
        leader.receive_row(member, follower_row(1), 0.1)
    now = 0.0
    while now < 2.9:
        now = round(now + CONFIG.heartbeat_interval, 6)
        for member in (2, 3) if now > 0.5 else range(1, 7):
            leader.heard_from(member, now)
        if leader.suspected == {1}:
            for member in (2, 3):  # they agree, and echo what the leader asks
                row = follower_row(2, suspected=(1,), leader_version=leader.version)
                leader.receive_row(member, row, now)
        leader.tick(now)
        leader.step(now)
        assert not leader.stopped, leader.stopped
    assert leader.suspected == {1}
    for member in (4, 5, 6):  # asked at the stall, they answer
        leader.heard_from(member, now + 0.05)
    run(leader, now, 3.5, alive=(2, 3, 4, 5, 6))
    assert not leader.stopped, leader.stopped
    assert leader.suspected == {1}


@pytest.mark.patches_compiled
def test_blaming_the_silent_at_once_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the leader blames them without asking (``Membership._unless_they_answer``
    returning them all). The partial-cut seeds that once caught this (4034 and the three
    like it) no longer do since the leader asks the members its cover keeps, whose answers
    settle those cuts first; this unit case still does."""
    monkeypatch.setattr(Membership, "_unless_they_answer", lambda self, blamed, now: blamed)
    with pytest.raises(AssertionError, match="no majority"):
        test_a_stall_that_would_cost_the_majority_asks_the_silent_before_blaming_them()


def stall_with_a_silent_kept_member(
    also_silent: tuple[int, ...] = (), outbox: Outbox | None = None
) -> tuple[Membership, float]:
    """Seven members; 1 crashed and 5 with it, unreported (both silent from 0.5 s); 2, 3 and 4
    agree that 1 is gone, and so did 6 once, silent since, as are ``also_silent``. The
    leader's step stalls on 5, the one member with no word on 1. Ticked to just past the
    stall timeout; returns the leader and the time it was ticked to."""
    view = View(0, tuple(range(7)))
    leader = Membership(0, view, CONFIG, [] if outbox is None else outbox, 0.0)
    for member in range(1, 7):
        leader.receive_row(member, follower_row(1), 0.1)
    talking = tuple(m for m in (2, 3, 4) if m not in also_silent)
    now, stalled_at = 0.0, None
    while stalled_at is None or now < stalled_at:
        now = round(now + CONFIG.heartbeat_interval, 6)
        for member in talking if now > 0.5 else range(1, 7):
            leader.heard_from(member, now)
        if leader.suspected == {1}:
            agreeing = (2, 3, 4, 6) if stalled_at is None else talking
            for member in agreeing:
                row = follower_row(2, suspected=(1,), leader_version=leader.version)
                leader.receive_row(member, row, now)
            if stalled_at is None:
                stalled_at = now + CONFIG.heartbeat_timeout + CONFIG.heartbeat_interval
        leader.tick(now)
        leader.step(now)
    return leader, now


def test_a_stall_that_leaves_the_majority_whoever_answers_is_blamed_at_once() -> None:
    """Blaming 5, and 6 too should it not answer, leaves the leader four of seven: no answer
    can change what it does, so it blames 5 at the stall timeout without asking 6 first
    (``Membership._stall_asks_the_kept``; asking at every stall held a change up until the
    followers blamed the leader: membership seed 12165's stalls profile, before the cut's
    settling on a resurfaced member also made that seed pass)."""
    leader, _ = stall_with_a_silent_kept_member()
    assert leader.suspected == {1, 5}
    assert not leader.stopped


@pytest.mark.patches_compiled
def test_asking_the_kept_members_at_every_stall_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the leader asks the members it keeps before blaming any stall: 5 is still
    unblamed at the stall timeout, while 6 is asked."""

    def always_ask(self: Membership, blamed: list[int], now: float) -> bool:
        return bool(blamed) and self._ask_the_kept(self._silent_kept(blamed, now), now)

    monkeypatch.setattr(Membership, "_stall_asks_the_kept", always_ask)
    with pytest.raises(AssertionError):
        test_a_stall_that_leaves_the_majority_whoever_answers_is_blamed_at_once()


def test_a_stall_that_could_cost_the_majority_asks_the_silent_kept_members_first() -> None:
    """With 4 silent too, blaming 5, and 4 and 6 should they not answer, would leave the
    leader three of seven: it asks 4 and 6 to answer before it blames anyone
    (``Membership._stall_asks_the_kept``): on the smaller side of a cut, those it would keep
    may be cut from it too, and it must stop before it proposes removing any of the other
    side, which a bridge would adopt (partial-cut seeds 23996 and 24254, whose stalls now
    reach the cover first, ``Membership._cover_weighs_stalls``). Once they answer, 5 is
    blamed."""
    outbox: Outbox = []
    leader, now = stall_with_a_silent_kept_member(also_silent=(4,), outbox=outbox)
    assert leader.suspected == {1}
    asked = {peer for peer, message in outbox if isinstance(message, Heartbeat) and message.probe}
    assert {4, 6} <= asked, asked
    run(leader, now, now + 0.2, alive=(2, 3, 4, 6))  # they answer
    assert leader.suspected == {1, 5}
    assert not leader.stopped, leader.stopped


@pytest.mark.patches_compiled
def test_blaming_a_stall_without_asking_the_kept_members_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Membership, "_stall_asks_the_kept", lambda *args: False)
    with pytest.raises(AssertionError):
        test_a_stall_that_could_cost_the_majority_asks_the_silent_kept_members_first()


def test_a_leader_asking_the_kept_beats_to_the_members_it_did_not_ask() -> None:
    """While it waits up to a timeout for the members it asked to answer, the leader sends
    nothing to the members that do not watch it (2 and 3 here), and followers that do not
    hear their leader blame it for the stall (partial cut with faults seed 10491: two
    crashed members asked one after the other). It beats to every member it neither suspects
    nor asked (``Membership._beat_to_the_unasked``)."""
    outbox: Outbox = []
    stall_with_a_silent_kept_member(also_silent=(4,), outbox=outbox)
    first_ask = next(i for i, (_, m) in enumerate(outbox) if isinstance(m, Heartbeat) and m.probe)
    since = outbox[first_ask:]
    asked = {peer for peer, m in since if isinstance(m, Heartbeat) and m.probe}
    beaten = {peer for peer, m in since if isinstance(m, Heartbeat) and not m.probe}
    assert {4, 6} <= asked, asked
    assert {2, 3} <= beaten, beaten  # the leader's own beats go to its watchers, 4, 5 and 6


@pytest.mark.patches_compiled
def test_asking_the_kept_in_silence_to_the_others_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Membership, "_beat_to_the_unasked", lambda self, asked: None)
    with pytest.raises(AssertionError):
        test_a_leader_asking_the_kept_beats_to_the_members_it_did_not_ask()


def test_a_member_reported_to_accuse_the_leader_that_it_does_not_hear_is_suspected() -> None:
    """A follower reports that 3 accuses the leader and that the leader answered it: 3 is cut
    from the leader, which has not heard it for half a timeout, and suspects it at once, so
    that its row asks every follower to probe 3 and the cover learns how far the cut runs
    (partial cut with faults seed 1887). 4, reported the same way but heard lately, is not
    suspected: its accusation may be of a stall."""
    leader = ready_leader()
    now = run(leader, 0.5, 1.1, alive=(1, 2, 4))
    leader.receive_row(1, follower_row(2, cut=((3, 0), (4, 0))), now)
    assert leader.suspected == {3}
    assert not leader.stopped, leader.stopped


@pytest.mark.patches_compiled
def test_ignoring_an_unheard_accuser_of_the_leader_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Membership, "_unheard", lambda self, member, now: False)
    with pytest.raises(AssertionError):
        test_a_member_reported_to_accuse_the_leader_that_it_does_not_hear_is_suspected()


def test_a_leader_on_the_smaller_side_steps_down_before_asking_a_silent_member() -> None:
    """3 and 4 are cut from the leader (a follower reports that they accuse it, and it does
    not hear them), and 2, which it would keep, falls silent at 1.0 s. Removing 3 and 4 costs
    two members, stepping down one: the leader steps down as soon as the cut settles, half a
    timeout after the report, rather than first wait a timeout for 2 to answer (partial cut
    with faults seed 591: meanwhile the far side blamed the bridge)."""
    leader = ready_leader()
    now = run(leader, 0.5, 1.0, alive=(1, 2))
    leader.receive_row(1, follower_row(2, cut=((3, 0), (4, 0))), now)
    assert leader.suspected == {3, 4}
    run(leader, now, 1.6, alive=(1,))
    assert "steps down" in leader.stopped, leader.stopped


@pytest.mark.patches_compiled
def test_asking_a_silent_member_before_stepping_down_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted: as before the fix, the leader asks the silent members it keeps first."""
    weigh = Membership._why_step_down

    def asking_first(self: Membership, going: int, sparing: list[int], beside: set[int]) -> str:
        now = self._last_tick  # the cover runs inside a tick
        if not self.final and self._ask_the_kept(self._silent_kept(sparing, now), now):
            return ""
        return weigh(self, going, sparing, beside)

    monkeypatch.setattr(Membership, "_why_step_down", asking_first)
    with pytest.raises(AssertionError, match="steps down"):
        test_a_leader_on_the_smaller_side_steps_down_before_asking_a_silent_member()


def test_only_decided_suspicions_carry_over_as_decided() -> None:
    """In view 0, 1 suspects 3, silent past the timeout, and 4, whose link broke. Leading view
    1, it proposes removing 4 at once, but weighs 3 again: a silence may be a cut link the last
    view never covered, and its successor on the smaller side of such a cut proposed removing
    the larger side at once (partial cut with faults seed 2389)."""
    old = Membership(1, VIEW, CONFIG, [], 0.0)
    now = 0.0
    while now < 1.6:
        now = round(now + CONFIG.heartbeat_interval, 6)
        for member in (0, 2, 3, 4) if now < 0.3 else (0, 2, 4):
            old.heard_from(member, now)
        old.tick(now)
    old.link_lost(4, now)
    assert old.suspected == {3, 4}
    view = View(1, (1, 2, 3, 4))
    leader = Membership(1, view, CONFIG, [], now, suspected=old.suspected, decided=old.decided)
    row = MembershipRow(epoch=1, version=1, suspected=(), leader=1, leader_version=0)
    leader.receive_row(2, row, now)
    leader.tick(now)
    leader.step(now)
    assert leader.leads
    assert removals(leader) == {4}


@pytest.mark.patches_compiled
def test_carrying_every_suspicion_over_as_decided_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Membership, "decided", property(lambda self: frozenset(self.suspected)))
    with pytest.raises(AssertionError):
        test_only_decided_suspicions_carry_over_as_decided()


def leader_of_a_final_join() -> tuple[Membership, float, int]:
    """The leader takes a join to final, every follower echoing it; returns it, the time and
    the followers' next row version."""
    leader = ready_leader()
    now, version = 0.5, 2
    leader.request_join(Change(5, ChangeKind.JOIN), now)
    while not leader.final:
        assert now < 3, "the join never went final"
        leader.step(now)
        for member in (1, 2, 3, 4):
            leader.receive_row(member, echo(leader, version, cleaned=False), now)
        version += 1
        now = run(leader, now, now + CONFIG.heartbeat_interval, alive=(1, 2, 3, 4))
    return leader, now, version


def final_leader_whose_cleanup_stalls(
    *,
    cleaned: tuple[int, ...],
    heard_after: tuple[int, ...],
    reported: tuple[tuple[int, int], ...] = (),
) -> Membership:
    """The leader takes a join to final, every follower echoing it; ``cleaned`` then clean up,
    say so and move on (the first of them reporting the cut links ``reported``), the others
    fall silent, and the leader hears only ``heard_after`` for three timeouts."""
    leader, now, version = leader_of_a_final_join()
    for member in cleaned:
        leader.receive_row(member, echo(leader, version, cleaned=True), now)
    if reported:
        leader.receive_row(cleaned[0], echo(leader, version + 1, cleaned=True, cut=reported), now)
    run(leader, now, now + 3 * CONFIG.heartbeat_timeout, alive=heard_after)
    return leader


def test_a_member_blamed_once_final_is_not_carried_over() -> None:
    """The leader takes a join to final; 1, 2 and 4 clean up and say so, 3 falls silent. The
    leader blames 3 for the stalled cleanup, on its word alone, since once final, hearing the
    members that moved on, it does not step down instead: the next view starts without that
    suspicion, neither decided nor as an accusation (``Membership.carried``; partial cut with
    faults seeds 13981 and 8688, where that suspicion carried over removed members no fault
    touched)."""
    leader = final_leader_whose_cleanup_stalls(cleaned=(1, 2, 4), heard_after=(1, 2, 4))
    assert leader.suspected == {3}
    assert not leader.carried and not leader.decided


def echo(
    leader: Membership, version: int, *, cleaned: bool, cut: tuple[tuple[int, int], ...] = ()
) -> MembershipRow:
    """A follower's row that echoes everything ``leader`` holds."""
    return follower_row(
        version,
        leader_version=leader.version,
        changes=leader.changes,
        committed=leader.committed,
        final=leader.final,
        cleaned=cleaned,
        cut=cut,
    )


@pytest.mark.patches_compiled
def test_carrying_a_member_blamed_once_final_over_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Membership, "carried", property(lambda self: frozenset(self.suspected)))
    with pytest.raises(AssertionError):
        test_a_member_blamed_once_final_is_not_carried_over()


def test_a_final_leader_cut_from_members_that_accuse_it_steps_down() -> None:
    """Once final, the leader's cleanup waits on 3 and 4, which it no longer hears, and 1
    reports that both accuse it: they are alive and cut from it, not paused, and of
    excluding two and stepping down it steps down (``Membership._may_step_down``; partial
    cut with faults seeds 31025 and 31027)."""
    leader = final_leader_whose_cleanup_stalls(
        cleaned=(1, 2), heard_after=(1, 2), reported=((3, 0), (4, 0))
    )
    assert "steps down" in leader.stopped, leader.stopped


def test_a_final_leader_cut_only_from_silent_members_stays() -> None:
    """The same without the report: nothing says 3 and 4 are alive, and the leader excludes
    them rather than take itself from the next view (typed seed 30672)."""
    leader = final_leader_whose_cleanup_stalls(cleaned=(1, 2), heard_after=(1, 2))
    assert not leader.stopped
    assert {c.node for c in leader.changes if c.kind is ChangeKind.EXCLUDE} == {3, 4}


@pytest.mark.patches_compiled
def test_never_stepping_down_once_final_is_caught_by_the_unit_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Membership, "_may_step_down", lambda self, links, now: not self.final)
    with pytest.raises(AssertionError):
        test_a_final_leader_cut_from_members_that_accuse_it_steps_down()


def follower_of_a_final_that_excludes(
    member: int, *, link_broke: bool = False, silent_first: bool = False
) -> Membership:
    """Member 1 follows the leader 0, which takes a join of 5 to final and then excludes
    ``member`` from the stalled cleanup. Before the exclusion reaches 1, its own link to
    ``member`` broke when ``link_broke``, and 1 suspected ``member`` on its own (a silence,
    say) when ``silent_first``."""
    follower = Membership(1, VIEW, CONFIG, [], 0.0)
    run(follower, 0.0, 0.5, alive=(0, 2, 3, 4))
    if link_broke:
        follower.link_lost(member, 0.5)
    join = Change(5, ChangeKind.JOIN)
    follower.receive_row(0, follower_row(1, changes=(join,), committed=1, final=1), 0.6)
    assert follower.final == 1
    if silent_first:
        follower.suspect(member, 0.65, local=True)
    changes = (join, Change(member, ChangeKind.EXCLUDE))
    follower.receive_row(0, follower_row(2, changes=changes, committed=2, final=2), 0.7)
    assert follower.excluded == {member} and member in follower.suspected
    return follower


def test_a_follower_does_not_carry_an_exclusion_over() -> None:
    """The final keeps an excluded member in the next view, and the leader's word that its
    cleanup stalled is no evidence there: a follower that adopted the exclusion starts the
    next view without suspecting it (``Membership.carried``; membership seed 11101, where two
    followers carried three exclusions over as accusations and the cover there removed the
    two, which no fault touched)."""
    assert 3 not in follower_of_a_final_that_excludes(3).carried


def test_a_follower_carries_an_excluded_member_whose_link_broke_over() -> None:
    """Its own broken link is evidence of its own, exclusion or not: it carries over."""
    follower = follower_of_a_final_that_excludes(3, link_broke=True)
    assert 3 in follower.carried and 3 in follower.decided


def test_a_follower_carries_a_member_it_suspected_before_its_exclusion_over() -> None:
    """A member the follower suspected on its own before the exclusion (a silence, say)
    carries over as before, an accusation: on a partial cut that suspicion is the cut, and
    the next view needs it (partial cut with faults seed 20696, which leaving out every
    exclusion failed)."""
    follower = follower_of_a_final_that_excludes(3, silent_first=True)
    assert 3 in follower.carried and 3 not in follower.decided


@pytest.mark.patches_compiled
@pytest.mark.parametrize("planted", ["every exclusion left out", "every exclusion carried"])
def test_a_wrong_rule_on_exclusions_is_caught(
    monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    """Planted: the first version, which left out every suspicion of an excluded member, and
    the rule before it, which carried them all over."""
    if planted == "every exclusion left out":
        rule, case = (
            "excluded",
            test_a_follower_carries_a_member_it_suspected_before_its_exclusion_over,
        )
    else:
        rule, case = "_decided_once_final", test_a_follower_does_not_carry_an_exclusion_over
    monkeypatch.setattr(
        Membership,
        "carried",
        property(lambda self: frozenset(self.suspected.difference(getattr(self, rule)))),
    )
    with pytest.raises(AssertionError):
        case()


def test_a_cut_link_naming_a_stranger_does_not_move_the_leader() -> None:
    """A row is a peer's word, and a link to a member outside the view is malformed: the
    leader suspects nobody for it."""
    leader = ready_leader()
    now = run(leader, 0.5, 1.1, alive=(1, 2, 3, 4))
    leader.receive_row(1, follower_row(2, cut=((99, 0),)), now)
    run(leader, now, 2.5, alive=(1, 2, 3, 4))
    assert not leader.suspected and not leader.stopped, leader.stopped


def final_leader_whose_survivor_waits_on_a_member_that_moved_on() -> Membership:
    """The leader takes a join to final; 1 and 2 clean up and say so, so they moved on to
    the next view; 4, whose shard's cleanup waits on 1 (1's row saying it applied the
    decision never reached 4: 1 crashed just after), accuses 1, and 1 answers no probe."""
    leader, now, version = leader_of_a_final_join()
    for member in (1, 2):
        leader.receive_row(member, echo(leader, version, cleaned=True), now)
    accusation = follower_row(
        version + 1,
        suspected=(1,),
        leader_version=leader.version,
        changes=leader.changes,
        committed=leader.committed,
        final=leader.final,
    )
    leader.receive_row(4, accusation, now)
    run(leader, now, now + CONFIG.heartbeat_timeout / 2, alive=(2, 3, 4))
    return leader


def test_a_member_that_moved_on_and_answers_no_probe_is_excluded() -> None:
    """Only the change's leader may leave a survivor out of a cleanup, and a suspicion of a
    member that moved on counts for nothing (its view is the next one): so the leader
    excludes it itself once a survivor still cleaning up accuses it and it answers no probe
    (Paxos seed 15712: without it, 3 waited for good on its shard's leader 2, which had
    moved on and crashed)."""
    leader = final_leader_whose_survivor_waits_on_a_member_that_moved_on()
    assert Change(1, ChangeKind.EXCLUDE) in leader.changes


@pytest.mark.patches_compiled
def test_waiting_on_a_member_that_moved_on_and_crashed_is_caught_by_the_unit_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Planted: the leader never notes that such a member has gone silent."""

    class Deaf(set[int]):
        def add(self, member: int) -> None:
            pass

    original = Membership.__init__

    def init(self: Membership, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._gone_silent = Deaf()

    monkeypatch.setattr(Membership, "__init__", init)
    leader = final_leader_whose_survivor_waits_on_a_member_that_moved_on()
    assert all(c.kind is not ChangeKind.EXCLUDE for c in leader.changes)
