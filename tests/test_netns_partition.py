"""A real partition between real hosts: five member processes, each in its own network
namespace with its own address, talking TCP across a bridge; a firewall at the bridge then cuts
{3, 4} off from {0, 1, 2}.

What virtual synchrony and the partition rule promise, checked from the members' own reports
(see ``member_worker.py``):

- the majority {0, 1, 2} installs a view without 3 and 4 and goes on delivering, before and
  after the link is healed;
- 3 and 4 stop with a "partitioned" reason, exit with the worker's partitioned status and never
  install another view: at most one side of a partition progresses;
- the same when the cut isolates the leader (member 0) with member 1 from {2, 3, 4};
- a three-way split {0, 1} | {2, 3} | {4} leaves no majority anywhere: everyone stops;
- with eight members, a cut between two that do not watch each other (0 and 4) breaks their
  link after ten heartbeat timeouts of unacknowledged data, and the group removes one of them;
- with six members, a partial cut of the leader and member 1 from {3, 4, 5}, member 2 reaching
  both sides: 0 and 1 stop, and {2, 3, 4, 5} goes on;
- every member that delivered a message delivered it in the same position of the same view
  (the running digests agree at every count two members share), and each sender's messages
  arrive in order without gaps.

Heartbeats every 50 ms, suspicion after 500 ms. The whole scenario is bounded (each wait has a
timeout, the test a hard one) and tears everything down in ``finally``: processes, rules,
namespaces. It needs root, network namespaces and ``ebtables`` (in Debian's ``iptables``
package), and skips saying which is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import netns

WORKER = str(Path(__file__).with_name("member_worker.py"))
MEMBERS = 5
PORT = 7000
WAIT_S = 15.0
EXIT_PARTITIONED = 3
EXIT_STOPPED = 4

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="netns partition test: needs root to create network namespaces",
)


@contextlib.contextmanager
def built_lab(size: int) -> Iterator[netns.Lab]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"netns partition test: {reason}")
    with netns.Lab(size) as built:
        yield built


@pytest.fixture
def lab() -> Iterator[netns.Lab]:
    with built_lab(MEMBERS) as built:
        yield built


class Board:
    """Every worker's JSON lines, gathered by reader threads; tests wait on predicates over
    them (woken by each new line, never by polling a clock)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.lines: dict[int, list[dict[str, Any]]] = {}
        self.stderr: dict[int, list[str]] = {}
        self._readers: list[tuple[threading.Thread, IO[bytes]]] = []

    def follow(self, member: int, process: subprocess.Popen[bytes]) -> None:
        self.lines[member] = []
        self.stderr[member] = []
        assert process.stdout is not None and process.stderr is not None
        for stream, handler in ((process.stdout, self._line), (process.stderr, self._error)):
            thread = threading.Thread(
                target=self._read, args=(member, stream, handler), daemon=True
            )
            thread.start()
            self._readers.append((thread, stream))

    def close(self) -> None:
        """Once the workers are gone: let each reader reach the end of its stream, then close
        the stream."""
        for thread, stream in self._readers:
            thread.join(10)
            stream.close()

    def _read(self, member: int, stream: Any, handler: Callable[[int, str], None]) -> None:
        for raw in stream:
            handler(member, raw.decode(errors="replace").rstrip("\n"))
        with self.changed:
            self.changed.notify_all()

    def _line(self, member: int, text: str) -> None:
        try:
            record = json.loads(text)
        except ValueError:
            record = {"event": "unparsed", "text": text}
        with self.changed:
            self.lines[member].append(record)
            self.changed.notify_all()

    def _error(self, member: int, text: str) -> None:
        with self.changed:
            self.stderr[member].append(text)
            self.changed.notify_all()

    def events(self, member: int, kind: str) -> list[dict[str, Any]]:
        with self.changed:
            return [line for line in self.lines[member] if line.get("event") == kind]

    def delivered(self, member: int) -> int:
        counts = [line["delivered"] for line in self.events(member, "progress")]
        return max(counts, default=0)

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {what}\n" + self.dump()
                    )
                # Woken by every line; the timeout only bounds the wait for a line that never comes.
                self.changed.wait(min(left, 1.0))

    def dump(self) -> str:
        out = []
        for member, lines in self.lines.items():
            shown = [line for line in lines if line.get("event") not in ("progress", "checkpoint")]
            shown = shown[-8:]
            out.append(f"member {member}: last {shown}, progress {self.delivered(member)}")
            out.extend(f"  stderr: {text}" for text in self.stderr[member][-10:])
        return "\n".join(out)


def start_workers(lab: netns.Lab, board: Board) -> dict[int, subprocess.Popen[bytes]]:
    members = ",".join(f"{m}={lab.ip(m)}:{PORT}" for m in range(lab.size))
    processes = {}
    for member in range(lab.size):
        argv = [
            *(sys.executable, WORKER, "--id", str(member), "--members", members),
            *("--heartbeat-interval", "0.05", "--heartbeat-timeout", "0.5"),
            *("--rate", "40", "--report-every", "0.1", "--control-stdin"),
        ]
        process = lab.popen(
            member, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        processes[member] = process
        board.follow(member, process)
    return processes


def tell(process: subprocess.Popen[bytes], line: bytes) -> None:
    assert process.stdin is not None
    process.stdin.write(line)
    process.stdin.flush()


def grew(board: Board, base: dict[int, int], by: int) -> Callable[[], bool]:
    return lambda: all(board.delivered(m) >= count + by for m, count in base.items())


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("minority", "majority"),
    [((3, 4), (0, 1, 2)), ((0, 1), (2, 3, 4))],
    ids=["followers-cut-off", "leader-cut-off"],
)
def test_minority_stops_and_majority_goes_on(
    lab: netns.Lab, minority: tuple[int, ...], majority: tuple[int, ...]
) -> None:
    """The second case cuts off the leader (member 0, the lowest rank) with one follower: the
    majority must take over leadership on its own."""
    board = Board()
    try:
        check_partition(lab, board, start_workers(lab, board), minority, majority)
    finally:
        lab.stop_processes()
        board.close()


def check_partition(
    lab: netns.Lab,
    board: Board,
    processes: dict[int, subprocess.Popen[bytes]],
    minority: tuple[int, ...],
    majority: tuple[int, ...],
    *,
    bridges: tuple[int, ...] = (),
) -> None:
    """Cut ``minority`` off from ``majority`` (but for the ``bridges``, members of the
    majority that still reach both sides: a partial cut)."""
    everyone = range(lab.size)

    # Start together, once every interpreter is loaded: start-up is not a failure.
    board.wait(lambda: all(board.events(m, "loaded") for m in everyone), "every worker to load")
    for process in processes.values():
        tell(process, b"go\n")
    board.wait(
        lambda: all(board.delivered(m) >= 100 for m in everyone),
        "all five members to deliver in view 0",
    )
    for member in everyone:
        views = board.events(member, "view")
        assert [(v["epoch"], v["members"]) for v in views] == [(0, list(everyone))]

    lab.cut(minority, [m for m in majority if m not in bridges])

    def majority_reconfigured() -> bool:
        return all(
            any(v["members"] == list(majority) for v in board.events(m, "view")) for m in majority
        )

    board.wait(majority_reconfigured, f"the majority to install a view of {majority}")
    board.wait(
        lambda: all(processes[m].poll() is not None for m in minority),
        "the minority to stop and exit",
    )
    for member in minority:
        (stopped,) = board.events(member, "stopped")
        # A minority stops for want of a majority; a leader on the smaller side of a partial
        # cut may step down first (the worker's other stop status).
        if stopped["reason"].startswith("removed from the group: cut off") and bridges:
            assert processes[member].returncode == EXIT_STOPPED, board.dump()
        else:
            assert stopped["reason"].startswith("partitioned"), stopped
            assert processes[member].returncode == EXIT_PARTITIONED, board.dump()
        assert [v["epoch"] for v in board.events(member, "view")] == [0], "minority moved on"

    # The majority delivers in its new view, then still after the link is healed.
    for phase in ("partitioned", "healed"):
        base = {m: board.delivered(m) for m in majority}
        board.wait(grew(board, base, 60), f"the majority to keep delivering ({phase})")
        if phase == "partitioned":
            lab.heal()

    # Each survivor reports while the group still runs: stopping them one by one would be a
    # failure the others react to, and that is not what this test is about.
    for member in majority:
        assert processes[member].poll() is None, f"member {member} exited\n{board.dump()}"
        tell(processes[member], b"report\n")
    board.wait(lambda: all(board.events(m, "report") for m in majority), "the majority's reports")
    for member in majority:
        stdin = processes[member].stdin
        assert stdin is not None
        stdin.close()  # the end of stdin ends the worker
    board.wait(
        lambda: all(processes[m].poll() is not None for m in majority), "the majority to exit"
    )
    for member in majority:
        assert processes[member].returncode != 1, f"member {member} failed\n{board.dump()}"

    # Virtual synchrony, from the reports: the survivors went through the same views, ending
    # (before the shutdown) in one of {0, 1, 2}, with each sender's messages in order.
    reports = {m: board.events(m, "report")[0] for m in majority}
    epochs = {report["epoch"] for report in reports.values()}
    assert len(epochs) == 1, reports
    (epoch,) = epochs
    sequences = {
        m: [(v["epoch"], v["members"]) for v in board.events(m, "view") if v["epoch"] <= epoch]
        for m in majority
    }
    first = sequences[majority[0]]
    assert all(views == first for views in sequences.values()), sequences
    assert first[-1] == (epoch, list(majority))
    for report in reports.values():
        assert report["fifo_violations"] == 0, report
    for member in minority:
        assert board.events(member, "progress")[-1]["fifo_violations"] == 0
    by_count: dict[int, dict[int, str]] = {}
    for member in everyone:
        for checkpoint in board.events(member, "checkpoint"):
            by_count.setdefault(checkpoint["n"], {})[member] = checkpoint["digest"]
    shared = {n: digests for n, digests in by_count.items() if len(digests) > 1}
    assert shared, "no delivery count reached by two members"
    for n, digests in sorted(shared.items()):
        assert len(set(digests.values())) == 1, f"members disagree at delivery {n}: {digests}"
    # The minority's deliveries are a prefix of the majority's: they share its last checkpoint.
    for member in minority:
        last = board.events(member, "checkpoint")[-1]["n"]
        assert set(by_count[last]) >= {*majority, member}


@pytest.mark.timeout(60)
def test_a_leader_cut_off_on_the_smaller_side_steps_down() -> None:
    """A partial cut, not a partition: the leader (member 0) and member 1 cannot reach
    {3, 4, 5}, and member 2 reaches everyone. The bridge must not take on the leader's
    suspicions of the larger side (the whole group used to stop): 0 and 1 stop, and
    {2, 3, 4, 5} goes on."""
    with built_lab(6) as lab:
        board = Board()
        try:
            processes = start_workers(lab, board)
            check_partition(lab, board, processes, (0, 1), (2, 3, 4, 5), bridges=(2,))
        finally:
            lab.stop_processes()
            board.close()


@pytest.mark.timeout(90)
def test_a_cut_between_members_that_do_not_watch_each_other_is_found() -> None:
    """Of eight members, neither 0 nor 4 watches the other (each watches its next three): no
    heartbeat misses the cut, and without a bound the kernel retries their links for about
    15 minutes while every delivery that needs both waits. The link's unacknowledged data
    breaks it after ten heartbeat timeouts (``TCP_USER_TIMEOUT``); one end is removed, and the
    rest go on delivering with the cut still in place."""
    with built_lab(8) as lab:
        board = Board()
        try:
            processes = start_workers(lab, board)
            everyone = range(lab.size)
            board.wait(
                lambda: all(board.events(m, "loaded") for m in everyone), "every worker to load"
            )
            for process in processes.values():
                tell(process, b"go\n")
            board.wait(grew(board, dict.fromkeys(everyone, 0), 100), "view 0 deliveries")
            lab.cut((0,), (4,))
            rest = [m for m in everyone if m not in (0, 4)]

            def running_rest() -> list[int]:
                # On a loaded machine a member of the rest is at times suspected falsely and
                # removed (seen once in CI): it stops, and never sees the view asked for.
                return [m for m in rest if processes[m].poll() is None]

            def one_end_removed() -> bool:
                running = running_rest()
                return len(running) > len(rest) // 2 and all(
                    any(not {0, 4} <= set(v["members"]) for v in board.events(m, "view"))
                    for m in running
                )

            board.wait(one_end_removed, "a view without 0 or without 4", timeout=45.0)
            base = {m: board.delivered(m) for m in running_rest()}
            board.wait(grew(board, base, 60), "the rest to keep delivering, the cut still there")
            assert sum(processes[m].poll() is not None for m in (0, 4)) <= 1, board.dump()
        finally:
            lab.stop_processes()
            board.close()


@pytest.mark.timeout(60)
def test_a_split_with_no_majority_stops_everyone(lab: netns.Lab) -> None:
    """{0, 1} | {2, 3} | {4}: no side holds a majority, so every member stops as partitioned
    and none installs another view; what they delivered before still agrees position by
    position."""
    board = Board()
    try:
        processes = start_workers(lab, board)
        everyone = range(lab.size)
        board.wait(lambda: all(board.events(m, "loaded") for m in everyone), "every worker to load")
        for process in processes.values():
            tell(process, b"go\n")
        board.wait(lambda: all(board.delivered(m) >= 100 for m in everyone), "view 0 deliveries")
        sides = [(0, 1), (2, 3), (4,)]
        for i, side in enumerate(sides):
            for other in sides[i + 1 :]:
                lab.cut(side, other)
        board.wait(
            lambda: all(processes[m].poll() is not None for m in everyone), "every member to stop"
        )
        for member in everyone:
            assert processes[member].returncode == EXIT_PARTITIONED, board.dump()
            assert [v["epoch"] for v in board.events(member, "view")] == [0]
        by_count: dict[int, set[str]] = {}
        for member in everyone:
            for checkpoint in board.events(member, "checkpoint"):
                by_count.setdefault(checkpoint["n"], set()).add(checkpoint["digest"])
        assert all(len(digests) == 1 for digests in by_count.values()), by_count
    finally:
        lab.stop_processes()
        board.close()
