"""The leader's step on a quiet view costs the same whatever the view's size.

The leader of a view takes a step of the change protocol at every frame it handles and every
tick. With nothing proposed, suspected, leaving or joining there is nothing to weigh, yet the
step used to walk the view's members three times over (whom it counts on, what to propose,
whom it suspects but has not proposed): a leader of 64 spent two thirds of an idle tick
there. These tests count the walks over the view's member list with a tuple that counts its
iterations, and check that a suspicion the group shares and a leave still reach the proposal.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyderecho.core.config import CoreConfig
from pyderecho.core.membership import Membership
from pyderecho.core.view import NodeId, View
from pyderecho.wire import ChangeKind, MembershipRow

CONFIG = CoreConfig(heartbeat_interval=0.1, heartbeat_timeout=1.0)
MEMBERS = 64


class CountedMembers(tuple[NodeId, ...]):
    """A view's member list that counts how often it is walked."""

    walks = 0

    def __iter__(self) -> Iterator[NodeId]:
        CountedMembers.walks += 1
        return super().__iter__()


def quiet_ticks(leader: Membership, now: float, ticks: int) -> float:
    """``ticks`` heartbeat intervals in which the leader hears every member it watches."""
    for _ in range(ticks):
        now += CONFIG.heartbeat_interval
        for member in leader.watched:
            leader.heard_from(member, now)
        leader.tick(now)
        leader.step(now)
    return now


def quiet_leader() -> tuple[Membership, float]:
    """The leader of a view of ``MEMBERS``, a second into a quiet view: every member heard."""
    leader = Membership(0, View(0, CountedMembers(range(MEMBERS))), CONFIG, [], 0.0)
    return leader, quiet_ticks(leader, 0.0, 10)


# The tuple's own iteration is what the Python build walks; the compiled core reads a tuple's
# items directly and would count nothing.
@pytest.mark.patches_compiled
def test_a_quiet_leaders_steps_walk_no_member_list() -> None:
    leader, now = quiet_leader()
    CountedMembers.walks = 0
    quiet_ticks(leader, now, 50)
    assert CountedMembers.walks == 0
    assert leader.changes == () and not leader.suspected


@pytest.mark.patches_compiled
def test_planted_the_counter_sees_a_walk() -> None:
    """The count bites: a step that looks for suspects the long way walks the list."""
    leader, _ = quiet_leader()
    CountedMembers.walks = 0
    assert [m for m in leader.view.members if m in leader.suspected] == []
    assert CountedMembers.walks == 1


def proposed(leader: Membership) -> set[tuple[NodeId, ChangeKind]]:
    return {(change.node, change.kind) for change in leader.changes}


def test_a_suspicion_every_member_shares_reaches_the_proposal() -> None:
    leader, now = quiet_leader()
    leader.suspect(7, now, local=True)
    leader.step(now)
    assert proposed(leader) == set()  # its own suspicion alone is not the group's
    for member in range(1, MEMBERS):
        if member != 7:
            row = MembershipRow(epoch=0, version=1, suspected=(7,), leader=0, leader_version=0)
            leader.receive_row(member, row, now)
    leader.step(now)
    assert proposed(leader) == {(7, ChangeKind.REMOVE)}


def test_a_members_leave_and_the_leaders_own_reach_the_proposal() -> None:
    leader, now = quiet_leader()
    row = MembershipRow(epoch=0, version=1, suspected=(), leader=0, leader_version=0, leaving=True)
    leader.receive_row(9, row, now)
    leader.step(now)
    assert proposed(leader) == {(9, ChangeKind.LEAVE)}
    leaving, now = quiet_leader()
    leaving.request_leave(now)
    leaving.step(now)
    assert proposed(leaving) == {(0, ChangeKind.LEAVE)}
