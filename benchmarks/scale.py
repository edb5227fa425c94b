"""How one ordered shard scales with the number of member processes on one machine.

For each group size and transport, every member sends (``pyderecho bench``, ``--senders all``),
so a member delivers ``nodes`` times what it sends: the question is how the per-member and the
group-wide delivery rates hold up as the round robin widens and more processes share the CPUs.
Per case it reports the median over ``--repeat`` runs of the per-member rate, the rate summed
over the group, and the CPU time per delivery, which is the figure to compare across machines.

Each case also reports ``links_s``, how long the members took to open every link (the group
forms: n(n-1) authenticated links), and with ``--idle S`` the CPU the whole group used while it
sat idle, as a fraction of one core (``idle_cores_group``), beside the floor measured in the
same run (``idle_floor_cores_group``, ``raw_baselines.idle_heartbeats``): over tcp, as many
processes on the members' event loop doing nothing but exchanging heartbeats with as many
peers on the same grid of the period (members beat at its multiples); over shm, where a
member's heartbeats are words in shared memory that wake nobody, as many processes doing
nothing but run a timer at that period. ``targets`` says, for a group of
64, whether it sat idle on under a tenth of a core (the performance issue's target).

This is the many-process benchmark meant for a machine with many cores (the project's device
machine has 16): on a 2-core machine anything past 3 members measures time-sharing, and the
JSON records ``cpu_cores`` so the figures can be read accordingly. ``--deliveries`` sets how
many messages each member delivers per run (fewer for large groups on few cores), and
``--heartbeat-timeout`` the failure detector's timeout: 64 members sending as fast as they can
on 2 cores leave each process a few milliseconds of CPU in turn, more than the default second
of silence at times.

    .venv-fast/bin/python benchmarks/scale.py [--nodes 3,8,16,32,64] [--transports shm,tcp]
        [--repeat 3] [--idle 5] [--deliveries 200000] [--heartbeat-timeout 1.0]
        [--heartbeat-interval 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from typing import Any

from raw_baselines import idle_heartbeats

from pyderecho.cli.bench import BenchSpec, core_in_use, run_bench
from pyderecho.core.config import CoreConfig
from pyderecho.runtime.loop import loop_in_use

MiB = 1 << 20
SMALL_DELIVERIES = 200_000
"""About how many 100-byte messages each member delivers per run, whatever the group size."""
LARGE_DELIVERIES = 600
"""About how many 1 MiB messages each member delivers per run."""
IDLE_TARGET_NODES = 64
IDLE_TARGET_CORES = 0.1
"""An idle group of ``IDLE_TARGET_NODES`` members may use at most this much of one core."""


def _case(
    nodes: int,
    transport: str,
    size: int,
    repeat: int,
    *,
    idle_s: float = 0.0,
    deliveries: int | None = None,
    heartbeat_timeout: float | None = None,
    heartbeat_interval: float | None = None,
) -> dict[str, Any]:
    per_member = deliveries or (SMALL_DELIVERIES if size < MiB else LARGE_DELIVERIES)
    spec = BenchSpec(
        nodes=nodes,
        senders="all",
        count=max(1, per_member // nodes),
        size=size,
        mode="ordered",
        transport=transport,
        idle_s=idle_s,
        timeout_s=max(120.0, 4.0 * nodes),
        heartbeat_timeout=heartbeat_timeout or CoreConfig().heartbeat_timeout,
        heartbeat_interval=heartbeat_interval,
    )
    reports = [run_bench(spec) for _ in range(repeat)]
    if not all(report["clean_exit"] for report in reports):
        raise RuntimeError(f"{nodes} members over {transport}: a worker did not exit cleanly")
    rate = statistics.median(report["messages_per_s"] for report in reports)
    idle: dict[str, Any] = {}
    if idle_s > 0:
        core = spec.core_config()
        # Over shm the beats go in memory (no frame, no wake-up): the floor is the timer alone.
        peers = 0 if transport == "shm" else min(core.monitors, nodes - 1)
        floor = idle_heartbeats(nodes, peers, core.heartbeat_interval, idle_s, spec.loop)
        group = statistics.median(
            sum(report["idle_cpu_s_per_member"]) / idle_s for report in reports
        )
        idle = {
            "idle_s": idle_s,
            "heartbeat_interval_s": core.heartbeat_interval,
            "heartbeat_timeout_s": core.heartbeat_timeout,
            "idle_cores_group": round(group, 4),
            "idle_floor_cores_group": round(floor, 4),
            "idle_floor": f"{nodes} processes on {loop_in_use(spec.loop)}, a timer at every"
            " multiple of the interval"
            + (f" writing a frame to each of {peers} peers" if peers else ", nothing else"),
            "idle_vs_floor": round(group / floor, 2) if floor > 0 else None,
        }
    return {
        "nodes": nodes,
        "transport": transport,
        "size": size,
        "count_per_sender": spec.count,
        "messages_per_s_per_member": round(rate),
        "bytes_per_s_per_member": round(rate * size),
        "messages_per_s_group": round(rate * nodes),
        "cpu_us_per_delivery": statistics.median(r["cpu_us_per_delivery"] for r in reports),
        "latency_us_p50": statistics.median(r["latency_us"]["p50"] for r in reports),
        "samples_messages_per_s": [report["messages_per_s"] for report in reports],
        "links_s": statistics.median(report["links_s"] for report in reports),
        **idle,
    }


def scale(
    nodes: list[int],
    transports: list[str],
    sizes: list[int],
    repeat: int,
    *,
    idle_s: float = 0.0,
    deliveries: int | None = None,
    heartbeat_timeout: float | None = None,
    heartbeat_interval: float | None = None,
) -> dict[str, Any]:
    load_before = os.getloadavg()
    cases = [
        _case(
            count,
            transport,
            size,
            repeat,
            idle_s=idle_s,
            deliveries=deliveries,
            heartbeat_timeout=heartbeat_timeout,
            heartbeat_interval=heartbeat_interval,
        )
        for size in sizes
        for transport in transports
        for count in nodes
    ]
    targets = [
        {
            "target": f"an idle group of {IDLE_TARGET_NODES}, {case['transport']}: under "
            f"{IDLE_TARGET_CORES} of a core",
            "measured": case["idle_cores_group"],
            "threshold": IDLE_TARGET_CORES,
            "met": case["idle_cores_group"] < IDLE_TARGET_CORES,
        }
        for case in cases
        if case["nodes"] == IDLE_TARGET_NODES and "idle_cores_group" in case
    ]
    return {
        "benchmark": "scale",
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "event_loop": loop_in_use(),
        "core": core_in_use(),
        "repeat": repeat,
        "load_average_before": [round(load, 2) for load in load_before],
        "load_average_after": [round(load, 2) for load in os.getloadavg()],
        "cases": cases,
        "targets": targets,
    }


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", type=_numbers, default=[3, 5, 8], help="group sizes, a,b,c")
    parser.add_argument("--transports", default="shm,tcp", help="shm,tcp or either")
    parser.add_argument("--sizes", type=_numbers, default=[100, MiB], help="message sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median)")
    parser.add_argument(
        "--idle", type=float, default=0.0, help="then seconds of idle group per case (0: none)"
    )
    parser.add_argument(
        "--deliveries", type=int, default=None, help="messages each member delivers per run"
    )
    parser.add_argument(
        "--heartbeat-timeout", type=float, default=None, help="seconds (default: the core's)"
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=None,
        help="seconds between heartbeats (default: the core's; what an idle group's CPU is)",
    )
    args = parser.parse_args()
    result = scale(
        args.nodes,
        args.transports.split(","),
        args.sizes,
        args.repeat,
        idle_s=args.idle,
        deliveries=args.deliveries,
        heartbeat_timeout=args.heartbeat_timeout,
        heartbeat_interval=args.heartbeat_interval,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
