"""Total restart: every member stops, then the group comes back from its logs, losing nothing.

Members run over the in-process memory transport with real data directories. A "crash" closes
every member without a leave (the processes test kills them for real); the restart starts the
same members on the same directories: each rebuilds its replicas from snapshot and log, the
members agree on the newest view their logs hold and found the one after it, and the shard's
members compare how far they got, the furthest giving its state to the others.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import tracemalloc
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

import pyderecho.storage.log as storage_log
from pyderecho import (
    CoreConfig,
    Group,
    View,
    ViewInstalled,
    context,
    every_member,
    layout_of,
    ordered,
    query,
)
from pyderecho.core.layout import Mode
from pyderecho.replicated.events import StateReceived
from pyderecho.replicated.methods import type_spec
from pyderecho.replicated.recovery import Replay
from pyderecho.replicated.state import snapshot
from pyderecho.runtime.persistence import (
    CommitRecord,
    CutFile,
    SnapshotFile,
    ViewRecord,
    load_recovery,
    shard_directory,
)
from pyderecho.storage import SegmentedLog, read_metadata, write_atomic
from pyderecho.testing import MemoryNetwork, MemoryTransport

FAST = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5, startup_timeout=2.0)
WAIT = 30.0
KEY = ("Ledger", 0, 0)


class Ledger:
    entries: list[str]
    versions: list[tuple[int, int]]

    def __init__(self) -> None:
        self.entries = []
        self.versions = []

    @ordered
    def append(self, entry: str) -> tuple[int, int]:
        ctx = context()
        assert ctx.version is not None
        self.entries.append(entry)
        self.versions.append(ctx.version)
        return ctx.version

    @query
    def size(self) -> int:
        return len(self.entries)


LAYOUT = layout_of({"Ledger": every_member(Mode.PAXOS)})


class Cluster:
    def __init__(
        self, root: Path, types: dict[str, type[Any]] | None = None, **options: Any
    ) -> None:
        self.root = root
        self.types = types or {"Ledger": Ledger}
        self.options = options
        self.network = MemoryNetwork()
        self.addresses = {i: f"mem-{i}" for i in range(8)}
        self.groups: dict[int, Group] = {}
        self.events: dict[int, list[Any]] = {}

    def data(self, member: int) -> Path:
        return self.root / f"member-{member}"

    async def start(
        self, member: int, members: Sequence[int] | None, contacts: Sequence[int] = ()
    ) -> Group:
        events = self.events.setdefault(member, [])
        group = await Group.over(
            MemoryTransport(member, self.network, self.addresses[member]),
            member_id=member,
            layout=LAYOUT,
            types=self.types,
            members=members,
            contacts=contacts,
            addresses=self.addresses,
            config=FAST,
            on_event=events.append,
            data_dir=self.data(member),
            **self.options,
        )
        self.groups[member] = group
        return group

    async def start_all(self, members: Sequence[int]) -> list[Group]:
        return list(await asyncio.gather(*(self.start(m, members) for m in members)))

    async def crash_all(self) -> None:
        """Every member stops at once, without leaving."""
        await asyncio.gather(*(group.close() for group in self.groups.values()))
        self.groups.clear()
        self.network = MemoryNetwork()


def run(
    scenario: Callable[[Cluster], Coroutine[Any, Any, None]], root: Path, **options: Any
) -> None:
    cluster = Cluster(root, **options)

    async def main() -> None:
        try:
            await asyncio.wait_for(scenario(cluster), WAIT * 3)
        finally:
            await cluster.crash_all()

    asyncio.run(main())


async def write(groups: Sequence[Group], count: int, tag: str) -> dict[str, tuple[int, int]]:
    """Every group appends ``count`` entries; returns each acknowledged entry's version."""
    acknowledged: dict[str, tuple[int, int]] = {}

    async def writer(group: Group) -> None:
        for number in range(count):
            entry = f"{tag}-{group.member_id}-{number}"
            replies = await group.subgroup(Ledger).append(entry)
            versions = set(replies.values())
            assert len(versions) == 1
            acknowledged[entry] = tuple(versions.pop())

    await asyncio.gather(*(writer(group) for group in groups))
    return acknowledged


def check_replicas(groups: Sequence[Group], acknowledged: dict[str, tuple[int, int]]) -> Ledger:
    replicas = [group.replica(Ledger) for group in groups]
    first = replicas[0]
    for replica in replicas[1:]:
        assert replica.entries == first.entries and replica.versions == first.versions
    where = dict(zip(first.entries, first.versions, strict=True))
    for entry, version in acknowledged.items():
        assert where.get(entry) == tuple(version), (entry, version)
    assert isinstance(first, Ledger)
    return first


def test_the_whole_group_restarts_from_its_logs_with_nothing_lost(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.start_all([0, 1, 2])
        before = await write(groups, 20, "before")
        epoch = groups[0].view.epoch
        await cluster.crash_all()

        groups = await cluster.start_all([0, 1, 2])
        for group in groups:
            await group.wait_ready(Ledger, timeout=WAIT)
            assert group.view.epoch == epoch + 1, "the restart founds the next view"
        check_replicas(groups, before)
        after = await write(groups, 5, "after")
        ledger = check_replicas(groups, before | after)
        assert len(ledger.entries) == 75
        assert all(v[0] == epoch + 1 for e, v in after.items()), "new versions, new epoch"

    run(scenario, tmp_path)


def drop_last_records(directory: Path, count: int) -> None:
    """Cut the last ``count`` whole records off a shard's log: a member that was behind."""
    with SegmentedLog.open(directory) as log:
        ends = []
        offset = 0
        for _, body in log.records():
            offset += 12 + len(body)
            ends.append(offset)
    [segment] = sorted(directory.glob("*.seg"))
    os.truncate(segment, ends[-count - 1])


def test_a_member_whose_log_is_behind_gets_the_longest_state(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.start_all([0, 1, 2])
        before = await write(groups, 10, "before")
        await cluster.crash_all()
        drop_last_records(shard_directory(cluster.data(0), KEY), 7)
        recovery = load_recovery(cluster.data(0))
        assert recovery is not None and recovery.shards[KEY].records == 23
        recovery.close()

        groups = await cluster.start_all([0, 1, 2])
        for group in groups:
            await group.wait_ready(Ledger, timeout=WAIT)
        check_replicas(groups, before)
        received = [e for e in cluster.events[0] if isinstance(e, StateReceived)]
        assert received and received[0].source in (1, 2), "member 0 took a longer state"
        after = await write(groups, 3, "after")
        check_replicas(groups, before | after)

    run(scenario, tmp_path)
    # Member 0 saved what it received: its own disk alone now rebuilds the whole ledger.
    recovery = load_recovery(tmp_path / "member-0")
    assert recovery is not None
    recovery.close()
    snapshot = recovery.shards[KEY].snapshot
    assert (snapshot.epoch, snapshot.count) >= (0, 30)


def test_a_majority_restarts_without_the_rest(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.start_all([0, 1, 2])
        before = await write(groups, 10, "before")
        await cluster.crash_all()

        groups = list(await asyncio.gather(*(cluster.start(m, [0, 1, 2]) for m in (1, 2))))
        for group in groups:
            await group.wait_for_view(lambda view: 0 not in view, WAIT)
            await group.wait_ready(Ledger, timeout=WAIT)
        check_replicas(groups, before)
        after = await write(groups, 3, "after")
        check_replicas(groups, before | after)

    run(scenario, tmp_path)


def test_a_member_that_joined_by_state_transfer_restarts_from_its_snapshot(
    tmp_path: Path,
) -> None:
    async def scenario(cluster: Cluster) -> None:
        founders = await cluster.start_all([0, 1])
        early = await write(founders, 10, "early")
        joiner = await cluster.start(2, None, contacts=[0, 1])
        await joiner.wait_ready(Ledger, timeout=WAIT)
        groups = [*founders, joiner]
        late = await write(groups, 5, "late")
        await cluster.crash_all()
        recovery = load_recovery(cluster.data(2))
        assert recovery is not None
        recovery.close()
        snapshot = recovery.shards[KEY].snapshot
        assert snapshot.count >= 0 and len(snapshot.state) > 0, "the joiner saved its state"

        groups = await cluster.start_all([0, 1, 2])
        for group in groups:
            await group.wait_ready(Ledger, timeout=WAIT)
        check_replicas(groups, early | late)

    run(scenario, tmp_path)


def replay_ledger(member: int, key: tuple[str, int, int], state: SnapshotFile) -> Replay:
    """A ledger replica of ``member`` rebuilt from ``state`` as a restart's replay starts."""
    position = (state.epoch, state.count)
    spec = type_spec("Ledger", Ledger)
    return Replay.from_snapshot(spec, key, member, state=state.state, position=position)


def test_a_cleanup_marks_each_log_with_its_cut_before_it_delivers(tmp_path: Path) -> None:
    """The change that admits a joiner cleans up view 0: each founder logs what the cut keeps
    and then, in a file of its own, that its log holds view 0's cut; the cleanup applies only
    once both did. A member that is later the only one of its shard back after a total crash
    is trusted with the shard only with that mark (docs/persistence.md)."""

    async def scenario(cluster: Cluster) -> None:
        founders = await cluster.start_all([0, 1])
        await write(founders, 5, "early")
        for member in (0, 1):
            assert read_metadata(shard_directory(cluster.data(member), KEY) / "cut") is None
        joiner = await cluster.start(2, None, contacts=[0, 1])
        await joiner.wait_ready(Ledger, timeout=WAIT)
        await write([*founders, joiner], 2, "late")
        await cluster.crash_all()
        for member in (0, 1):
            mark = read_metadata(shard_directory(cluster.data(member), KEY) / "cut")
            assert mark is not None and msgspec.msgpack.decode(mark, type=CutFile).epoch == 0
            recovery = load_recovery(
                cluster.data(member),
                replay_for=functools.partial(replay_ledger, member),
            )
            assert recovery is not None
            recovery.close()
            rebuilt = recovery.shards[KEY].rebuilt
            assert rebuilt is not None and rebuilt.cut_epoch == 0 and rebuilt.doubted == ()
        assert read_metadata(shard_directory(cluster.data(2), KEY) / "cut") is None

    run(scenario, tmp_path)


def test_snapshots_cut_the_log_and_the_restart_replays_only_the_rest(tmp_path: Path) -> None:
    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.start_all([0, 1, 2])
        before = await write(groups, 40, "before")
        await cluster.crash_all()
        for member in range(3):
            recovery = load_recovery(cluster.data(member))
            assert recovery is not None
            recovery.close()
            shard = recovery.shards[KEY]
            assert (shard.snapshot.epoch, shard.snapshot.count) >= (0, 100)
            assert shard.records < 60, "segments before the snapshot were dropped"
            directory = shard_directory(cluster.data(member), KEY)
            assert min(int(p.stem) for p in directory.glob("*.seg")) > 0

        groups = await cluster.start_all([0, 1, 2])
        for group in groups:
            await group.wait_ready(Ledger, timeout=WAIT)
        check_replicas(groups, before)

    run(scenario, tmp_path, snapshot_every=25, segment_bytes=2048)


def test_a_restart_reads_each_segment_once_and_appends_to_the_log_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recovering a log reads and checks every record, and the restart decodes them as that
    read goes; the member then appends to the log it recovered rather than open it again. So
    a restart reads each segment once (it used to read each three times: to recover the log,
    to read its records, and to open it again for appending: 4 of the 6 s a restart from 1 GiB
    of log took, README "Restart after a total crash"). A second total restart finds the
    updates made after the first, appended to the log handed over."""
    reads: Counter[Path] = Counter()
    read_file = storage_log._read_file

    def counted(path: Path, size: int | None = None) -> memoryview:
        reads[path] += 1
        return read_file(path, size)

    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.start_all([0, 1, 2])
        before = await write(groups, 20, "before")
        await cluster.crash_all()

        monkeypatch.setattr(storage_log, "_read_file", counted)
        groups = await cluster.start_all([0, 1, 2])
        for group in groups:
            await group.wait_ready(Ledger, timeout=WAIT)
        after = await write(groups, 5, "after")
        check_replicas(groups, before | after)
        for member in range(3):
            read = [n for path, n in reads.items() if path.is_relative_to(cluster.data(member))]
            assert len(read) > 3, "the log should span several segments"
            assert read == [1] * len(read), f"member {member} read a segment more than once"
        monkeypatch.undo()
        await cluster.crash_all()

        groups = await cluster.start_all([0, 1, 2])
        for group in groups:
            await group.wait_ready(Ledger, timeout=WAIT)
        assert len(check_replicas(groups, before | after).entries) == 75

    run(scenario, tmp_path, segment_bytes=512)


def test_a_restart_holds_one_segment_of_a_log_at_a_time(tmp_path: Path) -> None:
    """A restart applies each record to the replica as the log's recovery reads it, and
    keeps none: what it holds of a log at once is a segment, not the log (it used to hold
    every record until all were read, 1,065 MiB of memory for 1 GiB of log, README "Restart
    after a total crash"). Traced with tracemalloc while the log is loaded and checked."""
    segment_bytes = 8192

    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.start_all([0, 1, 2])
        for number in range(40):
            await asyncio.gather(
                *(g.subgroup(Ledger).append(f"{number}-" + "x" * 3000) for g in groups)
            )
        await cluster.crash_all()

    run(scenario, tmp_path, segment_bytes=segment_bytes)
    directory = shard_directory(tmp_path / "member-0", KEY)
    log_bytes = sum(p.stat().st_size for p in directory.glob("*.seg"))
    assert log_bytes > 40 * segment_bytes, "the log should span many segments"
    tracemalloc.start()
    try:
        recovery = load_recovery(tmp_path / "member-0", segment_bytes=segment_bytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert recovery is not None
    recovery.close()
    assert recovery.shards[KEY].records == 120
    assert recovery.shards[KEY].payload_bytes > 120 * 3000
    assert peak < log_bytes / 4, f"held {peak} bytes at once reading a {log_bytes}-byte log"


class LoopLedger(Ledger):
    """Counts the calls it applies with no event loop running in their thread."""

    off_the_loop = 0

    @ordered
    def append(self, entry: str) -> tuple[int, int]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            LoopLedger.off_the_loop += 1
        return super().append(entry)


def test_a_restart_applies_the_logged_calls_on_the_event_loop(tmp_path: Path) -> None:
    """The log is read and checked on a thread, but the calls it holds are applied on the
    event loop, where delivery applies them: an ordered method may use the loop (to wake a
    waiter, say), and a replay on the reading thread would find none."""
    LoopLedger.off_the_loop = 0

    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.start_all([0, 1, 2])
        before = [f"{g.member_id}-{n}" for n in range(10) for g in groups]
        for entry in before:
            await groups[int(entry[0])].subgroup(LoopLedger).append(entry)
        await cluster.crash_all()
        assert LoopLedger.off_the_loop == 0

        groups = await cluster.start_all([0, 1, 2])
        for group in groups:
            await group.wait_ready(LoopLedger, timeout=WAIT)
            replica = group.replica(LoopLedger)
            assert sorted(replica.entries) == sorted(before), "every logged call replayed"

    run(scenario, tmp_path, types={"Ledger": LoopLedger})
    assert LoopLedger.off_the_loop == 0, "the restart applied logged calls off the loop"


def test_a_snapshot_that_does_not_restore_stops_the_restart(tmp_path: Path) -> None:
    """A snapshot the class cannot restore (here bytes that are no state of it) fails the
    member's start with the class's error, raised where the restart rebuilds the replica on
    the event loop and handed back to the thread reading the log: the start neither hangs
    nor goes on without the replica."""

    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.start_all([0, 1, 2])
        await write(groups, 3, "before")
        await cluster.crash_all()
        directory = shard_directory(cluster.data(0), KEY)
        write_atomic(directory / "snapshot", msgspec.msgpack.encode(SnapshotFile(0, 0, b"\xc1")))
        with pytest.raises(msgspec.DecodeError):
            await asyncio.wait_for(cluster.start(0, [0, 1, 2]), WAIT)

    run(scenario, tmp_path)


def test_a_restart_without_a_majority_waits_and_says_for_whom(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.start_all([0, 1, 2])
        before = await write(groups, 5, "before")
        await cluster.crash_all()

        with caplog.at_level(logging.WARNING, logger="pyderecho.runtime.member"):
            alone = await cluster.start(0, [0, 1, 2])
            deadline = asyncio.get_running_loop().time() + WAIT
            while not alone.member.node.restart_waits_for:
                assert asyncio.get_running_loop().time() < deadline, "it never said"
                await asyncio.sleep(0.01)
        assert "a majority of view" in alone.member.node.restart_waits_for
        assert any("waits for a majority of view" in r.getMessage() for r in caplog.records)
        others = await asyncio.gather(*(cluster.start(m, [0, 1, 2]) for m in (1, 2)))
        groups = [alone, *others]
        for group in groups:
            await group.wait_ready(Ledger, timeout=WAIT)
        assert not alone.member.node.restart_waits_for
        check_replicas(groups, before)

    run(scenario, tmp_path)


def test_a_member_whose_view_file_is_older_joins_the_view_the_others_found(
    tmp_path: Path,
) -> None:
    """Member 0's view file is from before member 2 joined (as if the crash came before the
    newer file was written): the restart agreement tells it of the newer view, and all three
    found the same view after it rather than two different ones."""

    async def scenario(cluster: Cluster) -> None:
        founders = await cluster.start_all([0, 1])
        joiner = await cluster.start(2, None, contacts=[0, 1])
        await joiner.wait_ready(Ledger, timeout=WAIT)
        before = await write([*founders, joiner], 5, "before")
        logged = {g.view.epoch for g in [*founders, joiner]}
        await cluster.crash_all()
        stale = ViewRecord(0, (0, 1), ("mem-0", "mem-1"))
        write_atomic(cluster.data(0) / "view", msgspec.msgpack.encode(stale))

        groups = await cluster.start_all([0, 1, 2])
        for group in groups:
            await group.wait_ready(Ledger, timeout=WAIT)
        assert {g.view for g in groups} == {groups[0].view}, "one view, founded by all three"
        assert groups[0].view.epoch == max(logged) + 1
        assert groups[0].view.members == (0, 1, 2)
        check_replicas(groups, before)

    run(scenario, tmp_path)


def test_a_member_removed_before_the_total_crash_rejoins_with_the_state(tmp_path: Path) -> None:
    """Member 2 failed alone and the group went on without it; then everyone crashed. At the
    restart its logs still name it, but the others' newer view excludes it: rather than found
    a view of its own, it joins the view the others found, and takes the state they kept
    (its own log stops where it failed)."""

    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.start_all([0, 1, 2])
        early = await write(groups, 5, "early")
        await cluster.groups.pop(2).close()
        for group in groups[:2]:
            await group.wait_for_view(lambda view: 2 not in view, WAIT)
        late = await write(groups[:2], 5, "late")
        await cluster.crash_all()

        groups = await cluster.start_all([0, 1, 2])
        for group in groups:
            await group.wait_for_view(lambda view: view.members == (0, 1, 2), WAIT)
            await group.wait_ready(Ledger, timeout=WAIT)
        assert 2 in groups[0].view.joined, "member 2 came back as a joiner"
        assert groups[2].member.node.rejoined
        check_replicas(groups, early | late)
        more = await write(groups, 3, "more")
        check_replicas(groups, early | late | more)

    run(scenario, tmp_path)


@pytest.mark.parametrize(
    ("options", "source"),
    [
        ({"catch_up_bytes": 1 << 20}, "memory"),
        ({"catch_up_bytes": 0}, "log"),
        ({"catch_up_bytes": 0, "snapshot_every": 4, "segment_bytes": 512}, "state"),
    ],
    ids=["kept in memory", "read back from the log", "log compacted"],
)
def test_a_member_back_while_the_group_runs_catches_up_from_its_own_log(
    tmp_path: Path, options: dict[str, int], source: str
) -> None:
    """Member 2 crashes, and the group removes it and goes on. Started again on its data
    directory, it rebuilds its replica from its log and joins. It is sent only the updates
    it lacks (``StateReceived.caught_up``), not the ledger: from the old members' memory, or,
    with none kept there, read back from the log on their disks (real segment files). With
    none kept and the logs compacted past its state (a snapshot every four updates, 512-byte
    segments), it is sent the whole state. Either way it then applies calls like the others,
    and restarts after a total crash from the snapshot it saved, with nothing lost."""

    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.start_all([0, 1, 2])
        early = await write(groups, 30, "early")
        await cluster.groups.pop(2).close()
        for group in groups[:2]:
            await group.wait_for_view(lambda view: 2 not in view, WAIT)
        late = await write(groups[:2], 5, "late")
        if source == "state":
            # The snapshots of the late calls cut the logs on the writer threads: once the
            # segment with member 2's last update (the ninetieth record) is gone.
            for member in (0, 1):
                directory = shard_directory(cluster.data(member), KEY)
                while min(int(p.name.split(".")[0]) for p in directory.glob("*.seg")) < 90:
                    await asyncio.sleep(0.01)

        back = await cluster.start(2, [0, 1, 2])
        await back.wait_ready(Ledger, timeout=WAIT)
        [received] = [e for e in cluster.events[2] if isinstance(e, StateReceived)]
        assert received.caught_up == (source != "state")
        stats = groups[0].host.stats + groups[1].host.stats
        assert stats["catch_up_log_reads"] == (source != "memory")
        assert stats["catch_up_from_log"] == (source == "log")
        assert stats["catch_up_not_kept"] == (source == "state"), "the log lacked the update"
        groups = [*groups[:2], back]
        ledger = check_replicas(groups, early | late)
        if received.caught_up:
            whole = snapshot(type_spec("Ledger", Ledger), ledger)
            assert received.size < len(whole) / 2, "the ten updates, not the whole ledger"
        more = await write(groups, 3, "more")
        check_replicas(groups, early | late | more)
        await cluster.crash_all()

        groups = await cluster.start_all([0, 1, 2])
        for group in groups:
            await group.wait_ready(Ledger, timeout=WAIT)
        check_replicas(groups, early | late | more)

    run(scenario, tmp_path, **options)


def test_a_restart_follows_a_commit_that_a_majority_logged(tmp_path: Path) -> None:
    """Members 0 and 1 logged a commit of a view without member 2 and crashed before
    installing it. That commit may have become final and been installed somewhere (a
    majority of the view logged it, which is what a final needs), so the restart takes it
    as the newest view: 0 and 1 found the view after it, and member 2, whom it excludes,
    hears of it from whichever of them answers first and joins that view anew."""

    async def scenario(cluster: Cluster) -> None:
        groups = await cluster.start_all([0, 1, 2])
        before = await write(groups, 5, "before")
        epoch = groups[0].view.epoch
        await cluster.crash_all()
        commit = CommitRecord(epoch + 1, (0, 1), ("mem-0", "mem-1"), failed=(2,))
        for member in (0, 1):
            write_atomic(cluster.data(member) / "commit", msgspec.msgpack.encode(commit))

        groups = await cluster.start_all([0, 1, 2])
        for group in groups:
            await group.wait_for_view(lambda view: view.members == (0, 1, 2), WAIT)
            await group.wait_ready(Ledger, timeout=WAIT)
        views = [e.view for e in cluster.events[0] if isinstance(e, ViewInstalled)]
        founded = next(view for view in views if view.epoch > epoch)
        assert founded == View(epoch + 2, (0, 1)), "0 and 1 founded the view after the commit"
        assert "[0, 1]" in groups[2].member.node.rejoined
        check_replicas(groups, before)

    run(scenario, tmp_path)
