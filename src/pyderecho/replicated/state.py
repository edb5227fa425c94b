"""A replica's state as bytes, and back: what state transfer ships and the checker digests.

By default the state is the class's annotated attributes, encoded with msgspec as one struct;
a class that defines both ``snapshot(self) -> bytes`` and ``restore(self, data: memoryview)``
marshals its own (for anything msgspec cannot describe, or a cheaper encoding). ``snapshot``
must return bytes that do not change afterwards (they are sent while the replica runs on);
``restore`` is handed a view of a buffer that is its own to keep, so neither side copies.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from pyderecho.replicated.methods import TypeSpec

_encoder = msgspec.msgpack.Encoder()


def snapshot(spec: TypeSpec, replica: Any) -> bytes:
    """The replica's state, encoded."""
    if spec.state_type is None:
        data = replica.snapshot()
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"{spec.cls.__qualname__}.snapshot() returned {type(data).__name__}, not bytes"
            )
        return bytes(data)
    names = spec.state_type.__struct_fields__
    return _encoder.encode(spec.state_type(*(getattr(replica, name) for name in names)))


def restore(spec: TypeSpec, data: bytes | memoryview) -> Any:
    """A new replica holding the state ``data``: constructed, then overwritten.

    Raises ``msgspec.ValidationError`` or ``msgspec.DecodeError`` for bytes that do not
    decode as this class's state, and whatever a custom ``restore`` raises.
    """
    replica = spec.cls()
    if spec.state_type is None:
        # Handed over, not copied: the buffer is the transfer's own and nothing else keeps it,
        # so a class that holds a large state as bytes-like data can keep it as it comes.
        replica.restore(memoryview(data))
        return replica
    state = msgspec.msgpack.decode(data, type=spec.state_type)
    for name in spec.state_type.__struct_fields__:
        setattr(replica, name, getattr(state, name))
    return replica


def digest(data: bytes | memoryview) -> str:
    """SHA-256 of encoded state: equal states, equal digests (msgspec encodes deterministically
    for the same values, dicts in insertion order, which ordered replay makes the same)."""
    return hashlib.sha256(data).hexdigest()
