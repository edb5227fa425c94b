"""Members of a shard that all wait for its state, driven by hand through the object layer
alone (sans-IO): the messages between members are routed by the test, which holds back the
ones a scenario needs lost.

Member 0 holds shard ('KV', 0, 0) alone; 1 and 2 join and ask it for the state, and 0 fails
before its answer arrives. In the next view 1 and 2 are the shard's *old* members, the only
ones left to ask, and neither holds anything. Typed seed 7796 (ordered) and Paxos seed 9511
had this shape: each asked the other and kept the other's request until it had the state, so
both waited for good and every call to the shard hung.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import pytest

from object_hosts import KEY, Members
from pyderecho.core.events import PeerMessage, ViewInstalled
from pyderecho.core.layout import Mode, compute_layout, layout_of, sharded
from pyderecho.core.view import NodeId, View
from pyderecho.replicated import host as host_module
from pyderecho.replicated import state as state_module
from pyderecho.replicated.events import (
    CallDone,
    SaveState,
    SendPeer,
    StateLost,
    StateReceived,
    StateWaiting,
    UserCodeFailed,
)
from pyderecho.replicated.host import ObjectHost
from pyderecho.replicated.messages import (
    CaughtUpdate,
    StateChunk,
    StateHeader,
    StateHistory,
    StateStatus,
    decode_peer,
    encoder,
)
from pyderecho.replicated.recovery import Rebuilt
from pyderecho.sim.swarm import KV


def joiners_of_one_holder(count: int, mode: Mode) -> Members:
    """0 holds the state alone and takes a call; 1 and 2 join in view 1 (installed, nothing
    routed in it yet)."""
    members = Members(count, mode)
    members.install(View(0, (0,)))
    members.route()
    members.call(0, 0, 1, (0,))
    members.route()
    members.install(View(1, (0, 1, 2), joined=(1, 2)))
    return members


def comes_back(members: Members, state: Rebuilt) -> None:
    """0 restarts from its disk with ``state`` and joins view 3 with 1 and 2."""
    members.hosts[0] = ObjectHost(0, {"KV": KV})
    members.hosts[0].restart({KEY: state})
    members.down = set()
    members.install(View(3, (0, 1, 2), joined=(0,)))
    members.route()


def holder_fails_before_its_transfer(mode: Mode, count: int = 3) -> Members:
    """0 holds the state and takes a call; 1 and 2 join and ask it; 0 fails before any of its
    answer arrives, and view 2 holds 1 and 2 alone (of ``count`` members)."""
    members = joiners_of_one_holder(count, mode)
    members.down = {0}
    members.route()
    members.install(View(2, (1, 2), departed=(0,)))
    members.route()
    return members


def test_an_ordered_shard_whose_every_holder_failed_starts_alike_at_its_members() -> None:
    members = holder_fails_before_its_transfer(Mode.ORDERED)
    for m in (1, 2):
        assert [lost.epoch for lost in members.reported(m, StateLost)] == [2]
        assert members.reported(m, StateReceived) == []
    assert members.hosts[1].state_digest(KEY) == members.hosts[2].state_digest(KEY) is not None
    call_id = members.call(1, 2, 1, (1, 2))
    members.route()
    (done,) = [d for d in members.reported(1, CallDone) if d.call_id == call_id]
    assert done.replies == {1: 1, 2: 1}, "both started over: the call is the first applied"


def test_a_paxos_shard_whose_every_holder_failed_waits_at_its_members() -> None:
    members = holder_fails_before_its_transfer(Mode.PAXOS)
    for m in (1, 2):
        assert [w.epoch for w in members.reported(m, StateWaiting)] == [2]
        assert members.reported(m, StateLost) == []
        assert members.hosts[m].state_digest(KEY) is None


def holder_back(
    updates: int, position: tuple[int, int], last: tuple[int, int], cut_epoch: int
) -> Members:
    """0, the shard's one holder, comes back from its disk with a state of ``updates`` calls
    at ``position`` (its last update's sender and timestamp ``last``, its log marked with
    the cut of view ``cut_epoch``) and joins view 3, while 1 and 2 wait for a holder."""
    members = holder_fails_before_its_transfer(Mode.PAXOS)
    kv = KV()
    for n in range(updates):
        kv.put(f"c{n + 1}", n + 1)
    comes_back(members, Rebuilt(kv, position, updates, 0, 0, last=last, cut_epoch=cut_epoch))
    return members


def replies_to_a_call(
    members: Members, at: tuple[NodeId, ...] = (0, 1, 2)
) -> list[dict[NodeId, object]]:
    """The replies to a call of 1's that view 3 delivers at the members ``at``."""
    call_id = members.call(1, 3, 1, at, key="d")
    members.route()
    return [d.replies for d in members.reported(1, CallDone) if d.call_id == call_id]


def test_a_holder_back_while_the_group_runs_ends_the_wait() -> None:
    """How promise 19's wait ends: 0's log holds the cut of view 0, the last view before 1
    and 2 joined, and nothing was delivered since: its state is the one they were to
    receive. They take it, and 0 takes theirs; all three answer the next call alike."""
    members = holder_back(1, (0, 1), (0, 0), cut_epoch=0)
    assert replies_to_a_call(members) == [{0: 2, 1: 2, 2: 2}]
    assert all(members.hosts[m].stats["offers_taken"] == 1 for m in (1, 2))


def test_a_state_short_of_the_cut_before_the_wait_is_refused() -> None:
    """0's log lacks the mark of view 0's cut: its state may lack what that cut delivered,
    so 1 and 2 keep waiting rather than take it."""
    members = holder_back(0, (0, 0), (-1, 0), cut_epoch=-1)
    assert replies_to_a_call(members) == [], "a call answered from a state that may be short"
    for m in (1, 2):
        assert members.hosts[m].state_digest(KEY) is None
        assert members.hosts[m].stats["offers_refused"] == 1


def test_taking_any_offered_state_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the offer is taken whatever it holds. 0 comes back with the state of before
    its one update (its last records lost, say): the update is gone from the shard, and the
    next call is answered as the first."""
    monkeypatch.setattr(host_module, "_meets_history", lambda replica, src, offer: True)
    members = holder_back(0, (0, 0), (-1, 0), cut_epoch=-1)
    assert replies_to_a_call(members) == [{0: 1, 1: 1, 2: 1}]


def holder_back_after_a_delivery(timestamp: int) -> Members:
    """View 1 delivers a call (at (1, 1), timestamp 0) at 0, 1 and 2 before 1 and 2 have the
    state, and 0 fails before sending it: they wait with that call buffered. 0 comes back
    with a state at (1, 1) whose last update has ``timestamp``."""
    members = joiners_of_one_holder(3, Mode.PAXOS)
    members.call(0, 1, 1, (0, 1, 2), key="b")
    members.down = {0}
    members.route()
    members.install(View(2, (1, 2), departed=(0,)))
    members.route()
    kv = KV()
    kv.put("c1", 1)
    kv.put("b1", 1)
    comes_back(members, Rebuilt(kv, (1, 1), 2, 0, 0, last=(0, timestamp), cut_epoch=0))
    return members


def test_a_state_that_ends_with_an_update_the_waiting_members_hold_is_taken() -> None:
    members = holder_back_after_a_delivery(timestamp=0)
    assert replies_to_a_call(members) == [{0: 3, 1: 3, 2: 3}]


def test_a_state_whose_last_update_is_not_the_one_held_there_is_refused() -> None:
    """The update at (1, 1) in 0's state has another timestamp than the one 1 and 2
    delivered there: not the shard's history, and not taken."""
    members = holder_back_after_a_delivery(timestamp=7)
    assert replies_to_a_call(members) == []
    assert all(members.hosts[m].state_digest(KEY) is None for m in (1, 2))
    assert all(members.hosts[m].stats["offers_refused"] == 1 for m in (1, 2))


def sole_holder_crashed(cut_epoch: int) -> Members:
    """0 holds the shard alone through views 0 and 1 (a call in each) and crashes; view 2
    removes it and brings 1 and 2 in, new to the shard, with no old member to ask. 0 comes
    back from its disk (its state at (1, 1), its log marked with the cut of view
    ``cut_epoch``) and joins view 3."""
    members = Members(3, Mode.PAXOS)
    members.install(View(0, (0,)))
    members.route()
    members.call(0, 0, 1, (0,))
    members.install(View(1, (0,)))
    members.call(0, 1, 1, (0,), key="b")
    members.route()
    members.install(View(2, (1, 2), joined=(1, 2), departed=(0,)))
    members.route()
    kv = KV()
    kv.put("c1", 1)
    kv.put("b1", 1)
    comes_back(members, Rebuilt(kv, (1, 1), 2, 0, 0, last=(0, 0), cut_epoch=cut_epoch))
    return members


def test_the_sole_holder_back_after_its_shard_moved_to_newcomers_ends_the_wait() -> None:
    """No member of the shard in view 1 reached view 2, so view 1's cleanup delivered nothing
    of it: what view 1 delivered is in 0's log, which holds view 0's cut, so 0 held the state
    as view 1 began. 1 and 2 take its state."""
    members = sole_holder_crashed(cut_epoch=0)
    assert replies_to_a_call(members) == [{0: 3, 1: 3, 2: 3}]


def test_a_sole_holder_left_out_of_the_cut_before_is_refused() -> None:
    """0's log lacks view 0's cut (it was left out of that cleanup, which may have delivered
    updates at members since gone): its state may be short, and 1 and 2 keep waiting."""
    members = sole_holder_crashed(cut_epoch=-1)
    assert replies_to_a_call(members) == []
    assert all(members.hosts[m].stats["offers_refused"] == 1 for m in (1, 2))


def test_the_states_of_two_holders_that_both_crashed_are_refused() -> None:
    """0 and 3 held the shard through views 0 and 1 and both crashed; view 2 moved it to 1
    and 2. 0 had logged a stable message of view 1 that 3 had not when both crashed, which
    nobody delivered: their states differ, and each is whole by the one-holder rule's
    reasoning. Two waiting members that each took one would part, so neither is taken."""
    members = Members(4, Mode.PAXOS)
    members.install(View(0, (0, 3)))
    members.route()
    members.call(0, 0, 1, (0, 3))
    members.install(View(1, (0, 3)))
    members.route()
    members.install(View(2, (1, 2), joined=(1, 2), departed=(0, 3)))
    members.route()
    longer, shorter = KV(), KV()
    for kv in (longer, shorter):
        kv.put("c1", 1)
    longer.put("m1", 1)
    states = {
        0: Rebuilt(longer, (1, 1), 2, 0, 0, last=(3, 0), cut_epoch=0),
        3: Rebuilt(shorter, (0, 1), 1, 0, 0, last=(0, 0), cut_epoch=0),
    }
    for m, state in states.items():
        members.hosts[m] = ObjectHost(m, {"KV": KV})
        members.hosts[m].restart({KEY: state})
    members.install(View(3, (0, 1, 2, 3), joined=(0, 3)))
    members.route()
    for m in (1, 2):
        assert members.hosts[m].state_digest(KEY) is None, "took one holder's state of two"
        assert members.hosts[m].stats["offers_refused"] == 2


def test_members_that_wait_for_each_other_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted bug: a member that has no state keeps every request for when it has,
    the request of the member it asks too, as before seed 7796's fix. Neither learns that
    the state is lost."""
    original = ObjectHost._on_state_request

    def keep_every_request(self: ObjectHost, src: NodeId, request: Any) -> None:
        replica = self._replicas.get((request.type_name, request.subgroup_index, request.shard))
        if replica is not None and replica.obj is None and replica.asking == src:
            replica.waiting.append(src)
            return
        original(self, src, request)

    monkeypatch.setattr(ObjectHost, "_on_state_request", keep_every_request)
    for mode in (Mode.ORDERED, Mode.PAXOS):
        members = holder_fails_before_its_transfer(mode)
        for m in (1, 2):
            assert members.reported(m, StateLost) == []
            assert [w.epoch for w in members.reported(m, StateWaiting)] == []
            assert members.hosts[m].state_digest(KEY) is None


def test_a_holder_that_cannot_snapshot_its_state_is_not_taken_for_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """0 holds the state but its ``snapshot`` raises: it answers that it cannot send it,
    and the joiners, having asked everyone, wait rather than start over. In the next view
    they ask again and take it."""
    failing = [True]

    def snapshot(spec: Any, obj: Any) -> bytes:
        if failing[0]:
            raise RuntimeError("snapshot failed")
        return state_module.snapshot(spec, obj)

    monkeypatch.setattr(host_module, "snapshot", snapshot)
    members = joiners_of_one_holder(4, Mode.ORDERED)
    members.route()
    for m in (1, 2):
        assert members.reported(m, StateLost) == []
        assert members.hosts[m].state_digest(KEY) is None
    failing[0] = False
    members.install(View(2, (0, 1, 2, 3), joined=(3,)))
    members.route()
    held = [members.hosts[m].state_digest(KEY) for m in range(4)]
    assert len({h[1] if h is not None else None for h in held}) == 1 and None not in held
    assert all(members.reported(m, StateLost) == [] for m in range(4))


def test_a_member_that_cannot_snapshot_its_state_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def snapshot(spec: Any, obj: Any) -> bytes:
        raise RuntimeError("snapshot failed")

    monkeypatch.setattr(host_module, "snapshot", snapshot)
    members = Members(2, Mode.ORDERED)
    members.install(View(0, (0,)))
    members.route()
    members.install(View(1, (0, 1), joined=(1,)))
    for output in members.hosts[1].outputs():
        if isinstance(output, SendPeer):
            members.hosts[0].handle(PeerMessage(1, output.payload))
    sent = [decode_peer(o.payload) for o in members.hosts[0].outputs() if isinstance(o, SendPeer)]
    assert [m.status.name for m in sent if isinstance(m, StateHeader)] == ["UNSENT"]
    assert not [m for m in sent if isinstance(m, StateChunk)]


def hand_over(members: Members, src: NodeId, to: Container[NodeId]) -> None:
    """Route what ``src`` sent so far to the members ``to`` alone; its other messages are
    lost."""
    for output in members.hosts[src].outputs():
        members.outputs[src].append(output)
        if isinstance(output, SendPeer) and output.dst in to:
            members.hosts[output.dst].handle(PeerMessage(src, output.payload))


def requests_crossing_a_view_change(mode: Mode) -> Members:
    """As :func:`holder_fails_before_its_transfer`, but 1 and 2 install view 3 (3 joins)
    before either request of view 2 to the other arrives."""
    members = joiners_of_one_holder(4, mode)
    members.down = {0}
    members.route()
    members.install(View(2, (1, 2), departed=(0,)))
    members.install(View(3, (1, 2, 3), joined=(3,)))
    members.route()
    return members


def test_members_whose_requests_to_each_other_cross_a_view_change_do_not_wait_for_good() -> None:
    """Each request, of view 2, reaches a member in view 3: each kept the other's for when it
    had the state, and every call to the shard hung. Now each asks again in view 3 and
    learns there that the other holds nothing: an ordered shard starts over at both (and 3
    receives that state), a Paxos shard waits for a holder at all three."""
    members = requests_crossing_a_view_change(Mode.ORDERED)
    for m in (1, 2):
        assert [lost.epoch for lost in members.reported(m, StateLost)] == [3]
        assert members.hosts[m].stats["state_asked_again"] == 1
    assert len({members.hosts[m].state_digest(KEY) for m in (1, 2, 3)}) == 1
    assert members.hosts[3].state_digest(KEY) is not None
    members = requests_crossing_a_view_change(Mode.PAXOS)
    for m in (1, 2, 3):
        assert [w.epoch for w in members.reported(m, StateWaiting)] == [3]


def test_members_that_asked_each_other_across_a_view_change_take_a_holder_back() -> None:
    """0 comes back from its disk in view 3 while 1 and 2 ask each other; both install view 4
    before any message of view 3 arrives (3 joins). The offer still ends the wait."""
    members = holder_fails_before_its_transfer(Mode.PAXOS, count=4)
    kv = KV()
    kv.put("c1", 1)
    members.hosts[0] = ObjectHost(0, {"KV": KV})
    members.hosts[0].restart({KEY: Rebuilt(kv, (0, 1), 1, 0, 0, last=(0, 0), cut_epoch=0)})
    members.down = set()
    members.install(View(3, (0, 1, 2), joined=(0,)))
    members.install(View(4, (0, 1, 2, 3), joined=(3,)))
    members.route()
    call_id = members.call(1, 4, 1, (0, 1, 2, 3), key="d")
    members.route()
    assert [d.replies for d in members.reported(1, CallDone) if d.call_id == call_id] == [
        {0: 2, 1: 2, 2: 2, 3: 2}
    ]


def answered_a_view_before() -> list[dict[NodeId, object]]:
    """View 2 delivers a call at 1 and 2, which ask each other for the state. 2 gets 1's
    request in view 2, answers that it holds nothing, finds nobody else to ask and starts
    the ordered shard over at view 2's start (the call applied). 1 installs view 3 (3 joins)
    before 2's answer and request arrive. The replies of both to a call in view 3."""
    members = joiners_of_one_holder(4, Mode.ORDERED)
    members.down = {0}
    members.route()
    members.install(View(2, (1, 2), departed=(0,)))
    members.call(1, 2, 1, (1, 2), key="v")
    hand_over(members, 1, {2})
    members.install(View(3, (1, 2, 3), joined=(3,)))
    members.route()
    call_id = members.call(1, 3, 2, (1, 2, 3), key="d")
    members.route()
    return [d.replies for d in members.reported(1, CallDone) if d.call_id == call_id]


def test_an_answer_said_in_a_view_before_is_asked_again() -> None:
    """Had 1 taken 2's answer, said in view 2, as holding in view 3, it would have started
    the shard over at view 3's start without the call 2 applied: the two would part. It
    asks 2 again in view 3 and receives 2's state, and so does 3."""
    assert answered_a_view_before() == [{1: 2, 2: 2, 3: 2}]


def test_answers_that_name_no_view_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: every answer that the state is not held counts, whatever view it was said in
    (as before the fix): 1 and 3 lack the call 2 applied, and the replies part."""

    def not_held(key: tuple[str, int, int], request: Any) -> StateHeader:
        type_name, subgroup_index, shard = key
        return StateHeader(type_name, subgroup_index, shard, StateStatus.NOT_HELD, 1 << 30)

    monkeypatch.setattr(host_module, "_not_held", not_held)
    assert answered_a_view_before() == [{1: 1, 2: 2, 3: 1}]


def back_with_the_state_of_view_0(members: Members, *back: NodeId) -> None:
    """Each of ``back`` restarts from its disk with the state of view 0's one call, its log
    marked with view 0's cut."""
    for m in back:
        kv = KV()
        kv.put("c1", 1)
        members.hosts[m] = ObjectHost(m, {"KV": KV})
        members.hosts[m].restart({KEY: Rebuilt(kv, (0, 1), 1, 0, 0, last=(0, 0), cut_epoch=0)})
    members.down = set()


def test_an_offer_that_arrives_before_its_view_is_weighed_there() -> None:
    """0 installs view 3 first: its offer and request reach 1 and 2 in view 2, and are kept
    until they install view 3 (the offer first, as it was sent)."""
    members = holder_fails_before_its_transfer(Mode.PAXOS)
    back_with_the_state_of_view_0(members, 0)
    view = View(3, (0, 1, 2), joined=(0,))
    layout = compute_layout(members.plan, view)
    members.hosts[0].handle(ViewInstalled(view, layout, members.layout))
    hand_over(members, 0, {1, 2})
    for m in (1, 2):
        assert members.hosts[m].state_digest(KEY) is None
        members.hosts[m].handle(ViewInstalled(view, layout, members.layout))
    members.layout = layout
    members.route()
    assert replies_to_a_call(members) == [{0: 2, 1: 2, 2: 2}]
    assert all(members.hosts[m].stats["offers_taken"] == 1 for m in (1, 2))


def test_of_two_holders_back_the_lowest_ids_state_is_taken_and_the_other_receives_it() -> None:
    """0 and 3 held the shard and failed before 1 and 2, which joined it, had its state. Both
    come back with it: 1 and 2 take 0's, and 3, whose request they kept meanwhile, receives
    theirs."""
    members = Members(4, Mode.PAXOS)
    members.install(View(0, (0, 3)))
    members.route()
    members.call(0, 0, 1, (0, 3))
    members.install(View(1, (0, 1, 2, 3), joined=(1, 2)))
    members.down = {0, 3}
    members.route()
    members.install(View(2, (1, 2), departed=(0, 3)))
    members.route()
    back_with_the_state_of_view_0(members, 0, 3)
    members.install(View(3, (0, 1, 2, 3), joined=(0, 3)))
    members.route()
    assert replies_to_a_call(members, at=(0, 1, 2, 3)) == [{0: 2, 1: 2, 2: 2, 3: 2}]
    for m in (1, 2):
        assert members.hosts[m].stats["offers_taken"] == 1
        assert [r.source for r in members.reported(m, StateReceived)] == [0]


def test_an_offered_state_that_cannot_be_sent_leaves_every_member_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """0's ``snapshot`` raises when it is asked for the state it offered: it says it cannot
    send it, and 1 and 2 tell 0 they hold nothing in turn (they kept its request meanwhile),
    so that 0 does not wait on them. All three wait for a holder."""

    def snapshot(spec: Any, obj: Any) -> bytes:
        raise RuntimeError("snapshot failed")

    monkeypatch.setattr(host_module, "snapshot", snapshot)
    members = holder_fails_before_its_transfer(Mode.PAXOS)
    back_with_the_state_of_view_0(members, 0)
    members.install(View(3, (0, 1, 2), joined=(0,)))
    members.route()
    assert members.reported(0, UserCodeFailed) != []
    for m in (0, 1, 2):
        assert members.hosts[m].state_digest(KEY) is None
        assert 3 in [w.epoch for w in members.reported(m, StateWaiting)]


SHARD_1 = ("KV", 0, 1)


def shard_1_waits(count: int) -> tuple[Members, int]:
    """Two shards over members in rank order (of ``count``). 2, shard 1's one member, takes
    a call and crashes; view 1 gives shard 1 to 1, which has no old member to ask and waits,
    and delivers 1's call there (1 buffers it). The members and the id of 1's call."""
    members = Members(count, Mode.PAXOS)
    members.plan = layout_of({"KV": sharded(2, min_size=1, mode=Mode.PAXOS)})
    members.install(View(0, (0, 1, 2)))
    members.route()
    members.call(2, 0, 1, (2,), key="a")
    members.down = {2}
    members.install(View(1, (0, 1), departed=(2,)))
    members.route()
    return members, members.call(1, 1, 1, (1,), key="b")


def shard_1_holder_back(members: Members) -> None:
    """2 restarts from its disk with shard 1's state of view 0 (its one call)."""
    kv = KV()
    kv.put("a1", 1)
    members.hosts[2] = ObjectHost(2, {"KV": KV})
    members.hosts[2].restart({SHARD_1: Rebuilt(kv, (0, 1), 1, 0, 0, last=(2, 0), cut_epoch=-1)})
    members.down = set()


def waiting_member_moved_out() -> tuple[Members, int]:
    """:func:`shard_1_waits`, then view 2 brings 3 in, which the layout gives shard 1,
    moving 1 back to shard 0: 3 asks 1 (nothing routed in view 2 yet)."""
    members, call_id = shard_1_waits(4)
    members.install(View(2, (0, 1, 3), joined=(3,)))
    return members, call_id


def moved_out_while_waiting() -> tuple[Members, int]:
    """:func:`waiting_member_moved_out`, routed; 2 comes back from its disk with shard 1's
    state of view 0 and joins view 3, in shard 1 with 3. The members and the id of 1's
    call."""
    members, call_id = waiting_member_moved_out()
    members.route()
    shard_1_holder_back(members)
    members.install(View(3, (0, 1, 3, 2), joined=(2,)))
    members.route()
    return members, call_id


def replies_in_shard_1(members: Members) -> list[dict[NodeId, object]]:
    call_id = members.call(3, 3, 1, (3, 2), key="d")
    members.route()
    return [d.replies for d in members.reported(3, CallDone) if d.call_id == call_id]


def test_a_member_moved_out_while_it_waited_hands_its_history_to_the_newcomer() -> None:
    """1 answers 3 with what it delivered in view 1, and 3 waits on as if it had waited
    since view 1: 2's state, of the shard's one member in view 0, which reached no later
    view, meets that history. 3 takes it, applies 1's call after it, and 2 receives 3's
    state: the next call sees both earlier ones. 1's call was answered once, by 1, when it
    left the shard."""
    members, call_id = moved_out_while_waiting()
    assert replies_in_shard_1(members) == [{3: 3, 2: 3}]
    assert members.hosts[3].stats["histories_taken"] == 1
    # 1's call is in no log of 3's: 3's state with it applied goes to disk at once.
    assert [s.position for s in members.reported(3, SaveState)][:2] == [(0, 1), (1, 1)]
    (done,) = [d for d in members.reported(1, CallDone) if d.call_id == call_id]
    assert list(done.replies) == [1]


def test_a_history_short_of_its_last_delivery_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the member moved out hands on its history without its last delivery. 3 and
    2 lose 1's call and answer the next one as the second."""
    original = host_module._history

    def short(replica: Any) -> Any:
        history = original(replica)
        return None if history is None else (*history[:3], history[3][:-1])

    monkeypatch.setattr(host_module, "_history", short)
    members, _ = moved_out_while_waiting()
    assert replies_in_shard_1(members) == [{3: 2, 2: 2}]


def test_a_holder_back_in_its_old_place_takes_its_own_state_with_the_history_handed_on() -> None:
    """:func:`shard_1_waits`; 2 comes back from its disk into view 2, where the layout gives
    it its old place and moves 1 out: 2 asks 1, which hands on what it delivered there. 2's
    own state, of the shard's one member in view 0, meets that history: it applies 1's call
    to it, and answers the next call with both earlier ones in its state."""
    members, _ = shard_1_waits(3)
    shard_1_holder_back(members)
    members.install(View(2, (0, 1, 2), joined=(2,)))
    members.route()
    before = len(members.outputs[2])  # those of 2 before its crash, whose ids it reuses
    call_id = members.call(2, 2, 1, (2,), key="d")
    members.route()
    done = [o for o in members.outputs[2][before:] if isinstance(o, CallDone)]
    assert [d.replies for d in done if d.call_id == call_id] == [{2: 3}]
    assert members.hosts[2].stats["own_state_taken"] == 1
    # Neither its state nor 1's call is in a log of its new stint: both go to disk.
    saved = [o.position for o in members.outputs[2][:before] if isinstance(o, SaveState)]
    assert saved[-2:] == [(0, 1), (1, 1)]


def test_a_history_out_of_order_is_counted_and_taken_for_no_state() -> None:
    """A history whose updates do not follow one another (a faulty or hostile peer) is
    counted, and taken for an answer that the member asked holds nothing: 3 asks on, finds
    nobody, and says it waits; 1's true answer, after it, comes too late."""
    members, _ = waiting_member_moved_out()
    update = CaughtUpdate(1, 2, 1, 0, b"")
    forged = StateHistory(*SHARD_1, 2, 1, 0, (2,), [update, update])
    members.hosts[3].handle(PeerMessage(1, encoder.encode(forged)))
    assert members.hosts[3].stats["history_rejected"] == 1
    members.route()
    assert members.hosts[3].stats["histories_taken"] == 0
    assert [w.epoch for w in members.reported(3, StateWaiting)] == [2]
