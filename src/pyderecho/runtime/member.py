"""Drive a protocol core node from an asyncio event loop, over a real transport.

The shape is aioquic's: every input (a frame, a lost link, the timer, the application) goes into
the :class:`~pyderecho.core.node.Node` with the loop's clock, then the driver drains what came
out: frames to the transport, events to the application, and one timer re-armed at the node's
next deadline. Nothing here decides anything; there is one loop thread per process and no
polling, so an idle group sleeps until its next heartbeat. Over a transport that can show
a heartbeat without waking its receiver (:class:`~pyderecho.transport.base.QuietBeats`: a
word in shared memory, a frame under TCP's receive low-water mark) the periodic beats go that
way and are read at each tick, so an idle member wakes only for its tick, not for every
peer's beat.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from pyderecho.core.events import (
    CutLogRequested,
    Delivered,
    Event,
    MessageSent,
    PersistRequested,
    Stopped,
    ViewInstalled,
    ViewLogRequested,
)
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.runtime.persistence import ShardKey, ShardLogs, StoredRecord
from pyderecho.storage import DEFAULT_SEGMENT_BYTES, SegmentedLog
from pyderecho.transport.base import Placement, QuietBeats, Transport
from pyderecho.wire import Heartbeat, WireMessage, encode_parts

EventHandler = Callable[[Event], None]
_log = logging.getLogger(__name__)


class GroupStopped(Exception):
    """This member stopped (it left, was removed, or was on the minority side of a
    partition); the reason says which. To come back it must join again as a new member."""


class Member:
    """One running member: a core node, a transport and the loop that connects them.

    ``on_event`` sees every event in order (deliveries, views, a stop); it runs on the loop,
    so it must not block. ``max_queued`` bounds how many messages :meth:`send` lets wait for a
    window slot before it waits too: that is the backpressure an application feels.

    ``data_dir`` is where the member logs its ``Paxos`` shards (:mod:`.persistence`); a member
    without one stops with a clear error when the layout first gives it a Paxos shard.
    ``recovered`` holds the open logs of the shards a restart rebuilt from ``data_dir``
    (None: a first start, which refuses a directory that already holds logs).
    """

    def __init__(
        self,
        node: Node,
        transport: Transport,
        *,
        on_event: EventHandler | None = None,
        max_queued: int | None = None,
        data_dir: Path | None = None,
        recovered: Mapping[ShardKey, SegmentedLog] | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        self.node = node
        self.segment_bytes = segment_bytes
        self.data_dir = data_dir
        self._recovered = recovered
        self.logs: ShardLogs | None = None
        self.transport = transport
        self._beats = transport if isinstance(transport, QuietBeats) else None
        """The transport, where it shows periodic heartbeats without waking the peer."""
        self._reading_beats = False
        """The tick reads the beats that waited: frames among them only go into the node."""
        self.on_event = on_event
        self._max_queued = max_queued or 4 * node.config.window_size
        self._max_queued_bytes = 4 * node.config.window_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restart_waits_for = ""
        """What a restart from logs waits for, last logged."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._connected: dict[NodeId, str] = {}
        self._progress = asyncio.Event()
        self._waiters = 0
        """Coroutines waiting for progress: waking an event nobody waits on costs a profile's
        percent or two per step."""
        self._stopped: asyncio.Future[str] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._flush_scheduled = False
        self._closed = False
        """close() was called: a flush or step still scheduled finds the transport gone."""
        self.stats: Counter[str] = Counter()
        """Failures of application code this driver ran (its event handler), by kind."""
        self.after_events: Callable[[], bool] | None = None
        """Called once the node has nothing more to send or report in this step; returns
        whether it gave the node more to do. A layer above the core (the object layer) handles
        a whole burst of events first and answers once, batching its replies."""

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        if self.data_dir is not None:
            self.logs = ShardLogs(
                self.data_dir,
                name=str(self.node.node_id),
                on_durable=self._on_persisted,
                on_failure=self._fail_stop,
                recovered=self._recovered,
                segment_bytes=self.segment_bytes,
            )
            if self._recovered is None:
                self.logs.check_fresh()
        await self.transport.start(
            self._on_frame, self._on_peer_lost, on_large_frame=self._on_large_frame
        )
        self._connect_known()
        self._step()

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.transport.close()
        if self.logs is not None:
            # What was submitted is written and synced before the member is gone.
            await asyncio.to_thread(self.logs.close)

    async def __aenter__(self) -> Member:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the application side ---------------------------------------------------------------

    @property
    def view(self) -> View:
        return self.node.view

    async def send(self, subgroup: int, payload: bytes) -> None:
        """Multicast ``payload`` in this member's shard of ``subgroup`` (``ordered_send``).

        Returns once the message is queued in the core; waits first while too many of this
        member's messages wait for a window slot.
        """
        while True:
            self._raise_if_stopped()
            if self.node.queue_has_room(subgroup, self._max_queued, self._max_queued_bytes):
                break
            await self.wait_progress()
        self.node.send(subgroup, payload, self._now(), flush=False)
        self._schedule_flush()

    def send_p2p(self, dst: NodeId, payload: bytes) -> None:
        """Send ``payload`` to member ``dst`` alone; it leaves at the end of this loop turn."""
        self._raise_if_stopped()
        self.node.send_p2p(dst, payload, self._now())
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            # Everything sent in this turn of the loop leaves together, as one batch per peer.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed:
            return
        try:
            self.node.flush(self._now())
        except Exception as exc:
            self._core_raised(exc, "the end of a loop turn")
            return
        self._step()

    async def leave(self) -> str:
        """Leave the group once this member's messages are delivered; returns the reason the
        member stopped (``"left the group"``)."""
        self.node.leave(self._now())
        self._step()
        return await self.stopped()

    async def stopped(self) -> str:
        """Wait until this member stops; returns why."""
        assert self._stopped is not None, "start() first"
        return await asyncio.shield(self._stopped)

    async def wait_for_view(self, accept: Callable[[View], bool], timeout: float) -> View:
        """Wait until the current view satisfies ``accept``."""
        async with asyncio.timeout(timeout):
            while not accept(self.node.view):
                self._raise_if_stopped()
                await self.wait_progress()
        return self.node.view

    def report_failure(self, node: NodeId) -> None:
        """The application has its own evidence that ``node`` failed."""
        self.node.report_failure(node, self._now())
        self._step()

    # -- the driver -------------------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None, "start() first"
        return self._loop.time()

    def _on_frame(self, src: NodeId, frame: memoryview) -> None:
        # The frame's deliveries are handed on now, while it is alive. The rows it changed and
        # the steps it enabled go out at once if it is the first frame of this loop turn that
        # needs them, and otherwise wait for the end of the turn: every later frame read in
        # it, from every peer, is answered with that one push instead of one each. A lone
        # message's answer then leaves without waiting a turn (at light load that turn, on a
        # shared CPU, cost more than a third of the message's latency: README, "Light
        # load"), and a busy turn writes to a peer at most twice. A heartbeat of a quiet
        # view enables none: an idle group's beats cost no flush.
        node = self.node
        now = self._now()
        try:
            node.receive_bytes(src, frame, now, flush=False)
            if self._reading_beats and not node.events_waiting:
                # A beat that waited for the tick (QuietBeats): the tick steps once. A frame
                # read there that gave events (a state chunk, a reply) steps now, as any frame
                # does: they may be views into it, and the tick's next read reuses its buffer.
                return
            answer_now = node.flush_due and not self._flush_scheduled
            if answer_now:
                node.flush(now)
        except Exception as exc:
            self._core_raised(exc, f"a frame from node {src}")
            return
        if answer_now:
            # The flush scheduled here marks the turn as answered: a frame read later in it
            # waits for that flush (a no-op if none does).
            self._schedule_flush()
            self._step(rows_first=True)
            return
        if node.flush_due:
            # What the step sends now (nulls, replies) waits for this flush too (it is sent
            # with caller_flushes), and leaves in the same write as the rows it pushes.
            self._schedule_flush()
        self._step(flush=False)

    def _on_large_frame(self, src: NodeId, prefix: memoryview, length: int) -> Placement | None:
        # A block of a large message is read straight into the message's buffer where the
        # core has a place for it; it is then taken in as any frame is.
        try:
            place = self.node.place_frame(src, prefix, length)
        except Exception as exc:
            self._core_raised(exc, f"a large frame's head from node {src}")
            return None
        if place is None:
            return None

        def done(head: memoryview) -> None:  # the core decoded the head already
            node = self.node
            try:
                node.receive_placed(src, place, self._now(), flush=False)
            except Exception as exc:
                self._core_raised(exc, f"a large frame from node {src}")
                return
            if node.flush_due:
                self._schedule_flush()
            self._step(flush=False)

        return Placement(place.head, place.body, done)

    def _on_peer_lost(self, peer: NodeId, reason: str) -> None:
        # A broken link is failure evidence: the membership protocol decides what follows.
        self._connected.pop(peer, None)
        if peer in self.node.view or not self.node.is_member:
            self.node.link_lost(peer, self._now(), reason)
        self._step()

    def _on_persisted(self, subgroup: int, epoch: int, upto: int) -> None:
        self._note_persisted(subgroup, epoch, upto)
        self._step(flush=False)

    def _note_persisted(self, subgroup: int, epoch: int, upto: int) -> None:
        # Like a frame: the row push waits for the end of the turn, so that reports and
        # frames handled in one turn are answered with one push per peer.
        self.node.persisted(subgroup, epoch, upto, self._now(), flush=False)
        self._schedule_flush()

    def _core_raised(self, exc: Exception, what: str) -> None:
        """The protocol core raised on ``what``. It refuses a peer's bad input itself (counted,
        never raised), so this is a bug in it, or a type check of the compiled core failing
        (docs/architecture.md): its state may be half-changed. The member stops, as on a
        failed fsync, rather than go on with that state or let the exception reach the
        transport, which would drop the link to the peer whose frame met the bug: blame it."""
        self.stats["core_failed"] += 1
        self._fail_stop(f"the protocol core raised on {what}: {type(exc).__name__}: {exc}", exc)

    def _fail_stop(self, reason: str, exc: BaseException | None = None) -> None:
        # Fail-stop: never retry a failed fsync (or a failed step) and go on. The member
        # stops; closing its links tells the peers at once, and the group removes it.
        _log.error("member %s stops: %s", self.node.node_id, reason, exc_info=exc)
        self.node.fail(reason)
        self._step()
        if self._loop is not None:
            self._closing = self._loop.create_task(self.transport.close())

    def _log_view(self, request: ViewLogRequested) -> None:
        if self.logs is None:
            # Nothing to restart from here: this member counts for no restart, and its row
            # need not wait (another member holds the group's logs).
            asyncio.get_running_loop().call_soon(self._on_view_logged, request.view)
            return
        self.logs.log_view(request, self._on_view_logged)

    def _on_view_logged(self, view: View) -> None:
        self.node.view_logged(view, self._now())
        self._step()

    def _persist(self, request: PersistRequested) -> None:
        if self.logs is None:
            self._no_data_dir()
            return
        self.logs.persist(request)

    def _log_cut(self, request: CutLogRequested) -> None:
        if self.logs is None:
            self._no_data_dir()
            return
        self.logs.log_cut(request, self._on_cut_logged)

    def _on_cut_logged(self, subgroup: int, epoch: int) -> None:
        self.node.cut_logged(subgroup, epoch, self._now())
        self._step()

    def save_state(
        self,
        key: ShardKey,
        position: tuple[int, int],
        data: bytes,
        saved: Callable[[], None] | None = None,
        *,
        epoch: int = -1,
    ) -> None:
        """Write a ``Paxos`` replica's state, taken in view ``epoch``, as its shard's snapshot
        (the object layer asks when the replica starts); ``saved()`` runs on the loop once
        it is durable."""
        if self.logs is None:
            self._no_data_dir()
            self._step()
            return
        self.logs.save_state(key, position, data, saved, epoch=epoch)

    def save_doubt(self, key: ShardKey, doubted: tuple[NodeId, ...]) -> None:
        """Write which members may have delivered updates the ``Paxos`` replica's state
        lacks (the object layer asks while a restart's comparison has not settled)."""
        if self.logs is None:
            self._no_data_dir()
            self._step()
            return
        self.logs.save_doubt(key, doubted)

    def read_log(
        self,
        key: ShardKey,
        after: tuple[int, int],
        limit_bytes: int,
        done: Callable[[Sequence[StoredRecord] | None], None],
    ) -> None:
        """Read a ``Paxos`` shard's log from the record at ``after`` on, off the loop (the
        object layer asks, to catch a member up); ``done`` runs on the loop with the records,
        or None (see :meth:`ShardLogs.read_updates`)."""
        if self.logs is None:
            asyncio.get_running_loop().call_soon(done, None)
            return
        self.logs.read_updates(key, after, limit_bytes, done)

    def _no_data_dir(self) -> None:
        self.node.fail(
            f"member {self.node.node_id} holds a Paxos shard but has no data_dir to log it "
            "in: give the group a data directory (the data_dir setting)"
        )

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        node = self.node
        now = self._now()
        try:
            if self._beats is not None:
                # The beats since the last tick, before the tick looks for silence. Each is the
                # peer's own message, as if its frame had come (the epoch it carries matters:
                # a member behind or ahead of this view is answered as for any frame). Beats
                # that waited as frames go into the node first, as frames read earlier in this
                # turn of the loop would have; this tick's step then answers them all at once.
                self._reading_beats = True
                try:
                    seen = self._beats.beats_seen(node.beats_expected_from())
                finally:
                    self._reading_beats = False
                for peer, epoch in seen:
                    node.receive(peer, Heartbeat(epoch), now, flush=False)
                if node.flush_due:
                    node.flush(now)
            node.tick(now)
        except Exception as exc:
            self._core_raised(exc, "a tick")
            return
        self._step()

    def _step(self, *, flush: bool = True, rows_first: bool = False) -> None:
        """Send what the node queued and hand its events on, until neither is left: an event
        handler may queue more (a reply, a state chunk), which must leave in this turn.

        With ``flush`` the transport writes what was sent at once; without, at the end of the
        loop turn, with the rest of the turn's frames (a step per frame read must not split
        what the turn sends to a peer into one write per frame). With ``rows_first`` what the
        node queued before the events (the rows a frame changed) is written before they are
        handed on, so that no application handler delays the answer the peers wait for."""
        node = self.node
        if self.logs is not None and self.logs.reports_waiting:
            self.logs.take_reports(self._note_persisted)
        waits_for = node.restart_waits_for
        if waits_for != self._restart_waits_for:
            self._restart_waits_for = waits_for
            if waits_for:
                _log.warning(
                    "member %s restarts from its logs and waits for %s", node.node_id, waits_for
                )
        sent = False
        while True:
            outbox = node.outbox()
            last: WireMessage | None = None
            frame: bytes | tuple[bytes, memoryview] = b""
            beats = self._beats
            for dst, message in outbox:
                if dst not in self._connected:
                    self._connect(dst)
                if message is not last:  # a row or a batch to every peer is encoded once
                    last, frame = message, encode_parts(message)
                if (
                    beats is not None
                    and type(message) is Heartbeat
                    and message.periodic
                    and beats.beat(dst, message.epoch, frame)
                ):
                    continue
                self.transport.send(dst, frame, caller_flushes=True)
            if rows_first and outbox:
                rows_first = False
                self.transport.flush()
            sent = sent or bool(outbox)
            events = node.events()
            handler = self.on_event
            for event in events:
                kind = type(event)
                if kind is Delivered or kind is MessageSent:
                    # Most events by far (a delivery each, and a send each of a sender's own),
                    # and the driver has nothing to do for them: straight to the application
                    # (as _handle, inlined: a call per message shows).
                    if handler is not None:
                        try:
                            handler(event)
                        except Exception:
                            self.stats["event_handler_failed"] += 1
                            _log.exception("event handler %r raised on %s", handler, kind.__name__)
                    continue
                if isinstance(event, PersistRequested):
                    self._persist(event)
                    continue
                if isinstance(event, ViewLogRequested):
                    self._log_view(event)
                    continue
                if isinstance(event, CutLogRequested):
                    self._log_cut(event)
                    continue
                if isinstance(event, ViewInstalled):
                    self._connect_known()
                    if self.logs is not None:
                        addresses = tuple(self.node.address_of(m) or "" for m in event.view.members)
                        self.logs.view_installed(
                            event.view, event.layout, self.node.node_id, addresses
                        )
                elif (
                    isinstance(event, Stopped)
                    and self._stopped is not None
                    and not self._stopped.done()
                ):
                    self._stopped.set_result(event.reason)
                if self.on_event is not None:
                    self._handle(self.on_event, event)
            hook = self.after_events
            if not outbox and not events and (hook is None or not self._after(hook)):
                break
        if flush:
            # Everything this step and the steps before it in this turn sent is queued: out
            # now, not a loop turn later (nothing at all, when nothing was sent).
            self.transport.flush()
        elif sent:
            # The frames were sent with caller_flushes: this member's end-of-turn flush writes
            # them, and the transport schedules no flush of its own (a loop turn saved).
            self._schedule_flush()
        self._arm_timer()
        if self._waiters:
            self._progress.set()

    def _after(self, hook: Callable[[], bool]) -> bool:
        try:
            return hook()
        except Exception:
            self.stats["event_handler_failed"] += 1
            _log.exception("after_events hook %r raised", hook)
            return False

    def _handle(self, handler: EventHandler, event: Event) -> None:
        """Run the application's handler; its exception is its own: logged and counted, never
        allowed to reach the transport, which would drop the link to the peer whose frame
        happened to cause the event."""
        try:
            handler(event)
        except Exception:
            self.stats["event_handler_failed"] += 1
            _log.exception("event handler %r raised on %s", handler, type(event).__name__)

    def _arm_timer(self) -> None:
        deadline = self.node.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _connect_known(self) -> None:
        # Links to departed members are left alone: frames queued for them (the final row a
        # leaving member waits for) must still go out, and their own stop closes the link.
        for member in self.node.view.members:
            if member != self.node.node_id and member not in self._connected:
                self._connect(member)

    def _connect(self, peer: NodeId) -> None:
        address = self.node.address_of(peer)
        if address and peer != self.node.node_id:
            self._connected[peer] = address
            self.transport.connect(peer, address)

    async def wait_progress(self) -> None:
        """Wait until the member next makes progress (an input handled, an event reported)."""
        self._progress.clear()
        self._waiters += 1
        try:
            await self._progress.wait()
        finally:
            self._waiters -= 1

    def _raise_if_stopped(self) -> None:
        if self.node.stopped:
            raise GroupStopped(self.node.stopped)


def deliveries(member: Member) -> asyncio.Queue[Delivered]:
    """An unbounded queue of ``member``'s deliveries, for applications that prefer to pull.

    Queued deliveries outlive their handling, so Raw payloads are queued as copies
    (:meth:`~pyderecho.core.events.Delivered.detached`)."""
    queue: asyncio.Queue[Delivered] = asyncio.Queue()
    previous = member.on_event

    def forward(event: Event) -> None:
        if isinstance(event, Delivered):
            queue.put_nowait(event.detached())
        if previous is not None:
            previous(event)

    member.on_event = forward
    return queue
