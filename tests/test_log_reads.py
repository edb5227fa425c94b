"""A member reads a shard's log back for a member that catches up (``ShardLogs.read_updates``).

Real segment files and the real writer thread under a temporary directory. The read runs off
the loop beside the writer; it starts at the submission that holds the position asked for, so
that it reads the segments from there rather than the whole log, and it gives nothing when
the log no longer holds that position (compaction) or when the payloads pass the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from pyderecho.core.events import LogRecord, PersistRequested
from pyderecho.core.layout import Mode, compute_layout, every_member, layout_of
from pyderecho.core.view import View
from pyderecho.runtime.persistence import ShardLogs, StoredRecord
from pyderecho.storage import log as log_module

VIEW = View(0, (0, 1))
KEY = ("Log", 0, 0)
PAYLOAD = b"x" * 100
SUBMISSIONS = 10
PER_SUBMISSION = 4


def read_back(
    tmp_path: Path,
    after: tuple[int, int],
    *,
    limit_bytes: int = 1 << 20,
    snapshot_at: tuple[int, int] | None = None,
) -> tuple[list[tuple[int, int]] | None, list[str]]:
    """Log forty records (ten submissions of four, 128-byte segments: one record each), maybe
    snapshot at ``snapshot_at`` (which drops the segments before it), then read the log back
    from ``after``: the positions read, and the segment files the read opened."""
    opened: list[str] = []

    async def scenario() -> list[tuple[int, int]] | None:
        durable: list[int] = []
        failures: list[str] = []
        logs = ShardLogs(
            tmp_path,
            name="0",
            on_durable=lambda *a: durable.append(a[2]),
            on_failure=failures.append,
            segment_bytes=128,
        )
        layout = compute_layout(layout_of({"Log": every_member(Mode.PAXOS)}), VIEW)
        logs.view_installed(VIEW, layout, 0, ("", ""))
        subgroup = layout.subgroup_ids[("Log", 0)]
        try:
            for submission in range(SUBMISSIONS):
                first = submission * PER_SUBMISSION + 1
                numbers = range(first, first + PER_SUBMISSION)
                records = tuple(LogRecord(0, n, n, 0, n, PAYLOAD) for n in numbers)
                logs.persist(PersistRequested(0, subgroup, 0, numbers[-1], records))
            async with asyncio.timeout(30):
                while len(durable) < SUBMISSIONS:
                    await asyncio.sleep(0.001)
            if snapshot_at is not None:
                saved = asyncio.get_running_loop().create_future()
                logs.save_state(KEY, snapshot_at, b"state", lambda: saved.set_result(None))
                await asyncio.wait_for(saved, 30)
            result: asyncio.Future[Sequence[StoredRecord] | None] = (
                asyncio.get_running_loop().create_future()
            )
            opened.clear()  # opening the log read its first segment
            logs.read_updates(KEY, after, limit_bytes, result.set_result)
            records_read = await asyncio.wait_for(result, 30)
        finally:
            await asyncio.to_thread(logs.close)
        assert not failures, failures
        if records_read is None:
            return None
        return [(r.epoch, r.number) for r in records_read]

    real = log_module._read_file

    def reading(path: Path, size: int | None = None) -> memoryview:
        opened.append(path.name)
        return real(path, size)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(log_module, "_read_file", reading)
        positions = asyncio.run(scenario())
    return positions, opened


def test_a_read_gives_the_records_from_the_position_asked_for(tmp_path: Path) -> None:
    positions, opened = read_back(tmp_path, (0, 30))
    assert positions == [(0, n) for n in range(30, 41)]
    # Records 29-32 came in one submission: the read starts at its first (seq 28), and
    # opens no segment of the twenty-eight records before.
    assert opened and min(opened) == log_module.segment_name(28), opened


def test_a_read_of_a_position_compaction_dropped_gives_nothing(tmp_path: Path) -> None:
    positions, _ = read_back(tmp_path, (0, 10), snapshot_at=(0, 24))
    assert positions is None


def test_a_read_after_the_snapshot_still_finds_its_position(tmp_path: Path) -> None:
    positions, _ = read_back(tmp_path, (0, 26), snapshot_at=(0, 24))
    assert positions == [(0, n) for n in range(26, 41)]


def test_a_read_past_its_limit_gives_nothing(tmp_path: Path) -> None:
    positions, _ = read_back(tmp_path, (0, 30), limit_bytes=len(PAYLOAD) * 5)
    assert positions is None
    positions, _ = read_back(tmp_path / "again", (0, 30), limit_bytes=len(PAYLOAD) * 11)
    assert positions is not None and len(positions) == 11
