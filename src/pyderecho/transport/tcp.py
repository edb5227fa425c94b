"""The TCP transport: authenticated, length-prefixed frames over asyncio streams.

Links. Each ordered pair of members has its own connection: ``a`` dials ``b`` to send to ``b``
and accepts ``b``'s connection to receive from it. One connection per direction, rather than one
shared per pair, because then nothing has to decide *which* of two connections survives when two
members dial each other at the same moment (a shared link needs a tie-break that both ends apply
identically, and frames queued on the losing connection must not be lost or duplicated). Here
each end owns the only stream it writes to, its FIFO order is the stream's order, and only the
sending side needs the other's address. The cost is two sockets per peer instead of one.

A link is one peer's pair of connections. When either breaks (closed, reset, a protocol error, a
send queue over its bound, a dial that never succeeds), both are torn down and
``on_peer_lost(peer, reason)`` is called once: the peer sees its own side break too, and the
membership protocol hears of the failure from both ends. Nothing redials on its own;
:meth:`TcpTransport.connect` reopens.

Safety against peers. Every connection runs :mod:`pyderecho.transport.auth` (mutual HMAC over
the group secret, within ``handshake_timeout``) before its first frame reaches ``on_frame``;
a frame over ``max_frame_size``, a stream that ends mid-frame, a handler that rejects a frame
as malformed all end the link; each kind of refusal has a ``stats`` counter. Memory is bounded:
at most ``max_send_queue_bytes`` wait per peer (a peer that cannot keep up is failed, not
buffered for), the kernel and the event loop's write buffer hold the rest, and an announced frame
length is checked before its payload is read. At most ``max_pending_handshakes`` unauthenticated
connections are held at once.

Dialing. At most ``max_dials_in_flight`` dials of this transport open and authenticate at
once; the others wait their turn, and the wait does not count against ``connect_timeout``. A
group of many members starting together otherwise opens every link at the same moment: with
64 members, 4,032 handshakes contend for the CPUs, many outlast ``handshake_timeout``, and
members that are up are reported lost. In turns, each handshake is quick and the links open
at the rate the machine can authenticate them.

Unacknowledged data. With ``user_timeout`` (seconds), a link whose sent data stays
unacknowledged that long breaks (``TCP_USER_TIMEOUT``, Linux): a peer that is cut off from
this member alone is then reported lost in bounded time, not after the kernel's 15 minutes of
retries. ``pyderecho node`` sets it to ten heartbeat timeouts.

Sending. :meth:`TcpTransport.send` appends the caller's buffer to the peer's queue;
:meth:`TcpTransport.flush` (the member calls it once a step has queued everything, or the loop
at the end of the turn) hands everything queued to the stream in one ``writelines`` call per
batch: frames sent in one turn of the event loop share a system call. Only a stream whose
buffer is over its high-water mark leaves its queue to the link's task, which waits for room.
(Python 3.11's asyncio joins each batch into one buffer; from 3.12 it passes the buffers to
``sendmsg`` as they are.) A frame of 64 KiB or more is handed over on its own, so it is never
copied into a batch.

Heartbeats that wake nobody. An idle member only beats, and each beat read the moment it comes
is a wake-up of its receiver: on two cores, 64 idle members woke 2.2 times per interval each
for one tick. So the member reads the links of the members it watches at its own tick
(:meth:`TcpTransport.beats_seen`), as shared memory shows beats in a word of the link's
segment, and a link that then holds nothing (the kernel empty, no frame half read) gets its
receive low-water mark (``SO_RCVLOWAT``) raised to
:data:`~pyderecho.transport.framing.QUIET_BYTES`: a periodic beat (:meth:`TcpTransport.beat`,
a dozen bytes) waits in the kernel until the next tick. Every other write that empties a
peer's queue is padded with pad words (four bytes each, skipped by the receiver) to the mark,
so a frame that must be read at once wakes the receiver as before, takes any beat waiting
before it along, and the first bytes the loop reads lower the mark again: the rest of a frame
never waits under it (a large frame's last segment may well be shorter). A link nobody reads
at its ticks keeps the mark down. The end of a stream and a reset wake the receiver whatever
the mark. Under TLS the mark is never raised (its records can only be read through the TLS
layer), and every beat wakes its receiver.

Receiving. Once a connection is authenticated, a
:class:`~pyderecho.transport.framing.FrameReceiver` takes it over from the handshake's stream
reader: the kernel copies into one reused buffer (``recv_into``) and each frame reaches
``on_frame`` as a view of that buffer, valid during the call, with no copy in between.

TLS. A listener upgrades each accepted connection inside that connection's own task, so a
stalled or failed TLS handshake is timed, counted and bounded like an authentication handshake.
The acceptor speaks first, one plaintext byte (:data:`TLS_READY`) once it is ready for TLS, and
the dialer starts TLS only when it has it; then the authentication handshake runs inside TLS.

``stats`` keys: ``accepted`` and ``connected`` (links authenticated), ``identified`` (a
joiner asked who listens here, see :meth:`TcpTransport.identify`), ``connect_retry``,
``connect_failed``, ``peer_lost``, ``peer_closed``, ``connection_reset``, ``inbound_replaced``
(a peer reconnected), ``send_no_link`` (a frame for a peer with no link, dropped),
``send_overflow``, ``beats_written`` and ``beat_reads`` (reads at a tick that found beats
waiting); and for bad input: ``bad_hello``, ``wrong_group``, ``bad_auth``,
``rejected`` (the peer refused us), ``bad_tls``, ``handshake_timeout``,
``handshake_incomplete``, ``handshake_limit``, ``oversized``, ``truncated``, ``malformed``,
``handler_error``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import ssl
from collections import Counter, deque
from collections.abc import Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from pyderecho.core.errors import LocalProtocolError, RemoteProtocolError
from pyderecho.core.view import NodeId
from pyderecho.transport.auth import (
    NONCE_SIZE,
    Handshake,
    HandshakeError,
    HandshakeIncomplete,
    HandshakeTimeout,
    Identity,
    Role,
    run_handshake,
)
from pyderecho.transport.base import (
    Frame,
    FrameHandler,
    LargeFrameHandler,
    PeerLostHandler,
    check_frame_size,
    frame_size,
)
from pyderecho.transport.framing import (
    MAX_FRAME_LIMIT,
    QUIET_BYTES,
    ByteSink,
    FrameError,
    FrameReceiver,
    write_frames,
)

MiB = 1 << 20

_BATCH_BYTES = 256 * 1024
"""Frames are handed to the stream in batches of about this size: large enough that many small
frames share a system call, small enough to bound the copy Python < 3.12 makes of a batch."""
_STREAM_LIMIT = 1 * MiB
"""The buffer bound of the stream readers that carry handshakes (frames after it are read by a
:class:`~pyderecho.transport.framing.FrameReceiver`)."""
_FIRST_RETRY_S = 0.02
_MAX_RETRY_S = 1.0
TLS_READY = b"T"
"""What a TLS acceptor sends, in plaintext, once its TLS layer is in place; the dialer starts TLS
only then. Without it the dialer's TLS hello could reach the acceptor before the upgrade, and be
read as plain bytes: uvloop starts reading a new connection at once, before the task that
upgrades it has run."""

IDENTIFY_ID: NodeId = 2**64 - 2
"""The node id :meth:`TcpTransport.identify` gives in the handshake, which no member may hold:
an acceptor that meets it answers who it is and opens no link."""


class BadTls(HandshakeError):
    """The TLS layer of a connection failed (certificate not trusted, peer not speaking TLS...)."""

    counter: ClassVar[str] = "bad_tls"


def parse_address(address: str) -> tuple[str, int]:
    """Split ``"host:port"`` (or ``"[v6-host]:port"``) into its parts; ``ValueError`` if bad."""
    host, sep, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"address {address!r} is not host:port")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(eq=False)
class _Outbound:
    """The sending half of a link: our connection to the peer and the frames waiting for it."""

    address: str
    queue: deque[tuple[Frame, int]] = field(default_factory=deque)
    """Each frame with its size."""
    queued_bytes: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Wakes the link's task: there is something to write, or to wait room for."""
    writer: asyncio.StreamWriter | None = None
    transport: Any = None
    """The writer's transport once the link is open, written to directly: the stream writer's
    methods are interpreted Python on every write. (Typed loosely: uvloop's transports are no
    subclasses of asyncio's, and the compiled build checks declared types.)"""
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    draining: bool = False
    """The link's task owns the writer: it waits for the stream to have room."""
    flush_due: bool = False
    """Frames were queued since the last flush."""
    loud: bool = False
    """A frame that must wake the peer is queued: the write that empties the queue is padded
    to :data:`~pyderecho.transport.framing.QUIET_BYTES` if it is shorter."""


@dataclass(eq=False)
class _Inbound:
    """The receiving half of a link: the peer's authenticated connection to us."""

    writer: asyncio.StreamWriter
    task: asyncio.Task[Any]
    receiver: FrameReceiver | None = None
    """Set once frames are read, where the connection is plain TCP (not TLS), whose
    low-water mark may let heartbeats wait: :meth:`TcpTransport.beats_seen` reads them, from
    ``fd`` while ``transport`` is not closing (the descriptor may be reused after)."""
    fd: int = -1
    transport: Any = None
    sock: Any = None
    quiet: bool = False
    """The low-water mark is up: the last read at a tick drained the link at a frame boundary,
    and the loop has read nothing from it since."""


class TcpTransport:
    """Reliable, FIFO-per-peer, authenticated frame delivery over TCP (optionally TLS).

    ``listen`` is ``"host:port"``; port 0 picks a free port, readable from :attr:`address` after
    :meth:`start`. ``ssl_server`` wraps accepted connections and ``ssl_client`` dialed ones (the
    dialed host name is checked against the certificate when the context says so); the group
    secret is still required inside TLS.

    ``allowed_peers``, when given, is a fixed list of the ids that may ever open a link to this
    member, future joiners included; anyone else holding the secret is refused. It does not
    follow the view, and cannot: a joiner's join request travels on a link that must be accepted
    before any member knows of the joiner, and a removed member may come back under its old id
    as a new member. Which peers belong is the membership protocol's decision (a joiner is let
    in by a view change, a member from an older view is told it was removed); the secret
    decides who may talk at all. So a group that grows leaves it None, as ``pyderecho node``
    does. :meth:`identify` is admitted either way.
    """

    def __init__(
        self,
        node_id: NodeId,
        listen: str,
        *,
        group: str,
        secret: bytes,
        allowed_peers: Collection[NodeId] | None = None,
        max_frame_size: int = 16 * MiB,
        max_send_queue_bytes: int = 64 * MiB,
        handshake_timeout: float = 5.0,
        connect_timeout: float = 10.0,
        max_pending_handshakes: int = 128,
        max_dials_in_flight: int = 8,
        user_timeout: float | None = None,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if not 0 < max_frame_size <= MAX_FRAME_LIMIT:
            raise ValueError(f"max_frame_size must be in 1..{MAX_FRAME_LIMIT}")
        if max_send_queue_bytes < max_frame_size:
            raise ValueError("max_send_queue_bytes must hold at least one frame of max_frame_size")
        if handshake_timeout <= 0 or connect_timeout <= 0 or max_pending_handshakes < 1:
            raise ValueError("timeouts and max_pending_handshakes must be positive")
        if max_dials_in_flight < 1:
            raise ValueError("max_dials_in_flight must be at least 1")
        if user_timeout is not None and user_timeout <= 0:
            raise ValueError("user_timeout must be positive (or None: the system's)")
        if node_id == IDENTIFY_ID:
            raise ValueError(f"node id {IDENTIFY_ID} is reserved for identify()")
        self.node_id: NodeId = node_id
        self.stats: Counter[str] = Counter()
        self._identity = Identity(group, secret, node_id)
        self._asker = Identity(group, secret, IDENTIFY_ID)
        self._listen = parse_address(listen)
        self._allowed = None if allowed_peers is None else frozenset(allowed_peers) | {IDENTIFY_ID}
        self._max_frame = max_frame_size
        self._max_queue = max_send_queue_bytes
        self._handshake_timeout = handshake_timeout
        self._connect_timeout = connect_timeout
        self._user_timeout_ms = None if user_timeout is None else max(1, round(user_timeout * 1000))
        self._dial_errors: dict[str, str] = {}
        self._max_pending = max_pending_handshakes
        self._dialing = asyncio.Semaphore(max_dials_in_flight)
        self._ssl_server = ssl_server
        self._ssl_client = ssl_client
        self._log = logger or logging.getLogger(__name__)
        self._server: asyncio.Server | None = None
        self._on_frame: FrameHandler | None = None
        self._on_large_frame: LargeFrameHandler | None = None
        self._on_peer_lost: PeerLostHandler | None = None
        self._out: dict[NodeId, _Outbound] = {}
        self._in: dict[NodeId, _Inbound] = {}
        self._dirty: list[_Outbound] = []
        """Links with frames queued since the last :meth:`flush`."""
        self._turn_flush_due = False
        """An end-of-turn flush is scheduled. Not the same as frames being queued: those sent
        with ``caller_flushes`` wait for the caller's flush and schedule none."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._pending = 0
        self._closed = False

    @property
    def address(self) -> str:
        """Where peers reach this member, with the port actually bound."""
        # Read untyped: uvloop's Server.sockets is a list where typeshed says a tuple, and the
        # compiled build (mypyc checks declared types) would refuse the list.
        sockets: Sequence[socket.socket] = (
            () if self._server is None else cast(Any, self._server).sockets
        )
        if not sockets:
            raise LocalProtocolError("the transport is not listening: call start() first")
        host, port = sockets[0].getsockname()[:2]
        return format_address(host, port)

    async def start(
        self,
        on_frame: FrameHandler,
        on_peer_lost: PeerLostHandler,
        on_large_frame: LargeFrameHandler | None = None,
    ) -> None:
        """Listen; from now on authenticated peers' frames go to ``on_frame``, and large ones
        are offered to ``on_large_frame`` first (read in place where it says)."""
        if self._server is not None or self._closed:
            raise LocalProtocolError("start() may be called once, before close()")
        self._on_frame, self._on_peer_lost = on_frame, on_peer_lost
        self._on_large_frame = on_large_frame
        host, port = self._listen
        self._server = await asyncio.start_server(
            self._accept, host, port, limit=_STREAM_LIMIT, backlog=512
        )

    def dial_error(self, address: str) -> str | None:
        """Why the last try to reach ``address`` failed, while it still does (None once a
        try succeeds): what a joiner that gives up says about a contact still being dialed."""
        return self._dial_errors.get(address)

    def connect(self, peer: NodeId, address: str) -> None:
        """Dial ``peer`` at ``address`` and keep retrying, with backoff, for ``connect_timeout``.

        Frames sent meanwhile queue. Calling again with the same address while the link is up
        (or still dialing) does nothing; with another address, the old outbound connection and
        its queue are dropped and the new address dialed.
        """
        self._require_started()
        if peer == self.node_id:
            raise LocalProtocolError(f"node {peer} cannot connect to itself")
        parse_address(address)
        current = self._out.get(peer)
        if current is not None:
            if current.address == address:
                return
            self._drop_outbound(peer, current)
        out = _Outbound(address)
        self._out[peer] = out
        out.tasks.append(self._spawn(self._run_outbound(peer, out), f"tcp-send-{peer}"))

    def send(self, peer: NodeId, frame: Frame, *, caller_flushes: bool = False) -> None:
        """Queue ``frame`` for ``peer``; it is not copied, so its buffers must not change until
        the peer has it (the protocol reuses a send-window slot only once every member has
        acknowledged it). Frames for a peer without a link are dropped and counted. Written at
        the end of this loop turn, or by the caller's :meth:`flush` (``caller_flushes``)."""
        self._queue(peer, frame, caller_flushes, loud=True)

    def beat(self, peer: NodeId, epoch: int, frame: Frame) -> bool:
        """Send ``frame``, a periodic heartbeat, so that it does not wake ``peer``: it is not
        padded, so on its own it stays under the peer's low-water mark and waits in the
        kernel until the peer reads it at its tick (:meth:`beats_seen`). Sent as with
        ``caller_flushes``. False while there is no link to ``peer`` (nor a dial under way)."""
        if peer not in self._out:
            return False
        self._queue(peer, frame, True, loud=False)
        self.stats["beats_written"] += 1
        return True

    def beats_seen(self, expected: Collection[NodeId] | None = None) -> list[tuple[NodeId, int]]:
        """Read what waits from ``expected`` (None: every peer) now, its frames to ``on_frame``
        as the loop would hand them on: the heartbeats that waited under the low-water mark.
        Each link read is left with its mark up if the read drained it at a frame boundary,
        down otherwise; a link no longer read keeps its mark as the last read left it (a
        link up wakes this member once enough beats pile up, a few beats later). Returns no
        beats of its own: over TCP every beat is a frame."""
        links = self._in
        reading = (
            links.values()
            if expected is None
            else [links[peer] for peer in expected if peer in links]
        )
        for link in reading:
            receiver = link.receiver
            if receiver is None or receiver.finished.done() or link.transport.is_closing():
                continue  # a closing link's descriptor may already be closed, and reused
            receiver.woken = None  # a read at the tick is no wake-up
            drained = False
            while True:
                room = receiver.get_buffer(-1)
                try:
                    taken = os.readv(link.fd, [room])
                except (BlockingIOError, InterruptedError):
                    drained = True
                    break
                except OSError:
                    break  # the loop sees the error too, and reports the link
                if taken == 0:
                    break  # the end of the stream wakes the loop whatever the low-water mark
                self.stats["beat_reads"] += 1
                receiver.buffer_updated(taken)
                if receiver.finished.done():
                    break
                if taken < len(room):
                    drained = True
                    break
            if receiver.finished.done():
                continue
            # Up only while the kernel holds nothing and no frame is half read: bytes under
            # the mark must never be the rest of a frame, which nothing would then read.
            self._set_quiet(link, drained and receiver.between_frames)
        return []

    def _set_quiet(self, link: _Inbound, quiet: bool) -> None:
        """Raise the link's low-water mark (beats wait for the tick), or lower it (every byte
        wakes the loop); when raised, the next bytes the loop reads lower it first."""
        receiver = link.receiver
        assert receiver is not None
        if quiet != link.quiet:
            link.quiet = quiet
            link.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, QUIET_BYTES if quiet else 1)
        receiver.woken = (lambda: self._set_quiet(link, False)) if quiet else None

    def _queue(self, peer: NodeId, frame: Frame, caller_flushes: bool, *, loud: bool) -> None:
        self._require_started()
        size = len(frame) if type(frame) is bytes else frame_size(frame)
        check_frame_size(size, self._max_frame)
        out = self._out.get(peer)
        if out is None:
            self.stats["send_no_link"] += 1
            return
        if out.queued_bytes + size > self._max_queue:
            self._lose(
                peer,
                out,
                f"send queue over {self._max_queue} bytes: node {peer} is not keeping up",
                "send_overflow",
            )
            return
        out.queue.append((frame, size))
        out.queued_bytes += size
        if loud:
            out.loud = True
        if not out.flush_due:
            out.flush_due = True
            self._dirty.append(out)
        if not caller_flushes and not self._turn_flush_due:
            self._turn_flush_due = True
            asyncio.get_running_loop().call_soon(self._flush_at_turn_end)

    def _flush_at_turn_end(self) -> None:
        self._turn_flush_due = False
        self.flush()

    def flush(self) -> None:
        """Write what was queued since the last flush, now; a link whose stream is full (or
        not yet open) leaves it to its task, which waits for room."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, []
        for out in dirty:
            out.flush_due = False
            transport = out.transport
            # A connection that is closing (uvloop refuses writes to it) is left to the link's
            # task too: it finds out and reports the loss; the frames go with the link.
            if transport is None or out.draining or transport.is_closing():
                out.ready.set()
                continue
            high_water = transport.get_write_buffer_limits()[1]
            while out.queue:
                if transport.get_write_buffer_size() > high_water:
                    out.ready.set()
                    break
                _write_batch(out, transport)

    def disconnect(self, peer: NodeId) -> None:
        """Drop both connections to ``peer`` and its queued frames; ``on_peer_lost`` is not
        called (the caller knows), but the peer sees its link break."""
        out = self._out.pop(peer, None)
        if out is not None:
            self._drop_outbound(peer, out)
        inbound = self._in.pop(peer, None)
        if inbound is not None:
            self._drop_inbound(inbound)

    async def close(self) -> None:
        """Close every link and the listener; no callback runs after this returns.

        Frames still queued are dropped; what the streams already hold is flushed (within a
        second) so a peer reads every frame written before the end of the stream.
        """
        if self._closed:
            return
        self._closed = True
        for link in self._in.values():
            # No frame reaches the handler from here on: its answers could not be sent.
            # (A stream's transport reads too; uvloop's is no asyncio.ReadTransport subclass.)
            transport = cast(asyncio.Transport, link.writer.transport)
            if not transport.is_closing():
                transport.pause_reading()
        if self._server is not None:
            self._server.close()
        me = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._out.clear()
        self._in.clear()
        writers = list(self._writers)
        self._writers.clear()
        for writer in writers:
            writer.close()
        if writers:
            closing = [asyncio.ensure_future(writer.wait_closed()) for writer in writers]
            _, late = await asyncio.wait(closing, timeout=1.0)
            for future in late:
                future.cancel()
            await asyncio.gather(*closing, return_exceptions=True)
            for writer in writers:
                writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    def _require_started(self) -> None:
        if self._server is None or self._closed:
            raise LocalProtocolError("the transport is not running (start() it, do not close())")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=f"pyderecho-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- receiving -------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A plain callback, not a coroutine, so the connection's task is registered (and
        cancelled by :meth:`close`) from the moment it exists."""
        if self._closed or self._pending >= self._max_pending:
            if not self._closed:
                self.stats["handshake_limit"] += 1
            writer.transport.abort()
            return
        self._pending += 1
        self._writers.add(writer)
        self._spawn(self._serve_inbound(reader, writer), "tcp-accept")

    async def _serve_inbound(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        where = writer.get_extra_info("peername")
        handshake = Handshake(
            self._identity,
            Role.ACCEPTOR,
            secrets.token_bytes(NONCE_SIZE),
            allowed_peers=self._allowed,
        )
        try:
            if self._ssl_server is not None:
                await self._start_tls(writer, self._ssl_server)
            peer = await run_handshake(reader, writer, handshake, self._handshake_timeout)
        except (HandshakeIncomplete, HandshakeTimeout) as exc:
            # Port scanners and health checks end up here: worth a count, not a warning.
            self.stats[exc.counter] += 1
            self._log.info("node %s: connection from %s dropped: %s", self.node_id, where, exc)
            self._discard(writer, graceful=False)
            return
        except HandshakeError as exc:
            self.stats[exc.counter] += 1
            self._log.warning("node %s refused a connection from %s: %s", self.node_id, where, exc)
            self._discard(writer, graceful=True)  # so that our REJECT reaches the peer
            return
        finally:
            self._pending -= 1
        if peer == IDENTIFY_ID:
            # A process that knows us only by address, asking who we are (identify()): it has
            # learned it from our hello and hangs up. No link, so no loss to report either.
            self.stats["identified"] += 1
            self._discard(writer, graceful=True)
            return
        task = asyncio.current_task()
        assert task is not None, "always runs as the task _accept spawned"
        link = _Inbound(writer, task)
        previous = self._in.get(peer)
        if previous is not None:
            self.stats["inbound_replaced"] += 1
            self._drop_inbound(previous)
        self._in[peer] = link
        self.stats["accepted"] += 1
        await self._receive_frames(peer, link, reader)

    async def _start_tls(self, writer: asyncio.StreamWriter, context: ssl.SSLContext) -> None:
        """Upgrade an accepted connection to TLS inside its own task, rather than letting the
        listener do it: a failed or stalled TLS handshake is then timed, counted, bounded by
        ``max_pending_handshakes`` and cancelled by :meth:`close` like any other."""
        transport = writer.transport
        if isinstance(transport, asyncio.ReadTransport):
            transport.pause_reading()  # until the TLS layer reads, nothing may
        writer.write(TLS_READY)
        try:
            async with asyncio.timeout(self._handshake_timeout):
                await writer.start_tls(context)
        except TimeoutError:
            raise HandshakeTimeout(f"no TLS handshake within {self._handshake_timeout} s") from None
        except ssl.SSLError as exc:
            raise BadTls(f"TLS failed: {exc}") from None
        except OSError as exc:
            raise HandshakeIncomplete(f"connection failed during TLS: {exc}") from None

    async def _receive_frames(
        self, peer: NodeId, link: _Inbound, reader: asyncio.StreamReader
    ) -> None:
        """Hand the authenticated connection over from the handshake's stream reader to a
        :class:`FrameReceiver`, which reads frames in place, and wait until it stops."""
        on_frame = self._on_frame
        assert on_frame is not None
        on_large_frame = self._on_large_frame
        receiver = FrameReceiver(
            lambda frame: on_frame(peer, frame),
            self._max_frame,
            placer=(
                None
                if on_large_frame is None
                else lambda prefix, length: on_large_frame(peer, prefix, length)
            ),
        )
        buffered, ended = _take_over(reader)
        transport = link.writer.transport
        # The stream writer no longer sees the connection end (its protocol is gone), so
        # close() must not wait for it: this task closes the connection instead.
        self._writers.discard(link.writer)
        transport.set_protocol(receiver)
        receiver.connection_made(transport)
        if self._ssl_server is None:
            # beats_seen reads this link at the ticks, and raises its low-water mark while
            # it carries nothing but beats. Not under TLS: its records can only be read
            # through the TLS layer.
            sock = transport.get_extra_info("socket")
            link.receiver, link.fd, link.transport = receiver, sock.fileno(), transport
            link.sock = sock
        receiver.feed(buffered)
        if ended:
            receiver.eof_received()
        elif isinstance(transport, asyncio.ReadTransport):
            # Resuming makes a TLS layer pass on what it decrypted before the switch (uvloop's
            # waits for new bytes otherwise), and undoes a pause by the stream reader.
            if transport.is_reading():
                transport.pause_reading()
            transport.resume_reading()
        try:
            await receiver.finished
        except asyncio.CancelledError:
            transport.abort()
            raise
        except RemoteProtocolError as exc:
            counter = exc.counter if isinstance(exc, FrameError) else "malformed"
            self._lose(peer, link, f"node {peer} sent a bad frame: {exc}", counter)
        except OSError as exc:
            self._lose(peer, link, f"connection from node {peer} failed: {exc}", "connection_reset")
        except Exception:
            self._log.exception("frame handler failed on a frame from node %s", peer)
            self._lose(peer, link, "the frame handler raised", "handler_error")
        else:
            self._lose(peer, link, f"node {peer} closed the connection", "peer_closed")

    # -- sending ---------------------------------------------------------------------------

    async def _run_outbound(self, peer: NodeId, out: _Outbound) -> None:
        try:
            reader, writer = await self._dial(peer, out)
        except (OSError, HandshakeIncomplete, HandshakeTimeout) as exc:
            reason = f"could not reach node {peer} at {out.address}: {exc}"
            self._lose(peer, out, reason, "connect_failed")
            return
        except HandshakeError as exc:
            reason = f"link to node {peer} at {out.address} refused: {exc}"
            self._log.warning("node %s: %s", self.node_id, reason)
            self._lose(peer, out, reason, exc.counter)
            return
        out.writer, out.transport = writer, writer.transport
        self.stats["connected"] += 1
        out.tasks.append(self._spawn(self._watch_outbound(peer, out, reader), f"tcp-watch-{peer}"))
        try:
            while True:
                await out.ready.wait()
                out.ready.clear()
                out.draining = True
                try:
                    await writer.drain()
                    while out.queue:
                        if out.transport.is_closing():  # uvloop refuses the write
                            raise ConnectionResetError("the connection is closing")
                        _write_batch(out, out.transport)
                        await writer.drain()
                finally:
                    out.draining = False
        except OSError as exc:
            self._lose(peer, out, f"connection to node {peer} failed: {exc}", "connection_reset")

    async def _dial(
        self, peer: NodeId, out: _Outbound
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to ``peer`` and authenticate, retrying until ``connect_timeout`` (see
        :meth:`_dial_address`)."""
        reader, writer, _ = await self._dial_address(
            out.address, self._identity, peer, self._connect_timeout
        )
        return reader, writer

    async def identify(self, address: str, timeout: float | None = None) -> NodeId:
        """The node id of the member listening at ``address``, as its handshake proves it.

        A link is always to a given member id (the dialer refuses anyone else), so a process
        that knows a member only by its address, such as a joiner given contact addresses,
        asks first. It dials as :meth:`connect` does, retrying for ``timeout`` seconds (default
        ``connect_timeout``; each try takes at most twice ``handshake_timeout``), authenticates
        under :data:`IDENTIFY_ID` and hangs up. The member sees the reserved id, counts the
        exchange as ``identified`` and opens no link: no ``accepted``, no ``peer_lost``, no
        failure for the membership protocol to hear of. Both sides prove the group secret, so
        only the group learns who listens where. Needs no :meth:`start`.

        Raises ``OSError`` when nobody answered in time, :class:`HandshakeError` when the
        member refused us (``Rejected``: another group, or another secret) or failed to prove
        itself.
        """
        if self._closed:
            raise LocalProtocolError("the transport is closed")
        parse_address(address)
        _, writer, peer = await self._dial_address(
            address, self._asker, None, self._connect_timeout if timeout is None else timeout
        )
        self._discard(writer, graceful=True)
        return peer

    async def _dial_address(
        self, address: str, identity: Identity, peer: NodeId | None, timeout: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, NodeId]:
        """Connect and authenticate as ``identity`` to ``peer`` (or to whoever answers, when
        None), retrying with exponential backoff until the peer is up or ``timeout`` has passed.
        A refusal (wrong group, bad proof, a certificate that does not verify...) is final:
        trying again would meet the same answer. Returns the stream and the peer's id."""
        host, port = parse_address(address)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = _FIRST_RETRY_S
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                queued_at = loop.time()
                async with self._dialing:
                    deadline += loop.time() - queued_at  # waiting for a turn is not dialing
                    async with asyncio.timeout(self._handshake_timeout):
                        reader, writer = await asyncio.open_connection(
                            host, port, limit=_STREAM_LIMIT
                        )
                        self._bound_unacknowledged(writer)
                        if self._ssl_client is not None:
                            await _start_client_tls(reader, writer, self._ssl_client, host)
                    self._writers.add(writer)
                    handshake = Handshake(
                        identity,
                        Role.DIALER,
                        secrets.token_bytes(NONCE_SIZE),
                        expected_peer=peer,
                    )
                    answered = await run_handshake(
                        reader, writer, handshake, self._handshake_timeout
                    )
                self._dial_errors.pop(address, None)
                return reader, writer, answered
            except ssl.SSLError as exc:
                if writer is not None:
                    self._discard(writer, graceful=False)
                raise BadTls(f"TLS failed: {exc}") from None
            except (OSError, HandshakeIncomplete, HandshakeTimeout) as exc:
                if writer is not None:
                    self._discard(writer, graceful=False)
                self._dial_errors[address] = str(exc) or type(exc).__name__
                if loop.time() + delay > deadline:
                    raise
                self.stats["connect_retry"] += 1
                self._log.debug("node %s: dialing %s again: %s", self.node_id, address, exc)
            except HandshakeError:
                if writer is not None:
                    self._discard(writer, graceful=True)
                raise
            except asyncio.CancelledError:  # disconnected, failed by send(), or closed
                if writer is not None:
                    self._discard(writer, graceful=False)
                raise
            await asyncio.sleep(delay)
            delay = min(2 * delay, _MAX_RETRY_S)

    def _bound_unacknowledged(self, writer: asyncio.StreamWriter) -> None:
        """Sent data unacknowledged for ``user_timeout`` breaks the link (``TCP_USER_TIMEOUT``).

        A peer cut off from this member alone (a partial cut) between two members that do not
        watch each other raises no suspicion: only the link's retransmissions know, and the
        kernel retries for about 15 minutes. Bounded, the link breaks, the member suspects the
        peer, and the cut is resolved like any other (the peer answers the others' probes)."""
        sock = writer.get_extra_info("socket")
        option = getattr(socket, "TCP_USER_TIMEOUT", None)
        if self._user_timeout_ms is None or sock is None or option is None:
            return
        sock.setsockopt(socket.IPPROTO_TCP, option, self._user_timeout_ms)

    async def _watch_outbound(
        self, peer: NodeId, out: _Outbound, reader: asyncio.StreamReader
    ) -> None:
        """The acceptor never writes after the handshake, so reading our outbound connection
        only ever ends it: this is how a broken link is noticed while we have nothing to send."""
        try:
            data = await reader.read(1)
        except OSError as exc:
            self._lose(peer, out, f"connection to node {peer} failed: {exc}", "connection_reset")
            return
        if data:
            self._lose(peer, out, f"node {peer} wrote on our sending connection", "malformed")
        else:
            self._lose(peer, out, f"node {peer} closed the connection", "peer_closed")

    # -- losing links ----------------------------------------------------------------------

    def _lose(self, peer: NodeId, half: _Outbound | _Inbound, reason: str, counter: str) -> None:
        """Fail the link to ``peer`` because ``half`` of it broke; report it once.

        A half that is no longer registered belongs to a link already torn down (the other half
        failed first, or the caller disconnected): its news is stale and ignored. The report is
        scheduled, never made from inside a call into the transport (``send`` may be the one
        that found the peer too slow).
        """
        if self._out.get(peer) is not half and self._in.get(peer) is not half:
            return
        self.stats[counter] += 1
        self.stats["peer_lost"] += 1
        self.disconnect(peer)
        asyncio.get_running_loop().call_soon(self._report_lost, peer, reason)

    def _report_lost(self, peer: NodeId, reason: str) -> None:
        if not self._closed and self._on_peer_lost is not None:
            self._on_peer_lost(peer, reason)

    def _drop_outbound(self, peer: NodeId, out: _Outbound) -> None:
        if self._out.get(peer) is out:
            del self._out[peer]
        out.queue.clear()
        out.queued_bytes = 0
        _cancel_others(out.tasks)
        if out.writer is not None:
            self._discard(out.writer, graceful=False)

    def _drop_inbound(self, link: _Inbound) -> None:
        _cancel_others([link.task])
        self._discard(link.writer, graceful=False)

    def _discard(self, writer: asyncio.StreamWriter, *, graceful: bool) -> None:
        """Close a stream we are done with: gracefully when something we wrote (a REJECT) should
        still reach the peer, by abort when the peer is broken and nothing more is owed."""
        self._writers.discard(writer)
        if graceful:
            writer.close()
        else:
            writer.transport.abort()


def _write_batch(out: _Outbound, transport: ByteSink) -> None:
    """Hand the stream the oldest queued frames, about :data:`_BATCH_BYTES` of them. The batch
    that empties a queue holding a frame other than a heartbeat is padded to wake the peer
    past its low-water mark (the batches before it are far longer than that)."""
    batch: list[Frame] = []
    size = 0
    while out.queue and size < _BATCH_BYTES:
        frame, frame_bytes = out.queue.popleft()
        batch.append(frame)
        size += frame_bytes
    out.queued_bytes -= size
    pad_to = 0
    if out.loud and not out.queue:
        out.loud, pad_to = False, QUIET_BYTES
    write_frames(transport, batch, pad_to=pad_to)


async def _start_client_tls(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext, host: str
) -> None:
    """Wait for the acceptor's :data:`TLS_READY`, then run TLS as its client."""
    try:
        ready = await reader.readexactly(len(TLS_READY))
    except asyncio.IncompleteReadError:
        raise HandshakeIncomplete("connection closed before TLS started") from None
    if ready != TLS_READY:
        raise BadTls("the acceptor does not start TLS (is it configured for TLS?)")
    await writer.start_tls(context, server_hostname=host)


def _take_over(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """What ``reader`` buffered past the handshake, and whether it saw the stream end.

    asyncio offers no public way to move a connection from a stream reader to another protocol,
    so this reads the reader's own state. Normally both are empty (the dialer waits for our
    proof, the handshake's last message, before it sends a frame), but a peer may not wait.
    """
    buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
    ended: bool = reader._eof  # type: ignore[attr-defined]
    return bytes(buffered), ended


def _cancel_others(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` except the running one, which is tearing its own link down and returns
    by itself."""
    me = asyncio.current_task()
    for task in tasks:
        if task is not me:
            task.cancel()
