"""The replicated-object targets of issue 8, measured in one run against baselines of that run.

Each round (``--repeat`` rounds, interleaved so that whatever else the machine does weighs on
every figure alike) runs:

- ``pyderecho bench --workload objects`` on each transport: three members, every member
  calling an ``@ordered`` method with a 100-byte argument that returns a small int, with
  ``--in-flight`` calls outstanding per member (a call counts once every replica's reply is
  in); then one call in flight in the whole group; queries from member 1 to member 0; and a
  joiner receiving a ``--state-mib`` state from the one member that holds it;
- ``pyderecho bench`` with 1 MiB ordered messages (three members, all sending) on each
  transport: the rate the state transfer is judged against;
- PySyncObj's ``@replicated`` counter (``pysyncobj_baseline.py``), three replicas, at the same
  ``--in-flight`` calls per replica, and again at ``--large-in-flight``. PySyncObj ships its
  log on a 0.1 s timer, so its rate grows with the calls in flight: the comparison that counts
  is at the same count; the large window shows its ceiling on this machine. Its lone-call
  latency (with its default batching, and with batching off) is measured in the first round.

Prints one JSON object: per figure the median over rounds and the samples, the ratios, each
target with whether it is met, and the load average before and after (a loaded machine
lowers every rate; ``cpu_us_per_call`` moves much less).

    .venv-fast/bin/python benchmarks/objects_compare.py [--repeat 3] [--in-flight 100]

Needs ``pysyncobj`` (``pip install -e '.[bench]'``). Targets:

- ordered calls per second, every reply in, summed over the three members: at least 10x
  PySyncObj's committed calls per second (also summed over its replicas) at the same number
  of calls in flight (each transport);
- state transfer of a 256 MiB state: at least half of the 1 MiB ordered rate (bytes per
  second per member) of the same transport in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

import pysyncobj_baseline

from pyderecho.cli.bench import BenchSpec, ObjectsSpec, core_in_use, run_bench, run_objects
from pyderecho.runtime.loop import loop_in_use

MiB = 1 << 20
CALLS_TARGET = 10.0
"""pyderecho's ordered calls per second over PySyncObj's committed ones, at least."""
STATE_TARGET = 0.5
"""State transfer MiB/s over the 1 MiB ordered MiB/s per member, at least."""


def _median(values: list[Any]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def _objects_summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    def median_of(pick: Callable[[dict[str, Any]], Any]) -> float | None:
        return _median([pick(report) for report in reports])

    return {
        "calls_per_s_group": median_of(lambda r: r["calls"]["calls_per_s_group"]),
        "calls_per_s_member": median_of(lambda r: r["calls"]["calls_per_s_member_median"]),
        "calls_latency_us_p50": median_of(lambda r: r["calls"]["latency_us"]["p50"]),
        "calls_latency_us_p99": median_of(lambda r: r["calls"]["latency_us"]["p99"]),
        "cpu_us_per_call": median_of(lambda r: r["calls"]["cpu_us_per_call"]),
        "lone_latency_us_p50": median_of(lambda r: r["latency_one_in_flight"]["latency_us"]["p50"]),
        "lone_latency_us_p99": median_of(lambda r: r["latency_one_in_flight"]["latency_us"]["p99"]),
        "queries_per_s": median_of(lambda r: r["queries"]["queries_per_s"]),
        "query_latency_us_p50": median_of(lambda r: r["queries"]["latency_us"]["p50"]),
        "query_latency_us_p99": median_of(lambda r: r["queries"]["latency_us"]["p99"]),
        "state_mib_per_s": median_of(lambda r: r["state_transfer"]["mib_per_s"]),
        "state_seconds": median_of(lambda r: r["state_transfer"]["seconds"]),
        "state_chunks_mib_per_s": median_of(lambda r: r["state_transfer"]["chunks_mib_per_s"]),
        "calls_completed": [r["calls"]["completed"] for r in reports],
        "samples_calls_per_s_group": [r["calls"]["calls_per_s_group"] for r in reports],
        "samples_state_mib_per_s": [r["state_transfer"]["mib_per_s"] for r in reports],
        "clean_exit": all(r["clean_exit"] for r in reports),
    }


def _large_summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["bytes_per_s"] for r in reports]
    median = _median(rates)
    return {
        "count_per_sender": reports[0]["count"],
        "bytes_per_s_per_member": median,
        "mib_per_s_per_member": None if median is None else round(median / MiB, 1),
        "samples_bytes_per_s": rates,
    }


def _pysyncobj_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [float(run["ops_per_s"]) for run in runs]
    first = runs[0]
    summary: dict[str, Any] = {
        "in_flight": first["in_flight"],
        "ops_per_s_group": _median(rates),
        "samples_ops_per_s": [round(rate) for rate in rates],
        "members_ops_per_s": [
            [round(member["ops_per_s"]) for member in run["runs"][0]["members"]] for run in runs
        ],
    }
    if first["latency_ms"]["p50"] is not None:
        summary["latency_ms"] = first["latency_ms"]
        summary["latency_ms_no_batch"] = first.get("latency_ms_no_batch")
    return summary


def _target(name: str, measured: float | None, threshold: float | None) -> dict[str, Any]:
    return {
        "target": name,
        "measured": measured,
        "threshold": threshold,
        "met": measured is not None and threshold is not None and measured >= threshold,
    }


def compare(args: argparse.Namespace) -> dict[str, Any]:
    transports = args.transports.split(",")
    objects: dict[str, list[dict[str, Any]]] = {t: [] for t in transports}
    large: dict[str, list[dict[str, Any]]] = {t: [] for t in transports}
    same: list[dict[str, Any]] = []
    wide: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    for round_ in range(args.repeat):
        for transport in transports:
            spec = ObjectsSpec(
                nodes=3,
                transport=transport,
                count=args.count,
                size=100,
                in_flight=args.in_flight,
                latency_calls=args.latency_calls,
                queries=args.count,
                state_bytes=args.state_mib * MiB,
            )
            objects[transport].append(run_objects(spec))
            large[transport].append(
                run_bench(
                    BenchSpec(
                        nodes=3,
                        senders="all",
                        count=args.large_count,
                        size=MiB,
                        mode="ordered",
                        transport=transport,
                    )
                )
            )
        first = round_ == 0
        same.append(
            pysyncobj_baseline.run_baseline(
                args.seconds,
                args.in_flight,
                1,
                latency_calls=args.pysyncobj_latency_calls if first else 0,
                no_batch_latency=first,
            )
        )
        if args.large_in_flight:
            wide.append(
                pysyncobj_baseline.run_baseline(
                    args.seconds, args.large_in_flight, 1, latency_calls=0, no_batch_latency=False
                )
            )
    runs = {t: _objects_summary(reports) for t, reports in objects.items()}
    ordered_1mib = {t: _large_summary(reports) for t, reports in large.items()}
    baseline = _pysyncobj_summary(same)
    baseline_wide = _pysyncobj_summary(wide) if wide else None
    ratios: dict[str, float | None] = {}
    targets = []
    for transport in transports:
        calls = runs[transport]["calls_per_s_group"]
        ratios[f"calls_{transport}_vs_pysyncobj_same_in_flight"] = _ratio(
            calls, baseline["ops_per_s_group"]
        )
        if baseline_wide is not None:
            ratios[f"calls_{transport}_vs_pysyncobj_large_in_flight"] = _ratio(
                calls, baseline_wide["ops_per_s_group"]
            )
        if "latency_ms" in baseline:
            lone_ms = runs[transport]["lone_latency_us_p50"]
            lone_ms = None if lone_ms is None else lone_ms / 1000
            ratios[f"pysyncobj_lone_p50_vs_{transport}_lone_p50"] = _ratio(
                baseline["latency_ms"]["p50"], lone_ms
            )
            no_batch = baseline.get("latency_ms_no_batch") or {}
            ratios[f"pysyncobj_no_batch_lone_p50_vs_{transport}_lone_p50"] = _ratio(
                no_batch.get("p50"), lone_ms
            )
        state = runs[transport]["state_mib_per_s"]
        reference = ordered_1mib[transport]["mib_per_s_per_member"]
        ratios[f"state_{transport}_vs_ordered_1mib_{transport}"] = _ratio(state, reference)
        floor = baseline["ops_per_s_group"]
        targets.append(
            _target(
                f"ordered calls/s (group, every reply in), {transport}: at least "
                f"{CALLS_TARGET:g}x PySyncObj at {args.in_flight} in flight",
                calls,
                None if floor is None else round(CALLS_TARGET * floor),
            )
        )
        targets.append(
            _target(
                f"state transfer MiB/s of {args.state_mib} MiB, {transport}: at least "
                f"{STATE_TARGET:g}x the 1 MiB ordered MiB/s per member",
                state,
                None if reference is None else round(STATE_TARGET * reference, 1),
            )
        )
    return {
        "benchmark": "objects_compare",
        "repeat": args.repeat,
        "in_flight": args.in_flight,
        "calls_per_member": args.count,
        "state_mib": args.state_mib,
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "event_loop": loop_in_use(),
        "core": core_in_use(),
        "pysyncobj": metadata.version("pysyncobj"),
        "load_average_before": [round(load, 2) for load in load_before],
        "load_average_after": [round(load, 2) for load in os.getloadavg()],
        "objects": runs,
        "ordered_1mib": ordered_1mib,
        "pysyncobj_same_in_flight": baseline,
        "pysyncobj_large_in_flight": baseline_wide,
        "ratios": ratios,
        "targets": targets,
        "all_met": all(target["met"] for target in targets),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3); medians")
    parser.add_argument(
        "--in-flight", type=int, default=100, help="calls outstanding per member (default 100)"
    )
    parser.add_argument(
        "--large-in-flight",
        type=int,
        default=2000,
        help="PySyncObj again at this many calls in flight per replica (0: skip; default 2000)",
    )
    parser.add_argument(
        "--count", type=int, default=5000, help="pyderecho ordered calls (and queries) per member"
    )
    parser.add_argument(
        "--latency-calls", type=int, default=300, help="pyderecho calls with one in flight"
    )
    parser.add_argument(
        "--pysyncobj-latency-calls",
        type=int,
        default=30,
        help="PySyncObj lone calls in the first round (each takes about 0.2 s with batching)",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="PySyncObj measured seconds")
    parser.add_argument("--state-mib", type=int, default=256, help="state a joiner receives")
    parser.add_argument(
        "--large-count", type=int, default=100, help="1 MiB ordered messages per sender"
    )
    parser.add_argument("--transports", default="shm,tcp", help="comma-separated (shm,tcp)")
    args = parser.parse_args()
    if not pysyncobj_baseline.installed():
        print("objects_compare: needs pysyncobj (pip install -e '.[bench]')", file=sys.stderr)
        return 2
    print(json.dumps(compare(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
