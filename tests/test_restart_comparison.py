"""The comparison of rebuilt states after a total restart, driven by hand through the object
layer alone (sans-IO): the messages between members are routed by the test, which holds back
the ones a scenario needs lost.

Five members restart; member 4 rebuilt shard ('KV', 0, 0) at (1, 5), two updates further than
the others, at (1, 3) (logged by 4 alone, so delivered nowhere). All choose 4's state. Member 3
receives it, and the others' copies are lost with 4. Paxos sweep seed 7644 had this shape:
3 applied the next calls at once to the longer state, the others chose again among themselves
the shorter one, and the replicas answered the same call differently.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest

from pyderecho.core.events import Delivered, PeerMessage, ViewInstalled
from pyderecho.core.layout import (
    LayoutFunction,
    Mode,
    ShardLayout,
    ViewLayout,
    compute_layout,
    every_member,
    layout_of,
    sharded,
)
from pyderecho.core.view import NodeId, View
from pyderecho.replicated import host as host_module
from pyderecho.replicated.errors import MemberRemoved
from pyderecho.replicated.events import CallDone, SaveDoubt, SaveState, SendPeer, StateWaiting
from pyderecho.replicated.host import ObjectHost, _end_position
from pyderecho.replicated.messages import (
    PeerPayload,
    ShardEnd,
    StateChunk,
    StateHeader,
    decode_peer,
)
from pyderecho.replicated.recovery import Rebuilt
from pyderecho.sim.swarm import KV

KEY = ("KV", 0, 0)
LAYOUT = layout_of({"KV": every_member(Mode.PAXOS)})
Hold = Callable[[NodeId, NodeId, PeerPayload], bool]


def rebuilt(updates: int) -> KV:
    kv = KV()
    for n in range(updates):
        kv.put(f"k{n}", n)
    return kv


class Members:
    """Object hosts whose point-to-point messages the test routes."""

    def __init__(self, count: int, policy: LayoutFunction = LAYOUT) -> None:
        self.policy = policy
        self.hosts = {m: ObjectHost(m, {"KV": KV}) for m in range(count)}
        self.done: dict[NodeId, list[CallDone]] = {m: [] for m in self.hosts}
        self.layout: ViewLayout | None = None
        self.slow_disks: set[NodeId] = set()
        """Members whose snapshots are durable only once :meth:`sync` says so; the others'
        are at once."""
        self.unsynced: list[tuple[NodeId, SaveState]] = []
        self.waits: dict[NodeId, list[StateWaiting]] = {m: [] for m in self.hosts}
        self.doubts: dict[NodeId, list[tuple[NodeId, ...]]] = {m: [] for m in self.hosts}
        """What each member wrote as its doubt (:class:`SaveDoubt`), in order."""

    def install(self, view: View, members: tuple[NodeId, ...]) -> None:
        layout = compute_layout(self.policy, view)
        for m in members:
            self.hosts[m].handle(ViewInstalled(view, layout, self.layout))
        self.layout = layout

    def route(self, hold: Hold = lambda src, dst, message: False) -> None:
        """Hand over every message until none is left, dropping those ``hold`` picks."""
        while True:
            moved = False
            for src, host in self.hosts.items():
                for output in host.outputs():
                    if isinstance(output, CallDone):
                        self.done[src].append(output)
                    if isinstance(output, StateWaiting):
                        self.waits[src].append(output)
                    if isinstance(output, SaveDoubt):
                        self.doubts[src].append(output.doubted)
                    if isinstance(output, SaveState):
                        if src in self.slow_disks:
                            self.unsynced.append((src, output))
                        else:
                            host.saved(output.key, output.position)
                            moved = True
                    if not isinstance(output, SendPeer) or output.dst not in self.hosts:
                        continue
                    if hold(src, output.dst, decode_peer(output.payload)):
                        continue
                    self.hosts[output.dst].handle(PeerMessage(src, output.payload))
                    moved = True
            if not moved:
                return

    def sync(self) -> None:
        """The slow disks' snapshots become durable."""
        unsynced, self.unsynced = self.unsynced, []
        for member, save in unsynced:
            self.hosts[member].saved(save.key, save.position)
        self.route()

    def deliver(self, caller: NodeId, epoch: int, index: int, members: tuple[NodeId, ...]) -> int:
        """Member ``caller`` calls ``put``; the shard delivers it at ``members``."""
        call_id, subgroup, payload = self.hosts[caller].prepare_call(
            "KV", 0, "put", args=(f"c{index}", index), kwargs={}, timestamp=0.0
        )
        for m in members:
            self.hosts[m].handle(Delivered(epoch, subgroup, 0, Mode.PAXOS, caller, index, payload))
        return call_id

    def replies(self, caller: NodeId, call_id: int) -> dict[NodeId, object]:
        return next(d.replies for d in self.done[caller] if d.call_id == call_id)


def state_from(source: NodeId, lost_at: set[NodeId]) -> Hold:
    """Lose the state ``source`` sends to the members in ``lost_at``."""

    def hold(src: NodeId, dst: NodeId, message: PeerPayload) -> bool:
        return src == source and dst in lost_at and isinstance(message, StateHeader | StateChunk)

    return hold


def restarted(count: int, furthest: NodeId) -> Members:
    members = Members(count)
    for m, host in members.hosts.items():
        updates = 5 if m == furthest else 3
        host.restart({KEY: Rebuilt(rebuilt(updates), (1, updates), updates, 0, 0)})
    members.install(View(2, tuple(range(count))), tuple(range(count)))
    return members


def holders_fail_after_a_call() -> tuple[Members, int]:
    """3 holds 4's state, the others lost theirs with 4; a call is delivered; 3 and 4 fail,
    and the three left hold (1, 3)."""
    members = restarted(5, furthest=4)
    members.route(state_from(4, lost_at={0, 1, 2}))
    call_id = members.deliver(0, 2, 1, tuple(range(5)))
    members.route(state_from(4, lost_at={0, 1, 2}))
    members.install(View(3, (0, 1, 2), departed=(3, 4)), (0, 1, 2))
    members.route()
    return members, call_id


def test_a_state_received_is_not_applied_to_until_every_member_holds_it() -> None:
    members, call_id = holders_fail_after_a_call()
    replies = members.replies(0, call_id)
    assert [replies[m] for m in (0, 1, 2)] == [4, 4, 4]
    assert all(isinstance(replies[m], MemberRemoved) for m in (3, 4)), "3 never answered"
    digests = {members.hosts[m].state_digest(KEY) for m in (0, 1, 2)}
    assert len(digests) == 1 and None not in digests


def test_applying_as_soon_as_the_furthest_state_is_held_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The planted bug: a member holding the furthest state applies at once, as before seed
    7644's fix. 3 answers the call from (1, 5), the members left from (1, 3)."""
    original = ObjectHost._reconcile

    def apply_at_once(self: ObjectHost, replica: Any) -> None:
        original(self, replica)
        if replica.ends is None or replica.recovered is None or replica.my_end is None:
            return
        ends = {**replica.ends, self.node_id: replica.my_end}
        if all(m in ends for m in replica.reconcilers):
            held = [_end_position(ends[m]) for m in replica.reconcilers if ends[m].held]
            if replica.recovered[1] == max(held):
                self._release(replica, replica.recovered[1], replica.recovered_checksum)

    monkeypatch.setattr(ObjectHost, "_reconcile", apply_at_once)
    members, call_id = holders_fail_after_a_call()
    replies = members.replies(0, call_id)
    assert replies[3] == 6 and [replies[m] for m in (0, 1, 2)] == [4, 4, 4]


def test_a_state_received_from_a_holder_since_removed_is_chosen_again() -> None:
    members = restarted(5, furthest=4)
    members.route(state_from(4, lost_at={0, 1, 2}))
    call_id = members.deliver(0, 2, 1, tuple(range(5)))
    members.route(state_from(4, lost_at={0, 1, 2}))
    # 4 fails alone: 3 says afresh what it holds, 4's state, and the others take it from 3.
    survivors = (0, 1, 2, 3)
    members.install(View(3, survivors, departed=(4,)), survivors)
    members.route()
    replies = members.replies(0, call_id)
    assert [replies[m] for m in survivors] == [6, 6, 6, 6]
    digests = {members.hosts[m].state_digest(KEY) for m in survivors}
    assert len(digests) == 1 and None not in digests


def test_members_that_all_hold_the_furthest_state_apply_at_once() -> None:
    members = restarted(3, furthest=2)
    members.route()
    call_id = members.deliver(1, 2, 1, (0, 1, 2))
    members.route()
    assert members.replies(1, call_id) == {0: 6, 1: 6, 2: 6}


@pytest.mark.parametrize("lost_at", [{0}, {0, 1}])
def test_a_member_that_started_applying_is_followed_by_those_still_comparing(
    lost_at: set[NodeId],
) -> None:
    """All four take 2's state and say so, but what 1 says to 0 is lost (and with ``{0, 1}``
    what 0 says to 1): 2, and 1 unless it missed 0's word, apply already; the members left
    comparing ask afresh in the next view and hear that the others apply, and from where."""
    members = restarted(4, furthest=2)

    def hold(src: NodeId, dst: NodeId, message: PeerPayload) -> bool:
        return (
            isinstance(message, ShardEnd)
            and (message.position_epoch, message.position_count) == (1, 5)
            and src in (0, 1)
            and dst in lost_at - {src}
        )

    members.route(hold)
    comparing = {m for m in members.hosts if members.hosts[m].state_digest(KEY) is None}
    assert comparing == lost_at
    survivors = (0, 1, 2)
    members.install(View(3, survivors, departed=(3,)), survivors)
    members.route()
    call_id = members.deliver(2, 3, 1, survivors)
    members.route()
    assert members.replies(2, call_id) == {0: 6, 1: 6, 2: 6}


def a_call_while_one_snapshot_is_not_durable() -> tuple[Members, int]:
    """Members 0 and 1 take 2's state; 1's disk is slow to sync its snapshot; a call."""
    members = restarted(3, furthest=2)
    members.slow_disks = {1}
    members.route()
    call_id = members.deliver(0, 2, 1, (0, 1, 2))
    members.route()
    return members, call_id


def test_a_state_received_is_held_only_once_its_snapshot_is_durable() -> None:
    """Should the whole group crash again, a member restarts from what its disk holds: its
    own older snapshot and the calls logged since, unless the state it received was durable
    by then. So nobody applies a call before it is."""
    members, call_id = a_call_while_one_snapshot_is_not_durable()
    assert members.done[0] == [], "a replica answered while 1's snapshot was not durable"
    assert all(members.hosts[m].state_digest(KEY) is None for m in (0, 1, 2))
    members.sync()
    assert members.replies(0, call_id) == {0: 6, 1: 6, 2: 6}


def test_saying_a_state_is_held_before_its_snapshot_is_durable_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = host_module._end_of

    def held_at_once(replica: Any, epoch: int) -> ShardEnd:
        if replica.unsaved is not None:  # the planted bug: as good as durable at once
            unsaved = replica.unsaved
            replica.recovered, replica.unsaved = (unsaved.obj, unsaved.position), None
            replica.recovered_checksum = unsaved.checksum
        return original(replica, epoch)

    monkeypatch.setattr(host_module, "_end_of", held_at_once)
    members, _ = a_call_while_one_snapshot_is_not_durable()
    assert members.done[0] != [], "the planted bug should let the replicas answer"


def test_a_copy_made_durable_after_its_holder_left_is_served() -> None:
    """0 and 1 restart holding nothing of the shard (new to it when the group crashed), 2
    rebuilt it at (1, 3). Both take 2's state, and 2 fails before either snapshot is durable:
    in view 3 each says it holds nothing, and both wait for a holder (``StateWaiting``). Their
    snapshots then become durable: each holds 2's state, the furthest there is, and serves it,
    where both used to keep it unused, waiting for good."""
    members = Members(3)
    for m, host in members.hosts.items():
        host.restart({KEY: Rebuilt(rebuilt(3), (1, 3), 3, 0, 0)} if m == 2 else {})
    members.install(View(2, (0, 1, 2)), (0, 1, 2))
    members.slow_disks = {0, 1}
    members.route()
    assert len(members.unsynced) == 2
    members.install(View(3, (0, 1), departed=(2,)), (0, 1))
    members.route()
    assert all(members.hosts[m].state_digest(KEY) is None for m in (0, 1))
    members.sync()
    held = {members.hosts[m].state_digest(KEY) for m in (0, 1)}
    assert len(held) == 1 and None not in held
    call_id = members.deliver(0, 3, 1, (0, 1))
    members.route()
    assert members.replies(0, call_id) == {0: 4, 1: 4}


def two_states_at_one_position() -> Members:
    """A second total restart: members 0 and 1 both rebuilt the shard at (2, 2). Member 0
    had been behind at the first (its own state at (1, 3), where 1 held (1, 5)), logged the
    restart view's two records and crashed before 1's state reached its disk: its state is
    its own with those records on top, a hole where (1, 4) and (1, 5) were. Then a call."""
    members = Members(2)
    holed = rebuilt(3)
    whole = rebuilt(5)
    for kv in (holed, whole):
        kv.put("r1", 1)
        kv.put("r2", 2)
    members.hosts[0].restart({KEY: Rebuilt(holed, (2, 2), 5, 0, 0)})
    members.hosts[1].restart({KEY: Rebuilt(whole, (2, 2), 7, 0, 0)})
    members.install(View(3, (0, 1)), (0, 1))
    members.route()
    return members


def test_two_states_at_one_position_become_one() -> None:
    """Each used to keep its own, since both reached the furthest position: the replicas
    then answered calls from two states. The states' checksums differ, so member 1 takes
    member 0's (the lowest rank's; neither was ever applied to, so either loses nothing
    anyone saw), and both answer the call alike."""
    members = two_states_at_one_position()
    call_id = members.deliver(0, 3, 1, (0, 1))
    members.route()
    replicas = [members.hosts[m].replica("KV") for m in (0, 1)]
    assert replicas[0].history == replicas[1].history
    replies = members.replies(0, call_id)
    assert replies[0] == replies[1], replies


def test_comparing_positions_alone_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: every checksum reads 0, as before they were compared. Both members keep
    their own state and answer the call from different ones."""
    monkeypatch.setattr(host_module, "crc32c", types.SimpleNamespace(crc32c=lambda *_: 0))
    members = two_states_at_one_position()
    call_id = members.deliver(0, 3, 1, (0, 1))
    members.route()
    replicas = [members.hosts[m].replica("KV") for m in (0, 1)]
    assert replicas[0].history != replicas[1].history
    replies = members.replies(0, call_id)
    assert replies[0] != replies[1], replies


def lacking_the_cut(**marks: Any) -> Rebuilt:
    """A state rebuilt at (0, 5), one update short of view 0's cut at (0, 6)."""
    return Rebuilt(rebuilt(5), (0, 5), 5, 0, 0, **marks)


def holding_the_cut() -> Rebuilt:
    """A state rebuilt at (0, 6), its log marked with view 0's cut."""
    return Rebuilt(rebuilt(6), (0, 6), 6, 0, 0, cut_epoch=0)


def shard_moves(first: tuple[NodeId, ...], then: tuple[NodeId, ...], after: int) -> LayoutFunction:
    """A layout whose one ``Paxos`` shard is ``first`` up to view ``after``, then ``then``."""

    def layout(view: View) -> dict[str, tuple[tuple[ShardLayout, ...], ...]]:
        members = first if view.epoch <= after else then
        return {"KV": ((ShardLayout(tuple(m for m in members if m in view), Mode.PAXOS),),)}

    return layout


MOVED_TO_NEWCOMERS = shard_moves((0, 1, 2), (3, 4), after=2)
MOVED_OUT_AFTER_VIEW_0 = shard_moves((0, 1, 2), (0, 2), after=0)
VIEW_0 = compute_layout(MOVED_OUT_AFTER_VIEW_0, View(0, (0, 1, 2)))
"""The layout of view 0, which the members left out of its cut installed last."""


def left_out_of_the_last_cut(*, holder_back: bool) -> Members:
    """Members 0, 1 and 2 held the shard in view 0. 0 and 2 crashed during its cleanup and
    were excluded; 1 alone logged the cut (it reaches (0, 6), its log marked with view 0's
    cut) and applied it; then the whole group crashed. The restart founds view 2 on the
    commit of view 1: 0 and 2 rebuilt (0, 5), with no mark. ``holder_back``: 1 restarts too;
    else it never comes back, and view 3 removes it."""
    members = Members(3)
    back = (0, 1, 2) if holder_back else (0, 2)
    for m in back:
        members.hosts[m].restart({KEY: holding_the_cut() if m == 1 else lacking_the_cut()})
    members.install(View(2, (0, 1, 2)), back)
    members.route()
    if not holder_back:
        members.install(View(3, (0, 2), departed=(1,)), back)
        members.route()
    return members


def test_members_left_out_of_the_last_cut_wait_for_the_member_that_may_have_applied_it() -> None:
    """Neither 0 nor 2 can tell whether 1 applied the cut without them: the shard waits for
    1 by name rather than go on from (0, 5), which lacks the update 1 may have delivered
    (Paxos sweep seed 1233 with two members lost for good lost it so)."""
    members = left_out_of_the_last_cut(holder_back=False)
    for m in (0, 2):
        assert members.hosts[m].state_digest(KEY) is None, (
            "it went on from a state that may be short"
        )
        assert [w.waiting_for for w in members.waits[m]] == [(1,)]
        assert members.doubts[m] == [(0, 1, 2)], "the doubt is on disk before any later mark"


def test_a_member_whose_log_holds_the_last_cut_gives_it_to_those_left_out() -> None:
    members = left_out_of_the_last_cut(holder_back=True)
    call_id = members.deliver(0, 2, 1, (0, 1, 2))
    members.route()
    assert members.replies(0, call_id) == {0: 7, 1: 7, 2: 7}
    assert all(members.waits[m] == [] for m in (0, 1, 2))
    assert members.doubts[0] == [(0, 1, 2), ()], "the doubt is emptied once it settles"


def test_members_that_all_lack_the_last_cut_go_on() -> None:
    """Every member of the shard is back and none logged the cut (the group crashed before
    any did): nobody applied it, so the furthest state decides, as ever."""
    members = Members(3)
    for m, host in members.hosts.items():
        updates = 5 if m == 2 else 4
        host.restart({KEY: Rebuilt(rebuilt(updates), (0, updates), updates, 0, 0)})
    members.install(View(2, (0, 1, 2)), (0, 1, 2))
    members.route()
    call_id = members.deliver(0, 2, 1, (0, 1, 2))
    members.route()
    assert members.replies(0, call_id) == {0: 6, 1: 6, 2: 6}


def test_a_doubt_from_an_earlier_restart_outlives_the_marks_of_later_cuts() -> None:
    """The group crashed again while 0 and 2 waited for 1, which views 3 and 4 removed and
    whose cuts 0 and 2 marked meanwhile: their logs show view 4's cut, but their states lack
    view 0's. The restart after view 5 still waits for 1, whom their doubts name."""
    members = Members(3)
    for m in (0, 2):
        state = lacking_the_cut(cut_epoch=4, doubted=(0, 1, 2))
        members.hosts[m].restart({KEY: state})
    members.install(View(6, (0, 2)), (0, 2))
    members.route()
    for m in (0, 2):
        assert members.hosts[m].state_digest(KEY) is None
        assert [w.waiting_for for w in members.waits[m]] == [(1,)]


def test_a_member_moved_out_after_the_last_cut_gives_its_state_to_those_left_out() -> None:
    """The shard is 0 and 1 in the founded view; 2 applied view 0's cut of it, and the layout
    moved 2 out in view 1. 0 and 1, excluded from that cleanup, lack the cut, and wait for
    3 as well, which an earlier restart named (their doubt files) and which is gone. 2 keeps
    the state it rebuilt of a shard it is no longer in, and offers it: 0 and 1 take it
    rather than wait for good (within-budget seed 8829 with a member lost at the total
    crash did)."""
    members = Members(3, layout_of({"KV": sharded(1, reserved=[[0, 1]], mode=Mode.PAXOS)}))
    for m in (0, 1):
        state = lacking_the_cut(doubted=(0, 1, 3))
        members.hosts[m].restart({KEY: state})
    members.hosts[2].restart({KEY: holding_the_cut()})
    members.install(View(2, (0, 1, 2)), (0, 1, 2))
    members.route()
    call_id = members.deliver(0, 2, 1, (0, 1))
    members.route()
    assert members.replies(0, call_id) == {0: 7, 1: 7}, "both went on from 2's state"
    assert members.hosts[2].holds(KEY)
    members.install(View(3, (0, 1, 2)), (0, 1, 2))
    members.route()
    assert not members.hosts[2].holds(KEY), "it offers its state after the shard settled"


def test_members_moved_out_while_they_wait_for_the_last_cut_do_not_hand_on_their_states() -> None:
    """As in the case above, 0 and 2 restart left out of view 0's cut, which 1 alone may have
    applied, and 1 is gone; view 3 removes it and moves the shard to the joiners 3 and 4.
    0 and 2 still waited for 1: their states may lack what its cut delivered, and handed
    to the newcomers they would become the shard's, the update 1 applied lost."""
    members = Members(5, MOVED_TO_NEWCOMERS)
    for m in (0, 2):
        members.hosts[m].restart({KEY: lacking_the_cut()})
    members.install(View(2, (0, 1, 2)), (0, 2))
    members.route()
    members.install(View(3, (0, 2, 3, 4), joined=(3, 4), departed=(1,)), (0, 2, 3, 4))
    members.route()
    for m in (3, 4):
        assert members.hosts[m].state_digest(KEY) is None, "a state short of the cut went on"
        assert members.waits[m], "the newcomers say that they wait"


def left_out_of_a_cut_whose_holder_moved_on(*, say_installed: bool) -> Members:
    """0 and 2 crashed during view 0's cleanup and were excluded; 1 alone applied its cut,
    and view 1 moved 1 out of the shard. The whole group crashed, 1 for good. The restart
    founds view 2, whose shard is 0 and 2: 1 is no member of it. ``say_installed``: each
    restarting member is told the layout of the last view it installed, view 0."""
    members = Members(3, MOVED_OUT_AFTER_VIEW_0)
    for m in (0, 2):
        members.hosts[m].restart({KEY: lacking_the_cut()}, VIEW_0 if say_installed else None)
    members.install(View(2, (0, 1, 2)), (0, 2))
    members.route()
    members.install(View(3, (0, 2), departed=(1,)), (0, 2))
    members.route()
    return members


def test_members_left_out_of_the_last_cut_wait_for_its_holder_moved_out_of_the_shard() -> None:
    """The founded view's layout no longer names 1, but 0 and 2 installed view 0, whose
    layout does: they wait for 1 by name rather than go on without what 1 may have applied."""
    members = left_out_of_a_cut_whose_holder_moved_on(say_installed=True)
    for m in (0, 2):
        assert members.hosts[m].state_digest(KEY) is None, "went on from a state that may be short"
        assert members.waits[m] and members.waits[m][-1].waiting_for == (1,)
        assert members.doubts[m] == [(0, 1, 2)]


def test_forgetting_the_shard_of_the_last_view_installed_is_caught() -> None:
    """Planted: the drivers do not say the last view installed (as before). Knowing only the
    founded view's layout, 0 and 2 see every member of the shard lack the cut, and go on."""
    members = left_out_of_a_cut_whose_holder_moved_on(say_installed=False)
    assert all(members.hosts[m].state_digest(KEY) is not None for m in (0, 2))


def test_a_doubt_learned_from_another_member_is_saved_too() -> None:
    """Only 0 was told the layout of view 0 (2's last view said nothing of 1): 2 learns from
    0's word that 1 may hold the cut, and writes its doubt again, naming 1, so that a second
    total crash that 0 does not come back from still leaves the doubt on 2's disk."""
    members = Members(3, MOVED_OUT_AFTER_VIEW_0)
    for m in (0, 2):
        members.hosts[m].restart({KEY: lacking_the_cut()}, VIEW_0 if m == 0 else None)
    members.install(View(2, (0, 1, 2)), (0, 2))
    members.route()
    assert members.doubts[2] == [(0, 2), (0, 1, 2)]
    assert members.hosts[2].state_digest(KEY) is None
