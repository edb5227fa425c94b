"""Reassembly buffers for large messages, reused once nobody holds them any more.

A large message is copied block by block into a buffer of its own, and delivery hands that
buffer to the application as a read-only view instead of copying it again. A fresh buffer is
costly, though: a megabyte new from the allocator comes as fresh pages, faulted in and zeroed
(about 150 µs per MiB here, a quarter of the Python time of a 1 MiB delivery over TCP). So the
buffers stay in a pool, and one is taken again once the pool is its only holder, which is when
the application has dropped every view of the message and no relayed block that views it waits
in a send queue. CPython's reference count says so exactly: a view keeps its buffer referenced
for as long as it lives.

The pool holds what the busiest moment needed (up to a bound), and lets buffers go once they
sit unused for :data:`IDLE_S`: a burst of large messages does not pin its memory for good.
"""

from __future__ import annotations

import sys

DEFAULT_POOL_BYTES = 512 << 20
"""How much a pool keeps for reuse at most; beyond it, buffers are allocated and freed as usual.
Eight members each sending a window of 16 MiB keep about 128 MiB of reassembly in flight."""
IDLE_S = 1.0
"""A free buffer not taken for this long is given back to the allocator."""


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
        self._last_used: list[float | None] = []
        """Per buffer, when :meth:`trim` last saw it taken; None: taken since."""
        self._bytes = 0
        self._max_bytes = max_bytes
        self.reused = 0
        """Buffers handed out again instead of allocated (for tests and stats)."""

    @property
    def pooled_bytes(self) -> int:
        return self._bytes

    def take(self, size: int) -> bytearray:
        """A buffer of ``size`` bytes with unspecified content, for the caller to fill."""
        buffers = self._buffers
        for index in range(len(buffers)):
            if len(buffers[index]) == size and _holders(buffers, index) == _ONLY_THE_POOL:
                self.reused += 1
                self._last_used[index] = None
                return buffers[index]
        buffer = bytearray(size)
        if self._bytes + size <= self._max_bytes:
            buffers.append(buffer)
            self._last_used.append(None)
            self._bytes += size
        return buffer

    def trim(self, now: float) -> None:
        """Let go of the free buffers not taken within the last :data:`IDLE_S` seconds."""
        buffers, last_used = self._buffers, self._last_used
        index = 0
        while index < len(buffers):
            used = last_used[index]
            if used is None:
                last_used[index] = now
            elif now - used > IDLE_S and _holders(buffers, index) == _ONLY_THE_POOL:
                self._bytes -= len(buffers[index])
                del buffers[index], last_used[index]
                continue
            index += 1
