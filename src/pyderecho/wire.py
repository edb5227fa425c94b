"""Typed wire messages: one tagged union of msgspec Structs, decoded strictly.

Never pickle on the wire: a peer's bytes are only ever decoded into these types, and anything
else is a :class:`~pyderecho.core.errors.RemoteProtocolError`. Structs are array-like so a small
row push costs a few bytes of framing, not a dictionary of field names.
"""

from __future__ import annotations

import msgspec

from pyderecho.core.errors import RemoteProtocolError

WIRE_VERSION = 1


class ShardRow(msgspec.Struct, frozen=True, array_like=True, tag="r"):
    """A member's row of one shard's slice of the shared state table.

    Every column is monotonic within the epoch, so the receiver merges by maximum and a late or
    duplicated push changes nothing.
    """

    epoch: int
    subgroup: int
    shard: int
    received: tuple[int, ...]
    """How many messages of each sender (by sender rank) the member holds with no gap."""
    seq: int
    """Largest global index the member holds with no gap, -1 for none."""
    delivered: int
    """Largest global index the member has delivered (ordered) or -1."""


class Data(msgspec.Struct, frozen=True, array_like=True, tag="d"):
    """A message that fits in one block, sent straight from its sender to each member."""

    epoch: int
    subgroup: int
    shard: int
    sender: int
    index: int
    payload: bytes


class Nulls(msgspec.Struct, frozen=True, array_like=True, tag="n"):
    """``count`` null messages from ``first`` on: they keep the round robin moving and are
    never delivered."""

    epoch: int
    subgroup: int
    shard: int
    sender: int
    first: int
    count: int


class Block(msgspec.Struct, frozen=True, array_like=True, tag="b"):
    """One block of a large message, relayed from member to member along the shard's chain."""

    epoch: int
    subgroup: int
    shard: int
    sender: int
    index: int
    size: int
    """Total size of the message, so the first block to arrive can size the buffer."""
    block: int
    data: bytes


WireMessage = ShardRow | Data | Nulls | Block

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[WireMessage] = msgspec.msgpack.Decoder(WireMessage)


def encode(message: WireMessage) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes | memoryview) -> WireMessage:
    """Decode one message, strictly; anything malformed is the peer's fault."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RemoteProtocolError(f"malformed message: {exc}") from exc
