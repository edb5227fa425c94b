"""Wire encoding that the transports rely on beyond msgspec's own round trip."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from pyderecho.wire import (
    P2P,
    SEPARATE_DATA_BYTES,
    Block,
    decode,
    encode,
    encode_parts,
    split_block,
)


@settings(max_examples=100, deadline=None)
@given(size=st.integers(min_value=0, max_value=300_000), block=st.integers(0, 7))
def test_a_block_in_two_parts_decodes_as_the_block(size: int, block: int) -> None:
    """encode_parts sends a large block as header + data without joining them; the receiver
    sees the two as one frame, which must decode to the same block as encode's."""
    data = memoryview(bytes(range(256)) * (size // 256) + bytes(size % 256))
    message = Block(3, 1, 2, 7, 41, 1 << 20, block, 1 << 18, 0, data)
    parts = encode_parts(message)
    frame = b"".join(parts) if isinstance(parts, tuple) else parts
    if size >= SEPARATE_DATA_BYTES:
        assert isinstance(parts, tuple) and parts[1] is data  # the payload itself, not a copy
    else:
        assert frame == encode(message)
    decoded = decode(frame)
    assert isinstance(decoded, Block)
    assert bytes(decoded.data) == bytes(data)
    assert msgspec.structs.replace(decoded, data=data) == message


ints = st.integers(min_value=0, max_value=2**63 - 1) | st.sampled_from([0xC6, 0xC6C6, 2**32 + 0xC6])


@settings(max_examples=200, deadline=None)
@given(
    fields=st.lists(ints, min_size=9, max_size=9),
    size=st.integers(min_value=SEPARATE_DATA_BYTES, max_value=SEPARATE_DATA_BYTES + 3000),
)
def test_a_large_blocks_frame_splits_at_its_data_from_its_first_bytes(
    fields: list[int], size: int
) -> None:
    """split_block finds where a two-part block's data starts from the frame's first 128
    bytes, even with 0xc6 (the marker it looks for) inside the fields; with its data it is
    the block encode would have sent."""
    data = memoryview(bytes(range(256)) * (size // 256) + bytes(size % 256))
    epoch, subgroup, shard, sender, index, total, number, block_size, stamp = fields
    message = Block(epoch, subgroup, shard, sender, index, total, number, block_size, stamp, data)
    parts = encode_parts(message)
    assert isinstance(parts, tuple)
    frame = parts[0] + bytes(data)
    split = split_block(memoryview(frame)[:128], len(frame))
    assert split is not None
    head, block = split
    assert head == len(parts[0])
    assert block == msgspec.structs.replace(message, data=block.data) and block.data.nbytes == 0
    assert msgspec.structs.replace(block, data=memoryview(frame)[head:]) == decode(frame)


def test_frames_that_are_not_large_blocks_are_not_split() -> None:
    big = memoryview(bytes(SEPARATE_DATA_BYTES))
    p2p = encode_parts(P2P(big))
    assert isinstance(p2p, tuple)
    small_block = encode(Block(1, 0, 0, 1, 0, 100, 0, 100, 0, memoryview(bytes(100))))
    for frame in (p2p[0] + bytes(big), small_block, b"\xc6" * 200, bytes(300)):
        assert split_block(memoryview(frame)[:128], len(frame)) is None
    # A block's head with a data length that does not match the frame's is no block either.
    parts = encode_parts(Block(1, 0, 0, 1, 0, 1 << 20, 0, 1 << 18, 0, big))
    assert isinstance(parts, tuple)
    assert split_block(memoryview(parts[0]), len(parts[0]) + SEPARATE_DATA_BYTES + 1) is None
