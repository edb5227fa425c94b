"""Length-prefixed framing for byte-stream transports.

A stream (TCP, TLS, a Unix socket) has no message boundaries, so every frame travels as a 4-byte
big-endian length followed by that many bytes. The length is checked against a limit *before*
anything is buffered: a peer that announces a huge frame is refused at once instead of making the
member allocate for it. Frames go out as a list of buffers (header, payload) so the payload is
handed to the stream as the caller's memoryview, never concatenated here.

A length of all ones (:data:`PAD_WORD`) is no frame but four bytes of padding, which the
receiver skips. A receiver may raise its socket's receive low-water mark (``SO_RCVLOWAT``) to
:data:`QUIET_BYTES` while it holds nothing of a frame, so that a heartbeat (about a dozen
bytes) waits in the kernel until the receiver looks, instead of waking it; the sender then
pads every other write shorter than that (``write_frames(..., pad_to=QUIET_BYTES)``), so that
it still wakes the receiver at once (:attr:`FrameReceiver.woken` lowers the mark again).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable
from typing import ClassVar, Protocol

from pyderecho.core.errors import LocalProtocolError, RemoteProtocolError
from pyderecho.transport.base import (
    PLACE_FROM_BYTES,
    PLACEMENT_PREFIX,
    Frame,
    Placement,
    frame_parts,
)

HEADER = struct.Struct(">I")
"""The length prefix: unsigned 32-bit big-endian, so no frame can exceed 4 GiB - 1."""

MAX_FRAME_LIMIT = 2**32 - 2
"""The largest length a frame may have: what the prefix can express, less :data:`PAD_WORD`."""
PAD_WORD = 2**32 - 1
"""A prefix of all ones is padding, four bytes with no frame, skipped by the receiver."""
PAD = HEADER.pack(PAD_WORD)

DIRECT_WRITE_BYTES = 64 * 1024
"""Frames this large are handed to the stream on their own rather than in a batch: Python 3.11
joins a batch into one new buffer, a copy that costs more than a system call saves at this
size, while a lone buffer goes to ``send`` as it is."""


QUIET_BYTES = 64
"""The receive low-water mark of a stream whose heartbeats wait to be read: fewer bytes than
this wake nobody. Five or so beats; a write that must wake its receiver is padded to it."""


class FrameError(RemoteProtocolError):
    """The peer broke the framing; the stream cannot be resynchronised, so the link must go."""

    counter: ClassVar[str] = "malformed"
    """The transport's ``stats`` key this error is counted under."""


class OversizedFrame(FrameError):
    """The peer announced a frame over the receiver's size limit."""

    counter: ClassVar[str] = "oversized"


class TruncatedFrame(FrameError):
    """The stream ended in the middle of a frame (inside its header or its payload)."""

    counter: ClassVar[str] = "truncated"


def frame_header(length: int) -> bytes:
    """The length prefix for a payload of ``length`` bytes."""
    return HEADER.pack(length)


class ByteSink(Protocol):
    """Where :func:`write_frames` writes: a stream writer, or its transport directly."""

    def write(self, data: bytes | memoryview, /) -> None: ...

    def writelines(self, data: Iterable[bytes | memoryview], /) -> None: ...


def write_frames(writer: ByteSink, frames: Iterable[Frame], *, pad_to: int = 0) -> None:
    """Hand ``frames`` to ``writer`` in order, each behind its length prefix, and padding after
    them up to ``pad_to`` bytes in all.

    Small buffers go in one ``writelines`` call, so many small frames share a system call (and,
    from Python 3.12, are gathered with ``sendmsg`` instead of joined); a buffer of
    :data:`DIRECT_WRITE_BYTES` or more is written on its own, never joined with others.
    """
    buffers: list[bytes | memoryview] = []
    written = 0
    for frame in frames:
        if type(frame) is bytes and len(frame) < DIRECT_WRITE_BYTES:  # most frames: one buffer
            written += HEADER.size + len(frame)
            buffers.append(HEADER.pack(len(frame)))
            buffers.append(frame)
            continue
        parts = frame_parts(frame)
        length = sum(part.nbytes for part in parts)
        written += HEADER.size + length
        buffers.append(HEADER.pack(length))
        for part in parts:
            if part.nbytes < DIRECT_WRITE_BYTES:
                buffers.append(part)
                continue
            writer.writelines(buffers)
            writer.write(part)
            buffers = []
    if written < pad_to:
        buffers.append(PAD * -(-(pad_to - written) // HEADER.size))
    if buffers:
        writer.writelines(buffers)


async def read_frame(reader: asyncio.StreamReader, max_size: int) -> bytes | None:
    """Read exactly one frame; ``None`` when the stream ended cleanly between frames.

    Raises :class:`OversizedFrame` when the announced length exceeds ``max_size`` (nothing of the
    payload is read) and :class:`TruncatedFrame` when the stream ends mid-frame. Connection
    errors (``OSError``) pass through for the caller to report as a broken link.
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise TruncatedFrame(f"stream ended {len(exc.partial)} bytes into a frame header") from None
    (length,) = HEADER.unpack(header)
    if length > max_size:
        raise OversizedFrame(f"frame of {length} bytes announced, limit is {max_size}")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise TruncatedFrame(
            f"stream ended {len(exc.partial)} bytes into a {length}-byte frame"
        ) from None


FrameSink = Callable[[memoryview], None]
"""Takes one frame; the view is only valid during the call (the buffer is reused after it)."""
FramePlacer = Callable[[memoryview, int], Placement | None]
"""Shown the first bytes of a large frame and its length: where the rest goes, or None."""
SHORT_READ_BYTES = 4096
"""How much a read takes, at most, after a frame was placed: enough for the next frame's
header and what a placer needs to see, or for many small frames, but little of a large one's
body, which would have to be copied to its place."""
SHORT_READS = 16
"""Reads kept short after a placement: a link that carries large frames goes on doing so, and
one that stopped is back to large reads after a few."""


class FrameReceiver(asyncio.BufferedProtocol):
    """Reads length-prefixed frames in place: the kernel copies into one reused buffer, and each
    frame reaches ``sink`` as a view of it, with no copy in between.

    A :class:`asyncio.StreamReader` costs two copies per byte on top of the kernel's (its buffer
    grows by ``extend``, and ``readexactly`` copies the frame out); at a gigabyte a second that
    is most of what Python spends on a link. A frame that does not fit the buffer is read
    straight into a buffer of its own size (after its header is checked against ``max_size``,
    so an announced length never makes us allocate beyond the limit).

    With a ``placer``, a frame of :data:`~pyderecho.transport.base.PLACE_FROM_BYTES` or more
    that is not yet whole once its first :data:`~pyderecho.transport.base.PLACEMENT_PREFIX`
    bytes are in this buffer is offered to it, once: if the placer gives a
    :class:`~pyderecho.transport.base.Placement`, what already arrived of the rest is copied
    there and everything after is read there directly (the kernel's copy is the only one). A
    frame that arrived whole, or one over half the buffer's capacity whose start came in
    with fewer bytes, is read as without a placer.

    :attr:`finished` resolves when reading stops: with ``None`` when the stream ended between
    frames, or with the error that stopped it (a :class:`FrameError`, an ``OSError`` from the
    connection, or whatever ``sink`` raised). After an error no further frame is delivered.
    """

    def __init__(
        self,
        sink: FrameSink,
        max_size: int,
        *,
        capacity: int = 4 << 20,
        initial: int = 64 << 10,
        placer: FramePlacer | None = None,
    ) -> None:
        """The buffer starts at ``initial`` bytes and doubles, up to ``capacity``, when a read
        fills it or a frame needs more: a link that carries heartbeats and rows keeps 64 KiB,
        a busy one grows to read in large gulps. (A member holds one receiver per peer: at 4
        MiB each from the start, 64 members on one machine took 16 GiB, all of it zeroed
        while the links opened.)"""
        self._sink = sink
        self._max_size = max_size
        self._capacity = capacity
        self._buffer = bytearray(min(initial, capacity))
        self._view = memoryview(self._buffer)
        self._filled = False
        """The last read filled the buffer to its end: the link is busy, grow."""
        self._start = 0
        self._end = 0
        self._large: memoryview | None = None
        """The frame being read into its own buffer, while one is."""
        self._large_filled = 0
        self._placer = placer
        self._placing: Placement | None = None
        """The frame being read into the place its placer chose, while one is."""
        self._placing_head = b""
        self._placing_filled = 0
        self._offered = False
        """The frame at ``_start`` was offered to the placer (and declined)."""
        self._short_reads = 0
        """Reads still to keep short after the last placement (:data:`SHORT_READS`)."""
        self.placed_frames = 0
        self.placed_bytes = 0
        """Bytes of placed frames read straight to their place."""
        self.placed_copied_bytes = 0
        """Bytes of placed frames that had arrived before the placement, copied there."""
        self._transport: asyncio.BaseTransport | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.woken: Callable[[], None] | None = None
        """Called once, then cleared, when bytes next come in (set by a transport that lets
        heartbeats wait under a low-water mark, to lower it again before any frame is read)."""

    @property
    def between_frames(self) -> bool:
        """Nothing of a frame is held: the stream is at a frame boundary."""
        return self._start == self._end and self._large is None and self._placing is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def feed(self, data: bytes) -> None:
        """Take bytes that arrived before this protocol took over the connection."""
        while data and not self.finished.done():
            room = self.get_buffer(len(data))
            taken = min(len(room), len(data))
            room[:taken] = data[:taken]
            data = data[taken:]
            self.buffer_updated(taken)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._placing is not None:
            return self._placing.body[self._placing_filled :]
        if self._large is not None:
            return self._large[self._large_filled :]
        if self._short_reads:
            # Large frames are coming: read the next one's start alone, so that its body,
            # placed, goes straight to its place rather than into this buffer first.
            self._short_reads -= 1
            return self._view[self._end : self._end + SHORT_READ_BYTES]
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        woken = self.woken
        if woken is not None:
            self.woken = None
            woken()
        if self.finished.done():
            return
        if self._placing is not None:
            self._placing_filled += nbytes
            self.placed_bytes += nbytes
            if self._placing_filled == self._placing.body.nbytes:
                self._finish_placement()
            return
        if self._large is not None:
            self._large_filled += nbytes
            if self._large_filled == len(self._large):
                frame, self._large = self._large, None
                self._offered = False
                self._deliver(frame)
            return
        self._end += nbytes
        self._filled = self._end == len(self._buffer)
        try:
            self._take_frames()
        except FrameError as exc:
            self._stop(exc)

    def eof_received(self) -> bool:
        self._stop(self._truncation())
        return False

    def _truncation(self) -> TruncatedFrame | None:
        """What the end of the stream cut short, if anything."""
        if self._placing is not None:
            into = len(self._placing_head) + self._placing_filled
            length = len(self._placing_head) + self._placing.body.nbytes
        elif self._large is not None:
            into, length = self._large_filled, len(self._large)
        else:
            have = self._end - self._start
            if have == 0:
                return None
            if have < HEADER.size:
                return TruncatedFrame(f"stream ended {have} bytes into a frame header")
            into, length = have - HEADER.size, HEADER.unpack_from(self._view, self._start)[0]
        return TruncatedFrame(f"stream ended {into} bytes into a {length}-byte frame")

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._stop(exc)
        else:
            self.eof_received()

    def _take_frames(self) -> None:
        view, start, end = self._view, self._start, self._end
        header = HEADER.size
        while end - start >= header:
            (length,) = HEADER.unpack_from(view, start)
            if length == PAD_WORD:
                start += header
                self._start = start
                continue
            if length > self._max_size:
                raise OversizedFrame(
                    f"frame of {length} bytes announced, limit is {self._max_size}"
                )
            if end - start - header < length:
                if self._offer(start, end, length):
                    return
                break
            self._start = start + header + length
            self._offered = False
            if not self._deliver(view[start + header : self._start]):
                return
            start = self._start
        self._make_room(start, end)

    def _offer(self, start: int, end: int, length: int) -> bool:
        """Offer the unfinished frame at ``start`` to the placer, once its prefix is in; True
        if it is now read in place (everything buffered was its, so the buffer is empty)."""
        have = end - start - HEADER.size
        if (
            self._placer is None
            or self._offered
            or length < PLACE_FROM_BYTES
            or have < min(PLACEMENT_PREFIX, length)
        ):
            return False
        self._offered = True
        body_start = start + HEADER.size
        try:
            placement = self._placer(self._view[body_start : body_start + PLACEMENT_PREFIX], length)
        except Exception as exc:  # the placer's error ends the link, as the sink's does
            self._stop(exc)
            return True
        if placement is None:
            return False
        head = placement.head
        if not 0 < head <= min(PLACEMENT_PREFIX, have) or placement.body.nbytes != length - head:
            # The placer's mistake, not the peer's: stopped as a failing sink is.
            self._stop(
                LocalProtocolError(
                    f"a placement of {head} + {placement.body.nbytes} bytes for a "
                    f"{length}-byte frame, of which {have} bytes are in"
                )
            )
            return True
        arrived = have - head
        placement.body[:arrived] = self._view[body_start + head : end]
        self._placing_head = bytes(self._view[body_start : body_start + head])
        self._placing, self._placing_filled = placement, arrived
        self._start = self._end = 0
        self._offered = False
        self._short_reads = SHORT_READS
        self.placed_frames += 1
        self.placed_copied_bytes += arrived
        return True

    def _finish_placement(self) -> None:
        placement, self._placing = self._placing, None
        assert placement is not None
        head, self._placing_head = self._placing_head, b""
        try:
            placement.done(memoryview(head))
        except Exception as exc:  # as a sink's error, it ends the link
            self._stop(exc)

    def _make_room(self, start: int, end: int) -> None:
        """Keep the unfinished frame in ``[start, end)`` and make room for the rest of it."""
        header = HEADER.size
        needed = header
        if end - start >= header:
            needed += HEADER.unpack_from(self._view, start)[0]
        if self._filled or needed > len(self._buffer) // 2:
            self._grow(start, end, needed)
            start, end = self._start, self._end
        if start == end:
            self._start = self._end = 0
            return
        capacity = len(self._buffer)
        if end - start >= header and needed > capacity // 2:
            # Too large to share the buffer (grown as far as it goes) without moving it about:
            # it gets one of its own, filled from here on.
            large = memoryview(bytearray(needed - header))
            have = end - start - header
            large[:have] = self._view[start + header : end]
            self._large, self._large_filled = large, have
            self._start = self._end = 0
            return
        if capacity - start < needed:
            # Through a copy: bytearray's slice assignment is a memcpy, wrong for overlaps.
            self._buffer[: end - start] = bytes(self._view[start:end])
            start, end = 0, end - start
        self._start, self._end = start, end

    def _grow(self, start: int, end: int, needed: int) -> None:
        """Double the buffer (to hold twice ``needed``, at most ``capacity``), keeping the
        unfinished bytes in ``[start, end)``; no frame views into the old one are alive."""
        size = len(self._buffer)
        target = min(self._capacity, max(2 * size, 2 * needed))
        while size < target:
            size *= 2
        size = min(size, self._capacity)
        self._filled = False
        if size <= len(self._buffer):
            return
        buffer = bytearray(size)
        buffer[: end - start] = self._view[start:end]
        self._buffer, self._view = buffer, memoryview(buffer)
        self._start, self._end = 0, end - start

    def _deliver(self, frame: memoryview) -> bool:
        try:
            self._sink(frame)
        except Exception as exc:  # the sink's error ends the link; the owner reports it
            self._stop(exc)
            return False
        return True

    def _stop(self, error: BaseException | None) -> None:
        if self.finished.done():
            return
        if error is None:
            self.finished.set_result(None)
        else:
            self.finished.set_exception(error)
        if isinstance(self._transport, asyncio.ReadTransport):
            self._transport.pause_reading()
