"""The restart agreement and the commit log it relies on, at the level of the sans-IO core.

The sweeps (tests/test_paxos_sim.py) check the whole restart under random faults; these tests
pin each rule on its own: whom a restarting member waits for, which logged view wins, when it
founds, when it refuses, and that a member's row never shows a commit its driver has not
logged.
"""

from __future__ import annotations

from collections import deque

from pyderecho.core.config import CoreConfig
from pyderecho.core.events import (
    CutLogRequested,
    PersistRequested,
    Stopped,
    ViewInstalled,
    ViewLogRequested,
)
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.node import Node
from pyderecho.core.restart import Found, Logs, Rejoin, RestartAgreement
from pyderecho.core.view import View
from pyderecho.wire import (
    Heartbeat,
    MembershipRow,
    RestartPhase,
    RestartState,
    Welcome,
    WireMessage,
)

FAST = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5, startup_timeout=2.0)
PAXOS = layout_of({"Ledger": every_member(Mode.PAXOS)})
ORDERED = layout_of({"Ledger": every_member(Mode.ORDERED)})


ME = 7
"""The incarnation of every agreement under test: answers carry it back."""


def state(installed: View, commit: View | None = None) -> RestartState:
    """An answer to the agreement's question."""
    return Logs(installed, commit).state(RestartPhase.RESTARTING, answering=ME)


FIVE = View(4, (0, 1, 2, 3, 4))


def test_a_member_waits_for_a_majority_of_the_newest_installed_view() -> None:
    agreement = RestartAgreement(0, Logs(FIVE), ME)
    assert agreement.outcome() is None
    assert agreement.waiting_for() == [1, 2, 3, 4]
    agreement.receive(1, state(FIVE))
    assert agreement.outcome() is None, "two of five is no majority"
    assert "a majority of view 4" in agreement.waiting
    agreement.receive(2, state(FIVE))
    assert agreement.outcome() == Found(View(5, (0, 1, 2, 3, 4)))


def test_a_member_asks_again_those_that_were_restarting_and_learns_what_they_founded() -> None:
    """Member 4 heard 0, 1 and 2 restarting, then waits for 3 (which may have logged the commit
    0 and 1 logged); the others go on without 4 meanwhile. Asking only 3, which stays down, 4
    would wait forever (Paxos sweep seed 689): it asks them all again and learns it was left
    out."""
    committed = View(5, (0, 1, 2, 3, 4))
    agreement = RestartAgreement(4, Logs(FIVE), ME)
    for member in (0, 1, 2):
        agreement.receive(member, state(FIVE, committed if member < 2 else None))
    assert agreement.outcome() is None, "3 may have logged the commit 0 and 1 logged"
    assert agreement.waiting_for() == [0, 1, 2, 3]
    running = Logs(View(6, (0, 1, 2))).state(RestartPhase.RUNNING, answering=ME)
    agreement.receive(1, running)
    assert isinstance(agreement.outcome(), Rejoin)


def test_only_answers_to_this_incarnation_count() -> None:
    """A state a peer sent an earlier incarnation (queued while this member was down) may no
    longer be true: it is neither counted nor allowed to decide anything."""
    agreement = RestartAgreement(0, Logs(FIVE), ME)
    for member in (1, 2):
        agreement.receive(member, Logs(FIVE).state(RestartPhase.RESTARTING, answering=ME - 1))
    agreement.receive(3, Logs(View(5, (0, 1, 2))).state(RestartPhase.FOUNDED, answering=ME - 1))
    assert agreement.outcome() is None and agreement.stale == 3
    question = agreement.question()
    assert question.incarnation == ME and question.answering == 0
    assert agreement.answer(question).answering == ME


def test_a_newer_installed_view_moves_the_majority_needed_to_it() -> None:
    agreement = RestartAgreement(3, Logs(FIVE), ME)
    agreement.receive(2, state(FIVE))
    assert agreement.outcome() is None
    agreement.receive(1, state(View(5, (0, 1, 3))))
    assert agreement.waiting_for() == [0, 1]
    # A member of view 5 counts even if its own logs stop before it: view 5's successor
    # would be committed in the logs of a majority of 5, and neither 1 nor 3 logged one.
    assert agreement.outcome() == Found(View(6, (0, 1, 3)))


def test_a_commit_that_a_majority_logged_is_chosen() -> None:
    commit = View(5, (0, 1, 2, 3))
    agreement = RestartAgreement(0, Logs(FIVE, commit), ME)
    agreement.receive(1, state(FIVE, commit))
    agreement.receive(2, state(FIVE))
    assert agreement.outcome() is None, "two logged it, one did not, two unheard: it may be"
    assert "may have logged the commit of view 5" in agreement.waiting
    agreement.receive(3, state(FIVE, commit))
    assert agreement.outcome() == Found(View(6, (0, 1, 2, 3)))


def test_a_commit_too_few_logged_is_passed_over() -> None:
    commit = View(5, (0, 1, 2, 3))
    agreement = RestartAgreement(2, Logs(FIVE), ME)
    agreement.receive(0, state(FIVE, commit))
    agreement.receive(3, state(FIVE))
    assert agreement.outcome() is None
    agreement.receive(4, state(FIVE))
    # Three of five lack it: it was never final, so nothing was installed after view 4.
    assert agreement.outcome() == Found(View(5, (0, 1, 2, 3, 4)))


def test_a_member_a_commit_removes_as_failed_is_not_waited_for() -> None:
    commit = View(5, (0, 1, 2, 3), departed=(4,))
    agreement = RestartAgreement(0, Logs(FIVE, commit), ME)
    agreement.receive(1, state(FIVE, commit))
    agreement.receive(2, state(FIVE))
    assert agreement.outcome() is None, "member 3 may have logged it: three would be a majority"
    assert "members [3, 4]" in agreement.waiting
    agreement.receive(3, state(FIVE))
    # Member 4 stopped when it saw itself suspected: it never logged the commit that removes
    # it, so the commit has two loggers at most, and was never final.
    assert agreement.outcome() == Found(View(5, FIVE.members))


def test_no_two_members_choose_differently_whatever_they_hear() -> None:
    """The rules exclude each other: for every way the five members' logs can be, and every
    majority a member may hear, the views chosen are one."""
    commit = View(5, (0, 1, 2, 3), departed=(4,))
    other = View(5, (0, 1, 2))
    for pattern in range(3**5):
        logs: dict[int, Logs] = {}
        for member in range(5):
            kind = pattern // 3**member % 3
            logs[member] = Logs(FIVE, (None, commit, other)[kind])
        if logs[4].commit == commit:
            continue  # a member a commit removes as failed never logs it
        chosen = set()
        for heard in range(1, 2**5):
            me = next(m for m in range(5) if heard >> m & 1)
            agreement = RestartAgreement(me, logs[me], ME)
            for member in range(5):
                if heard >> member & 1 and member != me:
                    agreement.receive(
                        member, logs[member].state(RestartPhase.RESTARTING, answering=ME)
                    )
            outcome = agreement.outcome()
            if isinstance(outcome, Found):
                chosen.add(outcome.view)
            elif isinstance(outcome, Rejoin):
                chosen.add(View(-1, outcome.contacts))
        founded = {view for view in chosen if view.epoch >= 0}
        assert len(founded) <= 1, (pattern, chosen)


def test_a_member_the_chosen_view_excludes_rejoins_through_its_members() -> None:
    commit = View(5, (0, 1, 2))
    agreement = RestartAgreement(4, Logs(FIVE), ME)
    agreement.receive(0, state(FIVE, commit))
    agreement.receive(1, state(FIVE, commit))
    assert agreement.outcome() is None
    agreement.receive(2, state(FIVE, commit))
    outcome = agreement.outcome()
    assert isinstance(outcome, Rejoin) and outcome.contacts == (0, 1, 2)
    assert "view 5 [0, 1, 2] excludes it" in outcome.reason


def test_a_late_member_joins_the_founded_view_or_rejoins_a_group_that_went_on() -> None:
    founded = View(5, (0, 1, 2))
    agreement = RestartAgreement(2, Logs(View(3, (0, 1, 2))), ME)
    agreement.receive(0, Logs(founded).state(RestartPhase.FOUNDED, answering=ME))
    assert agreement.outcome() == Found(founded)
    moved = RestartAgreement(2, Logs(View(4, (0, 1, 2))), ME)
    moved.receive(0, Logs(View(6, (0, 1, 2))).state(RestartPhase.RUNNING, answering=ME))
    assert moved.outcome() is None, "the group still names it: it waits to be removed"
    assert moved.waiting_for() == [0, 1], "and keeps asking the view's members"
    moved.receive(1, Logs(View(7, (0, 1))).state(RestartPhase.RUNNING, answering=ME))
    outcome = moved.outcome()
    assert isinstance(outcome, Rejoin) and outcome.contacts == (0, 1)
    assert "runs without it" in outcome.reason


def test_a_late_member_with_another_commit_at_the_founded_epoch_joins_the_founded_view() -> None:
    """Paxos sweep seed 12852: member 1 logged the commit of view 5 without member 3 (its
    disk failed), then everyone crashed; the others founded view 5 after view 4 itself (too
    few logged the commit for it to have been final). Member 1 never ran view 5 and takes
    part in it; one that logged that very view as its commit may have, and waits."""
    commit = View(5, (0, 1, 2, 4))
    founded = View(5, FIVE.members)
    late = RestartAgreement(1, Logs(FIVE, commit), ME)
    late.receive(0, Logs(founded).state(RestartPhase.FOUNDED, answering=ME))
    assert late.outcome() == Found(founded)
    same = RestartAgreement(1, Logs(FIVE, founded), ME)
    same.receive(0, Logs(founded).state(RestartPhase.FOUNDED, answering=ME))
    assert same.outcome() is None, "it may have installed the view it logged the commit of"
    ran = RestartAgreement(1, Logs(founded), ME)
    ran.receive(0, Logs(founded).state(RestartPhase.FOUNDED, answering=ME))
    assert ran.outcome() is None, "it founded or installed that view in an earlier incarnation"


def test_a_late_member_a_founder_already_suspects_waits_to_be_removed() -> None:
    """A founder that suspects the late member (its earlier incarnation's link broke) answers
    that the founded view runs: the view will remove it, so it waits for that and rejoins,
    whatever another founder that does not suspect it yet says, and in whichever order."""
    founded = View(5, (0, 1, 2))
    runs = Logs(founded).state(RestartPhase.RUNNING, answering=ME)
    welcomes = Logs(founded).state(RestartPhase.FOUNDED, answering=ME)
    for answers in ((runs, welcomes), (welcomes, runs)):
        late = RestartAgreement(2, Logs(View(3, (0, 1, 2))), ME)
        for src, answer in enumerate(answers):
            late.receive(src, answer)
        assert late.outcome() is None
        assert late.waiting == "the group to remove it from view 5"


class Wire:
    """Instant, ordered delivery among a few nodes, with one node's outbox inspectable."""

    def __init__(self, nodes: dict[int, Node]) -> None:
        self.nodes = nodes
        self.sent: dict[int, list[tuple[int, WireMessage]]] = {n: [] for n in nodes}
        self.events: dict[int, list[object]] = {n: [] for n in nodes}
        self.down: set[int] = set()

    def pump(self, now: float) -> None:
        queue: deque[tuple[int, int, WireMessage]] = deque()
        while True:
            for src, node in self.nodes.items():
                for dst, message in node.outbox():
                    self.sent[src].append((dst, message))
                    queue.append((src, dst, message))
                events = node.events()
                self.events[src].extend(events)
                for event in events:
                    # An instant disk for the shards and founded views; commits wait for
                    # the test to say they are logged.
                    if isinstance(event, PersistRequested):
                        node.persisted(event.subgroup, event.epoch, event.upto, now)
                    elif isinstance(event, CutLogRequested):
                        node.cut_logged(event.subgroup, event.epoch, now)
                    elif isinstance(event, ViewLogRequested) and not event.commit:
                        node.view_logged(event.view, now)
                    else:
                        continue
                    queue.append((src, src, Heartbeat(node.view.epoch)))  # go round again
            if not queue:
                return
            while queue:
                src, dst, message = queue.popleft()
                if dst in self.nodes and dst not in self.down and src not in self.down:
                    self.nodes[dst].receive(src, message, now)

    def run(self, start: float, end: float, step: float = 0.01) -> None:
        now = start
        while now < end:
            for member, node in self.nodes.items():
                if member not in self.down:
                    node.tick(now)
            self.pump(now)
            now += step


def group_of(layout: object, members: tuple[int, ...] = (0, 1, 2)) -> Wire:
    view = View(0, members)
    return Wire({m: Node(m, view, layout, FAST) for m in members})  # type: ignore[arg-type]


def commits_shown(wire: Wire, member: int) -> list[MembershipRow]:
    return [m for _, m in wire.sent[member] if isinstance(m, MembershipRow) and m.committed]


def test_a_row_never_shows_a_commit_its_member_has_not_logged() -> None:
    wire = group_of(PAXOS)
    wire.run(0.0, 0.2)
    wire.down.add(2)
    wire.nodes[0].report_failure(2, 0.2)
    wire.nodes[1].report_failure(2, 0.2)
    wire.run(0.2, 0.35)  # the disk takes its time, well within the heartbeat timeout
    requests = {m: [e for e in wire.events[m] if isinstance(e, ViewLogRequested)] for m in (0, 1)}
    assert requests[0] and requests[0][0].view == View(1, (0, 1), departed=(2,))
    assert not commits_shown(wire, 0), "the leader showed its commit before logging it"
    assert not any(isinstance(e, ViewInstalled) and e.view.epoch == 1 for e in wire.events[0])
    wire.nodes[0].view_logged(requests[0][0].view, 0.35)
    wire.run(0.35, 0.5)
    requests[1] = [e for e in wire.events[1] if isinstance(e, ViewLogRequested)]
    assert requests[1], "the follower is asked to log the commit it received"
    assert not commits_shown(wire, 1), "the follower echoed a commit before logging it"
    assert not any(isinstance(e, ViewInstalled) and e.view.epoch == 1 for e in wire.events[1])
    wire.nodes[1].view_logged(requests[1][0].view, 0.5)
    wire.run(0.5, 0.7)
    assert commits_shown(wire, 1)
    for member in (0, 1):
        assert wire.nodes[member].view.epoch == 1, "installed once both logged the commit"


def test_a_group_without_paxos_shards_logs_no_commit() -> None:
    wire = group_of(ORDERED)
    wire.run(0.0, 0.2)
    wire.down.add(2)
    wire.nodes[0].report_failure(2, 0.2)
    wire.run(0.2, 1.5)
    assert not any(isinstance(e, ViewLogRequested) for e in wire.events[0])
    assert wire.nodes[0].view.epoch == 1 and wire.nodes[1].view.epoch == 1


def test_restarting_nodes_agree_and_found_one_view() -> None:
    logged = {0: Logs(View(3, (0, 1, 2))), 1: Logs(View(4, (0, 1, 2)))}
    nodes = {m: Node(m, None, PAXOS, FAST, restart=v) for m, v in logged.items()}
    wire = Wire(nodes)
    wire.run(0.0, 0.3)
    for member in (0, 1):
        assert nodes[member].founded == View(5, (0, 1, 2)), member
        assert nodes[member].view == View(5, (0, 1, 2))
    late = Node(2, None, PAXOS, FAST, restart=Logs(View(3, (0, 1, 2))))
    wire.nodes[2] = late
    wire.sent[2], wire.events[2] = [], []
    wire.run(0.3, 0.6)
    assert late.view == View(5, (0, 1, 2)), "the late member joined the founded view"
    assert not any(isinstance(e, Stopped) for events in wire.events.values() for e in events)


def test_a_founder_that_suspects_a_late_member_keeps_it_out_of_the_founded_view() -> None:
    """Beyond-budget stay-down seed 44145: member 0's earlier incarnation crashed just as 1
    and 4 founded their view, and they suspected it; its next incarnation took part in the
    view all the same, led its own pair as 1 led the other, each short of a majority, for
    good. A founder that suspects the asker now tells it the view runs, and it waits to be
    removed instead."""
    logged = {0: Logs(View(3, (0, 1, 2))), 1: Logs(View(4, (0, 1, 2)))}
    nodes = {m: Node(m, None, PAXOS, FAST, restart=v) for m, v in logged.items()}
    wire = Wire(nodes)
    wire.run(0.0, 0.3)
    assert nodes[0].view == nodes[1].view == View(5, (0, 1, 2))
    nodes[0].link_lost(2, 0.3, "its earlier incarnation crashed")
    late = Node(2, None, PAXOS, FAST, restart=Logs(View(3, (0, 1, 2))))
    wire.nodes[2] = late
    wire.sent[2], wire.events[2] = [], []
    wire.run(0.3, 0.35)
    assert late.view != View(5, (0, 1, 2)), "it took part in a view that removes it"
    assert late.restart_waits_for == "the group to remove it from view 5"


def test_a_founded_view_says_which_shards_the_logs_hold_current() -> None:
    """Member 2's logs end in view 2; the group installed view 4 and founds view 5 on it.
    View 3 went on without 2 (it was removed, then rejoining when everyone crashed), so the
    state its logs rebuilt is from an earlier stint and must not count in the comparison
    (beyond-budget stay-down seed 63101); 0 and 1 installed view 4 and hold their shard's
    logs current."""
    logged = {0: View(4, (0, 1, 2)), 1: View(4, (0, 1, 2)), 2: View(2, (0, 1, 2))}
    nodes = {m: Node(m, None, PAXOS, FAST, restart=Logs(v)) for m, v in logged.items()}
    wire = Wire(nodes)
    wire.run(0.0, 0.3)
    for member, current in ((0, {("Ledger", 0, 0)}), (1, {("Ledger", 0, 0)}), (2, set())):
        installed = [e for e in wire.events[member] if isinstance(e, ViewInstalled)]
        assert [e.view for e in installed] == [View(5, (0, 1, 2))], member
        assert installed[0].restarted_shards == frozenset(current), member


def test_a_rejoining_member_ignores_a_welcome_into_a_view_that_named_its_crashed_self() -> None:
    """Member 2 learns that view 6 [0, 1] runs without it and asks to join; a contact that has
    not installed view 6 yet still has 2 in its view and welcomes it there, as it would a
    joiner whose welcome was lost. Taking that view, the new incarnation would step into the
    crashed one's place (Paxos sweep seed 1993): only a welcome into a later view counts."""
    node = Node(2, None, PAXOS, FAST, restart=Logs(View(4, (0, 1, 2))), incarnation=ME)
    running = Logs(View(6, (0, 1))).state(RestartPhase.RUNNING, answering=ME)
    node.receive(0, running, 0.0)
    assert "runs without it" in node.rejoined
    node.receive(1, Welcome(5, (0, 1, 2), (), (), incarnation=ME), 0.1)
    assert not node.is_member and node.stats["stale_welcome"] == 1
    node.receive(0, Welcome(7, (0, 1, 2), (2,), (), incarnation=ME), 0.2)
    assert node.is_member and node.view.epoch == 7
