"""How a group's costs grow with its members and shards, measured in the simulator.

The simulator runs every member's real protocol core in one process on virtual time, so it
counts exactly what each member sends and how much core work a step takes, at sizes no single
machine runs as processes. For each group size it measures, with its own seed:

- ``one_shard``: one ordered shard of every member, every member sending ``--messages`` 100-byte
  messages: frames each member sends per message delivered, and the core's CPU per delivery
  (this process's CPU over every member's deliveries; no asyncio, no sockets);
- ``shards_of_3``: the same traffic in shards of three (one subgroup of ``members // 3``
  shards): what each member sends and spends when the group grows by adding shards instead of
  growing one;
- ``view_change`` (one shard) and ``view_change_shards_of_3``: an idle group, then one member
  killed (its links break at once, as SIGKILL's do); ``leader_killed_shards_of_3``: the same
  with the leader killed: from the first suspicion to the last survivor's new view, the frames
  sent (all members, the leader's (the new one's when the leader was killed), and the median
  of the others') and the core CPU, with the simulated time the
  change took on the simulator's links (20 us latency, up to 30 us jitter, 10 Gbit/s: network
  rounds only, no CPU time, so a floor for what real members take).

Prints one JSON object; the numbers in docs/scaling.md come from it::

    .venv-fast/bin/python benchmarks/growth.py [--sizes 3,8,16,32,64] [--sharded 128,256,512,1025]
        [--messages 20] [--out benchmarks/results-growth.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from pyderecho.core.events import Event, Suspected, ViewInstalled
from pyderecho.core.layout import LayoutFunction, Mode, every_member, layout_of, sharded
from pyderecho.core.view import NodeId
from pyderecho.sim.simulation import Simulation

PAYLOAD = b"x" * 100
SPACING_S = 1e-3
"""Between one member's sends: light enough that every size keeps up."""


def _traffic(
    members: int, layout: LayoutFunction, messages: int, seed: int
) -> dict[str, float | int]:
    """Every member sends ``messages`` in its shard; what it cost once all are delivered."""
    sim = Simulation(members, layout, seed=seed)
    senders = 0
    for member in range(members):
        shards = sim.nodes[member].layout.shards_of(member)
        if not shards:
            continue  # a member the layout leaves out (shards of three: the remainder)
        senders += 1
        for number in range(messages):
            sim.send(member, shards[0].subgroup, PAYLOAD, at=number * SPACING_S + member * 1e-6)
    sent_before = sum(sim.messages_sent.values())
    cpu = time.process_time()
    assert sim.settle(limit=60.0), f"{members} members did not deliver everything"
    cpu = time.process_time() - cpu
    frames = sum(sim.messages_sent.values()) - sent_before
    sent = senders * messages
    return {
        "deliveries": sim.deliveries,
        "frames_per_member_per_message": round(frames / members / sent, 3),
        "frames_per_delivery": round(frames / sim.deliveries, 3),
        "core_cpu_us_per_delivery": round(cpu / sim.deliveries * 1e6, 2),
        "deliveries_per_member": round(sim.deliveries / members, 1),
    }


def _view_change(
    members: int, layout: LayoutFunction, seed: int, victim: NodeId | None = None
) -> dict[str, float | int]:
    """Kill one member of an idle group (the highest rank unless ``victim``); what the view
    change cost."""
    sim = Simulation(members, layout, seed=seed)
    sim.run(until=0.5)
    marks: dict[str, Any] = {}
    killed = members - 1 if victim is None else victim
    survivors = set(range(members)) - {killed}
    installed: set[NodeId] = set()

    def mark(name: str) -> None:
        marks[name] = (sim.now, time.process_time(), dict(sim.messages_sent))

    def watch(member: NodeId, event: Event) -> None:
        if isinstance(event, Suspected) and "start" not in marks:
            mark("start")
        elif isinstance(event, ViewInstalled) and event.view.epoch >= 1 and member in survivors:
            installed.add(member)
            if installed == survivors:
                mark("end")

    sim.on_event = watch
    sim.kill(killed, at=sim.now + 0.01)
    assert sim.run_until(lambda: "end" in marks, limit=sim.now + 60.0), "no new view"
    (t0, cpu0, sent0), (t1, cpu1, sent1) = marks["start"], marks["end"]
    per_member = {m: sent1.get(m, 0) - sent0.get(m, 0) for m in survivors}
    leader = min(survivors)  # the leader that stays, or the one that takes over
    return {
        "sim_ms": round((t1 - t0) * 1e3, 3),
        "frames": sum(per_member.values()),
        "frames_leader": per_member[leader],
        "frames_other_median": statistics.median(v for m, v in per_member.items() if m != leader),
        "core_cpu_ms": round((cpu1 - cpu0) * 1e3, 1),
    }


def _timed(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    result = run()
    result["wall_s"] = round(time.perf_counter() - started, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="3,8,16,32,64")
    parser.add_argument(
        "--sharded", default="128,256,512,1025", help="sizes measured in shards of three only"
    )
    parser.add_argument("--messages", type=int, default=20, help="per member")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    sharded_sizes = [int(s) for s in args.sharded.split(",") if s]
    one_shard = layout_of({"Group": every_member(Mode.ORDERED)})
    rows: list[dict[str, Any]] = []
    for members in sorted(set(sizes) | set(sharded_sizes)):
        row: dict[str, Any] = {"members": members}
        if members in sizes:
            row["one_shard"] = _timed(
                partial(_traffic, members, one_shard, args.messages, args.seed)
            )
            row["view_change"] = _timed(partial(_view_change, members, one_shard, args.seed))
        if members >= 3:
            shards_of_3 = layout_of({"Shards": sharded(members // 3, 3)})
            row["shards_of_3"] = _timed(
                partial(_traffic, members, shards_of_3, args.messages, args.seed)
            )
            row["view_change_shards_of_3"] = _timed(
                partial(_view_change, members, shards_of_3, args.seed)
            )
            row["leader_killed_shards_of_3"] = _timed(
                partial(_view_change, members, shards_of_3, args.seed, victim=0)
            )
        rows.append(row)
        print(f"growth: {members} members done", file=sys.stderr, flush=True)
    report = {
        "benchmark": "growth",
        "python": platform.python_version(),
        "messages_per_member": args.messages,
        "payload_bytes": len(PAYLOAD),
        "seed": args.seed,
        "sizes": rows,
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
