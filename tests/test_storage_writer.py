"""The group-commit writer on real files: batching (records that arrive together share one
fdatasync per log), ordered callbacks, metadata writes as barriers, draining on close, and
fail-stop on a real full disk (a tiny tmpfs, when the tests run as root) or a removed directory.

The writer is made busy deterministically: the first submission's callback blocks (on the
writer thread) until the test has queued the rest, so the rest arrive as one batch. Every wait
is on an event with a generous timeout, never a sleep.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyderecho.storage import (
    GroupCommitWriter,
    SegmentedLog,
    StorageFailed,
    WriterStats,
    read_metadata,
)

TIMEOUT = 10.0


class Failures:
    """Collects ``on_failure`` calls."""

    def __init__(self) -> None:
        self.calls: list[StorageFailed] = []
        self.seen = threading.Event()

    def __call__(self, failure: StorageFailed) -> None:
        self.calls.append(failure)
        self.seen.set()


def blocker(
    first: Callable[[int], None] | None = None,
) -> tuple[Callable[[int], None], threading.Event, threading.Event]:
    """A callback that signals ``busy`` and then holds the writer thread until ``release``."""
    busy = threading.Event()
    release = threading.Event()

    def hold(seq: int) -> None:
        if first is not None:
            first(seq)
        busy.set()
        assert release.wait(TIMEOUT), "the test never released the writer"

    return hold, busy, release


@pytest.fixture
def failures() -> Failures:
    return Failures()


def test_records_that_arrive_together_share_one_sync(tmp_path: Path, failures: Failures) -> None:
    log = SegmentedLog.open(tmp_path / "log")
    writer = GroupCommitWriter("m0", failures)
    durable: list[int] = []
    done = threading.Event()
    count = 300

    def record(seq: int) -> None:
        durable.append(seq)
        if seq == count:
            done.set()

    hold, busy, release = blocker(record)
    writer.submit(log, [b"first"], hold)
    assert busy.wait(TIMEOUT)
    for seq in range(1, count + 1):
        writer.submit(log, [b"record %d" % seq], record)
    release.set()
    assert done.wait(TIMEOUT)

    assert durable == list(range(count + 1))
    stats = writer.stats
    assert stats.syncs == log.syncs == 2  # the first record alone, then the other 300 together
    assert stats.records == count + 1
    assert stats.batches == 2
    assert stats.body_bytes == len(b"first") + sum(len(b"record %d" % s) for s in range(1, 301))
    writer.close()
    log.close()
    with SegmentedLog.open(tmp_path / "log") as reopened:
        assert [bytes(body) for _, body in reopened.records(299)] == [b"record 299", b"record 300"]
    assert failures.calls == []


def test_one_sync_per_touched_log_and_the_last_seq_of_each_submission(
    tmp_path: Path, failures: Failures
) -> None:
    logs = [SegmentedLog.open(tmp_path / name) for name in ("a", "b", "idle")]
    writer = GroupCommitWriter("m1", failures)
    reported: list[tuple[str, int]] = []
    done = threading.Event()

    def report(name: str, last: bool = False) -> Callable[[int], None]:
        def call(seq: int) -> None:
            reported.append((name, seq))
            if last:
                done.set()

        return call

    hold, busy, release = blocker()
    writer.submit(logs[2], [b"x"], hold)
    assert busy.wait(TIMEOUT)
    for round_ in range(5):
        writer.submit(logs[0], [b"a1", b"a2", b"a3"], report("a"))
        writer.submit(logs[1], [b"b"], report("b", last=round_ == 4))
    release.set()
    assert done.wait(TIMEOUT)

    assert reported == [item for n in range(5) for item in (("a", 3 * n + 2), ("b", n))]
    assert writer.stats == WriterStats(
        batches=2, syncs=3, records=21, body_bytes=1 + 5 * 7, metadata_writes=0
    )
    assert [log.syncs for log in logs] == [1, 1, 1]
    writer.close()
    for log in logs:
        log.close()


def test_a_metadata_write_is_a_barrier_between_record_writes(
    tmp_path: Path, failures: Failures
) -> None:
    log = SegmentedLog.open(tmp_path / "log")
    writer = GroupCommitWriter("m2", failures)
    events: list[str] = []
    done = threading.Event()
    hold, busy, release = blocker(lambda seq: events.append(f"record {seq}"))
    writer.submit(log, [b"0"], hold)
    assert busy.wait(TIMEOUT)
    writer.submit(log, [b"1"], lambda seq: events.append(f"record {seq}"))
    writer.submit_metadata(tmp_path / "view", b"epoch 2", lambda: events.append("view"))

    def last(seq: int) -> None:
        events.append(f"record {seq}")
        done.set()

    writer.submit(log, [b"2"], last)
    release.set()
    assert done.wait(TIMEOUT)

    assert events == ["record 0", "record 1", "view", "record 2"]
    stats = writer.stats
    assert (stats.batches, stats.syncs, stats.metadata_writes) == (2, 3, 1)
    assert read_metadata(tmp_path / "view") == b"epoch 2"
    writer.close()
    log.close()


def test_close_writes_everything_submitted_and_then_refuses(
    tmp_path: Path, failures: Failures
) -> None:
    log = SegmentedLog.open(tmp_path / "log", segment_bytes=256)
    writer = GroupCommitWriter("m3", failures)
    durable: list[int] = []
    for seq in range(100):
        writer.submit(log, [b"%d" % seq], durable.append)
    writer.close()
    assert durable == list(range(100))
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(log, [b"late"], durable.append)
    empty = GroupCommitWriter("m4", failures)
    with pytest.raises(ValueError, match="at least one"):
        empty.submit(log, [], durable.append)
    empty.close()
    log.close()
    assert failures.calls == []


def test_a_raising_callback_stops_the_writer_instead_of_hanging_it(
    tmp_path: Path, failures: Failures, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooked: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: hooked.append(args.exc_value))
    log = SegmentedLog.open(tmp_path / "log")
    writer = GroupCommitWriter("m5", failures)

    def broken(seq: int) -> None:
        raise KeyError(seq)

    writer.submit(log, [b"x"], broken)
    writer.close()
    assert [type(error) for error in hooked] == [KeyError]
    with pytest.raises(RuntimeError, match="stopped: KeyError"):
        writer.submit(log, [b"y"], print)
    assert failures.calls == []
    log.close()


# -- failures ------------------------------------------------------------------------------


def test_a_removed_directory_fails_the_writer_once(tmp_path: Path, failures: Failures) -> None:
    directory = tmp_path / "log"
    log = SegmentedLog.open(directory, segment_bytes=64)
    writer = GroupCommitWriter("m6", failures)
    durable: list[int] = []
    first = threading.Event()

    def record(seq: int) -> None:
        durable.append(seq)
        first.set()

    writer.submit(log, [b"a" * 40], record)
    assert first.wait(TIMEOUT)
    shutil.rmtree(directory)
    writer.submit(log, [b"b" * 40, b"c" * 40], durable.append)  # needs a new segment
    writer.submit(log, [b"d"], durable.append)
    assert failures.seen.wait(TIMEOUT)
    writer.close()

    assert durable == [0]
    (failure,) = failures.calls
    assert failure.errno == errno.ENOENT
    assert "00000000000000000001.seg" in str(failure)
    with pytest.raises(StorageFailed, match="refused: the writer m6 failed earlier"):
        writer.submit(log, [b"e"], durable.append)
    log.close()


@contextlib.contextmanager
def tiny_tmpfs(directory: Path) -> Iterator[Path]:
    """A 256 KiB file system at ``directory``, or a skip where this process cannot mount one."""
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount command to make a small file system that fills up")
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill up needs root")
    directory.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def test_a_full_disk_fails_the_writer_once_and_restart_cuts_the_torn_tail(
    tmp_path: Path, failures: Failures
) -> None:
    with tiny_tmpfs(tmp_path / "disk") as disk:
        log = SegmentedLog.open(disk / "log")
        writer = GroupCommitWriter("m7", failures)
        durable: list[int] = []
        body = b"x" * 50_000
        for _ in range(8):  # 400 KB into 256 KiB
            writer.submit(log, [body], durable.append)
        assert failures.seen.wait(TIMEOUT)
        writer.close()

        (failure,) = failures.calls
        assert failure.errno == errno.ENOSPC
        assert "ENOSPC" in str(failure)
        assert "00000000000000000000.seg" in str(failure)
        assert len(durable) < 8
        with pytest.raises(StorageFailed, match="ENOSPC"):
            writer.submit(log, [body], durable.append)
        with pytest.raises(StorageFailed, match="refused"):
            log.append(b"y")
        log.close()

        with SegmentedLog.open(disk / "log") as reopened:
            kept = [bytes(record) for _, record in reopened.records()]
            assert len(durable) <= len(kept) < 8
            assert kept == [body] * len(kept)
            assert reopened.truncated_bytes > 0

        # The metadata file of a full disk fails the same way, naming its file.
        metadata_failures = Failures()
        with contextlib.suppress(OSError), (disk / "filler").open("wb", buffering=0) as filler:
            while True:
                filler.write(b"f" * 4096)
        meta_writer = GroupCommitWriter("m8", metadata_failures)
        meta_writer.submit_metadata(disk / "view", b"v" * 10_000, lambda: None)
        assert metadata_failures.seen.wait(TIMEOUT)
        meta_writer.close()
        (meta_failure,) = metadata_failures.calls
        assert meta_failure.errno == errno.ENOSPC
        assert meta_failure.filename == str(disk / "view.tmp")
