"""The performance targets, measured in one run against baselines from the same run.

Runs ``pyderecho bench`` (three members, ordered) on both transports: every member sending
100-byte and 1 MiB messages as fast as it can; one member sending 100-byte messages with one
in flight (the light-load latency); one member offering 1,000 messages/s (the CPU a message
costs at light load); and the raw baselines of ``raw_baselines.py`` and, when installed,
PySyncObj (``pysyncobj_baseline.py``), ``--repeat`` times each, interleaved so that whatever
else the machine does weighs on all of them alike; then an idle group on each transport.
Prints one JSON object: the medians, the samples, the ratios to the baselines, each target with
whether it is met, and the machine's load average before and after (a loaded machine lowers
every rate; ``cpu_us_per_delivery`` moves much less).

    .venv-fast/bin/python benchmarks/compare.py [--repeat 5] [--idle 5] [--pysyncobj-seconds 5]

Targets (three members on one machine), each a ratio to a baseline of the same run:

- light load: the latency of an ordered 100-byte message with one in flight (p50, from
  ``send`` to its delivery at the sender) at most 2x the round trip of a 100-byte message
  between two asyncio processes (``tcp_100b_rtt_asyncio``; on shm ``shm_100b_rtt_asyncio``);
- light load: the CPU per delivery with one member offering 1,000 messages/s at most 3x the
  CPU per delivery when every member sends as fast as it can;
- small messages: ordered 100-byte deliveries per second per member at least 10x PySyncObj's
  committed operations per second (5,000 calls in flight per replica);
- large messages over TCP: ordered 1 MiB bytes per second per member at least 0.8 of the
  three-process relay ring (``tcp_1mib_relay3``: the same bytes on the same links, no protocol);
- and the earlier absolute ones: over 100,000 ordered 100-byte deliveries per second per member
  on each transport, over 1 GB/s of 1 MiB messages on shm, and an idle member under 1% of a core.

The ratios also put every run beside the blocking-socket baselines, the least any Python program
spends (``tcp_100b_rtt_socket``, ``shm_100b_rtt``, ``tcp_100b_socket``, ``tcp_1mib_socket``).
And the light-load CPU beside the same frames sent by asyncio processes with no protocol at
1,000 messages/s (``tcp_100b_paced_relay3``, and ``..._uvloop`` when uvloop is installed): the
floor of that pattern, which the saturated CPU (many messages to a frame) is not; the light-load
latency beside the same frames with one message in flight (``tcp_100b_lone_relay3``, and
``..._uvloop``): a message out to both others and both answers back, no protocol.
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

import pysyncobj_baseline
import raw_baselines

from pyderecho.cli.bench import BenchSpec, core_in_use, run_bench
from pyderecho.runtime.loop import loop_in_use

MiB = 1 << 20
IDLE_CPU_FRACTION = 0.01
"""An idle member may use at most this fraction of one core: "near zero"."""


def _median(values: list[float]) -> float:
    return statistics.median(values)


LIGHT_RATE = 1000.0
"""Messages per second the light-load CPU case offers (one sender)."""
PYSYNCOBJ_IN_FLIGHT = 5000
"""Calls PySyncObj's replicas each keep outstanding: its best throughput on this kind of
machine."""


def _bench_cases(small: int, large: int, lone: int) -> dict[str, BenchSpec]:
    cases = {}
    for transport in ("shm", "tcp"):
        cases[f"ordered_100b_{transport}"] = BenchSpec(
            nodes=3, senders="all", count=small, size=100, mode="ordered", transport=transport
        )
        cases[f"ordered_1mib_{transport}"] = BenchSpec(
            nodes=3, senders="all", count=large, size=MiB, mode="ordered", transport=transport
        )
        cases[f"lone_100b_{transport}"] = BenchSpec(
            nodes=3, senders="one", count=lone, size=100, transport=transport, in_flight=1
        )
        cases[f"paced_100b_{transport}"] = BenchSpec(
            nodes=3,
            senders="one",
            count=max(1, int(LIGHT_RATE * 3)),
            size=100,
            transport=transport,
            rate=LIGHT_RATE,
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


def _target(
    name: str, measured: float | None, threshold: float, unit: str, *, at_most: bool = False
) -> dict[str, Any]:
    """A target met when ``measured`` is over ``threshold`` (``at_most``: not over it)."""
    met = measured is not None and (measured <= threshold if at_most else measured > threshold)
    return {
        "target": name,
        "measured": measured,
        "threshold": threshold,
        "unit": unit,
        "met": met,
    }


def compare(
    repeat: int, idle_s: float, *, small: int, large: int, lone: int, pysyncobj_s: float
) -> dict[str, Any]:
    cases = _bench_cases(small, large, lone)
    reports: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    samples: dict[str, list[float]] = {name: [] for name in raw_baselines.BASELINES}
    pysyncobj: list[float] = []
    load_before = os.getloadavg()
    for _ in range(repeat):
        for name, spec in cases.items():
            reports[name].append(run_bench(spec))
        for name, value in raw_baselines.measure_once().items():
            samples[name].append(value)
        if pysyncobj_s > 0 and pysyncobj_baseline.installed():
            result = pysyncobj_baseline.run_baseline(
                pysyncobj_s, PYSYNCOBJ_IN_FLIGHT, 1, latency_calls=0, no_batch_latency=False
            )
            pysyncobj.append(float(result["ops_per_s"]))  # type: ignore[arg-type]
    baselines = raw_baselines.summarize(samples)
    if pysyncobj:
        baselines["pysyncobj_ops"] = {
            "ops_per_s": round(statistics.median(pysyncobj)),
            "samples": [round(value) for value in pysyncobj],
            "in_flight_per_replica": PYSYNCOBJ_IN_FLIGHT,
        }
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
        value = next(
            figures[unit]
            for unit in (
                "messages_per_s",
                "bytes_per_s",
                "rtt_us",
                "ops_per_s",
                "cpu_us_per_message",
                "latency_us",
            )
            if unit in figures
        )
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
    for transport in ("tcp", "shm"):
        lone_p50 = runs[f"lone_100b_{transport}"]["latency_us_p50"]
        for baseline in (
            ("tcp_100b_rtt_asyncio", "tcp_100b_rtt_socket")
            if transport == "tcp"
            else ("shm_100b_rtt_asyncio", "shm_100b_rtt")
        ):
            ratios[f"lone_100b_{transport}_p50_vs_{baseline}"] = _ratio(lone_p50, base(baseline))
        # The same latency against the same frames alone (the message out, both answers back),
        # no protocol: what the protocol and the driver add to a lone message.
        for floor in ("tcp_100b_lone_relay3", "tcp_100b_lone_relay3_uvloop"):
            if floor in baselines:
                ratios[f"lone_100b_{transport}_p50_vs_{floor}"] = _ratio(lone_p50, base(floor))
        ratios[f"paced_100b_{transport}_cpu_vs_ordered_100b_{transport}_cpu"] = _ratio(
            runs[f"paced_100b_{transport}"]["cpu_us_per_delivery"],
            runs[f"ordered_100b_{transport}"]["cpu_us_per_delivery"],
        )
        # The same CPU against the frames alone, no protocol (TCP's floor for both transports:
        # what the light-load CPU target could be measured against, see the README).
        for floor in ("tcp_100b_paced_relay3", "tcp_100b_paced_relay3_uvloop"):
            if floor in baselines:
                ratios[f"paced_100b_{transport}_cpu_vs_{floor}"] = _ratio(
                    runs[f"paced_100b_{transport}"]["cpu_us_per_delivery"], base(floor)
                )
        if "pysyncobj_ops" in baselines:
            ratios[f"ordered_100b_{transport}_vs_pysyncobj"] = _ratio(
                rate(f"ordered_100b_{transport}"), base("pysyncobj_ops")
            )
    raw_tcp_large = base("tcp_1mib_socket")
    targets = []
    for transport, rtt in (("tcp", "tcp_100b_rtt_asyncio"), ("shm", "shm_100b_rtt_asyncio")):
        targets.append(
            _target(
                f"light load, {transport}: ordered latency p50, one message in flight, over "
                f"the asyncio round trip ({rtt})",
                ratios[f"lone_100b_{transport}_p50_vs_{rtt}"],
                2.0,
                "ratio",
                at_most=True,
            )
        )
        targets.append(
            _target(
                f"light load, {transport}: CPU per delivery at {LIGHT_RATE:,.0f} messages/s "
                "over the saturated CPU per delivery",
                ratios[f"paced_100b_{transport}_cpu_vs_ordered_100b_{transport}_cpu"],
                3.0,
                "ratio",
                at_most=True,
            )
        )
        if "pysyncobj_ops" in baselines:
            targets.append(
                _target(
                    f"ordered 100-byte deliveries/s per member, {transport}, over PySyncObj's "
                    "committed operations/s",
                    ratios[f"ordered_100b_{transport}_vs_pysyncobj"],
                    10.0,
                    "ratio",
                )
            )
    targets.append(
        _target(
            "ordered 1 MiB bytes/s per member, tcp, over the relay ring (tcp_1mib_relay3)",
            ratios["ordered_1mib_tcp_vs_tcp_1mib_relay3"],
            0.8,
            "ratio",
        )
    )
    targets += [
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
        "event_loop": loop_in_use(),
        "core": core_in_use(),
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
    parser.add_argument(
        "--lone-count", type=int, default=2000, help="messages of the one-in-flight case"
    )
    parser.add_argument(
        "--pysyncobj-seconds",
        type=float,
        default=5.0,
        help="seconds of each PySyncObj throughput run (0, or pysyncobj not installed: skip)",
    )
    args = parser.parse_args()
    result = compare(
        args.repeat,
        args.idle,
        small=args.small_count,
        large=args.large_count,
        lone=args.lone_count,
        pysyncobj_s=args.pysyncobj_seconds,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
