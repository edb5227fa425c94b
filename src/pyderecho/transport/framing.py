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
from collections.abc import Iterable

from pyderecho.core.errors import RemoteProtocolError

HEADER = struct.Struct(">I")
"""The length prefix: unsigned 32-bit big-endian, so no frame can exceed 4 GiB - 1."""

MAX_FRAME_LIMIT = 2**32 - 1
"""The largest length the prefix can express."""


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


def write_frames(writer: asyncio.StreamWriter, frames: Iterable[bytes | memoryview]) -> None:
    """Hand ``frames`` to ``writer`` in order, each behind its length prefix, in one call.

    One ``writelines`` per batch lets the event loop send many small frames in one system call
    (and, from Python 3.12, gather the caller's buffers with ``sendmsg`` instead of joining them).
    """
    buffers: list[bytes | memoryview] = []
    for frame in frames:
        buffers.append(HEADER.pack(memoryview(frame).nbytes))
        buffers.append(frame)
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
