"""Wire encoding that the transports rely on beyond msgspec's own round trip."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from pyderecho.wire import SEPARATE_DATA_BYTES, Block, decode, encode, encode_parts


@settings(max_examples=100, deadline=None)
@given(size=st.integers(min_value=0, max_value=300_000), block=st.integers(0, 7))
def test_a_block_in_two_parts_decodes_as_the_block(size: int, block: int) -> None:
    """encode_parts sends a large block as header + data without joining them; the receiver
    sees the two as one frame, which must decode to the same block as encode's."""
    data = memoryview(bytes(range(256)) * (size // 256) + bytes(size % 256))
    message = Block(3, 1, 2, 7, 41, 1 << 20, block, 0, data)
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
