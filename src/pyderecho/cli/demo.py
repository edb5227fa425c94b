"""``pyderecho demo``: a group of real member processes at work, shown as it happens.

Five ``pyderecho node`` processes on this host (tcp on 127.0.0.1, or shared memory) form a group
laid out by :func:`demo_layout`: a ``Raw`` ticker on every member and an ordered store split into
shards. Every member sends in both; the demo shows the views and shards, the traffic per member,
then kills one member with SIGKILL (the others install a view without it), starts a new member
that joins, stops everyone cleanly and runs ``pyderecho check`` over all the delivery logs.

:class:`LocalGroup`, which starts, follows and stops the processes, is what the process tests use
too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyderecho.core.layout import Allocation, InadequateView, Mode, ShardLayout
from pyderecho.core.view import NodeId, View
from pyderecho.history.delivery_log import check_logs

Record = dict[str, Any]
"""One JSON line a node printed."""

MEMBERS = 5
RATE = 100
"""Messages per second each member sends (half in each subgroup): visible, not a benchmark."""
STEP_TIMEOUT_S = 15.0


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
    """Ports free on 127.0.0.1 right now (another process could still take one first)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


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

    async def wait_for(self, accept: Callable[[Record], bool], timeout: float) -> Record:
        """The first line (printed so far or later) that ``accept`` takes."""
        seen = 0
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
    ) -> None:
        self.directory = directory
        self.transport = transport
        self.nodes: dict[NodeId, NodeProcess] = {}
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

    def _address(self, member: NodeId) -> str:
        if member not in self._addresses:
            self._addresses[member] = f"127.0.0.1:{free_ports(1)[0]}"
        return self._addresses[member]

    async def found(self, *args: str) -> None:
        """Start every founder, ``args`` being more ``pyderecho node`` flags (a workload, say).

        Each process loads (interpreter, imports, settings) and waits; only once all wait are
        they released, together: founders that start more than the heartbeat timeout apart
        would otherwise suspect each other before they ever meet.
        """
        for member in self._founders:
            await self.start(member, "--wait-for-start", *args)
        for member in self._founders:
            await self.nodes[member].wait_for(lambda r: r.get("event") == "waiting", STEP_TIMEOUT_S)
        for member in self._founders:
            stdin = self.nodes[member].process.stdin
            assert stdin is not None
            stdin.write(b"start\n")
            stdin.close()

    async def start(
        self, member: NodeId, *args: str, join: bool = False, contacts: Iterable[NodeId] = ()
    ) -> NodeProcess:
        """Start member ``member``: a founder (see :meth:`found`), or with ``join`` a process
        that joins through ``contacts``; ``args`` are more ``pyderecho node`` flags."""
        command = [
            sys.executable,
            "-m",
            "pyderecho.cli",
            "node",
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
        if join:
            known = [*contacts, member]
            command += ["--join", "--members", ",".join(f"{m}={self._address(m)}" for m in known)]
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
        self.nodes[member] = node
        return node

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
        return [node.delivery_log for node in self.nodes.values() if node.delivery_log.exists()]

    async def close(self) -> None:
        for node in self.running():
            node.process.kill()
        for node in self.nodes.values():
            with contextlib.suppress(TimeoutError):
                await node.exit_status(5.0)


def _describe_shards(view: Record) -> list[str]:
    lines = []
    for shard in view["shards"]:
        mode = "Raw" if shard["mode"] == Mode.RAW.value else "AtomicMulticast"
        lines.append(
            f"    {shard['type']:<6} subgroup {shard['subgroup']} shard {shard['shard']}: "
            f"members {shard['members']}  ({mode})"
        )
    return lines


class _Demo:
    """The demo's script; each step waits on what the processes print, with a timeout."""

    def __init__(self, group: LocalGroup, out: Callable[[str], None]) -> None:
        self.group = group
        self.out = out
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        self.out(f"[{time.monotonic() - self.started:5.1f}s] {text}")

    async def view_everywhere(self, accept: Callable[[Record], bool]) -> Record:
        """Wait until every running member installed a view ``accept`` takes; show it once."""
        views = await asyncio.gather(
            *(node.wait_for_view(accept, STEP_TIMEOUT_S) for node in self.group.running())
        )
        view = views[0]
        changes = "".join(
            f", {word} {view[key]}"
            for key, word in (("joined", "joined"), ("departed", "left"))
            if view[key]
        )
        self.say(
            f"view {view['epoch']} installed at all {len(views)} members: "
            f"members {view['members']}{changes}"
        )
        for line in _describe_shards(view):
            self.out(line)
        return view

    async def traffic(self, seconds: float) -> None:
        """Show, twice a second, each member's sent and delivered counts."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            cells = []
            for node in self.group.running():
                stats = node.last("stats") or {"sent": 0, "delivered": {}}
                delivered = stats["delivered"]
                cells.append(
                    f"{node.member}: {stats['sent']:>4}/{delivered.get('raw', 0):>5}"
                    f"/{delivered.get('ordered', 0):>5}"
                )
            self.say("sent/raw/ordered  " + "   ".join(cells))

    async def run(self) -> int:
        group, say = self.group, self.say
        workload = ["--send-rate", str(RATE), "--send-count", "1000000", "--stats-interval", "0.25"]
        say(f"starting {MEMBERS} member processes ({group.transport}) in {group.directory}")
        await group.found(*workload)
        await self.view_everywhere(lambda v: v["epoch"] == 0)
        say(f"each member sends {RATE} messages/s, in turn to the Raw ticker and its Store shard")
        await self.traffic(2.0)

        victim = MEMBERS - 1
        pid = group.nodes[victim].process.pid
        say(f"SIGKILL member {victim} (pid {pid}); its links break, the others suspect it")
        await group.kill(victim)
        await self.view_everywhere(lambda v: victim in v["departed"])
        await self.traffic(1.5)

        newcomer = MEMBERS
        survivors = [node.member for node in group.running()]
        say(f"starting member {newcomer}, which joins through {survivors}")
        await group.start(newcomer, *workload, join=True, contacts=survivors)
        await self.view_everywhere(lambda v: newcomer in v["joined"])
        await self.traffic(1.5)

        say("SIGTERM each member in turn: it leaves once its messages are delivered")
        statuses = await group.stop_all(STEP_TIMEOUT_S)
        for member, status in statuses.items():
            stopped = group.nodes[member].last("stopped") or {"reason": "?"}
            say(f"  member {member} exited with status {status}: {stopped['reason']}")

        verdict = check_logs(group.logs())
        self.out("")
        self.out("summary:")
        for member, node in sorted(group.nodes.items()):
            stats = node.last("stopped") or node.last("stats") or {"sent": 0, "delivered": {}}
            views = [r["epoch"] for r in node.records if r.get("event") == "view"]
            fate = "killed" if member == victim else stats.get("reason", "?")
            self.out(
                f"  member {member}: sent {stats['sent']}, delivered "
                f"{stats['delivered'].get('raw', 0)} raw and "
                f"{stats['delivered'].get('ordered', 0)} ordered; views {views}; {fate}"
            )
        self.out(
            f"history checker over {len(group.logs())} delivery logs: "
            + (
                f"no violations ({verdict.deliveries} deliveries; {verdict.reconstructed} sends "
                f"of the killed member taken from deliveries)"
                if not verdict.violations
                else f"{len(verdict.violations)} violations"
            )
        )
        for violation in verdict.violations:
            self.out(f"  VIOLATION {violation}")
        clean = len(statuses) == MEMBERS and all(status == 0 for status in statuses.values())
        return 0 if clean and not verdict.violations else 1


def run_demo(out: Callable[[str], None] = print, transport: str = "tcp") -> int:
    """Run the demo, writing lines through ``out``; returns the exit status."""
    directory = Path(tempfile.mkdtemp(prefix="pyderecho-demo-"))

    async def main() -> int:
        async with LocalGroup(directory, MEMBERS, transport=transport) as group:
            try:
                return await _Demo(group, out).run()
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
