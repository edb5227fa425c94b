"""One member of a Paxos group as a process, for tests/test_paxos_processes.py.

Settings come from ``PYDERECHO_*`` variables (``PYDERECHO_DATA_DIR`` among them). The member
appends entries to a durable ledger with ``--in-flight`` calls outstanding, and prints one JSON
line per acknowledged call: the client-side ledger the test checks the logs against after it
kills every member at once. Started again on the same data directory, it restarts from its
logs and first prints the ledger it recovered (and, when it comes back to a group that went on
without it, the state transfer that caught it up). It runs until it is killed. While the file
``--pause-file`` names exists, its writers make no new call: the test holds the load still.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from pyderecho import (
    Group,
    MemberRemoved,
    StateReceived,
    context,
    every_member,
    layout_of,
    ordered,
)
from pyderecho.core.events import PersistRequested
from pyderecho.core.layout import Mode
from pyderecho.runtime.persistence import ShardLogs


class Ledger:
    entries: list[tuple[str, int, int]]

    def __init__(self) -> None:
        self.entries = []

    @ordered
    def append(self, entry: str) -> tuple[int, int, float]:
        ctx = context()
        assert ctx.version is not None
        self.entries.append((entry, *ctx.version))
        return ctx.version[0], ctx.version[1], ctx.timestamp


LAYOUT = layout_of({"Ledger": every_member(Mode.PAXOS)})


def emit(**record: Any) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def report(event: object) -> None:
    if isinstance(event, StateReceived):
        emit(
            event="state_received",
            source=event.source,
            size=event.size,
            position=list(event.position),
            caught_up=event.caught_up,
        )


async def main(args: argparse.Namespace) -> None:
    async with Group.start(
        types={"Ledger": Ledger}, layout=LAYOUT, shm_dir=args.shm_dir, on_event=report
    ) as group:
        ledger = await group.wait_ready(Ledger, timeout=60)
        await group.wait_for_view(lambda view: len(view.members) == args.members, 60)
        emit(event="ready", member=group.member_id, epoch=group.view.epoch, entries=ledger.entries)

        # Named after the view the run began in too: entries of a run before a restart and
        # of the run after it never share a name.
        run = group.view.epoch

        async def writer(lane: int) -> None:
            number = 0
            while True:
                while args.pause_file and os.path.exists(args.pause_file):
                    await asyncio.sleep(0.05)  # the test holds the workload: no protocol step
                entry = f"{group.member_id}-{run}-{lane}-{number}"
                replies = await group.subgroup(Ledger).append(entry)
                errors = replies.errors
                # A replica removed before it replied (a member killed) answers nothing; all
                # the others must agree.
                outcomes = {v for m, v in replies.items() if m not in errors}
                removed = [m for m, e in errors.items() if isinstance(e, MemberRemoved)]
                if len(outcomes) != 1 or len(removed) < len(errors):
                    emit(event="bad_replies", entry=entry, replies=repr(replies))
                if not outcomes:
                    continue
                epoch, position, stamp = outcomes.pop()
                emit(event="ack", entry=entry, epoch=epoch, position=position, stamp=stamp)
                number += 1

        await asyncio.gather(*(writer(lane) for lane in range(args.in_flight)))


def plant_unlogged_delivery(member: int) -> None:
    """The planted bug: member ``member`` reports its records durable without writing them."""
    original = ShardLogs.persist

    def persist(self: ShardLogs, request: PersistRequested) -> None:
        if self.data_dir.name != f"member-{member}":
            original(self, request)
            return
        asyncio.get_running_loop().call_soon(
            self._on_durable, request.subgroup, request.epoch, request.upto
        )

    ShardLogs.persist = persist  # type: ignore[method-assign]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, required=True)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--shm-dir", default=None)
    parser.add_argument("--planted-unlogged-member", type=int, default=-1)
    parser.add_argument("--pause-file", default="")
    arguments = parser.parse_args()
    if arguments.planted_unlogged_member >= 0:
        plant_unlogged_delivery(arguments.planted_unlogged_member)
    asyncio.run(main(arguments))
