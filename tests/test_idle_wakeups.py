"""An idle group's heartbeats cost no flush.

In a quiet view (no change, suspicion, accusation or probe under way) a heartbeat a member
receives enables no protocol step, only moves a silence clock, so the driver owes no
end-of-turn flush for it (:attr:`Node.flush_due`); any other frame, or any heartbeat while
something is under way, does. And beats fall due on a grid of the interval, so that members on
one host tick together. These tests drive :class:`Node` directly.
"""

from __future__ import annotations

import math
import random

from pyderecho.core.config import CoreConfig
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.wire import Data, Heartbeat

CONFIG = CoreConfig(heartbeat_interval=0.1, heartbeat_timeout=1.0)
VIEW = View(0, (0, 1, 2, 3, 4))


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
    assert (0, Heartbeat(0, answer=True)) in member.outbox()


def on_grid(time: float, interval: float) -> bool:
    return abs(time / interval - round(time / interval)) < 1e-6


def test_beats_fall_due_on_the_grid_of_the_interval_whatever_a_members_phase() -> None:
    """Members that started at different moments, and tick late by different amounts, beat at
    the same multiples of the interval: on one host each wakes for its tick to find the beats
    of the others waiting, instead of once more for each."""
    rng = random.Random(7)
    interval = CONFIG.heartbeat_interval
    for start in (0.0, 0.0137, 0.0999):
        member = Node(1, VIEW, layout_of({"Log": every_member(Mode.ORDERED)}), CONFIG, now=start)
        deadlines = []
        for _ in range(20):
            deadline = member.next_deadline()
            assert deadline is not None
            deadlines.append(deadline)
            member.tick(deadline + rng.uniform(0.0, 0.6 * interval))  # a tick runs late
            beats = [m for _, m in member.outbox() if isinstance(m, Heartbeat) and m.periodic]
            assert beats, "every tick at or past a multiple of the interval beats"
        assert all(on_grid(d, interval) for d in deadlines[1:]), deadlines


def test_a_tick_on_a_multiple_that_the_division_rounds_below_moves_on() -> None:
    """``k * interval / interval`` can come out just below ``k``: the next beat must still be
    due after this tick, not at it (the driver would tick again at once, for ever)."""
    interval = CONFIG.heartbeat_interval
    k = next(k for k in range(1, 1000) if math.floor(k * interval / interval) < k)
    now = k * interval
    member = node()
    member.tick(now)
    deadline = member.next_deadline()
    assert deadline is not None
    assert now < deadline <= now + interval
    assert on_grid(deadline, interval)
