"""The byte ring that one sender writes and one receiver reads in place, in a shared segment.

A segment is an anonymous ``memfd`` (Linux) of a fixed header followed by the ring. It has no
name in any file system: the sender creates it and hands the descriptor to the receiver over the
link's unix socket (``SCM_RIGHTS``). That is why a crash cannot leak it: the kernel frees the
memory when the last process that maps it lets go, so there are no stale segments for a later
run to find and remove, and no process can open a segment it was not handed (stronger than
owner-only file modes, which any process of the same user passes). The sender seals the size
(``F_SEAL_SHRINK | F_SEAL_GROW``) and the receiver checks the seals before mapping, so a faulty
sender cannot shrink the file under the receiver's mapping and kill it with ``SIGBUS``. The
header names the group, the two members and the ring size, and is checked on attach, so a
descriptor from another group or link is rejected, never read.

The header's last word is the sender's heartbeat: the sender rewrites it each time it beats
and the receiver reads it when it checks on its peers, so a heartbeat wakes nobody (as a row
counter in Derecho's SST, written by RDMA and read by the predicate thread, does). It carries no
payload, so it needs none of the ordering that the counters below do: it is one aligned 8-byte
word, written and read whole (a single store and load on every 64-bit CPU), and a stale read
only makes the sender look a beat older.

The ring holds *records*, each an 8-byte header (payload length, kind) and the payload, padded to
8 bytes. A record never wraps: when it does not fit before the end of the ring the sender writes
a ``PAD`` record over the rest and starts again at offset 0. So every frame that fits in one
record is contiguous and the receiver hands it to the application as a view into the ring: the
sender copies the data in once and nobody copies it out. A record is at most half the ring, which
keeps at least two records in flight (the sender fills one while the receiver reads the other);
a larger frame is split into chunks that the receiver copies into one buffer of the size the
first chunk announces (checked against the receiver's limit before anything is allocated), so
large frames cost one copy more and any size up to that limit goes through a ring of any size.

This module only lays bytes out and checks them. *When* the receiver may read (the sender's
write counter) and when the sender may reuse space (the receiver's read counter) travel over the
link's socket (see :mod:`pyderecho.transport.shm`): a kernel crossing between the last store of a
record and the first load of it orders them on every CPU, which Python, having no memory fences,
could not promise for counters polled in shared memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct

MAGIC = b"PYDRRING"
VERSION = 2
"""2: the header's last word carries the sender's heartbeat (:meth:`Segment.write_beat`)."""
HEADER_SIZE = 64
"""Bytes before the ring: the header, padded so the ring starts on a cache line."""
_HEADER = struct.Struct("<8sII16sQQQ")  # magic, version, header size, group, src, dst, capacity
BEAT_OFFSET = _HEADER.size
"""The heartbeat word: the sender's epoch in the high 32 bits, a count of its beats in the low."""
assert BEAT_OFFSET % 8 == 0 and BEAT_OFFSET + 8 <= HEADER_SIZE
RECORD = struct.Struct("<II")  # payload length, kind
_TOTAL = struct.Struct("<Q")  # a chunked frame's size, first in its first chunk's payload
ALIGN = 8

MIN_CAPACITY = 64 * 1024
MAX_CAPACITY = 1024 * 1024 * 1024
"""Record lengths are 32-bit and a record is at most half the ring."""

KIND_FRAME = 1
"""A whole frame."""
KIND_FIRST = 2
"""The first chunk of a frame too large for one record: its size, then its first bytes."""
KIND_CHUNK = 3
"""A later chunk of that frame; the frame is complete when its announced size has arrived."""
KIND_PAD = 4
"""Filler from here to the end of the ring: the next record starts at offset 0."""

_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class SegmentError(Exception):
    """A segment handed over by a peer failed a check; ``stat`` names the count it feeds."""

    def __init__(self, stat: str, message: str) -> None:
        super().__init__(message)
        self.stat = stat


class RingError(Exception):
    """The peer broke the ring's rules (a malformed record or counter): the link cannot go on."""

    def __init__(self, stat: str, message: str) -> None:
        super().__init__(message)
        self.stat = stat


def align(size: int) -> int:
    """``size`` rounded up to the record alignment."""
    return (size + ALIGN - 1) & ~(ALIGN - 1)


def check_capacity(capacity: int) -> None:
    """Raise ``ValueError`` unless ``capacity`` is a ring size this module supports."""
    if (
        isinstance(capacity, bool)
        or not isinstance(capacity, int)
        or not MIN_CAPACITY <= capacity <= MAX_CAPACITY
        or capacity % ALIGN
    ):
        raise ValueError(
            f"ring size must be a multiple of {ALIGN} between {MIN_CAPACITY} and "
            f"{MAX_CAPACITY} bytes, got {capacity!r}"
        )


class Segment:
    """One mapped segment: the header, and ``data``, a view of the ring behind it."""

    def __init__(self, fd: int | None, mapping: mmap.mmap, capacity: int) -> None:
        self.fd = fd
        """The descriptor, kept by the sender until it has been handed over, else ``None``."""
        self._mapping = mapping
        self.data = memoryview(mapping)[HEADER_SIZE : HEADER_SIZE + capacity]
        self._beat = memoryview(mapping)[BEAT_OFFSET : BEAT_OFFSET + 8].cast("Q")
        """The heartbeat word, in native order: one aligned 8-byte store or load."""

    def write_beat(self, epoch: int, count: int) -> None:
        """The sender's side: say it is alive in ``epoch`` (``count`` makes each beat differ)."""
        assert 0 <= epoch < 2**32, epoch
        self._beat[0] = epoch << 32 | count & 0xFFFFFFFF

    def read_beat(self) -> int:
        """The receiver's side: the word as it is now (it changes with every beat)."""
        return int(self._beat[0])

    def close_fd(self) -> None:
        """Close the descriptor once it is no longer needed (the mapping keeps the memory)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        """Unmap, unless the application still holds a view of a frame past its callback.

        A view kept past its callback breaks the transport's contract, but must not break the
        member: the mapping then stays until that view is collected, and is freed with it.
        """
        self.close_fd()
        self.data.release()
        self._beat.release()
        with contextlib.suppress(BufferError):
            self._mapping.close()


def create_segment(*, name: str, group: bytes, src: int, dst: int, capacity: int) -> Segment:
    """Create and seal a new segment for the ring from ``src`` to ``dst``.

    ``name`` only labels the memfd in ``/proc/<pid>/fd`` and ``/proc/<pid>/maps``, for people
    debugging; ``group`` is the group's 16-byte digest.
    """
    check_capacity(capacity)
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, HEADER_SIZE + capacity)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        mapping = mmap.mmap(fd, HEADER_SIZE + capacity)
    except BaseException:
        os.close(fd)
        raise
    _HEADER.pack_into(mapping, 0, MAGIC, VERSION, HEADER_SIZE, group, src, dst, capacity)
    return Segment(fd, mapping, capacity)


def attach_segment(fd: int, *, group: bytes, src: int, dst: int, capacity: int) -> Segment:
    """Map the segment a peer handed over, after checking it is the one the handshake named.

    The receiver maps it read-only: it only reads in place, and a frame handler that writes
    into its view gets an error instead of corrupting the sender's ring. Takes ownership of
    ``fd`` (closed here, whatever happens): the mapping outlives it.
    """
    try:
        check_capacity(capacity)
    except ValueError as exc:
        os.close(fd)
        raise SegmentError("bad_segment", str(exc)) from None
    try:
        size = os.fstat(fd).st_size
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        if seals & _SEALS != _SEALS:
            raise SegmentError("bad_segment", "segment is not sealed against resizing")
        if size != HEADER_SIZE + capacity:
            raise SegmentError(
                "bad_segment", f"segment is {size} bytes, expected {HEADER_SIZE + capacity}"
            )
        mapping = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise SegmentError("bad_segment", f"cannot map the segment: {exc}") from exc
    finally:
        os.close(fd)
    magic, version, header_size, seg_group, seg_src, seg_dst, seg_capacity = _HEADER.unpack_from(
        mapping, 0
    )
    problem = None
    if magic != MAGIC or version != VERSION or header_size != HEADER_SIZE:
        problem = ("bad_segment", f"bad segment header (magic {magic!r}, version {version})")
    elif seg_group != group:
        problem = ("wrong_group", "segment belongs to another group")
    elif (seg_src, seg_dst, seg_capacity) != (src, dst, capacity):
        problem = (
            "bad_segment",
            f"segment is for link {seg_src}->{seg_dst} of {seg_capacity} bytes, "
            f"expected {src}->{dst} of {capacity}",
        )
    if problem is not None:
        mapping.close()
        raise SegmentError(*problem)
    return Segment(None, mapping, capacity)


class RingWriter:
    """The sender's side: appends records while the receiver's last report leaves room."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self.capacity = len(data)
        self.written = 0
        """Bytes appended since the start (a monotonic counter; offset = written % capacity)."""
        self.acknowledged = 0
        """Bytes the receiver has reported done with: space below this may be overwritten."""
        self._max_payload = self.capacity // 2 - RECORD.size
        self._min_chunk = self.capacity // 16

    def acknowledge(self, consumed: int) -> None:
        """Take the receiver's report that it is done with everything before ``consumed``."""
        if consumed % ALIGN or not self.acknowledged <= consumed <= self.written:
            raise RingError(
                "malformed",
                f"read counter {consumed} outside [{self.acknowledged}, {self.written}]",
            )
        self.acknowledged = consumed

    def put(self, frame: memoryview | tuple[memoryview, ...], start: int) -> int | None:
        """Append ``frame`` from byte ``start`` on, as far as the room allows.

        Returns ``None`` once the whole frame is in the ring, else the byte to resume from when
        the receiver has freed space. A frame that fits in one record is written whole or not
        at all, so the receiver always gets it as one view; a larger one goes chunk by chunk.
        A frame given as parts (byte-format views) is copied part by part, never joined first.
        """
        frame = frame if isinstance(frame, tuple) else (frame,)
        total = sum(len(part) for part in frame)
        if start == 0 and total <= self._max_payload:
            size = align(RECORD.size + total)
            if not self._room(size, size):
                return 0
            self._record(KIND_FRAME, frame, 0, total)
            return None
        while start < total:
            prefix = _TOTAL.size if start == 0 else 0
            wanted = min(prefix + total - start, self._max_payload)
            needed = min(wanted, self._min_chunk)
            room = self._room(align(RECORD.size + needed), align(RECORD.size + wanted))
            if not room:
                return start
            length = min(wanted, room - RECORD.size)
            end = start + length - prefix
            if prefix:
                self._record(KIND_FIRST, frame, start, end, total)
            else:
                self._record(KIND_CHUNK, frame, start, end)
            start = end
        return None

    def _room(self, needed: int, wanted: int) -> int:
        """Bytes of contiguous room for the next record, at least ``needed``, else 0.

        When the room at the current offset runs out before the end of the ring but there is
        enough at offset 0, pads to the end so the record can start there.
        """
        free = self.capacity - (self.written - self.acknowledged)
        position = self.written % self.capacity
        tail = self.capacity - position
        if free <= tail:
            return min(free, wanted) if free >= needed else 0
        if tail >= needed:
            return min(tail, wanted)
        if free - tail >= needed:
            RECORD.pack_into(self._data, position, tail - RECORD.size, KIND_PAD)
            self.written += tail
            return min(free - tail, wanted)
        return 0

    def _record(
        self,
        kind: int,
        frame: tuple[memoryview, ...],
        start: int,
        end: int,
        total: int | None = None,
    ) -> None:
        position = self.written % self.capacity
        body = position + RECORD.size
        length = end - start
        if total is not None:
            _TOTAL.pack_into(self._data, body, total)
            body += _TOTAL.size
            length += _TOTAL.size
        RECORD.pack_into(self._data, position, length, kind)
        _copy_range(frame, start, end, self._data[body : body + end - start])
        self.written += align(RECORD.size + length)


def _copy_range(parts: tuple[memoryview, ...], start: int, end: int, into: memoryview) -> None:
    """Copy bytes ``[start, end)`` of the frame that ``parts`` make up into ``into``."""
    offset = 0
    for part in parts:
        size = len(part)
        low, high = max(start - offset, 0), min(end - offset, size)
        if low < high:
            into[offset + low - start : offset + high - start] = part[low:high]
        offset += size
        if offset >= end:
            return


class RingReader:
    """The receiver's side: checks every record before trusting it, and reassembles chunks.

    Nothing a peer writes into the ring can make the reader read outside it, allocate more than
    ``max_frame`` for one frame, or go on past a broken record: each breach raises
    :class:`RingError`, and the transport drops the link.
    """

    def __init__(self, data: memoryview, max_frame: int) -> None:
        self._data = data
        self.capacity = len(data)
        self._max_frame = max_frame
        self.announced = 0
        """The sender's write counter as last announced: records below it are complete."""
        self.consumed = 0
        """Bytes this reader is done with (the read counter it reports back)."""
        self._held = 0
        self._assembly: bytearray | None = None
        self._filled = 0

    def announce(self, written: int) -> None:
        """Take the sender's announcement that everything below ``written`` is in the ring."""
        if written % ALIGN or written < self.announced or written - self.consumed > self.capacity:
            raise RingError(
                "malformed",
                f"write counter {written} after {self.announced}, read counter {self.consumed}",
            )
        self.announced = written

    @property
    def pending(self) -> bool:
        """Whether announced records remain to be taken."""
        return self.consumed < self.announced

    def take(self) -> memoryview | None:
        """Take the next announced record; returns the frame it completes, if any.

        A whole frame comes back as a view into the ring that stays valid until :meth:`finish`;
        a chunked one, when its last chunk is taken, as a view of the reassembled copy.
        """
        position = self.consumed % self.capacity
        tail = self.capacity - position
        available = self.announced - self.consumed
        if available < RECORD.size:
            raise RingError("malformed", "announced counter ends inside a record header")
        length, kind = RECORD.unpack_from(self._data, position)
        if kind == KIND_PAD:
            if length != tail - RECORD.size or available < tail:
                raise RingError("malformed", f"bad pad record of {length} bytes at {position}")
            self.consumed += tail
            return None
        size = align(RECORD.size + length)
        if size > tail or size > available:
            raise RingError("malformed", f"record of {length} bytes at {position} overruns")
        body = position + RECORD.size
        if kind == KIND_FRAME:
            if self._assembly is not None:
                raise RingError("malformed", "whole frame inside a chunked one")
            self._held = size
            return self._data[body : body + length]
        if kind == KIND_FIRST:
            if self._assembly is not None or length < _TOTAL.size:
                raise RingError("malformed", "misplaced or short first chunk")
            (total,) = _TOTAL.unpack_from(self._data, body)
            if total > self._max_frame:
                raise RingError(
                    "oversized", f"frame of {total} bytes over the {self._max_frame} limit"
                )
            if total <= length - _TOTAL.size:
                raise RingError("malformed", "chunked frame that fits in its first chunk")
            self._assembly = bytearray(total)
            self._filled = 0
            body += _TOTAL.size
            length -= _TOTAL.size
        elif kind != KIND_CHUNK or self._assembly is None:
            raise RingError("malformed", f"unexpected record kind {kind} at {position}")
        assembly = self._assembly
        if self._filled + length > len(assembly):
            raise RingError("malformed", "chunks overrun the frame they belong to")
        assembly[self._filled : self._filled + length] = self._data[body : body + length]
        self._filled += length
        self.consumed += size
        if self._filled < len(assembly):
            return None
        self._assembly = None
        return memoryview(assembly)

    def finish(self) -> None:
        """Release the frame :meth:`take` returned: its space may now be reported free."""
        self.consumed += self._held
        self._held = 0
