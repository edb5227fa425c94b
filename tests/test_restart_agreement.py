"""The restart agreement and the commit log it relies on, at the level of the sans-IO core.

The sweeps (tests/test_paxos_sim.py) check the whole restart under random faults; these tests
pin each rule on its own: whom a restarting member waits for, which logged view wins, when it
founds, when it refuses, and that a member's row never shows a commit its driver has not
logged.
"""

from __future__ import annotations

from collections import deque

from pyderecho.core.config import CoreConfig
from pyderecho.core.events import CommitLogRequested, PersistRequested, Stopped, ViewInstalled
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.node import Node
from pyderecho.core.restart import Found, LoggedView, Refused, RestartAgreement
from pyderecho.core.view import View
from pyderecho.wire import Heartbeat, MembershipRow, RestartPhase, RestartState, WireMessage

FAST = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5, startup_timeout=2.0)
PAXOS = layout_of({"Ledger": every_member(Mode.PAXOS)})
ORDERED = layout_of({"Ledger": every_member(Mode.ORDERED)})


def state(view: View, *, committed: bool = False, rank: int = 0) -> RestartState:
    return LoggedView(view, committed, rank).state(RestartPhase.RESTARTING)


def test_a_member_waits_for_a_majority_of_the_newest_view_it_knows() -> None:
    agreement = RestartAgreement(0, LoggedView(View(4, (0, 1, 2, 3, 4))))
    assert agreement.outcome() is None
    assert agreement.waiting_for() == [1, 2, 3, 4]
    agreement.receive(1, state(View(4, (0, 1, 2, 3, 4))))
    assert agreement.outcome() is None, "two of five is no majority"
    agreement.receive(2, state(View(4, (0, 1, 2, 3, 4))))
    assert agreement.outcome() == Found(View(5, (0, 1, 2, 3, 4)))


def test_a_newer_view_heard_moves_the_majority_needed_to_it() -> None:
    agreement = RestartAgreement(0, LoggedView(View(4, (0, 1, 2, 3, 4))))
    agreement.receive(1, state(View(5, (0, 1, 3))))
    agreement.receive(2, state(View(4, (0, 1, 2, 3, 4))))
    # Three of the five answered, but member 1 knows view 5: its majority is what counts.
    assert agreement.outcome() == Found(View(6, (0, 1, 3)))
    # A member of view 5 counts even if its own logs stop before it: a view after 5 would
    # be in the logs of a majority of 5, so one of any two of its three members would say.
    late = RestartAgreement(3, LoggedView(View(4, (0, 1, 2, 3, 4))))
    late.receive(2, state(View(4, (0, 1, 2, 3, 4))))
    assert late.outcome() is None
    late.receive(1, state(View(5, (0, 1, 3))))
    assert late.waiting_for() == [0]
    assert late.outcome() == Found(View(6, (0, 1, 3)))


def test_an_installed_view_beats_a_commit_and_a_later_leaders_commit_an_earlier_ones() -> None:
    members = (0, 1, 2, 3, 4)
    earlier = LoggedView(View(5, (0, 1, 2, 3)), committed_only=True, leader_rank=0)
    later = LoggedView(View(5, (1, 2, 3)), committed_only=True, leader_rank=1)
    installed = LoggedView(View(5, (1, 2, 3, 4)))
    assert installed.order() > later.order() > earlier.order()
    assert LoggedView(View(6, members), True, 0).order() > installed.order()
    agreement = RestartAgreement(2, earlier)
    agreement.receive(3, later.state(RestartPhase.RESTARTING))
    agreement.receive(1, installed.state(RestartPhase.RESTARTING))
    assert agreement.newest == installed
    assert agreement.outcome() == Found(View(6, (1, 2, 3, 4)))


def test_a_member_the_newest_view_excludes_refuses_and_says_what_to_do() -> None:
    agreement = RestartAgreement(4, LoggedView(View(4, (0, 1, 2, 3, 4))))
    agreement.receive(0, state(View(5, (0, 1, 2))))
    assert agreement.outcome() is None, "only one of view 5's three heard so far"
    agreement.receive(1, state(View(5, (0, 1, 2))))
    outcome = agreement.outcome()
    assert isinstance(outcome, Refused)
    assert "view 5 [0, 1, 2] excludes it" in outcome.reason
    assert "join the group as a new member" in outcome.reason


def test_a_late_member_joins_the_founded_view_and_refuses_a_group_that_went_on() -> None:
    founded = View(5, (0, 1, 2))
    agreement = RestartAgreement(2, LoggedView(View(3, (0, 1, 2))))
    agreement.receive(0, LoggedView(founded).state(RestartPhase.FOUNDED))
    assert agreement.outcome() == Found(founded)
    moved = RestartAgreement(2, LoggedView(View(4, (0, 1, 2))))
    moved.receive(0, LoggedView(View(6, (0, 1, 2))).state(RestartPhase.RUNNING))
    outcome = moved.outcome()
    assert isinstance(outcome, Refused) and "runs without it" in outcome.reason


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
                    if isinstance(event, PersistRequested):  # an instant disk for the shards
                        node.persisted(event.subgroup, event.epoch, event.upto, now)
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
    requests = {m: [e for e in wire.events[m] if isinstance(e, CommitLogRequested)] for m in (0, 1)}
    assert requests[0] and requests[0][0].view == View(1, (0, 1), departed=(2,))
    assert not commits_shown(wire, 0), "the leader showed its commit before logging it"
    assert not any(isinstance(e, ViewInstalled) and e.view.epoch == 1 for e in wire.events[0])
    wire.nodes[0].commit_logged(requests[0][0].view, 0.35)
    wire.run(0.35, 0.5)
    requests[1] = [e for e in wire.events[1] if isinstance(e, CommitLogRequested)]
    assert requests[1], "the follower is asked to log the commit it received"
    assert not commits_shown(wire, 1), "the follower echoed a commit before logging it"
    assert not any(isinstance(e, ViewInstalled) and e.view.epoch == 1 for e in wire.events[1])
    wire.nodes[1].commit_logged(requests[1][0].view, 0.5)
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
    assert not any(isinstance(e, CommitLogRequested) for e in wire.events[0])
    assert wire.nodes[0].view.epoch == 1 and wire.nodes[1].view.epoch == 1


def test_restarting_nodes_agree_and_found_one_view() -> None:
    logged = {0: LoggedView(View(3, (0, 1, 2))), 1: LoggedView(View(4, (0, 1, 2)))}
    nodes = {m: Node(m, None, PAXOS, FAST, restart=v) for m, v in logged.items()}
    wire = Wire(nodes)
    wire.run(0.0, 0.3)
    for member in (0, 1):
        assert nodes[member].founded == View(5, (0, 1, 2)), member
        assert nodes[member].view == View(5, (0, 1, 2))
    late = Node(2, None, PAXOS, FAST, restart=LoggedView(View(3, (0, 1, 2))))
    wire.nodes[2] = late
    wire.sent[2], wire.events[2] = [], []
    wire.run(0.3, 0.6)
    assert late.view == View(5, (0, 1, 2)), "the late member joined the founded view"
    assert not any(isinstance(e, Stopped) for events in wire.events.values() for e in events)
