"""Leaves are view changes, not failures: real ``pyderecho node`` processes under load.

Before, SIGTERM to three of five members at the same moment stopped the two that stayed about
one time in four: the leavers exit as soon as their leave is final, and their closing links were
counted as suspicions ("partitioned: suspects 3 of 5 members"). A rolling replacement, the
leader included, could empty the group the same way. Each run here is repeated, in the slow
suite, because the race it checks does not lose every time.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyderecho.cli.demo import LocalGroup, Record

WAIT_S = 30.0
WORKLOAD = ("--send-count", "1000000", "--send-rate", "200")


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pdl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def delivering(group: LocalGroup, member: int) -> None:
    """``member`` delivers new messages: its stats line shows more than it showed before."""
    node = group.nodes[member]
    start = len(node.records)
    first = await node.wait_for(lambda r: r.get("event") == "stats", WAIT_S, start=start)
    total = sum(first.get("delivered", {}).values())
    await node.wait_for(
        lambda r: r.get("event") == "stats" and sum(r.get("delivered", {}).values()) > total,
        WAIT_S,
        start=start,
    )


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(4))
def test_three_of_five_told_to_leave_at_once_leave_the_two_others_running(
    attempt: int, workdir: Path
) -> None:
    async def scenario() -> None:
        async with LocalGroup(workdir, 5) as group:
            await group.found(*WORKLOAD, "--stats-interval", "0.2")
            for node in group.nodes.values():
                await node.wait_for_view(lambda v: v["epoch"] == 0, WAIT_S)
            leavers = [(attempt + k) % 5 for k in range(3)]  # the leader among them, or not
            stayers = [m for m in range(5) if m not in leavers]
            for member in leavers:
                group.nodes[member].process.send_signal(signal.SIGTERM)
            for member in leavers:
                assert await group.nodes[member].exit_status(WAIT_S) == 0
                reason = (group.nodes[member].last("stopped") or {}).get("reason")
                assert reason == "left the group", reason
            for member in stayers:
                await group.nodes[member].wait_for_view(lambda v: v["members"] == stayers, WAIT_S)
                await delivering(group, member)
                assert group.nodes[member].process.returncode is None
            assert await group.stop_all(WAIT_S) == dict.fromkeys(stayers, 0)

    asyncio.run(scenario())


def has(member: int) -> Callable[[Record], bool]:
    return lambda view: member in view["members"]


def lacks(member: int) -> Callable[[Record], bool]:
    return lambda view: member not in view["members"]


@pytest.mark.slow
def test_a_rolling_replacement_of_every_member_keeps_the_group(workdir: Path) -> None:
    """Each founder in turn, the leader first: a new process joins, then the founder is told
    to leave (SIGTERM). At the end only the new processes run, and they still deliver."""

    async def scenario() -> None:
        async with LocalGroup(workdir, 4) as group:
            await group.found(*WORKLOAD, "--stats-interval", "0.2")
            for node in group.nodes.values():
                await node.wait_for_view(lambda v: v["epoch"] == 0, WAIT_S)
            present = [0, 1, 2, 3]
            for founder in range(4):
                newcomer = 10 + founder
                contacts = [m for m in present if m != founder]
                await group.start(
                    newcomer, *WORKLOAD, "--stats-interval", "0.2", join=True, contacts=contacts
                )
                present.append(newcomer)
                for member in present:
                    await group.nodes[member].wait_for_view(has(newcomer), WAIT_S)
                group.nodes[founder].process.send_signal(signal.SIGTERM)
                assert await group.nodes[founder].exit_status(WAIT_S) == 0
                present.remove(founder)
                for member in present:
                    await group.nodes[member].wait_for_view(lacks(founder), WAIT_S)
            assert present == [10, 11, 12, 13]
            for member in present:
                await delivering(group, member)
            assert await group.stop_all(WAIT_S) == dict.fromkeys(present, 0)

    asyncio.run(scenario())
