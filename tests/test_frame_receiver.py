"""The in-place frame reader of the TCP transport, fed without sockets.

The property: however the stream is cut into reads (the kernel decides that, not us), the sink
sees exactly the frames that were sent, whole and in order, then the end; a stream cut short
ends in :class:`TruncatedFrame`; an announced frame over the limit ends the stream before its
payload is taken. Small buffers make every path run: frames straddling the buffer's end (moved
to its front), frames too large for it (read into their own buffer), headers split across reads.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyderecho.core.errors import RemoteProtocolError
from pyderecho.transport.base import PLACE_FROM_BYTES, PLACEMENT_PREFIX, Placement
from pyderecho.transport.framing import (
    PAD,
    QUIET_BYTES,
    SHORT_READ_BYTES,
    FrameReceiver,
    OversizedFrame,
    TruncatedFrame,
    frame_header,
    write_frames,
)


def stream_of(frames: list[bytes]) -> bytes:
    return b"".join(frame_header(len(frame)) + frame for frame in frames)


def pieces(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted({min(cut, len(data)) for cut in cuts}):
        yield data[start:cut]
        start = cut
    yield data[start:]


def feed_like_a_socket(receiver: FrameReceiver, piece: bytes) -> None:
    """Write into the buffers the receiver offers, as the event loop does after ``recv_into``,
    never more than each offers at once."""
    while piece and not receiver.finished.done():
        room = receiver.get_buffer(-1)
        assert len(room) > 0, "the receiver must always offer room"
        taken = min(len(room), len(piece))
        room[:taken] = piece[:taken]
        piece = piece[taken:]
        receiver.buffer_updated(taken)


async def received(
    data: bytes, cuts: list[int], *, capacity: int, max_size: int = 1 << 20, initial: int = 0
) -> tuple[list[bytes], BaseException | None]:
    """The frames ``data`` holds, fed in ``cuts``; the buffer starts at ``initial`` bytes (0:
    at ``capacity``) and grows as reads fill it and frames need it."""
    frames: list[bytes] = []
    receiver = FrameReceiver(
        lambda frame: frames.append(bytes(frame)),
        max_size,
        capacity=capacity,
        initial=initial or capacity,
    )
    for piece in pieces(data, cuts):
        feed_like_a_socket(receiver, piece)
    receiver.eof_received()
    error = receiver.finished.exception()
    return frames, error


frame_lists = st.lists(st.binary(max_size=300), max_size=25)


@settings(max_examples=300, deadline=None)
@given(
    frames=frame_lists,
    cuts=st.lists(st.integers(min_value=0, max_value=8000), max_size=30),
    capacity=st.sampled_from([8, 64, 256, 4096]),
    initial=st.sampled_from([0, 4, 8, 32]),
)
def test_any_cutting_of_the_stream_gives_the_frames_back(
    frames: list[bytes], cuts: list[int], capacity: int, initial: int
) -> None:
    got, error = asyncio.run(
        received(stream_of(frames), cuts, capacity=capacity, initial=min(initial, capacity))
    )
    assert error is None
    assert got == frames


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=10),
    cut_at=st.integers(min_value=1),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=10),
    capacity=st.sampled_from([8, 64, 4096]),
    initial=st.sampled_from([0, 4, 16]),
)
def test_a_stream_cut_short_is_truncated_and_keeps_the_whole_frames(
    frames: list[bytes], cut_at: int, cuts: list[int], capacity: int, initial: int
) -> None:
    data = stream_of(frames)
    cut = cut_at % len(data)
    got, error = asyncio.run(
        received(data[:cut], cuts, capacity=capacity, initial=min(initial, capacity))
    )
    whole: list[bytes] = []
    for frame in frames:
        if len(stream_of([*whole, frame])) > cut:
            break
        whole.append(frame)
    if cut == len(stream_of(whole)):
        assert error is None
    else:
        assert isinstance(error, TruncatedFrame)
        assert "bytes into a" in str(error)
    assert got == whole


class Collected:
    """A stream writer that keeps what :func:`write_frames` hands it, and the system calls."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.calls = 0

    def write(self, data: bytes | memoryview) -> None:
        self.data += data
        self.calls += 1

    def writelines(self, data: Iterable[bytes | memoryview]) -> None:
        for part in data:
            self.data += part
        self.calls += 1


@settings(max_examples=200, deadline=None)
@given(
    frames=frame_lists,
    pads=st.lists(st.integers(min_value=0, max_value=3), max_size=26),
    cuts=st.lists(st.integers(min_value=0, max_value=8000), max_size=30),
    capacity=st.sampled_from([8, 64, 4096]),
)
def test_padding_between_frames_is_skipped_however_the_stream_is_cut(
    frames: list[bytes], pads: list[int], cuts: list[int], capacity: int
) -> None:
    """Pad words (a prefix of all ones) before, between and after frames: the sink sees the
    frames alone, empty ones included, and a stream that ends on padding ends cleanly."""
    data = b"".join(
        PAD * pad + stream_of([frame]) for pad, frame in zip(pads, frames, strict=False)
    )
    data += PAD * (pads[len(frames)] if len(pads) > len(frames) else 0)
    got, error = asyncio.run(received(data, cuts, capacity=capacity))
    assert error is None
    assert got == frames[: len(pads)]


@given(frames=st.lists(st.binary(max_size=80), max_size=4), pad_to=st.integers(0, 200))
def test_write_frames_pads_a_short_write_to_its_length_in_one_call(
    frames: list[bytes], pad_to: int
) -> None:
    """What a member writes to wake its receiver past the low-water mark: the frames, then pad
    words up to ``pad_to`` bytes (none if the frames reach it), in one write; read back, the
    frames alone."""
    sink = Collected()
    write_frames(sink, frames, pad_to=pad_to)
    plain = stream_of(frames)
    assert bytes(sink.data[: len(plain)]) == plain
    padding = bytes(sink.data[len(plain) :])
    assert padding == PAD * (len(padding) // len(PAD))
    assert len(sink.data) >= pad_to and len(padding) < max(len(PAD), pad_to - len(plain) + 4)
    assert sink.calls <= 1
    got, error = asyncio.run(received(bytes(sink.data), [], capacity=64))
    assert (got, error) == (frames, None)


def test_a_member_pads_to_the_low_water_mark() -> None:
    """A lone heartbeat-sized write stays under the mark; padded, it reaches it."""
    sink = Collected()
    write_frames(sink, [b"\x94\xa1h\x05\xc2\xc2"])
    assert len(sink.data) < QUIET_BYTES
    sink = Collected()
    write_frames(sink, [b"\x94\xa1h\x05\xc2\xc2"], pad_to=QUIET_BYTES)
    assert QUIET_BYTES <= len(sink.data) < QUIET_BYTES + len(PAD)


def test_an_oversized_frame_stops_the_stream_before_its_payload() -> None:
    data = stream_of([b"ok"]) + frame_header(101) + b"x" * 101 + stream_of([b"never"])
    got, error = asyncio.run(received(data, [], capacity=64, max_size=100))
    assert got == [b"ok"]
    assert isinstance(error, OversizedFrame)
    assert "101 bytes" in str(error)


def test_a_failing_sink_stops_delivery_and_reports_its_error() -> None:
    async def scenario() -> None:
        seen: list[bytes] = []

        def sink(frame: memoryview) -> None:
            if bytes(frame) == b"bad":
                raise RemoteProtocolError("bad frame")
            seen.append(bytes(frame))

        receiver = FrameReceiver(sink, 100, capacity=64)
        feed_like_a_socket(receiver, stream_of([b"a", b"bad", b"c"]))
        assert seen == [b"a"]
        with pytest.raises(RemoteProtocolError, match="bad frame"):
            await receiver.finished

    asyncio.run(scenario())


def test_frames_arrive_as_views_of_the_reused_buffer() -> None:
    """No copy between the socket's buffer and the sink: the frame is a view into the memory
    the receiver handed to ``recv_into``."""

    async def scenario() -> None:
        views: list[memoryview] = []
        receiver = FrameReceiver(views.append, 100, capacity=64)
        room = receiver.get_buffer(-1)
        data = stream_of([b"abc"])
        room[: len(data)] = data
        receiver.buffer_updated(len(data))
        assert bytes(views[0]) == b"abc"
        room[4:7] = b"xyz"  # the next read lands where the frame was
        assert bytes(views[0]) == b"xyz"

    asyncio.run(scenario())


def test_bytes_buffered_before_the_takeover_come_first() -> None:
    async def scenario() -> None:
        frames: list[bytes] = []
        receiver = FrameReceiver(lambda frame: frames.append(bytes(frame)), 100, capacity=16)
        data = stream_of([b"one", b"two" * 5, b"three"])
        receiver.feed(data[:9])
        feed_like_a_socket(receiver, data[9:])
        receiver.eof_received()
        assert frames == [b"one", b"two" * 5, b"three"]
        assert receiver.finished.result() is None

    asyncio.run(scenario())


# -- placement: large frames read straight to where their reader wants them -----------------


def placed_stream(
    frames: list[bytes], cuts: list[int], capacity: int = 256 << 10
) -> tuple[list[bytes], FrameReceiver, int]:
    """Feed ``frames`` with a placer that claims every frame starting with ``P``: its first
    3 bytes aside, the rest into a buffer of its own. Returns every frame in the order it
    completed (placed ones rebuilt from head and buffer), the receiver, and how many bytes
    the placements it made were to take; checks that no frame is offered twice."""

    async def scenario() -> tuple[list[bytes], FrameReceiver, int]:
        got: list[bytes] = []
        claimed: list[int] = []
        offered: list[bytes] = []

        def placer(prefix: memoryview, length: int) -> Placement | None:
            assert prefix.nbytes == min(PLACEMENT_PREFIX, length)
            offered.append(bytes(prefix))
            if bytes(prefix[:1]) != b"P":
                return None
            body = memoryview(bytearray(length - 3))
            claimed.append(body.nbytes)
            return Placement(3, body, lambda head: got.append(bytes(head) + bytes(body)))

        receiver = FrameReceiver(
            lambda frame: got.append(bytes(frame)),
            1 << 20,
            capacity=capacity,
            initial=min(capacity, 64 << 10),
            placer=placer,
        )
        for piece in pieces(stream_of(frames), cuts):
            feed_like_a_socket(receiver, piece)
        receiver.eof_received()
        # No frame is offered twice.
        assert len(offered) <= sum(len(frame) >= PLACE_FROM_BYTES for frame in frames)
        return got, receiver, sum(claimed)

    return asyncio.run(scenario())


frame_kinds = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda first, length, seed: first + random.Random(seed).randbytes(length - 1),
        st.sampled_from([b"P", b"Q"]),
        st.integers(PLACE_FROM_BYTES - 10, PLACE_FROM_BYTES + 5000),
        st.integers(0, 2**32),
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    frames=st.lists(frame_kinds, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=500_000), max_size=20),
    capacity=st.sampled_from([256 << 10, 96 << 10]),
)
def test_placed_frames_come_back_whole_and_in_order_however_the_stream_is_cut(
    frames: list[bytes], cuts: list[int], capacity: int
) -> None:
    """With a 96 KiB buffer the large frames are over half of it: those whose first 128 bytes
    came in one read with their header are placed, the others read into their own buffer."""
    got, receiver, claimed_bytes = placed_stream(frames, cuts, capacity)
    assert receiver.finished.result() is None
    assert got == frames
    # What a placement took was read in place or copied from what had come before it.
    assert receiver.placed_bytes + receiver.placed_copied_bytes == claimed_bytes
    assert receiver.placed_frames <= sum(
        f[:1] == b"P" and len(f) >= PLACE_FROM_BYTES for f in frames
    )


def test_after_a_placement_the_next_large_frame_is_read_in_place() -> None:
    """Reads stay short after a placement, so the next large frame's body is not read into the
    receiver's own buffer first (which would mean a copy to its place)."""
    size = PLACE_FROM_BYTES + 1000
    frames = [b"P" + random.Random(1).randbytes(size - 1), b"small"]
    frames.append(b"P" + random.Random(2).randbytes(size - 1))
    got, receiver, _ = placed_stream(frames, [])
    assert got == frames
    assert receiver.placed_frames == 2
    # The first frame came in one read with the rest of the stream; the second is read in
    # place but for its start.
    assert receiver.placed_copied_bytes < size + SHORT_READ_BYTES


def test_a_stream_cut_in_a_placed_frame_is_truncated() -> None:
    async def scenario() -> BaseException | None:
        def placer(prefix: memoryview, length: int) -> Placement:
            return Placement(1, memoryview(bytearray(length - 1)), lambda head: None)

        receiver = FrameReceiver(lambda frame: None, 1 << 20, placer=placer)
        data = stream_of([b"P" * PLACE_FROM_BYTES])
        feed_like_a_socket(receiver, data[:1000])
        receiver.eof_received()
        return receiver.finished.exception()

    error = asyncio.run(scenario())
    assert isinstance(error, TruncatedFrame)
    assert f"996 bytes into a {PLACE_FROM_BYTES}-byte frame" in str(error)


def test_a_failing_placer_or_completion_stops_the_stream_with_its_error() -> None:
    async def scenario(fail_in: str) -> BaseException | None:
        def done(head: memoryview) -> None:
            raise RemoteProtocolError("bad block")

        def placer(prefix: memoryview, length: int) -> Placement:
            if fail_in == "placer":
                raise RemoteProtocolError("bad head")
            return Placement(1, memoryview(bytearray(length - 1)), done)

        seen: list[bytes] = []
        receiver = FrameReceiver(lambda frame: seen.append(bytes(frame)), 1 << 20, placer=placer)
        data = stream_of([b"P" * PLACE_FROM_BYTES, b"after"])
        feed_like_a_socket(receiver, data[:200])
        feed_like_a_socket(receiver, data[200:])
        assert seen == []
        return receiver.finished.exception()

    assert "bad head" in str(asyncio.run(scenario("placer")))
    assert "bad block" in str(asyncio.run(scenario("done")))
