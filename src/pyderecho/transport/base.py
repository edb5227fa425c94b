"""The interface every real transport implements, shaped after one-sided writes.

A transport moves opaque frames between members. It promises what the protocol core assumes of
a link: frames from one peer arrive whole, once, in the order they were sent (like RDMA writes
to one remote buffer, or one TCP stream). A broken link is reported, never hidden: the membership
protocol treats it as a failure signal. Frames are handed to the receiver as a memoryview that is
only valid during the callback, so a transport that can deliver in place (shared memory) never
copies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pyderecho.core.errors import LocalProtocolError
from pyderecho.core.view import NodeId

Frame = bytes | memoryview | tuple[bytes | memoryview, ...]
"""What a transport sends: one buffer, or several that make one frame together. A large
message's block is sent as its encoded header and a view of the payload, so a transport that
can write the parts one after the other (TCP) never joins them: the payload goes from the
sender's own buffer (or the relaying member's reassembly buffer) to the kernel. The receiver
gets one frame either way."""


def frame_size(frame: Frame) -> int:
    """The length of ``frame`` once its parts are joined."""
    if isinstance(frame, tuple):
        return sum(memoryview(part).nbytes for part in frame)
    return memoryview(frame).nbytes


def frame_parts(frame: Frame) -> tuple[memoryview, ...]:
    """The buffers of ``frame`` as byte views, however it was given."""
    return tuple(
        memoryview(part).cast("B") for part in (frame if isinstance(frame, tuple) else (frame,))
    )


def check_frame_size(size: int, limit: int) -> None:
    """Refuse a frame over the transport's limit: the caller's mistake, never the peer's."""
    if size > limit:
        raise LocalProtocolError(f"frame of {size} bytes exceeds max_frame_size {limit}")


def joined(frame: Frame) -> bytes | memoryview:
    """``frame`` as one buffer, for a transport that copies it in one piece anyway."""
    return b"".join(frame) if isinstance(frame, tuple) else frame


FrameHandler = Callable[[NodeId, memoryview], None]
"""Called for each frame from an authenticated peer; the view dies when the call returns."""

PLACE_FROM_BYTES = 64 * 1024
"""Frames at least this long may be offered to a :data:`LargeFrameHandler` before they are
read whole (a stream transport offers one whose start arrives before the rest)."""
PLACEMENT_PREFIX = 128
"""How many of a large frame's first bytes the handler is shown (all of it, if shorter)."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the rest of a large frame is read to, chosen by whoever knows its format.

    A stream transport reads a frame into a buffer of its own and hands it over as a view, and
    the receiver then copies what it keeps (a block of a large message, into the message's
    buffer): the one copy in Python a large message costs over TCP. A placement removes it:
    the frame's bytes from ``head`` on are read straight into ``body``, and ``done`` gets the
    first ``head`` bytes once the whole frame is in.
    """

    head: int
    """Bytes at the start of the frame that go to ``done`` (within what the handler saw)."""
    body: memoryview
    """Writable, exactly as long as the rest of the frame."""
    done: Callable[[memoryview], None]
    """Called once the frame is complete; the view it gets dies when the call returns."""


LargeFrameHandler = Callable[[NodeId, memoryview, int], Placement | None]
"""Called with the first bytes of a large frame from an authenticated peer (a view that dies
when the call returns) and the frame's length: a :class:`Placement` for the rest, or None to
have the frame read whole and go to the :data:`FrameHandler` as usual."""

PeerLostHandler = Callable[[NodeId, str], None]
"""Called once when the link to a peer breaks, with the reason."""


class Transport(Protocol):
    """Reliable, FIFO-per-peer, authenticated frame delivery between members."""

    node_id: NodeId
    stats: Counter[str]
    """Counts of rejected input and link events, by reason (malformed, bad_auth, oversized...)."""

    async def start(
        self,
        on_frame: FrameHandler,
        on_peer_lost: PeerLostHandler,
        on_large_frame: LargeFrameHandler | None = None,
    ) -> None:
        """Begin accepting peers and delivering their frames to ``on_frame``. A transport that
        reads frames from a stream offers large ones to ``on_large_frame`` first; one that
        shows frames in place (shared memory) has no copy to save and ignores it."""

    def connect(self, peer: NodeId, address: str) -> None:
        """Open (or reopen) the link to ``peer`` at ``address``; frames queue meanwhile."""

    def send(self, peer: NodeId, frame: Frame, *, caller_flushes: bool = False) -> None:
        """Queue ``frame`` for ``peer`` without blocking; frames to one peer keep their order.

        The frame's buffers are not copied when the transport can avoid it, so they must not
        change until the peer has the frame. With ``caller_flushes`` the caller promises to
        call :meth:`flush` before its turn of the loop ends, and the transport schedules no
        end-of-turn flush of its own: that flush would find nothing left and still cost a turn
        of the loop (an ``epoll`` and the loop's bookkeeping) for every turn that sent."""

    def flush(self) -> None:
        """Hand what :meth:`send` queued to the links now. Without it, frames leave at the end
        of the current turn of the event loop (one batch per peer for the whole turn); a
        caller that has queued all it will in this turn calls it to save that turn, which at
        light load is a fair part of a message's latency."""

    def disconnect(self, peer: NodeId) -> None:
        """Drop the link to ``peer`` (it left or was removed) and anything queued for it."""

    async def close(self) -> None:
        """Close every link and release every resource (sockets, segments, descriptors)."""


@runtime_checkable
class QuietBeats(Protocol):
    """A transport that can show a peer a periodic heartbeat without waking it: the peer reads
    it when it checks, at its own tick. Over shared memory a beat is a word in the link's
    segment; over TCP it is a frame too small to wake the receiver's loop (``SO_RCVLOWAT``),
    read at the tick. Drivers use it when the transport offers it (see
    :class:`pyderecho.wire.Heartbeat` for which beats may go so)."""

    def beat(self, peer: NodeId, epoch: int, frame: Frame) -> bool:
        """Show ``peer`` a beat of ``epoch`` (``frame``: the same beat encoded, for a transport
        that still sends one); False if it cannot now (send the frame as any other)."""

    def beats_seen(self, expected: Collection[NodeId] | None) -> list[tuple[NodeId, int]]:
        """Read the beats that wait. ``expected``: the peers whose beats the caller watches for
        now, which are read at every call; None: every peer's. A transport may read the others
        less often, as long as a beat kept waiting is read within a few calls (it only looks a
        little older) or wakes the receiver as a frame. Returns the peers whose beats in memory
        changed since the last read, each with the epoch of its latest beat; beats that came as
        frames go to ``on_frame`` as any frame, before this returns."""
