"""Restart after the whole group stopped: agreeing, from the members' logs, on the view to found.

A member of a group with ``Paxos`` shards logs every view it installs and, before it tells
anyone it holds a commit of the next view, that commit (:class:`~.events.CommitLogRequested`).
A view change is final only once every unsuspected member of the view (a majority of it)
echoed the commit, so **every view that anyone installed is in the logs of a majority of the
view before it**. That is what lets restarting members agree without a leader:

- each tells the members of the newest view it knows what its logs hold (:class:`RestartState`)
  and learns what theirs hold;
- once it has heard from a majority of the newest view known, nobody left unheard can know a
  newer *installed* one (it would be in one of those majorities' logs), so the member founds
  the view after it, with the same members;
- a member that hears a peer already running a founded view adopts it rather than deciding
  again; one that finds itself outside the newest view was removed and stops.

One case remains (docs/persistence.md): a commit that never became final, logged only by
members that alone form a majority of the committed view, while a majority of the view
before restarts without them. Both sides then found views; the host's ``RestartView``
exchange stops the side with the older one. Nothing delivered is at stake there: a view
change that was never final delivered nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyderecho.core.view import NodeId, View
from pyderecho.wire import RestartPhase, RestartState


@dataclass(frozen=True, slots=True)
class LoggedView:
    """The newest view a member's logs hold: one it installed, or a commit of the next one
    it logged but never installed (``committed_only``, by the leader of ``leader_rank`` in the
    view before)."""

    view: View
    committed_only: bool = False
    leader_rank: int = 0

    def order(self) -> tuple[int, bool, int]:
        """Newer first by epoch; at one epoch, a view someone installed (the change's final)
        beats a commit that may never have been final, and a later leader's commit beats an
        earlier one's: a leader that took over adopts any commit it finds, so only a commit
        of the latest leader can have become final."""
        return (self.view.epoch, not self.committed_only, self.leader_rank)

    def state(self, phase: RestartPhase) -> RestartState:
        return RestartState(
            self.view.epoch, self.view.members, self.committed_only, self.leader_rank, phase
        )


def logged_view_of(state: RestartState) -> LoggedView:
    return LoggedView(View(state.epoch, state.members), state.committed_only, state.leader_rank)


@dataclass(frozen=True, slots=True)
class Found:
    """Found ``view`` (``founding``: members that do not show up get the startup grace)."""

    view: View


@dataclass(frozen=True, slots=True)
class Refused:
    """This member cannot take part: ``reason`` says why and what to do."""

    reason: str


Outcome = Found | Refused


class RestartAgreement:
    """One restarting member's side of the agreement: states in, a view to found out."""

    def __init__(self, me: NodeId, logged: LoggedView) -> None:
        self.me = me
        self.mine = logged
        self.heard: dict[NodeId, LoggedView] = {me: logged}
        self.told: set[NodeId] = set()
        """Peers that have this member's state: each is answered once, and asked until then."""
        self.founded: View | None = None
        """The view a peer founded and still runs: this member takes part in it too."""
        self.moved_on: View | None = None
        """A view a peer runs that no restart founded: the group went on without this one."""

    @property
    def newest(self) -> LoggedView:
        return max(self.heard.values(), key=LoggedView.order)

    def waiting_for(self) -> list[NodeId]:
        """Members of the newest view known not heard from yet: the ones to ask."""
        return [m for m in self.newest.view.members if m not in self.heard]

    def receive(self, src: NodeId, state: RestartState) -> None:
        logged = logged_view_of(state)
        if state.phase is RestartPhase.FOUNDED:
            self.founded = logged.view
            return
        if state.phase is RestartPhase.RUNNING:
            self.moved_on = logged.view
            return
        known = self.heard.get(src)
        if known is None or logged.order() > known.order():
            self.heard[src] = logged

    def outcome(self) -> Outcome | None:
        """What to do now; None while a majority of the newest view known is still unheard."""
        if self.founded is not None and self.me in self.founded:
            return Found(self.founded)
        running = self.moved_on or self.founded
        if running is not None:
            return self._refused(running, "runs without it")
        newest = self.newest.view
        heard = sum(1 for m in newest.members if m in self.heard)
        if 2 * heard <= len(newest.members):
            return None
        if self.me not in newest:
            return self._refused(newest, "excludes it")
        return Found(View(newest.epoch + 1, newest.members))

    def _refused(self, view: View, how: str) -> Refused:
        return Refused(
            f"member {self.me} restarted from logs that end in view {self.mine.view.epoch}, "
            f"but the group's view {view.epoch} {list(view.members)} {how}: move its data_dir "
            "away and join the group as a new member"
        )
