"""The issue's performance targets, measured in one run against baselines from the same run.

Runs ``pyderecho bench`` (three members, every member sending, ordered) on both transports with
100-byte and 1 MiB messages and the raw baselines of ``raw_baselines.py``, ``--repeat`` times
each, interleaved so that whatever else the machine does weighs on all of them alike; then an
idle group on each transport. Prints one JSON object: the medians, the samples, the ratios to
the baselines, each target with whether it is met, and the machine's load average before and
after (a loaded machine lowers every rate; ``cpu_us_per_delivery`` moves much less).

    .venv/bin/python benchmarks/compare.py [--repeat 5] [--idle 5]

Targets (three members on one machine):

- ordered 100-byte messages: over 100,000 deliveries per second per member (each transport);
- ordered 1 MiB messages: over 1 GB/s per member on shared memory, and over half of raw
  loopback TCP (``tcp_1mib_socket``) on TCP;
- an idle group uses next to no CPU: under 1% of one core per member.

The ratios include ``ordered_1mib_tcp`` against ``tcp_1mib_relay3`` (the same bytes over the
same links with no protocol, the ceiling for that traffic here) and that ceiling against raw
loopback TCP, which shows how much of the TCP target the machine itself allows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from typing import Any

import raw_baselines

from pyderecho.cli.bench import BenchSpec, run_bench

MiB = 1 << 20
IDLE_CPU_FRACTION = 0.01
"""An idle member may use at most this fraction of one core: "near zero"."""


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _bench_cases(small: int, large: int) -> dict[str, BenchSpec]:
    cases = {}
    for transport in ("shm", "tcp"):
        cases[f"ordered_100b_{transport}"] = BenchSpec(
            nodes=3, senders="all", count=small, size=100, mode="ordered", transport=transport
        )
        cases[f"ordered_1mib_{transport}"] = BenchSpec(
            nodes=3, senders="all", count=large, size=MiB, mode="ordered", transport=transport
        )
    return cases


def _summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    def median_of(pick: Callable[[dict[str, Any]], Any]) -> float | None:
        values = [pick(report) for report in reports]
        present = [value for value in values if value is not None]
        return _median(present) if present else None

    first = reports[0]
    return {
        "spec": {
            key: first[key]
            for key in ("nodes", "sending_members", "count", "size", "mode", "transport", "window")
        },
        "messages_per_s": median_of(lambda r: r["messages_per_s"]),
        "bytes_per_s": median_of(lambda r: r["bytes_per_s"]),
        "latency_us_p50": median_of(lambda r: r["latency_us"]["p50"]),
        "latency_us_p99": median_of(lambda r: r["latency_us"]["p99"]),
        "wire_latency_us_p50": median_of(lambda r: r["wire_latency_us"]["p50"]),
        "wire_latency_us_p99": median_of(lambda r: r["wire_latency_us"]["p99"]),
        "wall_s": median_of(lambda r: r["wall_s"]),
        "cpu_s_per_member": median_of(lambda r: _median(r["cpu_s_per_member"])),
        "cpu_us_per_delivery": median_of(lambda r: r["cpu_us_per_delivery"]),
        # What one member delivers per second of its own CPU: the rate it would reach with a
        # core to itself. Much steadier than the rates on a shared machine.
        "deliveries_per_cpu_s": median_of(lambda r: round(1e6 / r["cpu_us_per_delivery"])),
        "bytes_per_cpu_s": median_of(lambda r: round(1e6 * r["size"] / r["cpu_us_per_delivery"])),
        "samples_messages_per_s": [r["messages_per_s"] for r in reports],
        "samples_bytes_per_s": [r["bytes_per_s"] for r in reports],
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)


def _target(name: str, measured: float | None, threshold: float, unit: str) -> dict[str, Any]:
    return {
        "target": name,
        "measured": measured,
        "threshold": threshold,
        "unit": unit,
        "met": measured is not None and measured > threshold,
    }


def compare(repeat: int, idle_s: float, small: int, large: int) -> dict[str, Any]:
    cases = _bench_cases(small, large)
    reports: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    samples: dict[str, list[float]] = {name: [] for name in raw_baselines.BASELINES}
    load_before = os.getloadavg()
    for _ in range(repeat):
        for name, spec in cases.items():
            reports[name].append(run_bench(spec))
        for name, value in raw_baselines.measure_once().items():
            samples[name].append(value)
    baselines = raw_baselines.summarize(samples)
    idle: dict[str, Any] = {}
    if idle_s > 0:
        for transport in ("shm", "tcp"):
            report = run_bench(BenchSpec(nodes=3, count=0, transport=transport, idle_s=idle_s))
            cpu = report["idle_cpu_s_per_member"]
            idle[transport] = {
                "idle_s": idle_s,
                "cpu_s_per_member": cpu,
                "max_core_fraction": round(max(cpu) / idle_s, 5),
            }
    runs = {name: _summary(samples) for name, samples in reports.items()}

    def base(name: str) -> float:
        figures = baselines[name]
        value = figures.get("messages_per_s", figures.get("bytes_per_s"))
        assert isinstance(value, int | float)
        return value

    def rate(run: str) -> float | None:
        value = runs[run]["messages_per_s" if "100b" in run else "bytes_per_s"]
        return None if value is None else float(value)

    ratios = {
        f"{run}_vs_{baseline}": _ratio(rate(run), base(baseline))
        for run, baseline in (
            ("ordered_100b_shm", "tcp_100b_socket"),
            ("ordered_100b_tcp", "tcp_100b_socket"),
            ("ordered_100b_tcp", "tcp_100b_asyncio"),
            ("ordered_100b_tcp", "tcp_100b_buffered"),
            ("ordered_1mib_shm", "shm_copy"),
            ("ordered_1mib_shm", "tcp_1mib_socket"),
            ("ordered_1mib_tcp", "tcp_1mib_socket"),
            ("ordered_1mib_tcp", "tcp_1mib_asyncio"),
            ("ordered_1mib_tcp", "tcp_1mib_buffered"),
            ("ordered_1mib_tcp", "tcp_1mib_relay3"),
        )
    }
    # How far the TCP target is from the machine's own ceiling for this traffic.
    ratios["tcp_1mib_relay3_vs_tcp_1mib_socket"] = _ratio(
        base("tcp_1mib_relay3"), base("tcp_1mib_socket")
    )
    raw_tcp_large = base("tcp_1mib_socket")
    targets = [
        _target(
            "ordered 100-byte deliveries/s per member, shm",
            runs["ordered_100b_shm"]["messages_per_s"],
            100_000,
            "messages/s",
        ),
        _target(
            "ordered 100-byte deliveries/s per member, tcp",
            runs["ordered_100b_tcp"]["messages_per_s"],
            100_000,
            "messages/s",
        ),
        _target(
            "ordered 1 MiB bytes/s per member, shm",
            runs["ordered_1mib_shm"]["bytes_per_s"],
            1e9,
            "bytes/s",
        ),
        _target(
            "ordered 1 MiB bytes/s per member, tcp, over half of raw loopback TCP",
            runs["ordered_1mib_tcp"]["bytes_per_s"],
            raw_tcp_large / 2,
            "bytes/s",
        ),
    ]
    for transport, figures in idle.items():
        fraction = figures["max_core_fraction"]
        targets.append(
            {
                "target": f"idle CPU per member, {transport}: near zero",
                "measured": fraction,
                "threshold": IDLE_CPU_FRACTION,
                "unit": "fraction of one core (worst member)",
                "met": fraction < IDLE_CPU_FRACTION,
            }
        )
    return {
        "benchmark": "compare",
        "repeat": repeat,
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": [round(load, 2) for load in load_before],
        "load_average_after": [round(load, 2) for load in os.getloadavg()],
        "runs": runs,
        "baselines": baselines,
        "ratios": ratios,
        "idle": idle,
        "targets": targets,
        "all_met": all(target["met"] for target in targets),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each case (default 5)")
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds of idle group per transport (0: skip)"
    )
    parser.add_argument(
        "--small-count", type=int, default=50_000, help="100-byte messages per sender"
    )
    parser.add_argument("--large-count", type=int, default=400, help="1 MiB messages per sender")
    args = parser.parse_args()
    result = compare(args.repeat, args.idle, args.small_count, args.large_count)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
