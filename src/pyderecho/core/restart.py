"""Restart after the whole group stopped: agreeing, from the members' logs, on the view to found.

A member of a group with ``Paxos`` shards logs every view it installs and, before it tells
anyone it holds a commit of the next view, that commit (:class:`~.events.ViewLogRequested`).
A view change is final only once every unsuspected member of the view (a majority of it)
echoed the commit, so **a view that anyone installed was committed in the logs of a majority
of the view before it**. Restarting members exchange what their logs hold
(:class:`RestartState`) with the members of the newest installed view they know, I, and each
decides alone, by rules that no two members can satisfy with different answers:

- found the view after a commit C of I's successor once a majority of I logged C: then no other
  commit can have a majority, and I cannot be chosen either (next rule);
- found the view after I itself once a majority of I is heard from and no commit can have been
  logged by a majority (those heard that lack it, with those not heard, leave too few; a member
  that a commit removes as failed never logs it, since it stops on seeing itself suspected):
  then no change of I was final, and nobody installed anything after I;
- otherwise wait: those not yet heard could tip it (a commit logged by two of five, two that
  lack it, one silent). The restart says whom it waits for.

A member that hears a peer already running a founded view takes part in that view, unless a
peer that runs it suspects this member already (its earlier incarnation crashed there): that
view will remove it, so it waits for that. One that finds itself outside the view chosen, or
the group running without it, rejoins as any joiner does (its logs then count for nothing: it
gets the state by transfer). While the group still runs a view that names it (it came back
before the others noticed that it had gone), it waits to be removed: joining a view it is
already in would take over rows it has lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyderecho.core.view import NodeId, View
from pyderecho.wire import RestartPhase, RestartState


@dataclass(frozen=True, slots=True)
class Logs:
    """What a member's logs say about views: the last one it installed, and a commit of the
    next one it logged but never installed (if any), whose ``departed`` are the members it
    removes as failed (not those that left)."""

    installed: View
    commit: View | None = None

    def state(
        self, phase: RestartPhase, *, incarnation: int = 0, answering: int = 0
    ) -> RestartState:
        commit = self.commit or View(-1, ())
        return RestartState(
            self.installed.epoch,
            self.installed.members,
            commit.epoch,
            commit.members,
            commit.departed,
            phase,
            incarnation,
            answering,
        )


def logs_of(state: RestartState) -> Logs:
    commit = None
    if state.commit_epoch >= 0:
        commit = View(state.commit_epoch, state.commit_members, departed=state.commit_failed)
    return Logs(View(state.epoch, state.members), commit)


@dataclass(frozen=True, slots=True)
class Found:
    """Found ``view`` (``founding``: members that do not show up get the startup grace)."""

    view: View


@dataclass(frozen=True, slots=True)
class Rejoin:
    """The group goes on without this member: join it through ``contacts``; ``reason``
    says why, for the logs. The group's view ``epoch`` excludes it, so only a welcome into a
    later view is one: a contact still in an earlier view, which names the crashed
    incarnation, would welcome it into that (and its numbers would be reused)."""

    contacts: tuple[NodeId, ...]
    reason: str
    epoch: int


Outcome = Found | Rejoin


class RestartAgreement:
    """One restarting member's side of the agreement: states in, a view to found out."""

    def __init__(self, me: NodeId, logs: Logs, incarnation: int) -> None:
        assert incarnation > 0, "a restart's incarnation is a positive number"
        self.me = me
        self.incarnation = incarnation
        # Compared as the wire carries them: epoch and members (who joined or left is the
        # same for every copy of a view, and the wire leaves it out).
        self.mine = logs = logs_of(logs.state(RestartPhase.RESTARTING))
        self.heard: dict[NodeId, Logs] = {me: logs}
        self.stale = 0
        """Answers to an earlier incarnation's questions, ignored."""
        self.founded: View | None = None
        """The view a peer founded and still runs: this member takes part in it too."""
        self.moved_on: View | None = None
        """A view a peer runs that no restart founded (the group went on without this one), or
        a founded one whose member already suspects this one (the view will remove it)."""
        self.waiting = ""
        """What the agreement waits for, while it does."""

    @property
    def installed(self) -> View:
        """The newest view any member heard from installed."""
        return max((logs.installed for logs in self.heard.values()), key=lambda v: v.epoch)

    def waiting_for(self) -> list[NodeId]:
        """The ones to ask: every other member of the newest installed view known, or, once a
        peer runs a view that still names this member, that view's members (to learn when it
        has been removed). One that answered it was restarting too is asked again: it may have
        founded a view since, without this member's answer (a majority was enough), and only
        asking tells this member so."""
        view = self.moved_on if self.moved_on is not None else self.installed
        return [m for m in view.members if m != self.me]

    def question(self) -> RestartState:
        return self.mine.state(RestartPhase.RESTARTING, incarnation=self.incarnation)

    def answer(self, question: RestartState) -> RestartState:
        return self.mine.state(
            RestartPhase.RESTARTING, incarnation=self.incarnation, answering=question.incarnation
        )

    def receive(self, src: NodeId, state: RestartState) -> None:
        """Take in an answer to this incarnation's question (others are the caller's)."""
        if state.answering != self.incarnation:
            self.stale += 1
            return
        logs = logs_of(state)
        if state.phase is RestartPhase.FOUNDED:
            self.founded = logs.installed
        elif state.phase is RestartPhase.RUNNING:
            if self.moved_on is None or logs.installed.epoch > self.moved_on.epoch:
                self.moved_on = logs.installed
        else:
            self.heard[src] = logs

    def outcome(self) -> Outcome | None:
        """What to do now; None while those not heard from yet could change the answer."""
        founded = self.founded
        if (
            founded is not None
            and self.me in founded
            and not self._may_have_run(founded)
            and not (self.moved_on is not None and self.moved_on.epoch >= founded.epoch)
        ):
            return Found(founded)
        running = self.moved_on or founded
        if running is not None:
            if self.me in running:
                self.waiting = f"the group to remove it from view {running.epoch}"
                return None  # the group has not yet noticed that this member went away
            return self._rejoin(running, "runs without it")
        base = self._base()
        if base is None:
            return None
        if self.me not in base:
            return self._rejoin(base, "excludes it")
        return Found(View(base.epoch + 1, base.members))

    def _may_have_run(self, founded: View) -> bool:
        """Whether this member may have taken part in view ``founded``'s epoch in an earlier
        incarnation: then it must not take its place again (it would reuse the message
        numbers it sent), so it waits to be removed and joins anew.

        A view a restart founded is logged before a member takes part in it, and a view it
        installed is too, unless it crashed between its commit and the view file: so its
        logs reach that epoch, in the installed view or in a commit of that very view. A
        commit of *another* view at that epoch was never final: a restart founds the view
        right after the one the logs installed only when no commit of that one can have been
        final, and a final commit is what any later view is built on. Paxos sweep seed 12852:
        a member that logged the commit of a view removing a failed member, then crashed
        with everyone, came back after the others had founded the view after the last one
        installed, at the same epoch; it waited to be removed from a view it had never been
        in, and its silence cost the group its majority."""
        commit = self.mine.commit
        return self.mine.installed.epoch >= founded.epoch or (
            commit is not None and commit.epoch >= founded.epoch and commit == founded
        )

    def _base(self) -> View | None:
        """The view to found the next one of, by the rules above; None to wait."""
        installed = self.installed
        members = installed.members
        majority = len(members) // 2 + 1
        heard = [m for m in members if m in self.heard]
        unheard = [m for m in members if m not in self.heard]
        if len(heard) < majority:
            self.waiting = (
                f"a majority of view {installed.epoch} {list(members)}: heard {heard}, "
                f"not {unheard}"
            )
            return None
        loggers: dict[View, int] = {}
        for member in heard:
            commit = self.heard[member].commit
            if self.heard[member].installed.epoch == installed.epoch and commit is not None:
                loggers[commit] = loggers.get(commit, 0) + 1
        for commit, count in loggers.items():
            if count >= majority:
                return commit
        possible = [
            c
            for c, count in loggers.items()
            if count + sum(1 for m in unheard if m not in c.departed) >= majority
        ]
        if possible:
            self.waiting = (
                f"members {unheard} of view {installed.epoch}, which may have logged the "
                f"commit of view {possible[0].epoch} {list(possible[0].members)} that "
                f"{loggers[possible[0]]} others logged (it is chosen if a majority did)"
            )
            return None
        return installed

    def _rejoin(self, view: View, how: str) -> Rejoin:
        return Rejoin(
            tuple(m for m in view.members if m != self.me),
            f"member {self.me} restarted from logs that end in view {self.mine.installed.epoch}, "
            f"but the group's view {view.epoch} {list(view.members)} {how}: it joins the "
            "group again and takes the state from its members",
            view.epoch,
        )
