"""The shared-memory transport: member processes on one host (DESIGN.md section 2, ``shm``).

Links. As in :mod:`pyderecho.transport.tcp`, each ordered pair of members has its own link: ``a``
dials ``b``'s unix socket to send to ``b`` and accepts ``b``'s dial to receive from it, so only
the sender needs the receiver's address and nothing decides which of two crossing links wins.
A link is a ring in shared memory (:mod:`pyderecho.transport.shm_ring`) that only the sender
writes and only the receiver reads, in place, plus the socket it was dialed on. The socket
carries the handshake and the ring's descriptor, then only small control messages:

- ``DOORBELL(w)``, sender to receiver: every record below byte ``w`` of the ring is complete.
  It is both the wake-up and the counter that announces the payload. ``DOORBELL_WAITING``
  also asks for a read-counter report at once, because frames wait for room.
- ``CONSUMED(r)``, receiver to sender: the receiver is done with everything below ``r``, which
  may be overwritten (flow control).
- ``GOODBYE``: this end closed the link on purpose; without it, the end of the socket means the
  peer's process went away.

Why the counters travel on the socket rather than sit in shared memory. Publishing a counter in
shared memory needs the payload's stores to become visible before the counter's, and a receiver
that sleeps until woken needs a "sleeping" flag that the sender reads after writing the counter
while the receiver reads the counter after setting the flag: a store then a load on each side,
which even x86 reorders (store buffers), so only a full memory fence prevents a lost wake-up.
Python has no fence. A system call on a socket is one in effect (the kernel's socket locks
order memory on every CPU): the sender copies the frame into the ring, then sends the doorbell;
the receiver receives the doorbell, then reads the ring. So nothing here assumes x86's store
order or atomic 8-byte stores, and no wake-up can be lost.

Coalescing and an idle group. A doorbell goes out at most once per turn of the event loop per
link, however many frames that turn sent, and the receiver takes every doorbell waiting with one
``recv``; the receiver reports its read counter when a quarter of the ring has been freed since
its last report, or at once when the sender says it waits. A busy link thus costs about one
small system call per loop turn on each side, not one per frame.

Heartbeats in memory. A member of an idle group only beats, and on a socket each beat is a
frame, a doorbell and a wake-up of its receiver: three beats sent and three received per
interval, four wake-ups. :meth:`ShmTransport.beat` writes a beat into the link's segment
instead (its header's last word: :meth:`~pyderecho.transport.shm_ring.Segment.write_beat`),
and the receiver's driver reads the words at its own tick (:meth:`ShmTransport.beats_seen`:
those of the members it watches at every tick, every link's at every fourth), so an idle
member wakes once per interval, for its tick.
A stopped or stalled process stops beating, as it stops sending frames; a crashed one also
breaks its sockets at once. Only periodic beats go this way (the driver asks; see
:class:`pyderecho.wire.Heartbeat`): probes and their answers are frames.

Backpressure. A frame that does not fit in the ring waits in the sender's per-peer queue, behind
the frames before it; past ``max_send_queue_bytes`` waiting, the peer is treated as failed: a
member that stops reading must not make its senders buffer without bound.

Zero copy. A frame is copied once, by the sender, into memory the receiver maps; ``on_frame``
gets a view of that memory, released when the callback returns (using it later raises
``ValueError``): copy what must outlive the call. Frames larger than half the ring are sent in
chunks and reassembled (one copy more) up to ``max_frame_size``. As with TCP, ``send`` does not
copy a frame that must wait for room: its buffer must not change until the peer has it.

Failures. When either half of a link breaks (the socket ends, a goodbye, a protocol breach, a
full queue, a dial that never succeeds), both halves are torn down and ``on_peer_lost(peer,
reason)`` is called once, from its own turn of the event loop, never from inside a call into the
transport. Before that, every frame the peer announced is delivered (the ring stays mapped here),
so a member that closes, or dies, right after sending loses nothing it announced. Nothing redials
on its own; :meth:`ShmTransport.connect` reopens.

Authentication. The acceptor and the dialer each check with ``SO_PEERCRED`` that the other runs
as the same user, then run :mod:`pyderecho.transport.auth` (mutual HMAC over the group secret,
as the TCP transport does); only then is the segment handed over, and the receiver checks its
header (group, the two members, size) and seals before mapping it. A segment has no name (it is
a memfd), so no other process can open it: being handed it is the only way in.

Files. The only file is each member's listening socket,
``<directory>/pyderecho-<group>-<node>.sock``, mode 0600; :meth:`ShmTransport.close` removes it.
Segments are freed by the kernel with the last process that maps them, so a crash leaks no
shared memory. A crash does leave the socket file: :meth:`ShmTransport.start` replaces it, after
taking the member's name in Linux's abstract socket namespace, which the kernel releases when
its holder exits however it exits. Holding that name proves no live process serves the address,
so a stale file is told from a live member's without a race, and two processes never run as the
same member of a group in one directory (within one network namespace). Linux only: memfd,
``SO_PEERCRED`` and abstract sockets.

``stats`` keys, as in the TCP transport where they mean the same: ``accepted`` and ``connected``
(links authenticated), ``connect_retry``, ``connect_failed``, ``peer_lost``, ``peer_closed`` (a
goodbye), ``peer_exited`` (the socket ended without one), ``connection_reset``,
``inbound_replaced``, ``send_no_link``, ``send_overflow``, ``doorbells``,
``stale_socket_removed``, ``accept_failed``, ``beats_written``, ``beats_read``; and for
refused input: ``bad_hello``,
``wrong_group``, ``bad_auth``, ``rejected``, ``foreign_user``, ``handshake_timeout``,
``handshake_incomplete``, ``bad_segment``, ``oversized``, ``malformed``, ``handler_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import socket
import stat
import struct
from array import array
from collections import Counter, deque
from collections.abc import Collection, Iterable
from typing import Any, ClassVar, cast

from pyderecho.core.errors import LocalProtocolError, RemoteProtocolError
from pyderecho.core.view import NodeId
from pyderecho.transport.auth import (
    MAX_HANDSHAKE_MESSAGE,
    NONCE_SIZE,
    BadHello,
    Handshake,
    HandshakeError,
    HandshakeIncomplete,
    Identity,
    Rejected,
    Role,
    reject_message,
)
from pyderecho.transport.base import (
    Frame,
    FrameHandler,
    LargeFrameHandler,
    PeerLostHandler,
    check_frame_size,
    frame_parts,
)
from pyderecho.transport.framing import HEADER
from pyderecho.transport.shm_ring import (
    RingError,
    RingReader,
    RingWriter,
    Segment,
    SegmentError,
    attach_segment,
    check_capacity,
    create_segment,
)

MiB = 1 << 20

_CONTROL = struct.Struct("<BQ")
"""A control message: its kind, and a ring counter (0 for a goodbye)."""
_DOORBELL = 1
_DOORBELL_WAITING = 2
_CONSUMED = 3
_GOODBYE = 4
_SEGMENT = struct.Struct("<8sQ")
"""Sent with the segment's descriptor once the handshake is done: a tag and the ring size."""
_SEGMENT_TAG = b"PDRSEGM1"
_CREDENTIALS = struct.Struct("iII")
"""``struct ucred``: pid, uid, gid of the process at the other end of a unix socket."""
_RECEIVE_BYTES = 64 * 1024
_FIRST_RETRY_S = 0.005
_MAX_RETRY_S = 0.25
_SAFE_GROUP = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SUN_PATH_MAX = 107
"""Bytes a unix socket path may have (``sun_path`` less its terminating NUL)."""
SWEEP_EVERY = 4
""":meth:`ShmTransport.beats_seen` reads every link's beat at every this many calls, and only
the expected peers' in between: a beat from anyone else is at most this many ticks late."""


class ForeignUser(HandshakeError):
    """The process at the other end of the socket runs as another user."""

    counter: ClassVar[str] = "foreign_user"


class _LinkBroken(Exception):
    """An inbound half cannot go on: ``reason`` for ``on_peer_lost``, ``counter`` for stats."""

    def __init__(self, reason: str, counter: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.counter = counter


def socket_name(group: str, node: NodeId) -> str:
    """The file name of ``node``'s socket in a group's directory."""
    return f"pyderecho-{_label(group)}-{node}.sock"


def _label(group: str) -> str:
    """The group's name where it is safe in a file name, else a digest of it: any group name
    the handshake accepts gets a socket (and memfd) name, the same in every member."""
    return group if _SAFE_GROUP.fullmatch(group) else _digest(group, 8).hex()


def _digest(text: str, size: int) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=size, person=b"pyderecho-shm").digest()


class _Queued:
    """A frame waiting for room in the ring, and how much of it is already in."""

    __slots__ = ("frame", "nbytes", "start")

    def __init__(self, frame: tuple[memoryview, ...], nbytes: int, start: int) -> None:
        self.frame = frame
        self.nbytes = nbytes
        self.start = start


class _Control:
    """The control messages one end of a link sends; what the socket cannot take now waits.

    The backlog only grows while the peer does not read its socket, and stays small even then:
    a doorbell is sent only for new records, and new records need room the peer must free.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._backlog = bytearray()

    def send(self, kind: int, value: int = 0) -> None:
        message = _CONTROL.pack(kind, value)
        if self._backlog:
            self._backlog += message
            return
        try:
            sent = self._sock.send(message)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # the link is broken: reading the same socket reports it
        if sent < len(message):
            self._backlog += message[sent:]
            self._loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        try:
            sent = self._sock.send(self._backlog)
        except BlockingIOError:
            return
        except OSError:
            sent = len(self._backlog)
        del self._backlog[:sent]
        if not self._backlog:
            _stop_writing(self._loop, self._fd)

    def close(self) -> None:
        if self._backlog:
            self._backlog.clear()
            _stop_writing(self._loop, self._fd)


class _Outbound:
    """The sending half of a link: our ring to the peer, and the queue waiting for its room."""

    def __init__(self, peer: NodeId, path: str, segment: Segment) -> None:
        self.peer = peer
        self.path = path
        self.segment = segment
        self.ring = RingWriter(segment.data)
        self.queue: deque[_Queued] = deque()
        self.queued_bytes = 0
        self.sock: socket.socket | None = None
        self.control: _Control | None = None
        self.inbox = bytearray()
        self.announced = 0
        """The write counter the last doorbell carried."""
        self.waiting_signalled = False
        self.flush_due = False
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.beats = 0


class _Inbound:
    """The receiving half of a link: the peer's ring, mapped here, and its socket."""

    def __init__(
        self,
        peer: NodeId,
        sock: socket.socket,
        control: _Control,
        segment: Segment,
        max_frame: int,
    ) -> None:
        self.peer = peer
        self.sock = sock
        self.control = control
        self.segment = segment
        self.ring = RingReader(segment.data, max_frame)
        self.reported = 0
        """The read counter the last report carried."""
        self.writer_waiting = False
        self.inbox = bytearray()
        self.draining = False
        self.closed = False
        self.beat_seen = segment.read_beat()
        """The heartbeat word at the last look: only a change is a beat (what a link starts
        with may be a beat the peer wrote before the link was up, or long ago)."""


class ShmTransport:
    """Reliable, FIFO-per-peer, authenticated frame delivery between processes on one host.

    ``directory`` holds the members' sockets; peers' addresses are their sockets' paths
    (:attr:`address`), or just the directory when they share it (see :meth:`connect`).
    ``ring_size`` is the bytes of each link's ring, which the sender's frames fill and the
    receiver frees; frames larger than half of it are sent in chunks.
    """

    def __init__(
        self,
        node_id: NodeId,
        directory: str = "/dev/shm",
        *,
        group: str,
        secret: bytes,
        ring_size: int = 4 * MiB,
        max_frame_size: int = 16 * MiB,
        max_send_queue_bytes: int = 64 * MiB,
        handshake_timeout: float = 5.0,
        connect_timeout: float = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        check_capacity(ring_size)
        if not 0 < max_frame_size < 2**63:
            raise ValueError("max_frame_size must be positive")
        if max_send_queue_bytes < max_frame_size:
            raise ValueError("max_send_queue_bytes must hold at least one frame of max_frame_size")
        if handshake_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.node_id: NodeId = node_id
        self.stats: Counter[str] = Counter()
        self._identity = Identity(group, secret, node_id)
        self._group = group
        self._group_digest = _digest(group, 16)
        self.address = self._socket_path(os.path.abspath(directory), node_id)
        """This member's socket: what peers pass to :meth:`connect`."""
        self._ring_size = ring_size
        self._max_frame = max_frame_size
        self._max_queue = max_send_queue_bytes
        self._handshake_timeout = handshake_timeout
        self._connect_timeout = connect_timeout
        self._log = logger or logging.getLogger(__name__)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._claim: socket.socket | None = None
        self._bound: tuple[int, int] | None = None
        self._accept_pause: asyncio.TimerHandle | None = None
        self._on_frame: FrameHandler | None = None
        self._on_peer_lost: PeerLostHandler | None = None
        self._out: dict[NodeId, _Outbound] = {}
        self._in: dict[NodeId, _Inbound] = {}
        self._beat_reads = 0
        """Calls of :meth:`beats_seen`, which sweeps every link at each :data:`SWEEP_EVERY`-th."""
        self._dying: set[_Inbound] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dirty: list[_Outbound] = []
        self._turn_flush_due = False
        """An end-of-turn ring is scheduled. Not the same as links being dirty: frames sent with
        ``caller_flushes`` wait for the caller's flush and schedule none."""
        self._closed = False

    # -- the Transport interface -----------------------------------------------------------

    async def start(
        self,
        on_frame: FrameHandler,
        on_peer_lost: PeerLostHandler,
        on_large_frame: LargeFrameHandler | None = None,
    ) -> None:
        """Listen on :attr:`address`; from now on authenticated peers' frames go to
        ``on_frame``. Raises ``OSError`` (``EADDRINUSE``) when this member already runs."""
        if self._listener is not None or self._closed:
            raise LocalProtocolError("start() may be called once, before close()")
        loop = asyncio.get_running_loop()
        claim = self._claim_address()
        listener = socket.socket(
            socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:
            listener.bind(self.address)
            os.chmod(self.address, 0o600)
            listener.listen(512)
            info = os.stat(self.address)
        except BaseException:
            listener.close()
            claim.close()
            raise
        self._loop, self._claim, self._listener = loop, claim, listener
        self._bound = (info.st_dev, info.st_ino)
        self._on_frame, self._on_peer_lost = on_frame, on_peer_lost
        loop.add_reader(listener.fileno(), self._accept_ready)

    def connect(self, peer: NodeId, address: str) -> None:
        """Dial ``peer`` at ``address``, retrying with backoff for ``connect_timeout`` while
        nothing listens there yet; frames sent meanwhile go into the ring (and the queue).

        ``address`` is the peer's socket path (its :attr:`address`), or a directory, meaning
        the peer's socket under its conventional name there (:func:`socket_name`): members
        that share a directory need no other configuration. Calling again with the same
        address while the link is up or dialing does nothing; with another, the old link's
        sending half and its queue are dropped and the new address dialed.
        """
        loop = self._require_started()
        if peer == self.node_id:
            raise LocalProtocolError(f"node {peer} cannot connect to itself")
        path = self._socket_path(address, peer) if os.path.isdir(address) else address
        current = self._out.get(peer)
        if current is not None:
            if current.path == path:
                return
            del self._out[peer]
            self._drop_outbound(current)
        segment = create_segment(
            name=f"pyderecho-{_label(self._group)}-{self.node_id}-{peer}",
            group=self._group_digest,
            src=self.node_id,
            dst=peer,
            capacity=self._ring_size,
        )
        out = _Outbound(peer, path, segment)
        self._out[peer] = out
        out.task = loop.create_task(self._dial(out), name=f"pyderecho-shm-dial-{peer}")
        self._tasks.add(out.task)
        out.task.add_done_callback(self._tasks.discard)

    def send(self, peer: NodeId, frame: Frame, *, caller_flushes: bool = False) -> None:
        """Copy ``frame`` into the peer's ring now, or queue it until there is room; frames for
        a peer without a link are dropped and counted. A queued frame is not copied: its buffer
        must not change until the peer has it (as with the TCP transport). The doorbell rings
        at the end of this loop turn, or at the caller's :meth:`flush` (``caller_flushes``)."""
        self._require_started()
        parts = frame_parts(frame)
        size = sum(part.nbytes for part in parts)
        check_frame_size(size, self._max_frame)
        out = self._out.get(peer)
        if out is None:
            self.stats["send_no_link"] += 1
            return
        start = 0
        if not out.queue:
            rest = out.ring.put(parts, 0)
            if rest is None:
                self._schedule_flush(out, at_turn_end=not caller_flushes)
                return
            start = rest
        waiting = size - start
        if out.queued_bytes + waiting > self._max_queue:
            reason = f"send queue over {self._max_queue} bytes: node {peer} is not keeping up"
            self._lose(peer, out, reason, "send_overflow")
            return
        out.queue.append(_Queued(parts, size, start))
        out.queued_bytes += waiting
        self._schedule_flush(out, at_turn_end=not caller_flushes)

    def beat(self, peer: NodeId, epoch: int, frame: Frame = b"") -> bool:
        """Show ``peer`` that this member is alive in ``epoch`` in the link's segment, where it
        reads it at its own tick: no frame, no doorbell, nobody woken (``frame`` is not
        needed). False while the link is not up (the peer has no segment to read yet): send
        the beat as a frame then."""
        out = self._out.get(peer)
        if out is None or out.control is None or out.closed:
            return False
        out.beats += 1
        out.segment.write_beat(epoch, out.beats)
        self.stats["beats_written"] += 1
        return True

    def beats_seen(self, expected: Collection[NodeId] | None = None) -> list[tuple[NodeId, int]]:
        """The peers whose heartbeat word changed since the last read, each with the epoch it
        shows: each has beaten at least once since (see :meth:`beat`).

        The words of ``expected`` are read at every call, every other link's at every
        :data:`SWEEP_EVERY`-th: in a quiet view only the members this one watches beat to it,
        and reading all 63 words of a 64-member group at every tick was a tenth of an idle
        member's CPU (cold memory: a page and three objects per link). A beat from anyone
        else (a member in another view) is read a few ticks late, which only makes it look
        older."""
        self._beat_reads += 1
        links = self._in
        if expected is None or self._beat_reads % SWEEP_EVERY == 0:
            reading: Iterable[_Inbound] = links.values()
        else:
            reading = [links[peer] for peer in expected if peer in links]
        seen = []
        for inbound in reading:
            if inbound.closed:
                continue
            word = inbound.segment.read_beat()
            if word != inbound.beat_seen:
                inbound.beat_seen = word
                seen.append((inbound.peer, word >> 32))
        self.stats["beats_read"] += len(seen)
        return seen

    def disconnect(self, peer: NodeId) -> None:
        """Drop both halves of the link to ``peer`` and its queued frames; ``on_peer_lost`` is
        not called (the caller knows), but the peer hears a goodbye on both."""
        out = self._out.pop(peer, None)
        if out is not None:
            self._drop_outbound(out)
        inbound = self._in.pop(peer, None)
        if inbound is not None:
            self._close_inbound(inbound)

    async def close(self) -> None:
        """Close every link, unmap every segment, remove the socket file; no callback runs
        after this returns. Frames already in a ring are announced to their peer before the
        goodbye (the peer delivers them); frames still queued are dropped."""
        if self._closed:
            return
        self._closed = True
        me = asyncio.current_task()
        tasks = [task for task in self._tasks if task is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for out in self._out.values():
            self._drop_outbound(out)
        for inbound in (*self._in.values(), *self._dying):
            self._close_inbound(inbound)
        self._out.clear()
        self._in.clear()
        self._dying.clear()
        if self._accept_pause is not None:
            self._accept_pause.cancel()
        if self._listener is not None and self._loop is not None:
            _stop_reading(self._loop, self._listener.fileno())
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                info = os.stat(self.address)
                if (info.st_dev, info.st_ino) == self._bound:
                    os.unlink(self.address)
        if self._claim is not None:
            self._claim.close()

    # -- addresses -------------------------------------------------------------------------

    def _socket_path(self, directory: str, node: NodeId) -> str:
        path = os.path.join(directory, socket_name(self._group, node))
        if len(os.fsencode(path)) > _SUN_PATH_MAX:
            raise ValueError(f"socket path {path!r} is over {_SUN_PATH_MAX} bytes")
        return path

    def _claim_address(self) -> socket.socket:
        """Take this member's name, then remove a socket file a crashed run left behind.

        The name is bound in the abstract namespace, which the kernel frees when its holder's
        descriptors close: a killed process lets go before it can be reaped, so a supervisor
        that restarts a member once the old process is reaped always finds the name free.
        """
        key = hashlib.blake2b(os.fsencode(os.path.realpath(self.address)), digest_size=16)
        claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            claim.bind(b"\0pyderecho-shm-" + key.hexdigest().encode())
        except OSError as exc:
            claim.close()
            if exc.errno == errno.EADDRINUSE:
                raise OSError(
                    errno.EADDRINUSE,
                    f"node {self.node_id} of group {self._group!r} is already running at "
                    f"{self.address}",
                ) from None
            raise
        try:
            info = os.lstat(self.address)
        except FileNotFoundError:
            return claim
        if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
            claim.close()
            raise FileExistsError(
                errno.EEXIST,
                f"{self.address} exists and is not a socket of this user: not replacing it",
            )
        os.unlink(self.address)
        self.stats["stale_socket_removed"] += 1
        self._log.info("node %s: removed the stale socket %s", self.node_id, self.address)
        return claim

    def _require_started(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._closed:
            raise LocalProtocolError("the transport is not running (start() it, do not close())")
        return self._loop

    # -- opening links ---------------------------------------------------------------------

    def _accept_ready(self) -> None:
        assert self._listener is not None and self._loop is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                # Out of descriptors, say: the listener stays readable, so pause rather than
                # spin on it.
                self.stats["accept_failed"] += 1
                self._log.warning("node %s: accept failed, pausing 1 s: %s", self.node_id, exc)
                _stop_reading(self._loop, self._listener.fileno())
                self._accept_pause = self._loop.call_later(1.0, self._resume_accepting)
                return
            sock.setblocking(False)
            task = self._loop.create_task(self._answer(sock), name="pyderecho-shm-accept")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _resume_accepting(self) -> None:
        assert self._listener is not None and self._loop is not None
        self._accept_pause = None
        self._loop.add_reader(self._listener.fileno(), self._accept_ready)

    async def _answer(self, sock: socket.socket) -> None:
        """Authenticate a dialer and map the segment it hands over; refuse anything else."""
        try:
            async with asyncio.timeout(self._handshake_timeout):
                inbound = await self._accept_link(sock)
        except TimeoutError:
            self._refused(sock, "handshake_timeout", "no complete handshake in time")
        except HandshakeError as exc:
            self._refused(sock, exc.counter, str(exc))
        except SegmentError as exc:
            self._refused(sock, exc.stat, str(exc))
        except OSError as exc:
            self._refused(sock, "handshake_incomplete", str(exc))
        except BaseException:
            sock.close()
            raise
        else:
            self._install_inbound(inbound)

    async def _accept_link(self, sock: socket.socket) -> _Inbound:
        assert self._loop is not None
        _check_credentials(sock)
        handshake = Handshake(self._identity, Role.ACCEPTOR, secrets.token_bytes(NONCE_SIZE))
        peer = await _run_handshake(self._loop, sock, handshake)
        message, fds = await _receive(self._loop, sock, _SEGMENT.size, max_fds=1)
        tag, capacity = _SEGMENT.unpack(message)
        if tag != _SEGMENT_TAG or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise SegmentError("bad_segment", f"node {peer} handed over no valid segment")
        segment = attach_segment(
            fds[0], group=self._group_digest, src=peer, dst=self.node_id, capacity=capacity
        )
        return _Inbound(peer, sock, _Control(self._loop, sock), segment, self._max_frame)

    def _refused(self, sock: socket.socket, counter: str, reason: str) -> None:
        self.stats[counter] += 1
        self._log.warning("node %s refused a link: %s", self.node_id, reason)
        sock.close()

    def _install_inbound(self, inbound: _Inbound) -> None:
        """Start reading a new inbound half; one from a peer that reconnected replaces the old,
        after delivering what the old one announced, so the peer's order is kept."""
        assert self._loop is not None
        if self._closed:
            self._close_inbound(inbound)
            return
        old = self._in.pop(inbound.peer, None)
        if old is not None:
            self.stats["inbound_replaced"] += 1
            _stop_reading(self._loop, old.sock.fileno())
            with contextlib.suppress(_LinkBroken):
                self._read_inbound(old, until_dry=True)
            self._close_inbound(old)
        self._in[inbound.peer] = inbound
        self.stats["accepted"] += 1
        self._loop.add_reader(inbound.sock.fileno(), self._inbound_readable, inbound)

    async def _dial(self, out: _Outbound) -> None:
        """Connect, authenticate and hand over the segment; any failure loses the peer."""
        assert self._loop is not None
        peer = out.peer
        try:
            sock = await self._connect_when_listening(out.path)
        except OSError as exc:
            reason = f"could not reach node {peer} at {out.path}: {_describe(exc)}"
            self._lose(peer, out, reason, "connect_failed")
            return
        try:
            async with asyncio.timeout(self._handshake_timeout):
                _check_credentials(sock)
                handshake = Handshake(
                    self._identity,
                    Role.DIALER,
                    secrets.token_bytes(NONCE_SIZE),
                    expected_peer=peer,
                )
                await _run_handshake(self._loop, sock, handshake)
            assert out.segment.fd is not None
            message = _SEGMENT.pack(_SEGMENT_TAG, out.ring.capacity)
            if socket.send_fds(sock, [message], [out.segment.fd]) != len(message):
                raise HandshakeIncomplete("the segment could not be handed over")
        except TimeoutError:
            sock.close()
            self._lose(peer, out, f"no handshake with node {peer} in time", "handshake_timeout")
            return
        except HandshakeError as exc:
            sock.close()
            self._log.warning("node %s: link to node %s refused: %s", self.node_id, peer, exc)
            self._lose(peer, out, f"link to node {peer} refused: {exc}", exc.counter)
            return
        except OSError as exc:
            sock.close()
            reason = f"handshake with node {peer} failed: {exc}"
            self._lose(peer, out, reason, "handshake_incomplete")
            return
        except BaseException:
            sock.close()
            raise
        out.segment.close_fd()
        out.sock = sock
        out.control = _Control(self._loop, sock)
        self._loop.add_reader(sock.fileno(), self._outbound_readable, out)
        self.stats["connected"] += 1
        self._schedule_flush(out)

    async def _connect_when_listening(self, path: str) -> socket.socket:
        """Connect to ``path``, again with backoff while nobody listens there yet.

        The peer not listening yet is normal while a group starts. Nothing can signal that a
        socket appeared, so this waits on a timer, only while a link is being opened.
        """
        assert self._loop is not None
        loop = self._loop
        deadline = loop.time() + self._connect_timeout
        delay = _FIRST_RETRY_S
        while True:
            sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
            )
            try:
                await loop.sock_connect(sock, path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if loop.time() + delay > deadline:
                    raise
            except BaseException:
                sock.close()
                raise
            self.stats["connect_retry"] += 1
            await asyncio.sleep(delay)
            delay = min(2 * delay, _MAX_RETRY_S)

    # -- sending ---------------------------------------------------------------------------

    def _schedule_flush(self, out: _Outbound, *, at_turn_end: bool = True) -> None:
        """Ring the peer's doorbell at the end of this loop turn: one for all frames sent in it
        (or at the next :meth:`flush`, which a caller that sends with ``caller_flushes`` calls
        in this turn: ``at_turn_end`` False)."""
        if not out.flush_due:
            out.flush_due = True
            self._dirty.append(out)
        if at_turn_end and not self._turn_flush_due:
            assert self._loop is not None
            self._turn_flush_due = True
            self._loop.call_soon(self._flush_at_turn_end)

    def _flush_at_turn_end(self) -> None:
        self._turn_flush_due = False
        self._flush()

    def flush(self) -> None:
        """Ring the doorbells of every link sent on since the last ring, now."""
        self._flush()

    def _flush(self) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, []
        for out in dirty:
            out.flush_due = False
            self._announce(out)

    def _announce(self, out: _Outbound) -> None:
        if out.control is None or out.closed:
            return
        waiting = bool(out.queue) and not out.waiting_signalled
        written = out.ring.written
        if written == out.announced and not waiting:
            return
        out.control.send(_DOORBELL_WAITING if waiting else _DOORBELL, written)
        out.announced = written
        out.waiting_signalled = out.waiting_signalled or waiting
        self.stats["doorbells"] += 1

    def _outbound_readable(self, out: _Outbound) -> None:
        """The peer reported room (or said goodbye, or went away): refill its ring."""
        assert out.sock is not None
        peer = out.peer
        try:
            data = out.sock.recv(_RECEIVE_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lose(peer, out, f"link to node {peer} failed: {exc}", "connection_reset")
            return
        if not data:
            self._lose(peer, out, _gone(peer), "peer_exited")
            return
        out.inbox += data
        try:
            for kind, value in _messages(out.inbox):
                if kind == _CONSUMED:
                    out.ring.acknowledge(value)
                    out.waiting_signalled = False
                elif kind == _GOODBYE:
                    self._lose(peer, out, f"node {peer} closed the link", "peer_closed")
                    return
                else:
                    raise RingError("malformed", f"unexpected control message {kind}")
        except RingError as exc:
            self._lose(peer, out, f"node {peer} broke the ring protocol: {exc}", exc.stat)
            return
        while out.queue:
            item = out.queue[0]
            rest = out.ring.put(item.frame, item.start)
            done = item.nbytes if rest is None else rest
            out.queued_bytes -= done - item.start
            if rest is not None:
                item.start = rest
                break
            out.queue.popleft()
        self._schedule_flush(out)

    # -- receiving -------------------------------------------------------------------------

    def _inbound_readable(self, inbound: _Inbound) -> None:
        try:
            self._read_inbound(inbound, until_dry=False)
        except _LinkBroken as exc:
            self._close_inbound(inbound)
            self._lose(inbound.peer, inbound, exc.reason, exc.counter)

    def _read_inbound(self, inbound: _Inbound, *, until_dry: bool) -> None:
        """Take the doorbells waiting on the socket, then deliver every frame they announce.

        Reads once per call when the event loop calls (so one busy peer cannot starve the
        others), or until nothing is left when the link is being retired. Raises
        :class:`_LinkBroken` when the link ended or cannot go on.
        """
        peer = inbound.peer
        while not inbound.closed:
            ended: _LinkBroken | None = None
            try:
                data = inbound.sock.recv(_RECEIVE_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:
                data = b""
                ended = _LinkBroken(f"link from node {peer} failed: {exc}", "connection_reset")
            if data:
                inbound.inbox += data
                ended = self._take_doorbells(inbound)
            elif ended is None:
                ended = _LinkBroken(_gone(peer), "peer_exited")
            try:
                self._deliver(inbound)
            except RingError as exc:
                raise _LinkBroken(f"node {peer} broke the ring protocol: {exc}", exc.stat) from None
            if ended is not None:
                raise ended
            if not until_dry:
                return

    def _take_doorbells(self, inbound: _Inbound) -> _LinkBroken | None:
        peer = inbound.peer
        for kind, value in _messages(inbound.inbox):
            if kind in (_DOORBELL, _DOORBELL_WAITING):
                try:
                    inbound.ring.announce(value)
                except RingError as exc:
                    return _LinkBroken(f"node {peer} broke the ring protocol: {exc}", exc.stat)
                inbound.writer_waiting = inbound.writer_waiting or kind == _DOORBELL_WAITING
            elif kind == _GOODBYE:
                return _LinkBroken(f"node {peer} closed the link", "peer_closed")
            else:
                return _LinkBroken(f"node {peer} sent control message {kind}", "malformed")
        return None

    def _deliver(self, inbound: _Inbound) -> None:
        """Hand every announced frame to ``on_frame``, in order, as a view into the ring.

        The view is released when the callback returns, and only then is its space reported
        free. A handler that raises :class:`RemoteProtocolError` rejects the frame as malformed;
        any other exception is logged; either way the link goes, as with the TCP transport.
        """
        assert self._on_frame is not None
        on_frame, ring, peer = self._on_frame, inbound.ring, inbound.peer
        inbound.draining = True
        try:
            # Once close() began, frames are dropped: the handler's answers could not be sent.
            while ring.pending and not inbound.closed and not self._closed:
                frame = ring.take()
                if frame is not None:
                    try:
                        on_frame(peer, frame)
                    except RemoteProtocolError as exc:
                        raise _LinkBroken(
                            f"node {peer} sent a bad frame: {exc}", "malformed"
                        ) from None
                    except Exception:
                        self._log.exception("frame handler failed on a frame from node %s", peer)
                        raise _LinkBroken("the frame handler raised", "handler_error") from None
                    finally:
                        with contextlib.suppress(BufferError):
                            frame.release()
                        ring.finish()
                self._report(inbound)
            self._report(inbound)
        finally:
            inbound.draining = False
            if inbound.closed:
                inbound.segment.close()

    def _report(self, inbound: _Inbound) -> None:
        """Tell the sender what it may overwrite: every quarter ring, or at once if it waits."""
        if inbound.closed:
            return
        ring = inbound.ring
        freed = ring.consumed - inbound.reported
        if freed and (inbound.writer_waiting or freed >= ring.capacity // 4):
            inbound.control.send(_CONSUMED, ring.consumed)
            inbound.reported = ring.consumed
            inbound.writer_waiting = False

    # -- losing links ----------------------------------------------------------------------

    def _lose(self, peer: NodeId, half: _Outbound | _Inbound, reason: str, counter: str) -> None:
        """Fail the link to ``peer`` because ``half`` of it broke; report it once.

        A half no longer registered belongs to a link already torn down: its news is stale.
        The inbound half stops being watched now; what it announced is delivered, then the loss
        reported, on the next loop turn, never from inside a call into the transport.
        """
        if self._out.get(peer) is not half and self._in.get(peer) is not half:
            return
        assert self._loop is not None
        self.stats[counter] += 1
        self.stats["peer_lost"] += 1
        out = self._out.pop(peer, None)
        if out is not None:
            self._drop_outbound(out)
        inbound = self._in.pop(peer, None)
        if inbound is not None and not inbound.closed:
            _stop_reading(self._loop, inbound.sock.fileno())
            self._dying.add(inbound)
        self._loop.call_soon(self._finish_loss, peer, inbound, reason)

    def _finish_loss(self, peer: NodeId, inbound: _Inbound | None, reason: str) -> None:
        if self._closed:
            return
        if inbound is not None:
            self._dying.discard(inbound)
            with contextlib.suppress(_LinkBroken):
                self._read_inbound(inbound, until_dry=True)
            self._close_inbound(inbound)
        assert self._on_peer_lost is not None
        self._on_peer_lost(peer, reason)

    def _drop_outbound(self, out: _Outbound) -> None:
        """Announce what is in the ring, say goodbye, release the segment (already unlisted)."""
        assert self._loop is not None
        if out.task is not None and out.task is not asyncio.current_task():
            out.task.cancel()
        out.queue.clear()
        out.queued_bytes = 0
        if out.sock is not None and out.control is not None:
            self._announce(out)
            _stop_reading(self._loop, out.sock.fileno())
            out.control.send(_GOODBYE)
            out.control.close()
            out.sock.close()
        out.closed = True
        out.segment.close()

    def _close_inbound(self, inbound: _Inbound) -> None:
        """Say goodbye and close; unmap unless a delivery is under way (it unmaps when done)."""
        if inbound.closed:
            return
        assert self._loop is not None
        inbound.closed = True
        _stop_reading(self._loop, inbound.sock.fileno())
        inbound.control.send(_GOODBYE)
        inbound.control.close()
        inbound.sock.close()
        if not inbound.draining:
            inbound.segment.close()


# -- socket helpers --------------------------------------------------------------------------


def _check_credentials(sock: socket.socket) -> None:
    """Refuse a process of another user: the kernel vouches for the peer's uid."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
    pid, uid, _gid = _CREDENTIALS.unpack(raw)
    if uid != os.getuid():
        raise ForeignUser(f"process {pid} runs as user {uid}, not {os.getuid()}")


async def _run_handshake(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, handshake: Handshake
) -> NodeId:
    """Drive :class:`~pyderecho.transport.auth.Handshake` over a unix socket, its messages
    length-prefixed as on TCP; our refusals send the peer a REJECT first, as there."""
    first = handshake.initial()
    if first is not None:
        await loop.sock_sendall(sock, HEADER.pack(len(first)) + first)
    while not handshake.done:
        header, _ = await _receive(loop, sock, HEADER.size)
        (length,) = HEADER.unpack(header)
        try:
            if length > MAX_HANDSHAKE_MESSAGE:
                raise BadHello(f"handshake message of {length} bytes announced")
            message, _ = await _receive(loop, sock, length)
            reply = handshake.receive(message)
        except Rejected:
            raise
        except HandshakeError as exc:
            if handshake.can_reject:
                refusal = reject_message(exc.counter)
                with contextlib.suppress(OSError):
                    sock.send(HEADER.pack(len(refusal)) + refusal)
            raise
        if reply is not None:
            await loop.sock_sendall(sock, HEADER.pack(len(reply)) + reply)
    return handshake.peer


async def _receive(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int, *, max_fds: int = 0
) -> tuple[bytes, list[int]]:
    """Exactly ``size`` bytes, and the descriptors that came with them (at most ``max_fds``;
    the kernel closes any beyond). Raises :class:`HandshakeIncomplete` if the socket ends."""
    buffer = bytearray()
    fds: list[int] = []
    ancillary = socket.CMSG_SPACE(max_fds * array("i").itemsize) if max_fds else 0
    try:
        while len(buffer) < size:
            try:
                data, messages, _flags, _address = sock.recvmsg(
                    size - len(buffer), ancillary, socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                await _readable(loop, sock)
                continue
            for level, kind, payload in messages:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    descriptors = array("i")
                    descriptors.frombytes(payload[: len(payload) - len(payload) % 4])
                    fds.extend(descriptors)
            if not data:
                raise HandshakeIncomplete("the connection ended during the handshake")
            buffer += data
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return bytes(buffer), fds


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        _stop_reading(loop, fd)


def _stop_reading(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """``loop.remove_reader(fd)``, its result unread: uvloop returns None where typeshed says a
    bool, and the compiled build (mypyc checks a declared result) would raise TypeError."""
    cast(Any, loop).remove_reader(fd)


def _stop_writing(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """``loop.remove_writer(fd)``, its result unread, for the reason `_stop_reading` gives."""
    cast(Any, loop).remove_writer(fd)


def _messages(inbox: bytearray) -> list[tuple[int, int]]:
    """The complete control messages at the front of ``inbox``, removed from it."""
    whole = len(inbox) - len(inbox) % _CONTROL.size
    messages = list(_CONTROL.iter_unpack(inbox[:whole]))
    del inbox[:whole]
    return messages


def _gone(peer: NodeId) -> str:
    return f"node {peer} went away without a goodbye (its process exited or was killed)"


def _describe(exc: OSError) -> str:
    return str(exc) or type(exc).__name__
