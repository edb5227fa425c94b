"""The leader's choice of whom to remove, driven directly on :class:`Membership`.

A leader proposes a removal once its followers agree, or once it chose the member to cover the
cut links it knows of (``_cover``); it steps down when it is the cheaper one to remove. These
tests pin the cases a starved machine and a crash bring: a broken link needs no agreement, a
member the leader suspected but hears again is slow rather than cut off from it, and of two
equal choices the member the leader suspects already goes.
"""

from __future__ import annotations

from pyderecho.core.config import CoreConfig
from pyderecho.core.membership import Membership, _greedy_cover
from pyderecho.core.multicast import Outbox
from pyderecho.core.view import View
from pyderecho.wire import ChangeKind, MembershipRow

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


def follower_row(version: int, *, cut: tuple[tuple[int, int], ...] = ()) -> MembershipRow:
    return MembershipRow(
        epoch=0, version=version, suspected=(), leader=0, leader_version=0, cut=cut
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
