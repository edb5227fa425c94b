"""``pyderecho chaos``: real member processes under a seeded schedule of faults, checked.

Each run starts ``--members`` ``pyderecho node`` processes on this host (tcp on 127.0.0.1, or
shared memory) running the built-in workload, then injects ``--faults`` faults drawn from the
run's seed, one after another: SIGKILL (the member comes back under its id as a joiner once the
group removed it), SIGSTOP for a while then SIGCONT (past the timeout the group removes it and it
comes back), SIGTERM (a leave; it joins again), a majority told to leave at once (they all join
again), and, over tcp, a connection that writes garbage to a member, or 200 connections to a
member that say nothing for two timeouts. One member, the *witness*, is never touched: the
runner watches its views and deliveries.

A run passes when the history checker finds no violation in any delivery log (every process's
log, across its incarnations), every member the schedule left running still runs, the group ends
with every member in its view, and the witness delivered after the last fault. Each run prints
one line; the summary gives how many runs stayed safe and available, the time from a SIGKILL to
the witness's view without the member (p50/p99), and the longest the witness went without a
delivery. The schedule of a run is a function of its seed alone (``--seed`` plus the run's
number); timing, which is the machine's, is not.

With ``--netns`` (tcp, as root) each member runs in a network namespace of its own
(:class:`~pyderecho.testing.netns.NetworkLab`) and the schedule also draws cuts made with
iptables: a *partition* (a minority of the group, the witness never in it, cut off from the
rest for 2.5 timeouts; its members must end removed, exit 3, and come back) and a *partial
cut* (one link between two members, or every link between two halves of the others with the
witness as the bridge between them, the view's leader on the smaller half when they are
uneven; the group removes members until no cut link is left among those that stay, and
whoever is removed comes back).

With ``--busy N``, N more processes spin on the CPU for the whole of the runs: the same
schedule on a loaded machine, where a member's heartbeats come late and its loop runs behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyderecho.cli.demo import LocalGroup, NodeProcess
from pyderecho.history.delivery_log import check_logs
from pyderecho.testing.netns import NetworkLab, unavailable

STEP_S = 30.0
"""The longest one step (a view change, a join) may take before the run counts as unavailable."""
FAULTS = ("kill", "pause", "leave", "leave-many", "garbage", "hold")
HELD_CONNECTIONS = 200
CUTS = ("partition", "partial-cut")
"""Faults drawn only with ``--netns``."""
SPIN = "while True: pass"
"""What a ``--busy`` process runs."""
WORKLOAD = ("--send-count", "100000000", "--send-rate", "100", "--stats-interval", "0.05")


@dataclass
class RunReport:
    """One run: what was injected, what was measured, and the verdict."""

    run: int
    seed: int
    members: int
    faults: list[str]
    violations: list[str] = field(default_factory=list)
    unavailable: str = ""
    """Why the group did not keep a view and keep delivering; empty when it did."""
    view_after_kill_s: list[float] = field(default_factory=list)
    longest_pause_s: float = 0.0
    cuts: list[str] = field(default_factory=list)
    """What each partition or partial cut cut: ``1,2|0,3,4`` (every link between the sides)."""
    removed_by_cuts: list[int] = field(default_factory=list)
    """Members that a partition or partial cut made the group remove (each came back)."""
    deliveries: int = 0
    kept: str = ""
    """Where a failed run's files stay: settings, delivery logs, each member's stderr."""
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations and not self.unavailable

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        kills = ", ".join(f"{s:.2f}" for s in self.view_after_kill_s) or "-"
        text = (
            f"run {self.run} seed {self.seed}: {self.members} members; "
            f"{' '.join(self.faults)}; view after kill {kills} s; "
            f"cuts {' '.join(self.cuts) or '-'}, removed {self.removed_by_cuts or '-'}; "
            "longest delivery pause "
            f"{self.longest_pause_s:.2f} s; {self.deliveries} deliveries checked; {verdict}"
        )
        problems = [f"\n  unavailable: {self.unavailable}"] if self.unavailable else []
        problems += [f"\n  violation: {v}" for v in self.violations[:5]]
        problems += [f"\n  its files: {self.kept}"] if self.kept else []
        return text + "".join(problems)


def schedule(seed: int, count: int, *, cuts: bool = False) -> list[str]:
    """The faults of a run, a function of its seed alone (and of whether cuts are drawn)."""
    rng = random.Random(seed)
    return [rng.choice(FAULTS + CUTS if cuts else FAULTS) for _ in range(count)]


class _Run:
    def __init__(
        self, group: LocalGroup, report: RunReport, rng: random.Random, transport: str
    ) -> None:
        self.group = group
        self.report = report
        self.rng = rng
        self.transport = transport
        self.members = list(range(report.members))
        self.witness = self.members[-1]
        self._last_delivery: float | None = None

    @property
    def witness_node(self) -> NodeProcess:
        return self.group.nodes[self.witness]

    async def run(self) -> None:
        await self.group.found(*WORKLOAD)
        for node in self.group.nodes.values():
            await node.wait_for_view(lambda v: v["epoch"] == 0, STEP_S)
        watch = asyncio.ensure_future(self._watch_deliveries())
        try:
            for fault in self.report.faults:
                await asyncio.sleep(self.rng.uniform(0.5, 1.5))
                await getattr(self, "_" + fault.replace("-", "_"))()
                await self._whole_again(fault)
            await asyncio.sleep(1.0)
            await self._delivers(after=f"the last fault ({self.report.faults[-1]})")
        finally:
            watch.cancel()
        statuses = await self.group.stop_all(STEP_S)
        failed = {m: s for m, s in statuses.items() if s != 0}
        if failed:
            self.report.unavailable = f"members exited with {failed} when told to stop"

    def _targets(self, count: int = 1) -> list[int]:
        return self.rng.sample([m for m in self.members if m != self.witness], count)

    async def _view_without(self, members: list[int], start: int) -> float:
        began = time.monotonic()
        await self.witness_node.wait_for(
            lambda r: r.get("event") == "view" and not set(members) & set(r["members"]),
            STEP_S,
            start=start,
        )
        return time.monotonic() - began

    async def _rejoin(self, member: int) -> None:
        contacts = [m for m in self.members if m != member and self._running(m)]
        await self.group.start(member, *WORKLOAD, join=True, contacts=contacts)

    def _running(self, member: int) -> bool:
        node = self.group.nodes.get(member)
        return node is not None and node.process.returncode is None

    async def _kill(self) -> None:
        (target,) = self._targets()
        start = len(self.witness_node.records)
        self.group.nodes[target].process.send_signal(signal.SIGKILL)
        self.report.view_after_kill_s.append(await self._view_without([target], start))
        await self.group.nodes[target].exit_status(STEP_S)
        await self._rejoin(target)

    async def _pause(self) -> None:
        (target,) = self._targets()
        node = self.group.nodes[target]
        timeout = self.group.heartbeat_timeout_ms / 1000
        since = len(self.witness_node.records)
        node.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(self.rng.uniform(0.3, 2.5) * timeout)
        node.process.send_signal(signal.SIGCONT)
        if await self._was_removed(target, "paused", since):
            await self._rejoin(target)

    def _suspected_since(self, member: int, since: int) -> bool:
        """The witness suspected ``member`` in its lines from ``since`` on: its next view
        leaves the member out (or it stops, which the run reports). Others' suspicions do not
        tell: of the two ends of one cut link only one is removed, though each suspects the
        other."""
        return any(
            r.get("event") == "suspected" and r.get("member") == member
            for r in self.witness_node.records[since:]
        )

    async def _was_removed(self, member: int, what: str, since: int) -> bool:
        """Whether the group removed ``member`` while a fault kept it away: it learns so as
        soon as it is back, and must exit 3 (anything else makes the run unavailable). A member
        the witness suspected since the fault began (from its line ``since`` on) is on its way
        out, however long the view change takes on a loaded machine: it is waited for."""
        node = self.group.nodes[member]
        with contextlib.suppress(TimeoutError):
            await node.exit_status(3 * self.group.heartbeat_timeout_ms / 1000)
        if self._running(member) and not self._suspected_since(member, since):
            return False
        try:
            status = await node.exit_status(STEP_S)
        except TimeoutError:
            self.report.unavailable = (
                f"{what} member {member}: the witness suspected it, yet it still runs after "
                f"{STEP_S:.0f} s"
            )
            raise _Unavailable from None
        if status != 3:
            self.report.unavailable = f"{what} member {member} exited {status}, not 3"
        return True

    async def _leave(self) -> None:
        await self._leave_together(self._targets())

    async def _leave_many(self) -> None:
        # Most of the group at once, the witness excepted: leaves do not count as failures.
        count = min(len(self.members) - 1, len(self.members) // 2 + 1)
        await self._leave_together(self._targets(count))

    async def _leave_together(self, targets: list[int]) -> None:
        start = len(self.witness_node.records)
        for member in targets:
            self.group.nodes[member].process.send_signal(signal.SIGTERM)
        for member in targets:
            status = await self.group.nodes[member].exit_status(STEP_S)
            reason = (self.group.nodes[member].last("stopped") or {}).get("reason")
            if status != 0 or reason != "left the group":
                self.report.unavailable = f"leaver {member} ended {status}: {reason}"
        await self._view_without(targets, start)
        for member in targets:
            await self._rejoin(member)

    async def _partition(self) -> None:
        minority = self._targets((len(self.members) - 1) // 2)
        majority = [m for m in self.members if m not in minority]
        await self._cut_for_a_while(minority, majority)

    async def _partial_cut(self) -> None:
        others = [m for m in self.members if m != self.witness]
        if len(others) >= 2 and self.rng.random() < 0.5:
            # Two halves, the witness the bridge. Uneven halves put the view's leader on the
            # smaller one: it must step down rather than talk the bridge into stopping.
            self.rng.shuffle(others)
            half = len(others) // 2
            view = (self.witness_node.last("view") or {}).get("members", [])
            leader = view[0] if view else None
            if len(others) % 2 and leader in others[half:]:
                others.remove(leader)
                others.insert(0, leader)
            await self._cut_for_a_while(others[:half], others[half:])
        else:
            a, b = self._targets(2)
            await self._cut_for_a_while([a], [b])

    async def _cut_for_a_while(self, side: list[int], other: list[int]) -> None:
        """Cut every link between ``side`` and ``other`` for 2.5 timeouts, heal, and bring
        back whoever the group removed."""
        lab = self.group.lab
        assert lab is not None, "cuts are drawn only with --netns"
        timeout = self.group.heartbeat_timeout_ms / 1000
        since = len(self.witness_node.records)
        self.report.cuts.append(f"{','.join(map(str, side))}|{','.join(map(str, other))}")
        for a in side:
            for b in other:
                lab.cut(a, b)
        await asyncio.sleep(2.5 * timeout)
        lab.heal()
        removed = [m for m in sorted(side + other) if await self._was_removed(m, "cut-off", since)]
        self.report.removed_by_cuts += removed
        for member in removed:
            await self._rejoin(member)

    async def _garbage(self) -> None:
        if self.transport != "tcp":
            return
        (target,) = self._targets()
        address = self.group.address_of(target)
        host, port = address.rsplit(":", 1)
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(self.rng.randbytes(4096))
        await writer.drain()
        writer.close()

    async def _hold(self) -> None:
        """Open many connections to a member and say nothing on them for two timeouts (a
        port scan, a stuck client): its transport must time them out without dropping any
        member, and the group must not notice."""
        if self.transport != "tcp":
            return
        (target,) = self._targets()
        host, port = self.group.address_of(target).rsplit(":", 1)
        opened = await asyncio.gather(
            *(asyncio.open_connection(host, int(port)) for _ in range(HELD_CONNECTIONS)),
            return_exceptions=True,
        )
        await asyncio.sleep(2 * self.group.heartbeat_timeout_ms / 1000)
        for connection in opened:
            if not isinstance(connection, BaseException):
                connection[1].close()

    async def _whole_again(self, fault: str) -> None:
        """Every member is in the witness's latest view again, every process runs, and each
        has installed such a view itself (a joiner the group let in may still be waiting for
        its state on a loaded machine: told to leave then, it has not joined yet)."""
        try:
            async with asyncio.timeout(STEP_S):
                for member in self.members:
                    node = self.group.nodes[member]
                    while sorted((node.last("view") or {}).get("members", [])) != self.members:
                        start = len(node.records)
                        await node.wait_for(lambda r: r.get("event") == "view", STEP_S, start=start)
        except (TimeoutError, EOFError) as exc:
            self.report.unavailable = f"after {fault}: the group did not get whole again ({exc})"
            raise _Unavailable from None
        stopped = [m for m in self.members if not self._running(m)]
        if stopped:
            self.report.unavailable = f"after {fault}: members {stopped} stopped"
            raise _Unavailable

    async def _delivers(self, after: str) -> None:
        node = self.witness_node
        start = len(node.records)
        try:
            await node.wait_for(lambda r: r.get("event") == "stats", STEP_S, start=start)
        except (TimeoutError, EOFError):
            self.report.unavailable = f"the witness delivered nothing after {after}"
            raise _Unavailable from None

    async def _watch_deliveries(self) -> None:
        """The longest the witness went without a new delivery (stats lines only change when
        its counts do), sampled every 20 ms."""
        node = self.witness_node
        seen = 0
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            if len(node.records) != seen:
                stats = [r for r in node.records[seen:] if r.get("event") == "stats"]
                seen = len(node.records)
                if stats:
                    if self._last_delivery is not None:
                        pause = now - self._last_delivery
                        self.report.longest_pause_s = max(self.report.longest_pause_s, pause)
                    self._last_delivery = now


class _Unavailable(Exception):
    """The run ended early: the group did not recover (the report says how)."""


def run_chaos(
    *,
    members: int,
    runs: int,
    seed: int,
    faults: int,
    transport: str,
    heartbeat_timeout_ms: int,
    netns: bool = False,
    busy: int = 0,
    out: Callable[[str], None] = print,
    as_json: bool = False,
) -> int:
    """Run the chaos schedule ``runs`` times, with ``busy`` processes spinning beside them;
    0 when every run was safe and available."""
    reports: list[RunReport] = []
    with spinning(busy):
        for number in range(runs):
            run_seed = seed + number
            report = RunReport(number, run_seed, members, schedule(run_seed, faults, cuts=netns))
            directory = Path(tempfile.mkdtemp(prefix="pdc-", dir="/tmp"))
            began = time.monotonic()
            lab = NetworkLab() if netns else None
            try:
                asyncio.run(_one(directory, report, transport, heartbeat_timeout_ms, lab))
                verdict = check_logs(sorted(directory.glob("member-*.log")))
                report.violations = [str(v) for v in verdict.violations]
                report.deliveries = verdict.deliveries
            finally:
                if lab is not None:
                    lab.close()
                if report.ok:
                    shutil.rmtree(directory, ignore_errors=True)
                else:
                    report.kept = str(directory)
            report.wall_s = round(time.monotonic() - began, 2)
            reports.append(report)
            out(json.dumps(_as_json(report)) if as_json else report.line())
    summary = _summary(reports) | {"busy_processes": busy}
    out(json.dumps(summary) if as_json else _summary_line(summary))
    return 0 if all(r.ok for r in reports) else 1


@contextlib.contextmanager
def spinning(count: int) -> Iterator[None]:
    """``count`` processes spinning on the CPU while the block runs: a loaded machine."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


async def _one(
    directory: Path, report: RunReport, transport: str, timeout_ms: int, lab: NetworkLab | None
) -> None:
    async with LocalGroup(
        directory, report.members, transport=transport, heartbeat_timeout_ms=timeout_ms, lab=lab
    ) as group:
        run = _Run(group, report, random.Random(report.seed), transport)
        with contextlib.suppress(_Unavailable):
            await run.run()


def _as_json(report: RunReport) -> dict[str, Any]:
    return {
        "run": report.run,
        "seed": report.seed,
        "members": report.members,
        "faults": report.faults,
        "ok": report.ok,
        "violations": report.violations,
        "unavailable": report.unavailable,
        "view_after_kill_s": [round(s, 4) for s in report.view_after_kill_s],
        "longest_pause_s": round(report.longest_pause_s, 4),
        "cuts": report.cuts,
        "removed_by_cuts": report.removed_by_cuts,
        "deliveries": report.deliveries,
        "wall_s": report.wall_s,
        "kept": report.kept,
    }


def _summary(reports: list[RunReport]) -> dict[str, Any]:
    kills = sorted(s for r in reports for s in r.view_after_kill_s)
    pauses = sorted(r.longest_pause_s for r in reports)

    def quantile(values: list[float], q: float) -> float | None:
        if not values:
            return None
        return round(values[min(len(values) - 1, int(q * len(values)))], 4)

    return {
        "summary": True,
        "runs": len(reports),
        "safe": sum(not r.violations for r in reports),
        "available": sum(not r.unavailable for r in reports),
        "view_after_kill_p50_s": quantile(kills, 0.5),
        "view_after_kill_p99_s": quantile(kills, 0.99),
        "longest_pause_p50_s": round(statistics.median(pauses), 4) if pauses else None,
        "longest_pause_max_s": round(max(pauses), 4) if pauses else None,
    }


def _summary_line(summary: dict[str, Any]) -> str:
    return (
        f"{summary['runs']} runs: {summary['safe']} safe, {summary['available']} kept a view "
        f"and kept delivering; view after a SIGKILL p50 {summary['view_after_kill_p50_s']} s, "
        f"p99 {summary['view_after_kill_p99_s']} s; longest delivery pause p50 "
        f"{summary['longest_pause_p50_s']} s, max {summary['longest_pause_max_s']} s"
        + (
            f"; {summary['busy_processes']} busy processes beside"
            if summary["busy_processes"]
            else ""
        )
    )


def main_chaos(args: argparse.Namespace) -> int:
    if args.members < 3:
        print("pyderecho chaos: --members must be at least 3 (a majority must outlive a fault)",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.netns and (args.transport != "tcp" or unavailable()):
        why = unavailable() or "cuts need the tcp transport"
        print(f"pyderecho chaos: --netns: {why}", file=sys.stderr)
        return 2
    return run_chaos(
        members=args.members,
        runs=args.runs,
        seed=args.seed,
        faults=args.faults,
        transport=args.transport,
        heartbeat_timeout_ms=args.heartbeat_timeout_ms,
        netns=args.netns,
        busy=args.busy,
        as_json=args.json,
    )
