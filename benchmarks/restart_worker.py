"""One member of a Paxos group as a process, for ``benchmarks/restart_time.py`` and
``benchmarks/rejoin_time.py``.

Settings come from ``PYDERECHO_*`` variables (``PYDERECHO_DATA_DIR`` and
``PYDERECHO_SNAPSHOT_EVERY`` among them). The shard holds a bounded state: ``--keys`` values
of ``--value-bytes`` each, overwritten round robin, so the state stays small while the log
grows.

On a fresh data directory the member makes ``--updates`` ordered calls (``--in-flight`` at a
time), prints ``filled``, then makes more on each ``fill N MEMBERS`` line on stdin (expecting
MEMBERS replies to each: the group may have lost one meanwhile) until it is killed. It prints
each view it installs and each state it receives. On a data directory holding a ``view``
file it restarts from its logs, printing when each step is done (the log loaded, the replica
rebuilt, the group ready, its first ordered call answered by every replica); then, once a
line arrives on stdin (the parent waits until every member's first call is in, so that this
member's work cannot slow another's), it times a snapshot of its replica's state and idles.

Every line is one JSON object; times are ``time.monotonic()`` (one clock for every process
on the host), so the parent subtracts its own launch time.
"""

from __future__ import annotations

import time

LAUNCHED = time.monotonic()

import argparse  # noqa: E402 (the clock above is read before the imports it measures)
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pyderecho.runtime.group as group_module  # noqa: E402
from pyderecho import (  # noqa: E402
    Group,
    StateReceived,
    ViewInstalled,
    every_member,
    layout_of,
    ordered,
)
from pyderecho.core.layout import Mode  # noqa: E402
from pyderecho.replicated.methods import type_spec  # noqa: E402
from pyderecho.replicated.recovery import Rebuilt  # noqa: E402
from pyderecho.replicated.state import restore, snapshot  # noqa: E402
from pyderecho.runtime import persistence  # noqa: E402
from pyderecho.runtime.persistence import Recovery  # noqa: E402
from pyderecho.storage.metadata import write_atomic  # noqa: E402

IMPORTED = time.monotonic()
WAIT_S = 600.0


class Store:
    """``keys`` values, overwritten in turn: the state stays ``keys * value_bytes`` big."""

    values: dict[int, bytes]

    def __init__(self) -> None:
        self.values = {}

    @ordered
    def put(self, key: int, value: bytes) -> int:
        self.values[key] = value
        return len(self.values)


LAYOUT = layout_of({"Store": every_member(Mode.PAXOS)})


def emit(event: str, **record: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **record}) + "\n")
    sys.stdout.flush()


def instrument() -> None:
    """Report when ``Group.start`` has loaded the logs (read, checked and replayed in one
    pass) and collected the replicas (each step timed around the library's own function)."""
    load = persistence.load_recovery
    rebuild = group_module._rebuild

    def timed_load(data_dir: Path, **options: Any) -> Recovery | None:
        began = time.monotonic()
        recovery = load(data_dir, **options)
        if recovery is not None:
            shards = recovery.shards.values()
            emit(
                "log_loaded",
                began=began,
                at=time.monotonic(),
                records=sum(shard.records for shard in shards),
                records_after_snapshot=sum(
                    r.applied + r.raised + r.malformed
                    for r in (shard.rebuilt for shard in shards)
                    if r is not None
                ),
                payload_bytes=sum(shard.payload_bytes for shard in shards),
                snapshot_bytes=sum(len(s.snapshot.state) for s in shards),
                snapshot_position=[[s.snapshot.epoch, s.snapshot.count] for s in shards],
                truncated_bytes=sum(s.truncated_bytes for s in shards),
            )
        return recovery

    def timed_rebuild(member_id: int, recovery: Recovery) -> dict[tuple[str, int, int], Rebuilt]:
        began = time.monotonic()
        rebuilt = rebuild(member_id, recovery)
        emit(
            "rebuilt",
            began=began,
            at=time.monotonic(),
            positions=[list(r.position) for r in rebuilt.values()],
        )
        return rebuilt

    # Group.start calls the name it imported from the persistence module.
    setattr(group_module, "load_recovery", timed_load)  # noqa: B010
    group_module._rebuild = timed_rebuild


def snapshot_cost(replica: Store, data_dir: Path, rounds: int) -> dict[str, Any]:
    """What one snapshot of this state costs: encoding it (what the replica does every
    ``snapshot_every`` updates), writing it as the snapshot file is written (atomically, with
    fsync of the file and the directory), and decoding it (what a restart does first)."""
    spec = type_spec("Store", Store)
    encode: list[float] = []
    write: list[float] = []
    decode: list[float] = []
    data = b""
    scratch = data_dir / "snapshot-cost"
    try:
        for _ in range(rounds):
            began = time.perf_counter()
            data = snapshot(spec, replica)
            encode.append(time.perf_counter() - began)
            began = time.perf_counter()
            write_atomic(scratch, data)
            write.append(time.perf_counter() - began)
            began = time.perf_counter()
            restore(spec, data)
            decode.append(time.perf_counter() - began)
    finally:
        scratch.unlink(missing_ok=True)
    return {
        "state_bytes": len(data),
        "keys": len(replica.values),
        "encode_s": encode,
        "write_fsync_s": write,
        "decode_s": decode,
    }


def peak_rss_mib() -> float:
    """This process's peak resident memory since it started (``VmHWM``). Not ``ru_maxrss``:
    Linux keeps that across ``exec``, so a worker forked from a driver that had read 1 GiB of
    log reported the driver's peak as its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


def report(event: object) -> None:
    if isinstance(event, StateReceived):
        emit(
            "state_received",
            at=time.monotonic(),
            source=event.source,
            size=event.size,
            position=list(event.position),
            caught_up=event.caught_up,
        )
    elif isinstance(event, ViewInstalled):
        emit("view", at=time.monotonic(), epoch=event.view.epoch, members=event.view.members)


async def fill(group: Group, args: argparse.Namespace, updates: int, members: int) -> None:
    value = os.urandom(args.value_bytes)
    store = group.subgroup(Store)
    shares = [updates // args.in_flight] * args.in_flight
    for extra in range(updates % args.in_flight):
        shares[extra] += 1

    async def lane(number: int, calls: int) -> None:
        for call in range(calls):
            key = (group.member_id * 7919 + number * 104729 + call) % args.keys
            replies = await store.put(key, value)
            if replies.errors or len(replies) != members:
                emit("bad_replies", replies=repr(replies))

    began = time.monotonic()
    await asyncio.gather(*(lane(n, calls) for n, calls in enumerate(shares)))
    emit("filled", began=began, at=time.monotonic(), updates=updates)


async def fill_on_command(group: Group, args: argparse.Namespace) -> None:
    while line := await asyncio.to_thread(sys.stdin.readline):
        command, updates, members = line.split()
        assert command == "fill", line
        await fill(group, args, int(updates), int(members))


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(os.environ["PYDERECHO_DATA_DIR"])
    restart = (data_dir / "view").exists()
    emit("imported", launched=LAUNCHED, at=IMPORTED, restart=restart)
    if restart:
        instrument()
    async with Group.start(types={"Store": Store}, layout=LAYOUT, on_event=report) as group:
        # The baseline of rejoin_time.py's rounds: what a member back was sent before the
        # old members read their logs back for it (the whole state, once memory lacked them).
        group.host.reads_logs = not args.no_log_reads
        emit("started", at=time.monotonic(), epoch=group.view.epoch)
        replica = await group.wait_ready(Store, timeout=WAIT_S)
        await group.wait_for_view(lambda view: len(view.members) == args.members, WAIT_S)
        emit("ready", at=time.monotonic(), epoch=group.view.epoch, keys=len(replica.values))
        if not restart:
            await fill(group, args, args.updates, args.members)
            await fill_on_command(group, args)
        else:
            began = time.monotonic()
            replies = await group.subgroup(Store).put(0, b"after the restart")
            emit(
                "first_call",
                began=began,
                at=time.monotonic(),
                replicas=len(replies),
                errors=len(replies.errors),
                max_rss_mib=peak_rss_mib(),
            )
            await asyncio.to_thread(sys.stdin.readline)
            emit("snapshot_cost", **snapshot_cost(replica, data_dir, args.snapshot_rounds))
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, required=True)
    parser.add_argument("--updates", type=int, default=0, help="ordered calls to fill with")
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--keys", type=int, default=64)
    parser.add_argument("--value-bytes", type=int, default=64 * 1024)
    parser.add_argument("--snapshot-rounds", type=int, default=3)
    parser.add_argument("--no-log-reads", action="store_true")
    asyncio.run(main(parser.parse_args()))
