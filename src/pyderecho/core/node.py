"""The state machine of one member: events in, actions out.

A driver calls :meth:`Node.send` for the application, :meth:`Node.receive` for each message from
a peer and :meth:`Node.tick` when :meth:`Node.next_deadline` comes, always with its clock's
``now``; then it drains :meth:`Node.outbox` (messages to send, in order, per peer) and
:meth:`Node.events` (deliveries, views, a stop). The node never does I/O, never reads a clock and
keeps no randomness, so the same inputs always give the same outputs.

The node ties the protocol steps together: multicast per shard (:mod:`.multicast`), failure
detection and view-change agreement (:mod:`.membership`), and, once a change is final, the
ragged-edge cleanup of every shard and the installation of the next view.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Collection, Mapping, MutableMapping, Sequence

import msgspec

from pyderecho.core.buffers import BufferPool
from pyderecho.core.config import CoreConfig
from pyderecho.core.errors import LocalProtocolError, RemoteProtocolError
from pyderecho.core.events import (
    Abandoned,
    Event,
    PeerMessage,
    Stopped,
    Suspected,
    ViewInstalled,
    ViewLogRequested,
)
from pyderecho.core.layout import (
    LayoutFunction,
    Mode,
    ViewLayout,
    compute_layout,
    describe_function,
)
from pyderecho.core.membership import (
    Membership,
    Silences,
    cleanup_ranks,
    next_view,
    ragged_edge_step,
    watchers_of,
)
from pyderecho.core.multicast import Outbox, SendClock, ShardMulticast
from pyderecho.core.restart import Found, Logs, RestartAgreement
from pyderecho.core.view import NodeId, View
from pyderecho.wire import (
    P2P,
    Block,
    Change,
    ChangeKind,
    Data,
    Heartbeat,
    JoinRequest,
    MembershipRow,
    Nulls,
    Removed,
    RestartPhase,
    RestartState,
    ShardMessage,
    ShardRow,
    Welcome,
    WireMessage,
    decode,
    split_block,
)


class Place:
    """Where :meth:`Node.place_frame` puts a large frame still arriving: its first ``head``
    bytes aside, the rest straight into ``body``; ``block`` is its head, decoded (the block
    with empty data), which :meth:`Node.receive_placed` completes with ``body``. (A plain
    class: mypyc cannot build a named tuple or a dataclass with a ``memoryview`` field.)"""

    __slots__ = ("block", "body", "head")

    def __init__(self, head: int, body: memoryview, block: Block) -> None:
        self.head = head
        self.body = body
        self.block = block


ShardKey = tuple[str, int, int]
"""A shard by replicated type, subgroup index and shard index: stable across views, unlike the
flattened subgroup id."""

MAX_EARLY_MESSAGES = 100_000
"""Messages of a view not yet installed kept for later; beyond this they are dropped."""

MAX_P2P_BYTES = 8 * 1024 * 1024
"""The largest point-to-point payload: one frame on every transport (TCP's default frame limit
is 16 MiB). Larger things (a shard's state) go in chunks, with flow control above the core."""


class LayoutFailed(Exception):
    """The application's layout function raised (or named strangers) for a view."""


class Node:
    """One member of the group."""

    def __init__(
        self,
        node_id: NodeId,
        view: View | None,
        layout: LayoutFunction,
        config: CoreConfig | None = None,
        *,
        now: float = 0.0,
        contacts: Sequence[NodeId] = (),
        addresses: Mapping[NodeId, str] | None = None,
        layout_cache: MutableMapping[tuple[int, tuple[NodeId, ...]], ViewLayout] | None = None,
        restart: Logs | None = None,
        incarnation: int = 1,
        floors: Mapping[ShardKey, int] | None = None,
    ) -> None:
        """A founding member of ``view``, or, with ``view=None``, a process that joins the
        group through ``contacts``, or, with ``restart``, a member restarting from its logs
        after the whole group stopped: it agrees with the others on the view to found
        (:mod:`.restart`), from what its own logs say about views (``restart``).

        ``addresses`` says where members listen, for transports that dial them; this node's own
        entry is what it tells the group when it joins. Joins and welcomes keep the map
        current: :attr:`addresses`.

        ``incarnation`` tells this process from any other started under the same id: a number
        the driver draws afresh for each start of a member. A restart's answers count only when
        they answer it, and a joiner is welcomed again only as the process its view admitted.

        ``floors``: per ``Paxos`` shard, the last timestamp this member's logs hold (a restart
        passes them), so that timestamps keep rising across the restart.

        ``layout_cache`` lets members in one process share each view's layout: a layout is a
        pure function of the view, and a simulated group of a thousand members would otherwise
        compute it a thousand times.
        """
        if view is not None and node_id not in view:
            raise LocalProtocolError(f"node {node_id} is not a member of view {view.epoch}")
        if restart is not None and view is not None:
            raise LocalProtocolError("a restart from logs founds the view it agrees on")
        if view is None and not contacts and restart is None:
            raise LocalProtocolError("a joining node needs at least one contact")
        self.node_id = node_id
        self.config = config or CoreConfig()
        self.stats: Counter[str] = Counter()
        """Counts of rejected or ignored input, by reason: a peer's misbehaviour shows here."""
        self.placed_blocks = 0
        """Blocks of large messages :meth:`place_frame` gave a place to (read in place)."""
        self.stopped = ""
        """Why this member stopped; empty while it runs."""
        self._outbox: Outbox = []
        self._events: list[Event] = []
        self.flush_due = False
        """A message taken with ``receive(..., flush=False)`` since the last :meth:`flush` may
        have enabled a step: the driver owes a flush. A heartbeat in a quiet view does not (it
        only moves a silence clock), so an idle group's heartbeats cost no flush."""
        self._buffers = BufferPool()
        """Large messages' buffers, shared by every shard and view of this member."""
        self._clock = SendClock(now)
        """The ``now`` of the input being handled, for the stamps of ``Paxos`` messages."""
        self._shards: dict[tuple[int, int], ShardMulticast] = {}
        self._by_subgroup: dict[int, ShardMulticast] = {}
        self._carried: dict[ShardKey, list[bytes]] = {}
        """Messages waiting for a view in which this member can send them in the same shard."""
        self._early: deque[tuple[NodeId, WireMessage]] = deque()
        self._layout_function = layout
        self._layout_cache = {} if layout_cache is None else layout_cache
        self._contacts = tuple(contacts)
        self.addresses: dict[NodeId, str] = dict(addresses or {})
        self._join_attempt = 0
        self._next_join = now
        self._join_deadline = now + self.config.join_timeout
        """A joiner not welcomed by then gives up (:attr:`join_failure` says why)."""
        self._join_problems: dict[NodeId, str] = {}
        """Why the link to each contact last broke, as the driver reported it."""
        self.join_failure: dict[NodeId, str] = {}
        """Set when this joiner gave up: each contact, and why its link broke (empty when it
        did not: the contact just never welcomed this process, or a driver still dials it)."""
        self.incarnation = incarnation
        self._admitted: dict[NodeId, int] = {}
        """The joiners of the current view, each with the incarnation its join request named."""
        self._restart = None if restart is None else RestartAgreement(node_id, restart, incarnation)
        self.founded: View | None = None
        """The view this member's restart from logs founded."""
        self._founding: View | None = None
        """The view a restart settled on, installed once the driver has logged it."""
        self._current_shards: frozenset[tuple[str, int, int]] | None = None
        """The shards whose logs here are current for that view (:meth:`_current_logs`)."""
        self._restart_holders: tuple[NodeId, ...] = ()
        """The founded view's members while no view since was adequate (the welcome tells a
        joiner): :attr:`~pyderecho.core.events.ViewInstalled.restart_holders`."""
        self.rejoined = ""
        """Why this member, restarted from logs, joins the group again instead."""
        self._excluded_in = -1
        """A restart's rejoin: the group's view that excludes this member (welcomes into it or
        earlier views are stale)."""
        self._log_commits = False
        """Some view had ``Paxos`` shards: the driver keeps logs, views' commits go in them."""
        self._silences = Silences(self.config)
        """Watched members' long gaps between frames, across views (adaptive timeouts)."""
        self._commit_requested: View | None = None
        self._floors: dict[ShardKey, int] = dict(floors or {})
        """Per ``Paxos`` shard: the last timestamp this member saw it deliver."""
        self._leave_requested = False
        self._next: View | None = None
        self._previous: Membership | None = None
        self._previous_rows: dict[tuple[int, int], ShardRow] = {}
        """The own last row of each shard of the view before, once cleaned up: the ragged-edge
        decision it applied, for a survivor still cleaning up (:meth:`_on_old_epoch`)."""
        self._moved_on: set[NodeId] = set()
        """Members of this view heard from in a later one: each installed it, so it holds the
        final change, and its row of every shard it shares with this member says it applied
        that shard's decision (see :func:`~pyderecho.core.membership.ragged_edge_step`)."""
        self._asked_for_final: set[NodeId] = set()
        """Members :meth:`_ask_moved_on` asked for this view's final change."""
        self._asked_for_cut: set[tuple[NodeId, int, int]] = set()
        """(member, subgroup, shard): whom :meth:`_ask_moved_on` asked for a shard's cut."""
        self._reported: set[NodeId] = set()
        """Suspicions of this view already reported as events."""
        self.membership: Membership | None = None
        self.view = View(-1, ())
        self.layout = ViewLayout(self.view, adequate=False, reason="not yet a member")
        self.previous_layout: ViewLayout | None = None
        """The last adequate layout before the current view's (see ``ViewInstalled.previous``)."""
        if view is not None:
            self._install(view, now, previous=None, founding=True)
        elif restart is not None:
            self._agree(now)

    def _layout_for(self, view: View) -> ViewLayout:
        """The view's layout; raises :class:`LayoutFailed` when the application's function
        does (an exception of the user's, never blamed on the peer whose message led here)."""
        key = (view.epoch, view.members)
        layout = self._layout_cache.get(key)
        if layout is None:
            try:
                layout = compute_layout(self._layout_function, view)
            except Exception as exc:
                name = describe_function(self._layout_function)
                raise LayoutFailed(
                    f"layout function {name} raised {type(exc).__name__}: {exc} "
                    f"for view {view.epoch} {list(view.members)}"
                ) from exc
            self._layout_cache[key] = layout
        return layout

    # -- inputs from the application --------------------------------------------------------

    def send(self, subgroup: int, payload: bytes, now: float, *, flush: bool = True) -> None:
        """Multicast ``payload`` to this member's shard of ``subgroup``.

        The message is queued and leaves as soon as the shard's window has room; its index shows
        in the :class:`~pyderecho.core.events.MessageSent` event. During a view change it waits
        and goes out in the next view. With ``flush=False`` it waits for :meth:`flush`, so that
        a driver can send a burst as one batch.
        """
        if self.stopped:
            raise LocalProtocolError(f"member {self.node_id} has stopped: {self.stopped}")
        self._clock.now = now
        if self._leave_requested:
            raise LocalProtocolError(f"member {self.node_id} is leaving the group")
        if not self.layout.adequate:
            raise LocalProtocolError(
                f"view {self.view.epoch} is inadequate ({self.layout.reason}): nothing is sent "
                "until enough members join"
            )
        shard = self._by_subgroup.get(subgroup)
        if shard is None:
            raise LocalProtocolError(
                f"member {self.node_id} is in no shard of subgroup {subgroup} in view "
                f"{self.view.epoch}"
            )
        shard.send(payload, now=flush)
        if flush:
            self._advance(now)

    def send_p2p(self, dst: NodeId, payload: bytes | memoryview, now: float) -> None:
        """Send ``payload`` to member ``dst`` alone (a query, a reply, a chunk of state).

        Point-to-point messages keep their order per destination, like every frame, and are
        not tied to a view; they reach ``dst`` as a :class:`PeerMessage` event.
        """
        if self.stopped:
            raise LocalProtocolError(f"member {self.node_id} has stopped: {self.stopped}")
        size = memoryview(payload).nbytes
        if size > MAX_P2P_BYTES:
            raise LocalProtocolError(
                f"point-to-point message of {size} bytes exceeds {MAX_P2P_BYTES}"
            )
        self._outbox.append((dst, P2P(memoryview(payload))))

    def flush(self, now: float) -> None:
        """Send what was queued with ``send(..., flush=False)`` and run the protocol steps that
        messages taken with ``receive(..., flush=False)`` enabled."""
        self.flush_due = False
        if self.stopped:
            return
        self._clock.now = now
        for shard in self._shards.values():
            shard.pump()
        self._advance(now)

    def persisted(
        self, subgroup: int, epoch: int, upto: int, now: float, *, flush: bool = True
    ) -> None:
        """The driver logged durably what this member's ``Paxos`` shard of ``subgroup`` asked
        for in ``epoch`` (:class:`~pyderecho.core.events.PersistRequested`), up to global index
        ``upto``. A report for an epoch that has ended is counted and ignored: a view is only
        installed once its shards' logging is done.

        With ``flush=False`` the row that shows it waits for :meth:`flush`, as for
        :meth:`receive`: a report that lands in a turn with frames goes out in their push."""
        shard = self._reported_shard(subgroup, epoch, now, "stale_persisted")
        if shard is None:
            return
        shard.persisted(upto)
        if flush:
            self._advance(now)
        else:
            self.flush_due = True

    def cut_logged(self, subgroup: int, epoch: int, now: float) -> None:
        """The driver logged durably the mark that this member's ``Paxos`` shard of
        ``subgroup`` holds ``epoch``'s ragged-edge cut
        (:class:`~pyderecho.core.events.CutLogRequested`). A report for an epoch that has
        ended is counted and ignored, as for :meth:`persisted`."""
        shard = self._reported_shard(subgroup, epoch, now, "stale_cut_logged")
        if shard is None:
            return
        shard.cut_logged()
        self._advance(now)

    def _reported_shard(
        self, subgroup: int, epoch: int, now: float, stale: str
    ) -> ShardMulticast | None:
        """The shard of ``subgroup`` a driver's report of ``epoch`` is for; None (counted as
        ``stale``) when the member stopped or that epoch has ended."""
        if self.stopped:
            return None
        self._clock.now = now
        shard = self._by_subgroup.get(subgroup)
        if shard is None or shard.epoch != epoch:
            self.stats[stale] += 1
            return None
        return shard

    def view_logged(self, view: View, now: float) -> None:
        """The driver logged durably the ``view`` that
        :class:`~pyderecho.core.events.ViewLogRequested` asked for: the row that shows its
        commit may go, or the view a restart founds is installed. A report of a commit no
        longer held is ignored."""
        if self.stopped:
            return
        self._clock.now = now
        if self.membership is None:
            if view == self._founding:
                self._founding = None
                self.founded = view
                self._install(view, now, previous=None, founding=True)
        elif self.membership.commit_to_log == view:
            self.membership.commit_logged(view)
        self._advance(now)

    def leave(self, now: float) -> None:
        """Leave the group once every message this member sent has been delivered."""
        self._leave_requested = True
        self._advance(now)

    def fail(self, reason: str) -> None:
        """The driver cannot go on (its storage failed): stop for good with ``reason``. The
        member falls silent, so the rest of the group suspects it and removes it."""
        self._stop(reason)

    def report_failure(self, node: NodeId, now: float) -> None:
        """The application has its own evidence that ``node`` failed."""
        if self.membership is not None:
            self.membership.suspect(node, now, local=True)
            self._advance(now)

    def link_lost(self, node: NodeId, now: float, reason: str = "") -> None:
        """The driver's link to ``node`` broke, for ``reason``: a failure, unless ``node`` is
        leaving (it exits as soon as its leave is final, before this member may know that).
        A joiner keeps the reason: if it gives up, it says why each contact did not let it in."""
        if self.membership is not None:
            self.membership.link_lost(node, now)
            self._advance(now)
        elif node in self._contacts:
            self._join_problems[node] = reason or "the link broke"

    # -- inputs from peers and the clock ----------------------------------------------------

    def receive(self, src: NodeId, message: WireMessage, now: float, *, flush: bool = True) -> None:
        """Handle one message from peer ``src``; a bad message is counted and dropped.

        With ``flush=False`` the message is taken in (its deliveries happen now) but the
        protocol steps it enables, and the rows it changed, wait for :meth:`flush`: a driver
        that takes a burst of frames in first pushes each changed row once for the burst
        rather than once per frame. Deferring is safe because every step is a predicate over
        the state, not a reaction to one message: it is as if the frames had arrived together.
        """
        if self.stopped:
            return
        self._clock.now = now
        try:
            self._dispatch(src, message, now)
        except RemoteProtocolError:
            self.stats["rejected"] += 1
        if flush:
            self._advance(now)
        elif not self.flush_due and not (
            type(message) is Heartbeat and self.membership is not None and self.membership.quiet
        ):
            self.flush_due = True

    def receive_bytes(
        self, src: NodeId, data: bytes | memoryview, now: float, *, flush: bool = True
    ) -> None:
        """Decode and handle one framed message; malformed bytes are counted and dropped."""
        try:
            message = decode(data)
        except RemoteProtocolError:
            self.stats["malformed"] += 1
            return
        self.receive(src, message, now, flush=flush)

    def place_frame(self, src: NodeId, prefix: memoryview, length: int) -> Place | None:
        """Where a large frame from ``src`` that is still arriving can be read to: its first
        bytes aside, and the rest straight into its block's place in the message's
        reassembly buffer (``prefix``: its first bytes, ``length``: its size). None unless it
        is a block of a large message of the current view that this member receives from
        ``src`` and does not hold. Hand the place back with :meth:`receive_placed` once the
        frame is complete."""
        membership = self.membership
        if self.stopped or membership is None:
            return None
        split = split_block(prefix, length)
        if split is None:
            return None
        head, block = split
        if block.epoch != self.view.epoch:
            return None
        shard = self._shards.get((block.subgroup, block.shard))
        if shard is None:
            return None
        body = shard.place_block(src, block, length - head)
        if body is None:
            return None
        self.placed_blocks += 1
        return Place(head, body, block)

    def receive_placed(self, src: NodeId, place: Place, now: float, *, flush: bool = True) -> None:
        """Handle a frame read in two parts as :meth:`place_frame` said, once its body is in:
        as :meth:`receive_bytes` would handle the whole frame, without decoding its head or
        copying the block's data again."""
        self.receive(src, msgspec.structs.replace(place.block, data=place.body), now, flush=flush)

    def tick(self, now: float) -> None:
        """The deadline from :meth:`next_deadline` has come."""
        if self.stopped:
            return
        self._clock.now = now
        self._buffers.trim(now)
        if self.membership is not None:
            self.membership.tick(now)
            for shard in self._shards.values():
                shard.acknowledge_quiet_senders(now, self.config.heartbeat_timeout / 2)
                shard.push_lagging_row()
        elif self._founding is not None:
            pass  # the view a restart settled on waits for the driver to log it
        elif self._restart is not None:
            if now >= self._next_join:
                self._next_join = now + self.config.heartbeat_interval
                question = self._restart.question()
                self._outbox.extend((peer, question) for peer in self._restart.waiting_for())
        elif now >= self._join_deadline:
            self._give_up_joining()
        elif now >= self._next_join:
            contact = self._contacts[self._join_attempt % len(self._contacts)]
            self._join_attempt += 1
            self._next_join = now + self.config.heartbeat_timeout
            address = self.addresses.get(self.node_id, "")
            request = JoinRequest(self.node_id, address, self.incarnation)
            self._outbox.append((contact, request))
        self._advance(now)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must be called next; None once the member has stopped, or while
        it waits for its driver to log the view a restart founds."""
        if self.stopped:
            return None
        if self.membership is None:
            if self._founding is not None:
                return None
            if self._restart is not None:
                return self._next_join
            return min(self._next_join, self._join_deadline)
        return self.membership.next_deadline()

    def beats_expected_from(self) -> Collection[NodeId] | None:
        """The members whose periodic heartbeats this member waits for now: those it watches,
        while its view is quiet; None (anyone's may matter) while it has no view yet or a
        change is under way, when members beat to the watchers of the next view and the
        next view's leader too. A driver whose transport lets beats wait unread until it
        looks reads these at every tick, and may read the others' less often."""
        membership = self.membership
        if membership is None or not membership.quiet:
            return None
        return membership.watched

    # -- outputs ----------------------------------------------------------------------------

    def outbox(self) -> Outbox:
        """Messages to send, oldest first; per destination they must stay in this order."""
        out = self._outbox[:]
        self._outbox.clear()
        return out

    def events(self) -> list[Event]:
        """What happened since the last call, oldest first."""
        out = self._events[:]
        self._events.clear()
        return out

    @property
    def events_waiting(self) -> bool:
        """Events wait to be taken (:meth:`events`). Some may be views into the frame just
        received (a point-to-point payload, a ``Raw`` delivery), valid only while its callback
        runs: a driver that feeds several frames before a step must step first."""
        return bool(self._events)

    def shard_of(self, subgroup: int) -> ShardMulticast | None:
        """This member's shard of ``subgroup`` in the current view, if any."""
        return self._by_subgroup.get(subgroup)

    def queue_has_room(self, subgroup: int, messages: int, nbytes: int) -> bool:
        """Fewer than ``messages`` of this member's messages in ``subgroup``, and fewer than
        ``nbytes`` of payload, wait for a window slot: the bound a driver applies (large
        messages are bounded by their bytes) before it queues one more. One call per send."""
        shard = self._by_subgroup.get(subgroup)
        return shard is None or (len(shard.pending) < messages and shard.pending_bytes < nbytes)

    def can_send(self, subgroup: int) -> bool:
        """This member is a sender of its shard of ``subgroup`` in the current view."""
        shard = self._by_subgroup.get(subgroup)
        return shard is not None and shard.my_sender_rank >= 0

    def address_of(self, node: NodeId) -> str | None:
        """Where ``node`` listens, as far as this member knows (joins and welcomes tell)."""
        return self.addresses.get(node)

    def advertise(self, address: str) -> None:
        """Where this member listens: what its join request tells the group. A driver that
        bound to port 0 learns it only after the node exists."""
        self.addresses[self.node_id] = address

    @property
    def is_member(self) -> bool:
        """This node has installed a view (a joiner is not a member until welcomed)."""
        return self.membership is not None

    @property
    def restart_waits_for(self) -> str:
        """While a restart from logs cannot decide yet: what it waits for (else empty)."""
        return "" if self._restart is None else self._restart.waiting

    @property
    def idle(self) -> bool:
        """A member of a view with no change under way and nothing left to send or deliver."""
        membership = self.membership
        if membership is None or membership.changing:
            return False
        return all(shard.idle for shard in self._shards.values())

    @property
    def duplicates(self) -> int:
        return sum(shard.duplicates for shard in self._shards.values())

    # -- internals --------------------------------------------------------------------------

    def _dispatch(self, src: NodeId, message: WireMessage, now: float) -> None:
        membership = self.membership
        if (
            isinstance(message, (ShardRow, Data, Nulls, Block))
            and membership is not None
            and message.epoch == self.view.epoch
        ):
            # Most frames: a shard's message of the current view. The same steps as at the
            # end, without testing for every other kind first (this runs once per frame).
            membership.heard_from(src, now)
            self._to_shard(src, message)
            return
        if isinstance(message, JoinRequest):
            self._on_join_request(src, message, now)
            return
        if isinstance(message, RestartState):
            self._on_restart_state(src, message, now)
            return
        if isinstance(message, P2P):
            if membership is not None:
                membership.heard_from(src, now)
            self._events.append(PeerMessage(src, message.payload))
            return
        if isinstance(message, Welcome):
            if membership is None and message.epoch <= self._excluded_in:
                self.stats["stale_welcome"] += 1
                return
            if membership is None and message.incarnation != self.incarnation:
                self.stats["welcome_for_another_process"] += 1
                return
            if membership is None and self.node_id in message.members:
                self.addresses.update(
                    (m, a) for m, a in zip(message.members, message.addresses, strict=False) if a
                )
                previous = None
                if message.previous_epoch >= 0:
                    try:
                        previous = self._layout_for(
                            View(message.previous_epoch, message.previous_members)
                        )
                    except LayoutFailed as exc:
                        self._stop(str(exc))
                        return
                self._install(
                    View(message.epoch, message.members, message.joined, message.departed),
                    now,
                    previous=previous,
                    holders=message.restart_holders,
                )
            return
        if isinstance(message, Removed):
            if membership is not None and message.epoch > self.view.epoch:
                # A member that asked to leave learns it from whoever answers it first: a
                # member already in the view without it may answer a frame of the old view
                # before the leader's final reaches it, frames from two links being read in
                # either order. Everything it sent was delivered before it asked (see
                # ``_advance``), so being left out is its leave, however it learned it.
                self._stop(
                    "left the group"
                    if membership.leaving
                    else f"removed from the group: view {message.epoch} excludes it"
                )
            return
        if membership is None:
            self._keep_early(src, message)
            return
        membership.heard_from(src, now)
        if message.epoch > self.view.epoch:
            if isinstance(message, Heartbeat) and message.probe:
                # A member of a later view was told this one is gone and checks: answer, or
                # a member still finishing this view's cleanup (its cut may wait for a peer
                # across a partial cut) is taken for cut off from the prober, and the prober,
                # which accuses it alone, is the one removed (partial-cut seed 1122 removed a
                # joiner that reached everyone). The answer vouches only for this link.
                membership.receive_heartbeat(src, message)
                return
            self._keep_early(src, message)
            if src in self.view:
                self._ask_moved_on(src)
            return
        if message.epoch < self.view.epoch:
            self._on_old_epoch(src, message, now)
            return
        if isinstance(message, Heartbeat):
            membership.receive_heartbeat(src, message)
            return
        if isinstance(message, MembershipRow):
            if message.final and src in self._moved_on:
                membership.adopt_final(message, now)
            membership.receive_row(src, message, now)
            return
        self._to_shard(src, message)

    def _to_shard(self, src: NodeId, message: ShardMessage) -> None:
        shard = self._shards.get((message.subgroup, message.shard))
        if shard is None:
            self.stats["unknown_shard"] += 1
            return
        shard.receive(src, message)

    def _on_old_epoch(self, src: NodeId, message: WireMessage, now: float) -> None:
        self.stats["other_epoch"] += 1
        previous = self._previous
        if src not in self.view:
            self._outbox.append((src, Removed(self.view.epoch)))
            return
        if self.view.joined and src not in self.view.joined and self.membership is not None:
            self.membership.heard_behind(src, now)
        if (
            isinstance(message, Heartbeat)
            and previous is not None
            and message.epoch == previous.view.epoch
        ):
            # A survivor still cleaning up the view this member left probes it: it is alive.
            previous.receive_heartbeat(src, message)
        elif (
            isinstance(message, MembershipRow)
            and self._previous is not None
            and message.epoch == self._previous.view.epoch
        ):
            # A leader of the view this member already left behind is finishing its change:
            # answer with the final this member installed, which that leader will adopt.
            self._previous.receive_row(src, message, now)
            self._previous.step(now)
            if message.final < self._previous.final:
                # A member that lacks the final: it follows this one, which leads there no
                # more, or it asks this one, heard from in the next view (_ask_moved_on).
                self._outbox.append((src, self._previous.final_as_leader()))
        elif (
            isinstance(message, ShardRow)
            and not message.cleaned
            and self._previous is not None
            and message.epoch == self._previous.view.epoch
        ):
            # A survivor still cleaning up a shard of the view this member left behind: its
            # cleanup's leader may have crashed after telling this member only that it applied
            # its decision (rows go to that leader alone). The decision applied here is the
            # one it must apply too; answer with the row that holds it.
            row = self._previous_rows.get((message.subgroup, message.shard))
            if row is not None:
                self._outbox.append((src, row))

    def _on_restart_state(self, src: NodeId, state: RestartState, now: float) -> None:
        agreement = self._restart
        asked = state.answering == 0 and state.phase is RestartPhase.RESTARTING
        if agreement is not None:
            if asked:
                self._outbox.append((src, agreement.answer(state)))
            else:
                agreement.receive(src, state)
                self._agree(now)
        elif self.membership is not None and asked:
            # A member restarting late asks: it joins the view a restart founded, or learns
            # that the group went on without it. One this member suspects already (its
            # earlier incarnation's link broke) hears that the view runs: the view will
            # remove it, and taking part would make it a rival leader's follower in the
            # meantime (beyond-budget stay-down seed 44145: 0 took part in the view that 1
            # and 4, which had seen its earlier incarnation crash, were removing it from; 0
            # and 5 followed 0, 1 and 4 followed 1, each pair short of a majority, for good).
            founded = self.view == self.founded and src not in self.membership.suspected
            phase = RestartPhase.FOUNDED if founded else RestartPhase.RUNNING
            answer = Logs(self.view).state(phase, answering=state.incarnation)
            self._outbox.append((src, answer))

    def _agree(self, now: float) -> None:
        """Found the view the restart agreement settled on, or join the group as any joiner
        when it goes on without this member."""
        assert self._restart is not None
        outcome = self._restart.outcome()
        if outcome is None:
            return
        logs = self._restart.mine
        self._restart = None
        self._log_commits = True  # it restarted from logs, so the group keeps them
        if isinstance(outcome, Found):
            self._founding = outcome.view
            self._current_shards = self._current_logs(logs, outcome.view)
            self._events.append(
                ViewLogRequested(outcome.view, self._addresses_of(outcome.view), False)
            )
        else:
            self.rejoined = outcome.reason
            self._excluded_in = outcome.epoch
            self._contacts = outcome.contacts
            self._next_join = now
            self._join_deadline = now + self.config.join_timeout

    def _current_logs(self, logs: Logs, founded: View) -> frozenset[tuple[str, int, int]] | None:
        """The shards whose logs here hold this member's part of the newest view the group
        installed, I, which ``founded`` follows: of those, it held every update delivered
        anywhere (a Paxos delivery waits for every member's log), and its rebuilt state counts
        in the restart's comparison. A founded view comes after I (I's epoch is one below
        it) or after a commit of I's successor (two below), so logs that installed neither,
        nor logged I's own commit, missed I: the member left the group before it (it was
        rejoining when everyone crashed), and the shards went on without it. Nor does a shard
        count that the member did not hold in the last view it installed (its directory is
        from an earlier stint) or, when its logs end in I's commit, in I (the layout moved it
        in at I: it never took the state). Beyond-budget stay-down seed 63101: member 3,
        removed in view 2 and joining view 3 when everyone crashed, came back with its view-1
        state of a shard, and as the shard's one member back that held a state (the other
        was lost, the one that had moved in at view 2 moved out in the founded view) its
        state was taken, two updates short.

        An inadequate layout delivered nothing and says nothing; with no adequate one to go
        by (None), every rebuilt state counts."""
        installed, commit = logs.installed, logs.commit
        reach = installed.epoch >= founded.epoch - 2 or (
            commit is not None and commit.epoch == founded.epoch - 2
        )
        if not reach:
            return frozenset()
        views = [installed]
        if commit is not None and commit.epoch < founded.epoch:
            views.append(commit)
        held: list[set[tuple[str, int, int]]] = []
        for view in views:
            try:
                layout = self._layout_for(view)
            except LayoutFailed:
                return None  # installing the founded view stops the member with the error
            if layout.adequate:
                refs = layout.shards_of(self.node_id)
                held.append({(r.type_name, r.subgroup_index, r.shard) for r in refs})
        return frozenset(set.intersection(*held)) if held else None

    def _give_up_joining(self) -> None:
        """No contact let this process in within the join timeout: stop, saying for each
        contact what went wrong (a refused link says why, e.g. ``bad_auth`` for another
        secret; a contact that never broke the link just never welcomed it)."""
        self.join_failure = {c: self._join_problems.get(c, "") for c in self._contacts}
        lines = [
            f"member {contact}: {problem or 'no welcome came'}"
            for contact, problem in self.join_failure.items()
        ]
        self._stop(f"could not join within {self.config.join_timeout:g} s: " + "; ".join(lines))

    def _on_join_request(self, src: NodeId, request: JoinRequest, now: float) -> None:
        membership = self.membership
        if membership is None:
            return
        if request.node in self.view:
            if self._welcomes_again(membership, request):
                self._outbox.append((request.node, self._welcome(request.incarnation)))
            else:
                self.stats["join_under_a_members_id"] += 1
            return
        change = Change(request.node, ChangeKind.JOIN, request.address, request.incarnation)
        leader = membership.request_join(change, now)
        if leader is not None and leader not in (self.node_id, src):
            self._outbox.append((leader, request))

    @staticmethod
    def _joins_to_hand_on(membership: Membership, view: View) -> list[JoinRequest]:
        """The joins ``membership``'s leader was asked for and has not proposed, of processes
        not in ``view``, the next one: asked for again there, as a contact forwards a request.
        Dropped with the old view, each joiner would ask again only a timeout later, through a
        contact of its own choosing: in a rolling restart over slow links, membership seed
        1758, one joiner's requests reached three leaders in turn, each leaving, then contacts
        that had left, until its join timed out."""
        return [
            JoinRequest(change.node, change.address, change.incarnation)
            for change in membership.unproposed_joins
            if change.node not in view
        ]

    def _welcomes_again(self, membership: Membership, request: JoinRequest) -> bool:
        """A join request names a member of this view: only the process this view admitted,
        asking again because its welcome got lost, is welcomed into it.

        Any other process asking under a member's id was started after that member's process
        died (a restart with ``--join`` after a kill): welcomed into this view, it would send
        under the indices the dead one used, and deliver from the middle of a history it
        never saw. It waits until the group has removed the dead one (its broken links or its
        silence do that), then joins the next view as anyone does.
        """
        admitted = self._admitted.get(request.node)
        return admitted == request.incarnation and request.node not in membership.suspected

    def _ask_moved_on(self, src: NodeId) -> None:
        """``src``, a member of this view, installed a later one: it knows the final change
        of this view and applied the ragged-edge decision of every shard it shares with this
        member. Ask it for what this member still lacks: the own membership row, and the own
        row of each shard still being cleaned up, each once; it answers each with its row
        that holds the final or the decision (:meth:`_on_old_epoch`), which this member
        adopts (a final and an applied decision are the only ones there can be).

        The leader's rows, their only other source, may have been lost with its crash: this
        member then waited until it suspected the leader, which it may not watch, while the
        next view counted on it (Paxos sweep seed 2152 with nulls carried on rows: a joiner
        timed it out and was removed for that).
        """
        self._moved_on.add(src)
        membership = self.membership
        if membership is not None:
            membership.went_ahead(src)
        if (
            membership is not None
            and not membership.final
            and src not in self._asked_for_final
            and membership.ask(src)
        ):
            self._asked_for_final.add(src)
        for key, shard in self._shards.items():
            asked = (src, *key)
            if (
                shard.wedged
                and not shard.cleaned
                and src in shard.member_rank
                and asked not in self._asked_for_cut
            ):
                self._asked_for_cut.add(asked)
                self._outbox.append((src, shard.row_as_it_stands()))

    def _keep_early(self, src: NodeId, message: WireMessage) -> None:
        if len(self._early) >= MAX_EARLY_MESSAGES:
            self.stats["early_dropped"] += 1
            return
        self.stats["early"] += 1
        # Views into a frame do not outlive its callback; this message waits for a view.
        if isinstance(message, Data):
            copies = tuple(memoryview(bytes(payload)) for payload in message.payloads)
            message = msgspec.structs.replace(message, payloads=copies)
        elif isinstance(message, Block):
            message = msgspec.structs.replace(message, data=memoryview(bytes(message.data)))
        self._early.append((src, message))

    def _advance(self, now: float) -> None:
        """Run every protocol step the last input may have enabled, then push changed rows.

        Installing a view can enable the next change at once (a suspicion carried over), so
        the steps run again until the view stays put.
        """
        while self.membership is not None and not self.stopped:
            membership = self.membership
            if self._leave_requested and not membership.leaving and self._flushed():
                membership.request_leave(now)
            membership.step(now)
            self._request_commit_log(membership)
            if len(membership.suspected) > len(self._reported):
                news = sorted(membership.suspected - self._reported)
                self._reported.update(news)
                self._events.extend(Suspected(node) for node in news)
            if membership.stopped:
                self._stop(membership.stopped)
            elif membership.changing:
                self._wedge(membership)
                if membership.final:
                    self._clean_up(membership, now)
            if self.membership is membership:
                break
        self._flush()

    def _request_commit_log(self, membership: Membership) -> None:
        committed = membership.commit_to_log
        if committed is None or committed == self._commit_requested:
            return
        self._commit_requested = committed
        changes = membership.changes[: membership.committed]
        failed = tuple(c.node for c in changes if c.kind is ChangeKind.REMOVE)
        addresses = self._addresses_of(committed, changes)
        self._events.append(ViewLogRequested(committed, addresses, True, failed))

    def _addresses_of(self, view: View, joining: Sequence[Change] = ()) -> tuple[str, ...]:
        known = dict(self.addresses)
        known.update((c.node, c.address) for c in joining if c.address)
        return tuple(known.get(m, "") for m in view.members)

    def _flushed(self) -> bool:
        return all(shard.flushed for shard in self._shards.values())

    def _wedge(self, membership: Membership) -> None:
        """Stop every shard; once the change is final, mark in each the members the final
        excludes, which this member no longer counts on (a new cleanup leader waits for that).
        A suspicion alone marks nothing: the member still counts on whom it suspects until the
        change's leader excludes it, and a mark it could not take back would let a new leader
        decide while this member still echoes the old one."""
        excluded = membership.excluded
        for shard in self._shards.values():
            shard.wedge()
            for node in excluded:
                shard.suspect(node)

    def _clean_up(self, membership: Membership, now: float) -> None:
        if self._next is None:
            self._next = next_view(self.view, membership.changes[: membership.final])
            if self.node_id in self._next:
                # The next view's leader hears it too: it is the one that would time out a
                # member still busy with this cleanup.
                watchers = watchers_of(self._next, self.node_id, self.config.monitors)
                leader = self._next.members[0]
                if leader != self.node_id and leader not in watchers:
                    watchers.append(leader)
                membership.next_watchers = watchers
        if self.node_id not in self._next:
            if membership.leaving and membership.leads and membership.not_moving_on():
                # A leader whose own leave is final stays to lead the rest of the change, as
                # any leader does, with no cleanup of its own: only it can exclude a survivor
                # whose cleanup stalls (typed Paxos seed 7358: it exited, 2 crashed during the
                # cleanup, the cleanups waiting on 2 waited for good, and no view came).
                return
            # A leader leaving hands them to the next view's lowest rank, its leader (none
            # when the last members leave together).
            if self._next.members:
                leader = self._next.members[0]
                for request in self._joins_to_hand_on(membership, self._next):
                    self._outbox.append((leader, request))
            self._stop("left the group" if membership.leaving else "removed from the group")
            return
        excluded = membership.excluded
        if self.node_id in excluded:
            self._stop(
                f"excluded from view {self.view.epoch}'s cleanup: the change's leader found it "
                "failed or cut off from members the others reach"
            )
            return
        survivors = set(self._next.members)
        waiting: set[NodeId] = set()
        for shard in self._shards.values():
            was_clean = shard.cleaned
            waits = ragged_edge_step(shard, survivors, excluded)
            if waits is None:
                self._stop(
                    f"excluded from view {self.view.epoch}'s cleanup: a decision made without "
                    "it keeps messages it never received (the change's leader found it failed "
                    "or cut off from members the others reach)"
                )
                return
            waiting.update(waits)
            if shard.cleaned and not was_clean:
                membership.progress(now)
        membership.cleanup_waits_on = waiting
        membership.cleanup_logging = any(shard.logging_cutoff for shard in self._shards.values())
        if waiting:
            return
        if not membership.cleaned:
            # Tell the change's leader, which stays until every survivor has moved on.
            membership.report_cleaned()
            membership.step(now)
        if membership.commit_to_log is not None or (
            membership.leads and membership.not_moving_on()
        ):
            return
        self._flush()
        previous = self.layout if self.layout.adequate else self.previous_layout
        self._install(self._next, now, previous=previous)

    def _install(
        self,
        view: View,
        now: float,
        *,
        previous: ViewLayout | None,
        founding: bool = False,
        holders: tuple[NodeId, ...] | None = None,
    ) -> None:
        """Make ``view`` current: new shards, re-sent leftovers, and the next membership.

        The layout is computed first: if the application's function raises, the member stops
        with that error before anything changes, rather than half-installing the view.
        """
        try:
            layout = self._layout_for(view)
        except LayoutFailed as exc:
            self._stop(str(exc))
            return
        old = self.membership
        carried = self._carried
        floors = dict(self._floors)
        for ref_key, shard in self._subgroup_keys():
            carried.setdefault(ref_key, []).extend(shard.leftover())
            if shard.persistent:
                floors[ref_key] = shard.last_timestamp
        self._floors = floors
        self._admitted = {}
        if old is not None:
            for change in old.changes[: old.final]:
                if change.address:
                    self.addresses[change.node] = change.address
                if change.kind is ChangeKind.JOIN:
                    self._admitted[change.node] = change.incarnation
        self._previous = old
        self._next = None
        self.view = view
        self.layout = layout
        self.previous_layout = previous
        self._previous_rows = {
            key: shard.row() for key, shard in self._shards.items() if shard.cleaned
        }
        self._moved_on = set()
        self._asked_for_final = set()
        self._asked_for_cut = set()
        self._shards.clear()
        self._by_subgroup.clear()
        suspected = set(old.carried) if old is not None else set()
        decided = old.decided if old is not None else frozenset()
        if layout.adequate and any(r.layout.mode is Mode.PAXOS for r in layout.shards):
            self._log_commits = True
        self.membership = Membership(
            self.node_id,
            view,
            self.config,
            self._outbox,
            now,
            suspected=suspected,
            decided=decided,
            founding=founding,
            log_commits=self._log_commits,
            silences=self._silences,
        )
        self._reported = set(self.membership.suspected)
        for request in self._joins_to_hand_on(old, view) if old is not None else ():
            # Asked for while the last change was under way: the join waits for this view's
            # change, led here or by the member this one forwards it to.
            self._on_join_request(self.node_id, request, now)
        if self.layout.adequate:
            for ref in self.layout.shards_of(self.node_id):
                shard = ShardMulticast(
                    self.node_id,
                    view.epoch,
                    ref,
                    self.config,
                    outbox=self._outbox,
                    events=self._events,
                    buffers=self._buffers,
                    clock=self._clock,
                    floor=floors.get((ref.type_name, ref.subgroup_index, ref.shard), 0),
                )
                self._shards[(ref.subgroup, ref.shard)] = shard
                self._by_subgroup[ref.subgroup] = shard
        restart = founding and view == self.founded
        restarted = self._current_shards if restart else None
        if founding:
            self._restart_holders = view.members if restart else ()
        elif holders is not None:
            self._restart_holders = holders  # a joiner's, from its welcome
        elif previous is not None:
            self._restart_holders = ()  # the founders compared in the adequate view before
        self._events.append(
            ViewInstalled(view, self.layout, previous, restarted, self._restart_holders)
        )
        if old is not None and old.leads:
            self._outbox.extend(
                (joiner, self._welcome(self._admitted[joiner])) for joiner in view.joined
            )
        for key, payloads in list(carried.items()):
            # Only into the same shard: a re-layout that moved this member to another shard of
            # the subgroup must not replay there what was meant for the first (another key,
            # another partition of the state).
            type_name, index, shard_index = key
            subgroup = self.layout.subgroup_ids.get((type_name, index))
            target = self._by_subgroup.get(subgroup) if subgroup is not None else None
            if target is not None and target.shard == shard_index and target.my_sender_rank >= 0:
                del carried[key]
                for payload in payloads:
                    target.send(payload)
            elif self.layout.adequate:
                del carried[key]
                self._events.extend(Abandoned(type_name, index, p, shard_index) for p in payloads)
        early, self._early = self._early, deque()
        for src, message in early:
            if self.stopped:
                break
            self.receive(src, message, now)

    def _welcome(self, incarnation: int) -> Welcome:
        view = self.view
        addresses = tuple(self.addresses.get(m, "") for m in view.members)
        previous = self.previous_layout.view if self.previous_layout is not None else View(-1, ())
        return Welcome(
            view.epoch,
            view.members,
            view.joined,
            view.departed,
            addresses,
            previous.epoch,
            previous.members,
            incarnation,
            self._restart_holders,
        )

    def _subgroup_keys(self) -> list[tuple[ShardKey, ShardMulticast]]:
        ids = {sid: key for key, sid in self.layout.subgroup_ids.items()}
        return [((*ids[shard.subgroup], shard.shard), shard) for shard in self._shards.values()]

    def _stop(self, reason: str) -> None:
        if not self.stopped:
            self.stopped = reason
            self._events.append(Stopped(reason))

    def _flush(self) -> None:
        """Push every shard row that changed during this input, once, to the shard's members.

        Pushing once per input rather than once per change coalesces a burst of updates into
        one small frame per peer. Once a shard is wedged, outside ``Paxos``, a member's row
        goes to the cleanup's leader and the view change's (:meth:`_cleanup_leaders`): only
        the cleanup leader reads the others' rows (who wedged, who ignores whom, what each
        received, who echoes its decision), and it pushes its own, with the decision, to
        everyone. Every member pushing to every member made the cleanup
        of a shard of n members cost each member n frames (docs/scaling.md). When the leader
        changes (suspected, or left out by the final change), the row goes to the new one.
        ``Paxos`` rows still go to everyone: each survivor waits for every other's log.
        """
        for shard in self._shards.values():
            targets = self._cleanup_leaders(shard) if shard.wedged else None
            if targets != shard.pushed_to:
                shard.pushed_to = targets
                shard.dirty = True  # a new leader may not have the row yet
            if shard.dirty:
                if targets is None:
                    row = shard.row(to_every_member=True)
                    if not self._ride_on_batch(shard, row):
                        self._outbox.extend((peer, row) for peer in shard.peers)
                    if shard.mode is Mode.RAW:
                        shard.told(range(len(shard.senders)))
                else:
                    shard.send_unsent_nulls()
                    row = shard.row()
                    self._outbox.extend((peer, row) for peer in targets)
            elif shard.acks_due:
                row = shard.row()
                due = sorted(shard.acks_due)
                self._outbox.extend((shard.senders[sender], row) for sender in due)
                shard.told(due)

    def _ride_on_batch(self, shard: ShardMulticast, row: ShardRow) -> bool:
        """Put ``row``, due to every member of ``shard``, on the batch of messages this member
        queued last, if that batch is the last thing queued for each of them: the row then
        arrives where it would have, right after the batch, in the same frame (``Data.row``).

        A member that sends pushes its row in the same turn (its own count moved), so every
        batch was followed by a row frame to the same members: a lone message in a shard of
        three cost 8 frames, 2 of them its sender's row. Each frame costs a receiver a decode,
        a dispatch and the shard's steps, whatever its size.
        """
        peers, outbox = shard.peers, self._outbox
        count = len(peers)
        if not count or len(outbox) < count or shard.wedged:
            return False
        batch = outbox[-1][1]
        if (
            type(batch) is not Data
            or batch.row is not None
            or (batch.epoch, batch.subgroup, batch.shard)
            != (shard.epoch, shard.subgroup, shard.shard)
        ):
            return False
        start = len(outbox) - count
        for (dst, message), peer in zip(outbox[start:], peers, strict=True):
            if dst != peer or message is not batch:
                return False
        carried = msgspec.structs.replace(batch, row=row)
        outbox[start:] = [(peer, carried) for peer in peers]
        return True

    def _cleanup_leaders(self, shard: ShardMulticast) -> tuple[NodeId, ...] | None:
        """Whom a wedged shard's row goes to: the ragged-edge cleanup's leader as this member
        sees it (:func:`~pyderecho.core.membership.cleanup_ranks`, the rule
        :func:`ragged_edge_step` follows), and the view change's leader, whose stall timer
        spares members it heard from lately (a member busy with its cleanup is alive; a leader
        outside the shard counts the row as ``unknown_shard``, a sign of life all the same:
        sending it only to a leader in the shard failed sweep seed 826); None for everyone
        (``Paxos``, or this member leads the cleanup)."""
        membership = self.membership
        if shard.persistent or membership is None:
            return None
        left_out = membership.suspected if self._next is None else membership.excluded
        live = cleanup_ranks(shard, self._next, left_out)
        if not live or shard.members[live[0]] == self.node_id:
            return None
        cleanup_leader, leader = shard.members[live[0]], membership.leader
        return (
            (cleanup_leader,)
            if leader in (cleanup_leader, self.node_id)
            else (cleanup_leader, leader)
        )
