"""``pyderecho demo``: the sharded key-value service of ``examples/`` as real processes.

Seven processes of ``examples/kv_service.py`` on this host (tcp on 127.0.0.1, or shared memory)
found a group laid out by ``kv_app.layout``: a ``LoadBalancer`` (the front), a ``Backend`` of
two (a ``Paxos`` shard: the store of record, logged in each member's data directory) and a
``Cache`` of two shards of two; every member also holds ``Routing``. The front runs a workload
of puts, gets and deletes through the service; under that load the demo kills a cache member
with SIGKILL (the others install a view without it, and a member that the new layout moves to
another shard receives that shard's state), then starts an eighth process that joins and
receives the state of its shard (bytes and time shown). Then it pauses the load, reads every
key back through the front and shows every replica's state digest (equal in every shard, or the
demo fails).

Then the total restart: the front hands over its record of the last acknowledged update of
every key, the demo kills every member at once with SIGKILL and starts them again on the same
data directories; the group restarts from its logs, and the front reads every key of the record
back from the Backend (anything lost fails the demo) and says how long the restart took. At the
end it stops everyone and runs the history checker over all the delivery logs and state digests.

:class:`LocalGroup`, which starts, follows and stops the processes, is what the process tests use
too (with ``pyderecho node`` processes and :func:`demo_layout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyderecho.core.layout import Allocation, InadequateView, Mode, ShardLayout
from pyderecho.core.view import NodeId, View
from pyderecho.history.delivery_log import check_logs
from pyderecho.testing.netns import NetworkLab

Record = dict[str, Any]
"""One JSON line a node printed."""

STEP_TIMEOUT_S = 30.0
"""The longest the demo and the process tests wait for one step: a bound on a hang on a loaded
machine, not a measure."""


def demo_layout(view: View) -> Allocation:
    """Ticker: every member, Raw. Store: ordered shards of two or three members, by rank.

    Any number of members fits, so the group keeps delivering as members come and go.
    """
    members = view.members
    if not members:
        raise InadequateView(f"view {view.epoch} has no members")
    count = max(1, len(members) // 2)
    bounds = [len(members) * i // count for i in range(count + 1)]
    return {
        "Ticker": [[ShardLayout(members, Mode.RAW)]],
        "Store": [
            [ShardLayout(members[lo:hi], Mode.ORDERED) for lo, hi in itertools.pairwise(bounds)]
        ],
    }


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now, for members bound a moment later.

    They are drawn from ``PYDERECHO_PORTS`` (``LOW-HIGH``, both included) when it is set, and
    otherwise below the kernel's ephemeral range: a port the kernel picks for a bind to port 0
    or for an outgoing connection (a proxy's, a client's) in the meantime is never one of them
    (a fault-proxy test lost its member's port so). Another process could still take one first,
    and a port drawn here is free again from the moment a member dies until it restarts; runs
    that go on side by side (the test workers) each set a range of their own, so that none can
    take the others' ports. Raises ``OSError`` when the range holds fewer free ports than asked.
    """
    low, high = port_range()
    candidates: Iterable[int]
    if low <= high:
        size = high - low + 1
        start = random.SystemRandom().randrange(size)
        candidates = (low + (start + step) % size for step in range(size))
    else:
        candidates = itertools.repeat(0, count)
    sockets: list[socket.socket] = []
    try:
        for port in candidates:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
            if len(sockets) == count:
                return [sock.getsockname()[1] for sock in sockets]
        raise OSError(f"fewer than {count} ports free in {low}-{high} ({PORTS_VARIABLE})")
    finally:
        for sock in sockets:
            sock.close()


PORTS_VARIABLE = "PYDERECHO_PORTS"

_LOWEST_PORT = 10_000


def port_range() -> tuple[int, int]:
    """The ports :func:`free_ports` draws from, lowest and highest, both included.

    Raises ``ValueError`` naming the variable when ``PYDERECHO_PORTS`` is not ``LOW-HIGH`` with
    ``1024 <= LOW <= HIGH <= 65535``: a typo there would otherwise put members on ports anything
    may take.
    """
    text = os.environ.get(PORTS_VARIABLE)
    if text is None:
        return _LOWEST_PORT, _ephemeral_low() - 1
    low_text, dash, high_text = text.partition("-")
    try:
        low, high = int(low_text), int(high_text)
    except ValueError:
        low = high = 0
    if not dash or not 1024 <= low <= high <= 65535:
        raise ValueError(
            f"{PORTS_VARIABLE}={text!r}: give a range LOW-HIGH of ports within 1024-65535"
        )
    return low, high


def _ephemeral_low() -> int:
    """The first port of the range the kernel picks ephemeral ports from (32768 if unknown)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            return int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


@dataclass
class NodeProcess:
    """One running ``pyderecho node`` and the JSON lines it has printed so far."""

    member: NodeId
    process: asyncio.subprocess.Process
    delivery_log: Path
    stderr: Path
    records: list[Record] = field(default_factory=list)
    _news: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    def follow(self) -> None:
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    self.records.append(record)
            self._news.set()
        self._news.set()

    async def wait_for(
        self, accept: Callable[[Record], bool], timeout: float, *, start: int = 0
    ) -> Record:
        """The first line (printed so far, from line ``start`` on, or later) that ``accept``
        takes."""
        seen = start
        async with asyncio.timeout(timeout):
            while True:
                for record in self.records[seen:]:
                    if accept(record):
                        return record
                seen = len(self.records)
                if self._reader is not None and self._reader.done():
                    raise EOFError(f"member {self.member} exited: {self.stderr_tail()}")
                self._news.clear()
                await self._news.wait()

    async def wait_for_view(self, accept: Callable[[Record], bool], timeout: float) -> Record:
        return await self.wait_for(lambda r: r.get("event") == "view" and accept(r), timeout)

    def last(self, event: str) -> Record | None:
        return next((r for r in reversed(self.records) if r.get("event") == event), None)

    async def exit_status(self, timeout: float) -> int:
        async with asyncio.timeout(timeout):
            status = await self.process.wait()
            if self._reader is not None:
                await self._reader
        return status

    def stderr_tail(self, lines: int = 5) -> str:
        try:
            text = self.stderr.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])


class LocalGroup:
    """Member processes of one group on this host, in a directory of their own.

    The directory holds the group's settings file, secret, delivery logs (``member-N.log``) and
    the processes' standard error (``member-N.err``). Founders get ids ``0..founders-1``; every
    process gets a free port on 127.0.0.1 (unused by the shm transport, whose sockets go in the
    directory). Use it as an async context manager: leaving it kills whatever still runs.
    """

    def __init__(
        self,
        directory: Path,
        founders: int,
        *,
        transport: str = "tcp",
        layout: str = "pyderecho.cli.demo:demo_layout",
        heartbeat_interval_ms: int = 50,
        heartbeat_timeout_ms: int = 1000,
        program: Sequence[str] | None = None,
        data_dirs: bool = False,
        lab: NetworkLab | None = None,
    ) -> None:
        """``lab``: run each member in a network namespace of its own (tcp), so that links
        between members can be cut (:class:`~pyderecho.testing.netns.NetworkLab`)."""
        self.directory = directory
        self.lab = lab
        self.data_dirs = data_dirs
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.transport = transport
        self.program = list(program or [sys.executable, "-m", "pyderecho.cli", "node"])
        self.nodes: dict[NodeId, NodeProcess] = {}
        """The last process started for each member."""
        self.ended: list[NodeProcess] = []
        """Earlier processes of members started again, in the order they were replaced."""
        self._addresses: dict[NodeId, str] = {}
        self._founders = list(range(founders))
        for member in self._founders:
            self._address(member)
        secret = directory / "group.secret"
        secret.write_text(secrets.token_hex(32) + "\n")
        secret.chmod(0o600)
        members = "".join(
            f'[[members]]\nid = {m}\naddress = "{self._addresses[m]}"\n\n' for m in self._founders
        )
        self.config = directory / "group.toml"
        self.config.write_text(
            f'group = "demo-{secrets.token_hex(4)}"\n'
            f'transport = "{transport}"\n'
            f'secret_file = "{secret.name}"\n'
            f'layout = "{layout}"\n'
            f"heartbeat_interval_ms = {heartbeat_interval_ms}\n"
            f"heartbeat_timeout_ms = {heartbeat_timeout_ms}\n\n{members}"
        )

    async def __aenter__(self) -> LocalGroup:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def address_of(self, member: NodeId) -> str:
        """Where ``member`` listens (tcp), the same for every process started under its id."""
        return self._address(member)

    def _address(self, member: NodeId) -> str:
        if member not in self._addresses:
            if self.lab is not None:
                self._addresses[member] = self.lab.address(member)
            else:
                # One port at a time: the kernel may offer a port again once its probe socket
                # is closed, so skip any already handed out (64 members met a repeat).
                taken = set(self._addresses.values())
                address = f"127.0.0.1:{free_ports(1)[0]}"
                while address in taken:
                    address = f"127.0.0.1:{free_ports(1)[0]}"
                self._addresses[member] = address
        return self._addresses[member]

    async def found(
        self, *args: str, keep_stdin: bool = False, members: Sequence[NodeId] | None = None
    ) -> None:
        """Start every founder, ``args`` being more ``pyderecho node`` flags (a workload, say).

        Each process loads (interpreter, imports, settings) and waits; only once all wait are
        they released, together: founders that start more than the heartbeat timeout apart
        would otherwise suspect each other before they ever meet. With ``keep_stdin`` their
        standard input stays open for :meth:`tell`. ``members`` starts those instead of the
        founders: the members of the last view, say, started again on their data directories
        after every one of them was killed, which restarts the group from its logs.
        """
        starting = list(self._founders if members is None else members)
        for member in starting:
            await self.start(member, "--wait-for-start", *args)
        for member in starting:
            await self.nodes[member].wait_for(lambda r: r.get("event") == "waiting", STEP_TIMEOUT_S)
        for member in starting:
            stdin = self.nodes[member].process.stdin
            assert stdin is not None
            stdin.write(b"start\n")
            if not keep_stdin:
                stdin.close()

    async def start(
        self, member: NodeId, *args: str, join: bool = False, contacts: Iterable[NodeId] = ()
    ) -> NodeProcess:
        """Start member ``member``: a founder (see :meth:`found`), or with ``join`` a process
        that joins through ``contacts``; ``args`` are more ``pyderecho node`` flags."""
        command = [
            *(self.lab.prefix(member) if self.lab is not None else []),
            *self.program,
            "--config",
            str(self.config),
            "--member-id",
            str(member),
            "--delivery-log",
            str(self.directory / f"member-{member}.log"),
            "--shm-dir",
            str(self.directory),
            *args,
        ]
        if self.data_dirs:
            command += ["--data-dir", str(self.data_dir(member))]
        if join:
            known = [*contacts, member]
            command += ["--join", "--members", ",".join(f"{m}={self._address(m)}" for m in known)]
        elif member not in self._founders and self.transport == "tcp":
            command += ["--listen", self._address(member)]  # a joiner started again
        stderr = self.directory / f"member-{member}.err"
        with stderr.open("ab") as err:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=self.directory,
            )
        node = NodeProcess(member, process, self.directory / f"member-{member}.log", stderr)
        node.follow()
        if member in self.nodes:
            self.ended.append(self.nodes[member])
        self.nodes[member] = node
        return node

    def data_dir(self, member: NodeId) -> Path:
        """Where member ``member`` logs its ``Paxos`` shards (with ``data_dirs``): the same
        directory each time it starts, so that a member started again restarts from it."""
        return self.directory / "data" / f"member-{member}"

    def tell(self, member: NodeId, line: str) -> None:
        """Write a line to the member's standard input (started with ``keep_stdin``)."""
        stdin = self.nodes[member].process.stdin
        assert stdin is not None
        stdin.write(line.encode() + b"\n")

    def running(self) -> list[NodeProcess]:
        return [node for node in self.nodes.values() if node.process.returncode is None]

    async def kill(self, member: NodeId) -> None:
        """SIGKILL: the member gets no chance to say goodbye or flush its log."""
        node = self.nodes[member]
        with contextlib.suppress(ProcessLookupError):  # it may have ended on its own
            node.process.send_signal(signal.SIGKILL)
        await node.exit_status(STEP_TIMEOUT_S)

    async def stop_all(self, timeout: float) -> dict[NodeId, int]:
        """SIGTERM the running members one at a time, in rank order, each leaving the group
        before the next is told to: the leader goes first, and each leave is a view change
        the rest of the group goes on from. Returns their exit statuses."""
        running = {node.member: node for node in self.running()}
        views = [r for node in running.values() for r in node.records if r.get("event") == "view"]
        ranked = max(views, key=lambda view: int(view["epoch"]))["members"] if views else []
        order = [m for m in ranked if m in running]
        order += sorted(running.keys() - set(order))
        statuses: dict[NodeId, int] = {}
        for member in order:
            running[member].process.send_signal(signal.SIGTERM)
            statuses[member] = await running[member].exit_status(timeout)
        return statuses

    def logs(self) -> list[Path]:
        """Every member's delivery log (a member started again appends to its log)."""
        return [node.delivery_log for node in self.nodes.values() if node.delivery_log.exists()]

    async def close(self) -> None:
        """Kill every process still running, those replaced under their id included (a
        second process started under a running member's id leaves the first one running)."""
        started = [*self.ended, *self.nodes.values()]
        for node in started:
            if node.process.returncode is None:
                node.process.kill()
        for node in started:
            with contextlib.suppress(TimeoutError):
                await node.exit_status(5.0)


# -- the demo: the key-value service of examples/ ----------------------------------------------


def _examples() -> Path:
    """The source checkout's examples (the demo runs from a checkout): beside the package when
    it is installed in place (``make demo``), else in the working directory, a checkout whose
    package is installed as a copy (``make test-fast``'s compiled build)."""
    beside = Path(__file__).resolve().parents[3] / "examples"
    return beside if beside.is_dir() else Path.cwd() / "examples"


EXAMPLES = _examples()
SERVICE = EXAMPLES / "kv_service.py"
FOUNDERS = 7
"""LoadBalancer 1, Backend 2, Cache 2 shards of 2."""
LOAD_STEP_S = 2.0
"""How long the load runs between the demo's steps."""


def _shards(view: Record) -> dict[tuple[str, int, int], list[NodeId]]:
    return {(s["type"], s["index"], s["shard"]): s["members"] for s in view["shards"]}


def _describe_layout(view: Record) -> str:
    parts: dict[str, list[str]] = {}
    for (kind, _, shard), members in _shards(view).items():
        label = f"shard {shard} {members}" if kind == "Cache" else str(members)
        parts.setdefault(kind, []).append(label)
    return "; ".join(f"{kind} " + ", ".join(labels) for kind, labels in parts.items())


def _state_of(kind: str, index: int, shard: int) -> Callable[[Record], bool]:
    """Accepts the line that says how a member came to hold the shard's state."""

    def accept(record: Record) -> bool:
        return record.get("event") in ("state-received", "state-lost") and (
            record["type"],
            record["index"],
            record["shard"],
        ) == (kind, index, shard)

    return accept


def _short(digest: str) -> str:
    return digest[:12]


def check_states(records: Iterable[Record]) -> tuple[list[str], int, int]:
    """The state rule over the digests the members printed: replicas of a shard at one
    position (the same prefix of the shard's deliveries) hold the same state, and every state
    a member installed is one that its sender shipped. Returns the problems found, the number
    of digests compared and the number of transfers matched."""
    at: dict[tuple[tuple[Any, ...], tuple[int, ...]], dict[str, set[NodeId]]] = {}
    shipped: set[tuple[tuple[Any, ...], tuple[int, ...], NodeId, str]] = set()
    received = []
    count = 0
    for record in records:
        key, position = tuple(record["key"]), tuple(record["position"])
        count += 1
        at.setdefault((key, position), {}).setdefault(record["digest"], set()).add(
            record["reporter"]
        )
        if record["kind"] == "sent":
            shipped.add((key, position, record["member"], record["digest"]))
        elif record["kind"] == "received":
            received.append(record)
    problems = [
        f"{key[0]}[{key[1]}] shard {key[2]} at position {list(position)}: replicas disagree: "
        + "; ".join(f"{sorted(who)} hold {_short(d)}" for d, who in digests.items())
        for (key, position), digests in at.items()
        if len(digests) > 1
    ]
    for record in received:
        key, position = tuple(record["key"]), tuple(record["position"])
        if (key, position, record["member"], record["digest"]) not in shipped:
            problems.append(
                f"member {record['member']} installed {key[0]} shard {key[2]} state "
                f"{_short(record['digest'])} at {list(position)} that nobody sent it"
            )
    return problems, count, len(received)


class _KvDemo:
    """The demo's script; each step waits on what the processes print, with a timeout."""

    def __init__(self, group: LocalGroup, out: Callable[[str], None]) -> None:
        self.group = group
        self.out = out
        self.started = time.monotonic()
        self.front: NodeId = 0
        self.last_view: Record = {}

    def say(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.started:5.1f}s] {text}")

    async def view_everywhere(self, accept: Callable[[Record], bool]) -> Record:
        """Wait until every running member installed a view ``accept`` takes; show it once,
        and each state transfer the new layout needs (waiting for it to end)."""
        running = self.group.running()
        views = await asyncio.gather(
            *(node.wait_for_view(accept, STEP_TIMEOUT_S) for node in running)
        )
        view = views[0]
        changes = "".join(
            f", {word} {view[key]}"
            for key, word in (("joined", "joined"), ("departed", "left"))
            if view[key]
        )
        self.say(f"view {view['epoch']}: members {view['members']}{changes}")
        self.out(f"        layout: {_describe_layout(view)}")
        before = _shards(self.last_view) if self.last_view else None
        previous = self.last_view.get("epoch", -1)
        self.last_view = view
        if before is None:
            return view
        for (kind, index, shard), members in _shards(view).items():
            for member in members:
                if member in before.get((kind, index, shard), []):
                    continue
                node = self.group.nodes[member]
                # What the member printed since the view after the last one shown.
                installed = next(
                    i
                    for i, r in enumerate(node.records)
                    if r.get("event") == "view" and r["epoch"] > previous
                )
                record = await node.wait_for(
                    _state_of(kind, index, shard), STEP_TIMEOUT_S, start=installed
                )
                if record["event"] == "state-lost":
                    self.out(f"        member {member}: no holder of {kind} shard {shard} left")
                    continue
                name = f"{kind} shard {shard}" if kind == "Cache" else kind
                self.out(
                    f"        member {member} is new to {name}: received its "
                    f"state from member {record['source']}, {record['bytes']:,} bytes in "
                    f"{record['seconds'] * 1000:.0f} ms after the view"
                )
        return view

    async def load(self, seconds: float) -> None:
        """Show, each second, what the front's workload has done so far."""
        front = self.group.nodes[self.front]
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(1.0, left))
            stats = front.last("load")
            if stats is None:
                continue
            self.say(
                f"front: {stats.get('put', 0)} puts, {stats.get('get', 0)} gets, "
                f"{stats.get('delete', 0)} deletes ({stats['ops_per_s']:.0f} ops/s); "
                f"{stats.get('retried', 0)} retried, {stats.get('stale_reads', 0)} stale reads"
            )

    async def ask(self, member: NodeId, command: str, event: str) -> Record:
        """Send a command to a member; its answer (the next line of kind ``event``)."""
        node = self.group.nodes[member]
        seen = len(node.records)
        self.group.tell(member, command)
        return await node.wait_for(lambda r: r.get("event") == event, STEP_TIMEOUT_S, start=seen)

    async def digests(self) -> tuple[dict[tuple[str, int, int], dict[NodeId, Record]], bool]:
        """Every running member's replicas; asked again (a few times) while the replicas of a
        shard are at different positions and hold different states, i.e. some delivery is
        still on its way. (Replicas of a shard that had no update since they began, like
        ``Routing``'s, can be at different positions: each at the view it began in.)"""
        table: dict[tuple[str, int, int], dict[NodeId, Record]] = {}
        for _ in range(10):
            answers = await asyncio.gather(
                *(self.ask(node.member, "digests", "digests") for node in self.group.running())
            )
            table = {}
            for answer in answers:
                for replica in answer["replicas"]:
                    key = (replica["type"], replica["index"], replica["shard"])
                    table.setdefault(key, {})[answer["member"]] = replica
            if all(
                len({tuple(r["position"]) for r in replicas.values()}) == 1
                or len({r["digest"] for r in replicas.values()}) == 1
                for replicas in table.values()
            ):
                return table, True
            await asyncio.sleep(0.3)
        return table, False

    def state_records(self) -> list[Record]:
        records: list[Record] = []
        for node in [*self.group.ended, *self.group.nodes.values()]:
            for record in node.records:
                if record.get("event") == "state-digest":
                    records.append(record)
                elif record.get("event") == "digests":
                    records.extend(
                        {
                            "reporter": record["member"],
                            "member": record["member"],
                            "key": [r["type"], r["index"], r["shard"]],
                            "position": r["position"],
                            "digest": r["digest"],
                            "kind": "final",
                        }
                        for r in record["replicas"]
                    )
        return records

    async def show_states(self) -> tuple[dict[tuple[str, int, int], dict[NodeId, Record]], bool]:
        """Print every replica's position, digest and contents; whether every shard's replicas
        hold one digest."""
        table, settled = await self.digests()
        out = self.out
        out("")
        out("  state of every replica of every shard:")
        out(f"    {'shard':<17} {'member':>6}  {'position':<11} {'digest':<14} contents")
        same = settled
        order = {"Routing": 0, "LoadBalancer": 1, "Backend": 2, "Cache": 3}
        for (kind, index, shard), replicas in sorted(
            table.items(), key=lambda item: (order.get(item[0][0], 4), item[0])
        ):
            digests = {r["digest"] for r in replicas.values()}
            same = same and len(digests) == 1
            name = f"{kind} shard {shard}" if kind == "Cache" else kind
            if index:
                name += f" (subgroup {index})"
            if kind == "Routing":  # every member holds it: a line per position
                at: dict[tuple[int, ...], list[NodeId]] = {}
                for member, replica in sorted(replicas.items()):
                    at.setdefault(tuple(replica["position"]), []).append(member)
                for position_of, members in sorted(at.items()):
                    replica = replicas[members[0]]
                    who = "all" if len(at) == 1 else ",".join(map(str, members))
                    position = "({}, {})".format(*position_of)
                    out(
                        f"    {name:<17} {who:>6}  {position:<11} "
                        f"{_short(replica['digest']):<14} {replica['contents']}"
                    )
                    name = ""
            else:
                for member, replica in sorted(replicas.items()):
                    position = "({}, {})".format(*replica["position"])
                    out(
                        f"    {name:<17} {member:>6}  {position:<11} "
                        f"{_short(replica['digest']):<14} {replica['contents']}"
                    )
                    name = ""
            out(f"    {'':<17} {'':>6}  -> {'equal' if len(digests) == 1 else 'DIFFERENT'}")
        out("")
        return table, same

    async def restart(self) -> Record:
        """Kill every member at once, start them again on their data directories, wait until
        the group serves from the store of record and read back what the front acknowledged.
        Returns the front's ``verified-stored`` line, with ``seconds`` (start to serving).

        The load is paused first: the front's record of what it acknowledged then has no call
        in flight whose outcome is unknown, so every key must read back exactly, and the record
        must leave the front before the front dies. (Killing every member in the middle of the
        load is what tests/test_paxos_processes.py does.)"""
        group, say, out = self.group, self.say, self.out
        record = group.directory / "acknowledged.json"
        recorded = await self.ask(self.front, f"record {record}", "recorded")
        say(
            f"the front's record of what it acknowledged leaves it (before it dies): the last "
            f"update of {recorded['keys']} keys ({recorded['deleted']} of them deletes; "
            f"{recorded['uncertain']} keys whose last update failed left out)"
        )
        members = list(self.last_view["members"])
        pids = ", ".join(str(group.nodes[m].process.pid) for m in members)
        say(f"SIGKILL every member at once (pids {pids}): nobody leaves or writes another byte")
        for member in members:
            with contextlib.suppress(ProcessLookupError):
                group.nodes[member].process.send_signal(signal.SIGKILL)
        await asyncio.gather(*(group.nodes[m].exit_status(STEP_TIMEOUT_S) for m in members))
        epoch = self.last_view["epoch"]

        say(f"starting members {members} again on their data directories ({group.directory}/data)")
        started = time.monotonic()
        await group.found(keep_stdin=True, members=members)
        released = time.monotonic()
        view = await self.view_everywhere(lambda v: v["epoch"] > epoch)
        installed = time.monotonic()
        out(
            "        Routing and Backend (Paxos) come back from each member's snapshot and log;"
            " the Cache shards (ordered) from their constructor"
        )
        took: dict[tuple[str, NodeId], list[NodeId]] = {}
        for member in members:
            for line in group.nodes[member].records:
                if line.get("event") == "state-received" and line["type"] != "Cache":
                    took.setdefault((line["type"], line["source"]), []).append(member)
        for (kind, source), takers in sorted(took.items()):
            out(
                f"        {kind}: member{'s' if len(takers) > 1 else ''} "
                f"{', '.join(map(str, takers))} took the state of member {source}, the furthest"
                " (or as far)"
            )
        up = await self.ask(self.front, "serving", "serving")
        serving = time.monotonic()
        seconds = serving - started
        say(
            f"the group is back in {seconds:.2f} s: processes loaded in {released - started:.2f}"
            f" s, view {view['epoch']} (the next of view {epoch}) installed "
            f"{installed - released:.2f} s later, the front read the Backend "
            f"{serving - installed:.2f} s after that ({up['seconds'] * 1000:.0f} ms of trying)"
        )
        verified = await self.ask(self.front, f"verify-stored {record}", "verified-stored")
        say(
            f"read back {verified['keys']} acknowledged keys from the Backend through the front:"
            f" {verified['lost']} lost or different ({verified['unchecked']} keys whose last "
            f"update failed not checked); its ledger holds {verified['ledger']} entries"
        )
        return {**verified, "seconds": seconds}

    async def run(self) -> int:
        group, say, out = self.group, self.say, self.out
        say(
            f"starting {FOUNDERS} processes of examples/kv_service.py ({group.transport} on "
            f"127.0.0.1) in {group.directory}"
        )
        await group.found(keep_stdin=True)
        await asyncio.gather(
            *(
                n.wait_for(lambda r: r.get("event") == "ready", STEP_TIMEOUT_S)
                for n in group.running()
            )
        )
        view = await self.view_everywhere(lambda v: v["epoch"] == 0)
        self.front = _shards(view)[("LoadBalancer", 0, 0)][0]
        cache0 = _shards(view)[("Cache", 0, 0)]

        say(f"the front (member {self.front}) starts a workload: puts, gets and deletes")
        out("        of 512-byte values; the front routes each key to its Cache shard, whose")
        out("        member orders the update in the shard after the Backend records it")
        group.tell(self.front, "load")
        await self.load(LOAD_STEP_S)

        victim = cache0[-1]
        say(f"SIGKILL Cache member {victim} (pid {group.nodes[victim].process.pid}) under load")
        await group.kill(victim)
        await self.view_everywhere(lambda v: victim in v["departed"])
        await self.load(LOAD_STEP_S)

        newcomer = max(group.nodes) + 1
        survivors = [node.member for node in group.running()]
        say(f"starting member {newcomer}, which joins through {survivors}")
        await group.start(newcomer, join=True, contacts=survivors)
        await self.view_everywhere(lambda v: newcomer in v["joined"])
        await self.load(LOAD_STEP_S)

        paused = await self.ask(self.front, "pause", "paused")
        say(
            f"load paused: {paused.get('put', 0)} puts, {paused.get('get', 0)} gets, "
            f"{paused.get('delete', 0)} deletes in all; {paused.get('retried', 0)} retried "
            f"(calls cut by the crash or a move), {paused.get('stale_reads', 0)} stale reads"
        )
        verified = await self.ask(self.front, "verify", "verified")
        say(
            f"read back {verified['keys']} keys through the front: {verified['mismatches']} "
            f"differ from the last acknowledged update ({verified['unchecked']} keys whose last "
            f"update failed not checked); the Backend's ledger holds {verified['ledger']} entries"
        )

        table, same = await self.show_states()
        backend_before = {r["digest"] for r in table.get(("Backend", 0, 0), {}).values()}

        restart = await self.restart()
        after, same_after = await self.show_states()
        backend_after = {r["digest"] for r in after.get(("Backend", 0, 0), {}).values()}
        kept = len(backend_before) == 1 and backend_after == backend_before
        say(
            "the Backend's state after the restart is "
            + ("the one it had before the kill" if kept else "NOT the one it had before the kill")
            + f" ({', '.join(_short(d) for d in sorted(backend_after))}); the Cache shards"
            " start empty: they are a cache"
        )
        same = same and same_after

        say("SIGTERM each member in turn: it leaves the group")
        statuses = await group.stop_all(STEP_TIMEOUT_S)
        failed = {m: s for m, s in statuses.items() if s != 0}
        say(
            f"{len(statuses)} members exited"
            + (f"; with errors: {failed}" if failed else ", all with status 0")
        )

        verdict = check_logs(group.logs())
        problems, compared, transfers = check_states(self.state_records())
        out("")
        out("summary:")
        agree = "every shard holds one digest at all its replicas" if same else "DIFFERENT"
        out(f"  replicas: {agree}")
        out(
            f"  history checker over {len(group.logs())} delivery logs: "
            + (
                f"no violations ({verdict.deliveries} deliveries; {verdict.reconstructed} sends "
                "of the killed member taken from deliveries)"
                if not verdict.violations
                else f"{len(verdict.violations)} violations"
            )
        )
        for violation in verdict.violations:
            out(f"    VIOLATION {violation}")
        out(
            f"  state rule over {compared} state digests: "
            + (
                f"no violations (equal at every shared position; {transfers} transfers "
                "installed what was sent)"
                if not problems
                else f"{len(problems)} violations"
            )
        )
        for problem in problems:
            out(f"    VIOLATION {problem}")
        clean = (
            same
            and not verdict.violations
            and not problems
            and not failed
            and verified["mismatches"] == 0
            and paused.get("stale_reads", 0) == 0
        )
        lost = restart["lost"] or not restart["keys"] or not kept
        out(
            f"  total restart: the group was back in {restart['seconds']:.2f} s; "
            + (
                f"nothing acknowledged was lost ({restart['keys']} keys read back from the Backend)"
                if not lost
                else f"{restart['lost']} acknowledged keys LOST"
                + ("" if kept else "; the Backend's state changed")
            )
        )
        clean = clean and not lost
        out(f"  verdict: {'OK' if clean else 'FAILED'}")
        return 0 if clean else 1


def run_demo(
    out: Callable[[str], None] = print,
    transport: str = "tcp",
    *,
    heartbeat_timeout_ms: int = 1500,
    planted_volatile_backend: bool = False,
) -> int:
    """Run the demo, writing lines through ``out``; returns the exit status (0: equal digests
    everywhere and a clean verdict). ``planted_volatile_backend`` runs the service with a
    Backend that is not logged: a planted bug that the restart check must catch."""
    if not SERVICE.is_file():
        out(f"demo: {SERVICE} not found: the demo runs from a source checkout (make demo)")
        return 2
    directory = Path(tempfile.mkdtemp(prefix="pyderecho-demo-"))

    async def main() -> int:
        async with LocalGroup(
            directory,
            FOUNDERS,
            transport=transport,
            layout="kv_app:layout",
            heartbeat_timeout_ms=heartbeat_timeout_ms,
            program=[
                sys.executable,
                str(SERVICE),
                *(["--planted-volatile-backend"] if planted_volatile_backend else []),
            ],
            data_dirs=True,
        ) as group:
            try:
                return await _KvDemo(group, out).run()
            except (TimeoutError, EOFError) as exc:
                out(f"demo failed: {exc or 'a step timed out'}; logs in {directory}")
                for node in group.nodes.values():
                    if node.stderr_tail():
                        out(f"  member {node.member} stderr: {node.stderr_tail()}")
                return 1

    try:
        status = asyncio.run(main())
    except KeyboardInterrupt:
        status = 130
    if status == 0:
        shutil.rmtree(directory, ignore_errors=True)
    return status
