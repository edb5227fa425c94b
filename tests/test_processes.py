"""Real member processes: ``pyderecho node`` on both transports, killed, paused, rejoined, checked.

Each test starts its processes through :class:`pyderecho.cli.demo.LocalGroup` in a short temporary
directory (the shm transport's socket paths must fit in 108 bytes) and waits on the JSON lines
they print, every wait bounded; leaving the group's context kills whatever still runs, whatever
way the test ends. Failure detection here never waits for a timeout: a killed process's links
break at once. The timeout only matters for the paused member, so it can stay long enough that
a busy CI machine does not suspect a member that is merely slow.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyderecho.cli.demo import LocalGroup, NodeProcess, Record

WAIT_S = 20.0
WORKLOAD = ("--send-count", "1000000", "--send-rate", "300", "--stats-interval", "0.1")
"""Steady traffic for as long as a test runs, half in each subgroup of ``demo_layout``."""


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pdt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pyderecho(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyderecho.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def delivered(record: Record, mode: str) -> int:
    counts: dict[str, int] = record.get("delivered", {})
    return counts.get(mode, 0)


async def traffic_flows(node: NodeProcess, beyond: Record | None = None) -> Record:
    """The first stats line showing ``node`` delivered more raw and more ordered messages than
    ``beyond`` (another stats line) did."""

    def more(record: Record) -> bool:
        return (
            record.get("event") == "stats"
            and delivered(record, "raw") > (delivered(beyond, "raw") if beyond else 0)
            and delivered(record, "ordered") > (delivered(beyond, "ordered") if beyond else 0)
        )

    return await node.wait_for(more, WAIT_S)


@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_a_killed_member_is_replaced_and_every_log_checks(transport: str, workdir: Path) -> None:
    async def scenario() -> None:
        async with LocalGroup(workdir, 4, transport=transport) as group:
            await group.found(*WORKLOAD)
            for node in group.nodes.values():
                view = await node.wait_for_view(lambda v: v["epoch"] == 0, WAIT_S)
                assert view["members"] == [0, 1, 2, 3] and view["adequate"]
                modes = {shard["mode"] for shard in view["shards"]}
                assert modes == {"raw", "ordered"}
            before = {m: await traffic_flows(node) for m, node in group.nodes.items()}

            await group.kill(3)  # under load: every member is sending
            survivors = [group.nodes[m] for m in (0, 1, 2)]
            for node in survivors:
                view = await node.wait_for_view(lambda v: 3 in v["departed"], WAIT_S)
                assert view["members"] == [0, 1, 2]
                assert view["epoch"] == 1
            for node in survivors:
                await traffic_flows(node, beyond=before[node.member])

            # The killed member comes back under its old id, as a new member that joins.
            await group.start(3, *WORKLOAD, join=True, contacts=[0, 1, 2])
            for node in group.running():
                view = await node.wait_for_view(lambda v: 3 in v["joined"], WAIT_S)
                assert view["members"] == [0, 1, 2, 3]
            await traffic_flows(group.nodes[3])

            statuses = await group.stop_all(WAIT_S)
            assert statuses == dict.fromkeys(range(4), 0)
            for node in group.nodes.values():
                assert (node.last("stopped") or {}).get("reason") == "left the group"

        # member-3.log holds the killed run (cut short) and the run that joined (clean).
        logs = sorted(str(path) for path in workdir.glob("member-*.log"))
        assert len(logs) == 4
        done = pyderecho("check", *logs)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "no violations" in done.stdout
        survivors_only = pyderecho("check", *logs[:3])
        assert survivors_only.returncode == 0, survivors_only.stdout
        assert "no violations" in survivors_only.stdout

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("transport", "workload"),
    [("tcp", ("--send-count", "1000000", "--send-rate", "100")), ("shm", ())],
    ids=["tcp-busy", "shm-idle"],
)
def test_a_paused_member_is_removed_and_exits_3(
    transport: str, workload: tuple[str, ...], workdir: Path
) -> None:
    """Idle over shm, the heartbeats are words in shared memory, read at each tick
    (tests/test_beats_in_memory.py): a stopped process stops writing them, and that alone
    (no frame is late, no link breaks) gets it removed."""

    async def scenario() -> None:
        async with LocalGroup(workdir, 3, transport=transport, heartbeat_timeout_ms=500) as group:
            await group.found(*workload)
            for node in group.nodes.values():
                await node.wait_for_view(lambda v: v["epoch"] == 0, WAIT_S)
            paused = group.nodes[2]
            paused.process.send_signal(signal.SIGSTOP)
            try:
                for node in (group.nodes[0], group.nodes[1]):
                    view = await node.wait_for_view(lambda v: 2 in v["departed"], WAIT_S)
                    assert view["members"] == [0, 1]
            finally:
                paused.process.send_signal(signal.SIGCONT)
            assert await paused.exit_status(WAIT_S) == 3
            reason = (paused.last("stopped") or {}).get("reason", "")
            assert reason.startswith(("removed", "partitioned")), reason
            assert await group.stop_all(WAIT_S) == {0: 0, 1: 0}

    asyncio.run(scenario())


def test_status_answers_only_with_the_group_secret(workdir: Path) -> None:
    async def scenario() -> None:
        async with LocalGroup(workdir, 3) as group:
            await group.found("--status-port", "0")
            ready = await group.nodes[1].wait_for(lambda r: r.get("event") == "ready", WAIT_S)
            for node in group.nodes.values():
                await node.wait_for_view(lambda v: v["epoch"] == 0, WAIT_S)
            contact = ready["status"]
            config = str(group.config)
            shown = await asyncio.to_thread(
                pyderecho, "status", "--config", config, "--member-id", "0", "--contact", contact
            )
            assert shown.returncode == 0, shown.stderr
            assert "member 1 (tcp" in shown.stdout
            assert "view 0: members [0, 1, 2]" in shown.stdout
            assert "Store[0] subgroup 1" in shown.stdout
            as_json = await asyncio.to_thread(
                pyderecho, "status", "--config", config, "--member-id", "0", "--json",
                "--contact", contact,
            )  # fmt: skip
            status = json.loads(as_json.stdout)
            assert status["member"] == 1 and status["view"]["members"] == [0, 1, 2]

            stranger = workdir / "stranger.secret"
            stranger.write_text("not the group's secret at all\n")
            refused = await asyncio.to_thread(
                pyderecho, "status", "--config", config, "--member-id", "0",
                "--secret-file", str(stranger), "--contact", contact,
            )  # fmt: skip
            assert refused.returncode == 1
            assert "view" not in refused.stdout
            assert await group.stop_all(WAIT_S) == {0: 0, 1: 0, 2: 0}

    asyncio.run(scenario())


def test_bad_settings_exit_2_before_joining(workdir: Path) -> None:
    done = pyderecho("node", "--group", "g", "--transport", "shm", "--member-id", "0")
    assert done.returncode == 2
    assert "founding member needs the first view" in done.stderr
    done = pyderecho("node", "--group", "g", "--member-id", "0", "--members", "0=127.0.0.1:1")
    assert done.returncode == 2
    assert "secret" in done.stderr


def write_log(path: Path, member: int, records: list[Record], *, end: bool = True) -> None:
    lines = [{"kind": "start", "member": member, "pid": 1, "group": "g"}, *records]
    if end:
        lines.append({"kind": "end", "reason": "left the group"})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


VIEW = {
    "kind": "view",
    "epoch": 0,
    "members": [0, 1],
    "joined": [],
    "departed": [],
    "adequate": True,
    "reason": "",
    "shards": [
        {"type": "T", "index": 0, "subgroup": 0, "shard": 0, "mode": "ordered", "members": [0, 1]}
    ],
}


def sent(index: int, sha: str) -> Record:
    return {"kind": "sent", "view": 0, "subgroup": 0, "shard": 0, "index": index, "size": 8,
            "sha": sha}  # fmt: skip


def deliver(sender: int, index: int, sha: str) -> Record:
    return {"kind": "delivered", "view": 0, "subgroup": 0, "shard": 0, "mode": "ordered",
            "sender": sender, "index": index, "size": 8, "sha": sha}  # fmt: skip


def test_check_finds_a_planted_violation(workdir: Path) -> None:
    a, b = "a" * 16, "b" * 16
    sends = [sent(0, a), sent(1, b)]
    write_log(workdir / "0.log", 0, [VIEW, *sends, deliver(0, 0, a), deliver(0, 1, b)])
    write_log(workdir / "1.log", 1, [VIEW, deliver(0, 0, a), deliver(0, 1, b)])
    good = pyderecho("check", "0.log", "1.log", cwd=workdir)
    assert good.returncode == 0, good.stdout
    assert good.stdout.strip() == "no violations: 4 deliveries at 2 members"

    # Member 1 delivers member 0's two messages the other way round.
    write_log(workdir / "1.log", 1, [VIEW, deliver(0, 1, b), deliver(0, 0, a)])
    bad = pyderecho("check", "0.log", "1.log", cwd=workdir)
    assert bad.returncode == 1
    assert "order: member 1, epoch 0 subgroup 0 shard 0" in bad.stdout

    # A payload that differs from what was sent.
    write_log(workdir / "1.log", 1, [VIEW, deliver(0, 0, a), deliver(0, 1, "c" * 16)])
    bad = pyderecho("check", "0.log", "1.log", cwd=workdir)
    assert bad.returncode == 1
    assert "digest: member 1" in bad.stdout


def test_check_reads_a_killed_run_and_refuses_garbage(workdir: Path) -> None:
    a = "a" * 16
    # Member 0 died: its log has no end, its send was never flushed, its last line is cut.
    write_log(workdir / "0.log", 0, [VIEW, deliver(0, 0, a)], end=False)
    with (workdir / "0.log").open("a") as log:
        log.write('{"kind": "delivered", "view": 0, "sub')
    write_log(workdir / "1.log", 1, [VIEW, deliver(0, 0, a)])
    done = pyderecho("check", "0.log", "1.log", cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 sends taken from deliveries" in done.stdout

    # The same cut line in a run that ended cleanly is not a kill's doing.
    lines = (workdir / "1.log").read_text().splitlines()
    lines.insert(2, '{"kind": "delivered", "view": 0, "sub')
    (workdir / "1.log").write_text("\n".join(lines) + "\n")
    refused = pyderecho("check", "0.log", "1.log", cwd=workdir)
    assert refused.returncode == 2
    assert "1.log:3" in refused.stderr
