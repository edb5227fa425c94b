"""One member of the key-value service (:mod:`kv_app`) as a process.

    python examples/kv_service.py --config group.toml --member-id N [--join]

The member's place in the service comes from the layout (``kv_app:layout``): the lowest-ranked
member is the front (``LoadBalancer``), the next two the ``Backend``, the rest the ``Cache``
shards. Any ``pyderecho node`` setting can be given as a flag too (``--members``, ``--listen``).

Standard output carries one JSON object per line: ``ready``; ``view`` (epoch, members, shards);
``state-received`` (bytes and seconds of each state transfer into this member), ``state-lost``;
``state-digest`` (what the object layer reports for the history checker); on the front,
``load`` (running counts of the workload) and ``paused``/``verified``; ``digests`` (position
and digest of every replica it holds) when asked and on exit; and ``stopped``.

Standard input takes commands, one per line: ``load`` (the front starts its workload of puts,
gets and deletes), ``pause`` (it stops and reports), ``verify`` (it reads every key back
through the front and compares), ``digests``; ``record PATH`` (the front writes its record of
the last acknowledged update of every key to PATH: it outlives the front) and ``verify-stored
PATH`` (the front, of this run or a later one, reads every key of such a record back from the
store of record, the ``Backend``, and compares: ``verified-stored``); ``serving`` (the front
reads from the ``Backend`` until it answers, then says ``serving``). With ``--load-seconds S``
the front runs the workload for S seconds on its own, verifies, and leaves. SIGTERM or SIGINT:
leave the group and exit 0.

The ``Backend`` is a ``Paxos`` shard, logged in the member's ``data_dir`` (``--data-dir``): a
member started again on the same directory after every member was killed restarts the group
from its logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import stat
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kv_app
from kv_app import Backend, LoadBalancer

from pyderecho import (
    Group,
    GroupStopped,
    SettingsError,
    StateLost,
    StateProgress,
    StateReceived,
    UserCodeFailed,
    ViewInstalled,
    load_settings,
)
from pyderecho.config import add_arguments
from pyderecho.history.delivery_log import DeliveryLog, view_record
from pyderecho.replicated.events import StateDigest

OP_TIMEOUT_S = 10.0
"""The longest one operation of the workload may take before it counts as failed."""
STARTUP_TIMEOUT_S = 30.0
"""The longest ``serving`` waits for the store of record to answer."""
FRONT_COMMANDS = ("load", "pause", "verify", "record", "verify-stored", "serving")
"""The commands only the front takes."""


def emit(record: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class Workload:
    """The front's clients: ``concurrency`` tasks, each owning its own keys, so that each key
    sees one operation at a time and the front knows what every key must hold."""

    def __init__(self, group: Group, *, keys: int, value_size: int, concurrency: int) -> None:
        self.group = group
        self.keys = keys
        self.value_size = value_size
        self.concurrency = concurrency
        self.expected: dict[str, bytes | None] = {}
        """What each key holds after the last acknowledged update (None: deleted)."""
        self.uncertain: set[str] = set()
        """Keys whose last update failed: it may or may not have been applied."""
        self.counts: Counter[str] = Counter()
        self.running = False
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0.0

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self._started = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._client(i, random.Random(i))) for i in range(self.concurrency)
        ]

    async def pause(self) -> None:
        self.running = False
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def report(self, event: str) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        ops = self.counts["put"] + self.counts["get"] + self.counts["delete"]
        return {"event": event, **self.counts, "ops_per_s": round(ops / elapsed, 1)}

    async def _client(self, number: int, rng: random.Random) -> None:
        front = self.group.shard(LoadBalancer, 0)  # the front's own shard: runs here
        while self.running:
            key = f"k{number}-{rng.randrange(self.keys // self.concurrency or 1)}"
            roll = rng.random()
            try:
                async with asyncio.timeout(OP_TIMEOUT_S):
                    if roll < 0.55:
                        value = rng.randbytes(self.value_size)
                        await front.put(key, value)
                        self.expected[key] = value
                        self.counts["put"] += 1
                    elif roll < 0.9:
                        got = await front.get(key)
                        self.counts["get"] += 1
                        known = key in self.expected and key not in self.uncertain
                        if known and got != self.expected[key]:
                            self.counts["stale_reads"] += 1
                    else:
                        await front.delete(key)
                        self.expected[key] = None
                        self.counts["delete"] += 1
                if roll < 0.55 or roll >= 0.9:
                    self.uncertain.discard(key)
            except GroupStopped:
                return
            except Exception:
                # A replica left mid-call, a member moved shards: the outcome is unknown, so
                # the key is unchecked until its next update succeeds; try again shortly.
                self.counts["retried"] += 1
                if roll < 0.55 or roll >= 0.9:
                    self.uncertain.add(key)
                await asyncio.sleep(0.05)

    async def verify(self) -> dict[str, Any]:
        """Read every key back through the front: each holds its last acknowledged update."""
        front = self.group.shard(LoadBalancer, 0)  # the front's own shard: runs here
        mismatches: list[str] = []
        checked = 0
        for key, value in sorted(self.expected.items()):
            if key in self.uncertain:
                continue
            async with asyncio.timeout(OP_TIMEOUT_S):
                got = await front.get(key)
            checked += 1
            if got != value:
                mismatches.append(key)
        ledger = await self.group.shard(Backend, 0).count()
        return {
            "event": "verified",
            "keys": checked,
            "unchecked": len(self.uncertain),
            "mismatches": len(mismatches),
            "examples": mismatches[:5],
            "ledger": ledger,
        }

    def record(self, path: Path) -> dict[str, Any]:
        """Write the last acknowledged update of every key (hex value, or None: deleted) and
        the keys whose last update failed to ``path``, for a front of a later run to check."""
        acknowledged = {
            key: None if value is None else value.hex()
            for key, value in sorted(self.expected.items())
            if key not in self.uncertain
        }
        temporary = path.with_suffix(".tmp")
        temporary.write_text(
            json.dumps({"acknowledged": acknowledged, "uncertain": sorted(self.uncertain)})
        )
        temporary.replace(path)
        return {
            "event": "recorded",
            "keys": len(acknowledged),
            "deleted": sum(value is None for value in acknowledged.values()),
            "uncertain": len(self.uncertain),
        }


async def serving(group: Group, timeout: float) -> float:
    """Read from the store of record through the front until it answers; the seconds it took."""
    front = group.shard(LoadBalancer, 0)
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with asyncio.timeout(1.0):
                    await front.get_stored("")
                return time.monotonic() - started
            except Exception:
                await asyncio.sleep(0.05)


async def verify_stored(group: Group, path: Path) -> dict[str, Any]:
    """Read every key of a front's record (see :meth:`Workload.record`) back from the store of
    record through the front: each must hold its last acknowledged value, or be absent if that
    was a delete."""
    record = json.loads(path.read_text())
    front = group.shard(LoadBalancer, 0)
    lost: list[str] = []
    for key, value in sorted(record["acknowledged"].items()):
        async with asyncio.timeout(OP_TIMEOUT_S):
            got: bytes | None = await front.get_stored(key)
        if got != (None if value is None else bytes.fromhex(value)):
            lost.append(key)
    ledger = await group.shard(Backend, 0).count()
    return {
        "event": "verified-stored",
        "keys": len(record["acknowledged"]),
        "unchecked": len(record["uncertain"]),
        "lost": len(lost),
        "examples": lost[:5],
        "ledger": ledger,
    }


class ServiceMember:
    """The member, its event log and its commands, for one run of the process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.log: DeliveryLog | None = None
        self.group: Group | None = None
        self.workload: Workload | None = None
        self.view_at = time.monotonic()
        self.transfer_started: dict[tuple[str, int, int], float] = {}
        self.stop = asyncio.Event()

    def on_event(self, event: object) -> None:
        if self.log is not None:
            self.log.record(event)
        if isinstance(event, ViewInstalled):
            self.view_at = time.monotonic()
            emit({"event": "view", **view_record(event.view, event.layout)})
        elif isinstance(event, StateProgress):
            self.transfer_started.setdefault(
                (event.type_name, event.subgroup_index, event.shard), time.monotonic()
            )
        elif isinstance(event, StateReceived):
            key = (event.type_name, event.subgroup_index, event.shard)
            started = self.transfer_started.pop(key, None)
            now = time.monotonic()
            emit(
                {
                    "event": "state-received",
                    "type": event.type_name,
                    "index": event.subgroup_index,
                    "shard": event.shard,
                    "source": event.source,
                    "bytes": event.size,
                    "seconds": round(now - self.view_at, 4),
                    "transfer_seconds": round(now - (started or now), 4),
                    "position": list(event.position),
                    "lost": event.lost,
                }
            )
        elif isinstance(event, StateLost):
            emit(
                {
                    "event": "state-lost",
                    "type": event.type_name,
                    "index": event.subgroup_index,
                    "shard": event.shard,
                    "epoch": event.epoch,
                }
            )
        elif isinstance(event, StateDigest):
            emit(
                {
                    "event": "state-digest",
                    "reporter": self.args.member_id,
                    "member": event.member,
                    "key": list(event.key),
                    "position": list(event.position),
                    "digest": event.digest,
                    "kind": event.kind,
                }
            )
        elif isinstance(event, UserCodeFailed):
            emit({"event": "user-code-failed", "where": event.where, "error": event.error})

    def digests(self) -> dict[str, Any]:
        """Position and digest of every replica this member holds."""
        assert self.group is not None
        host = self.group.host
        replicas = []
        for key, replica in sorted(host.replicas().items()):
            now = host.state_digest(key)
            if now is None:
                continue  # its state is on the way
            position, digest = now
            replicas.append(
                {
                    "type": key[0],
                    "index": key[1],
                    "shard": key[2],
                    "position": list(position),
                    "digest": digest,
                    "contents": kv_app.describe(replica),
                }
            )
        return {"event": "digests", "member": self.group.member_id, "replicas": replicas}

    def front(self) -> Workload | None:
        """The workload, if this member is the front (holds the LoadBalancer)."""
        group = self.group
        if self.workload is None and group is not None and group.replica(LoadBalancer):
            args = self.args
            self.workload = Workload(
                group, keys=args.keys, value_size=args.value_size, concurrency=args.concurrency
            )
        return self.workload

    async def command(self, line: str) -> None:
        word, _, argument = line.strip().partition(" ")
        workload = self.front()
        if word == "digests":
            emit(self.digests())
        elif workload is None and word in FRONT_COMMANDS:
            emit({"event": "error", "error": f"member {self.args.member_id} is not the front"})
        elif workload is not None and word == "load":
            workload.start()
        elif workload is not None and word == "pause":
            await workload.pause()
            emit(workload.report("paused"))
        elif workload is not None and word == "verify":
            emit(await workload.verify())
        elif workload is not None and word == "record":
            emit(workload.record(Path(argument)))
        elif workload is not None and word == "verify-stored":
            emit(await verify_stored(workload.group, Path(argument)))
        elif workload is not None and word == "serving":
            seconds = await serving(workload.group, STARTUP_TIMEOUT_S)
            emit({"event": "serving", "seconds": round(seconds, 4)})
        elif word:
            emit({"event": "error", "error": f"unknown command {word!r}"})

    async def read_commands(self) -> None:
        loop = asyncio.get_running_loop()
        mode = os.fstat(sys.stdin.fileno()).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()):
            return  # a file or /dev/null: nothing to wait on, no commands
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            try:
                await self.command(line.decode())
            except Exception as exc:
                emit({"event": "error", "error": f"{type(exc).__name__}: {exc}"})

    async def report_load(self) -> None:
        while True:
            await asyncio.sleep(self.args.stats_interval)
            if self.workload is not None and self.workload.running:
                emit(self.workload.report("load"))

    async def run(self) -> int:
        args = self.args
        try:
            settings = load_settings(args)
        except SettingsError as exc:
            print(f"kv_service: {exc}", file=sys.stderr)
            return 2
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop.set)
        if args.delivery_log is not None:
            self.log = DeliveryLog(args.delivery_log, settings.member_id, settings.group)
        reason = "left the group"
        helpers: list[asyncio.Task[None]] = []
        try:
            async with Group.start(
                settings,
                layout=(
                    kv_app.volatile_backend_layout
                    if args.planted_volatile_backend
                    else kv_app.layout
                ),
                types=kv_app.TYPES,
                join=args.join,
                on_event=self.on_event,
                shm_dir=args.shm_dir,
            ) as group:
                self.group = group
                # Digests for the history checker's state rule. Group.start has no option for
                # it, so it is switched on here, after the first view (whose states are empty).
                group.host.record_digests = True
                emit({"event": "ready", "member": group.member_id, "pid": os.getpid()})
                helpers.append(asyncio.create_task(self.read_commands()))
                helpers.append(asyncio.create_task(self.report_load()))
                if args.load_seconds:
                    helpers.append(asyncio.create_task(self.timed_load(args.load_seconds)))
                stopped = asyncio.ensure_future(group.member.stopped())
                waiting = asyncio.ensure_future(self.stop.wait())
                done, _ = await asyncio.wait(
                    {stopped, waiting}, return_when=asyncio.FIRST_COMPLETED
                )
                waiting.cancel()
                if stopped in done:
                    reason = f"stopped: {stopped.result()}"
                else:
                    stopped.cancel()
                    if self.workload is not None:
                        await self.workload.pause()
                    emit(self.digests())
        except (OSError, GroupStopped) as exc:
            reason = f"failed: {exc}"
            print(f"kv_service: {exc}", file=sys.stderr)
        finally:
            for task in helpers:
                task.cancel()
            if self.log is not None:
                self.log.close(reason)
        emit({"event": "stopped", "reason": reason})
        return 0 if reason == "left the group" else 1

    async def timed_load(self, seconds: float) -> None:
        """Run the workload for ``seconds`` if this member is the front, verify, and leave."""
        assert self.group is not None
        with contextlib.suppress(TimeoutError):
            await self.group.wait_ready(LoadBalancer, timeout=30)
        workload = self.front()
        if workload is None:
            return
        workload.start()
        await asyncio.sleep(seconds)
        await workload.pause()
        emit(workload.report("paused"))
        emit(await workload.verify())
        self.stop.set()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run one member of the sharded key-value service (see kv_app.py)."
    )
    add_arguments(parser)
    parser.add_argument("--join", action="store_true", help="join a running group")
    parser.add_argument("--delivery-log", type=Path, help="write sends, deliveries and views")
    parser.add_argument("--shm-dir", help="socket directory for the shm transport")
    parser.add_argument("--wait-for-start", action="store_true", help="wait for a start line")
    parser.add_argument("--keys", type=int, default=400, help="keys the front's workload uses")
    parser.add_argument("--value-size", type=int, default=512, help="bytes per value")
    parser.add_argument("--concurrency", type=int, default=8, help="operations in flight")
    parser.add_argument("--load-seconds", type=float, default=0.0, help="run the load, then leave")
    parser.add_argument("--stats-interval", type=float, default=0.5)
    parser.add_argument(
        "--planted-volatile-backend",
        action="store_true",
        help="a planted bug: the Backend is not logged (the demo's restart check must fail)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.wait_for_start:
        # Founders that start more than heartbeat_timeout apart suspect each other before
        # they ever meet: a supervisor loads them all, then releases them together.
        emit({"event": "waiting"})
        # Read the line byte by byte: what follows it is for the command reader.
        line = b""
        while not line.endswith(b"\n"):
            byte = os.read(sys.stdin.fileno(), 1)
            if not byte:
                return 1
            line += byte
    return asyncio.run(ServiceMember(args).run())


if __name__ == "__main__":
    sys.exit(main())
