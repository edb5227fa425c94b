"""Failure detection on a starved machine: no false suspicion under full load, a crash still found.

Starts ``--members`` ``pyderecho node`` processes (``--transport``, tcp by default; the
built-in workload at ``--rate`` messages/s each) plus ``--busy`` processes that spin on the
CPU, for ``--seconds``; counts the view changes and suspicions while nobody fails (the target:
none). Then it SIGKILLs one member (``--kill``, member 1 by default; 0 is the leader) and,
separately, SIGSTOPs another for good (a crash that breaks no link), and reports how long the
group took to install a view without each, as a multiple of the heartbeat timeout (target: the
stopped one within 2 x the timeout; the killed one's links break at once).

    .venv-fast/bin/python benchmarks/starved.py [--members 16] [--busy 10] [--seconds 120]

Prints one JSON object. The machine's core count is in it: the figures mean something only
beside it (the issue's case is 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyderecho.cli.chaos import spinning
from pyderecho.cli.demo import LocalGroup, Record
from pyderecho.core.config import CoreConfig


def _view_without(member: int) -> Callable[[Record], bool]:
    return lambda record: record.get("event") == "view" and member not in record["members"]


async def _measure(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    timeout_s = args.heartbeat_timeout_ms / 1000
    with spinning(args.busy):
        async with LocalGroup(
            directory,
            args.members,
            transport=args.transport,
            heartbeat_timeout_ms=args.heartbeat_timeout_ms,
            heartbeat_interval_ms=args.heartbeat_interval_ms,
        ) as group:
            workload = (
                ("--send-count", "100000000", "--send-rate", str(args.rate)) if args.rate else ()
            )
            began = time.monotonic()
            await group.found(*workload)
            for node in group.nodes.values():
                await node.wait_for_view(lambda v: v["epoch"] == 0, 120)
            formed_s = time.monotonic() - began
            await asyncio.sleep(args.seconds)
            epochs = {
                m: max(int(r["epoch"]) for r in node.records if r.get("event") == "view")
                for m, node in group.nodes.items()
            }
            suspicions = sum(
                1 for node in group.nodes.values() for r in node.records
                if r.get("event") == "suspected"
            )  # fmt: skip
            stopped = sorted(m for m, node in group.nodes.items() if node.process.returncode)
            # The member killed may be the leader (0): the witness is then the last one.
            witness = group.nodes[0 if args.kill != 0 else args.members - 1]
            paused = 2 if args.kill != 2 else 3
            witness_stopped: list[Record] = []
            crashes: dict[str, float | None] = {}
            for kind, member, sig in (
                ("sigkill", args.kill, signal.SIGKILL),
                ("sigstop", paused, signal.SIGSTOP),
            ):
                if group.nodes[member].process.returncode is not None:
                    crashes[kind] = None
                    continue
                start = len(witness.records)
                began = time.monotonic()
                try:
                    group.nodes[member].process.send_signal(sig)
                except ProcessLookupError:  # it stopped already (removed), not yet reaped
                    crashes[kind] = None
                    continue
                try:
                    await witness.wait_for(_view_without(member), 60, start=start)
                except EOFError:
                    # The witness stopped: report why instead of a figure.
                    crashes[kind] = None
                    witness_stopped = [r for r in witness.records if r.get("event") == "stopped"]
                    break
                crashes[kind] = round((time.monotonic() - began) / timeout_s, 3)
            with contextlib.suppress(ProcessLookupError):
                group.nodes[paused].process.send_signal(signal.SIGKILL)
    return {
        "cpu_cores": os.cpu_count(),
        "members": args.members,
        "transport": args.transport,
        "busy_processes": args.busy,
        "rate_per_member": args.rate,
        "seconds": args.seconds,
        "heartbeat_timeout_ms": args.heartbeat_timeout_ms,
        "heartbeat_interval_ms": args.heartbeat_interval_ms,
        "killed": args.kill,
        "formed_s": round(formed_s, 2),
        "views_installed_while_nobody_failed": max(epochs.values()),
        "suspicions_while_nobody_failed": suspicions,
        "members_stopped_while_nobody_failed": stopped,
        "new_view_after_crash_in_timeouts": crashes,
        "witness_stopped": witness_stopped,
        "target_no_view_change": max(epochs.values()) == 0,
        "target_sigstop_within_2_timeouts": (crashes.get("sigstop") or 99) <= 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--busy", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument(
        "--rate",
        type=int,
        default=50,
        help="messages/s each member sends (0: none, an idle group: heartbeats alone)",
    )
    parser.add_argument("--heartbeat-timeout-ms", type=int, default=1000)
    parser.add_argument("--transport", choices=("tcp", "shm"), default="tcp")
    parser.add_argument(
        "--kill", type=int, default=1, help="the member to SIGKILL (0: the leader; default 1)"
    )
    parser.add_argument(
        "--heartbeat-interval-ms",
        type=int,
        default=round(CoreConfig().heartbeat_interval * 1000),
        help="default: the library's",
    )
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="pds-", dir="/tmp"))
    try:
        print(json.dumps(asyncio.run(_measure(args, directory))))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
