"""Restart after a total crash: how long a ``Paxos`` group takes to come back, by log size.

For each ``--snapshot-every`` setting and each ``--log-mib`` size (``--repeat`` rounds,
interleaved), three member processes over tcp on 127.0.0.1, each with a fresh data directory
under ``--data-root``, hold one ``Paxos`` shard of all three whose state is bounded
(``--keys`` values of ``--value-bytes`` each, overwritten in turn; the member is
``benchmarks/restart_worker.py``).
The members fill it with ordered calls until about ``--log-mib`` MiB of log is written at each
member, then are SIGKILLed together. Unless ``--warm-cache``, the page cache is dropped for
their files (``posix_fadvise(DONTNEED)``: a rebooted host reads its logs from the disk). Then
the three start again on the same directories, and per member and for the group the run
records the time from process start to:

- ``rebuilt_s``: the replica rebuilt from snapshot and log (``log_load_s``: one pass that
  reads and checks each record and applies those after the snapshot as it goes);
- ``ready_s``: the restarted view founded and the replica ready;
- ``first_call_s``: an ordered call made once ready completed with every replica's reply.

The group's ``first_delivery_s`` is the earliest first call answered, from the launch of the
first member; ``all_first_calls_s`` the latest. Also recorded: the log bytes on disk before
the restart (every ``*.seg``), the records read and those replayed (after the snapshot), the
replay rate, and a breakdown of the restart's log work on one member's log (``read``: read and
CRC-check every segment, decoding each record as it is checked, as a restart does;
``decode_call``; ``rebuild``: the library's replay, decode and user code), done in this process
after the round. The snapshot cost (encode the state, write it atomically with fsync, decode
it) is timed by each member once the group is back.

With ``snapshot_every`` beyond the fill nothing is snapshotted and a restart replays the whole
log; with a smaller value the replica snapshots during the fill, whole 64 MiB segments before a
durable snapshot are dropped, and a restart reads at most about ``snapshot_every`` updates plus
a segment. Target (the issue's): with 1 GiB of log, the first delivery within 10 s.

Prints one JSON object (and writes it to ``--out``)::

    .venv-fast/bin/python benchmarks/restart_time.py [--log-mib 64,256,1024] [--repeat 3]
        [--snapshot-every 1000000000,1024] [--value-bytes 65536] [--keys 64] [--in-flight 8]
        [--data-root DIR] [--warm-cache] [--no-breakdown] [--out benchmarks/results-restart.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
from restart_worker import Store

from pyderecho.cli.demo import free_ports
from pyderecho.replicated.messages import decode_call
from pyderecho.replicated.methods import type_spec
from pyderecho.replicated.recovery import rebuild
from pyderecho.runtime.persistence import SnapshotFile, read_shard_log
from pyderecho.storage.metadata import read_metadata

try:
    import durable_baselines
except ImportError:  # run from elsewhere than benchmarks/: no fdatasync figure
    durable_baselines = None  # type: ignore[assignment]

WORKER = Path(__file__).with_name("restart_worker.py")
MEMBERS = 3
MIB = 1024 * 1024
RECORD_OVERHEAD = 80
"""Bytes a logged call adds to its value (frame, record fields, call encoding): only to size
the fill; the log on disk is measured."""
TARGET_LOG_MIB = 1024
TARGET_S = 10.0
FILL_WAIT_S = 900.0
RESTART_WAIT_S = 300.0
SECRET = "restart-time-benchmark-secret"


class Failed(RuntimeError):
    """A member exited or a step did not finish in time."""


# -- member processes -----------------------------------------------------------------------


class Worker:
    """A member process; its JSON lines are read on a thread, its stderr goes to a file."""

    def __init__(self, member: int, env: dict[str, str], flags: list[str], log: Path) -> None:
        self.member = member
        self.stderr = log
        self.launched = time.monotonic()
        with log.open("ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER), *flags],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.records: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.records.append(json.loads(line))

    def event(self, name: str) -> dict[str, Any] | None:
        return next((r for r in list(self.records) if r["event"] == name), None)

    def tell(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._reader.join(10)
        if self.process.stdin is not None:
            self.process.stdin.close()

    def tail(self) -> str:
        try:
            return self.stderr.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def kill_all(workers: list[Worker]) -> None:
    """SIGKILL every member at once, then reap them."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGKILL)
    for worker in workers:
        worker.kill()


def wait_for(workers: list[Worker], event: str, timeout: float) -> list[dict[str, Any]]:
    """Each member's ``event``; raises :class:`Failed` if one exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        found = [w.event(event) for w in workers]
        if all(found):
            return [f for f in found if f is not None]
        exited = [w for w in workers if w.process.poll() is not None]
        if exited or time.monotonic() > deadline:
            why = "exited" if exited else f"no {event!r} after {timeout:.0f} s"
            details = {
                w.member: {"last": w.records[-3:], "stderr": w.tail()} for w in (exited or workers)
            }
            raise Failed(f"waiting for {event!r}: members {why}: {details}")
        bad = [r for w in workers for r in list(w.records) if r["event"] == "bad_replies"]
        if bad:
            raise Failed(f"a call's replies were wrong: {bad[:3]}")
        time.sleep(0.02)


def environments(workdir: Path, snapshot_every: int, heartbeat_ms: int) -> list[dict[str, str]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYDERECHO_")} | {
        "PYDERECHO_GROUP": "restart-time",
        "PYDERECHO_TRANSPORT": "tcp",
        "PYDERECHO_SECRET": SECRET,
        "PYDERECHO_HEARTBEAT_TIMEOUT_MS": str(heartbeat_ms),
        "PYDERECHO_SNAPSHOT_EVERY": str(snapshot_every),
    }
    ports = free_ports(MEMBERS)
    members = ",".join(f"{m}=127.0.0.1:{ports[m]}" for m in range(MEMBERS))
    return [
        base
        | {
            "PYDERECHO_MEMBER_ID": str(i),
            "PYDERECHO_DATA_DIR": str(workdir / f"member-{i}"),
            "PYDERECHO_LISTEN": f"127.0.0.1:{ports[i]}",
            "PYDERECHO_MEMBERS": members,
        }
        for i in range(MEMBERS)
    ]


@contextmanager
def members(
    workdir: Path, envs: list[dict[str, str]], flags: list[str], phase: str
) -> Iterator[list[Worker]]:
    """The three members started together; all killed together on leaving, however left."""
    workers: list[Worker] = []
    try:
        for i in range(MEMBERS):
            workers.append(Worker(i, envs[i], flags, workdir / f"member-{i}.{phase}.stderr"))
        yield workers
    finally:
        kill_all(workers)


# -- the disk ---------------------------------------------------------------------------------


def segments(member_dir: Path) -> list[Path]:
    return sorted(member_dir.glob("shards/*/*.seg"))


def log_bytes(member_dir: Path) -> int:
    return sum(path.stat().st_size for path in segments(member_dir))


def evict(root: Path) -> None:
    """Drop the page cache of every file under ``root`` (clean pages only; all are, once the
    members synced them), so the restart reads its logs from the disk."""
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def breakdown(member_dir: Path, *, cold: bool) -> dict[str, Any]:
    """Where a restart's log work goes, on one member's log (seconds per step)."""
    directory = next(member_dir.glob("shards/*"))
    if cold:
        evict(member_dir)
    steps: dict[str, float] = {}

    def step(name: str, work: Callable[[], Any]) -> Any:
        began = time.perf_counter()
        result = work()
        steps[name] = round(time.perf_counter() - began, 4)
        return result

    records = step("read", lambda: read_shard_log(directory))
    step("decode_call", lambda: [decode_call(record.payload) for record in records])
    data = read_metadata(directory / "snapshot")
    assert data is not None
    saved = msgspec.msgpack.decode(data, type=SnapshotFile)
    rebuilt = step(
        "rebuild",
        lambda: rebuild(
            type_spec("Store", Store),
            ("Store", 0, 0),
            0,
            state=saved.state,
            position=(saved.epoch, saved.count),
            records=records,
        ),
    )
    size = sum(path.stat().st_size for path in directory.glob("*.seg"))
    return {
        "member": 0,
        "cold_cache": cold,
        "records": len(records),
        "replayed": rebuilt.applied,
        "log_bytes": size,
        "steps_s": steps,
        "mib_per_s": {
            name: round(size / MIB / seconds, 1) if seconds else None
            for name, seconds in steps.items()
        },
    }


# -- one round ------------------------------------------------------------------------------


def _at(record: dict[str, Any] | None, since: float) -> float | None:
    return None if record is None else round(record["at"] - since, 4)


def _took(record: dict[str, Any] | None) -> float | None:
    return None if record is None else round(record["at"] - record["began"], 4)


def one_round(args: argparse.Namespace, snapshot_every: int, log_mib: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="restart-time-", dir=args.data_root))
    try:
        envs = environments(workdir, snapshot_every, args.heartbeat_timeout_ms)
        updates = math.ceil(log_mib * MIB / (args.value_bytes + RECORD_OVERHEAD) / MEMBERS)
        common = ["--members", str(MEMBERS), "--keys", str(args.keys)]
        common += ["--value-bytes", str(args.value_bytes)]
        fill_flags = [*common, "--updates", str(updates), "--in-flight", str(args.in_flight)]
        with members(workdir, envs, fill_flags, "fill") as workers:
            filled = wait_for(workers, "filled", FILL_WAIT_S)
            fill_began = min(w.launched for w in workers)
            fill_ready = max(r["at"] for r in wait_for(workers, "ready", 1))
            fill_done = max(r["at"] for r in filled)
            # SIGKILL, all at once, on leaving.
        on_disk = [log_bytes(workdir / f"member-{i}") for i in range(MEMBERS)]
        seg_files = [len(segments(workdir / f"member-{i}")) for i in range(MEMBERS)]
        if not args.warm_cache:
            evict(workdir)
        restart_flags = [*common, "--snapshot-rounds", str(args.snapshot_rounds)]
        with members(workdir, envs, restart_flags, "restart") as workers:
            wait_for(workers, "first_call", RESTART_WAIT_S)
            for worker in workers:
                worker.tell()
            costs = wait_for(workers, "snapshot_cost", RESTART_WAIT_S)
        started = min(w.launched for w in workers)

        def at(name: str, pick: Callable[[list[float]], float]) -> float:
            times = [w.event(name) for w in workers]
            return round(pick([t["at"] for t in times if t is not None]) - started, 4)

        per_member = []
        for worker, disk in zip(workers, on_disk, strict=True):
            imported = worker.event("imported")
            loaded = worker.event("log_loaded")
            rebuilt = worker.event("rebuilt")
            ready = worker.event("ready")
            first = worker.event("first_call")
            assert imported and loaded and rebuilt and ready and first
            load_s = _took(loaded)
            after = loaded["records_after_snapshot"]
            replayed_bytes = disk * after / loaded["records"] if loaded["records"] else 0
            per_member.append(
                {
                    "member": worker.member,
                    "log_bytes_on_disk": disk,
                    "records_read": loaded["records"],
                    "records_replayed": after,
                    "snapshot_position": loaded["snapshot_position"],
                    "snapshot_bytes": loaded["snapshot_bytes"],
                    "torn_bytes_cut": loaded["truncated_bytes"],
                    "interpreter_start_s": round(imported["launched"] - worker.launched, 4),
                    "imports_s": round(imported["at"] - imported["launched"], 4),
                    "log_load_s": load_s,
                    "rebuilt_s": _at(rebuilt, worker.launched),
                    "founding_s": round(ready["at"] - rebuilt["at"], 4),
                    "ready_s": _at(ready, worker.launched),
                    "first_call_s": _at(first, worker.launched),
                    "first_call_latency_s": _took(first),
                    "max_rss_mib": first["max_rss_mib"],
                    "log_load_mib_per_s": _rate(disk / MIB, load_s),
                    "replay_records_per_s": _rate(after, load_s),
                    "replay_mib_per_s": _rate(replayed_bytes / MIB, load_s),
                    "restart_epoch": ready["epoch"],
                }
            )
        sample: dict[str, Any] = {
            "snapshot_every": snapshot_every,
            "log_mib_target": log_mib,
            "updates_per_member": updates,
            "updates_logged": updates * MEMBERS,
            "log_bytes_on_disk": on_disk,
            "segment_files": seg_files,
            "fill_s": round(fill_done - fill_began, 2),
            "fill_log_mib_per_s": _rate(
                updates * MEMBERS * (args.value_bytes + RECORD_OVERHEAD) / MIB,
                fill_done - fill_ready,
            ),
            "rebuilt_s": at("rebuilt", max),
            "ready_s": at("ready", max),
            "first_delivery_s": at("first_call", min),
            "all_first_calls_s": at("first_call", max),
            "members": per_member,
            "snapshot_cost": costs,
        }
        if args.breakdown:
            sample["breakdown"] = breakdown(workdir / "member-0", cold=not args.warm_cache)
        return sample
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _rate(amount: float, seconds: float | None) -> float | None:
    return round(amount / seconds, 1) if seconds else None


# -- summary ----------------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None


GROUP_KEYS = ("rebuilt_s", "ready_s", "first_delivery_s", "all_first_calls_s", "fill_s")
MEMBER_KEYS = (
    "interpreter_start_s",
    "imports_s",
    "log_load_s",
    "rebuilt_s",
    "founding_s",
    "ready_s",
    "first_call_s",
    "max_rss_mib",
    "log_load_mib_per_s",
    "replay_records_per_s",
    "replay_mib_per_s",
)


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds (member figures: over every member of every round)."""
    every = [m for s in samples for m in s["members"]]
    return {
        "snapshot_every": samples[0]["snapshot_every"],
        "log_mib_target": samples[0]["log_mib_target"],
        "log_mib_on_disk": _median([sum(s["log_bytes_on_disk"]) / MEMBERS / MIB for s in samples]),
        "records_read": _median([m["records_read"] for m in every]),
        "records_replayed": _median([m["records_replayed"] for m in every]),
        **{key: _median([s[key] for s in samples]) for key in GROUP_KEYS},
        "member": {key: _median([m[key] for m in every]) for key in MEMBER_KEYS},
        "samples_first_delivery_s": [s["first_delivery_s"] for s in samples],
        "samples_rebuilt_s": [s["rebuilt_s"] for s in samples],
        "samples": samples,
    }


def snapshot_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    costs = [cost for s in samples for cost in s["snapshot_cost"]]

    def ms(key: str) -> float | None:
        return _median([value * 1000 for cost in costs for value in cost[key]])

    return {
        "state_bytes": _median([cost["state_bytes"] for cost in costs]),
        "encode_ms": ms("encode_s"),
        "write_fsync_ms": ms("write_fsync_s"),
        "decode_ms": ms("decode_s"),
        "note": "per snapshot of the replica's state (encode: what the replica does every "
        "snapshot_every updates, on the event loop; write_fsync: the snapshot file written "
        "atomically as the writer thread does; decode: what a restart does first)",
    }


def _fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares ``seconds = a + b * mib``."""
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum(
        (x - mean_x) ** 2 for x, _ in points
    )
    return mean_y - slope * mean_x, slope


def targets(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's target per snapshot setting: 1 GiB of log, first delivery within 10 s.
    Where no 1 GiB run was made, a linear fit of the runs that replayed their whole log says
    what to expect of 1 GiB on disk."""
    found = []
    for every in sorted({s["snapshot_every"] for s in summaries}):
        runs = [s for s in summaries if s["snapshot_every"] == every]
        at_target = [s for s in runs if s["log_mib_target"] >= TARGET_LOG_MIB]
        measured = at_target[0]["first_delivery_s"] if at_target else None
        # Only runs that replayed their whole log: where a snapshot bounded the replay, the
        # time no longer follows the log written, and a line through it says nothing.
        fit = _fit(
            [
                (s["log_mib_on_disk"], s["first_delivery_s"])
                for s in runs
                if s["records_replayed"] == s["records_read"]
                and s["log_mib_on_disk"] is not None
                and s["first_delivery_s"] is not None
            ]
        )
        found.append(
            {
                "target": f"first delivery after a total crash with {TARGET_LOG_MIB} MiB of log "
                f"written per member (snapshot_every={every}): under {TARGET_S:g} s",
                "snapshot_every": every,
                "measured_s": measured,
                "threshold_s": TARGET_S,
                "met": None if measured is None else measured < TARGET_S,
                "fit_s_per_gib": None if fit is None else round(fit[1] * 1024, 3),
                "fit_intercept_s": None if fit is None else round(fit[0], 3),
                "extrapolated_1gib_on_disk_s": None
                if fit is None
                else round(fit[0] + fit[1] * 1024, 3),
            }
        )
    return found


# -- the machine ------------------------------------------------------------------------------


def _filesystem(path: str) -> dict[str, str] | None:
    real = os.path.realpath(path)
    best: dict[str, str] | None = None
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, point, kind = line.split()[:3]
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) > len(best["mount"])):
                    best = {"device": device, "mount": point, "type": kind}
    except OSError:
        return None
    return best


def _proc_field(path: str, name: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def machine(data_root: str) -> dict[str, Any]:
    try:
        version: str | None = metadata.version("pyderecho")
    except metadata.PackageNotFoundError:
        version = None
    return {
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "memory": _proc_field("/proc/meminfo", "MemTotal"),
        "python": platform.python_version(),
        "pyderecho": version,
        "data_root": data_root,
        "data_root_filesystem": _filesystem(data_root),
        "data_root_free_bytes": shutil.disk_usage(data_root).free,
    }


def fdatasync_ms(data_root: str) -> dict[str, float] | None:
    if durable_baselines is None:
        return None
    result: dict[str, float] = durable_baselines.fdatasync_latency_ms(directory=data_root)
    return result


# -- the run ----------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    data_root: str = args.data_root
    began = time.perf_counter()
    load_before = os.getloadavg()
    fsync_before = fdatasync_ms(data_root)
    samples: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for every in args.snapshot_every:
            for size in args.log_mib:
                sample = one_round(args, every, size)
                samples.setdefault((every, size), []).append(sample)
                print(
                    f"restart_time: snapshot_every={every} log={size} MiB: first delivery "
                    f"{sample['first_delivery_s']} s, rebuilt {sample['rebuilt_s']} s, "
                    f"fill {sample['fill_s']} s",
                    file=sys.stderr,
                )
    fsync_after = fdatasync_ms(data_root)
    summaries = [summarize(runs) for runs in samples.values()]
    found = targets(summaries)
    return {
        "benchmark": "restart_time",
        "members": MEMBERS,
        "transport": "tcp",
        "mode": "one Paxos shard of all members; state: a dict of keys overwritten in turn",
        "value_bytes": args.value_bytes,
        "keys": args.keys,
        "in_flight_per_member": args.in_flight,
        "repeat": args.repeat,
        "log_mib": args.log_mib,
        "snapshot_every": args.snapshot_every,
        "heartbeat_timeout_ms": args.heartbeat_timeout_ms,
        "cold_cache": not args.warm_cache,
        "definitions": {
            "first_delivery_s": "launch of the first restarted member to the first ordered call "
            "(made once a member is ready) answered by every replica",
            "all_first_calls_s": "the same, to the last member's first call answered",
            "rebuilt_s": "launch to the last member's replica rebuilt (log loaded and replayed)",
            "ready_s": "launch to the last member's restarted view founded, replica ready",
            "member": "per member from its own launch; medians over members and rounds",
        },
        "machine": machine(data_root),
        "fdatasync_ms": {"before": fsync_before, "after": fsync_after},
        "load_average": {
            "before": [round(load, 2) for load in load_before],
            "after": [round(load, 2) for load in os.getloadavg()],
        },
        "wall_s": round(time.perf_counter() - began, 1),
        "results": summaries,
        "snapshot_cost": snapshot_summary([s for runs in samples.values() for s in runs]),
        "targets": found,
        "target_met": None
        if any(t["met"] is None for t in found)
        else all(t["met"] for t in found),
    }


def _integers(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--log-mib", type=_integers, default=[64, 256, 1024], help="log sizes, MiB per member"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3); medians")
    parser.add_argument(
        "--snapshot-every",
        type=_integers,
        default=[10**9, 1024],
        help="settings to compare (default 1000000000,1024: none during the fill, and one "
        "every 1024 updates, 64 MiB of 64 KiB updates)",
    )
    parser.add_argument("--value-bytes", type=int, default=64 * 1024, help="bytes per update")
    parser.add_argument("--keys", type=int, default=64, help="keys in the state (default 64)")
    parser.add_argument("--in-flight", type=int, default=8, help="calls outstanding per member")
    parser.add_argument("--snapshot-rounds", type=int, default=3, help="snapshot cost samples")
    parser.add_argument("--heartbeat-timeout-ms", type=int, default=5000)
    parser.add_argument("--data-root", default=tempfile.gettempdir(), help="default: tmp")
    parser.add_argument(
        "--warm-cache", action="store_true", help="restart with the logs in the page cache"
    )
    parser.add_argument(
        "--no-breakdown", dest="breakdown", action="store_false", help="skip the log breakdown"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON object here")
    args = parser.parse_args(argv)
    if not args.log_mib or not args.snapshot_every or args.repeat < 1:
        parser.error("--log-mib and --snapshot-every need a value each, --repeat at least 1")
    return args


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that members are killed and directories removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    result = measure(args)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
