"""A member's loop takes the writer's durability reports as soon as it handles anything, not
only when the hop the writer scheduled comes round, and never takes one twice or loses one.

Real files and the real writer thread (``fdatasync`` included) under a temporary directory.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pyderecho.core.events import LogRecord, PersistRequested
from pyderecho.core.layout import Mode, compute_layout, every_member, layout_of
from pyderecho.core.view import View
from pyderecho.runtime.persistence import ShardLogs

VIEW = View(0, (0, 1))


def _wait_for_report(logs: ShardLogs) -> None:
    """Block the loop's thread (as a long turn of a busy loop does) until the writer reported
    the last submission durable: its hop cannot run meanwhile."""
    deadline = time.monotonic() + 30
    while not logs.reports_waiting:
        assert time.monotonic() < deadline, "the writer never reported the records durable"
        time.sleep(0.001)


def test_reports_taken_early_are_not_reported_again_and_later_ones_still_arrive(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        hops: list[tuple[int, int, int]] = []
        taken: list[tuple[int, int, int]] = []
        failures: list[str] = []
        logs = ShardLogs(
            tmp_path, name="0", on_durable=lambda *a: hops.append(a), on_failure=failures.append
        )
        layout = compute_layout(layout_of({"Log": every_member(Mode.PAXOS)}), VIEW)
        logs.view_installed(VIEW, layout, 0, ("", ""))
        subgroup = layout.subgroup_ids[("Log", 0)]
        try:
            logs.persist(PersistRequested(0, subgroup, 0, 0, (LogRecord(0, 0, 1, 0, 1, b"first"),)))
            _wait_for_report(logs)
            logs.take_reports(lambda *a: taken.append(a))
            assert not logs.reports_waiting
            for _ in range(20):  # the hop the writer scheduled runs, and finds nothing
                await asyncio.sleep(0)

            logs.persist(
                PersistRequested(0, subgroup, 0, 2, (LogRecord(0, 2, 2, 0, 2, b"second"),))
            )
            async with asyncio.timeout(30):
                while not hops:  # nobody takes it early: the writer's hop brings it
                    await asyncio.sleep(0.001)
        finally:
            await asyncio.to_thread(logs.close)
        assert not failures, failures
        return taken, hops

    taken, hops = asyncio.run(scenario())
    assert taken == [(0, 0, 0)]
    assert hops == [(0, 0, 2)], "the first report came once, the second by the hop"
