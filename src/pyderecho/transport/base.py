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
from collections.abc import Callable
from typing import Protocol

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

PeerLostHandler = Callable[[NodeId, str], None]
"""Called once when the link to a peer breaks, with the reason."""


class Transport(Protocol):
    """Reliable, FIFO-per-peer, authenticated frame delivery between members."""

    node_id: NodeId
    stats: Counter[str]
    """Counts of rejected input and link events, by reason (malformed, bad_auth, oversized...)."""

    async def start(self, on_frame: FrameHandler, on_peer_lost: PeerLostHandler) -> None:
        """Begin accepting peers and delivering their frames to ``on_frame``."""

    def connect(self, peer: NodeId, address: str) -> None:
        """Open (or reopen) the link to ``peer`` at ``address``; frames queue meanwhile."""

    def send(self, peer: NodeId, frame: Frame) -> None:
        """Queue ``frame`` for ``peer`` without blocking; frames to one peer keep their order.

        The frame's buffers are not copied when the transport can avoid it, so they must not
        change until the peer has the frame."""

    def flush(self) -> None:
        """Hand what :meth:`send` queued to the links now. Without it, frames leave at the end
        of the current turn of the event loop (one batch per peer for the whole turn); a
        caller that has queued all it will in this turn calls it to save that turn, which at
        light load is a fair part of a message's latency."""

    def disconnect(self, peer: NodeId) -> None:
        """Drop the link to ``peer`` (it left or was removed) and anything queued for it."""

    async def close(self) -> None:
        """Close every link and release every resource (sockets, segments, descriptors)."""
