"""A member back while the group runs: how long it takes to rejoin, catching up or not.

Three member processes over tcp on 127.0.0.1 (``benchmarks/restart_worker.py``, each with a
fresh data directory under ``--data-root``) hold one ``Paxos`` shard whose state is ``--keys``
values of ``--value-bytes`` each; they fill it, each making ``--keys`` calls. Member 2 is then
SIGKILLed; once the other two have installed the view without it, each makes
``--updates-while-down`` more calls. Member 2 then starts again on its data directory: it
rebuilds its replica from its log, joins, and takes what it lacks from an old member. Three
kinds of round alternate, ``--repeat`` of each: ``memory``, the old members keep the updates
after its state in memory and send those; ``log``, they keep none (every member started with
``catch_up_bytes = 0``) and read them back from their logs; ``state``, they keep none and do
not read their logs (``restart_worker.py --no-log-reads``), so they send the whole state.

Per round, from member 2's launch: ``rebuilt_s`` (its log read and replayed), ``received_s``
(the updates or the state installed), ``ready_s`` (in the view of three, the replica ready),
``first_call_s`` (its first ordered call answered by every replica); and ``sent_bytes``, what
the old member sent it. The page cache is dropped for member 2's files before it starts, as
after a reboot (``--warm-cache`` keeps it).

Prints one JSON object (and writes it to ``--out``)::

    .venv-fast/bin/python benchmarks/rejoin_time.py [--keys 2048] [--value-bytes 65536]
        [--updates-while-down 50] [--repeat 3] [--out benchmarks/results-rejoin.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from restart_time import MEMBERS, Failed, Worker, environments, evict, members, wait_for

FILL_WAIT_S = 600.0
REJOIN_WAIT_S = 300.0


def command(worker: Worker, line: str) -> None:
    assert worker.process.stdin is not None
    worker.process.stdin.write(line + "\n")
    worker.process.stdin.flush()


def wait_until(workers: list[Worker], done: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        exited = [w.member for w in workers if w.process.poll() is not None]
        bad = [r for w in workers for r in list(w.records) if r["event"] == "bad_replies"]
        if exited or bad or time.monotonic() > deadline:
            raise Failed(f"{what}: exited {exited}, bad replies {bad[:2]}")
        time.sleep(0.02)


def events(worker: Worker, name: str) -> list[dict[str, Any]]:
    return [r for r in list(worker.records) if r["event"] == name]


KINDS = ("memory", "log", "state")


def one_round(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="rejoin-time-", dir=args.data_root))
    try:
        envs = environments(workdir, 1_000_000_000, args.heartbeat_timeout_ms)
        if kind != "memory":
            envs = [env | {"PYDERECHO_CATCH_UP_BYTES": "0"} for env in envs]
        common = ["--members", str(MEMBERS), "--keys", str(args.keys)]
        common += ["--value-bytes", str(args.value_bytes), "--in-flight", str(args.in_flight)]
        if kind == "state":
            common.append("--no-log-reads")
        with members(workdir, envs, [*common, "--updates", str(args.keys)], "fill") as workers:
            wait_for(workers, "filled", FILL_WAIT_S)
            down, *others = workers[::-1]
            down.kill()
            wait_until(
                others,
                lambda: all(
                    any(down.member not in v["members"] for v in events(w, "view")) for w in others
                ),
                "the view without the member killed",
                REJOIN_WAIT_S,
            )
            for worker in others:
                command(worker, f"fill {args.updates_while_down} {MEMBERS - 1}")
            wait_until(
                others,
                lambda: all(len(events(w, "filled")) == 2 for w in others),
                "the calls while it was down",
                FILL_WAIT_S,
            )
            if not args.warm_cache:
                evict(workdir / f"member-{down.member}")
            back = Worker(
                down.member,
                envs[down.member],
                common,
                workdir / f"member-{down.member}.back.stderr",
            )
            try:
                wait_for([back], "first_call", REJOIN_WAIT_S)
            except Failed as failed:
                others_said = {w.member: w.tail() for w in others}
                raise Failed(f"{failed}; the others' stderr: {others_said}") from failed
            finally:
                back.kill()
        [received] = events(back, "state_received")
        rebuilt = back.event("rebuilt")
        ready = back.event("ready")
        first = back.event("first_call")
        assert rebuilt and ready and first
        launched = back.launched
        return {
            "kind": kind,
            "caught_up": received["caught_up"],
            "sent_bytes": received["size"],
            "rebuilt_s": round(rebuilt["at"] - launched, 4),
            "received_s": round(received["at"] - launched, 4),
            "ready_s": round(ready["at"] - launched, 4),
            "first_call_s": round(first["at"] - launched, 4),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["sent_bytes", "rebuilt_s", "received_s", "ready_s", "first_call_s"]
    return {
        "rounds": len(rounds),
        "caught_up": sum(r["caught_up"] for r in rounds),
        **{f"median_{k}": statistics.median(r[k] for r in rounds) for k in keys},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=2048)
    parser.add_argument("--value-bytes", type=int, default=64 * 1024)
    parser.add_argument("--updates-while-down", type=int, default=50)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--heartbeat-timeout-ms", type=int, default=1000)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--warm-cache", action="store_true")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    began = time.monotonic()
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for _ in range(args.repeat):
        for kind in KINDS:
            rounds[kind].append(one_round(args, kind))
    memory, log, whole = (summary(rounds[kind]) for kind in KINDS)
    result = {
        "benchmark": "rejoin_time",
        "members": MEMBERS,
        "transport": "tcp",
        "state_bytes": args.keys * args.value_bytes,
        "updates_while_down": args.updates_while_down * (MEMBERS - 1),
        "value_bytes": args.value_bytes,
        "cold_cache": not args.warm_cache,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "pyderecho": metadata.version("pyderecho"),
        },
        "from_memory": memory,
        "from_log": log,
        "whole_state": whole,
        **{
            f"ratio_{name}_{key}": round(part[f"median_{key}"] / whole[f"median_{key}"], 4)
            for name, part in (("memory", memory), ("log", log))
            for key in ("first_call_s", "sent_bytes")
        },
        "samples": [r for kind in KINDS for r in rounds[kind]],
        "wall_s": round(time.monotonic() - began, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
