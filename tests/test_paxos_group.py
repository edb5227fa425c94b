"""Paxos shards on running members: real logs on disk, group commit, fail-stop on a full disk.

Members run on one loop over the in-process memory transport (the wire is in memory, the disk
is not): every record is appended to a real segmented log and fdatasync'ed by the member's
writer thread before the shard delivers it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest

from pyderecho import CoreConfig, Group, GroupStopped, context, every_member, layout_of, ordered
from pyderecho.core.events import Persisted
from pyderecho.core.layout import Mode
from pyderecho.runtime.persistence import EarlierRunData, read_shard_log, shard_directory
from pyderecho.testing import MemoryNetwork, MemoryTransport

FAST = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5, startup_timeout=5.0)
WAIT = 30.0


class Ledger:
    """A durable ledger: every entry keeps its version and timestamp."""

    entries: list[tuple[str, int, int, float]]

    def __init__(self) -> None:
        self.entries = []

    @ordered
    def append(self, entry: str) -> tuple[int, int, float]:
        ctx = context()
        assert ctx.version is not None
        epoch, number = ctx.version
        self.entries.append((entry, epoch, number, ctx.timestamp))
        return epoch, number, ctx.timestamp


LAYOUT = layout_of({"Ledger": every_member(Mode.PAXOS)})


class Cluster:
    def __init__(self, root: Path, data: Callable[[int], Path] | None = None) -> None:
        self.network = MemoryNetwork()
        self.root = root
        self.data = data or (lambda member: root / f"member-{member}")
        self.addresses = {i: f"mem-{i}" for i in range(8)}
        self.groups: dict[int, Group] = {}
        self.events: dict[int, list[Any]] = {}

    async def found(self, members: Sequence[int]) -> list[Group]:
        return list(await asyncio.gather(*(self.start(m, members) for m in members)))

    async def start(self, member: int, members: Sequence[int]) -> Group:
        events = self.events.setdefault(member, [])
        group = await Group.over(
            MemoryTransport(member, self.network, self.addresses[member]),
            member_id=member,
            layout=LAYOUT,
            types={"Ledger": Ledger},
            members=members,
            addresses=self.addresses,
            config=FAST,
            on_event=events.append,
            data_dir=self.data(member),
        )
        self.groups[member] = group
        return group

    async def close(self) -> None:
        for member in list(self.groups):
            await self.groups.pop(member).close()


def run(scenario: Callable[[Cluster], Coroutine[Any, Any, None]], cluster: Cluster) -> None:
    async def main() -> None:
        try:
            await asyncio.wait_for(scenario(cluster), WAIT * 2)
        finally:
            await cluster.close()

    asyncio.run(main())


def test_every_acknowledged_update_is_in_every_members_log(tmp_path: Path) -> None:
    acknowledged: list[tuple[str, tuple[int, int, float]]] = []

    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.found([0, 1, 2])
        for group in groups:
            await group.wait_ready(Ledger)

        async def writer(group: Group, count: int) -> None:
            for number in range(count):
                entry = f"{group.member_id}-{number}"
                replies = await group.subgroup(Ledger).append(entry)
                versions = set(replies.values())
                assert len(versions) == 1, "every replica gives the same version and time"
                acknowledged.append((entry, versions.pop()))

        await asyncio.gather(*(writer(g, 40) for g in groups))
        entries = [g.replica(Ledger).entries for g in groups]
        assert entries[0] == entries[1] == entries[2]
        stamps = [stamp for *_, stamp in entries[0]]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        frontiers = [e for e in cluster.events[0] if isinstance(e, Persisted)]
        assert frontiers and frontiers[-1].everywhere >= 0

    cluster = Cluster(tmp_path)
    run(scenario, cluster)
    assert len(acknowledged) == 120
    _assert_logged_everywhere(tmp_path, acknowledged)
    assert (tmp_path / "member-0" / "view").exists()


def _assert_logged_everywhere(
    root: Path, acknowledged: list[tuple[str, tuple[int, int, float]]]
) -> None:
    """Every member of the three logged the same records, in order, and each acknowledged
    update is among them, by its timestamp."""
    logs = {
        m: read_shard_log(shard_directory(root / f"member-{m}", ("Ledger", 0, 0))) for m in range(3)
    }
    assert logs[0] == logs[1] == logs[2], "every member logged the same records, in order"
    logged = {record.timestamp for record in logs[0]}
    for entry, (_, _, stamp) in acknowledged:
        assert round(stamp * 1_000_000) in logged, entry


def test_own_reply_calls_resolve_with_their_version_and_are_in_every_members_log(
    tmp_path: Path,
) -> None:
    """``replies="own"``: a call resolves once the caller's replica applied it, which in a
    Paxos shard is once every member logged it; the others send no reply."""
    acknowledged: list[tuple[str, tuple[int, int, float]]] = []

    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.found([0, 1, 2])
        for group in groups:
            await group.wait_ready(Ledger)

        async def writer(group: Group, count: int) -> None:
            ledger = group.subgroup(Ledger, replies="own")
            for number in range(count):
                entry = f"{group.member_id}-{number}"
                acknowledged.append((entry, tuple(await ledger.append(entry))))

        await asyncio.gather(*(writer(g, 30) for g in groups))
        entries = [g.replica(Ledger).entries for g in groups]
        assert entries[0] == entries[1] == entries[2]
        assert all(g.host.stats["stale_reply"] == 0 for g in groups)

    cluster = Cluster(tmp_path)
    run(scenario, cluster)
    assert len(acknowledged) == 90
    _assert_logged_everywhere(tmp_path, acknowledged)


def test_a_data_dir_that_is_not_a_whole_members_is_refused(tmp_path: Path) -> None:
    """Shard logs without the view file they were written under cannot say which group they
    belong to: the member refuses to start rather than guess."""

    async def first(cluster: Cluster) -> None:
        [group] = await cluster.found([0])
        await group.subgroup(Ledger).append("kept")

    run(first, Cluster(tmp_path))
    (tmp_path / "member-0" / "view").unlink()

    async def second(cluster: Cluster) -> None:
        with pytest.raises(EarlierRunData, match="no view file"):
            await cluster.found([0])

    run(second, Cluster(tmp_path))


def test_a_member_without_a_data_dir_stops_with_a_clear_error(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster) -> None:
        group = await Group.over(
            MemoryTransport(0, cluster.network, "mem-0"),
            member_id=0,
            layout=LAYOUT,
            types={"Ledger": Ledger},
            members=[0],
            config=FAST,
        )
        cluster.groups[0] = group
        with pytest.raises(GroupStopped, match="no data_dir"):
            await asyncio.wait_for(group.subgroup(Ledger).append("x"), WAIT)

    run(scenario, Cluster(tmp_path))


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def test_a_full_disk_stops_its_member_and_the_rest_go_on(tmp_path: Path) -> None:
    """Member 2 logs on a tiny tmpfs: when it fills, its write fails with ENOSPC, the member
    stops with an error naming the file, and the other two remove it and keep delivering."""
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "256k"):
        pytest.skip("needs root and mount to make a really full disk (a tiny tmpfs)")

    def data(member: int) -> Path:
        return small / "member-2" if member == 2 else tmp_path / f"member-{member}"

    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.found([0, 1, 2])
        for group in groups:
            await group.wait_ready(Ledger)
        payload = "x" * 4000
        with pytest.raises(GroupStopped, match=r"ENOSPC|No space"):
            for number in range(200):
                await asyncio.wait_for(
                    groups[2].subgroup(Ledger).append(f"{number}{payload}"), WAIT
                )
        reason = await groups[2].member.stopped()
        assert "storage failed" in reason and "member-2" in reason
        await groups[0].wait_for_view(lambda view: 2 not in view, WAIT)
        replies = await groups[0].subgroup(Ledger).append("after the disk filled")
        assert sorted(replies) == [0, 1], "the two survivors applied it"

    try:
        run(scenario, Cluster(tmp_path, data))
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
