"""Length-prefixed framing for byte-stream transports.

A stream (TCP, TLS, a Unix socket) has no message boundaries, so every frame travels as a 4-byte
big-endian length followed by that many bytes. The length is checked against a limit *before*
anything is buffered: a peer that announces a huge frame is refused at once instead of making the
member allocate for it. Frames go out as a list of buffers (header, payload) so the payload is
handed to the stream as the caller's memoryview, never concatenated here.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterable

from pyderecho.core.errors import RemoteProtocolError
from pyderecho.transport.base import Frame, frame_parts

HEADER = struct.Struct(">I")
"""The length prefix: unsigned 32-bit big-endian, so no frame can exceed 4 GiB - 1."""

MAX_FRAME_LIMIT = 2**32 - 1
"""The largest length the prefix can express."""

DIRECT_WRITE_BYTES = 64 * 1024
"""Frames this large are handed to the stream on their own rather than in a batch: Python 3.11
joins a batch into one new buffer, a copy that costs more than a system call saves at this
size, while a lone buffer goes to ``send`` as it is."""


class FrameError(RemoteProtocolError):
    """The peer broke the framing; the stream cannot be resynchronised, so the link must go."""

    counter = "malformed"
    """The transport's ``stats`` key this error is counted under."""


class OversizedFrame(FrameError):
    """The peer announced a frame over the receiver's size limit."""

    counter = "oversized"


class TruncatedFrame(FrameError):
    """The stream ended in the middle of a frame (inside its header or its payload)."""

    counter = "truncated"


def frame_header(length: int) -> bytes:
    """The length prefix for a payload of ``length`` bytes."""
    return HEADER.pack(length)


def write_frames(writer: asyncio.StreamWriter, frames: Iterable[Frame]) -> None:
    """Hand ``frames`` to ``writer`` in order, each behind its length prefix.

    Small buffers go in one ``writelines`` call, so many small frames share a system call (and,
    from Python 3.12, are gathered with ``sendmsg`` instead of joined); a buffer of
    :data:`DIRECT_WRITE_BYTES` or more is written on its own, never joined with others.
    """
    buffers: list[bytes | memoryview] = []
    for frame in frames:
        parts = frame_parts(frame)
        buffers.append(HEADER.pack(sum(part.nbytes for part in parts)))
        for part in parts:
            if part.nbytes < DIRECT_WRITE_BYTES:
                buffers.append(part)
                continue
            writer.writelines(buffers)
            writer.write(part)
            buffers = []
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


class FrameReceiver(asyncio.BufferedProtocol):
    """Reads length-prefixed frames in place: the kernel copies into one reused buffer, and each
    frame reaches ``sink`` as a view of it, with no copy in between.

    A :class:`asyncio.StreamReader` costs two copies per byte on top of the kernel's (its buffer
    grows by ``extend``, and ``readexactly`` copies the frame out); at a gigabyte a second that
    is most of what Python spends on a link. A frame that does not fit the buffer is read
    straight into a buffer of its own size (after its header is checked against ``max_size``,
    so an announced length never makes us allocate beyond the limit).

    :attr:`finished` resolves when reading stops: with ``None`` when the stream ended between
    frames, or with the error that stopped it (a :class:`FrameError`, an ``OSError`` from the
    connection, or whatever ``sink`` raised). After an error no further frame is delivered.
    """

    def __init__(
        self, sink: FrameSink, max_size: int, *, capacity: int = 4 << 20, initial: int = 64 << 10
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
        self._transport: asyncio.BaseTransport | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

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
        if self._large is not None:
            return self._large[self._large_filled :]
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        if self.finished.done():
            return
        if self._large is not None:
            self._large_filled += nbytes
            if self._large_filled == len(self._large):
                frame, self._large = self._large, None
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
        if self._large is not None:
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
            if length > self._max_size:
                raise OversizedFrame(
                    f"frame of {length} bytes announced, limit is {self._max_size}"
                )
            if end - start - header < length:
                break
            self._start = start + header + length
            if not self._deliver(view[start + header : self._start]):
                return
            start = self._start
        self._make_room(start, end)

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
