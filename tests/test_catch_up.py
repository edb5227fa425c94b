"""A member back while the group runs catches up from the state its own logs rebuilt.

The object layer alone, driven by hand (sans-IO), as in tests/test_state_checksum.py. Members
0 and 1 hold a ``Paxos`` shard and apply forty puts; member 2 comes back with the state its
logs rebuilt at the thirty-fourth, and joins. It asks the old members for only the updates after it;
one that keeps them (``catch_up_bytes``), with the sixth update being the one member 2's state
ends with, sends those six instead of the state. Otherwise (the updates are no longer kept, or
its history holds another update there) it sends the whole state, as to any joiner. Either way
member 2 ends with the same state as the others, which the digests compare.
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from object_hosts import KEY, Members
from pyderecho.core.layout import Mode
from pyderecho.core.view import View
from pyderecho.replicated import host as host_module
from pyderecho.replicated.events import ReadLog, SaveState, StateDigest, StateReceived
from pyderecho.replicated.messages import CaughtUpdate
from pyderecho.replicated.recovery import Rebuilt
from pyderecho.sim.swarm import KV

PUTS = 40
HELD = 34


def kv_after(puts: int) -> KV:
    """The replica after the first ``puts`` of the scenario, as member 2's logs rebuild it."""
    kv = KV()
    for index in range(1, puts + 1):
        kv.put(f"k{index}", index)
    return kv


def back_with(
    members: Members,
    *,
    held_at: int = HELD,
    held: KV | None = None,
    last: tuple[int, int] = (0, 0),
    logs_from: int = 0,
) -> Members:
    """The scenario, run until member 2 joined and every message was routed: member 2's
    state holds the first ``held_at`` puts (``held``: the state it rebuilt, by default the
    right one), ``last`` is what it says the last update its state holds was (its sender
    and timestamp: 0 called every put, at timestamp 0), and compaction cut the old members'
    logs before their ``logs_from``-th record."""
    state = kv_after(held_at) if held is None else held
    members.hosts[2].restart({KEY: Rebuilt(state, (1, held_at), held_at, 0, 0, last)})
    members.install(View(1, (0, 1)))
    members.route()
    for index in range(1, PUTS + 1):
        members.call(0, 1, index, (0, 1), key="k")
    members.route()
    for member in (0, 1):
        members.logs[member] = members.logs[member][logs_from:]
    members.install(View(2, (0, 1, 2), joined=(2,)))
    members.route()
    return members


def back_after_six(
    last: tuple[int, int] = (0, 0), held: KV | None = None, **host_options: Any
) -> Members:
    """The scenario, run to its end, member 2 back with its state at the thirty-fourth put."""
    members = Members(3, Mode.PAXOS, record_digests=True, **host_options)
    return back_with(members, held=held, last=last)


def digests(members: Members, member: int, kind: str) -> list[tuple[Any, str]]:
    return [(d.position, d.digest) for d in members.reported(member, StateDigest) if d.kind == kind]


def assert_caught_up_with_the_others(members: Members) -> StateReceived:
    """Member 2 holds the others' state: after the last put of view 1 (caught up, or a
    whole state sent once the cut was passed), or at the start of view 2 (a whole state,
    snapshotted at the view's cut): the same state."""
    [received] = members.reported(2, StateReceived)
    assert isinstance(received, StateReceived)
    assert received.position in ([(1, PUTS)] if received.caught_up else [(1, PUTS), (2, 0)])
    [(position, installed)] = digests(members, 2, "received")
    assert position == received.position
    sent = digests(members, 0, "sent") + digests(members, 1, "sent")
    assert (position, installed) in sent, "the state 2 installed is one an old member sent"
    replicas = [members.hosts[m].replica("KV") for m in range(3)]
    assert replicas[2].history == replicas[0].history == kv_after(PUTS).history
    [saved] = members.reported(2, SaveState)
    assert saved.position == position, "the member's directory starts from the state it holds"
    return received


def test_a_member_back_with_its_own_state_is_sent_only_the_updates_after_it() -> None:
    members = back_after_six()
    received = assert_caught_up_with_the_others(members)
    assert received.caught_up and received.source == 0
    assert members.hosts[0].stats["catch_up_sent"] == 1
    whole = back_after_six(catch_up_bytes=0)
    [state] = whole.reported(2, StateReceived)
    assert received.size < state.size / 2, "six updates, not the whole state"


def test_a_member_whose_logs_end_with_another_update_there_gets_the_whole_state() -> None:
    """Member 2 says its sixth update came from member 1; in 0's history 0 sent it. The
    updates after it would be applied to another history's state: 0 sends its state."""
    members = back_after_six(last=(1, 0))
    received = assert_caught_up_with_the_others(members)
    assert not received.caught_up
    assert members.hosts[0].stats["catch_up_mismatch"] == 1


def test_a_member_back_after_the_updates_it_lacks_were_dropped_gets_the_whole_state() -> None:
    """The old members keep less than one update's worth: those after member 2's state are
    gone."""
    members = back_after_six(catch_up_bytes=64)
    received = assert_caught_up_with_the_others(members)
    assert not received.caught_up
    assert members.hosts[0].stats["catch_up_not_kept"] == 1


def test_updates_that_skip_one_are_refused_and_the_next_old_member_asked() -> None:
    """Member 0 sends updates that leave the eighth out: the positions jump from the
    seventh to the ninth, so member 2 refuses them (it could not tell a view's last delivery
    left out, only one inside a view) and asks member 1, which sends them all."""
    members = Members(3, Mode.PAXOS, record_digests=True)
    real = members.hosts[0]._updates_after

    def one_short(*args: Any) -> Any:
        updates = real(*args)
        assert not isinstance(updates, ReadLog), "memory keeps them: no log is read"
        return [u for u in updates if (u.epoch, u.number) != (1, HELD + 2)] if updates else None

    members.hosts[0]._updates_after = one_short  # type: ignore[method-assign,assignment]
    back_with(members)
    received = assert_caught_up_with_the_others(members)
    assert received.caught_up and received.source == 1, "member 1 sent the updates"
    assert members.hosts[2].stats["state_rejected"] == 1


def with_a_hole() -> KV:
    """What member 2's disk can rebuild after a second total crash: its own older snapshot
    and records logged after a state it received, whose snapshot never reached the disk. It
    claims the thirty-fourth position but lacks two updates before the last two."""
    kv = kv_after(HELD - 4)
    for index in (HELD - 1, HELD):
        kv.put(f"k{index}", index)
    return kv


def test_a_member_whose_state_lacks_updates_before_its_position_gets_the_whole_state() -> None:
    """Paxos seed 12437: the updates come with the checksum of the state they lead to, and
    member 2's does not reach it: it drops the state it held and takes 0's whole state."""
    members = back_after_six(held=with_a_hole())
    received = assert_caught_up_with_the_others(members)
    assert not received.caught_up and received.source == 0
    assert members.hosts[2].stats["catch_up_diverged"] == 1


def test_catching_up_without_the_state_checksum_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: every CRC32C reads 0, so member 2 takes the updates onto the state with the
    hole, and holds another state than the others at the same position."""
    monkeypatch.setattr(host_module, "crc32c", types.SimpleNamespace(crc32c=lambda *_: 0))
    members = back_after_six(held=with_a_hole())
    with pytest.raises(AssertionError):
        assert_caught_up_with_the_others(members)
    [received] = members.reported(2, StateReceived)
    assert received.caught_up


@pytest.mark.parametrize("logged_ahead", [0, 2], ids=["log at the state", "log ahead"])
def test_a_member_back_after_memory_dropped_the_updates_is_sent_them_from_the_log(
    logged_ahead: int,
) -> None:
    """The old members keep less than one update in memory, but their logs still hold the
    updates after member 2's state: member 0 reads them back and sends those six. A log runs
    ahead of delivery (a Paxos shard logs an update before it delivers it): what it holds
    past member 0's state is not sent."""
    members = Members(3, Mode.PAXOS, record_digests=True, catch_up_bytes=64, reads_logs=True)
    ahead = [CaughtUpdate(2, n, 0, 0, b"logged, not delivered") for n in range(1, logged_ahead + 1)]
    real = members.read_log

    def read_ahead(member: int, read: Any) -> Any:
        records = real(member, read)
        return None if records is None else records + ahead

    members.read_log = read_ahead  # type: ignore[method-assign]
    back_with(members)
    received = assert_caught_up_with_the_others(members)
    assert received.caught_up and received.source == 0
    stats = members.hosts[0].stats
    assert stats["catch_up_log_reads"] == 1 and stats["catch_up_from_log"] == 1
    whole = back_after_six(catch_up_bytes=64)
    [state] = whole.reported(2, StateReceived)
    assert received.size < state.size / 2, "six updates, not the whole state"


def test_the_log_read_back_and_the_updates_delivered_meanwhile_are_sent_together() -> None:
    """Member 0's log is read as member 2 asks, up to the fortieth put; three more are
    delivered in view 2 before the read comes back, and memory keeps only the last few.
    Member 0 sends the log's six and memory's three, and member 2 ends where 0 is."""
    members = Members(3, Mode.PAXOS, record_digests=True, catch_up_bytes=1300, reads_logs=True)
    members.hold_reads = True
    back_with(members)
    assert [member for member, _, _ in members.reads] == [0], "member 0 reads its log"
    for index in range(1, 4):
        members.call(0, 2, index, (0, 1, 2), key="v")
    assert len(members.hosts[0]._replicas[KEY].tail) < PUTS - HELD, "memory lacks the six"
    members.hand_over_reads()
    members.route()
    [received] = members.reported(2, StateReceived)
    assert received.caught_up and received.position == (2, 3)
    assert members.hosts[0].stats["catch_up_from_log"] == 1
    replicas = [members.hosts[m].replica("KV") for m in range(3)]
    assert replicas[2].history == replicas[0].history == replicas[1].history
    assert len(replicas[2].history) == PUTS + 3


def test_a_log_that_no_longer_holds_the_members_update_gives_the_whole_state() -> None:
    """Compaction cut the old members' logs after member 2's last update: the read finds
    nothing to start from, and member 0 sends its state."""
    members = Members(3, Mode.PAXOS, record_digests=True, catch_up_bytes=64, reads_logs=True)
    back_with(members, logs_from=HELD + 1)
    received = assert_caught_up_with_the_others(members)
    assert not received.caught_up
    stats = members.hosts[0].stats
    assert stats["catch_up_log_reads"] == 1 and stats["catch_up_not_kept"] == 1


def test_updates_read_back_that_cost_more_than_the_state_are_not_sent() -> None:
    """Member 2 comes back with its state at the second put; the thirty-eight after it, read
    back from the log, would cost more than the state of forty: member 0 sends the state."""
    members = Members(3, Mode.PAXOS, record_digests=True, catch_up_bytes=64, reads_logs=True)
    back_with(members, held_at=2)
    received = assert_caught_up_with_the_others(members)
    assert not received.caught_up
    assert members.hosts[0].stats["catch_up_log_larger"] == 1


def test_a_member_back_just_after_a_total_restart_is_sent_what_the_log_holds() -> None:
    """Members 0 and 1 restarted from their logs at the second put and delivered nothing
    since: memory holds nothing, but 0's log holds the puts before the crash, and member 2,
    back with its state at the first put, is sent the second from there. No replica has
    snapshotted since the restart: the read is bounded by twice the snapshot it was rebuilt
    from (said here to be 20 MiB), not by the 16 MiB floor alone."""
    members = Members(3, Mode.PAXOS, record_digests=True, catch_up_bytes=64, reads_logs=True)
    size = 20 << 20
    for member in (0, 1):
        rebuilt = Rebuilt(kv_after(2), (1, 2), 2, 0, 0, (0, 0), state_bytes=size)
        members.hosts[member].restart({KEY: rebuilt})
    before = Members(2, Mode.PAXOS)  # the run before the crash, for its log
    before.install(View(1, (0, 1)))
    for index in (1, 2):
        before.call(0, 1, index, (0, 1), key="k")
    members.logs[0] = before.logs[0]
    members.hosts[2].restart({KEY: Rebuilt(kv_after(1), (1, 1), 1, 0, 0, (0, 0))})
    members.install(View(2, (0, 1)))
    members.route()
    members.install(View(3, (0, 1, 2), joined=(2,)))
    members.route()
    [read] = members.reported(0, ReadLog)
    assert read.after == (1, 1) and read.limit_bytes == 2 * size
    [received] = members.reported(2, StateReceived)
    assert received.caught_up and received.position == (1, 2)
    replicas = [members.hosts[m].replica("KV") for m in range(3)]
    assert replicas[2].history == replicas[0].history == kv_after(2).history
