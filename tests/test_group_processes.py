"""Group members as real processes over tcp and shm, async and blocking alike.

Three founders each make ordered calls and compare their replicas' digests; a fourth joins,
receives the state, and makes its own calls. Every wait is bounded by a generous timeout so a
loaded machine slows the test down without failing it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyderecho.cli.demo import free_ports

WORKER = Path(__file__).with_name("group_worker.py")
WAIT_S = 90.0
PUTS = 60


class Worker:
    def __init__(self, member: int, env: dict[str, str], *flags: str) -> None:
        self.member = member
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), *flags],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.records: list[dict[str, Any]] = []

    def wait_for(self, event: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"member {self.member} exited: {self.records}")
            record: dict[str, Any] = json.loads(line)
            self.records.append(record)
            if record["event"] == event:
                return record
        raise AssertionError(f"member {self.member}: no {event} in {WAIT_S}s: {self.records}")

    def finish(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(WAIT_S)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pdg-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def environments(transport: str, workdir: Path, count: int) -> list[dict[str, str]]:
    base = {key: value for key, value in os.environ.items() if not key.startswith("PYDERECHO_")} | {
        "PYDERECHO_GROUP": "objects",
        "PYDERECHO_TRANSPORT": transport,
        "PYDERECHO_SECRET": "group-process-test-secret",
        "PYDERECHO_LAYOUT": "every-member",
        "PYDERECHO_HEARTBEAT_TIMEOUT_MS": "3000",
    }
    if transport == "tcp":
        ports = free_ports(count)
        founders = ",".join(f"{i}=127.0.0.1:{ports[i]}" for i in range(3))
        return [
            base
            | {
                "PYDERECHO_MEMBER_ID": str(i),
                "PYDERECHO_LISTEN": f"127.0.0.1:{ports[i]}",
                "PYDERECHO_MEMBERS": founders,
            }
            for i in range(count)
        ]
    return [
        base
        | {
            "PYDERECHO_MEMBER_ID": str(i),
            "PYDERECHO_MEMBERS": "0,1,2",
        }
        for i in range(count)
    ]


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_members_agree_and_a_joiner_receives_the_state(
    transport: str, blocking: bool, workdir: Path
) -> None:
    envs = environments(transport, workdir, 4)
    flags = ["--puts", str(PUTS), "--shm-dir", str(workdir)] + (["--blocking"] if blocking else [])
    founders = [Worker(i, envs[i], *flags, "--expect", str(3 * PUTS)) for i in range(3)]
    workers = list(founders)
    try:
        done = [w.wait_for("done") for w in founders]
        assert {d["keys"] for d in done} == {3 * PUTS}
        assert len({d["digest"] for d in done}) == 1, done
        joiner = Worker(3, envs[3], *flags, "--join", "--expect", str(4 * PUTS))
        workers.append(joiner)
        state = joiner.wait_for("state")
        assert state["source"] == 0 and state["size"] > 3 * PUTS
        joined = joiner.wait_for("done")
        assert joined["keys"] == 4 * PUTS
        for worker in workers:
            assert not [r for r in worker.records if r["event"] == "bad_replies"]
        assert [w.finish() for w in workers] == [0, 0, 0, 0]
    finally:
        for worker in workers:
            worker.kill()
