"""An idle group costs what its heartbeats cost, and no more.

In a quiet view (no change, suspicion, accusation or probe under way) a member's timer is due
at its next heartbeat or when a watched member's silence passes the timeout, whichever comes
first; a heartbeat it receives enables no protocol step, so the driver owes no flush for it.
Once anything is under way, ticks come at least every tenth of the timeout again, however
seldom heartbeats go out. These tests drive :class:`Membership` and :class:`Node` with the
clock a driver would show them.
"""

from __future__ import annotations

import itertools

import pytest

from pyderecho.core.config import CoreConfig
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.membership import Membership
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.wire import Data, Heartbeat

CONFIG = CoreConfig(heartbeat_interval=0.25, heartbeat_timeout=1.0)
VIEW = View(0, (0, 1, 2, 3, 4))
BEAT_OFFSET = 0.1
"""The peers' heartbeats arrive this long after each of the watcher's own."""


def drive(
    membership: Membership, until: float, crashed: tuple[NodeId, float] | None = None
) -> list[float]:
    """Let the peers' heartbeats arrive every interval and tick only when the membership asks
    to (:meth:`Membership.next_deadline`), until ``until`` or a suspicion; returns the ticks.
    ``crashed``: that member sends nothing from that time on."""
    interval = CONFIG.heartbeat_interval
    beats = [k * interval + BEAT_OFFSET for k in range(int(until / interval) + 1)]
    ticks: list[float] = []
    while not membership.suspected:
        deadline = membership.next_deadline()
        if beats and beats[0] < deadline:
            at = beats.pop(0)
            for peer in VIEW.members[1:]:
                if crashed is None or peer != crashed[0] or at < crashed[1]:
                    membership.heard_from(peer, at)
            continue
        if deadline > until:
            break
        membership.tick(deadline)
        ticks.append(deadline)
    return ticks


def test_a_quiet_member_wakes_once_a_heartbeat_interval() -> None:
    membership = Membership(0, VIEW, CONFIG, [], 0.0)
    ticks = drive(membership, 10.0)
    assert membership.quiet and membership.suspected == set()
    assert len(ticks) == 41, ticks  # 0.0, 0.25, ..., 10.0
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert gaps == {CONFIG.heartbeat_interval}


def test_a_silent_member_is_suspected_as_its_timeout_passes_not_at_the_next_beat() -> None:
    membership = Membership(0, VIEW, CONFIG, [], 0.0)
    ticks = drive(membership, 10.0, crashed=(2, 3.0))
    last_frame = 2 * 1.0 + 3 * CONFIG.heartbeat_interval + BEAT_OFFSET  # 2.85
    assert membership.suspected == {2}
    assert ticks[-1] == pytest.approx(last_frame + CONFIG.heartbeat_timeout)


def test_ticks_come_every_tenth_of_the_timeout_while_a_suspicion_is_under_way() -> None:
    membership = Membership(0, VIEW, CONFIG, [], 0.0)
    drive(membership, 1.0)
    membership.suspect(3, 1.0, local=True)
    assert not membership.quiet
    for _ in range(5):
        last = membership.next_deadline()
        membership.tick(last)
        if membership.stopped:
            break
        assert membership.next_deadline() - last <= CONFIG.heartbeat_timeout / 10 + 1e-9


def node(me: NodeId = 1) -> Node:
    member = Node(me, VIEW, layout_of({"Log": every_member(Mode.ORDERED)}), CONFIG, now=0.0)
    member.outbox()
    member.events()
    return member


def test_a_heartbeat_of_a_quiet_view_owes_no_flush_but_any_other_frame_does() -> None:
    member = node()
    member.receive(0, Heartbeat(0), 0.1, flush=False)
    assert not member.flush_due
    sender = node(0)
    sender.send(0, b"m", 0.1)
    data = next(m for dst, m in sender.outbox() if dst == 1 and isinstance(m, Data))
    member.receive(0, data, 0.2, flush=False)
    assert member.flush_due
    member.flush(0.2)
    assert not member.flush_due


def test_a_heartbeat_owes_a_flush_once_a_suspicion_is_under_way() -> None:
    member = node()
    member.report_failure(3, 0.1)
    member.outbox()
    member.flush(0.1)
    member.receive(0, Heartbeat(0), 0.2, flush=False)
    assert member.flush_due


def test_a_probe_is_answered_without_waiting_for_a_flush() -> None:
    member = node()
    member.receive(0, Heartbeat(0, probe=True), 0.1, flush=False)
    assert (0, Heartbeat(0)) in member.outbox()
