"""One Group member as a process, for tests/test_group_processes.py.

Settings come from ``PYDERECHO_*`` variables. The member makes ``--puts`` ordered calls, checks
that each has one reply per replica, waits until its replica holds ``--expect`` keys, prints
its state's digest as a JSON line, and leaves when its standard input closes. ``--blocking``
runs the same steps through :class:`pyderecho.BlockingGroup`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from typing import Any

import msgspec

from pyderecho import BlockingGroup, Group, StateReceived, ordered, query


class Store:
    items: dict[str, bytes]

    def __init__(self) -> None:
        self.items = {}

    @ordered
    def put(self, key: str, value: bytes) -> int:
        self.items[key] = value
        return len(self.items)

    @query
    def size(self) -> int:
        return len(self.items)


TYPES = {"Group": Store}  # the built-in every-member layout names its one type "Group"


def emit(**record: Any) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def digest(store: Store) -> str:
    return hashlib.sha256(msgspec.msgpack.encode(sorted(store.items.items()))).hexdigest()


def check_own(count: object) -> None:
    """An own-reply put returns the caller's replica's count of keys, a positive int."""
    if type(count) is not int or count < 1:
        emit(event="bad_replies", replies=repr(count))


def on_event(event: object) -> None:
    if isinstance(event, StateReceived):
        emit(event="state", source=event.source, size=event.size)


async def run_async(args: argparse.Namespace) -> None:
    async with Group.start(
        join=args.join, types=TYPES, on_event=on_event, shm_dir=args.shm_dir
    ) as group:
        store = await group.wait_ready(Store, timeout=60)
        emit(event="ready", member=group.member_id)
        for i in range(args.puts - 1):
            replies = await group.subgroup(Store).put(f"{group.member_id}-{i}", b"v")
            if set(replies) != set(group.view.members) or replies.errors:
                emit(event="bad_replies", replies=repr(replies))
        # The last put takes the caller's own replica's answer alone (replies="own").
        own = group.subgroup(Store, replies="own")
        check_own(await own.put(f"{group.member_id}-{args.puts - 1}", b"v"))
        async with asyncio.timeout(60):
            while len(store.items) < args.expect:
                await group.member.wait_progress()
        emit(event="done", member=group.member_id, digest=digest(store), keys=len(store.items))
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def run_blocking(args: argparse.Namespace) -> None:
    with BlockingGroup.start(
        join=args.join, types=TYPES, on_event=on_event, shm_dir=args.shm_dir
    ) as group:
        store = group.wait_ready(Store, timeout=60)
        emit(event="ready", member=group.member_id)
        for i in range(args.puts - 1):
            replies = group.subgroup(Store).put(f"{group.member_id}-{i}", b"v")
            if set(replies) != set(group.view.members) or replies.errors:
                emit(event="bad_replies", replies=repr(replies))
        own = group.subgroup(Store, replies="own")
        check_own(own.put(f"{group.member_id}-{args.puts - 1}", b"v"))
        deadline = time.monotonic() + 60
        while group.subgroup(Store).size() < args.expect and time.monotonic() < deadline:
            time.sleep(0.05)
        emit(event="done", member=group.member_id, digest=digest(store), keys=len(store.items))
        # Blocks until the test closes our standard input: then the group is left on exit.
        sys.stdin.read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--join", action="store_true")
    parser.add_argument("--blocking", action="store_true")
    parser.add_argument("--puts", type=int, default=100)
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--shm-dir")
    args = parser.parse_args()
    if args.blocking:
        run_blocking(args)
    else:
        asyncio.run(run_async(args))


if __name__ == "__main__":
    main()
