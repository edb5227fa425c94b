"""Virtual synchrony membership: failure detection, the view-change agreement, the ragged edge.

Failure detection. Members sit on a ring in rank order; each watches its ``monitors`` successors
and sends heartbeats to its predecessors, and any frame counts as a heartbeat. Watching a few
neighbours instead of everyone keeps the cost linear in the group size (a thousand members do
not exchange a million heartbeats per period); what a neighbour cannot see, the progress timeouts
below catch. A member that suspects someone from silence pushes its membership row to every
member, so suspicion spreads at once; members that adopt a suspicion they saw, or whose link to
a member broke, push only to the leader (the next leader, when the leader is the one suspected).

Accusations are checked. A member adopts what the leader *proposes* at once (everyone must end
up agreeing with the leader), but a suspicion in a row, the leader's included, is an
*accusation*, also once the change is final (the leader then proposes exclusions from the
cleanup): the member asks the accused to answer (a probing heartbeat) and agrees only when
no answer comes within a quarter of the timeout. A crashed member cannot answer, so a crash
still spreads in about that long; a member that answers is alive and reachable from here, and
the accusation means a link between two live members is cut (a partial cut), or that the
accuser is behind a partition that just healed. The member reports the cut links it found in
its row. The leader proposes a removal it suspects once every other member agrees, or once it
chose the member to cover the cut links: when no new accusation or report came for half a
timeout, it removes as few members as leave no cut link between those that stay (greedy: the
member with the most cut links, then the one that accuses most, so of a one-way accusation the
accuser goes, then the highest rank; then a bounded search for a smaller cover, since on a
sparse graph of cut links greedy takes members of both sides), unless the accuser has heard
the accused again since (its row's ``heard_since``): the link works, the accused was a stalled
process, and it goes.
Members watch only a few ring neighbours, so most links of a cut are known to nobody when the
accusations pause: before the cover removes a member the leader reaches, the leader asks the
members across that member's cut links to answer, and before it removes anyone, the members it
would keep that it has not heard from lately, and suspects those that do not (they are cut
from it, and go anyway; the other side's accusations never reach a leader on the smaller side
of a cut or of a partition). The leader stays only with
the members it reaches, so it removes every member cut from it; if removing itself instead
would cost fewer members (it is on the smaller side of the cut), it steps down: it stops, and
the larger side, which no longer hears it, goes on without it. On a tie it stays, unless its
own loop ran late in this view: then its accusers were right, and it steps down. Once the
change is final it steps down only when a member it is cut from is known to be alive (it
accuses the leader and still cleans up): cut from paused members alone, it would only take
itself from the next view. It weighs stepping
down before it asks anyone to answer: no answer can make stepping down the worse choice. What
it knows of the links between the others comes from its followers' probes of the members it
suspects, so it suspects at once a member reported to accuse it that it does not hear. A
stall that times out while the cover still weighs cut links, final or not, hands the members
it blames to the cover, as cut from the leader, rather than to the proposal (or the
exclusions), and only the suspicions a
member decided on its own evidence (a broken link, a stall, a cover chosen while it could
still step down) carry over into the next view as decided: the others may be cut links the
last view never covered; what a leader decided once its change was final does not carry over
at all, nor does a follower's suspicion of a member that the final's exclusion from the
cleanup was the first word of (the final keeps that member).
Removing everyone accused would instead take out both ends of every cut link and could leave
no majority, as adopting every side's suspicions did, and a leader cut off on the smaller side
used to talk the bridges into suspecting the larger one.

Agreement (DESIGN.md 3.3). The leader is the lowest-ranked member its follower does not
suspect. It proposes the changes (removals of suspected members, joins) in its row; members copy
("echo") the leader's row into their own and push it back, which acknowledges it. When every
unsuspected member echoes the proposal, the leader *commits* it; when every unsuspected member
echoes the commit, it marks it *final*, and only then does anyone install the next view. The
extra round is what lets a leader fail at any point: a commit is made final only once every
possible successor holds it, and a successor first collects every member's row and adopts any
commit or final it finds before it proposes anything of its own. A member that already installed
the next view answers a member still in the old one, which lacks the final and takes it for its
leader, with a row that leads to that final (:meth:`Membership.final_as_leader`).

Partition safety. A member that suspects at least half of the view, or a leader that cannot gather
the acknowledgements of a majority, stops instead of going on: only a side holding a majority of
the view can ever install the next one. A stalled step is not silence, though: a leader whose
blame of the members its step waits on would cost it its majority asks them to answer first
(a bridge of a partial cut follows the other side's leader and sends this one nothing);
before it blames anyone for a stall that could cost it its majority, a leader asks the members
it would keep, as before a cover, so that one cut off on the smaller side stops before it
proposes removing some of the other side (a bridge would follow that proposal); a member
whose change is final, which adopts at once the suspicions of a successor collecting rows, does
not adopt its suspicion of a leader it still hears (a bridge would leave a leader that keeps its
majority only with the bridge); and a member
that installed a view with a joiner does not count the joiner late while a member of the old
view, perhaps the leader that will welcome it, still sends frames of that view, nor does a
successor whose step stalls on a joiner it never heard from blame it at the first stall
timeout: a leader that crashed as it installed the view sent no welcome, and the joiner asks
again a timeout later. Nor does a follower blame a leader it heard from within the timeout
for a stalled step before one more timeout: a live leader's cover waits up to a timeout for
each answer it asked for, and a leader that asks members to answer beats to the others
meanwhile, so that its followers hear it while it waits.

Ragged edge. Once the change is final, each shard's leader (its lowest-ranked survivor not
excluded) waits until every surviving shard member has wedged and stopped counting on the
would-be leaders below it, reuses a decision any of them already holds, or else computes, per
sender, the minimum ``received`` count over the survivors. It applies the decision once every
survivor echoes it; the others apply it once some member has. Every survivor delivers exactly
up to that point and discards the rest; in a ``Paxos`` shard, only once every survivor has
logged what it keeps. A survivor whose cleanup stalls (it crashed, or a partial cut separates
it from its shard) is left out only by the change's leader, which proposes an ``EXCLUDE``
change after the final, agreed like any other: the excluded member stops, and the next view's
change removes it. One that sees a decision keeping messages it lacks stops too, before the
exclusion reaches it: the decision was made without it. A member that applied its cleanups
and moved on to the next view, then answers no probe while a survivor's cleanup waits on it,
is excluded too (it crashed there); the survivors reuse the decision it applied, which they
echoed. The leader stays in this view until every survivor applied its cleanups or is
excluded, since a survivor's own suspicions must never decide whom a cleanup leaves out:
under a partial cut two survivors suspected each other and applied different cuts.
"""

from __future__ import annotations

import math
from collections.abc import Container
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from pyderecho.core.config import CoreConfig
from pyderecho.core.multicast import Outbox, ShardMulticast
from pyderecho.core.view import NodeId, View
from pyderecho.wire import Change, ChangeKind, Heartbeat, MembershipRow


@dataclass(slots=True)
class _Leading:
    """What a member does while it leads this view's change."""

    ready: bool
    """False while a leader that took over still collects every member's row."""
    pending_joins: list[Change] = field(default_factory=list)
    milestone: int = 0
    """The own row version every unsuspected member must echo before the next step."""


GAP_MARGIN = 2.0
"""An adaptive timeout is this many times the longest gap a member showed lately."""
GAP_MEMORY = 100
"""How long a gap is remembered, in heartbeat timeouts."""


class Silences:
    """The long gaps between frames each watched member showed lately, kept across views.

    A member on a starved machine sends its heartbeats late: a fixed timeout either suspects
    it (and every member adopts the suspicion) or must be set long for everyone. Instead each
    watched member gets twice the longest gap it showed in the last ``GAP_MEMORY`` timeouts,
    within ``[heartbeat_timeout, heartbeat_timeout_max]`` (a simple accrual detector: the
    evidence needed grows with the delays observed, never past the bound the user set). Gaps
    are measured on this member's clock after its own lateness is taken out
    (:meth:`Membership.tick`), and only gaps over half the timeout are kept: shorter ones
    cannot raise it, and the frame path stays one comparison.
    """

    def __init__(self, config: CoreConfig) -> None:
        self._base = config.heartbeat_timeout
        self._top = max(config.heartbeat_timeout_max, config.heartbeat_timeout)
        self._memory = GAP_MEMORY * config.heartbeat_timeout
        self.long_gap = config.heartbeat_timeout / 2 if self._top > self._base else float("inf")
        """Gaps longer than this are worth keeping (none when the timeout is fixed)."""
        self._gaps: dict[NodeId, list[tuple[float, float]]] = {}

    def record(self, member: NodeId, gap: float, now: float) -> None:
        gaps = self._gaps.setdefault(member, [])
        gaps.append((now, gap))
        self._forget(gaps, now)

    def timeout(self, member: NodeId, now: float) -> float:
        """How long ``member`` may be silent before it is suspected."""
        gaps = self._gaps.get(member)
        if not gaps:
            return self._base
        self._forget(gaps, now)
        longest = max((gap for _, gap in gaps), default=0.0)
        return min(self._top, max(self._base, GAP_MARGIN * longest))

    def _forget(self, gaps: list[tuple[float, float]], now: float) -> None:
        while gaps and now - gaps[0][0] > self._memory:
            gaps.pop(0)


def _successors(members: tuple[NodeId, ...], rank: int, count: int) -> list[NodeId]:
    n = len(members)
    return [members[(rank + step) % n] for step in range(1, min(count, n - 1) + 1)]


def _predecessors(members: tuple[NodeId, ...], rank: int, count: int) -> list[NodeId]:
    n = len(members)
    return [members[(rank - step) % n] for step in range(1, min(count, n - 1) + 1)]


def watchers_of(view: View, node: NodeId, monitors: int) -> list[NodeId]:
    """The members that watch ``node`` in ``view``: its ring predecessors."""
    return _predecessors(view.members, view.rank_of(node), monitors)


def next_multiple(now: float, interval: float) -> float:
    """The first multiple of ``interval`` after ``now``: when the next heartbeat falls due.

    Beats fall due on this grid, not an interval after the last one: members whose clocks
    agree (processes on one host) then tick together, and a member that wakes for its tick
    finds most beats sent to it already waiting, instead of waking once more for each (64 idle
    members over tcp: half the wake-ups and half the CPU). An interval after a late tick would
    let each member's phase drift apart by its own delays."""
    due = (math.floor(now / interval) + 1) * interval
    if due <= now:  # now sits on a multiple that now / interval rounded below
        due += interval
    return due


def _greedy_cover(
    links: set[tuple[NodeId, NodeId]],
    view: View,
    suspected: AbstractSet[NodeId] = frozenset(),
    slow: AbstractSet[tuple[NodeId, NodeId]] = frozenset(),
) -> list[NodeId]:
    """Members whose removal leaves no cut link, greedy: the member with the most cut links,
    then one the leader suspects already (removing it costs the leader's majority nothing
    more), then the one found slow the most, then the one that accuses most, then the highest
    rank. An accused member that answers everyone while its accuser alone cannot hear it is the
    likelier to be fine: of a one-way accusation, the accuser goes, unless the link is in
    ``slow``: its accuser heard the accused again since, so the link works and the accused
    was silent for a while (a stalled process), which is what the accusation said."""
    removed: list[NodeId] = []
    while links:
        member, _ = _most_linked(links, view, suspected, slow)
        removed.append(member)
        links = {link for link in links if member not in link}
    return removed


def _most_linked(
    links: set[tuple[NodeId, NodeId]],
    view: View,
    suspected: AbstractSet[NodeId],
    slow: AbstractSet[tuple[NodeId, NodeId]],
) -> tuple[NodeId, set[NodeId]]:
    """The member :func:`_greedy_cover` removes first from ``links``, with its neighbours."""
    neighbours: dict[NodeId, set[NodeId]] = {}
    accusing: dict[NodeId, int] = {}
    found_slow: dict[NodeId, int] = {}
    for link in links:
        accuser, node = link
        neighbours.setdefault(accuser, set()).add(node)
        neighbours.setdefault(node, set()).add(accuser)
        accusing[accuser] = accusing.get(accuser, 0) + 1
        if link in slow:
            found_slow[node] = found_slow.get(node, 0) + 1
    member = max(
        neighbours,
        key=lambda m: (
            len(neighbours[m]),
            m in suspected,
            found_slow.get(m, 0),
            accusing.get(m, 0),
            view.rank_of(m),
        ),
    )
    return member, neighbours[member]


_COVER_SEARCH_BUDGET = 50_000
"""How many links the search for a smaller cover than the greedy one may look at, in all:
enough to settle a cut of a few dozen members exactly, and a bound on a leader's tick
however large the graph of cut links (the search is exponential at worst)."""


def _least_cover(
    links: set[tuple[NodeId, NodeId]],
    view: View,
    suspected: AbstractSet[NodeId] = frozenset(),
    slow: AbstractSet[tuple[NodeId, NodeId]] = frozenset(),
) -> list[NodeId]:
    """The greedy cover, unless a search finds a smaller one within the budget.

    Greedy is not minimal, and on a partial cut the difference is the group: each member
    watches only its ring predecessors, so the cut links known form a sparse bipartite graph
    whose smallest covers are the two sides, while greedy, taking the best-linked member of
    either side first, ends with some of both (partial-cut seeds 30508 and 33558: seven
    members cut from seven, two bridges, the leader one of them; greedy removed nine of
    sixteen, the leader lost its majority, and every member stopped). The search branches
    as greedy would choose: the best-linked member goes, or else all its neighbours do. It
    keeps greedy's cover unless it finds a strictly smaller one, so greedy's preferences
    still choose between covers of one size; it prunes with a matching (each link of one
    needs a member of its own)."""
    best = _greedy_cover(links, view, suspected, slow)
    smaller = _CoverSearch(view, suspected, slow).smaller(links, [], len(best))
    return best if smaller is None else smaller


class _CoverSearch:
    """The branch and bound behind :func:`_least_cover`, with what its branches share."""

    def __init__(
        self,
        view: View,
        suspected: AbstractSet[NodeId],
        slow: AbstractSet[tuple[NodeId, NodeId]],
    ) -> None:
        self.view = view
        self.suspected = suspected
        self.slow = slow
        self.budget = _COVER_SEARCH_BUDGET  # the links it may still look at

    def smaller(
        self, links: set[tuple[NodeId, NodeId]], chosen: list[NodeId], bound: int
    ) -> list[NodeId] | None:
        """The smallest cover of ``links`` found that adds to ``chosen`` and has fewer than
        ``bound`` members, or None."""
        if not links:
            return chosen if len(chosen) < bound else None
        if self.budget < len(links) or len(chosen) + _matching_size(links) >= bound:
            return None
        self.budget -= len(links)
        member, neighbours = _most_linked(links, self.view, self.suspected, self.slow)
        found: list[NodeId] | None = None
        for taken in ({member}, neighbours):
            rest = {link for link in links if not taken.intersection(link)}
            cover = self.smaller(rest, chosen + sorted(taken), bound)
            if cover is not None:
                found, bound = cover, len(cover)
        return found


def _matching_size(links: set[tuple[NodeId, NodeId]]) -> int:
    """The size of a maximal matching of ``links``: no cover of them is smaller."""
    matched: set[NodeId] = set()
    for a, b in links:
        if a not in matched and b not in matched:
            matched.update((a, b))
    return len(matched) // 2


def next_view(view: View, changes: tuple[Change, ...]) -> View:
    """The view the final ``changes`` lead to: survivors keep their order, joiners go last."""
    removed = {c.node for c in changes if c.kind in (ChangeKind.REMOVE, ChangeKind.LEAVE)}
    joined = tuple(change.node for change in changes if change.kind is ChangeKind.JOIN)
    return View(
        epoch=view.epoch + 1,
        members=tuple(m for m in view.members if m not in removed) + joined,
        joined=joined,
        departed=tuple(m for m in view.members if m in removed),
    )


class Membership:
    """One member's side of failure detection and view-change agreement in one view."""

    def __init__(
        self,
        me: NodeId,
        view: View,
        config: CoreConfig,
        outbox: Outbox,
        now: float,
        *,
        suspected: set[NodeId] | None = None,
        decided: AbstractSet[NodeId] = frozenset(),
        founding: bool = False,
        log_commits: bool = False,
        silences: Silences | None = None,
    ) -> None:
        """``suspected``: the last view's suspicions of members this view keeps; ``decided``:
        those of them that need nobody's word (:attr:`decided`). ``founding``: this view
        starts the group (its first view, or the view a restart from logs begins with), so
        members may take a while to show up. ``log_commits``: the
        group keeps logs (it has ``Paxos`` shards), so a commit of the next view is logged
        (:attr:`commit_to_log`) before this member's row shows it to anyone."""
        self.me = me
        self.view = view
        self.config = config
        self._outbox = outbox
        self.rank = view.rank_of(me)
        self.suspected: set[NodeId] = {m for m in suspected or () if m in view}
        self.local_suspicion = bool(self.suspected)
        """A suspicion this member raised itself: its row then goes to everyone."""
        self.rows: dict[NodeId, MembershipRow] = {}
        self._leaving_rows: set[NodeId] = set()
        """Members whose row asks to leave: the leader's every step looks, and with none (nor
        a suspicion, nor a join) it need not walk the whole view."""
        self.version = 0
        self.changes: tuple[Change, ...] = ()
        self.committed = 0
        self.final = 0
        self.leader = self._lowest_unsuspected()
        self.leader_version = 0
        self.leaving = False
        self.log_commits = log_commits
        self.logged_commit: View | None = None
        """The commit of the next view the driver has logged durably."""
        self.stopped = ""
        """Why this member stopped, empty while it runs."""
        self.last_heard = dict.fromkeys(view.members, now)
        self.silences = silences if silences is not None else Silences(config)
        """Each watched member's long gaps, which set its timeout; the node keeps one across
        views, so that a slow member's history outlives the view change it may cause."""
        grace = config.startup_timeout - config.heartbeat_timeout
        others = [m for m in view.members if m != me]
        self._never_heard = dict.fromkeys(others, grace if founding else config.heartbeat_timeout)
        """Extra silence allowed to members not heard from yet in this view. Founders:
        processes of a new group start seconds apart (and a restart from logs replays them
        first), so one that has not shown up gets ``startup_timeout``. Later views: a joiner
        learns of the view only from the leader's welcome, and a survivor only from the final,
        which a leader that failed right then leaves to its successor to send (after it took
        over and collected every row), so each gets twice the timeout."""
        self.watched = _successors(view.members, self.rank, config.monitors)
        self.watchers = _predecessors(view.members, self.rank, config.monitors)
        self._last_tick = now
        self._ran_late = -math.inf
        """When this member's own loop last ran late (paused, starved): see :meth:`tick`."""
        self._next_heartbeat = now
        self._waiting_since = now
        """When the change last made progress here; a stall past the timeout is a failure."""
        self._leading: _Leading | None = None
        self._accusers: dict[NodeId, set[NodeId]] = {}
        """Who says each member is gone (in their rows), before this member agreed."""
        self._probes: dict[NodeId, float] = {}
        """When this member asked each accused member to answer."""
        self._answered: set[NodeId] = set()
        """Accused members heard from since they were asked: alive and reachable from here."""
        self._decided: set[NodeId] = self.suspected.intersection(decided)
        """Suspicions this member, as leader, proposes without waiting for the others to agree:
        blamed for a stall, a broken link, chosen to cover cut links, or decided so in the last
        view (:attr:`decided`)."""
        self._decided_once_final: set[NodeId] = set()
        """Members a cover chose or a stall blamed once the change was final, when this leader
        seldom steps down instead: the next view does not start with them
        (:attr:`carried`)."""
        self._only_excluded: set[NodeId] = set()
        """Members this member first suspected because the final excluded them from the
        cleanup, which the final keeps in the next view: it does not start with them
        (:attr:`carried`)."""
        self._reported: set[tuple[NodeId, NodeId]] = set()
        """Cut links the followers' rows report, as (accuser, accused) (:meth:`_hear_cuts`)."""
        self._unsettled = False
        """This leader suspects members it has not proposed, or knows of cut links it has not
        covered: it commits nothing until it has decided, so that no member it may still
        remove survives the change suspected (the ragged edge would leave it out)."""
        self._resurfaced: set[NodeId] = set()
        """Suspected members heard from since: a pause, not a cut link from this member."""
        self._suspected_at = dict.fromkeys(self.suspected, now)
        """When this member came to suspect each member it suspects."""
        self._last_accusation = now
        """When this member last learned of a new accusation: the leader covers the cut links
        only once none came for half a timeout (the members on each side of a cut agree with
        each other's suspicions a quarter timeout after the first ones, in a second wave)."""
        self._grace_given = False
        """The last stall timeout spared members that were heard from: the next one will not."""
        self._final_view: tuple[int, View] | None = None
        """(final, the view it leads to), computed once per final (:meth:`_next_view`)."""
        self.cleaned = False
        """The change is final and every shard's cleanup here is applied
        (:meth:`report_cleaned`); the row says so to the change's leader
        (:attr:`MembershipRow.cleaned`)."""
        self.cleanup_waits_on: set[NodeId] = set()
        """Members the ragged-edge cleanup waits on, set by the node once the change is final."""
        self._gone_ahead: set[NodeId] = set()
        """Members heard from in a later view (:meth:`went_ahead`)."""
        self._cleanup_probes: dict[NodeId, float] = {}
        """When this member asked each member its cleanup waits on, silent lately, to answer."""
        self._gone_silent: set[NodeId] = set()
        """Members that moved on to the next view and answer no probe, accused by a survivor
        still cleaning up: its cleanup waits on them. A suspicion of a member that moved on
        counts for nothing here (:meth:`suspect`), but the change's leader excludes these from
        the cleanup (Paxos seed 15712: a shard's leader applied its decision, moved on and
        crashed before the row saying so reached the shard's other member, which waited for
        it for good, and the change's leader for that member). Excluding it is safe: having
        applied its decision, it had every member it counted on echo it, and the member left
        leading the shard's cleanup reuses the decision it echoed."""
        self._stall_probes: dict[NodeId, float] = {}
        """As the leader of a final change whose cleanup stalls: when it asked each member
        that follows it but had not moved on, silent for a timeout, to answer."""
        self._majority_probes: dict[NodeId, float] = {}
        """As the leader of a change that is not final: when it asked each member that its
        stalled step waits on, and whose blame would cost it its majority, to answer
        (:meth:`_unless_they_answer`)."""
        self._kept_probes: dict[NodeId, float] = {}
        """As a leader about to cover cut links: when it asked each member its cover would
        keep, not heard from lately, to answer (:meth:`_ask_the_kept`)."""
        self.cleanup_logging = False
        """Set by the node while a ``Paxos`` shard's cleanup waits for survivors to log what it
        keeps: every survivor waits on every other there, so nobody is given extra time."""
        self.next_watchers: list[NodeId] = []
        """Set by the node once the next view is known: the members that will watch this one
        there. They get its heartbeats already, so that a cleanup that takes a while (a slow
        disk) is not taken for a failure by members that installed the next view first."""
        # A fresh row has nothing to say unless suspicions carried over from the last view.
        self._dirty = self.local_suspicion
        self._to_everyone = self.local_suspicion
        self._update_leadership(now)

    # -- queries ----------------------------------------------------------------------------

    @property
    def changing(self) -> bool:
        """A view change is under way: members must stay wedged until the next view."""
        return bool(self.suspected or self.changes or self.leaving)

    @property
    def leads(self) -> bool:
        """This member leads the change in this view (it welcomes the joiners)."""
        return self._leading is not None

    @property
    def unproposed_joins(self) -> tuple[Change, ...]:
        """The joins this member, leading, was asked for and has not proposed yet: they came
        while a change was under way, and wait for the next. The view they wait for has
        another membership, and perhaps another leader: the node hands them on there."""
        return tuple(self._leading.pending_joins) if self._leading is not None else ()

    @property
    def decided(self) -> frozenset[NodeId]:
        """The suspicions this member holds on evidence of its own that needs nobody's word: a
        broken link, a stall it blamed as leader, a cover it chose. The next view carries them
        over as such; the others it carries over are accusations still, weighed again there.

        A suspicion from silence alone may be a cut link, and a member on the smaller side of
        a cut that had not been covered when the view changed (the change removed someone
        else) then took it for a decision if it came to lead. Partial cut with faults seed
        2389: the leader of the new view, a bridge, crashed before its cover; its successor,
        cut off on the smaller side, proposed removing the larger side at once, the bridges
        adopted the proposal, and the group stopped.

        What this member decided as the change's leader once the change was final does not
        carry over at all (:attr:`carried`)."""
        return frozenset(self._decided.difference(self._decided_once_final))

    @property
    def carried(self) -> frozenset[NodeId]:
        """The suspicions the next view starts with: every one this member holds but those it
        decided as the change's leader once the change was final (:meth:`_decide`). It could
        seldom step down then (:meth:`_may_step_down`), which on a partial cut is what it
        might have done instead, so it left members out of the cleanup on its word alone: a
        choice for this view only. The next view hears them anew, and finds a cut again by
        the silence across it.

        - Partial cut with faults seed 6216: the leader on the smaller side covered one
          far-side member once its join was final; carried over as decided and proposed at
          once in the next view, that member's links no longer counted, the cover there found
          a tie, and the leader stayed.
        - Seed 13981: ten members with a joiner, the leader 0 and two others cut from four,
          three bridges. The join went final as the cut began, and the far side installed the
          next view before the rows saying so reached 0, which blamed three of them for its
          stalled cleanup and proposed their removal at once in the next view. The bridges
          followed, which left them on 0's side; a bridge then crashed, and no side held a
          majority. Now the bridges hear the far side and suspect none of it, and once the
          crash left 0's side short of a majority the bridges went on with the far side.
        - Seed 8688: thirteen members, the link between the leader 0 and 3 cut. 3, still
          cleaning up, suspected 0, and the members that had not heard 0 lately (a leader that
          waits on a cleanup sends nothing) took its word. Once final, 0 covered their
          accusations by suspecting six of its own side; five had moved on, and one, 5, had
          not. Carried over as an accusation, 5 was heard in the next view, taken for a slow
          member and removed, though no fault touched it. Now 0 starts the next view
          suspecting none of them, 5 still accuses it there (it took 3's word), and 0, an end
          of the cut link, steps down. (8688 passes with :meth:`_adopted_from_the_leader`'s
          rule alone too, and 6216 as well.)

        Nor does a member this member first suspected because the final change excluded it
        from the cleanup, unless it decided that member's failure since on evidence of its
        own (a broken link): the final keeps it in the next view, and the leader's word that
        its cleanup stalled is no evidence there. Membership seed 11101: fifteen members,
        seven paused. Once final, the leader 0 excluded three paused members from its
        stalled cleanup, 50 ms before they resumed; they held the final already, installed
        the next view as they resumed, and stayed. Two followers still cleaning up adopted
        the exclusions and carried them into the next view as accusations; the cover there,
        weighing six cut links between two accusers and three accused, removed the two,
        which no fault touched. A member this one suspected before the exclusion (a silence,
        an accusation it agreed with) carries over as before: on a partial cut that
        suspicion is the cut, and the next view needs it (partial cut with faults seed
        20696, which a first version that left out every exclusion failed, as it failed
        6525, 7508 and 13247)."""
        unfounded = self._only_excluded.difference(self._decided)
        return frozenset(self.suspected.difference(self._decided_once_final, unfounded))

    @property
    def excluded(self) -> frozenset[NodeId]:
        """Members the final change keeps but excluded from the cleanup since (the final grows
        by :attr:`ChangeKind.EXCLUDE` changes alone): the cleanups go on without them."""
        return frozenset(c.node for c in self.changes[: self.final] if c.kind is ChangeKind.EXCLUDE)

    def not_moving_on(self) -> list[NodeId]:
        """As the change's leader, once it is final: the survivors, other than this member,
        that have neither said they applied their cleanups nor been excluded. The leader stays
        in this view until there are none, for only it may exclude a member whose cleanup
        stalls (a survivor that crashed, or one cut off from its shard)."""
        survivors = self._next_view().members
        excluded = self.excluded
        return [
            m
            for m in survivors
            if m != self.me and m in self.view and m not in excluded and not self._moved_on(m)
        ]

    @property
    def commit_to_log(self) -> View | None:
        """The next view this member holds a commit of but has not logged yet: its row waits
        until the driver has (:meth:`commit_logged`). Since a change is final only once every
        unsuspected member echoed its commit, every view anyone installs is then in the logs of
        a majority of this view: what a restart after a total crash relies on to find it."""
        if not self.log_commits or not self.committed:
            return None
        committed = next_view(self.view, self.changes[: self.committed])
        return None if committed == self.logged_commit else committed

    def commit_logged(self, view: View) -> None:
        self.logged_commit = view

    @property
    def quiet(self) -> bool:
        """Nothing is under way: no change, suspicion, accusation, probe, cut link or row to
        push. Then a heartbeat received changes nothing a step would act on, only a silence
        clock (:attr:`Node.flush_due`)."""
        return not (
            self.changing
            or self._accusers
            or self._probes
            or self._reported
            or self._unsettled
            or self._dirty
            or self.stopped
        )

    def next_deadline(self) -> float:
        return min(self._next_heartbeat, self._last_tick + self.config.heartbeat_interval)

    # -- inputs -----------------------------------------------------------------------------

    def heard_from(self, src: NodeId, now: float) -> None:
        if src in self.last_heard:
            gap = now - self.last_heard[src]
            if gap > self.silences.long_gap and src in self.watched:
                self.silences.record(src, gap, now)
            self.last_heard[src] = now
            if src in self.suspected and src not in self._resurfaced:
                self._resurface(src, now)
            self._never_heard.pop(src, None)
            if src in self._probes and src not in self._answered:
                self._answered.add(src)
                self._dirty = True  # the leader learns the links cut from a live member

    def _resurface(self, member: NodeId, now: float) -> None:
        """``member``, suspected here, was heard from again: a pause, or a cut that healed.

        The row says so (``heard_since``), so that the leader learns the link works. And the
        cut links a leader covers changed: its own links to ``member`` drop out of the graph
        (:meth:`_cover`) while its followers' reports of theirs still stand until their rows
        say they hear it too. So the cover waits for the graph to settle again, as after a
        new accusation (partial-cut seed 35033: a cut of three from three, with two bridges,
        healed while the leader's cover waited for answers; the cover that ran at that very
        tick saw its own links to the other side healed and its followers' still cut, removed
        two of its own side and stopped the leader with half the group suspected, and every
        other member stopped too)."""
        self._resurfaced.add(member)
        self._dirty = True
        self._last_accusation = now

    def heard_behind(self, src: NodeId, now: float) -> None:
        """``src``, a member of this view that was in the one before, still sends frames of
        that view: it has not installed this one. A joiner learns of this view only from the
        welcome that the change's leader sends as it installs it, and that leader may be
        ``src``, held back by its own cleanup (a survivor across a partition). So a joiner
        not heard from yet is not late while ``src`` is behind: its silence counts from now.
        Without this, a member that moved on early blamed the joiner, and with the members
        the partition took, it counted half the view suspected and stopped (typed seed
        33304)."""
        assert src in self.view and src not in self.view.joined
        for joiner in self.view.joined:
            if joiner in self._never_heard:
                self.last_heard[joiner] = max(self.last_heard[joiner], now)

    def receive_heartbeat(self, src: NodeId, beat: Heartbeat) -> None:
        """Any frame counts as life (:meth:`heard_from`); a probe also asks for an answer,
        from a member of this view or, once the change is final, of the next one: a member of
        the next view probes this one while it still finishes this view's cleanup."""
        if beat.probe and not self.stopped and (src in self.view or self._kept_by_final(src)):
            self._outbox.append((src, Heartbeat(self.view.epoch, answer=True)))

    def tick(self, now: float) -> None:
        """Send heartbeats, suspect silent watched members, and time out stalled steps."""
        if self.stopped:
            return
        config = self.config
        late = now - self._last_tick - config.heartbeat_interval - config.heartbeat_timeout / 2
        self._last_tick = now
        if now >= self._next_heartbeat:
            self._next_heartbeat = next_multiple(now, config.heartbeat_interval)
            beat = Heartbeat(self.view.epoch)
            self._outbox.extend((peer, beat) for peer in self.watchers)
            self._outbox.extend(
                (peer, beat) for peer in self.next_watchers if peer not in self.watchers
            )
        if late > 0:
            self._ran_late = now
            # This member's own loop ran late (paused, starved of CPU): ticks are due every
            # heartbeat interval, and a delay beyond half a timeout more is its own silence,
            # not its peers'. Their frames of that time may still wait unread behind
            # this tick, so the clocks of silence and stalls move on by that much.
            for member, heard in self.last_heard.items():
                self.last_heard[member] = min(now, heard + late)
            self._waiting_since = min(now, self._waiting_since + late)
            for probes in (self._probes, self._majority_probes, self._kept_probes):
                for member, asked in probes.items():
                    probes[member] = min(now, asked + late)
        # Once the change is final, a watched member's silence says nothing: it may have moved
        # on to the next view, where it beats to its watchers there, and a suspicion carried
        # over would count against it there (Paxos sweep seed 1297 removed two live members
        # so). What still matters is watched otherwise: the members a cleanup waits on
        # (probed, below) and, at the leader, the survivors that do not move on (its stall).
        for member in () if self.final else self.watched:
            if self._departing(member):
                continue  # it may have exited already; a stalled change blames it if need be
            silent_since = self.last_heard[member]
            silent_since += self._never_heard.get(member, 0.0)
            deadline = now - self.silences.timeout(member, now)
            if member not in self.suspected and silent_since < deadline:
                self.suspect(member, now, local=True)
                if self.stopped:
                    return
        if self.final and not self.cleaned:
            self._update_leadership(now)  # members learned to have moved on lead no more
            self._probe_cleanup_waits(now)
            if self.stopped:
                return
        self._weigh_accusations(now)
        if self.stopped:
            return
        if self._majority_probes:
            self._blame_the_unanswering(now)
            if self.stopped:
                return
        if self.changing and now - self._waiting_since > self._patience():
            self._time_out_stalled_step(now)

    def _patience(self) -> float:
        """How long a step may stall here before whoever it waits on is blamed.

        A follower gives the leader three times as long as the leader gives its followers, so
        that a slow follower is removed before anyone blames the leader for it: a leader may
        take over a quarter timeout after its followers chose it (it checks the accusation of
        the last one first), and it spares members heard lately for one more timeout."""
        hurried = self._leading is not None or (self.final and self.cleanup_logging)
        return self.config.heartbeat_timeout * (1 if hurried else 3)

    def _probe_cleanup_waits(self, now: float) -> None:
        """Ask each member the cleanup waits on that was silent for half a timeout to answer,
        and suspect it when it does not within another half.

        A cleanup's leader that crashed after handing out its decision leaves its followers
        waiting for it to apply the decision, and nobody may watch it: its watchers may have
        moved on to the next view. Silence alone is no evidence (a live leader that waits on
        someone else sends nothing), an unanswered probe is; the suspicion makes this member,
        or tells the view change's leader, that the member must be excluded."""
        half = self.config.heartbeat_timeout / 2
        waits_on = set(self.cleanup_waits_on)
        if self.leader != self.me and any(m in self.suspected for m in waits_on):
            # Only the change's leader can exclude a member the cleanup waits on in vain: a
            # leader that crashed after its final leaves the cleanup stalled for good unless
            # it is found out too (Paxos sweep seed 211: the members of a shard whose member
            # crashed mid-cleanup waited for the leader's exclusion after it crashed as well,
            # while the others were in the next view).
            waits_on.add(self.leader)
        for member in sorted(waits_on):
            if member == self.me or member in self.suspected or member not in self.last_heard:
                continue
            asked = self._cleanup_probes.get(member)
            if asked is None:
                if self._unheard(member, now):
                    self._cleanup_probes[member] = now
                    self._ask_to_answer(member)
            elif self.last_heard[member] > asked:
                del self._cleanup_probes[member]
            elif now - asked >= half:
                self.suspect(member, now, local=True)
                if self.stopped:
                    return

    def final_as_leader(self) -> MembershipRow:
        """This membership's final change, in a row that leads to it: for a member still in
        this view that takes this one, already in the next view, for its leader.

        Such a member lost its leader before the final reached it, and the successor it
        chose (this member, the lowest it does not suspect) has moved on and leads no more
        here: without an answer it waits a stall timeout and is then blamed, alive, by the
        next view's leader (sweep seed 826). A final never changes (every later leader adopts
        the same one), so answering with it is what any successor would end up proposing.
        """
        assert self.final, "only a member that installed the next view answers for this one"
        self.version += 1
        return MembershipRow(
            epoch=self.view.epoch,
            version=self.version,
            suspected=tuple(sorted(self.suspected)),
            leader=self.me,
            leader_version=self.version,
            changes=self.changes,
            committed=self.committed,
            final=self.final,
            cleaned=True,
        )

    def report_cleaned(self) -> None:
        """The node applied every shard's cleanup here: the row says so (:attr:`cleaned`)."""
        assert self.final, "a cleanup starts only once the change is final"
        self.cleaned = True
        self._dirty = True

    def progress(self, now: float) -> None:
        """The change moved forward (a shard finished its cleanup): restart the stall clock."""
        self._waiting_since = now

    def link_lost(self, node: NodeId, now: float) -> None:
        """The transport reports that the link to ``node`` broke.

        A member that asked to leave closes its links as it exits, which it does once it
        learns its leave is final, perhaps before this member has: its closing link is no
        failure. Should it really fail in the middle of leaving, the change stalls on it and
        the stall timeout blames it (:meth:`_time_out_stalled_step`).

        A broken link is no slow answer: as leader, this member proposes the removal at once,
        without waiting for the followers' probes (a crash's links break everywhere at once;
        a cut link breaks only after TCP gave up on it, long after its silence was weighed).

        For the same reason a follower tells only its leader of a broken link: when a member
        is killed every member's link to it breaks, so each learns it by itself; every member
        telling every member made a kill cost each member a frame per member
        (docs/scaling.md). A broken link to the leader goes to the next leader, the lowest
        rank this member does not suspect, when the leader's failure is all the row says: if
        the next leader's own link broke too, it takes over and tells everyone; if the old
        leader answers its probe, the link is cut, and it reports the cut to the old leader,
        whose cover decides. A row with more to say (other suspicions, accusations being
        weighed: a partial cut under way) goes to everyone, as before: the covers on both
        sides of a cut need every report, and without them a bridge member was removed.
        """
        if not self._departing(node):
            self._decided.add(node)
            self.suspect(node, now, local=True, tell_everyone=False)

    def suspect(self, node: NodeId, now: float, *, local: bool, tell_everyone: bool = True) -> None:
        """Suspect ``node`` (seen by this member itself when ``local``: its row then goes to
        every member, unless not ``tell_everyone``).

        Once the change is final, the next view is settled: a member it leaves out (one that
        leaves, and exits as soon as it learns that) is no longer waited on, and suspecting it
        would only count against the majority for nothing; nor is a member that moved on to
        the next view, silent here since.
        """
        if node == self.me or node not in self.view or node in self.suspected:
            return
        if self._left_out_by_final(node) or self._moved_on(node):
            return
        if not self.changing:
            self._waiting_since = now
        self.suspected.add(node)
        self._suspected_at[node] = now
        self._last_accusation = now  # the graph of cut links changed: it settles again
        self._dirty = True
        if local and tell_everyone:
            self._to_everyone = True
        if not self._holds_majority():
            self._stop(
                f"partitioned: suspects {len(self.suspected)} of {len(self.view.members)} "
                "members, so this side holds no majority"
            )
            return
        self._update_leadership(now, announce=tell_everyone or not local or not self._only(node))

    def _only(self, node: NodeId) -> bool:
        """``node``'s failure is all this member's row has to say: it suspects no one else and
        weighs no accusation (a row with more is evidence the others must see: a partial cut
        under way, whose cover needs every report)."""
        return self.suspected == {node} and not any(self._accusers.values())

    def request_join(self, change: Change, now: float) -> NodeId | None:
        """A joiner asked; returns the leader to forward to, or None when this member leads.

        A join that starts a change starts its stall clock; one queued behind a step under
        way leaves that step's clock alone, for it moves nothing forward. Restarting it held
        a final change, waiting on the cleanup of a member that crashed just after it moved
        on, a whole timeout longer, until the members of the next view, left without their
        leader, accused it and it stepped down (membership seed 43444)."""
        if self._leading is None:
            return self.leader
        if change.node in self.view or any(c.node == change.node for c in self.changes):
            return None
        if all(c.node != change.node for c in self._leading.pending_joins):
            if not self.changing and not self._leading.pending_joins:
                self._waiting_since = now  # the join starts a change
            self._leading.pending_joins.append(change)
        return None

    def request_leave(self, now: float) -> None:
        if not self.leaving:
            if not self.changing:
                self._waiting_since = now
            self.leaving = True
            self._dirty = True

    def receive_row(self, src: NodeId, row: MembershipRow, now: float) -> None:
        if self.stopped or src in self.suspected or src not in self.view:
            return
        known = self.rows.get(src)
        if known is not None and row.version <= known.version:
            return
        if self._void(row):
            return
        self.rows[src] = row
        if row.leaving:
            self._leaving_rows.add(src)
        else:
            self._leaving_rows.discard(src)
        leading = self._leading
        if leading is not None and not leading.ready and row.leader == self.me:
            self._absorb(row)
        if leading is not None:
            self._hear_cuts(row, now)
        claims = [n for n in row.suspected if n in self.view and not self._left_out_by_final(n)]
        news = [n for n in claims if n not in self.suspected]
        if src != self.leader and not (self.final and self._successor(src, row, now)):
            # Once the change is final the next view is settled, and the rows that still come
            # from a would-be leader are a successor's collecting them (perhaps to a view this
            # member already left, which ticks no more): adopting its suspicions is what lets
            # it find the final. Anyone else's are accusations still.
            self._hear_accusations(src, claims, now)
            return
        if src == self.leader:
            proposed = self._adopted_from_the_leader(row)
            self._hear_accusations(src, [n for n in claims if n not in proposed], now)
            news = [n for n in news if n in proposed]
        if not self._adoptable(news):
            self.suspect(src, now, local=True)
            return
        if self.me in news:
            if src == self.leader:
                self._stop(f"removed from the group: the leader {src} proposes its removal")
                return
            news.remove(self.me)
        exclusions = {c.node for c in row.changes if c.kind is ChangeKind.EXCLUDE} if news else ()
        for node in news:
            self._adopt(node, now, excluded=node in exclusions)
            if self.stopped:
                return
        if src == self.leader and row.leader == src and not row.collecting:
            self._follow(row, now)

    def _adopted_from_the_leader(self, row: MembershipRow) -> set[NodeId]:
        """The members whose failure this follower adopts at once from its leader's ``row``:
        those it proposes to remove, or, once the change is final, to exclude from the
        cleanup. Everyone must end up agreeing with the leader.

        What the leader merely suspects is an accusation like anyone's: a leader cut off from
        members the rest of the group reaches must not talk its followers into suspecting
        them (they would stop with it); it proposes a removal only once its followers agree,
        or once it chose the member to cover the cut links. So too once the change is final,
        when the leader seldom steps down: its followers used to adopt all it suspected
        then. Partial cut with faults seed 10821: thirteen members, five with the leader 0
        cut from six, two bridges, one paused as a join went final; 0 suspected the far side
        as its members accused it, its own side adopted that and, taking the far side's word
        that 0 was gone as well, counted seven of thirteen suspected, and every member
        stopped. Seeds 6353 and 15537 failed alike; in 6353 a bridge that adopted the cut-off
        leader's suspicions of the larger side went on to lead the cleanup and excluded
        members of the larger side, which then held no majority.

        A successor collecting rows once the change is final is another matter: its
        suspicion of the leader this member no longer hears is adopted whole
        (:meth:`_successor`), which is how the survivors move over to it. Taken for an
        accusation too, it left a successor on the larger side of a cut without the rows
        saying its side had cleaned up, and it blamed one of its own side for the stall
        (seed 8462)."""
        return {c.node for c in row.changes if c.kind is not ChangeKind.JOIN}

    # -- steps ------------------------------------------------------------------------------

    def _follow(self, row: MembershipRow, now: float) -> None:
        """Echo the leader's row: its changes, commit and final become this member's."""
        if row.version <= self.leader_version:
            return
        self.leader_version = row.version
        self._dirty = True
        if row.final < self.final:
            return  # a final never shrinks: every later leader adopts it, then only extends it
        if (row.changes, row.committed, row.final) != (self.changes, self.committed, self.final):
            self._take_change(row, now)

    def _take_change(self, row: MembershipRow, now: float) -> None:
        """Make ``row``'s changes, commit and final this member's, and suspect whom they
        remove."""
        assert row.changes[: self.final] == self.changes[: self.final], "a final only grows"
        self.changes, self.committed, self.final = row.changes, row.committed, row.final
        self._waiting_since = now
        for change in row.changes:
            if change.kind in (ChangeKind.REMOVE, ChangeKind.EXCLUDE):
                self._adopt(change.node, now, excluded=change.kind is ChangeKind.EXCLUDE)

    def _adopt(self, node: NodeId, now: float, *, excluded: bool) -> None:
        """Suspect ``node`` on another member's word, noting when that word is the final's
        exclusion of it and the first this member holds of its failure (:attr:`carried`)."""
        first = node not in self.suspected
        self.suspect(node, now, local=False)
        if first and excluded:
            self._only_excluded.add(node)

    def step(self, now: float) -> None:
        """Advance the leader's side of the change, then push the own row where it must go."""
        if self.stopped:
            return
        if self._leading is not None:
            self._lead(now)
        if self._dirty and not self.stopped:
            self._push()

    def _lead(self, now: float) -> None:
        """One step of leading the view's change. The leader takes one at every frame it
        handles: with nothing proposed, suspected, leaving or joining, none of it walks the
        view's members (a leader of 64 spent two thirds of an idle tick there)."""
        leading = self._leading
        assert leading is not None
        if not leading.ready:
            if not all(self._follows_me(m) for m in self._counted_on()):
                return
            leading.ready = True
            self._milestone(now)
        if self.committed > self.final:
            if self._all_echoed(self._counted_on(), leading.milestone):
                self.final = self.committed
                self._milestone(now)
            return
        wanted = self._wanted_changes(leading)
        if wanted != self.changes:
            self.changes = wanted
            self._milestone(now)
            return
        proposed = len(self.changes) > self.committed
        if (
            proposed
            and not self._unsettled
            and not self._pending()
            and self._all_echoed(self._counted_on(), leading.milestone)
        ):
            if not self._holds_majority():
                self._stop("partitioned: the leader cannot reach a majority of the view")
                return
            self.committed = len(self.changes)
            self._milestone(now)

    def _wanted_changes(self, leading: _Leading) -> tuple[Change, ...]:
        """The proposal: what is already proposed, then new removals, leaves and joins; once
        the change is final, exclusions of the survivors whose cleanup stalls and of the
        members that moved on and went silent while a cleanup waits on them."""
        if not (
            self.final
            or self.suspected
            or self.leaving
            or self._leaving_rows
            or leading.pending_joins
        ):
            return self.changes  # nothing to add: no removal, leave or join to propose
        proposed = {c.node for c in self.changes}
        if self.final:
            blamed = [
                member
                for member in self.not_moving_on()
                if member not in proposed
                and member in self.suspected
                and (member in self._decided or self._agreed(member))
            ]
            gone = [member for member in sorted(self._gone_silent) if member not in proposed]
            return self.changes + tuple(
                Change(member, ChangeKind.EXCLUDE) for member in [*blamed, *gone]
            )
        extra: list[Change] = []
        for member in self.view.members:
            if member in proposed:
                continue
            if member in self.suspected:
                if member in self._decided or self._agreed(member):
                    extra.append(Change(member, ChangeKind.REMOVE))
            elif (member == self.me and self.leaving) or (
                member in self.rows and self.rows[member].leaving
            ):
                extra.append(Change(member, ChangeKind.LEAVE))
        extra.extend(c for c in leading.pending_joins if c.node not in proposed)
        leading.pending_joins.clear()
        return self.changes + tuple(extra)

    def _agreed(self, member: NodeId) -> bool:
        """Every other unsuspected member suspects ``member`` too (they probed it, as this
        leader's row asked, and it did not answer them either)."""
        return all(
            m in self.rows and member in self.rows[m].suspected
            for m in self.view.members
            if m not in (self.me, member) and m not in self.suspected
        )

    def _pending(self) -> list[NodeId]:
        """What this leader suspects but neither proposed nor decided: it waits for its
        followers to agree, or to say they hear the member. Once the change is final, only
        the survivors still cleaning up count: the others are in the next view already, where
        a suspicion of them starts the next change."""
        if not self.suspected:
            return []
        proposed = {c.node for c in self.changes}
        candidates = self.not_moving_on() if self.final else self.view.members
        return [
            m
            for m in candidates
            if m in self.suspected and m not in self._decided and m not in proposed
        ]

    def _has_word_on(self, member: NodeId, suspect: NodeId) -> bool:
        """``member``'s row agrees that ``suspect`` is gone, or says it hears it."""
        row = self.rows.get(member)
        return row is not None and (
            suspect in row.suspected or any(accused == suspect for _, accused in row.cut)
        )

    def _hear_cuts(self, row: MembershipRow, now: float) -> None:
        """A follower found links cut (the accused answered it), perhaps between this leader
        and a member it suspects: the cover of the cut links decides, once the graph of them
        settles (a new link restarts that wait).

        A link that accuses this leader, from a member it has not heard from for half a
        timeout, makes it suspect that member at once: the follower reached this leader, and
        the accuser still does not, so it is cut from this leader. The suspicion in this
        leader's row asks every follower to probe the accuser, and their answers tell the
        cover how far the cut runs through this leader's side before it weighs stepping down.
        Partial cut with faults seed 1887: three members of the smaller side accused the
        leader of the larger side, which did not suspect them, so nobody on its side probed
        them; the leader knew too few of its side's cut links, counted the cost of stepping
        down as five members against the six it is cut from, and stepped down, and with a
        bridge crashed neither side then held a majority.

        Not so for a leader whose own loop ran late in this view (:meth:`_stalled_in_this_view`):
        an accusation of it may come from its own silence, and a member that suspects it sends
        it nothing, so not hearing the accuser proves no cut. The link goes to the cover, which
        steps such a leader down on a tie. Partial cut with faults seed 51103: fifteen members,
        the leader 0 and five others cut from seven, the bridge 2 paused 2.5 s as the cut began
        and suspected by the bridge 7 meanwhile; once 0's side had stepped down, 2 led, heard
        7's accusation, suspected 7 at once as cut from it, and removed it, which no fault
        touched."""
        for link in row.cut:
            if link not in self._reported:
                self._reported.add(link)
                self._last_accusation = now
                accuser, accused = link
                if (
                    accused == self.me
                    and accuser in self.view
                    and self._unheard(accuser, now)
                    and not self._stalled_in_this_view()
                ):
                    self.suspect(accuser, now, local=True)
                    if self.stopped:
                        return

    def _unheard(self, member: NodeId, now: float) -> bool:
        """Whether this member has not heard from ``member`` for half a timeout."""
        return now - self.last_heard[member] >= self.config.heartbeat_timeout / 2

    def _absorb(self, row: MembershipRow) -> None:
        """A leader that took over adopts any final or commit a member already holds: a final
        may already be installed somewhere, and a commit may already be final somewhere."""
        if row.final > self.final:
            self.changes, self.committed, self.final = row.changes, row.final, row.final
        elif row.final == self.final and row.committed > self.committed:
            self.changes, self.committed = row.changes, row.committed

    def _void(self, row: MembershipRow) -> bool:
        """The row's owner suspects half the view or more: it holds no majority and has
        stopped, and its suspicions and proposals are void."""
        return 2 * len(row.suspected) >= len(self.view.members)

    def _hear_accusations(self, src: NodeId, accused: list[NodeId], now: float) -> None:
        """``src`` suspects ``accused``: note who accuses whom (a leader's cover counts every
        cut link), and ask each accused this member does not suspect yet to answer."""
        for node in accused:
            accusers = self._accusers.setdefault(node, set())
            if src not in accusers:
                accusers.add(src)
                self._last_accusation = now
                self._dirty |= node in self._answered
            if node != self.me and node not in self._probes and node not in self.suspected:
                self._probe(node, now)

    def _probe(self, member: NodeId, now: float) -> None:
        """Ask ``member`` to answer (:attr:`_answered` notes it when it does)."""
        self._probes[member] = now
        self._ask_to_answer(member)

    def _ask_to_answer(self, member: NodeId) -> None:
        """Send ``member`` a probing heartbeat: any frame it sends back counts as its answer
        (:meth:`heard_from`)."""
        self._outbox.append((member, Heartbeat(self.view.epoch, probe=True)))

    def _weigh_accusations(self, now: float) -> None:
        """Agree with the accusations nobody answered; as leader, cover the cut links."""
        wait = self.config.heartbeat_timeout / 4
        unanswered: list[NodeId] = []
        cut: list[tuple[NodeId, NodeId]] = []
        pending = set(self._pending()) if self._leading is not None else set()
        for node, accusers in self._accusers.items():
            standing = [a for a in accusers if a not in self.suspected]
            if not standing or self._left_out_by_final(node):
                continue
            if node in self.suspected:
                # Suspected here too, but not yet proposed: a cut link all the same, which the
                # cover must count (the leader may be the one cut off).
                if node in pending:
                    cut.extend((accuser, node) for accuser in standing)
                continue
            if node == self.me:
                cut.extend((accuser, node) for accuser in standing)
                continue
            asked = self._probes[node]
            if node in self._answered:
                if now - asked >= wait:
                    cut.extend((accuser, node) for accuser in standing)
            elif now - asked >= wait:
                if self._moved_on(node):
                    if any(not self._moved_on(a) for a in standing):
                        self._gone_silent.add(node)
                    continue
                unanswered.append(node)
        for node in unanswered:
            self.suspect(node, now, local=False)
            if self.stopped:
                return
        if self._leading is None:
            return
        # What this leader suspects and has not proposed is cut from it too (or gone).
        cut.extend(self._reported)
        cut.extend((self.me, m) for m in pending if m not in self._resurfaced)
        self._unsettled = bool(cut)
        if cut and now - self._last_accusation >= 2 * wait:
            self._unsettled = not self._cover(cut, pending, now, wait)

    def _cover(
        self, cut: list[tuple[NodeId, NodeId]], pending: set[NodeId], now: float, wait: float
    ) -> bool:
        """Remove as few members as leave no cut link between those that stay, or step down;
        False while it first asks members it may be cut from (:meth:`_probe_far_ends`).

        A leader that stays must remove every member cut from it, then cover the rest; if
        removing itself and covering the rest costs fewer members (it is on the smaller side
        of the cut), it stops instead, and the members on the larger side, which no longer
        hear it, go on without it and its side. Links whose ends it already proposed to
        remove are covered already; ``pending`` is what it suspects and has not proposed.

        It weighs stepping down before it asks anyone to answer: an answer that does not come
        makes a member it would keep one cut from it, which only adds to what it would spare,
        and a leader on the smaller side that waited a timeout for a paused member's answer
        outlasted the far side's patience (partial cut with faults seed 591: eleven members,
        the leader's side of four cut from five; while the leader asked a paused member, the
        far side, without a leader for three stall timeouts, blamed the bridge, and the cover,
        counting those links too, removed the far side rather than the leader). What it knows
        of the links between the others comes from its followers' probes of the members it
        suspects, so it suspects at once a member reported to accuse it that it does not hear
        (:meth:`_hear_cuts`): else the cost of stepping down is undercounted.

        A member it suspected but has heard from since is slow, not cut off from it (a starved
        machine, or a cut that healed): it is removed as suspected, but its links to this
        leader, its own or reported by the followers it answered, are no sign that the leader
        is on the smaller side: counting them once made the leader of 64 members on two cores
        step down after a crash, its slow members looking cut off from it alone. Its links to
        others are, and it counts in what staying costs if it has any
        (:meth:`_removed_if_staying`). A follower's accusation of a
        member it has heard from since (its row's ``heard_since``) is such a slow link too: of
        a one-way accusation the cover then removes the accused, not the accuser (membership
        seed 13813: a member stalled for 0.92 s, its watcher's clock saw more than the
        timeout, and the stalled member, answering the leader's probe at once, made the
        accusation look like a cut link; the innocent watcher was removed).

        Once the change is final, whether to step down is weighed without the links of
        members that moved on (:meth:`_link_of_the_next_view`)."""
        me = self.me
        slow = {m for m in pending if m in self._resurfaced}
        links = {
            (a, b)
            for a, b in cut
            if (a not in self.suspected or a in pending)
            and (b not in self.suspected or b in pending)
            and not (me in (a, b) and (a in slow or b in slow))
        }
        weighed = self._weigh_the_cut(links, pending, slow)
        beside, sparing = weighed[0], weighed[1]
        why = ""
        if self._may_step_down(links, now):
            here = {link for link in links if not self._link_of_the_next_view(*link)}
            cut_here, _, going, staying = (
                weighed if here == links else self._weigh_the_cut(here, pending, slow)
            )
            why = self._why_step_down(going, staying, cut_here)
        if why:
            self._stop(f"removed from the group: {why}, so this leader steps down")
            return True
        reached = [m for m in sparing if m not in beside and m not in slow]
        # Both ask at once: the answers come back in the same round.
        far_ends_asked = bool(reached) and self._probe_far_ends(links, reached, now, wait)
        # Nor is anyone asked once the change is final: the members that moved on speak in the
        # next view, and what a leader with a final steps down on is known without asking
        # (:meth:`_may_step_down`).
        kept_asked = not self.final and self._ask_the_kept(self._silent_kept(sparing, now), now)
        if far_ends_asked or kept_asked:
            return False
        for member in sparing + sorted(slow.difference(sparing)):
            self._decide(member)
            self.suspect(member, now, local=True)
            if self.stopped:
                break
        return True

    def _weigh_the_cut(
        self, links: set[tuple[NodeId, NodeId]], pending: set[NodeId], slow: set[NodeId]
    ) -> tuple[set[NodeId], list[NodeId], int, list[NodeId]]:
        """What covering ``links`` costs: the members cut from this leader, those it would
        remove by staying (cut from it, then a least cover of the rest), how many go if it
        steps down (itself and a least cover of the links it is not on), and all that
        staying costs (with the slow members cut from others too)."""
        me = self.me
        slow_links = {(a, b) for a, b in links if b in self._heard_since(a)}
        beside = {a if b == me else b for a, b in links if me in (a, b)}
        removed = self._removed_if_staying(beside, slow)
        sparing = sorted(beside) + _least_cover(
            {link for link in links if not removed.intersection(link)},
            self.view,
            pending,
            slow_links,
        )
        # A slow member cut from others too is part of the cut, and counts in what staying
        # costs; one only this leader suspected is evidence of nothing but its own slowness.
        cut_slow = [m for m in sorted(removed - beside) if any(m in link for link in links)]
        going = 1 + len(
            _least_cover({link for link in links if me not in link}, self.view, pending, slow_links)
        )
        return beside, sparing, going, sparing + cut_slow

    @staticmethod
    def _removed_if_staying(beside: set[NodeId], slow: set[NodeId]) -> set[NodeId]:
        """The members a leader that stays removes whatever else its cover chooses: those cut
        from it (``beside``) and the slow ones it suspected, removed as suspected
        (:meth:`_cover`). A link with one of them at either end needs no other member removed.

        Covering the slow ones' links again once made the cover remove members of the
        leader's own side as well (partial cut with faults seed 5973: fifteen members, the
        leader 0 and six others cut from six, and a bridge paused; once the cut healed, five
        members of the far side that 0 suspected were slow, and their links to a member of
        0's own side still stood in the graph; the cover removed that member too, and with the
        paused bridge 0 suspected eight of fifteen and stopped, and the group with it). What
        staying costs still counts the slow members whose cut links to others show them part
        of the cut: counting only the cover of what is left, a leader on the smaller side of a
        cut that had healed found staying free and stayed (seed 4759: the leader 0, one of six
        cut from seven, suspected the seven; once they were heard again it removed them,
        which with a crashed bridge left no majority, rather than step down)."""
        return beside | slow

    def _why_step_down(self, going: int, staying: list[NodeId], beside: set[NodeId]) -> str:
        """Why this leader removes itself rather than the ``staying`` members it would remove
        by staying, when ``going`` would go with it, or "" when it stays. It goes when that removes
        fewer members; on a tie, when it is cut from some of them and its own loop ran late in
        this view (:meth:`_stalled_in_this_view`): then the fault was its own."""
        if going < len(staying):
            return f"cut off from {len(staying)} members that the others reach (a partial cut)"
        if going == len(staying) and beside and self._stalled_in_this_view():
            return f"cut from {sorted(beside)} after its own loop ran late"
        return ""

    def _stalled_in_this_view(self) -> bool:
        """Whether this member's own loop ran late (paused, starved) since it installed this
        view: the accusations its silence raised stand as long as the view does, since a
        suspicion is never withdrawn.

        Then a member that accuses it was right, and of a tie between removing its accusers
        and stepping down, the leader steps down: it was the one a fault touched (membership
        seed 33008's stalls profile: the leader 1, paused 2.5 s while its watchers were
        paused too, was blamed by 11 for the stalled change; resumed, it removed 11, whom no
        fault touched, rather than leave the group it had been silent to). Within two
        timeouts of the stall, as this once asked, is too short where the cover comes late
        (partial cut with faults seed 4223: seventeen members, the bridge 1 paused as a cut
        of seven from eight began; the leader 0, on the smaller side, stopped, and 1, its
        successor for the larger side, which had not heard of its pause, weighed the cut
        2.5 s after it resumed: it removed the other bridge, which had suspected it during
        the pause and reached everyone, rather than step down)."""
        return self._ran_late > -math.inf

    def _heard_since(self, member: NodeId) -> AbstractSet[NodeId]:
        """The members ``member`` suspects and has heard from since, by its newest row. This
        leader has no row of its own here: the links it accuses a member it heard again from
        are taken out of the cover's graph before (``slow``)."""
        row = self.rows.get(member)
        return frozenset(row.heard_since) if row is not None else frozenset()

    def _link_of_the_next_view(self, a: NodeId, b: NodeId) -> bool:
        """Whether the cut link between ``a`` and ``b`` is the next view's business, not to be
        weighed when a final leader asks itself whether to step down: the change is final,
        the link is this leader's own, and its other end moved on. That member no longer
        waits on this cleanup, and its accusation belongs to the next view's change. Counted,
        such links made a final leader cut from one straggler by a single cut link look cut
        from half the group, and it stepped down (partial cut with faults seed 27906: one
        link cut between the two members still cleaning up after the leader crashed; both
        stepped down). The cover still covers them, and the links between others stay in the
        weighing: leaving all links of members that moved on out of both lost the view in
        seeds 454, 6421, 13203 and 14256, and out of the weighing, in 454, 13203 and 14256."""
        return bool(self.final) and self.me in (a, b) and (self._moved_on(a) or self._moved_on(b))

    def _may_step_down(self, links: set[tuple[NodeId, NodeId]], now: float) -> bool:
        """Whether this leader may step down on the smaller side of a cut: always before the
        change is final; once it is, only when a member it is cut from is known to be alive
        (:meth:`_alive_across`).

        Once final, the next view is settled with this member in it, and the members that
        moved on, the ones that would say whether they reach the far ends, speak in that view
        and no longer in this one: cut from members that were merely silent, a leader that
        steps down only takes a member from the next view (typed seed 30672: the last member
        still cleaning up, cut from two paused ones by their silence alone, stepped down, and
        the next view lost its majority). But a leader that never steps down once final
        excludes from the cleanup every member it no longer reaches, and on the smaller side
        of a cut that is the larger side's members (partial cut with faults seeds 31025 and
        31027: the leader of a join that went final as the cut began, cut off with a few,
        excluded the larger side while the larger side's successor excluded its own; with a
        crash on top, neither held a majority of the next view, and every member stopped). A
        member that accuses this leader is no paused one: the cut is real, and the cover
        weighs it as it would before the final."""
        return not self.final or bool(self._alive_across(links, now))

    def _alive_across(self, links: set[tuple[NodeId, NodeId]], now: float) -> set[NodeId]:
        """The members cut from this leader that are known to be alive: those that accuse it
        (their rows reached its followers, which reported the links), still clean up this
        view, and were not heard from for half a timeout.

        An accuser this leader hears is not cut from it: on a cut link between two members
        that each led the cleanup once the leader crashed, the followers of one accused the
        other, which heard them well, and counting them it stepped down, as did the other
        (partial cut with faults seed 1418: three crashes, and the next view lost its
        majority). Nor is one that moved on: it speaks in the next view and no longer to this
        one, and a bridge that moved on and took a successor's word that this leader was
        gone made the leader of the larger side step down (seed 7983)."""
        me = self.me
        return {a for a, b in links if b == me and not self._moved_on(a) and self._unheard(a, now)}

    def _probe_far_ends(
        self,
        links: set[tuple[NodeId, NodeId]],
        reached: list[NodeId],
        now: float,
        wait: float,
    ) -> bool:
        """The cover would remove ``reached``, members this leader is not known to be cut
        from: before it does, it asks the members across their cut links to answer, and
        suspects those that do not within ``wait`` (cut from it too, so removed anyway). True
        while answers are awaited or a suspicion changed the graph.

        Members watch only a few ring neighbours, so when the accusations pause most links of
        a cut are known to nobody. A member on the leader's side accused by a few across the
        cut then shows more links than each of those, and the cover removed it instead of
        them (partial-cut seed 2484: covering the links that came later left the leader's
        side without a majority). Whom the leader cannot reach, it learns first hand."""
        far = {b if a in reached else a for a, b in links if a in reached or b in reached}
        asking = False
        for member in sorted(far):
            if member == self.me or member in self.suspected:
                continue
            asked = self._probes.get(member)
            if asked is None:
                self._probe(member, now)
                asking = True
            elif member not in self._answered:
                if now - asked < wait:
                    asking = True
                else:
                    self.suspect(member, now, local=True)
                    if self.stopped:
                        return True
                    asking = True
        return asking

    def _ask_the_kept(self, silent: list[NodeId], now: float) -> bool:
        """Before the cover removes members, this leader asks each member it would keep and has
        not heard from for half a timeout (``silent``, :meth:`_silent_kept`) to answer, and
        suspects those that do not within the failure detector's timeout. True while answers
        are awaited or a suspicion changed the graph.

        The accusations a leader knows of are those that reached it, its own side's: across
        a partition, or on the smaller side of a partial cut, the members of the other side
        that nobody on its side watches look like members it keeps. Its cover then removed
        the members of the other side that were accused, kept the rest, and neither stopped
        nor stepped down (membership seed 6275: the minority's leader proposed removing three
        members of the majority, which stopped them when the partition healed; partial-cut
        seeds 11945 and 15061: the bridges followed it, and the larger side, short of them,
        stopped). Whom the leader cannot reach, it learns first hand, as
        :meth:`_probe_far_ends` does for the far ends of the links it knows. A member gets a
        whole timeout to answer, as the failure detector gives it: a stalled process is not
        a member cut off (a quarter timeout removed stalled members in membership seed
        13813's stalls profile). A joiner not heard yet is not asked: its welcome may still
        be on its way (:meth:`heard_behind`)."""
        asking = False
        asked_now: list[NodeId] = []
        for member in silent:
            heard = self.last_heard[member]
            asked = self._kept_probes.get(member)
            if asked is None or heard > asked:
                self._kept_probes[member] = now
                self._ask_to_answer(member)
                asked_now.append(member)
                asking = True
            elif now - asked < self.silences.timeout(member, now):
                asking = True
            else:
                self.suspect(member, now, local=True)
                if self.stopped:
                    return True
                asking |= member in self.suspected
        if asked_now:
            self._beat_to_the_unasked(asked_now)
        return asking

    def _beat_to_the_unasked(self, asked: list[NodeId]) -> None:
        """Send a heartbeat to every member this leader does not suspect and did not just ask
        to answer (``asked``): its step waits on the answers, not on a failure of its own, and a
        follower that hears its leader gives it one more timeout (:meth:`_spares_the_leader`).

        Each member asked gets up to a timeout to answer, and crashes that come one after the
        other each cost one; meanwhile the leader sends nothing to the members that do not
        watch it. Partial cut with faults seed 10491: twelve members and a joiner, one link
        cut, three crashes; the leader's cover asked one crashed member, then another, a
        timeout each, and three followers that had heard nothing from it blamed it for the
        stalled join just before its cover was done. It stepped down, though no fault touched
        it."""
        beat = Heartbeat(self.view.epoch)
        self._outbox.extend(
            (m, beat)
            for m in self.view.members
            if m != self.me and m not in self.suspected and m not in asked
        )

    def _silent_kept(self, sparing: list[NodeId], now: float) -> list[NodeId]:
        """The members a change removing ``sparing`` keeps that this leader has not heard from
        for half a timeout, but for a joiner not heard from yet (:meth:`_ask_the_kept`)."""
        removing = set(sparing)
        return [
            m
            for m in self.view.members
            if m != self.me
            and m not in self.suspected
            and m not in removing
            and not self._unwelcomed(m)
            and self._unheard(m, now)
        ]

    def _successor(self, src: NodeId, row: MembershipRow, now: float) -> bool:
        """Whether ``row`` comes from a would-be leader that takes over from this member's
        leader: one that leads in its row and suspects the leader, which this member does not
        hear from, or not lately. A bridge of a partial cut that hears its leader well keeps
        following it, and takes the successor's suspicion of it for an accusation: the
        successor may be on the smaller side (partial-cut seed 34407: twelve members and a
        joiner, five cut from six with two bridges; the bridge 10 adopted the far side's
        successor's suspicion of the leader 0, so 0 had to remove it too, found half the
        group suspected and stopped, and the larger side with it). A leader that crashed or
        stopped goes silent, and by the time a successor suspects it its followers have not
        heard it for half a timeout: they adopt the successor's suspicions, as before."""
        if row.leader != src:
            return False
        leader = self.leader
        if leader == self.me or leader not in row.suspected:
            return True
        return self._unheard(leader, now)

    def _adoptable(self, news: list[NodeId]) -> bool:
        """Whether to adopt the leader's suspicions ``news``, or rather suspect the leader.

        A leader whose suspicions would leave this member's side without a majority is either
        right, and this side stops anyway, or this side took a minority's member for its
        leader (nobody here watched it) across a partition that just healed, one that has not
        stopped yet (it suspects fewer than half: the members no one on its side watched stay
        unsuspected there). Adopting would then stop a majority that is alive and connected,
        so the sender is suspected instead; that is always safe.
        """
        return self._holds_majority(len(news))

    def went_ahead(self, member: NodeId) -> None:
        """``member`` was heard from in a later view: it applied its cleanups, whether or not
        its row saying so reached this member (it goes to the member's own leader alone)."""
        self._gone_ahead.add(member)

    def _moved_on(self, member: NodeId) -> bool:
        """``member`` said it applied its cleanups, or was heard from in a later view: it is in
        the next view, where it talks to this member no more, and a suspicion of it belongs to
        that view's change. Not the change's leader, which says it cleaned up too but stays
        until every survivor has: should it crash there, the survivors still cleaning up must
        be able to suspect it and follow another (Paxos sweep seed 211)."""
        row = self.rows.get(member)
        return member in self._gone_ahead or (
            row is not None and row.cleaned and row.leader != member
        )

    def _next_view(self) -> View:
        """The view the final change leads to. ``changes[:final]`` never changes while
        ``final`` stays the same (a final only grows), so it is built once per final: the
        leader asks it of every member at each step once the change is final."""
        cached = self._final_view
        if cached is None or cached[0] != self.final:
            view = next_view(self.view, self.changes[: self.final])
            cached = self._final_view = (self.final, view)
        return cached[1]

    def _kept_by_final(self, member: NodeId) -> bool:
        """The change is final and the next view includes ``member``."""
        return bool(self.final) and member in self._next_view()

    def _left_out_by_final(self, member: NodeId) -> bool:
        """The change is final and the next view does not include ``member``."""
        return bool(self.final) and member not in self._next_view()

    def _departing(self, member: NodeId) -> bool:
        """``member`` asked to leave: its row said so, or the change this member follows
        includes its leave."""
        row = self.rows.get(member)
        if row is not None and row.leaving:
            return True
        return any(c.node == member and c.kind is ChangeKind.LEAVE for c in self.changes)

    def _counted_on(self) -> list[NodeId]:
        """The members this leader needs to follow it and echo its steps: every other member
        it does not suspect, but, once the change is final, none that the next view leaves out
        (they exit or stop as they learn the final) and none that moved on to it (they never
        lead this view's change again, and one that moved on twice no longer answers for it).
        """
        final = self.final
        return [
            m
            for m in self.view.members
            if m != self.me
            and m not in self.suspected
            and not (final and (self._moved_on(m) or self._left_out_by_final(m)))
        ]

    def _follows_me(self, member: NodeId) -> bool:
        row = self.rows.get(member)
        return row is not None and row.leader == self.me

    def _echoes(self, member: NodeId, version: int) -> bool:
        """``member`` follows this leader and echoes its row of ``version`` or later."""
        return self._follows_me(member) and self.rows[member].leader_version >= version

    def _all_echoed(self, others: list[NodeId], version: int) -> bool:
        return all(self._echoes(m, version) for m in others)

    def _milestone(self, now: float) -> None:
        assert self._leading is not None
        self._dirty = True
        self._to_everyone = True
        self._leading.milestone = self.version + 1
        self._waiting_since = now

    def _time_out_stalled_step(self, now: float) -> None:
        """Suspect whoever the stalled step waits on: the leader, or the members that do not
        answer the leader."""
        stalled_since, self._waiting_since = self._waiting_since, now
        if self.final:
            blamed = sorted(self.cleanup_waits_on)
            # The cleanup waits on their rows. With the leader silent for a timeout, one of
            # them may still wait for the final itself, from a leader that crashed after
            # sending it to some members only: then it blames that leader at about this
            # moment, and a successor sends the final again. This member seldom hears from
            # it (it need not watch it), so it gets one more period before it is blamed
            # (sweep seed 826 removed such a live member). A leader heard lately is alive
            # and sent its final to everyone: the stall is theirs (seed 955 of the typed
            # sweep: a shard's member crashed before its cut).
            leader_silent = self.leader != self.me and not self._heard_lately([self.leader], now)
            if blamed and leader_silent and not self._grace_given:
                self._grace_given = True
                return
            self._grace_given = False
            if self._leading is not None:
                # Members that neither echo an exclusion nor move on: the silent ones are gone
                # (their watchers may have moved on, so nobody else finds it); the others wait
                # on someone else, whom they blame themselves (their rows then accuse it).
                version = self._leading.milestone
                stalled = sorted(
                    {m for m in self._counted_on() if not self._echoes(m, version)}.union(
                        self.not_moving_on()
                    )
                )
                recent = self._heard_lately(stalled, now)
                for member in stalled:
                    if member in recent or member in blamed:
                        continue
                    asked = self._stall_probes.get(member)
                    if self._echoes(member, version) and (
                        asked is None or self.last_heard[member] > asked
                    ):
                        # It follows this leader and waits, as this one does, on the cleanup:
                        # it has nothing to send, and nobody need watch it (membership seed
                        # 5782 removed such a live member here). Its silence is no evidence;
                        # a probe unanswered by the next stall timeout is.
                        self._stall_probes[member] = now
                        self._ask_to_answer(member)
                    else:
                        blamed.append(member)
        elif self._leading is None:
            if self._spares_the_leader(stalled_since, now):
                self._waiting_since = stalled_since  # the next tick looks again
                return
            blamed = [self.leader]
        else:
            ready, version = self._leading.ready, self._leading.milestone
            blamed = [
                m
                for m in self.view.members
                if m != self.me
                and m not in self.suspected
                and not (
                    self._follows_me(m) and (not ready or self.rows[m].leader_version >= version)
                )
            ]
            # A suspicion waits for every follower to agree or to say it hears the member:
            # whoever did neither within the timeout is as stalled as one that does not echo.
            timeout = self.config.heartbeat_timeout
            waiting_for = [
                m
                for m in self._pending()
                if not any(accused == m for _, accused in self._reported)
                and now - self._suspected_at[m] >= timeout
            ]
            blamed.extend(
                m
                for m in self.view.members
                if m != self.me
                and m not in self.suspected
                and m not in blamed
                and any(not self._has_word_on(m, p) for p in waiting_for)
            )
            if self._stall_asks_the_kept(blamed, now):
                self._waiting_since = stalled_since  # the next tick looks again
                return
            # A member heard from within the timeout is alive: most likely it still finishes
            # the last view's cleanup (a Paxos shard waiting on a disk, or on a failed peer's
            # suspicion). It gets one more period before it is blamed for the stall, as does
            # a joiner not heard from yet, which may still ask for its welcome.
            recent = self._heard_lately(blamed, now) + [m for m in blamed if self._unwelcomed(m)]
            if recent and not self._grace_given:
                self._grace_given = True
                blamed = [m for m in blamed if m not in recent]
            else:
                self._grace_given = False
        if not self._holds_majority(len(blamed)):
            # Blaming them all would stop this member, and with it a side that may well hold
            # the majority: the live ones among them (heard lately) are waiting on someone
            # else (a crashed member only they watch, a disk). Spare those; a stall is not
            # silence, and only silence may cost a member its majority.
            recent = self._heard_lately(blamed, now)
            blamed = [m for m in blamed if m not in recent]
            if self._leading is not None and not self.final:
                blamed = self._unless_they_answer(blamed, now)
        decides = self._leading is not None and not self._cover_weighs_stalls()
        for member in blamed:
            if decides:
                self._decide(member)
            self.suspect(member, now, local=True)
            if self.stopped:
                return

    def _spares_the_leader(self, stalled_since: float, now: float) -> bool:
        """Whether this follower, whose step stalled since ``stalled_since``, still gives its
        leader time: one more timeout, while it hears from it.

        A leader heard lately is alive, and a live leader's step stalls when it waits on
        others: on a partial cut, its cover waits for the accusations to settle, for the far
        ends of the cut links to answer, and a timeout for the members it keeps to answer
        (:meth:`_ask_the_kept`), and a join started seconds before used up most of the
        followers' patience. A bridge that blamed its leader then was an innocent accuser the
        cover had to remove (partial cut with faults seed 7489: fifteen members, seven with
        the leader 0 cut from six, two bridges; 0's cover asked the bridge that had crashed
        to answer, and the other bridge, three timeouts after the join began, blamed 0 while
        it waited; covering that link too, 0 suspected eight of fifteen and stopped, and the
        group with it). A silent leader gets no more time: its silence is the failure."""
        if not self._heard_lately([self.leader], now):
            return False
        return now - stalled_since < self._patience() + self.config.heartbeat_timeout

    def _decide(self, member: NodeId) -> None:
        """Take ``member``'s failure as this leader's own decision, which needs nobody's word:
        it goes into the proposal (or, once the change is final, the exclusions) at once.

        A decision taken once the change is final is this view's alone: the leader seldom
        steps down then (:meth:`_may_step_down`), which on a partial cut is what it might have
        done instead, so the next view does not start with it (:attr:`carried`)."""
        self._decided.add(member)
        if self.final:
            self._decided_once_final.add(member)

    def _cover_weighs_stalls(self) -> bool:
        """Whether the members this leader blames for a stall go to its cover, as cut from it,
        rather than straight into its proposal (or its exclusions): while the cover has cut
        links it has not decided on (:attr:`_unsettled`).

        On the smaller side of a cut, a step stalls on the far side's members that had not
        echoed when the cut came. The cover waits for the accusations to settle, and a stall
        timeout could come first: blamed and proposed, those members no longer counted among
        the links the cover weighs, it no longer found itself on the smaller side, and a
        bridge adopted the proposal (partial cut with faults seed 1156: the leader 0 of seven
        proposed removing 4 half a second before its cover would have stepped down; when a
        crash came, the bridge suspected four of seven and the group stopped). Weighed with
        the other links, the blamed are removed if the cover keeps this leader, and cost it
        nothing if it steps down.

        So too once the change is final, now that a leader with a final may step down
        (:meth:`_may_step_down`): excluded at once, the blamed were decided before the cover
        could find the leader on the smaller side (partial cut with faults seeds 31025, 36415
        and 37363: the leader of a join that went final as the cut began excluded members of
        the larger side at its stall timeout, and with a fault on top the next view held no
        majority). A stall with no cut links to weigh (a paused member, say) is still decided
        at once: a final leader that waited on its cover for one held its cleanup up until a
        cut came (seed 5283)."""
        return self._unsettled

    def _stall_asks_the_kept(self, blamed: list[NodeId], now: float) -> bool:
        """Whether this leader, whose step stalled on ``blamed``, first waits for the members it
        would keep to answer (:meth:`_ask_the_kept`). The stall stays timed out meanwhile, so
        each tick looks again, until they answered or were suspected.

        A stall is blamed on whoever did not echo, and on the far side of a cut that is only
        some of the members this leader no longer reaches: those that had not echoed yet when
        the cut came. Blaming them did not cost it its majority, so it proposed their removal,
        and a bridge, which reaches both sides, adopted it (partial-cut seeds 23996 and 24254:
        a join's proposal stalled 18 ms into a cut; the smaller side's leader blamed two of the
        larger side's members, the bridge followed, then, suspecting the smaller side as well,
        found itself on a half and stopped, and the larger side with it). Asked first, the far
        side does not answer, and the leader stops before it proposes a removal.

        It asks only when the answers could matter: when blaming ``blamed`` and every silent
        member it keeps would cost it its majority. Otherwise it holds a majority whoever
        answers, and waiting a timeout for a paused member held the change up until the
        followers, which give a leader three stall timeouts, blamed it (membership seed
        12165's stalls profile: the leader waited on a member paused for 2.5 s)."""
        if not blamed:
            return False
        silent = self._silent_kept(blamed, now)
        return not self._holds_majority(len(blamed) + len(silent)) and self._ask_the_kept(
            silent, now
        )

    def _unless_they_answer(self, blamed: list[NodeId], now: float) -> list[NodeId]:
        """Which of ``blamed``, whose blame would cost this leader its majority, to blame at
        once: none. Each is asked to answer instead, and blamed a quarter timeout later if it
        has not (:meth:`_blame_the_unanswering`).

        Not hearing a member is not silence: a bridge of a partial cut, which reaches both
        sides, follows the other side's leader (the lowest-ranked member it does not
        suspect) and sends this one nothing, nor need anyone watching it be on this side.
        Partial-cut seed 4034: the leader of the larger side blamed the bridge for its
        stalled proposal, suspected half the group and stopped, while the smaller side's
        leaders stepped down one after the other; asked, the bridge answers, and once the
        members ranked below this leader are gone (stepped down, or stopped for want of a
        majority) it follows this one. A member across the cut does not answer, and is
        blamed as before, a quarter timeout later: waiting for the next stall timeout
        instead let the smaller side's leader, which loses its majority so, outlast the cut
        and hold up the larger side (partial-cut seed 17816)."""
        for member in blamed:
            if member not in self._majority_probes:
                self._majority_probes[member] = now
                self._ask_to_answer(member)
        return []

    def _blame_the_unanswering(self, now: float) -> None:
        """Blame the members asked by :meth:`_unless_they_answer` that did not answer within a
        quarter timeout; forget those that did, and all of them once this member no longer
        leads a change that is not final."""
        wait = self.config.heartbeat_timeout / 4
        probes = self._majority_probes
        for member, asked in list(probes.items()):
            if (
                self._leading is None
                or self.final
                or member in self.suspected
                or self.last_heard[member] > asked
            ):
                del probes[member]
            elif now - asked >= wait:
                del probes[member]
                self._decided.add(member)
                self.suspect(member, now, local=True)
                if self.stopped:
                    return

    def _unwelcomed(self, member: NodeId) -> bool:
        """Whether ``member`` joined in this view and has not been heard from in it: it may
        not know of the view yet. It learns of it from the welcome the change's leader sends
        as it installs the view; a leader that crashed right then sent none, and the joiner
        asks again a timeout later, when a member of the view welcomes it."""
        return member in self.view.joined and member in self._never_heard

    def _heard_lately(self, members: list[NodeId], now: float) -> list[NodeId]:
        timeout = self.config.heartbeat_timeout
        return [m for m in members if now - self.last_heard[m] < timeout]

    def _update_leadership(self, now: float, *, announce: bool = True) -> None:
        """Follow the lowest unsuspected member; a new leader is announced to everyone, unless
        not ``announce`` (:meth:`link_lost`): a killed leader's links break at every member,
        so each learns it by itself, and its row need only reach the next leader, which
        collects every member's row before it proposes anything (each member announcing it
        cost a frame per member at each member)."""
        leader = self._lowest_unsuspected()
        if leader != self.leader:
            self.leader = leader
            self.leader_version = 0
            self._dirty = True
            self._to_everyone |= announce
            self._waiting_since = now
        if leader == self.me and self._leading is None:
            # The lowest rank leads from the start; anyone else takes over from a leader that
            # may have left a proposal, a commit or a final behind, and must collect first.
            self._leading = _Leading(ready=self.rank == 0)
            self._waiting_since = now

    def _holds_majority(self, more: int = 0) -> bool:
        """More than half of the view is unsuspected (with ``more`` members suspected on top):
        the one rule that keeps two sides of a partition from both going on."""
        unsuspected = len(self.view.members) - len(self.suspected) - more
        return 2 * unsuspected > len(self.view.members)

    def _lowest_unsuspected(self) -> NodeId:
        """The leader to follow: once the change is final, not one that moved on to the next
        view, which never leads this view's change again (it only answers a row that lacks
        the final, :meth:`final_as_leader`, and cannot exclude a stalled survivor); nor one
        the final leaves out, unless it leads already (a leader that leaves stays until the
        cleanup is done): the others exit or stop as they learn the final. Taken for the
        next leader, a leaver that had exited held every survivor in the old view for good
        (membership seed 452 with half the links 15 ms slow: 1 left as the change went
        final, the leader 0 crashed, and the survivors, suspecting 0 alone, followed 1)."""
        final = self.final
        return next(
            m
            for m in self.view.members
            if m not in self.suspected and not (final and m != self.me and self._leads_no_more(m))
        )

    def _leads_no_more(self, member: NodeId) -> bool:
        """Once the change is final: ``member`` moved on, or the final leaves it out and it
        does not lead already (:meth:`_lowest_unsuspected`)."""
        return self._moved_on(member) or (member != self.leader and self._left_out_by_final(member))

    def ask(self, node: NodeId) -> bool:
        """Push the own row to ``node`` alone, which installed the next view and answers a row
        that lacks the final with it (``Node._on_old_epoch``); False while the row must wait
        for a commit it shows to be logged."""
        if self.commit_to_log is not None:
            return False
        self._outbox.append((node, self._own_row()))
        return True

    def adopt_final(self, row: MembershipRow, now: float) -> None:
        """Take the final change of ``row``, from a member that installed the next view: a
        final never changes (every later leader adopts the same one), so it is the one this
        member's leader would have led it to, had its rows arrived (``Node._ask_moved_on``).
        """
        if row.final <= self.final or row.epoch != self.view.epoch or self.stopped:
            return
        if any(c.node == self.me and c.kind is ChangeKind.REMOVE for c in row.changes):
            # Stopped before anything logs the commit: a member that a commit removes as
            # failed never logs it (pyderecho.core.restart counts on that).
            self._stop(f"removed from the group: view {self.view.epoch}'s final change removes it")
            return
        self._dirty = True
        self._take_change(row, now)

    def _push(self) -> None:
        if self.commit_to_log is not None:
            return  # the row goes once the commit it shows is logged; it stays dirty till then
        row = self._own_row()
        if self._to_everyone or self._leading is not None:
            targets = [m for m in self.view.members if m != self.me]
        else:
            targets = [self.leader] if self.leader != self.me else []
        self._outbox.extend((peer, row) for peer in targets)
        self._dirty = False
        self._to_everyone = False

    def _own_row(self) -> MembershipRow:
        self.version += 1
        return MembershipRow(
            epoch=self.view.epoch,
            version=self.version,
            suspected=tuple(sorted(self.suspected)),
            leader=self.leader,
            leader_version=self.leader_version if self._leading is None else self.version,
            changes=self.changes,
            committed=self.committed,
            final=self.final,
            leaving=self.leaving,
            collecting=self._leading is not None and not self._leading.ready,
            cut=self._cut_links(),
            cleaned=self.cleaned,
            heard_since=tuple(sorted(self._resurfaced)),
        )

    def _cut_links(self) -> tuple[tuple[NodeId, NodeId], ...]:
        """The links this member found cut: accusations of members that answered it."""
        return tuple(
            sorted(
                (accuser, node)
                for node, accusers in self._accusers.items()
                if node in self._answered and node not in self.suspected
                for accuser in accusers
                if accuser not in self.suspected
            )
        )

    def _stop(self, reason: str) -> None:
        if not self.stopped:
            self.stopped = reason


def cleanup_ranks(
    shard: ShardMulticast, survivors: Container[NodeId] | None, left_out: AbstractSet[NodeId]
) -> list[int]:
    """Ranks of the shard's members a cleanup counts on, as this member sees it: those the
    final change keeps (``survivors``; None while the final is not known here, when any member
    may yet be kept) and that are not ``left_out`` (once the change is final: those the final
    excludes, :attr:`ChangeKind.EXCLUDE`; before, those this member suspects). The first leads
    the cleanup (:func:`ragged_edge_step`; ``Node`` sends its wedged row there)."""
    return [
        rank
        for rank, member in enumerate(shard.members)
        if member not in left_out and (survivors is None or member in survivors)
    ]


def ragged_edge_step(
    shard: ShardMulticast, survivors: set[NodeId], excluded: AbstractSet[NodeId]
) -> list[NodeId] | None:
    """Advance one shard's ragged-edge cleanup; returns the members it still waits on, an
    empty list once this member has applied the decision, or None if it finds a decision
    that keeps messages it does not hold: one made without it, so the change's leader
    excluded it, though the exclusion has not reached it (it must stop, as an excluded
    member does; following the decision would deliver what it never received: partial cut
    with a rejoined member and a joiner, seed 96 of the Paxos cut sweep).

    ``survivors`` are the members the final change keeps; ``excluded`` are those of them the
    final then excluded from the cleanup (found failed or cut off during it), as far as this
    member knows: a prefix of the one sequence of exclusions the view change's leaders agree
    on, so the members any two survivors count on are nested, one set within the other.
    Members that are not survivors never publish a decision: they stop as soon as they learn
    the change is final, as do excluded ones.

    A shard leader applies its own decision only once every member it counts on echoes it, and
    a follower only once some member applied it. So when a decision is applied, every member
    of the smaller of any two counted sets holds it and can hold no other (a member publishes
    one decision, ever), and any later leader reuses it: no two survivors ever apply different
    cuts. Local suspicion alone never leaves a member out: under a partial cut two survivors
    each suspected the other and each led a cleanup of its own (partial-cut seed 1337).
    """
    if shard.cleaned:
        return []
    table = shard.table
    members = shard.members
    live = cleanup_ranks(shard, survivors, excluded)
    leader = live[0]
    if leader == shard.rank:
        return _lead_ragged_edge(shard, live, excluded)
    applied = _applied_decision(shard)
    if applied:
        if not shard.publish_cutoff(applied):
            return None
        return [members[r] for r in shard.apply_cutoff(live)]
    # Echo the leader's decision, and apply it once the leader has: a decision reaches a member
    # from the leader it counts on, so once it stops counting on a leader, that leader's
    # decision cannot reach it sideways.
    if table.cutoff[leader] and not shard.publish_cutoff(table.cutoff[leader]):
        return None
    return [members[leader]]


def _applied_decision(shard: ShardMulticast) -> tuple[int, ...]:
    """A decision some member applied (its row says ``cleaned``: the leader, or a member heard
    from in the next view), or ``()``: the only decision there can be."""
    table = shard.table
    return next((table.cutoff[r] for r in range(len(shard.members)) if table.cleaned[r]), ())


def _lead_ragged_edge(
    shard: ShardMulticast, live: list[int], excluded: AbstractSet[NodeId]
) -> list[NodeId] | None:
    table = shard.table
    members = shard.members
    if not table.cutoff[shard.rank]:
        held = _applied_decision(shard) or next(
            (table.cutoff[r] for r in live if table.cutoff[r]), ()
        )
        if not held:
            # Survivors below this member are excluded: every live member must stop counting
            # on them before this one decides, or one of them could hand out a second decision.
            ignored = 0
            for rank in range(shard.rank):
                if members[rank] in excluded:
                    ignored |= 1 << rank
            waiting = [
                members[r]
                for r in live
                if not (table.wedged[r] and table.suspected[r] & ignored == ignored)
            ]
            if waiting:
                return waiting
            senders = range(len(shard.senders))
            held = tuple(min(table.received[r][s] for r in live) for s in senders)
        # A decision a live member already holds is the only one there can be: reuse it.
        if not shard.publish_cutoff(held):
            return None
    cutoff = table.cutoff[shard.rank]
    waiting = [members[r] for r in live if table.cutoff[r] != cutoff]
    if not waiting:
        waiting = [members[r] for r in shard.apply_cutoff(live)]
    return waiting
