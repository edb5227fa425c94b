"""Failure detection on a starved machine: a member's own lateness is not its peers' silence.

A member's timer is due every heartbeat interval. When its loop runs late (a starved CPU, a
pause shorter than the timeout), the peers' frames of that time wait unread behind the late
tick; counting that delay as their silence is how one slow member used to suspect live ones,
and every member adopts a suspicion. These tests drive :class:`Membership` directly with the
clock a late loop would show it.
"""

from __future__ import annotations

from pyderecho.core.config import CoreConfig
from pyderecho.core.membership import Membership
from pyderecho.core.view import View

CONFIG = CoreConfig(heartbeat_interval=0.1, heartbeat_timeout=1.0)
VIEW = View(0, (0, 1, 2, 3, 4))


def watcher() -> Membership:
    membership = Membership(0, VIEW, CONFIG, [], 0.0)
    assert membership.watched == [1, 2, 3]
    return membership


def test_a_late_tick_does_not_suspect_peers_whose_frames_wait_behind_it() -> None:
    membership = watcher()
    now = 0.0
    for step in range(1, 21):
        now = step * 0.1
        for peer in (1, 2, 3, 4):
            membership.heard_from(peer, now - 0.05)  # frames arrive between ticks
        membership.tick(now)
    # The loop stalls for just under a timeout: the next tick comes 0.98 s after the last,
    # before the frames the peers sent meanwhile are read.
    membership.tick(now + 0.98)
    assert membership.suspected == set()
    assert not membership.stopped


def test_a_crash_is_still_found_within_two_timeouts_while_every_tick_is_late() -> None:
    for tick_every in (0.1, 0.5, 0.8):
        membership = watcher()
        crash_at, now = 1.0, 0.0
        while not membership.suspected and now < 10.0:
            now += tick_every
            for peer in (1, 2, 3, 4):
                if peer != 2 or now < crash_at:
                    membership.heard_from(peer, now)
            membership.tick(now)
        assert membership.suspected == {2}, tick_every
        assert now - crash_at <= 2 * CONFIG.heartbeat_timeout, (tick_every, now)


def test_a_member_paused_past_the_timeout_blames_nobody_for_its_own_pause() -> None:
    membership = watcher()
    for step in range(1, 11):
        for peer in (1, 2, 3, 4):
            membership.heard_from(peer, step * 0.1)
        membership.tick(step * 0.1)
    membership.tick(1.0 + 2.5)  # SIGSTOP for 2.5 timeouts
    assert membership.suspected == set()
    # Its peers stay silent after it resumed: then they are suspected, a timeout later.
    now = 3.5
    while not membership.suspected:
        now += 0.1
        membership.tick(now)
    assert membership.suspected and now - 3.5 <= 1.1 * CONFIG.heartbeat_timeout
