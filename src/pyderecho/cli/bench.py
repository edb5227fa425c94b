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
import dataclasses
import json
import math
import multiprocessing
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from array import array
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from time import perf_counter
from typing import Any, Literal

from pyderecho.cli.argtypes import non_negative_int, positive_int
from pyderecho.cli.demo import free_ports
from pyderecho.core import COMPILED
from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered, Event, MessageSent, Stopped, Suspected
from pyderecho.core.layout import Allocation, LayoutFunction, Mode, ShardLayout
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.replicated.events import StateLost, StateProgress, StateReceived
from pyderecho.replicated.methods import ordered, query
from pyderecho.runtime.group import REPLY_FORMS, Group
from pyderecho.runtime.loop import LOOP_KINDS, LoopKind, loop_factory, loop_in_use
from pyderecho.runtime.member import Member
from pyderecho.transport.base import Transport

MiB = 1 << 20
TYPE_NAME = "Bench"
SENDER_POLICIES = ("all", "half", "one")
TRANSPORTS = ("shm", "tcp")
MODES = ("raw", "ordered")

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
    block_size: int | None = None
    """The core's ``block_size`` (larger messages are relayed in blocks of it); ``None``: its
    default. Larger blocks cost less Python per byte and pipeline less along the chain."""
    idle_s: float = 0.0
    """After the run, keep the group idle this long and report the CPU each member used."""
    timeout_s: float = 120.0
    """The whole run, start-up and shut-down included, must end within this."""
    profile: str | None = None
    """Write a cProfile of member 0's process (``pstats`` format) to this path."""
    heartbeat_timeout: float = CoreConfig().heartbeat_timeout
    heartbeat_interval: float | None = None
    """Seconds between heartbeats; ``None``: the core's default, or a quarter of a shorter
    ``heartbeat_timeout``. Longer costs an idle group less CPU (``benchmarks/scale.py``)."""
    in_flight: int | None = None
    """Each sender waits for its own messages' delivery once this many are undelivered (1:
    one message in flight, the light-load latency); ``None``: only the window and the
    member's queue hold it back."""
    rate: float | None = None
    """Messages per second each sender offers, evenly spaced (an open loop: a message that
    is late to go out does not delay the next one's time); ``None``: as fast as it can."""
    loop: LoopKind = "auto"
    """The members' event loop: ``auto`` is uvloop's where installed (:mod:`.loop`)."""

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
            raise ValueError(
                f"mode must be one of {', '.join(MODES)} for the messages workload "
                f"(paxos: the objects workload), got {self.mode!r}"
            )
        _check_loop(self.loop)
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")
        if self.block_size is not None and self.block_size < 1:
            raise ValueError(f"block_size must be at least 1 byte, got {self.block_size}")
        if self.idle_s < 0 or self.timeout_s <= 0:
            raise ValueError("idle_s must not be negative and timeout_s must be positive")
        if self.in_flight is not None and self.in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, got {self.in_flight}")
        if self.rate is not None and not 0 < self.rate < math.inf:
            raise ValueError(f"rate must be a positive number of messages/s, got {self.rate}")

    @property
    def window_size(self) -> int:
        return CoreConfig().window_size if self.window is None else self.window

    @property
    def sending_members(self) -> tuple[NodeId, ...]:
        return sending_members(tuple(range(self.nodes)), self.senders)

    def core_config(self) -> CoreConfig:
        defaults = CoreConfig()
        block_size = defaults.block_size if self.block_size is None else self.block_size
        return CoreConfig(
            window_size=self.window_size,
            block_size=block_size,
            max_message_size=max(self.size, block_size),
            heartbeat_timeout=self.heartbeat_timeout,
            heartbeat_interval=(
                min(defaults.heartbeat_interval, self.heartbeat_timeout / 4)
                if self.heartbeat_interval is None
                else self.heartbeat_interval
            ),
        )

    def queue_bytes(self) -> int:
        """A per-peer send queue bound that the flow control can never reach: every sender's
        whole window, relayed or not, with room for the rows."""
        window, size = self.window_size, self.size
        per_sender = min(window * size, CoreConfig().window_bytes + size) + 256 * window
        in_flight = len(self.sending_members) * per_sender
        return max(64 * MiB, 2 * in_flight)


def core_in_use() -> str:
    """``compiled`` when the core runs as mypyc's extension modules, else ``python``: the
    figures differ by that much (README, "A compiled core"), so every report says which."""
    return "compiled" if COMPILED else "python"


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


# -- the replicated-object workload -----------------------------------------------------------

COUNTER_TYPE = "BenchCounter"
LOOKUP_TYPE = "BenchLookup"
STATE_TYPE = "BenchState"
WORKLOADS = ("messages", "objects")
DEFAULT_OBJECT_CALLS = 5000


class BenchCounter:
    """The replicated object of the calls phase: ``add`` runs on every replica in the shard's
    total order and returns the number of calls applied so far (a small int, the same at every
    replica); ``calls`` is a query of the same number."""

    calls: int
    received: int

    def __init__(self) -> None:
        self.calls = 0
        self.received = 0

    @ordered
    def add(self, value: bytes) -> int:
        self.calls += 1
        self.received += len(value)
        return self.calls

    @query
    def read(self, value: bytes) -> int:
        return self.calls + len(value)


class BenchState:
    """The replicated object of the state-transfer phase: ``fill`` makes its state ``size``
    bytes (a repeated pattern, the same at every replica)."""

    data: bytes

    def __init__(self) -> None:
        self.data = b""

    @ordered
    def fill(self, size: int) -> int:
        pattern = bytes(range(256))
        self.data = pattern * (size // 256) + pattern[: size % 256]
        return len(self.data)


OBJECT_TYPES: dict[str, type[Any]] = {
    COUNTER_TYPE: BenchCounter,
    LOOKUP_TYPE: BenchCounter,
    STATE_TYPE: BenchState,
}


def objects_layout(view: View) -> Allocation:
    """The calls phase's layout: ``BenchCounter``, one shard of every member, which every
    member calls; ``BenchLookup``, one shard of the first member alone, which the second
    member queries (a query to another member, not to its own replica)."""
    return _objects_allocation(view, Mode.ORDERED)


def paxos_objects_layout(view: View) -> Allocation:
    """:func:`objects_layout` with ``BenchCounter``'s shard in ``Paxos`` mode: a call is
    applied (and its replies come back) only once every member has logged it with
    ``fdatasync``. The lookup shard stays ordered: its queries are not updates."""
    return _objects_allocation(view, Mode.PAXOS)


def _objects_allocation(view: View, counter: Mode) -> Allocation:
    return {
        COUNTER_TYPE: [[ShardLayout(view.members, counter)]],
        LOOKUP_TYPE: [[ShardLayout(view.members[:1], Mode.ORDERED)]],
    }


OBJECT_LAYOUTS: dict[str, LayoutFunction] = {
    "ordered": objects_layout,
    "paxos": paxos_objects_layout,
}
OBJECT_MODES = tuple(OBJECT_LAYOUTS)
_REPLIES_TEXT = {"all": "every reply in", "own": "the caller's own replica applied it"}


def state_layout(view: View) -> Allocation:
    """The state phase's layout: ``BenchState``, one shard of every member."""
    return {STATE_TYPE: [[ShardLayout(view.members, Mode.ORDERED)]]}


@dataclass(frozen=True)
class ObjectsSpec:
    """One run of the replicated-object workload (``pyderecho bench --workload objects``)."""

    nodes: int = 3
    transport: str = "shm"
    mode: str = "ordered"
    """The counter's shard: ``ordered``, or ``paxos`` (every call logged with ``fdatasync`` at
    every member before it is applied; each member gets a fresh data directory)."""
    count: int = DEFAULT_OBJECT_CALLS
    """Ordered calls each member makes in the calls phase."""
    size: int = 100
    """Bytes of the calls' argument."""
    in_flight: int = 100
    """Calls each member keeps outstanding (as PySyncObj's baseline counts them)."""
    replies: str = "all"
    """What a call waits for (``Group.subgroup(..., replies=...)``): ``all``, every replica's
    reply; ``own``, the caller's own replica having applied it (and, in ``paxos`` mode, every
    replica having logged it)."""
    latency_calls: int = 300
    """Calls with one call in flight in the whole group, the members taking turns."""
    queries: int = DEFAULT_OBJECT_CALLS
    """Query calls from the second member to the first, ``in_flight`` outstanding."""
    state_bytes: int = 256 * MiB
    """The state a joiner receives in the state phase (0: no state phase)."""
    window: int | None = None
    """The core's window (messages a sender may have in flight); ``None``: its default."""
    timeout_s: float = 300.0
    """The whole run, every phase, start-up and shut-down included, must end within this."""
    profile: str | None = None
    """Write a cProfile of member 0's calls phase (``pstats`` format) to this path."""
    data_dir: str | None = None
    """In ``paxos`` mode, where the run's data directories go (a fresh temporary directory
    inside it, one directory per member, removed afterwards); ``None``: the system's
    temporary directory. Put it on the disk under test."""
    heartbeat_timeout: float = CoreConfig().heartbeat_timeout
    loop: LoopKind = "auto"
    """The members' event loop: ``auto`` is uvloop's where installed (:mod:`.loop`)."""

    def __post_init__(self) -> None:
        if self.nodes < 2:
            raise ValueError(f"nodes must be at least 2 for the object workload, got {self.nodes}")
        _check_loop(self.loop)
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}")
        if self.replies not in REPLY_FORMS:
            raise ValueError(
                f"replies must be one of {', '.join(REPLY_FORMS)}, got {self.replies!r}"
            )
        if self.mode not in OBJECT_MODES:
            raise ValueError(
                f"mode must be one of {', '.join(OBJECT_MODES)} for the object workload, "
                f"got {self.mode!r}"
            )
        if min(self.count, self.latency_calls, self.queries, self.state_bytes) < 0:
            raise ValueError("count, latency_calls, queries and state_bytes must not be negative")
        if self.size < 1 or self.in_flight < 1:
            raise ValueError("size and in_flight must be at least 1")
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.data_dir is not None and not os.path.isdir(self.data_dir):
            raise ValueError(f"data_dir {self.data_dir} is not a directory (make it first)")

    def core_config(self) -> CoreConfig:
        defaults = CoreConfig()
        return CoreConfig(
            window_size=defaults.window_size if self.window is None else self.window,
            heartbeat_timeout=self.heartbeat_timeout,
            heartbeat_interval=min(defaults.heartbeat_interval, self.heartbeat_timeout / 4),
        )

    def queue_bytes(self) -> int:
        return 64 * MiB


# -- the worker: one member in its own process -----------------------------------------------


@dataclass(frozen=True)
class _WorkerSpec:
    bench: BenchSpec | ObjectsSpec
    node_id: NodeId
    addresses: dict[NodeId, str]
    listen: str
    group: str
    secret: bytes
    role: str = "messages"
    """What the worker runs: ``messages`` (:class:`BenchSpec`), or for an
    :class:`ObjectsSpec` ``objects`` (the calls and queries) or ``state`` (the transfer)."""
    data_dir: str | None = None
    """The member's own fresh data directory (``paxos`` mode), made by the parent."""


def _check_loop(kind: LoopKind) -> None:
    """The spec's event loop can be had here (its workers would fail to start otherwise):
    ``loop_factory`` refuses an unknown kind with ``ValueError``, and a missing uvloop with
    ``RuntimeError``, which a spec reports as a bad argument too."""
    try:
        loop_factory(kind)
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None


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
    own_delivered: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at each delivery of an own message: a sender with a bound on messages in flight
    waits on it."""

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
                self.own_delivered.set()
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
    # The state phase's workers run no profiled phase: a profiler there would only overwrite
    # the calls phase's profile with an empty one.
    if spec.bench.profile is not None and spec.node_id == 0 and spec.role != "state":
        import cProfile  # noqa: PLC0415 - only the profiled worker needs it

        profiler = cProfile.Profile()
    try:
        with asyncio.Runner(loop_factory=loop_factory(spec.bench.loop)) as runner:
            if spec.role == "messages":
                runner.run(_worker(spec, conn, profiler))
            elif spec.role == "objects":
                runner.run(_objects_worker(spec, conn, profiler))
            else:
                runner.run(_state_worker(spec, conn))
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


def _command_queue(conn: Connection) -> asyncio.Queue[Any]:
    """The parent's commands, as they arrive on ``conn``; "close" if the parent goes away."""
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[Any] = asyncio.Queue()

    def readable() -> None:
        try:
            commands.put_nowait(conn.recv())
        except (EOFError, OSError):  # the parent went away: stop
            loop.remove_reader(conn.fileno())
            commands.put_nowait("close")

    loop.add_reader(conn.fileno(), readable)
    # uvloop makes a descriptor it watches non-blocking; this one also carries the worker's
    # results the other way, which must wait for room rather than fail with EAGAIN.
    os.set_blocking(conn.fileno(), True)
    return commands


async def _worker(spec: _WorkerSpec, conn: Connection, profiler: Any) -> None:
    bench = spec.bench
    assert isinstance(bench, BenchSpec)
    loop = asyncio.get_running_loop()
    commands = _command_queue(conn)
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
            await _send_all(member, subgroup, bench, tally)
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


async def _send_all(member: Member, subgroup: int, bench: BenchSpec, tally: _Tally) -> None:
    """Send this member's ``bench.count`` messages: as fast as the member takes them, or
    paced at ``bench.rate``, with at most ``bench.in_flight`` undelivered."""
    payload = secrets.token_bytes(bench.size)
    called_at = tally.called_at
    in_flight = bench.in_flight
    interval = 1.0 / bench.rate if bench.rate is not None else 0.0
    began = time.perf_counter()
    for index in range(bench.count):
        if interval:
            delay = began + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the offered load's pace, not a protocol step
        if in_flight is not None:
            while len(called_at) >= in_flight:
                tally.own_delivered.clear()
                await tally.own_delivered.wait()
        called_at.append(time.perf_counter())
        await member.send(subgroup, payload)


async def _wait_links(transport: Transport, peers: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while transport.stats["connected"] < peers or transport.stats["accepted"] < peers:
            await asyncio.sleep(0.005)  # only while the links open


async def _drive(
    call: Callable[[bytes], Awaitable[Any]],
    value: bytes,
    count: int,
    in_flight: int,
    expected: frozenset[NodeId] | None,
) -> dict[str, Any]:
    """``count`` calls of ``call(value)`` with ``in_flight`` outstanding (asyncio tasks, each
    issuing its next call when the last one's result is in): how long they took, the latency
    of each, and those whose result was wrong. ``expected``: an ordered call's repliers, each
    of which must have returned the same int; otherwise a query, which must return an int."""
    latency: array[float] = array("d")
    problems: list[str] = []
    issued = completed = 0

    async def lane() -> None:
        nonlocal issued, completed
        while issued < count:
            issued += 1
            began = perf_counter()
            result = await call(value)
            latency.append(perf_counter() - began)
            completed += 1
            if expected is None:
                good = type(result) is int
            else:
                # Every replica replied, with the same int (a RemoteError is no int).
                values = result.values()
                good = (
                    result.keys() == expected
                    and all(type(v) is int for v in values)
                    and len(set(values)) == 1
                )
            if not good:
                problems.append(repr(result)[:200])

    cpu = time.process_time()
    started = perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(in_flight, count))))
    elapsed = perf_counter() - started
    return {
        "calls": count,
        "completed": completed,
        "failed": len(problems),
        "problems": problems[:3],
        "elapsed_s": elapsed,
        "cpu_s": time.process_time() - cpu,
        "latency": latency.tobytes(),
    }


async def _objects_worker(spec: _WorkerSpec, conn: Connection, profiler: Any) -> None:
    """A member of the calls phase: every member calls ``BenchCounter.add``; on the parent's
    commands, the calls (all at once), one member's lone calls, or queries to member 0."""
    bench = spec.bench
    assert isinstance(bench, ObjectsSpec)
    loop = asyncio.get_running_loop()
    commands = _command_queue(conn)
    conn.send(("ready", spec.node_id))
    if await commands.get() != "start":
        return
    members = tuple(range(bench.nodes))
    transport = _make_transport(spec)
    # No event handler: the bench's share of each call stays small. A suspicion shows as a
    # view change, checked after each phase.
    group = await Group.over(
        transport,
        member_id=spec.node_id,
        layout=OBJECT_LAYOUTS[bench.mode],
        types=OBJECT_TYPES,
        members=members,
        addresses=spec.addresses,
        config=bench.core_config(),
        data_dir=spec.data_dir,
    )
    try:
        await _wait_links(transport, bench.nodes - 1, bench.timeout_s)
        conn.send(("connected", spec.node_id))
        value = secrets.token_bytes(bench.size)
        own = bench.replies == "own"
        add = group.subgroup(COUNTER_TYPE, replies=bench.replies).add  # type: ignore
        # An own-reply call returns its one int, like a query; otherwise every replica's.
        everyone = None if own else frozenset(members)
        while isinstance(command := await commands.get(), tuple):
            kind, count = command
            logged = _log_stats(group)
            if kind == "calls":
                if profiler is not None:
                    profiler.enable()
                result = await _drive(add, value, count, bench.in_flight, everyone)
                if profiler is not None:
                    profiler.disable()
                result["duplicates"] = group.member.node.duplicates
            elif kind == "latency":
                result = await _drive(add, value, count, 1, everyone)
            else:
                read = group.shard(LOOKUP_TYPE, 0).read
                result = await _drive(read, value, count, bench.in_flight, None)
            if logged is not None:
                now = _log_stats(group) or {}
                result["log"] = {key: now.get(key, 0) - logged.get(key, 0) for key in now}
            node = group.member.node
            if node.stopped or group.view.epoch != 0:
                raise BenchError(
                    f"member {spec.node_id} during {kind}: "
                    f"{node.stopped or f'view changed to {group.view}'}"
                )
            conn.send((kind, spec.node_id, result))
    finally:
        loop.remove_reader(conn.fileno())
        await group.close()


def _log_stats(group: Group) -> dict[str, int] | None:
    """The member's shard-log writer's counts so far (syncs, records, ...); ``None`` when it
    logs nothing (no data directory)."""
    logs = group.member.logs
    return None if logs is None else logs.stats()


async def _state_worker(spec: _WorkerSpec, conn: Connection) -> None:
    """A member of the state phase: member 0 founds the group alone and fills its state;
    member 1, on the parent's word, joins and receives that state."""
    bench = spec.bench
    assert isinstance(bench, ObjectsSpec)
    loop = asyncio.get_running_loop()
    commands = _command_queue(conn)
    conn.send(("ready", spec.node_id))
    if await commands.get() != "start":
        return
    trouble: list[str] = []
    received = asyncio.Event()
    marks: dict[str, float] = {}
    sizes: dict[str, int] = {}

    def on_event(event: Any) -> None:
        if isinstance(event, StateProgress) and "first_chunk" not in marks:
            marks["first_chunk"] = perf_counter()
        elif isinstance(event, StateReceived):
            marks["received"] = perf_counter()
            sizes["received"] = event.size
            if event.lost:
                trouble.append(f"state lost: {event!r}")
            received.set()
        elif isinstance(event, Stopped | Suspected | StateLost):
            trouble.append(repr(event))
            received.set()

    transport = _make_transport(spec)
    founder = spec.node_id == 0
    began = perf_counter()
    group = await Group.over(
        transport,
        member_id=spec.node_id,
        layout=state_layout,
        types={STATE_TYPE: BenchState},
        members=(0,) if founder else None,
        contacts=() if founder else (0,),
        addresses=spec.addresses,
        config=bench.core_config(),
        on_event=on_event,
    )
    try:
        async with asyncio.timeout(bench.timeout_s):
            if founder:
                await group.wait_ready(STATE_TYPE, timeout=bench.timeout_s)
                filling = perf_counter()
                replies = await group.subgroup(STATE_TYPE).fill(bench.state_bytes)  # type: ignore[union-attr]
                size = replies.value()
                result = {"fill_s": perf_counter() - filling, "state_bytes": size}
                kind = "filled"
            else:
                await received.wait()
                replica = group.replica(STATE_TYPE)
                result = {
                    "state_bytes": None if replica is None else len(replica.data),
                    "encoded_bytes": sizes.get("received"),
                    "join_to_received_s": marks.get("received", began) - began,
                    "first_chunk_to_received_s": (
                        marks["received"] - marks["first_chunk"]
                        if "received" in marks and "first_chunk" in marks
                        else None
                    ),
                    "join_to_first_chunk_s": marks.get("first_chunk", began) - began,
                }
                kind = "received"
        if trouble:
            raise BenchError(f"member {spec.node_id}: {'; '.join(trouble)}")
        conn.send((kind, spec.node_id, result))
        await commands.get()  # "close", or the parent went away
    finally:
        loop.remove_reader(conn.fileno())
        await group.close()


# -- the parent: start, coordinate, collect, always clean up ----------------------------------


def _percentiles(samples: Sequence[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p99": None}
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1e6, 1)

    return {"p50": rank(0.50), "p99": rank(0.99)}


class _Group:
    """The worker processes of one run and the pipes to them."""

    def __init__(
        self, spec: BenchSpec | ObjectsSpec, *, nodes: int | None = None, role: str = "messages"
    ) -> None:
        self.spec = spec
        self.nodes = spec.nodes if nodes is None else nodes
        self.role = role
        self.deadline = time.monotonic() + spec.timeout_s
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[Any] = []
        self.conns: list[Connection] = []
        self.directory: str | None = None
        self.data_root: str | None = None
        """``paxos`` mode: the run's fresh directory, one subdirectory per member."""
        self.exit_codes: list[int | None] = []
        """Each worker's exit status once shut down: 0 when it closed its member cleanly."""

    def launch(self) -> None:
        spec = self.spec
        group = f"bench-{os.getpid()}-{secrets.token_hex(4)}"
        secret = secrets.token_bytes(32)
        if spec.transport == "tcp":
            listens = [f"127.0.0.1:{port}" for port in free_ports(self.nodes)]
            addresses = dict(enumerate(listens))
        else:
            self.directory = tempfile.mkdtemp(prefix="pyderecho-bench-")
            listens = [self.directory] * self.nodes
            addresses = dict.fromkeys(range(self.nodes), self.directory)
        data_dirs: list[str | None] = [None] * self.nodes
        if isinstance(spec, ObjectsSpec) and spec.mode == "paxos" and self.role == "objects":
            self.data_root = tempfile.mkdtemp(prefix="pyderecho-bench-data-", dir=spec.data_dir)
            for node in range(self.nodes):
                data_dir = os.path.join(self.data_root, f"member-{node}")
                os.mkdir(data_dir)
                data_dirs[node] = data_dir
        for node in range(self.nodes):
            ours, theirs = self.context.Pipe()
            worker = _WorkerSpec(
                spec, node, addresses, listens[node], group, secret, self.role, data_dirs[node]
            )
            process = self.context.Process(
                target=_worker_main, args=(worker, theirs), name=f"pyderecho-bench-{node}"
            )
            process.daemon = True
            process.start()
            theirs.close()
            self.processes.append(process)
            self.conns.append(ours)

    def broadcast(self, command: Any) -> None:
        for conn in self.conns:
            conn.send(command)

    def tell(self, node: NodeId, command: Any) -> None:
        self.conns[node].send(command)

    def gather(self, kind: str, nodes: Sequence[NodeId] | None = None) -> dict[NodeId, Any]:
        """Wait for one ``kind`` message from every worker (or those in ``nodes``); fail on
        an error, a dead worker or the deadline."""
        got: dict[NodeId, Any] = {}
        pending = {
            node: conn for node, conn in enumerate(self.conns) if nodes is None or node in nodes
        }
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
        for directory in (self.directory, self.data_root):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)


def run_bench(spec: BenchSpec) -> dict[str, Any]:
    """Run one benchmark; returns the report (see the module docstring). Raises
    :class:`BenchError` when the run cannot complete; its processes are gone either way."""
    group = _Group(spec)
    try:
        group.launch()
        group.gather("ready")
        starting = time.perf_counter()
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
    report["links_s"] = round(began - starting, 3)
    report["clean_exit"] = all(code == 0 for code in group.exit_codes)
    return report


def run_objects(spec: ObjectsSpec) -> dict[str, Any]:
    """Run the replicated-object workload; returns its report. Raises :class:`BenchError`
    when a phase cannot complete, or a call came back wrong; its processes are gone either way.

    Phases: ``calls`` (every member calls ``add`` with ``in_flight`` outstanding, all at once;
    a call counts once every replica's reply is in), ``latency`` (one call in flight in the
    whole group, the members taking turns), ``queries`` (member 1 queries member 0's
    replica, ``in_flight`` outstanding), then ``state_transfer`` in a group of its own (member
    0 holds a state of ``state_bytes``; member 1 joins and receives it).

    With ``mode="paxos"`` the counter's shard is a ``Paxos`` shard: a call is applied, and
    counts, only once every member has logged it with ``fdatasync``. Each member gets a fresh
    data directory in a temporary directory made in ``spec.data_dir`` (removed afterwards),
    and the calls and latency phases report each member's ``fdatasync`` calls and records
    (``log``). The state phase stays ordered: it measures the transfer, not the disk."""
    load_before = os.getloadavg()
    began = time.perf_counter()
    deadline = time.monotonic() + spec.timeout_s
    group = _Group(spec, role="objects")
    calls: dict[NodeId, Any] = {}
    lone: dict[NodeId, Any] = {}
    queries: dict[NodeId, Any] = {}
    try:
        group.launch()
        group.gather("ready")
        group.broadcast("start")
        group.gather("connected")
        if spec.count:
            group.broadcast(("calls", spec.count))
            calls = group.gather("calls")
        shares = _shares(spec.latency_calls, spec.nodes)
        for node, share in enumerate(shares):
            if share:
                group.tell(node, ("latency", share))
                lone |= group.gather("latency", [node])
        if spec.queries:
            group.tell(1, ("queries", spec.queries))
            queries = group.gather("queries", [1])
    finally:
        group.shut_down()
    clean = all(code == 0 for code in group.exit_codes)
    state: dict[str, Any] | None = None
    if spec.state_bytes:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"timed out after {spec.timeout_s} s before the state phase")
        state_spec = dataclasses.replace(spec, timeout_s=left)
        pair = _Group(state_spec, nodes=2, role="state")
        try:
            pair.launch()
            pair.gather("ready")
            pair.tell(0, "start")
            filled = pair.gather("filled", [0])[0]
            pair.tell(1, "start")
            state = pair.gather("received", [1])[1] | {"fill_s": filled["fill_s"]}
        finally:
            pair.shut_down()
        clean = clean and all(code == 0 for code in pair.exit_codes)
    report = _objects_report(spec, calls, lone, queries, state)
    report["wall_s"] = round(time.perf_counter() - began, 3)
    report["load_average"] = {
        "before": [round(load, 2) for load in load_before],
        "after": [round(load, 2) for load in os.getloadavg()],
    }
    report["clean_exit"] = clean
    failed = [
        f"{phase} at member {node}: {result['problems']}"
        for phase, results in (("calls", calls), ("latency", lone), ("queries", queries))
        for node, result in results.items()
        if result["failed"] or result["completed"] != result["calls"]
    ]
    if failed:
        raise BenchError("calls came back wrong: " + "; ".join(failed))
    if state is not None and state["state_bytes"] != spec.state_bytes:
        raise BenchError(f"the joiner holds {state['state_bytes']} bytes, not {spec.state_bytes}")
    return report


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _phase(results: dict[NodeId, Any]) -> dict[str, Any]:
    """Calls per second of each member (its calls over its own span, every result in), their
    median and sum, latency percentiles over every call, and CPU time."""
    members = [results[node] for node in sorted(results)]
    latency: array[float] = array("d")
    for result in members:
        latency.frombytes(result["latency"])
    rates = [r["completed"] / r["elapsed_s"] if r["elapsed_s"] > 0 else 0.0 for r in members]
    completed = sum(r["completed"] for r in members)
    cpu = [r["cpu_s"] for r in members]
    return {
        "members": sorted(results),
        "calls": sum(r["calls"] for r in members),
        "completed": completed,
        "failed": sum(r["failed"] for r in members),
        "calls_per_s_per_member": [round(rate) for rate in rates],
        "calls_per_s_member_median": round(statistics.median(rates)) if rates else None,
        "calls_per_s_group": round(sum(rates)),
        "elapsed_s": [round(r["elapsed_s"], 3) for r in members],
        "latency_us": _percentiles(latency),
        "cpu_s_per_member": [round(c, 3) for c in cpu],
        "cpu_us_per_call": round(1e6 * sum(cpu) / completed, 1) if completed else None,
    }


def _objects_report(
    spec: ObjectsSpec,
    calls: dict[NodeId, Any],
    lone: dict[NodeId, Any],
    queries: dict[NodeId, Any],
    state: dict[str, Any] | None,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "pyderecho bench",
        "workload": "objects",
        "nodes": spec.nodes,
        "transport": spec.transport,
        "mode": spec.mode,
        "replies": spec.replies,
        "size": spec.size,
        "count": spec.count,
        "in_flight": spec.in_flight,
        "window": spec.core_config().window_size,
        "cpu_cores": os.cpu_count(),
        "event_loop": loop_in_use(spec.loop),
        "core": core_in_use(),
    }
    if spec.mode == "paxos":
        report["data_dir"] = spec.data_dir or tempfile.gettempdir()
    if calls:
        report["calls"] = _phase(calls) | {
            "duplicates": sum(r["duplicates"] for r in calls.values())
        }
        if any("log" in r for r in calls.values()):
            report["calls"]["log"] = _log_report(calls)
    if lone:
        phase = _phase(lone)
        report["latency_one_in_flight"] = {
            "calls": phase["completed"],
            "failed": phase["failed"],
            "latency_us": phase["latency_us"],
            "calls_per_s": round(phase["completed"] / sum(r["elapsed_s"] for r in lone.values())),
        }
        if any("log" in r for r in lone.values()):
            report["latency_one_in_flight"]["log"] = _log_report(lone)
    if queries:
        phase = _phase(queries)
        report["queries"] = {
            "from": 1,
            "to": 0,
            "queries": phase["calls"],
            "completed": phase["completed"],
            "failed": phase["failed"],
            "in_flight": spec.in_flight,
            "queries_per_s": phase["calls_per_s_group"],
            "latency_us": phase["latency_us"],
            "cpu_s": phase["cpu_s_per_member"][0],
        }
    if state is not None:
        size = spec.state_bytes
        whole = state["join_to_received_s"]
        chunks = state["first_chunk_to_received_s"]
        report["state_transfer"] = {
            "state_bytes": size,
            "received_bytes": state["state_bytes"],
            "encoded_bytes": state["encoded_bytes"],
            "seconds": round(whole, 3),
            "mib_per_s": round(size / MiB / whole, 1) if whole > 0 else None,
            "first_chunk_to_received_s": None if chunks is None else round(chunks, 3),
            "chunks_mib_per_s": round(size / MiB / chunks, 1) if chunks else None,
            "join_to_first_chunk_s": round(state["join_to_first_chunk_s"], 3),
            "fill_s": round(state["fill_s"], 3),
        }
    return report


def _log_report(results: dict[NodeId, Any]) -> dict[str, Any]:
    """Each member's shard-log writer over one phase: its ``fdatasync`` calls, the records
    they made durable, and records per sync (group commit: more than one when calls arrive
    while a sync is under way). In the latency phase each member counts its own writer over
    its own turn."""
    members = sorted(results)
    syncs = [results[node].get("log", {}).get("syncs", 0) for node in members]
    records = [results[node].get("log", {}).get("records", 0) for node in members]
    per_sync = [r / s for r, s in zip(records, syncs, strict=True) if s]
    return {
        "syncs_per_member": syncs,
        "records_per_member": records,
        "records_per_sync": round(statistics.median(per_sync), 2) if per_sync else None,
    }


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
        "block_size": spec.core_config().block_size,
        "in_flight": spec.in_flight,
        "rate": spec.rate,
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
        "event_loop": loop_in_use(spec.loop),
        "core": core_in_use(),
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


def _positive_rate(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 messages per second")
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
    parser.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="messages",
        help="messages: multicast bytes (default); objects: a replicated object's ordered "
        "calls, lone calls, queries and a state transfer",
    )
    parser.add_argument("--nodes", type=positive_int, default=3, help="members (default: 3)")
    parser.add_argument(
        "--senders", choices=SENDER_POLICIES, default="all", help="who sends (default: all)"
    )
    parser.add_argument(
        "--count",
        type=non_negative_int,
        default=None,
        help="messages per sender (default: 1000), or with objects ordered calls per member "
        f"(default: {DEFAULT_OBJECT_CALLS})",
    )
    parser.add_argument(
        "--size", type=positive_int, default=100, help="bytes per message or call argument"
    )
    parser.add_argument(
        "--mode",
        choices=tuple(dict.fromkeys((*MODES, *OBJECT_MODES))),
        default="ordered",
        help="messages: raw or ordered (default); objects: ordered (default) or paxos (every "
        "call logged with fdatasync at every member before it is applied)",
    )
    parser.add_argument("--transport", choices=TRANSPORTS, default="shm")
    parser.add_argument(
        "--window",
        type=positive_int,
        default=None,
        help=(
            "messages a sender may have in flight (default: the core's window_size; its "
            "window_bytes bounds large messages)"
        ),
    )
    parser.add_argument(
        "--block-size",
        type=positive_int,
        default=None,
        help="messages: the core's block_size, bytes (default 262144); larger messages are "
        "relayed member to member in blocks of it",
    )
    parser.add_argument(
        "--in-flight",
        type=positive_int,
        default=None,
        help="messages: each sender waits for its own messages' delivery once this many are "
        "undelivered (1: light-load latency; default: no bound but the window); objects: calls "
        "(and queries) each member keeps outstanding (default: 100)",
    )
    parser.add_argument(
        "--rate",
        type=_positive_rate,
        default=None,
        help="messages: messages per second each sender offers, evenly spaced (default: as "
        "fast as it can)",
    )
    objects = parser.add_argument_group("the objects workload")
    objects.add_argument(
        "--latency-calls",
        type=non_negative_int,
        default=300,
        help="calls with one in flight in the whole group, members taking turns (default: 300)",
    )
    objects.add_argument(
        "--replies",
        choices=REPLY_FORMS,
        default="all",
        help="what a call waits for: all, every replica's reply (default); own, the caller's "
        "own replica having applied it",
    )
    objects.add_argument(
        "--queries",
        type=non_negative_int,
        default=None,
        help="query calls from member 1 to member 0 (default: as --count)",
    )
    objects.add_argument(
        "--state-mib",
        type=non_negative_int,
        default=256,
        help="MiB of state a joiner receives (default: 256; 0: no state phase)",
    )
    objects.add_argument(
        "--data-dir",
        metavar="ROOT",
        default=None,
        help="with --mode paxos: make the members' fresh data directories in ROOT (removed "
        "afterwards; default: the system's temporary directory)",
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
        default=None,
        metavar="SECONDS",
        help="give up (and stop every worker) after this long (default: 120, objects: 300)",
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        help="write a cProfile of member 0 (pstats format) here (objects: its calls phase)",
    )
    parser.add_argument(
        "--loop",
        choices=LOOP_KINDS,
        default="auto",
        help="the members' event loop (default: auto, uvloop's where installed)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``pyderecho bench`` with parsed ``args``; 0 on success, 1 if the run failed, 2 for
    bad arguments."""
    if getattr(args, "workload", "messages") == "objects":
        return _run_objects(args)
    try:
        spec = BenchSpec(
            nodes=args.nodes,
            senders=args.senders,
            count=1000 if args.count is None else args.count,
            size=args.size,
            mode=args.mode,
            transport=args.transport,
            window=args.window,
            block_size=args.block_size,
            idle_s=args.idle,
            timeout_s=120.0 if args.timeout is None else args.timeout,
            loop=args.loop,
            profile=args.profile,
            in_flight=args.in_flight,
            rate=args.rate,
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


def _run_objects(args: argparse.Namespace) -> int:
    if args.block_size is not None:
        print("pyderecho bench: --block-size is for the messages workload", file=sys.stderr)
        return 2
    count = DEFAULT_OBJECT_CALLS if args.count is None else args.count
    try:
        spec = ObjectsSpec(
            nodes=args.nodes,
            transport=args.transport,
            mode=args.mode,
            count=count,
            size=args.size,
            in_flight=100 if args.in_flight is None else args.in_flight,
            replies=args.replies,
            latency_calls=args.latency_calls,
            queries=count if args.queries is None else args.queries,
            state_bytes=args.state_mib * MiB,
            window=args.window,
            timeout_s=300.0 if args.timeout is None else args.timeout,
            loop=args.loop,
            profile=args.profile,
            data_dir=args.data_dir,
        )
    except ValueError as exc:
        print(f"pyderecho bench: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_objects(spec)
    except BenchError as exc:
        print(f"pyderecho bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{report['nodes']} members over {report['transport']}, a replicated object "
        f"({report['mode']}), "
        f"{report['size']}-byte argument, {report['in_flight']} calls in flight per member: "
        f"{report['wall_s']} s"
    )
    if "calls" in report:
        calls = report["calls"]
        print(
            f"{report['mode']} calls, {_REPLIES_TEXT[report['replies']]}: "
            f"{calls['calls_per_s_member_median']:,} "
            "calls/s per "
            f"member (median), {calls['calls_per_s_group']:,} in the group; latency p50 "
            f"{calls['latency_us']['p50']} us, p99 {calls['latency_us']['p99']} us"
        )
        if "log" in calls:
            log = calls["log"]
            print(
                f"fdatasync calls per member: {log['syncs_per_member']}, "
                f"{log['records_per_sync']} records per sync (median)"
            )
    if "latency_one_in_flight" in report:
        lone = report["latency_one_in_flight"]["latency_us"]
        print(f"one call in flight: latency p50 {lone['p50']} us, p99 {lone['p99']} us")
    if "queries" in report:
        queries = report["queries"]
        print(
            f"queries from member 1 to member 0: {queries['queries_per_s']:,}/s; latency p50 "
            f"{queries['latency_us']['p50']} us, p99 {queries['latency_us']['p99']} us"
        )
    if "state_transfer" in report:
        state = report["state_transfer"]
        print(
            f"state transfer of {state['state_bytes'] / MiB:,.0f} MiB to a joiner: "
            f"{state['seconds']} s from its join request, {state['mib_per_s']} MiB/s"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pyderecho.cli.bench``: the command without the ``pyderecho`` front end."""
    parser = argparse.ArgumentParser(prog="pyderecho")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
