"""Paxos shards on real processes: kill every member at once, then read what the disks kept.

Five members over tcp (and shm) append to a durable ledger under load, each printing every
acknowledged call (the client-side ledger). The test SIGKILLs all of them together, then opens
each member's log as a restart would (a torn tail is truncated, a corrupt middle refused) and
checks that every acknowledged update is in every member's log, at the same version with the
same timestamp, and that the logs agree record for record. A second variant also tears one
member's last record before reading it back.

Then the same members start again on the same directories: the group restarts from its logs,
and every member's recovered ledger holds every acknowledged update at its version, before
the members go on appending.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyderecho.cli.demo import free_ports
from pyderecho.runtime.persistence import StoredRecord, read_shard_log, shard_directory
from pyderecho.storage import SegmentedLog

WORKER = Path(__file__).with_name("paxos_worker.py")
MEMBERS = 5
WAIT_S = 120.0
ACKS_PER_MEMBER = 40


class Worker:
    """A member process whose output is read on a thread: a member that prints an ack per
    call must never block on a full pipe."""

    def __init__(self, member: int, env: dict[str, str], flags: list[str]) -> None:
        self.member = member
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), *flags],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.records: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.records.append(json.loads(line))

    def acks(self) -> list[dict[str, Any]]:
        return [r for r in list(self.records) if r["event"] == "ack"]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._reader.join(10)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pdp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def environments(transport: str, workdir: Path) -> list[dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYDERECHO_")} | {
        "PYDERECHO_GROUP": "ledger",
        "PYDERECHO_TRANSPORT": transport,
        "PYDERECHO_SECRET": "paxos-process-test-secret",
        "PYDERECHO_HEARTBEAT_TIMEOUT_MS": "5000",
    }
    envs = []
    ports = free_ports(MEMBERS) if transport == "tcp" else []
    for i in range(MEMBERS):
        env = base | {
            "PYDERECHO_MEMBER_ID": str(i),
            "PYDERECHO_DATA_DIR": str(workdir / f"member-{i}"),
        }
        if transport == "tcp":
            env["PYDERECHO_LISTEN"] = f"127.0.0.1:{ports[i]}"
            env["PYDERECHO_MEMBERS"] = ",".join(f"{m}=127.0.0.1:{ports[m]}" for m in range(MEMBERS))
        else:
            env["PYDERECHO_MEMBERS"] = ",".join(str(m) for m in range(MEMBERS))
        envs.append(env)
    return envs


def run_and_kill_all(
    transport: str, workdir: Path, *extra: str, envs: list[dict[str, str]] | None = None
) -> list[Worker]:
    """Start the group, wait until every member has its acknowledgements, kill them all."""
    envs = envs or environments(transport, workdir)
    flags = ["--members", str(MEMBERS), "--shm-dir", str(workdir), *extra]
    workers = [Worker(i, envs[i], flags) for i in range(MEMBERS)]
    try:
        deadline = time.monotonic() + WAIT_S
        while any(len(w.acks()) < ACKS_PER_MEMBER for w in workers):
            exited = [w.member for w in workers if w.process.poll() is not None]
            assert not exited, f"members {exited} exited: {[w.records[-3:] for w in workers]}"
            assert time.monotonic() < deadline, [len(w.acks()) for w in workers]
            time.sleep(0.05)
    finally:
        # Every member at once, mid-load: calls are in flight and logs are being written.
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGKILL)
        for worker in workers:
            worker.kill()
    return workers


def ledger_log(workdir: Path, member: int) -> Path:
    return shard_directory(workdir / f"member-{member}", ("Ledger", 0, 0))


def check_ledger(workers: list[Worker], logs: dict[int, list[StoredRecord]], torn: int) -> None:
    """Every acknowledged update is in every member's log (the torn member may miss what its
    cut removed), at its version, with its timestamp; the logs agree record for record."""
    longest = max(logs.values(), key=len)
    for member, records in logs.items():
        assert records == longest[: len(records)], f"member {member}'s log diverges"
    for worker in workers:
        assert not [r for r in worker.records if r["event"] == "bad_replies"]
        for ack in worker.acks():
            stamp = round(ack["stamp"] * 1_000_000)
            for member, records in logs.items():
                by_position = [r for r in records if r.epoch == ack["epoch"]]
                position = ack["position"] - 1
                if member == torn and position >= len(by_position):
                    continue
                record = by_position[position]
                assert record.timestamp == stamp, (member, ack)
                assert ack["entry"].encode() in bytes(record.payload), (member, ack)


@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_every_acknowledged_update_survives_killing_every_member(
    transport: str, workdir: Path
) -> None:
    workers = run_and_kill_all(transport, workdir)
    logs = {m: read_shard_log(ledger_log(workdir, m)) for m in range(MEMBERS)}
    assert sum(len(w.acks()) for w in workers) >= MEMBERS * ACKS_PER_MEMBER
    check_ledger(workers, logs, torn=-1)


def tear_last_record(directory: Path) -> int:
    """Cut the last segment of a log in the middle of its last record; returns the bytes cut."""
    last = sorted(directory.glob("*.seg"))[-1]
    size = last.stat().st_size
    with SegmentedLog.open(directory) as log:
        bodies = [len(body) for _, body in log.records()]
    cut = bodies[-1] // 2 + 6
    os.truncate(last, size - cut)
    return cut


@pytest.mark.parametrize("transport", ["tcp"])
def test_a_torn_last_record_is_truncated_and_the_others_still_hold_it(
    transport: str, workdir: Path
) -> None:
    workers = run_and_kill_all(transport, workdir)
    before = len(read_shard_log(ledger_log(workdir, 0)))
    tear_last_record(ledger_log(workdir, 0))
    with SegmentedLog.open(ledger_log(workdir, 0)) as log:
        assert log.truncated_bytes > 0, "the torn record was found and cut off"
    logs = {m: read_shard_log(ledger_log(workdir, m)) for m in range(MEMBERS)}
    assert len(logs[0]) == before - 1
    check_ledger(workers, logs, torn=0)


def test_a_member_that_acknowledges_without_logging_is_caught(workdir: Path) -> None:
    """The planted bug: member 3 reports its records durable without writing them, so the
    group delivers and acknowledges what its log lacks: the ledger check must say so."""
    workers = run_and_kill_all("tcp", workdir, "--planted-unlogged-member", "3")
    logs = {m: read_shard_log(ledger_log(workdir, m)) for m in range(MEMBERS)}
    with pytest.raises((AssertionError, IndexError)):
        check_ledger(workers, logs, torn=-1)


@pytest.mark.slow
@pytest.mark.parametrize("round_number", range(5))
@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_killing_every_member_repeatedly(transport: str, round_number: int, workdir: Path) -> None:
    workers = run_and_kill_all(transport, workdir)
    logs = {m: read_shard_log(ledger_log(workdir, m)) for m in range(MEMBERS)}
    check_ledger(workers, logs, torn=-1)


def ready_records(workers: list[Worker]) -> list[dict[str, Any]]:
    return [next(r for r in w.records if r["event"] == "ready") for w in workers]


def check_restart(first: list[Worker], second: list[Worker]) -> None:
    """Every member recovered the same ledger, holding every update the first run
    acknowledged at the version it was acknowledged with, and the group went on."""
    ready = ready_records(second)
    restart_epoch = min(record["epoch"] for record in ready)
    # What each member recovered: its ledger as it became ready, less what the restarted
    # group appended since (others may already be writing).
    ledgers = [
        [tuple(entry) for entry in record["entries"] if entry[1] < restart_epoch]
        for record in ready
    ]
    assert all(ledger == ledgers[0] for ledger in ledgers), "replicas differ after restart"
    recovered = {entry: (epoch, number) for entry, epoch, number in ledgers[0]}
    acknowledged = [ack for worker in first for ack in worker.acks()]
    for ack in acknowledged:
        assert recovered.get(ack["entry"]) == (ack["epoch"], ack["position"]), ack
    epochs = {record["epoch"] for record in ready}
    assert min(epochs) > max(ack["epoch"] for ack in acknowledged), "the restart is a new view"
    assert all(len(w.acks()) >= ACKS_PER_MEMBER for w in second), "the group went on"


def wait_until(ready: Any, workers: list[Worker], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ready():
        exited = [w.member for w in workers if w.process.poll() is not None]
        assert not exited, f"members {exited} exited: {[w.records[-3:] for w in workers]}"
        assert time.monotonic() < deadline, f"{what}: {[w.records[-2:] for w in workers]}"
        time.sleep(0.05)


@pytest.mark.parametrize("kept", ["memory", "log"])
@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_a_member_killed_under_load_comes_back_and_catches_up(
    transport: str, kept: str, workdir: Path
) -> None:
    """Member 4 is SIGKILLed under load; the others remove it and go on appending. Started
    again on its data directory, it rebuilds its ledger from its log and joins, and is sent
    only the updates it lacks (``caught_up``): from the others' memory, or, with none kept
    there (``catch_up_bytes = 0``), read back from their logs on disk. Its ledger then holds
    every update any member had acknowledged before it joined, at the version it was
    acknowledged with, and its replies agree with the others' (the worker reports any that
    differ).

    Read back from a log, updates are sent only when they cost less than the state, and a
    ledger entry is a quarter of its update's bytes: in that case the ledger is made longer
    first, and the load held still while the member restarts, so that it lacks a small part."""
    envs = environments(transport, workdir)
    flags = ["--members", str(MEMBERS), "--shm-dir", str(workdir)]
    load, pause = ACKS_PER_MEMBER, workdir / "pause"
    if kept == "log":
        envs = [env | {"PYDERECHO_CATCH_UP_BYTES": "0"} for env in envs]
        flags += ["--pause-file", str(pause)]
        load *= 16
    workers = [Worker(i, envs[i], flags) for i in range(MEMBERS)]
    running = list(workers)
    try:
        wait_until(lambda: all(len(w.acks()) >= load for w in workers), workers, "load")
        workers[-1].kill()
        before = [len(w.acks()) for w in workers[:-1]]
        others = workers[:-1]
        wait_until(
            lambda: all(
                len(w.acks()) >= n + ACKS_PER_MEMBER for w, n in zip(others, before, strict=True)
            ),
            others,
            "the others went on",
        )
        if kept == "log":
            pause.touch()
        back = Worker(MEMBERS - 1, envs[-1], flags)
        running = [*others, back]
        if kept == "log":
            wait_until(
                lambda: any(r["event"] == "ready" for r in list(back.records)),
                running,
                "the member back ready",
            )
            pause.unlink()
        wait_until(lambda: len(back.acks()) >= ACKS_PER_MEMBER, running, "the member back")
    finally:
        for worker in {*workers, *running}:
            worker.kill()
    [received] = [r for r in back.records if r["event"] == "state_received"]
    assert received["caught_up"], received
    [ready] = ready_records([back])
    held = {entry: (epoch, number) for entry, epoch, number in ready["entries"]}
    acknowledged = [
        ack for worker in workers for ack in worker.acks() if ack["epoch"] < ready["epoch"]
    ]
    assert len(acknowledged) > MEMBERS * ACKS_PER_MEMBER
    for ack in acknowledged:
        assert held.get(ack["entry"]) == (ack["epoch"], ack["position"]), ack
    for worker in running:
        assert not [r for r in worker.records if r["event"] == "bad_replies"], worker.member


@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_the_group_restarts_after_every_member_was_killed(transport: str, workdir: Path) -> None:
    envs = environments(transport, workdir)
    first = run_and_kill_all(transport, workdir, envs=envs)
    second = run_and_kill_all(transport, workdir, envs=envs)
    check_restart(first, second)


def test_the_group_restarts_with_a_torn_last_record(workdir: Path) -> None:
    envs = environments("tcp", workdir)
    first = run_and_kill_all("tcp", workdir, envs=envs)
    tear_last_record(ledger_log(workdir, 0))
    second = run_and_kill_all("tcp", workdir, envs=envs)
    check_restart(first, second)


@pytest.mark.slow
@pytest.mark.parametrize("round_number", range(3))
@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_killing_and_restarting_every_member_repeatedly(
    transport: str, round_number: int, workdir: Path
) -> None:
    envs = environments(transport, workdir)
    runs = [run_and_kill_all(transport, workdir, envs=envs)]
    for _ in range(2):
        runs.append(run_and_kill_all(transport, workdir, envs=envs))
        check_restart([w for run in runs[:-1] for w in run], runs[-1])
