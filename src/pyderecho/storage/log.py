"""The append-only log of a Paxos shard's member (DESIGN.md 3.4), in segment files.

The log lives in one directory as segment files, each named by the sequence number of its first
record, zero padded to 20 digits so that names sort in log order (``00000000000000000000.seg``).
Only the last segment is written; once it would grow past ``segment_bytes`` it is synced, closed
(*sealed*) and the next one is created, and the directory is synced so that the new name survives
a crash. Whole segments are what compaction removes (:meth:`SegmentedLog.drop_before`), which is
why the log is split at all.

Each record is framed as a 12-byte header and the body, all little endian::

    u32 body length | u32 CRC32C of the body | u32 CRC32C of the 8 bytes before | body

The header has its own checksum so that recovery can tell, in constant time per byte offset,
whether a valid record starts there: that is what separates a torn tail from a corrupt middle.

Recovery (:meth:`SegmentedLog.open`) trusts nothing. The last segment is the only file that was
being written at a crash, and what was written after its last ``fdatasync`` may have reached the
disk in part or not at all: a partial header, a length past the end of the file, a checksum
mismatch or zero fill there is a *torn tail*, cut off with ``ftruncate`` and ``fsync``. It is
only a torn tail if no valid record follows it in the file. A bad record followed by a good one
is not what a crashed process leaves (its writes were in the page cache, in order); after a
power cut it can be unsynced pages written out of order, but it can as well be damage to
records that were synced and reported durable, and the log cannot tell which. So recovery
stops there with :class:`~pyderecho.storage.errors.CorruptLog`, as it does for any bad record
in a sealed segment, rather than silently throw away records that may have been acknowledged.

Errors from the operating system become :class:`~pyderecho.storage.errors.StorageFailed`, and a
log that failed once refuses every later call: after a failed ``fdatasync`` the kernel may have
dropped the dirty pages, so trying again and succeeding would not mean the data is on disk.

One lock guards the log, so that one thread (the group-commit writer) may append and sync while
another reads records for a state transfer.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import crc32c

from pyderecho.storage.errors import CorruptLog, StorageFailed
from pyderecho.storage.files import fsync_directory, write_all

HEADER = struct.Struct("<III")
"""Body length, CRC32C of the body, CRC32C of the two fields before."""
_CHECKED = struct.Struct("<II")
"""The part of the header its own checksum covers."""
MAX_RECORD_BYTES = 1 << 30
"""A longer record is refused on append, and a header announcing one is a bad record."""
DEFAULT_SEGMENT_BYTES = 64 << 20
SEGMENT_SUFFIX = ".seg"
_SEGMENT_NAME = re.compile(r"(\d{20})\.seg")
_FLUSH_BYTES = 1 << 20
"""Appended frames wait in memory until this many bytes are pending (or a sync), then reach the
file in one write. A body at least this large is written from the caller's buffer, not copied."""
_NONZERO = re.compile(rb"[^\x00]")

Body = bytes | bytearray | memoryview
RecordSink = Callable[[int, memoryview], None]
"""Called with each record's sequence number and body as recovery reads it
(:meth:`SegmentedLog.open`)."""


def segment_name(first: int) -> str:
    """The file name of the segment whose first record has sequence number ``first``."""
    return f"{first:020d}{SEGMENT_SUFFIX}"


def record_view(body: Body) -> memoryview:
    """``body`` as a flat view of its bytes; ``ValueError`` if it is over the record limit."""
    view = memoryview(body).cast("B")
    if view.nbytes > MAX_RECORD_BYTES:
        raise ValueError(f"a record of {view.nbytes} bytes is over the {MAX_RECORD_BYTES} limit")
    return view


def frame_header(body: memoryview) -> bytes:
    """The header that goes before ``body`` in a segment."""
    checked = _CHECKED.pack(body.nbytes, crc32c.crc32c(body))
    return checked + crc32c.crc32c(checked).to_bytes(4, "little")


def _record_end(data: memoryview, offset: int) -> int:
    """Where the valid record at ``offset`` ends, or -1 if none starts there."""
    body_start = offset + HEADER.size
    if body_start > len(data):
        return -1
    length, body_crc, header_crc = HEADER.unpack_from(data, offset)
    body_end: int = body_start + length
    if (
        crc32c.crc32c(data[offset : offset + _CHECKED.size]) != header_crc
        or length > MAX_RECORD_BYTES
        or body_end > len(data)
        or crc32c.crc32c(data[body_start:body_end]) != body_crc
    ):
        return -1
    return body_end


def _walk(data: memoryview, first: int, on_record: RecordSink | None) -> tuple[int, int]:
    """The number of valid records from the start of ``data`` and the offset where they end,
    each record handed to ``on_record`` (numbered from ``first``) as it is checked."""
    offset = count = 0
    while (end := _record_end(data, offset)) >= 0:
        if on_record is not None:
            on_record(first + count, data[offset + HEADER.size : end])
        offset = end
        count += 1
    return count, offset


def _why_bad(data: memoryview, offset: int) -> str:
    """What is wrong with the record at ``offset``, for an operator."""
    remaining = len(data) - offset
    if _NONZERO.search(data, offset) is None:
        return f"zero fill ({remaining} bytes to the end of the file)"
    if remaining < HEADER.size:
        return f"a partial header ({remaining} of {HEADER.size} bytes)"
    length, _, header_crc = HEADER.unpack_from(data, offset)
    if crc32c.crc32c(data[offset : offset + _CHECKED.size]) != header_crc:
        return "a header checksum mismatch"
    if length > MAX_RECORD_BYTES:
        return f"a length of {length} bytes, over the {MAX_RECORD_BYTES}-byte limit"
    if length > remaining - HEADER.size:
        return f"a {length}-byte record past the end of the file ({remaining} bytes left)"
    return f"a body checksum mismatch in a {length}-byte record"


def _valid_record_after(data: memoryview, bad: int) -> int | None:
    """The offset of the first valid record after offset ``bad``, if any.

    Every byte offset is a candidate, since a damaged length says nothing about where the next
    record starts, but two cheap filters run at C speed first: a length that fits in what is
    left of the file has a small top byte (so only offsets three bytes before such a byte are
    tried) and no valid header lies inside a run of zeros (its checksum of zeros is not zero).
    """
    last = len(data) - HEADER.size
    if last <= bad:
        return None
    top = min(last - bad, MAX_RECORD_BYTES) >> 24
    small_top_byte = re.compile(b"[\\x00-" + re.escape(bytes([top])) + b"]")
    position = bad + 4
    while (match := small_top_byte.search(data, position)) is not None:
        offset = match.start() - 3
        if offset > last:
            return None
        length, body_crc, header_crc = HEADER.unpack_from(data, offset)
        if length == body_crc == header_crc == 0:
            nonzero = _NONZERO.search(data, offset + HEADER.size)
            if nonzero is None:
                return None
            position = max(offset + 1, nonzero.start() - HEADER.size + 1) + 3
        elif length <= last - offset and _record_end(data, offset) >= 0:
            return offset
        else:
            position = match.start() + 1
    return None


def _read_file(path: Path, size: int | None = None) -> memoryview:
    """The first ``size`` bytes of ``path`` (all of it if ``None``)."""
    try:
        with path.open("rb") as file:
            data = file.read(-1 if size is None else size)
    except OSError as error:
        raise StorageFailed.from_os_error("read", path, error) from error
    if size is not None and len(data) < size:
        raise CorruptLog(path, len(data), f"the file ends before the {size} bytes it held")
    return memoryview(data)


def _make_directory(directory: Path) -> None:
    """Create ``directory`` and any missing parent, each durably."""
    missing: list[Path] = []
    path = directory
    while not path.exists():
        missing.append(path)
        path = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageFailed.from_os_error("create the directory", directory, error) from error
    for created in reversed(missing):
        fsync_directory(created.parent)


@dataclass(slots=True)
class _Segment:
    first: int
    path: Path
    records: int = 0
    size: int = 0
    """Bytes in the file, plus (for the open segment) those still pending in memory."""


class SegmentedLog:
    """An append-only log of opaque records numbered 0, 1, 2, ... in segment files.

    Get one with :meth:`open`. :meth:`append` only buffers; a record is durable once a later
    :meth:`sync` (or :meth:`close`) returns.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int,
        sealed: list[_Segment],
        open_segment: _Segment,
        fd: int,
        truncated_bytes: int,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.truncated_bytes = truncated_bytes
        """Bytes of torn tail that :meth:`open` cut off the last segment."""
        self.syncs = 0
        """``fdatasync`` calls made on segments (by :meth:`sync`, and when sealing)."""
        self._sealed = sealed
        self._open = open_segment
        self._fd = fd
        self._next_seq = open_segment.first + open_segment.records
        self._pending = bytearray()
        self._dirty = False
        """Records were appended since the last fdatasync."""
        self._failed: StorageFailed | None = None
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        on_record: RecordSink | None = None,
    ) -> SegmentedLog:
        """Open the log in ``directory`` (created if missing), recovering it after a crash.

        Recovery reads and checks every record, so ``on_record(seq, body)``, if given, gets
        each one in order as it is checked: a restart that needs the records reads the log
        once, not once to recover it and again through :meth:`records`. ``body`` is a
        read-only view into the segment's bytes (holding it holds them). A record handed
        over is valid, but the log may still be refused further on: if this raises, drop
        what ``on_record`` got.

        Raises :class:`CorruptLog` if a record is bad where a crash cannot explain it, and
        :class:`StorageFailed` if the operating system refuses a read or a write.
        """
        if segment_bytes < HEADER.size:
            raise ValueError(f"segment_bytes must be at least {HEADER.size}, got {segment_bytes}")
        _make_directory(directory)
        try:
            names = sorted(os.listdir(directory))
        except OSError as error:
            raise StorageFailed.from_os_error("list", directory, error) from error
        segments = [
            _Segment(int(match[1]), directory / name)
            for name in names
            if (match := _SEGMENT_NAME.fullmatch(name))
        ]
        if not segments:
            segments.append(_Segment(0, directory / segment_name(0)))
            try:
                os.close(os.open(segments[0].path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except OSError as error:
                raise StorageFailed.from_os_error("create", segments[0].path, error) from error
            fsync_directory(directory)
        *sealed, last = segments
        for segment, following in zip(sealed, segments[1:], strict=True):
            data = _read_file(segment.path)
            segment.records, segment.size = _walk(data, segment.first, on_record)
            if segment.size != len(data):
                raise CorruptLog(
                    segment.path,
                    segment.size,
                    f"{_why_bad(data, segment.size)} in a sealed segment, which no crash tears",
                )
            if segment.first + segment.records != following.first:
                raise CorruptLog(
                    segment.path,
                    None,
                    f"it holds records {segment.first} to {segment.first + segment.records - 1} "
                    f"but the next segment is {following.path.name}",
                )
        data = _read_file(last.path)
        last.records, last.size = _walk(data, last.first, on_record)
        if last.size < len(data):
            following_offset = _valid_record_after(data, last.size)
            if following_offset is not None:
                raise CorruptLog(
                    last.path,
                    last.size,
                    f"{_why_bad(data, last.size)}, followed by a valid record at byte offset "
                    f"{following_offset}: damage, not a torn write",
                )
        truncated_bytes = len(data) - last.size
        try:
            fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)
        except OSError as error:
            raise StorageFailed.from_os_error("open", last.path, error) from error
        if truncated_bytes:
            try:
                os.ftruncate(fd, last.size)
                os.fsync(fd)
            except OSError as error:
                os.close(fd)
                raise StorageFailed.from_os_error(
                    "truncate the torn tail of", last.path, error
                ) from error
        return cls(
            directory,
            segment_bytes=segment_bytes,
            sealed=sealed,
            open_segment=last,
            fd=fd,
            truncated_bytes=truncated_bytes,
        )

    # -- reading the state ------------------------------------------------------------------

    @property
    def first(self) -> int:
        """The sequence number of the first record still held (compaction drops earlier ones)."""
        return self._sealed[0].first if self._sealed else self._open.first

    @property
    def next_seq(self) -> int:
        """The sequence number the next appended record gets."""
        return self._next_seq

    # -- writing ----------------------------------------------------------------------------

    def append(self, body: Body) -> int:
        """Add ``body`` as the next record and return its sequence number. Buffered: the record
        is durable only once :meth:`sync` returns. ``body`` is read before this returns."""
        view = record_view(body)
        header = frame_header(view)
        frame_bytes = HEADER.size + view.nbytes
        with self._lock:
            self._check_usable("append")
            if self._open.size and self._open.size + frame_bytes > self.segment_bytes:
                self._seal()
            self._pending += header
            if view.nbytes >= _FLUSH_BYTES:
                self._flush()
                with self._io("write", self._open.path):
                    write_all(self._fd, view)
            else:
                self._pending += view
                if len(self._pending) >= _FLUSH_BYTES:
                    self._flush()
            self._open.size += frame_bytes
            self._open.records += 1
            self._dirty = True
            seq = self._next_seq
            self._next_seq = seq + 1
            assert seq == self._open.first + self._open.records - 1
            return seq

    def sync(self) -> None:
        """Make every appended record durable (write, then ``fdatasync`` the open segment)."""
        with self._lock:
            self._check_usable("sync")
            self._sync()

    def drop_before(self, seq: int) -> None:
        """Remove the sealed segments whose records all come before ``seq`` (compaction once a
        snapshot covers them). The open segment is never removed, so :attr:`first` may stay
        below ``seq``."""
        with self._lock:
            self._check_usable("drop_before")
            while self._sealed and self._sealed[0].first + self._sealed[0].records <= seq:
                segment = self._sealed.pop(0)
                with self._io("remove", segment.path):
                    os.unlink(segment.path)
                    # One segment at a time, oldest first: a crash leaves a contiguous suffix.
                    fsync_directory(self.directory)

    def close(self) -> None:
        """Sync and close. A failed log is closed without syncing."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._failed is None:
                    self._sync()
            finally:
                self._closed = True
                fd, self._fd = self._fd, -1
                if self._failed is None:
                    with self._io("close", self._open.path):
                        os.close(fd)
                elif fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def __enter__(self) -> SegmentedLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading records --------------------------------------------------------------------

    def records(
        self, start: int | None = None, stop: int | None = None
    ) -> Iterator[tuple[int, memoryview]]:
        """``(seq, body)`` for the records from ``start`` (default :attr:`first`) up to, not
        including, ``stop`` (default :attr:`next_seq` at the call), read back from the files.

        Records appended but not yet synced are included. Each body is a read-only view into
        the bytes of its segment, valid as long as it is held. Records appended after the call
        are not seen; the records read must not be dropped while the iterator runs.
        """
        with self._lock:
            self._check_usable("read")
            first = self.first
            start = first if start is None else start
            stop = self._next_seq if stop is None else stop
            if not first <= start <= stop <= self._next_seq:
                raise ValueError(
                    f"records {start} to {stop} of {self.directory}: it holds {first} to "
                    f"{self._next_seq - 1}"
                )
            self._flush()
            segments = [*self._sealed, self._open]
            index = bisect.bisect_right([segment.first for segment in segments], start) - 1
            snapshot = [
                (segment.first, segment.path, segment.size)
                for segment in segments[index:]
                if segment.first < stop and start < stop
            ]
        return self._read_records(snapshot, start, stop)

    @staticmethod
    def _read_records(
        segments: list[tuple[int, Path, int]], start: int, stop: int
    ) -> Iterator[tuple[int, memoryview]]:
        for first, path, size in segments:
            data = _read_file(path, size)
            offset = 0
            seq = first
            while offset < size and seq < stop:
                end = _record_end(data, offset)
                if end < 0:
                    raise CorruptLog(path, offset, f"{_why_bad(data, offset)} (read back)")
                if seq >= start:
                    yield seq, data[offset + HEADER.size : end]
                offset = end
                seq += 1

    # -- inside the lock --------------------------------------------------------------------

    def _check_usable(self, operation: str) -> None:
        if self._closed:
            raise ValueError(f"{operation} on the closed log {self.directory}")
        if self._failed is not None:
            raise StorageFailed(
                operation,
                Path(self._failed.filename),
                self._failed.errno,
                f"refused: the log failed earlier, {self._failed.strerror}",
            )

    @contextlib.contextmanager
    def _io(self, operation: str, path: Path) -> Iterator[None]:
        """Run a step that touches the disk; if it fails, the log has failed for good."""
        try:
            yield
        except StorageFailed as failure:
            self._failed = failure
            raise
        except OSError as error:
            self._failed = StorageFailed.from_os_error(operation, path, error)
            raise self._failed from error

    def _flush(self) -> None:
        if self._pending:
            with self._io("write", self._open.path):
                write_all(self._fd, self._pending)
            self._pending = bytearray()

    def _sync(self) -> None:
        if self._dirty:
            self._flush()
            with self._io("fdatasync", self._open.path):
                os.fdatasync(self._fd)
            self._dirty = False
            self.syncs += 1

    def _seal(self) -> None:
        """Close the open segment durably and start the next one."""
        self._sync()
        sealed = self._open
        fd, self._fd = self._fd, -1
        with self._io("close", sealed.path):
            os.close(fd)
        self._open = _Segment(self._next_seq, self.directory / segment_name(self._next_seq))
        self._sealed.append(sealed)
        with self._io("create", self._open.path):
            self._fd = os.open(
                self._open.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644
            )
            fsync_directory(self.directory)
