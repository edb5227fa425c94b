"""``pyderecho bench``: a real group on one machine, timed, after Derecho's bandwidth and latency
programs.

The group runs as separate processes, one per member, each a real
:class:`~pyderecho.runtime.Member` over a real transport (shared memory or TCP on the loopback).
The layout is one subgroup of one shard holding every member, in the chosen delivery mode; the
``senders`` policy picks which members send (all, the first half, or the first one). Each
sender sends ``count`` messages of ``size`` bytes as fast as the group's backpressure lets it.

What is measured, in each member's own process and clock:

- throughput: the messages and bytes it delivered, over the time from its first delivery to its
  last (``messages_per_s`` and ``bytes_per_s`` are the median over the members);
- latency of a sender's own messages, from the application's ``send`` call to the message's
  delivery at the same member (``latency_us``, which at full speed includes the time a message
  waits for a window slot), and from the moment it went out on the wire, as Derecho times it
  (``wire_latency_us``);
- the CPU time each member used during the run (and per delivery: on a shared machine this is
  steadier than the rates, which also depend on what else runs), and optionally the CPU time
  it used while idle afterwards.

The parent process only coordinates: it starts the workers (``multiprocessing``, spawn), lets
them build their members once every one of them is up (so nobody is suspected for starting
slowly), gives one start signal, collects the results and always stops and reaps its children,
whatever went wrong. ``run_bench`` is the API; ``add_parser``/``run`` are the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from time import perf_counter
from typing import Any, Literal

from pyderecho.cli.argtypes import non_negative_int, positive_int
from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered, Event, MessageSent, Stopped, Suspected
from pyderecho.core.layout import Allocation, LayoutFunction, Mode, ShardLayout
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.runtime.member import Member
from pyderecho.transport.base import Transport

MiB = 1 << 20
TYPE_NAME = "Bench"
SENDER_POLICIES = ("all", "half", "one")
TRANSPORTS = ("shm", "tcp")
MODES = ("raw", "ordered")
DEFAULT_WINDOW_BYTES = 16 * MiB
"""Without ``--window``, a sender may have about this many bytes in flight (at most 100
messages): large messages get a smaller window so the transports' queues stay bounded."""

SenderPolicy = Literal["all", "half", "one"]


class BenchError(Exception):
    """The benchmark could not complete: a worker failed, stopped or ran out of time."""


@dataclass(frozen=True)
class BenchSpec:
    """One benchmark run."""

    nodes: int = 3
    senders: str = "all"
    count: int = 1000
    size: int = 100
    mode: str = "ordered"
    transport: str = "shm"
    window: int | None = None
    """Messages a sender may have in flight; ``None`` picks one from ``size``."""
    idle_s: float = 0.0
    """After the run, keep the group idle this long and report the CPU each member used."""
    timeout_s: float = 120.0
    """The whole run, start-up and shut-down included, must end within this."""
    profile: str | None = None
    """Write a cProfile of member 0's process (``pstats`` format) to this path."""
    heartbeat_timeout: float = CoreConfig().heartbeat_timeout

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"nodes must be at least 1, got {self.nodes}")
        if self.senders not in SENDER_POLICIES:
            raise ValueError(f"senders must be one of {', '.join(SENDER_POLICIES)}")
        if self.count < 0:
            raise ValueError(f"count must not be negative, got {self.count}")
        if self.size < 1:
            raise ValueError(f"size must be at least 1 byte, got {self.size}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")
        if self.idle_s < 0 or self.timeout_s <= 0:
            raise ValueError("idle_s must not be negative and timeout_s must be positive")

    @property
    def window_size(self) -> int:
        if self.window is not None:
            return self.window
        return max(2, min(100, DEFAULT_WINDOW_BYTES // self.size))

    @property
    def sending_members(self) -> tuple[NodeId, ...]:
        return sending_members(tuple(range(self.nodes)), self.senders)

    def core_config(self) -> CoreConfig:
        defaults = CoreConfig()
        return CoreConfig(
            window_size=self.window_size,
            max_message_size=max(self.size, defaults.block_size),
            heartbeat_timeout=self.heartbeat_timeout,
            heartbeat_interval=min(defaults.heartbeat_interval, self.heartbeat_timeout / 4),
        )

    def queue_bytes(self) -> int:
        """A per-peer send queue bound that the flow control can never reach: every sender's
        whole window, relayed or not, with room for the rows."""
        in_flight = len(self.sending_members) * self.window_size * (self.size + 256)
        return max(64 * MiB, 2 * in_flight)


def sending_members(members: tuple[NodeId, ...], policy: str) -> tuple[NodeId, ...]:
    """The members that send under ``policy``: all, the first half (at least one), or one."""
    if policy == "all":
        return members
    if policy == "half":
        return members[: max(1, len(members) // 2)]
    if policy == "one":
        return members[:1]
    raise ValueError(f"unknown senders policy {policy!r}")


def bench_layout(mode: Mode, senders: str) -> LayoutFunction:
    """One subgroup of one shard holding every member, in ``mode``; ``senders`` picks who
    sends (see :func:`sending_members`)."""

    def layout(view: View) -> Allocation:
        chosen = sending_members(view.members, senders)
        shard = ShardLayout(view.members, mode, senders=None if chosen == view.members else chosen)
        return {TYPE_NAME: [[shard]]}

    return layout


# -- the worker: one member in its own process -----------------------------------------------


@dataclass(frozen=True)
class _WorkerSpec:
    bench: BenchSpec
    node_id: NodeId
    addresses: dict[NodeId, str]
    listen: str
    group: str
    secret: bytes


@dataclass
class _Tally:
    """What one member saw, filled in by its event handler."""

    me: NodeId
    expected: int
    delivered: int = 0
    delivered_bytes: int = 0
    first: float = 0.0
    last: float = 0.0
    called_at: deque[float] = field(default_factory=deque)
    """When the application called ``send`` for each own message not yet delivered."""
    wire_at: dict[int, float] = field(default_factory=dict)
    """When each own message (by index) went out."""
    latency: array[float] = field(default_factory=lambda: array("d"))
    wire_latency: array[float] = field(default_factory=lambda: array("d"))
    trouble: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, event: Event) -> None:
        # Runs once per delivery: the clock is read only where needed (own messages, the first
        # and the last delivery), which keeps the bench's own share of the profile small.
        if isinstance(event, Delivered):
            delivered = self.delivered = self.delivered + 1
            self.delivered_bytes += len(event.payload)
            if event.sender == self.me:
                now = perf_counter()
                self.latency.append(now - self.called_at.popleft())
                sent = self.wire_at.pop(event.index, None)
                if sent is not None:
                    self.wire_latency.append(now - sent)
            if delivered == 1:
                self.first = perf_counter()
            if delivered >= self.expected:
                self.last = perf_counter()
                self.done.set()
        elif isinstance(event, MessageSent):
            self.wire_at[event.index] = perf_counter()
        elif isinstance(event, Stopped | Suspected) and not self.done.is_set():
            self.trouble.append(repr(event))
            self.done.set()


def _worker_main(spec: _WorkerSpec, conn: Connection) -> None:
    """The worker process's entry point: runs the member, reports over ``conn``."""
    profiler = None
    if spec.bench.profile is not None and spec.node_id == 0:
        import cProfile  # noqa: PLC0415 - only the profiled worker needs it

        profiler = cProfile.Profile()
    try:
        asyncio.run(_worker(spec, conn, profiler))
    except BaseException:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", spec.node_id, traceback.format_exc()))
        raise
    finally:
        if profiler is not None and spec.bench.profile is not None:
            profiler.dump_stats(spec.bench.profile)
        conn.close()


def _make_transport(spec: _WorkerSpec) -> Transport:
    bench = spec.bench
    if bench.transport == "tcp":
        from pyderecho.transport.tcp import TcpTransport  # noqa: PLC0415

        return TcpTransport(
            spec.node_id,
            spec.listen,
            group=spec.group,
            secret=spec.secret,
            max_send_queue_bytes=bench.queue_bytes(),
        )
    from pyderecho.transport.shm import ShmTransport  # noqa: PLC0415

    return ShmTransport(
        spec.node_id,
        spec.listen,
        group=spec.group,
        secret=spec.secret,
        max_send_queue_bytes=bench.queue_bytes(),
    )


async def _worker(spec: _WorkerSpec, conn: Connection, profiler: Any) -> None:
    bench = spec.bench
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def readable() -> None:
        try:
            commands.put_nowait(conn.recv())
        except (EOFError, OSError):  # the parent went away: stop
            loop.remove_reader(conn.fileno())
            commands.put_nowait("close")

    loop.add_reader(conn.fileno(), readable)
    conn.send(("ready", spec.node_id))
    if await commands.get() != "start":
        return
    members = tuple(range(bench.nodes))
    senders = bench.sending_members
    tally = _Tally(spec.node_id, expected=len(senders) * bench.count)
    node = Node(
        spec.node_id,
        View(0, members),
        bench_layout(Mode(bench.mode), bench.senders),
        bench.core_config(),
        now=loop.time(),
        addresses=spec.addresses,
    )
    transport = _make_transport(spec)
    member = Member(node, transport, on_event=tally.on_event)
    await member.start()
    try:
        async with asyncio.timeout(bench.timeout_s):
            while (
                transport.stats["connected"] < bench.nodes - 1
                or transport.stats["accepted"] < bench.nodes - 1
            ):
                await asyncio.sleep(0.005)  # only while the links open
        conn.send(("connected", spec.node_id))
        if await commands.get() != "go":
            return
        if profiler is not None:
            profiler.enable()
        cpu_start = time.process_time()
        started = time.perf_counter()
        if tally.expected == 0:
            tally.done.set()
        if spec.node_id in senders and bench.count:
            subgroup = node.layout.subgroup_ids[(TYPE_NAME, 0)]
            payload = secrets.token_bytes(bench.size)
            called_at = tally.called_at
            for _ in range(bench.count):
                called_at.append(time.perf_counter())
                await member.send(subgroup, payload)
        await tally.done.wait()
        cpu_run = time.process_time() - cpu_start
        if profiler is not None:
            profiler.disable()
        if tally.trouble:
            raise BenchError(f"member {spec.node_id}: {'; '.join(tally.trouble)}")
        result = {
            "node": spec.node_id,
            "delivered": tally.delivered,
            "delivered_bytes": tally.delivered_bytes,
            "first_s": tally.first - started if tally.delivered else 0.0,
            "last_s": tally.last - started if tally.delivered else 0.0,
            "cpu_s": cpu_run,
            "latency": tally.latency.tobytes(),
            "wire_latency": tally.wire_latency.tobytes(),
            "duplicates": node.duplicates,
            "rejected": dict(node.stats),
        }
        conn.send(("done", spec.node_id, result))
        command = await commands.get()
        if command == "idle":
            idle_start = time.process_time()
            command = await commands.get()
            conn.send(("idle", spec.node_id, time.process_time() - idle_start))
    finally:
        loop.remove_reader(conn.fileno())
        await member.close()


# -- the parent: start, coordinate, collect, always clean up ----------------------------------


def _free_ports(count: int) -> list[int]:
    """Ports free on the loopback now; the workers bind them a moment later (with
    ``SO_REUSEADDR``, which asyncio sets, so a port closed here can be bound at once)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _percentiles(samples: Sequence[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p99": None}
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1e6, 1)

    return {"p50": rank(0.50), "p99": rank(0.99)}


class _Group:
    """The worker processes of one run and the pipes to them."""

    def __init__(self, spec: BenchSpec) -> None:
        self.spec = spec
        self.deadline = time.monotonic() + spec.timeout_s
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[Any] = []
        self.conns: list[Connection] = []
        self.directory: str | None = None
        self.exit_codes: list[int | None] = []
        """Each worker's exit status once shut down: 0 when it closed its member cleanly."""

    def launch(self) -> None:
        spec = self.spec
        group = f"bench-{os.getpid()}-{secrets.token_hex(4)}"
        secret = secrets.token_bytes(32)
        if spec.transport == "tcp":
            listens = [f"127.0.0.1:{port}" for port in _free_ports(spec.nodes)]
            addresses = dict(enumerate(listens))
        else:
            self.directory = tempfile.mkdtemp(prefix="pyderecho-bench-")
            listens = [self.directory] * spec.nodes
            addresses = dict.fromkeys(range(spec.nodes), self.directory)
        for node in range(spec.nodes):
            ours, theirs = self.context.Pipe()
            worker = _WorkerSpec(spec, node, addresses, listens[node], group, secret)
            process = self.context.Process(
                target=_worker_main, args=(worker, theirs), name=f"pyderecho-bench-{node}"
            )
            process.daemon = True
            process.start()
            theirs.close()
            self.processes.append(process)
            self.conns.append(ours)

    def broadcast(self, command: str) -> None:
        for conn in self.conns:
            conn.send(command)

    def gather(self, kind: str) -> dict[NodeId, Any]:
        """Wait for one ``kind`` message from every worker; fail on an error, a dead worker
        or the deadline."""
        got: dict[NodeId, Any] = {}
        pending = dict(enumerate(self.conns))
        while pending:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"timed out after {self.spec.timeout_s} s waiting for {kind!r} from "
                    f"members {sorted(pending)}"
                )
            sentinels = {self.processes[n].sentinel: n for n in pending}
            ready = wait([*pending.values(), *sentinels], timeout=left)
            for item in ready:
                if isinstance(item, int):
                    node = sentinels[item]
                    if node in pending and not pending[node].poll():
                        code = self.processes[node].exitcode
                        raise BenchError(f"member {node} exited (code {code}) before {kind!r}")
                    continue
                assert isinstance(item, Connection)
                node = next(n for n, c in pending.items() if c is item)
                try:
                    message = item.recv()
                except EOFError:
                    raise BenchError(f"member {node} went away before {kind!r}") from None
                if message[0] == "error":
                    raise BenchError(f"member {message[1]} failed:\n{message[2]}")
                if message[0] != kind:
                    raise BenchError(f"member {node} said {message[0]!r}, expected {kind!r}")
                got[node] = message[2] if len(message) > 2 else None
                del pending[node]
        return got

    def shut_down(self) -> None:
        """Ask every worker to close, then make sure none is left running."""
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send("close")
        end = time.monotonic() + 10.0
        for process in self.processes:
            process.join(max(0.0, end - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(2.0)
            if process.is_alive():
                process.kill()
                process.join(2.0)
        for conn in self.conns:
            conn.close()
        self.exit_codes = [process.exitcode for process in self.processes]
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def run_bench(spec: BenchSpec) -> dict[str, Any]:
    """Run one benchmark; returns the report (see the module docstring). Raises
    :class:`BenchError` when the run cannot complete; its processes are gone either way."""
    group = _Group(spec)
    try:
        group.launch()
        group.gather("ready")
        group.broadcast("start")
        group.gather("connected")
        began = time.perf_counter()
        group.broadcast("go")
        results = group.gather("done")
        wall = time.perf_counter() - began
        idle: dict[NodeId, Any] = {}
        if spec.idle_s > 0:
            group.broadcast("idle")
            time.sleep(spec.idle_s)
            group.broadcast("report")
            idle = group.gather("idle")
    finally:
        group.shut_down()
    report = _report(spec, results, wall, idle)
    report["clean_exit"] = all(code == 0 for code in group.exit_codes)
    return report


def _report(
    spec: BenchSpec, results: dict[NodeId, Any], wall: float, idle: dict[NodeId, Any]
) -> dict[str, Any]:
    rates, byte_rates = [], []
    latency: array[float] = array("d")
    wire_latency: array[float] = array("d")
    for result in results.values():
        span = result["last_s"] - result["first_s"]
        delivered = result["delivered"]
        if delivered > 1 and span > 0:
            # n deliveries span n - 1 intervals; count the first's bytes out the same way.
            rates.append((delivered - 1) / span)
            byte_rates.append(result["delivered_bytes"] * (delivered - 1) / delivered / span)
        latency.frombytes(result["latency"])
        wire_latency.frombytes(result["wire_latency"])
    members = [results[node] for node in sorted(results)]
    report: dict[str, Any] = {
        "benchmark": "pyderecho bench",
        "nodes": spec.nodes,
        "senders": spec.senders,
        "sending_members": len(spec.sending_members),
        "count": spec.count,
        "size": spec.size,
        "mode": spec.mode,
        "transport": spec.transport,
        "window": spec.window_size,
        "delivered_per_member": statistics.median(r["delivered"] for r in members),
        "messages_per_s": round(statistics.median(rates)) if rates else None,
        "bytes_per_s": round(statistics.median(byte_rates)) if byte_rates else None,
        "latency_us": _percentiles(latency),
        "wire_latency_us": _percentiles(wire_latency),
        "wall_s": round(wall, 3),
        "cpu_s_per_member": [round(r["cpu_s"], 3) for r in members],
        "cpu_us_per_delivery": (
            round(statistics.median(r["cpu_s"] / r["delivered"] for r in members) * 1e6, 2)
            if all(r["delivered"] for r in members)
            else None
        ),
        "cpu_cores": os.cpu_count(),
        "duplicates": sum(r["duplicates"] for r in members),
        "rejected": [r["rejected"] for r in members if r["rejected"]],
    }
    if idle:
        report["idle_s"] = spec.idle_s
        report["idle_cpu_s_per_member"] = [round(idle[node], 4) for node in sorted(idle)]
    return report


# -- the command ------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def add_parser(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
) -> argparse.ArgumentParser:
    """Add ``bench`` to the ``pyderecho`` command's subcommands."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="time a real group of processes on this machine (throughput and latency)",
        description="Run a group of member processes on this machine, one shard of all of "
        "them, over shared memory or TCP, and time how fast they deliver: messages and bytes "
        "per second at each member, and the latency of each sender's own messages. Mirrors "
        "Derecho's bandwidth and latency programs.",
    )
    parser.add_argument("--nodes", type=positive_int, default=3, help="members (default: 3)")
    parser.add_argument(
        "--senders", choices=SENDER_POLICIES, default="all", help="who sends (default: all)"
    )
    parser.add_argument(
        "--count", type=non_negative_int, default=1000, help="messages per sender (default: 1000)"
    )
    parser.add_argument("--size", type=positive_int, default=100, help="bytes per message")
    parser.add_argument("--mode", choices=MODES, default="ordered")
    parser.add_argument("--transport", choices=TRANSPORTS, default="shm")
    parser.add_argument(
        "--window",
        type=positive_int,
        default=None,
        help="messages a sender may have in flight (default: 100, less for large messages)",
    )
    parser.add_argument(
        "--idle",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="then keep the group idle this long and report each member's CPU time",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=120.0,
        metavar="SECONDS",
        help="give up (and stop every worker) after this long (default: 120)",
    )
    parser.add_argument(
        "--profile", metavar="PATH", help="write a cProfile of member 0 (pstats format) here"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``pyderecho bench`` with parsed ``args``; 0 on success, 1 if the run failed, 2 for
    bad arguments."""
    try:
        spec = BenchSpec(
            nodes=args.nodes,
            senders=args.senders,
            count=args.count,
            size=args.size,
            mode=args.mode,
            transport=args.transport,
            window=args.window,
            idle_s=args.idle,
            timeout_s=args.timeout,
            profile=args.profile,
        )
    except ValueError as exc:
        print(f"pyderecho bench: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_bench(spec)
    except BenchError as exc:
        print(f"pyderecho bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{report['nodes']} members over {report['transport']}, {report['mode']}, "
        f"{report['sending_members']} sending {report['count']} x {report['size']} bytes "
        f"(window {report['window']}): {report['wall_s']} s"
    )
    rate, byte_rate = report["messages_per_s"], report["bytes_per_s"]
    if rate is not None:
        print(
            f"per member: {rate:,} messages/s, {byte_rate / 1e6:,.1f} MB/s "
            f"(median of {report['nodes']})"
        )
    latency, wire = report["latency_us"], report["wire_latency_us"]
    if latency["p50"] is not None:
        print(
            f"own-message latency: p50 {latency['p50']} us, p99 {latency['p99']} us from send; "
            f"p50 {wire['p50']} us, p99 {wire['p99']} us from the wire"
        )
    print(
        f"CPU s per member: {report['cpu_s_per_member']} "
        f"({report['cpu_us_per_delivery']} us per delivery)"
    )
    if "idle_cpu_s_per_member" in report:
        print(f"idle CPU s per member over {report['idle_s']} s: {report['idle_cpu_s_per_member']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pyderecho.cli.bench``: the command without the ``pyderecho`` front end."""
    parser = argparse.ArgumentParser(prog="pyderecho")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
