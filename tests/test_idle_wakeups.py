"""An idle group's heartbeats cost no flush.

In a quiet view (no change, suspicion, accusation or probe under way) a heartbeat a member
receives enables no protocol step, only moves a silence clock, so the driver owes no
end-of-turn flush for it (:attr:`Node.flush_due`); any other frame, or any heartbeat while
something is under way, does. These tests drive :class:`Node` directly.
"""

from __future__ import annotations

from pyderecho.core.config import CoreConfig
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.membership import next_beat_after
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.wire import Data, Heartbeat

CONFIG = CoreConfig(heartbeat_interval=0.1, heartbeat_timeout=1.0)
VIEW = View(0, (0, 1, 2, 3, 4))


def node(me: NodeId = 1, now: float = 0.0) -> Node:
    member = Node(me, VIEW, layout_of({"Log": every_member(Mode.ORDERED)}), CONFIG, now=now)
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


def beat_times(member: Node, start: float, until: float) -> list[float]:
    """Drive ``member``'s ticks from ``start``, each at the deadline it asks for; the times at
    which it queued heartbeats."""
    times: list[float] = []
    now = start
    while now < until:
        member.tick(now)
        if any(isinstance(message, Heartbeat) for _, message in member.outbox()):
            times.append(now)
        deadline = member.next_deadline()
        assert deadline is not None
        assert deadline > now, "a tick must not ask for another one at once"
        now = deadline
    return times


def test_next_beat_after_is_on_the_grid_and_at_least_half_an_interval_away() -> None:
    interval = 0.1
    for now in (0.0, 0.04, 0.05, 0.0999, 0.1, 0.1009, 12.3, 12.4 - 1e-12, 12.399, 1e6 + 0.07):
        due = next_beat_after(now, interval)
        assert interval / 2 <= due - now <= 1.5 * interval + 1e-9
        assert abs(due / interval - round(due / interval)) < 1e-6


def test_members_started_apart_beat_at_the_same_instants() -> None:
    # One monotonic clock per host: members beat on the same grid whenever they started,
    # so each takes its watched members' beats in the turn it wakes for its own.
    first = beat_times(node(0), 0.0, 3.0)
    second = beat_times(node(1, now=0.037), 0.037, 3.0)
    on_grid = [t for t in first if t >= 0.2]
    assert on_grid == [t for t in second if t >= 0.2]
    assert all(abs(t / 0.1 - round(t / 0.1)) < 1e-6 for t in on_grid)
    assert len(on_grid) == 28


def test_a_timer_firing_a_millisecond_early_costs_no_second_wakeup() -> None:
    # libuv keeps time in whole milliseconds: a tick a little short of its beat still beats,
    # and the next deadline is a whole interval on, so every tick sends a beat.
    member = node()
    ticks: list[float] = []
    now = 0.0
    while now < 2.0:
        member.tick(now)
        beat = any(isinstance(message, Heartbeat) for _, message in member.outbox())
        ticks.append(now)
        assert beat, f"the tick at {now} sent no beat: a wakeup for nothing"
        now = member.next_deadline() - 0.0009  # type: ignore[operator]
    assert 19 <= len(ticks) <= 21
