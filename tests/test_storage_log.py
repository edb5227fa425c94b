"""The segmented log and the metadata files on real files with real fsync: round trips across
segments, compaction, recovery from a torn tail (cut, zero fill, garbage, a flipped byte), the
corruption recovery refuses, and failures the operating system reports.

Damage is done to the files with ordinary writes, at offsets computed from the documented
format (docs/storage.md), so these tests also pin the format.
"""

from __future__ import annotations

import ast
import errno
import os
import random
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import crc32c
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import pyderecho.storage
from pyderecho.storage import (
    MAX_RECORD_BYTES,
    CorruptLog,
    SegmentedLog,
    StorageFailed,
    read_metadata,
    write_atomic,
)
from pyderecho.storage.metadata import temp_path

HEADER = 12
"""u32 length, u32 crc32c of the body, u32 crc32c of those 8 bytes (docs/storage.md)."""


def frame(body: bytes) -> bytes:
    checked = struct.pack("<II", len(body), crc32c.crc32c(body))
    return checked + struct.pack("<I", crc32c.crc32c(checked)) + body


def write_log(directory: Path, bodies: list[bytes], segment_bytes: int = 1 << 20) -> None:
    with SegmentedLog.open(directory, segment_bytes=segment_bytes) as log:
        for seq, body in enumerate(bodies):
            assert log.append(body) == seq


def read_log(directory: Path, segment_bytes: int = 1 << 20) -> tuple[SegmentedLog, list[bytes]]:
    """Open the log and read it back, checking that what recovery handed to ``on_record`` as
    it read (what a restart decodes) is what :meth:`SegmentedLog.records` reads afterwards."""
    handed: list[tuple[int, bytes]] = []
    log = SegmentedLog.open(
        directory,
        segment_bytes=segment_bytes,
        on_record=lambda seq, body: handed.append((seq, bytes(body))),
    )
    records = [(seq, bytes(body)) for seq, body in log.records()]
    assert [seq for seq, _ in records] == list(range(log.first, log.next_seq))
    assert handed == records, "recovery handed on other records than the log holds"
    return log, [body for _, body in records]


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(data)


def varied_bodies(count: int) -> list[bytes]:
    rng = random.Random(count)
    return [rng.randbytes(rng.randrange(0, 60)) for _ in range(count)]


# -- round trips ----------------------------------------------------------------------------


def test_records_round_trip_across_segments_and_numbering_continues(tmp_path: Path) -> None:
    bodies = [*varied_bodies(60), b"", b"b" * 500, b"after the big one"]
    write_log(tmp_path, bodies, segment_bytes=200)

    files = segments(tmp_path)
    assert len(files) > 5
    assert files[0].name == "00000000000000000000.seg"
    firsts = [int(path.stem) for path in files]
    assert all(len(path.stem) == 20 for path in files)
    for path in files:
        # A segment exceeds segment_bytes only when it holds a single larger record.
        assert path.stat().st_size <= 200 or path.stat().st_size == HEADER + 500

    log, read = read_log(tmp_path, segment_bytes=200)
    with log:
        assert read == bodies
        assert (log.first, log.next_seq, log.truncated_bytes) == (0, len(bodies), 0)
        # Each file is named by the sequence number of its first record.
        for first in firsts:
            assert bytes(next(log.records(first))[1]) == bodies[first]
        assert [bytes(body) for _, body in log.records(10, 20)] == bodies[10:20]
        assert list(log.records(len(bodies))) == []
        assert log.append(b"next") == len(bodies)
        assert [(seq, bytes(body)) for seq, body in log.records(len(bodies))] == [
            (len(bodies), b"next")
        ]
        with pytest.raises(ValueError, match="records 0 to 99"):
            list(log.records(0, 99))
    assert read_log(tmp_path, segment_bytes=200)[1] == [*bodies, b"next"]


def test_records_sees_what_was_appended_before_the_call_only(tmp_path: Path) -> None:
    with SegmentedLog.open(tmp_path, segment_bytes=100) as log:
        for body in varied_bodies(10):
            log.append(body)
        reading = log.records(5)
        log.append(b"later")
        assert [seq for seq, _ in reading] == [5, 6, 7, 8, 9]


def test_a_large_record_is_written_from_the_callers_buffer_and_reads_back(
    tmp_path: Path,
) -> None:
    large = bytearray(random.Random(1).randbytes(3 << 20))
    bodies: list[bytes] = [b"small", bytes(large), b"tail"]
    with SegmentedLog.open(tmp_path) as log:
        log.append(b"small")
        log.append(memoryview(large))
        log.append(b"tail")
    assert read_log(tmp_path)[1] == bodies


def test_a_record_over_the_limit_is_refused(tmp_path: Path) -> None:
    with SegmentedLog.open(tmp_path) as log:
        with pytest.raises(ValueError, match="over the"):
            log.append(bytes(MAX_RECORD_BYTES + 1))  # calloc'ed: never touched, costs no memory
        assert log.next_seq == 0


def test_drop_before_removes_whole_segments_below_and_keeps_the_open_one(tmp_path: Path) -> None:
    bodies = varied_bodies(80)
    write_log(tmp_path, bodies, segment_bytes=150)
    firsts = [int(path.stem) for path in segments(tmp_path)]
    middle = len(firsts) // 2
    inside = firsts[middle] + 1  # a record inside segment `middle`, not its first

    with SegmentedLog.open(tmp_path, segment_bytes=150) as log:
        log.drop_before(inside)
        assert log.first == firsts[middle]
        assert [int(path.stem) for path in segments(tmp_path)] == firsts[middle:]
        assert [bytes(body) for _, body in log.records()] == bodies[firsts[middle] :]
        with pytest.raises(ValueError):
            list(log.records(firsts[middle] - 1))

    log, read = read_log(tmp_path, segment_bytes=150)
    with log:
        assert log.first == firsts[middle]
        assert read == bodies[firsts[middle] :]
        log.drop_before(log.next_seq + 100)
        assert segments(tmp_path) == [tmp_path / f"{firsts[-1]:020d}.seg"]
        assert log.append(b"more") == len(bodies)
    log, read = read_log(tmp_path, segment_bytes=150)
    with log:
        assert read == [*bodies[firsts[-1] :], b"more"]


# -- recovery: a torn tail is cut ----------------------------------------------------------


def cut_mid_body(path: Path, last: bytes) -> int:
    size = path.stat().st_size
    os.truncate(path, size - 3)
    return len(frame(last)) - 3


def cut_mid_header(path: Path, last: bytes) -> int:
    start = path.stat().st_size - len(frame(last))
    os.truncate(path, start + 5)
    return 5


def flip_last_body(path: Path, last: bytes) -> int:
    flip(path, path.stat().st_size - 1)
    return len(frame(last))


def flip_last_length(path: Path, last: bytes) -> int:
    flip(path, path.stat().st_size - len(frame(last)))
    return len(frame(last))


TORN_TAILS = {
    "cut in the last body": cut_mid_body,
    "cut in the last header": cut_mid_header,
    "a flipped byte in the last body": flip_last_body,
    "a flipped byte in the last length": flip_last_length,
}


@pytest.mark.parametrize("damage", TORN_TAILS.values(), ids=list(TORN_TAILS))
def test_a_torn_last_record_is_cut_and_every_earlier_record_kept(
    tmp_path: Path, damage: Callable[[Path, bytes], int]
) -> None:
    bodies = [*varied_bodies(40), b"the last record"]
    write_log(tmp_path, bodies, segment_bytes=300)
    last_segment = segments(tmp_path)[-1]
    torn = damage(last_segment, bodies[-1])
    damaged_size = last_segment.stat().st_size

    log, read = read_log(tmp_path, segment_bytes=300)
    with log:
        assert read == bodies[:-1]
        assert log.truncated_bytes == torn > 0
        assert last_segment.stat().st_size == damaged_size - torn
        assert log.append(b"again") == len(bodies) - 1
    log, read = read_log(tmp_path, segment_bytes=300)
    with log:
        assert read == [*bodies[:-1], b"again"]
        assert log.truncated_bytes == 0


def header_only(length: int) -> bytes:
    """A header with a valid checksum of its own, announcing ``length`` bytes of body."""
    checked = struct.pack("<II", length, 0)
    return checked + struct.pack("<I", crc32c.crc32c(checked))


APPENDED = {
    "zero fill": bytes(4096),
    "garbage": random.Random(7).randbytes(1000),
    "a header announcing more than the limit": header_only((1 << 30) + 1),
    "a partial record of random bytes": frame(random.Random(8).randbytes(256 << 10))[:-100],
}


@pytest.mark.parametrize("tail", APPENDED.values(), ids=list(APPENDED))
def test_bytes_after_the_last_record_are_cut(tmp_path: Path, tail: bytes) -> None:
    bodies = varied_bodies(30)
    write_log(tmp_path, bodies, segment_bytes=300)
    with segments(tmp_path)[-1].open("ab") as file:
        file.write(tail)

    log, read = read_log(tmp_path, segment_bytes=300)
    with log:
        assert read == bodies
        assert log.truncated_bytes == len(tail)
        log.append(b"again")
    assert read_log(tmp_path, segment_bytes=300)[1] == [*bodies, b"again"]


def test_an_empty_last_segment_after_a_crash_while_sealing_is_used(tmp_path: Path) -> None:
    bodies = varied_bodies(20)
    write_log(tmp_path, bodies, segment_bytes=100)
    (tmp_path / f"{len(bodies):020d}.seg").touch()
    log, read = read_log(tmp_path, segment_bytes=100)
    with log:
        assert read == bodies
        assert log.append(b"x") == len(bodies)


@settings(max_examples=100, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=40), max_size=12),
    cut_fraction=st.floats(min_value=0, max_value=1),
    zero_fill=st.integers(min_value=0, max_value=64),
)
def test_any_prefix_of_a_log_recovers_the_records_wholly_before_the_cut(
    bodies: list[bytes], cut_fraction: float, zero_fill: int
) -> None:
    """A crash can leave any prefix of the unsynced writes, and the file size may run ahead of
    the data (zeros): recovery keeps exactly the records whose bytes are all on disk as they
    were written. Those are the records that end at or before the cut, and the next ones if
    the zeros happen to be their missing bytes (a body cut inside its trailing zeros): such a
    record is whole, checksum and all, and indistinguishable from a synced one."""
    written = b"".join(frame(body) for body in bodies)
    on_disk = written[: round(cut_fraction * len(written))] + bytes(zero_fill)
    cut = round(cut_fraction * len(written))
    whole: list[bytes] = []
    kept_bytes = 0
    for body in bodies:
        end = kept_bytes + HEADER + len(body)
        if on_disk[:end] != written[:end]:
            break
        whole.append(body)
        kept_bytes = end
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        write_log(directory, bodies)
        (path,) = segments(directory)
        assert path.read_bytes() == written
        os.truncate(path, cut)
        with path.open("ab") as file:
            file.write(bytes(zero_fill))
        log, read = read_log(directory)
        with log:
            assert read == whole
            assert log.truncated_bytes == cut + zero_fill - kept_bytes
            assert log.append(b"next") == len(whole)


# -- recovery: corruption is refused ---------------------------------------------------------


@pytest.mark.parametrize("bad", [4, 8], ids=["in the middle", "just before the last record"])
def test_a_bad_record_followed_by_a_valid_one_is_corruption(tmp_path: Path, bad: int) -> None:
    bodies = [b"record %d" % seq for seq in range(10)]
    write_log(tmp_path, bodies)
    (path,) = segments(tmp_path)
    offset = sum(len(frame(body)) for body in bodies[:bad])
    flip(path, offset + HEADER + 2)
    before = path.read_bytes()

    with pytest.raises(CorruptLog, match=f"byte offset {offset}") as caught:
        SegmentedLog.open(tmp_path)
    assert path.name in str(caught.value)
    assert "body checksum" in str(caught.value)
    assert (caught.value.path, caught.value.offset) == (path, offset)
    assert path.read_bytes() == before, "a corrupt log is not modified"


@settings(max_examples=60, deadline=None)
@example(garbage=bytes(20), body=b"", after=b"")  # zero fill, then a record
@example(garbage=bytes(20), body=b"x", after=bytes(20))
@given(
    garbage=st.binary(min_size=1, max_size=300),
    body=st.binary(max_size=300),
    after=st.binary(max_size=50),
)
def test_any_valid_record_after_a_bad_one_is_found(
    garbage: bytes, body: bytes, after: bytes
) -> None:
    """Whatever lies between, a valid record after the first bad one makes it corruption, and
    the message says where that record is."""
    good = [b"kept %d" % seq for seq in range(3)]
    bad_offset = sum(len(frame(record)) for record in good)
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        write_log(directory, good)
        (path,) = segments(directory)
        with path.open("ab") as file:
            file.write(garbage + frame(body) + after)
        with pytest.raises(CorruptLog) as caught:
            SegmentedLog.open(directory)
        assert caught.value.offset == bad_offset
        assert f"followed by a valid record at byte offset {bad_offset + len(garbage)}" in str(
            caught.value
        )


def test_a_damaged_length_in_the_middle_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    """With the length damaged, the next record's offset is unknown: recovery finds it by
    trying every offset, instead of cutting the log (and the records after) off."""
    bodies = [b"%d" % seq * 30 for seq in range(10)]
    write_log(tmp_path, bodies)
    (path,) = segments(tmp_path)
    offset = sum(len(frame(body)) for body in bodies[:3])
    flip(path, offset + 3)  # the top byte of the length: it now runs past the end of the file
    with pytest.raises(CorruptLog, match=f"{path.name} at byte offset {offset}: a header"):
        SegmentedLog.open(tmp_path)


def test_a_record_over_16_mib_after_a_bad_one_is_found(tmp_path: Path) -> None:
    """The scan only tries offsets whose length could fit; a length's top byte is 1 here."""
    write_log(tmp_path, [b"kept"])
    (path,) = segments(tmp_path)
    with path.open("ab") as file:
        file.write(b"\xff" * 5 + frame(bytes(17 << 20)))
    with pytest.raises(CorruptLog, match=f"valid record at byte offset {len(frame(b'kept')) + 5}"):
        SegmentedLog.open(tmp_path)


def test_zeros_in_the_middle_are_corruption(tmp_path: Path) -> None:
    bodies = [b"%d" % seq * 30 for seq in range(10)]
    write_log(tmp_path, bodies)
    (path,) = segments(tmp_path)
    data = bytearray(path.read_bytes())
    offset = len(frame(bodies[0]))
    data[offset : offset + 100] = bytes(100)
    path.write_bytes(data)
    with pytest.raises(CorruptLog, match=f"byte offset {offset}"):
        SegmentedLog.open(tmp_path)


@pytest.mark.parametrize("where", ["last record", "appended garbage"])
def test_any_bad_record_in_a_sealed_segment_is_corruption(tmp_path: Path, where: str) -> None:
    bodies = varied_bodies(40)
    write_log(tmp_path, bodies, segment_bytes=200)
    sealed = segments(tmp_path)[1]
    size = sealed.stat().st_size
    if where == "last record":
        flip(sealed, size - 1)
    else:
        with sealed.open("ab") as file:
            file.write(bytes(10))
    with pytest.raises(CorruptLog, match=f"{sealed.name} at byte offset") as caught:
        SegmentedLog.open(tmp_path, segment_bytes=200)
    assert "sealed segment" in str(caught.value)


def test_what_recovery_hands_on_before_it_refuses_a_sealed_segment_is_a_valid_prefix(
    tmp_path: Path,
) -> None:
    """``on_record`` gets each record as it is checked, so a log refused further on has
    already handed on the records before the damage (which is why its caller drops them)."""
    bodies = varied_bodies(40)
    write_log(tmp_path, bodies, segment_bytes=200)
    sealed = segments(tmp_path)[1]
    flip(sealed, sealed.stat().st_size - 1)
    handed: list[tuple[int, bytes]] = []
    with pytest.raises(CorruptLog, match="sealed segment"):
        SegmentedLog.open(
            tmp_path,
            segment_bytes=200,
            on_record=lambda seq, body: handed.append((seq, bytes(body))),
        )
    last_sealed = int(segments(tmp_path)[2].stem) - 1  # the damaged record, never handed on
    assert handed == list(enumerate(bodies[:last_sealed]))


def test_a_missing_segment_is_corruption(tmp_path: Path) -> None:
    write_log(tmp_path, varied_bodies(40), segment_bytes=200)
    files = segments(tmp_path)
    files[2].unlink()
    with pytest.raises(CorruptLog, match=f"{files[1].name}: .* next segment is {files[3].name}"):
        SegmentedLog.open(tmp_path, segment_bytes=200)


# -- failures the operating system reports ---------------------------------------------------


def test_a_failed_write_stops_the_log_for_good(tmp_path: Path) -> None:
    """Without root there is no full disk to fill, but a removed directory makes the next
    segment impossible to create: the log reports it once and then refuses everything."""
    directory = tmp_path / "log"
    log = SegmentedLog.open(directory, segment_bytes=64)
    log.append(b"a" * 40)
    shutil.rmtree(directory)
    with pytest.raises(StorageFailed) as caught:
        log.append(b"b" * 40)  # does not fit: seals, then creates the next segment
    failure = caught.value
    assert failure.errno == errno.ENOENT
    assert "ENOENT" in str(failure)
    assert "create" in str(failure)
    assert "00000000000000000001.seg" in str(failure)
    for call in (log.sync, lambda: log.append(b"c"), lambda: list(log.records())):
        with pytest.raises(StorageFailed, match="refused: the log failed earlier") as refused:
            call()
        assert refused.value.errno == errno.ENOENT
    with pytest.raises(StorageFailed):
        log.drop_before(1)
    log.close()
    with pytest.raises(ValueError, match="closed"):
        log.append(b"d")


def test_an_unreadable_directory_is_a_storage_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    with pytest.raises(StorageFailed, match="ENOTDIR"):
        SegmentedLog.open(blocker / "log")


# -- metadata files --------------------------------------------------------------------------


def test_metadata_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "view"
    assert read_metadata(path) is None
    write_atomic(path, b"epoch 1")
    assert read_metadata(path) == b"epoch 1"
    write_atomic(path, b"epoch 2, longer")
    assert read_metadata(path) == b"epoch 2, longer"
    write_atomic(path, b"")
    assert read_metadata(path) == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["view"]


@pytest.mark.parametrize("damage", ["flip body", "flip header", "truncate", "empty", "extend"])
def test_corrupt_metadata_is_detected(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "view"
    write_atomic(path, b"the installed view")
    data = bytearray(path.read_bytes())
    if damage == "flip body":
        data[-1] ^= 1
    elif damage == "flip header":
        data[5] ^= 1
    elif damage == "truncate":
        del data[-4:]
    elif damage == "empty":
        data.clear()
    else:
        data += b"\0"
    path.write_bytes(data)
    with pytest.raises(CorruptLog, match="view"):
        read_metadata(path)


def test_a_leftover_temporary_file_is_ignored_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "view"
    write_atomic(path, b"durable")
    temp_path(path).write_bytes(b"half written by a crashed write")
    assert read_metadata(path) == b"durable"
    write_atomic(path, b"next")
    assert read_metadata(path) == b"next"
    assert not temp_path(path).exists()


def test_metadata_in_a_missing_directory_is_a_storage_failure(tmp_path: Path) -> None:
    path = tmp_path / "gone" / "view"
    with pytest.raises(StorageFailed, match="create failed with ENOENT") as caught:
        write_atomic(path, b"x")
    assert caught.value.filename == str(temp_path(path))


# -- the package ---------------------------------------------------------------------------


def test_public_names_are_pinned() -> None:
    assert pyderecho.storage.__all__ == [
        "DEFAULT_SEGMENT_BYTES",
        "MAX_RECORD_BYTES",
        "CorruptLog",
        "GroupCommitWriter",
        "SegmentedLog",
        "StorageFailed",
        "WriterStats",
        "fsync_directory",
        "read_metadata",
        "write_atomic",
    ]


def test_storage_depends_on_no_other_part_of_pyderecho() -> None:
    package = Path(pyderecho.storage.__file__).parent
    imported: set[str] = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert {name for name in imported if name.startswith("pyderecho")} <= {
        f"pyderecho.storage.{path.stem}" for path in package.glob("*.py")
    } | {"pyderecho.storage"}
    assert any(name.startswith("pyderecho.storage.") for name in imported)
