"""Durable baselines: a three-member etcd cluster and a three-member ZooKeeper ensemble.

pyderecho's persistent mode (``Paxos`` shards) delivers an ordered update only once it is
``fdatasync``-ed at every replica. The systems it is judged against here are the two best known
replicated stores that are durable as they ship, run on this machine, on the loopback, in the
same run:

- etcd (Debian's ``etcd-server``, 3.4.x): Raft; the leader and each follower append every
  entry to their write-ahead log and ``fdatasync`` it before acknowledging (nothing here passes
  ``--unsafe-no-fsync``); a put is answered once a majority has it on disk and it is applied.
- ZooKeeper (Debian's ``zookeeper``, 3.8.x): Zab; every server logs a proposal to its
  transaction log and ``fsync``-s it before acknowledging (``forceSync=yes``, the default, not
  overridden); an update is answered once a quorum has logged it and it is committed.

Both commit at a majority (two of three), where pyderecho waits for all three: that difference
belongs to the systems and is part of what is compared.

Setup (``start_etcd_cluster`` / ``start_zookeeper_ensemble``): three server processes on
``127.0.0.1``, each with its own ports (free when the cluster starts) and its own fresh data
directory under one temporary directory (``data_root``, default the system's temporary
directory; put it on the disk under test), every setting at the shipped default except
addresses, names and directories. ZooKeeper also gets ``admin.enableServer=false`` (its HTTP
admin server would take port 8080 on all three) and the ``srvr`` four-letter word (to read
each server's version and role). A cluster counts as started once an update through every
member has been acknowledged; a member that exits or a deadline that passes raises an error
with the tail of each server's log. Stopping sends SIGTERM, then SIGKILL after a deadline, and
removes the directory. The servers get SIGKILL if the thread that started them dies first.

Workload, for each system (``measure_etcd`` / ``measure_zookeeper``, each on a fresh cluster):

- throughput: ``in_flight`` updates outstanding (default 48: 16 per member), spread evenly
  over the three members' client ports, each slot re-issuing its next update as soon as the
  last is acknowledged; each update writes a 100-byte value (random bytes) to a key of its
  own slot. ``updates_per_s`` counts the acknowledged updates in ``seconds`` after
  ``warmup_s``. etcd: a v3 KV put (``POST /v3/kv/put``, the JSON gateway etcd serves on its
  client port) on one HTTP/1.1 keep-alive connection per slot, written here on asyncio
  streams. ZooKeeper: ``setData`` (kazoo ``set_async``, any version) on an existing znode, one
  kazoo session per slot by default (as etcd gets one connection per slot), or
  ``--zk-sessions-per-member`` sessions per member with the slots pipelined on them.
- latency: one update in flight in the whole cluster, the members taking turns;
  ``latency_ms_p50`` / ``latency_ms_p99`` over ``latency_updates`` updates.

Both run in this process (etcd on an asyncio loop, ZooKeeper on kazoo's threads) and share
the CPUs with the servers; ``client_cpu`` (CPU seconds of this process per second of the
window) and ``server_cpu`` (of the three servers together) say how busy each side was, so a
client-bound figure shows. The host's ``fdatasync`` latency for a 100-byte append
(``fdatasync_latency_ms``, in ``data_root``) is recorded with each run of ``main``: it is a
floor under every durable system here. A disk that acknowledges ``fdatasync`` from a write
cache (tens of microseconds, as virtual disks often do) leaves all of them CPU-bound.

Needs the servers (``sudo bash benchmarks/setup_durable_baselines.sh``) and, for ZooKeeper,
``kazoo`` (``pip install kazoo``). Prints one JSON object: per system the version, the medians
over ``--repeats`` runs (each on a fresh cluster) and the runs::

    .venv-fast/bin/python benchmarks/durable_baselines.py [--system etcd|zookeeper|all]
        [--seconds 5] [--warmup 1] [--in-flight 48] [--repeats 3] [--latency-updates 300]
        [--data-root DIR] [--zk-sessions-per-member N]

    {"benchmark": "durable_baselines", "members": 3, "value_bytes": 100, "in_flight": 48,
     "seconds": 5.0, "warmup_s": 1.0, "repeats": 3, "latency_updates": 300, "data_root": ...,
     "cpus": 2, "fdatasync_ms": {"p50": ..., "p99": ..., "count": 200.0}, "java": "...",
     "etcd": {"version": "3.4.23", "durability": "...", "updates_per_s": <median>,
              "latency_ms_p50": <median>, "latency_ms_p99": <median>,
              "loaded_latency_ms_p50": ..., "loaded_latency_ms_p99": ...,
              "client_cpu": ..., "server_cpu": ..., "runs": [<measure_etcd's dict>, ...]},
     "zookeeper": {... the same ...},
     "load_avg": {"before": [...], "after": [...]}}

Another script can import this file (through ``sys.path``, as ``objects_compare.py`` imports
``pysyncobj_baseline``) and call ``measure_etcd`` / ``measure_zookeeper``; importing it starts
nothing and needs neither server nor ``kazoo``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import importlib
import json
import logging
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyderecho.cli.demo import free_ports

MEMBERS = 3
VALUE_BYTES = 100
HOST = "127.0.0.1"
"""Loopback only: every server binds and every client connects here."""

DEFAULT_IN_FLIGHT = 3 * 16
DEFAULT_SECONDS = 5.0
DEFAULT_WARMUP_S = 1.0
DEFAULT_LATENCY_UPDATES = 300

STARTUP_TIMEOUT_S = 60.0
"""Process start (a JVM on a busy machine), leader election, one update through each member."""
STOP_TIMEOUT_S = 10.0
"""After SIGTERM, how long a server may take to exit before SIGKILL."""
REQUEST_TIMEOUT_S = 10.0
"""A single update that takes longer than this fails the run."""
DRAIN_TIMEOUT_S = 15.0
"""After a throughput window, how long the outstanding updates may take."""
LATENCY_PHASE_CAP_S = 60.0
"""The latency phase stops after this long, whatever it has measured."""
LOG_TAIL_BYTES = 3000

ETCD_BINARY = "etcd"
JAVA_BINARY = "java"
ZOOKEEPER_JAR = "/usr/share/java/zookeeper.jar"
"""Debian's jar; its manifest's ``Class-Path`` names the libraries it needs."""
SLF4J_SIMPLE_JAR = "/usr/share/java/slf4j-simple.jar"
"""Debian ships ZooKeeper without an SLF4J binding (its log goes nowhere); this one, when
installed, sends it to stderr, that is to the server's log file here."""
ZOOKEEPER_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
ZOOKEEPER_VERSION_MAIN = "org.apache.zookeeper.version.VersionInfoMain"

ETCD_DURABILITY = "WAL fdatasync before every acknowledgement (etcd default; no --unsafe-no-fsync)"
ZOOKEEPER_DURABILITY = "transaction log fsync before every acknowledgement (forceSync=yes default)"


# -- helpers ------------------------------------------------------------------------------------


def _percentiles(samples_ms: list[float]) -> tuple[float, float]:
    """(p50, p99) of ``samples_ms``; NaN for no samples."""
    if not samples_ms:
        return float("nan"), float("nan")
    if len(samples_ms) == 1:
        return samples_ms[0], samples_ms[0]
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return statistics.median(samples_ms), cuts[98]


def _median(values: list[float]) -> float | None:
    present = [value for value in values if not math.isnan(value)]
    return statistics.median(present) if present else None


def _tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode("utf-8", "replace")
    except OSError as error:
        return f"(no log: {error})"


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` (all its threads) so far; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields after the command name start at field 3 (state): utime is 14, stime is 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_parent_death_signal(argv: list[str]) -> list[str]:
    """``argv`` under util-linux's ``setpriv --pdeathsig KILL`` when there is one: the server
    gets SIGKILL if the thread that started it dies, so a killed harness leaves none behind."""
    setpriv = shutil.which("setpriv")
    return argv if setpriv is None else [setpriv, "--pdeathsig", "KILL", "--", *argv]


def fdatasync_latency_ms(
    count: int = 200, directory: str | None = None, size: int = VALUE_BYTES
) -> dict[str, float]:
    """p50/p99 of ``fdatasync`` after appending ``size`` bytes, ``count`` times, to a fresh
    file in ``directory`` (default: the temporary directory): what one durable append costs on
    this disk, a floor for every system here."""
    samples: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fdatasync-", dir=directory) as scratch:
        fd = os.open(os.path.join(scratch, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            payload = os.urandom(size)
            os.write(fd, payload)
            os.fsync(fd)
            for _ in range(count):
                os.write(fd, payload)
                start = time.perf_counter()
                os.fdatasync(fd)
                samples.append((time.perf_counter() - start) * 1e3)
        finally:
            os.close(fd)
    p50, p99 = _percentiles(samples)
    return {"p50": p50, "p99": p99, "count": float(count)}


# -- server processes ---------------------------------------------------------------------------


@dataclass
class _Server:
    """One server process; its output goes to ``log``."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, cwd: Path) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                _with_parent_death_signal(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
            )

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()


@dataclass
class Cluster:
    """Three running servers of one system, and where their clients connect."""

    system: str
    root: Path
    servers: list[_Server] = field(default_factory=list)
    client_ports: list[int] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    startup_s: float = float("nan")

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.servers if s.process is not None]

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(pid) for pid in self.pids())

    def check_alive(self) -> None:
        for server in self.servers:
            code = server.exited()
            if code is not None:
                raise RuntimeError(f"{self.system} {server.name} exited ({code})" + self.logs())

    def logs(self) -> str:
        return "".join(
            f"\n--- {server.name} log ({server.log}) ends:\n{_tail(server.log)}"
            for server in self.servers
        )

    def stop(self) -> None:
        """SIGTERM every server, SIGKILL what is left after the deadline, remove the data."""
        running = [s.process for s in self.servers if s.process is not None]
        for process in running:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _wait_until(cluster: Cluster, ready: Callable[[], bool], what: str, deadline: float) -> None:
    """Poll ``ready`` until it is true; raise with the servers' logs if a server exits or the
    deadline passes."""
    while True:
        cluster.check_alive()
        if ready():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{cluster.system}: {what} not within the deadline" + cluster.logs())
        time.sleep(0.1)


# -- etcd: the v3 JSON gateway over hand-written HTTP/1.1 ---------------------------------------


class _HttpConnection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    def request_bytes(self, method: str, path: str, body: bytes = b"") -> bytes:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode("ascii") + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send a request built by ``request_bytes``; the status and body of the reply.
        Reconnects first if the connection is closed or broke on the last request."""
        if self._writer is None:
            await self.open()
        assert self._reader is not None
        assert self._writer is not None
        try:
            self._writer.write(request)
            return await self._response(self._reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            raise

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        status_line = await reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = -1
        chunked = False
        while True:
            line = await reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                body += await reader.readexactly(size + 2)
                if size == 0:
                    break
                del body[-2:]
            return status, bytes(body[:-2])
        if length < 0:
            raise ValueError("etcd reply with neither Content-Length nor chunked encoding")
        return status, await reader.readexactly(length)


def _etcd_put_body(key: bytes, value: bytes) -> bytes:
    return json.dumps(
        {"key": base64.b64encode(key).decode(), "value": base64.b64encode(value).decode()}
    ).encode()


async def _etcd_put(conn: _HttpConnection, request: bytes) -> None:
    status, body = await asyncio.wait_for(conn.send(request), REQUEST_TIMEOUT_S)
    if status != 200 or b'"header"' not in body:
        raise RuntimeError(f"etcd put on port {conn.port}: HTTP {status} {body[:300]!r}")


async def _etcd_get_json(port: int, path: str, body: bytes = b"") -> dict[str, Any]:
    conn = _HttpConnection(port)
    try:
        method = "POST" if body else "GET"
        request = conn.request_bytes(method, path, body)
        status, reply = await asyncio.wait_for(conn.send(request), REQUEST_TIMEOUT_S)
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"etcd {path} on port {port}: HTTP {status} {reply[:300]!r}")
    result: dict[str, Any] = json.loads(reply)
    return result


async def _etcd_ready(ports: list[int]) -> bool:
    """Every member acknowledges a put (so a leader is elected and a quorum writes)."""
    for port in ports:
        conn = _HttpConnection(port)
        try:
            body = _etcd_put_body(b"bench/ready", b"ready")
            await _etcd_put(conn, conn.request_bytes("POST", "/v3/kv/put", body))
        except (OSError, RuntimeError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            return False
        finally:
            conn.close()
    return True


async def _etcd_describe(ports: list[int]) -> tuple[list[str], list[str]]:
    """Each member's server version and role (leader or follower)."""
    versions: list[str] = []
    roles: list[str] = []
    for port in ports:
        version = await _etcd_get_json(port, "/version")
        versions.append(str(version.get("etcdserver", "?")))
        status = await _etcd_get_json(port, "/v3/maintenance/status", b"{}")
        member = status.get("header", {}).get("member_id")
        roles.append(
            "leader" if member is not None and member == status.get("leader") else "follower"
        )
    return versions, roles


def start_etcd_cluster(data_root: str | None = None, binary: str = ETCD_BINARY) -> Cluster:
    """Start three etcd members on fresh loopback ports and data directories; return once a
    put through each member is acknowledged. Stop it with ``Cluster.stop``."""
    path = shutil.which(binary)
    if path is None:
        raise FileNotFoundError(
            f"{binary!r} not found: run `sudo bash benchmarks/setup_durable_baselines.sh`"
        )
    root = Path(tempfile.mkdtemp(prefix="etcd-bench-", dir=data_root))
    ports = free_ports(2 * MEMBERS)
    client_ports, peer_ports = ports[:MEMBERS], ports[MEMBERS:]
    cluster = Cluster("etcd", root, client_ports=client_ports)
    initial = ",".join(f"m{i}=http://{HOST}:{peer_ports[i]}" for i in range(MEMBERS))
    for i in range(MEMBERS):
        client_url = f"http://{HOST}:{client_ports[i]}"
        peer_url = f"http://{HOST}:{peer_ports[i]}"
        argv = [
            path,
            f"--name=m{i}",
            f"--data-dir={root / f'm{i}'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-token=bench-{root.name}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        cluster.servers.append(_Server(f"m{i}", argv, root / f"m{i}.log"))
    started = time.monotonic()
    try:
        for server in cluster.servers:
            server.start(root)
        deadline = started + STARTUP_TIMEOUT_S
        _wait_until(
            cluster,
            lambda: asyncio.run(_etcd_ready(client_ports)),
            "a put via every member",
            deadline,
        )
        cluster.startup_s = time.monotonic() - started
        cluster.versions, cluster.roles = asyncio.run(_etcd_describe(client_ports))
    except BaseException:
        cluster.stop()
        raise
    return cluster


async def _etcd_workload(
    cluster: Cluster, in_flight: int, seconds: float, warmup_s: float, latency_updates: int
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    ports = cluster.client_ports
    conns = [_HttpConnection(ports[slot % len(ports)]) for slot in range(in_flight)]
    try:
        await asyncio.gather(*(conn.open() for conn in conns))
        value = os.urandom(VALUE_BYTES)
        requests = [
            conn.request_bytes(
                "POST", "/v3/kv/put", _etcd_put_body(f"bench/{slot}".encode(), value)
            )
            for slot, conn in enumerate(conns)
        ]
        return await _run_load(
            loop,
            cluster,
            slots=[
                functools.partial(_etcd_put, conn, request)
                for conn, request in zip(conns, requests, strict=True)
            ],
            seconds=seconds,
            warmup_s=warmup_s,
            latency_updates=latency_updates,
        )
    finally:
        for conn in conns:
            conn.close()


async def _run_load(
    loop: asyncio.AbstractEventLoop,
    cluster: Cluster,
    *,
    slots: list[Callable[[], Any]],
    seconds: float,
    warmup_s: float,
    latency_updates: int,
) -> dict[str, float]:
    """Throughput with every slot busy, then latency with one update in flight, the first
    ``MEMBERS`` slots (one per member) taking turns. Each slot is an awaitable factory."""
    completed = 0
    window_latencies: list[float] = []
    in_window = False
    stop_at = loop.time() + warmup_s + seconds

    async def pump(update: Callable[[], Any]) -> None:
        nonlocal completed
        while loop.time() < stop_at:
            start = time.perf_counter()
            await update()
            completed += 1
            if in_window:
                window_latencies.append((time.perf_counter() - start) * 1e3)

    tasks = [asyncio.ensure_future(pump(update)) for update in slots]
    try:
        await _sleep_until(loop, stop_at - seconds, tasks)
        in_window = True
        t0, c0, cpu0 = time.monotonic(), completed, time.process_time()
        server0 = cluster.cpu_seconds()
        await _sleep_until(loop, stop_at, tasks)
        t1, c1, cpu1 = time.monotonic(), completed, time.process_time()
        server1 = cluster.cpu_seconds()
        in_window = False
        await asyncio.wait_for(asyncio.gather(*tasks), DRAIN_TIMEOUT_S)
    finally:
        for task in tasks:
            task.cancel()
    lone: list[float] = []
    cap = time.monotonic() + LATENCY_PHASE_CAP_S
    for i in range(latency_updates):
        if time.monotonic() >= cap:
            break
        start = time.perf_counter()
        await slots[i % MEMBERS]()
        lone.append((time.perf_counter() - start) * 1e3)
    p50, p99 = _percentiles(lone)
    loaded_p50, loaded_p99 = _percentiles(window_latencies)
    span = t1 - t0
    return {
        "updates_per_s": (c1 - c0) / span,
        "latency_ms_p50": p50,
        "latency_ms_p99": p99,
        "loaded_latency_ms_p50": loaded_p50,
        "loaded_latency_ms_p99": loaded_p99,
        "updates": float(c1 - c0),
        "span_s": span,
        "latency_updates": float(len(lone)),
        "client_cpu": (cpu1 - cpu0) / span,
        "server_cpu": (server1 - server0) / span,
    }


async def _sleep_until(
    loop: asyncio.AbstractEventLoop, when: float, tasks: Sequence[asyncio.Future[None]]
) -> None:
    """Sleep until loop time ``when``; raise at once if a pump failed."""
    remaining = when - loop.time()
    if remaining <= 0:
        return
    done, _ = await asyncio.wait(tasks, timeout=remaining, return_when=asyncio.FIRST_EXCEPTION)
    for task in done:
        error = task.exception()
        if error is not None:
            raise error


def _measure(
    cluster: Cluster, load: Callable[[Cluster], dict[str, float]], seconds: float
) -> dict[str, float]:
    """Run ``load`` against ``cluster``; add the cluster's facts."""
    result = load(cluster)
    cluster.check_alive()
    leader = cluster.roles.index("leader") if "leader" in cluster.roles else -1
    return result | {
        "startup_s": cluster.startup_s,
        "leader_member": float(leader),
        "seconds": seconds,
    }


def measure_etcd(
    in_flight: int = DEFAULT_IN_FLIGHT,
    seconds: float = DEFAULT_SECONDS,
    *,
    warmup_s: float = DEFAULT_WARMUP_S,
    latency_updates: int = DEFAULT_LATENCY_UPDATES,
    data_root: str | None = None,
) -> dict[str, float]:
    """One run on a fresh three-member etcd cluster (stopped and removed before returning):
    ``updates_per_s`` with ``in_flight`` puts outstanding, ``latency_ms_p50``/``p99`` with one.
    Also ``loaded_latency_ms_*`` (per put, under load), ``client_cpu`` and ``server_cpu``
    (CPU seconds per second), ``startup_s`` and ``leader_member``."""
    cluster = start_etcd_cluster(data_root)
    try:
        return _measure(
            cluster,
            lambda c: asyncio.run(_etcd_workload(c, in_flight, seconds, warmup_s, latency_updates)),
            seconds,
        )
    finally:
        cluster.stop()


# -- ZooKeeper: kazoo ---------------------------------------------------------------------------


_KAZOO_LOG = logging.getLogger("durable_baselines.kazoo")
_KAZOO_LOG.setLevel(logging.ERROR)
"""kazoo's own logger warns at every refused connection while an ensemble starts; failures
that matter surface as exceptions."""


def _kazoo_client(port: int) -> Any:
    """A kazoo ``KazooClient`` for the one server at ``port`` (not started). kazoo is imported
    on first use: it is untyped, and needed only for ZooKeeper."""
    try:
        module = importlib.import_module("kazoo.client")
    except ImportError as error:
        raise ImportError("the ZooKeeper baseline needs kazoo: pip install kazoo") from error
    return module.KazooClient(hosts=f"{HOST}:{port}", timeout=10.0, logger=_KAZOO_LOG)


def _zookeeper_classpath(conf: Path) -> str:
    jars = [ZOOKEEPER_JAR]
    if os.path.exists(SLF4J_SIMPLE_JAR):
        jars.append(SLF4J_SIMPLE_JAR)
    return os.pathsep.join([str(conf), *jars])


def _zookeeper_config(
    data_dir: Path, client_port: int, quorum_ports: list[int], election_ports: list[int]
) -> str:
    lines = [
        # The values of Debian's and upstream's example zoo.cfg.
        "tickTime=2000",
        "initLimit=10",
        "syncLimit=5",
        f"dataDir={data_dir}",
        f"clientPort={client_port}",
        f"clientPortAddress={HOST}",
        # Not a durability setting: the HTTP admin server would take port 8080 thrice.
        "admin.enableServer=false",
        # Nor this: every benchmark client connects from 127.0.0.1, and the default of 60
        # connections per address refused the 65th session (192 in flight, one per slot).
        "maxClientCnxns=0",
        "4lw.commands.whitelist=srvr",
    ]
    lines += [
        f"server.{i + 1}={HOST}:{quorum_ports[i]}:{election_ports[i]}" for i in range(MEMBERS)
    ]
    return "\n".join(lines) + "\n"


def start_zookeeper_ensemble(data_root: str | None = None, java: str = JAVA_BINARY) -> Cluster:
    """Start three ZooKeeper servers on fresh loopback ports and data directories; return once
    an update through each member is acknowledged. Stop it with ``Cluster.stop``."""
    java_path = shutil.which(java)
    if java_path is None or not os.path.exists(ZOOKEEPER_JAR):
        raise FileNotFoundError(
            f"java or {ZOOKEEPER_JAR} not found: "
            "run `sudo bash benchmarks/setup_durable_baselines.sh`"
        )
    importlib.import_module("kazoo.client")  # fail before starting anything without kazoo
    root = Path(tempfile.mkdtemp(prefix="zookeeper-bench-", dir=data_root))
    ports = free_ports(3 * MEMBERS)
    client_ports = ports[:MEMBERS]
    quorum_ports = ports[MEMBERS : 2 * MEMBERS]
    election_ports = ports[2 * MEMBERS :]
    cluster = Cluster("zookeeper", root, client_ports=client_ports)
    for i in range(MEMBERS):
        member = root / f"m{i}"
        data_dir = member / "data"
        data_dir.mkdir(parents=True)
        (data_dir / "myid").write_text(f"{i + 1}\n")
        config = member / "zoo.cfg"
        config.write_text(
            _zookeeper_config(data_dir, client_ports[i], quorum_ports, election_ports)
        )
        argv = [
            java_path,
            "-cp",
            _zookeeper_classpath(member),
            f"-Dzookeeper.log.dir={member}",
            ZOOKEEPER_MAIN,
            str(config),
        ]
        cluster.servers.append(_Server(f"m{i}", argv, root / f"m{i}.log"))
    started = time.monotonic()
    clients: list[Any] = []
    try:
        for server in cluster.servers:
            server.start(root)
        deadline = started + STARTUP_TIMEOUT_S
        for i, port in enumerate(client_ports):
            client = _kazoo_client(port)
            clients.append(client)

            def connected(client: Any = client) -> bool:
                try:
                    client.start(timeout=2.0)
                except Exception:  # kazoo raises its own timeout types
                    return False
                return True

            _wait_until(cluster, connected, f"a session on member {i}", deadline)

            def written(client: Any = client, i: int = i) -> bool:
                try:
                    client.ensure_path(f"/bench/ready-{i}")
                except Exception:  # no quorum yet
                    return False
                return True

            _wait_until(cluster, written, f"an update via member {i}", deadline)
        cluster.startup_s = time.monotonic() - started
        for client in clients:
            cluster.versions.append(_srvr_field(client, "Zookeeper version"))
            cluster.roles.append(_srvr_field(client, "Mode"))
    except BaseException:
        _close_clients(clients)
        cluster.stop()
        raise
    _close_clients(clients)
    return cluster


def _srvr_field(client: Any, name: str) -> str:
    try:
        text = str(client.command(b"srvr"))
    except Exception as error:  # informational only
        return f"? ({error})"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return "?"


def _close_clients(clients: list[Any]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            client.stop()
            client.close()


class _ZkPump:
    """Keeps one slot's ``setData`` outstanding on a kazoo session: each completion re-issues
    the next from kazoo's callback thread until ``stop``."""

    def __init__(self, client: Any, path: str, value: bytes, counter: _ZkCounter) -> None:
        self._client = client
        self._path = path
        self._value = value
        self._counter = counter
        self._start = 0.0
        self.stopping = False
        self.outstanding = False

    def issue(self) -> None:
        self.outstanding = True
        self._start = time.perf_counter()
        self._client.set_async(self._path, self._value).rawlink(self._done)

    def _done(self, result: Any) -> None:
        elapsed_ms = (time.perf_counter() - self._start) * 1e3
        if result.exception is not None:
            self._counter.fail(result.exception)
            self.outstanding = False
            return
        self._counter.complete(elapsed_ms)
        if self.stopping:
            self.outstanding = False
        else:
            self.issue()


class _ZkCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.completed = 0
        self.in_window = False
        self.window_latencies: list[float] = []
        self.error: BaseException | None = None

    def complete(self, elapsed_ms: float) -> None:
        with self._lock:
            self.completed += 1
            if self.in_window:
                self.window_latencies.append(elapsed_ms)

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = error


def _zookeeper_workload(
    cluster: Cluster,
    *,
    in_flight: int,
    seconds: float,
    warmup_s: float,
    latency_updates: int,
    sessions_per_member: int,
) -> dict[str, float]:
    clients: list[Any] = []
    try:
        # Session k talks to member k % MEMBERS; slot s uses session s % sessions.
        for k in range(MEMBERS * sessions_per_member):
            client = _kazoo_client(cluster.client_ports[k % MEMBERS])
            client.start(timeout=REQUEST_TIMEOUT_S)
            clients.append(client)
        value = os.urandom(VALUE_BYTES)
        counter = _ZkCounter()
        pumps: list[_ZkPump] = []
        for slot in range(in_flight):
            client = clients[slot % len(clients)]
            path = f"/bench/slot-{slot}"
            client.create(path, value)
            pumps.append(_ZkPump(client, path, value, counter))

        def check() -> None:
            if counter.error is not None:
                raise RuntimeError(f"zookeeper setData failed: {counter.error!r}")

        begin = time.monotonic() + warmup_s
        for pump in pumps:
            pump.issue()
        time.sleep(max(0.0, begin - time.monotonic()))
        check()
        with counter._lock:
            counter.in_window = True
            t0, c0, cpu0 = time.monotonic(), counter.completed, time.process_time()
        server0 = cluster.cpu_seconds()
        time.sleep(seconds)
        with counter._lock:
            counter.in_window = False
            t1, c1, cpu1 = time.monotonic(), counter.completed, time.process_time()
        server1 = cluster.cpu_seconds()
        for pump in pumps:
            pump.stopping = True
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while any(pump.outstanding for pump in pumps) and time.monotonic() < deadline:
            time.sleep(0.01)
        check()
        lone: list[float] = []
        cap = time.monotonic() + LATENCY_PHASE_CAP_S
        for i in range(latency_updates):
            if time.monotonic() >= cap:
                break
            client = clients[i % len(clients)]
            start = time.perf_counter()
            client.set(f"/bench/slot-{i % len(clients)}", value)
            lone.append((time.perf_counter() - start) * 1e3)
    finally:
        _close_clients(clients)
    p50, p99 = _percentiles(lone)
    loaded_p50, loaded_p99 = _percentiles(counter.window_latencies)
    span = t1 - t0
    return {
        "updates_per_s": (c1 - c0) / span,
        "latency_ms_p50": p50,
        "latency_ms_p99": p99,
        "loaded_latency_ms_p50": loaded_p50,
        "loaded_latency_ms_p99": loaded_p99,
        "updates": float(c1 - c0),
        "span_s": span,
        "latency_updates": float(len(lone)),
        "client_cpu": (cpu1 - cpu0) / span,
        "server_cpu": (server1 - server0) / span,
    }


def measure_zookeeper(
    in_flight: int = DEFAULT_IN_FLIGHT,
    seconds: float = DEFAULT_SECONDS,
    *,
    warmup_s: float = DEFAULT_WARMUP_S,
    latency_updates: int = DEFAULT_LATENCY_UPDATES,
    data_root: str | None = None,
    sessions_per_member: int | None = None,
) -> dict[str, float]:
    """One run on a fresh three-member ZooKeeper ensemble (stopped and removed before
    returning): ``updates_per_s`` with ``in_flight`` setData outstanding, ``latency_ms_p50``/
    ``p99`` with one; the same extra keys as ``measure_etcd``, and ``sessions``.

    ``sessions_per_member`` kazoo sessions connect to each member, the slots spread over them;
    the default, one session per slot (``in_flight / 3`` per member), matches etcd's one
    connection per slot. One session per member pipelines all of a member's slots on it."""
    sessions = sessions_per_member or max(1, -(-in_flight // MEMBERS))
    cluster = start_zookeeper_ensemble(data_root)
    try:
        return _measure(
            cluster,
            lambda c: _zookeeper_workload(
                c,
                in_flight=in_flight,
                seconds=seconds,
                warmup_s=warmup_s,
                latency_updates=latency_updates,
                sessions_per_member=sessions,
            ),
            seconds,
        ) | {"sessions": float(sessions * MEMBERS)}
    finally:
        cluster.stop()


# -- versions and the command line ------------------------------------------------------------


def server_versions() -> dict[str, str | None]:
    """The installed servers' versions, from the binaries (``None``: not installed)."""
    versions: dict[str, str | None] = {"etcd": None, "zookeeper": None, "java": None}
    etcd = shutil.which(ETCD_BINARY)
    if etcd is not None:
        out = subprocess.run([etcd, "--version"], capture_output=True, text=True, check=False)
        first = out.stdout.splitlines()[0] if out.stdout else ""
        versions["etcd"] = first.rpartition(":")[2].strip() or None
    java = shutil.which(JAVA_BINARY)
    if java is not None:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
        versions["java"] = out.stderr.splitlines()[0] if out.stderr else None
        if os.path.exists(ZOOKEEPER_JAR):
            out = subprocess.run(
                [java, "-cp", ZOOKEEPER_JAR, ZOOKEEPER_VERSION_MAIN],
                capture_output=True,
                text=True,
                check=False,
            )
            versions["zookeeper"] = out.stdout.strip() or None
    return versions


MEASURES: dict[str, Callable[..., dict[str, float]]] = {
    "etcd": measure_etcd,
    "zookeeper": measure_zookeeper,
}
DURABILITY = {"etcd": ETCD_DURABILITY, "zookeeper": ZOOKEEPER_DURABILITY}


def run_baselines(
    systems: list[str],
    in_flight: int = DEFAULT_IN_FLIGHT,
    seconds: float = DEFAULT_SECONDS,
    repeats: int = 3,
    *,
    warmup_s: float = DEFAULT_WARMUP_S,
    latency_updates: int = DEFAULT_LATENCY_UPDATES,
    data_root: str | None = None,
    zk_sessions_per_member: int | None = None,
) -> dict[str, Any]:
    """``repeats`` rounds, each running every system in ``systems`` on a fresh cluster (rounds
    interleave the systems, so the machine's other load weighs on each alike); per system the
    medians over rounds and the runs."""
    load_before = os.getloadavg()
    fsync = fdatasync_latency_ms(directory=data_root)
    runs: dict[str, list[dict[str, float]]] = {system: [] for system in systems}
    for _ in range(repeats):
        for system in systems:
            options: dict[str, Any] = {
                "warmup_s": warmup_s,
                "latency_updates": latency_updates,
                "data_root": data_root,
            }
            if system == "zookeeper":
                options["sessions_per_member"] = zk_sessions_per_member
            runs[system].append(MEASURES[system](in_flight, seconds, **options))
    versions = server_versions()
    result: dict[str, Any] = {
        "benchmark": "durable_baselines",
        "members": MEMBERS,
        "value_bytes": VALUE_BYTES,
        "in_flight": in_flight,
        "seconds": seconds,
        "warmup_s": warmup_s,
        "repeats": repeats,
        "latency_updates": latency_updates,
        "data_root": data_root or tempfile.gettempdir(),
        "cpus": os.cpu_count(),
        "fdatasync_ms": fsync,
        "java": versions["java"],
    }
    keys = ["updates_per_s", "latency_ms_p50", "latency_ms_p99", "loaded_latency_ms_p50"]
    keys += ["loaded_latency_ms_p99", "client_cpu", "server_cpu"]
    for system in systems:
        result[system] = {
            "version": versions[system],
            "durability": DURABILITY[system],
            **{key: _median([run[key] for run in runs[system]]) for key in keys},
            "runs": runs[system],
        }
    result["load_avg"] = {"before": list(load_before), "after": list(os.getloadavg())}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--system", choices=["etcd", "zookeeper", "all"], default="all")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="measured window")
    parser.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S, help="before the window")
    parser.add_argument(
        "--in-flight", type=int, default=DEFAULT_IN_FLIGHT, help="updates outstanding, in all"
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per system; medians")
    parser.add_argument(
        "--latency-updates", type=int, default=DEFAULT_LATENCY_UPDATES, help="lone updates"
    )
    parser.add_argument("--data-root", help="where the data directories go (default: tmp)")
    parser.add_argument(
        "--zk-sessions-per-member",
        type=int,
        help="kazoo sessions per ZooKeeper member (default: one per slot)",
    )
    args = parser.parse_args(argv)
    systems = ["etcd", "zookeeper"] if args.system == "all" else [args.system]
    result = run_baselines(
        systems,
        args.in_flight,
        args.seconds,
        args.repeats,
        warmup_s=args.warmup,
        latency_updates=args.latency_updates,
        data_root=args.data_root,
        zk_sessions_per_member=args.zk_sessions_per_member,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
