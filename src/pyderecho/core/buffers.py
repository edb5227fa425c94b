"""Reassembly buffers for large messages, reused once nobody holds them any more.

A large message is copied block by block into a buffer of its own, and delivery hands that
buffer to the application as a read-only view instead of copying it again. A fresh buffer is
costly, though: a megabyte new from the allocator comes as fresh pages, faulted in and zeroed
(about 150 µs per MiB here, a quarter of the Python time of a 1 MiB delivery over TCP). So the
buffers stay in a pool, and one is taken again once the pool is its only holder, which is when
the application has dropped every view of the message. CPython's reference count says so
exactly: a view keeps its buffer referenced for as long as it lives.
"""

from __future__ import annotations

import sys

DEFAULT_POOL_BYTES = 64 << 20
"""How much a pool keeps for reuse; beyond it, buffers are allocated and freed as usual."""


def _holders(buffers: list[bytearray], index: int) -> int:
    return sys.getrefcount(buffers[index])


_ONLY_THE_POOL = _holders([bytearray(1)], 0)
"""What :func:`_holders` counts for a buffer nothing but the pool refers to (measured, so the
figure follows the interpreter rather than an assumption about it)."""


class BufferPool:
    """Buffers of exactly the sizes asked for, reused when free.

    Exact sizes, so a delivered view covers its whole buffer and a large message never pins a
    larger buffer than its own; applications with one size of large object, the common case,
    reuse every buffer.
    """

    def __init__(self, max_bytes: int = DEFAULT_POOL_BYTES) -> None:
        self._buffers: list[bytearray] = []
        self._bytes = 0
        self._max_bytes = max_bytes
        self.reused = 0
        """Buffers handed out again instead of allocated (for tests and stats)."""

    def take(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes with unspecified content, for the caller to fill."""
        buffers = self._buffers
        for index in range(len(buffers)):
            if len(buffers[index]) == size and _holders(buffers, index) == _ONLY_THE_POOL:
                self.reused += 1
                return buffers[index]
        buffer = bytearray(size)
        if self._bytes + size <= self._max_bytes:
            buffers.append(buffer)
            self._bytes += size
        return buffer
