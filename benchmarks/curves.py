"""The README's two curves, measured in one run: ordered latency against offered load, and
ordered throughput against message size, on both transports, beside the raw baselines.

- Latency against load: three members over each transport, one member sending 100-byte ordered
  messages at each ``--rates`` value (an open loop, ``pyderecho bench --senders one --rate R``),
  p50 and p99 from ``send`` to the delivery at the sender; the asyncio round trip of the same
  run (``raw_baselines``) is the floor drawn under them.
- Throughput against size: three members, every one sending ordered messages of each
  ``--sizes`` value as fast as it can, bytes delivered per second per member; beside them the
  three-process relay ring over blocking sockets (``tcp_1mib_relay3``'s traffic at that size,
  no protocol), and PySyncObj's committed operations/s times 100 bytes when it is installed.

Writes the numbers as JSON (``--json``) and, when matplotlib is installed (``pip install -e
'.[bench]'``), the figure (``--out``, a PNG).

    .venv-fast/bin/python benchmarks/curves.py [--out docs/performance.png]
        [--json benchmarks/results-curves.json]      # about three minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pysyncobj_baseline
import raw_baselines

from pyderecho.cli.bench import BenchSpec, core_in_use, run_bench
from pyderecho.runtime.loop import loop_in_use

RATES = (200, 500, 1000, 2000, 5000, 10000, 20000)
"""Messages per second the one sender offers, point by point."""
SIZES = (100, 1024, 10 * 1024, 100 * 1024, 1024 * 1024)
SECONDS_PER_POINT = 2.0
"""About how long each latency point sends for."""
BYTES_PER_POINT = 400 * 1024 * 1024
"""About how many bytes each sender sends per throughput point (at most 20,000 messages)."""
TRANSPORTS = ("tcp", "shm")


def latency_curve(transport: str, rates: Sequence[int], seconds: float) -> list[dict[str, Any]]:
    points = []
    for rate in rates:
        report = run_bench(
            BenchSpec(
                nodes=3,
                senders="one",
                count=max(100, int(rate * seconds)),
                size=100,
                transport=transport,
                rate=float(rate),
            )
        )
        points.append(
            {
                "offered_per_s": rate,
                "delivered_per_s": report["messages_per_s"],
                "latency_us_p50": report["latency_us"]["p50"],
                "latency_us_p99": report["latency_us"]["p99"],
                "cpu_us_per_delivery": report["cpu_us_per_delivery"],
            }
        )
    return points


def _count(size: int, budget: int) -> int:
    return max(20, min(20_000, budget // size))


def throughput_curve(transport: str, sizes: Sequence[int], budget: int) -> list[dict[str, Any]]:
    points = []
    for size in sizes:
        report = run_bench(
            BenchSpec(
                nodes=3, senders="all", count=_count(size, budget), size=size, transport=transport
            )
        )
        points.append(
            {
                "size": size,
                "bytes_per_s": report["bytes_per_s"],
                "messages_per_s": report["messages_per_s"],
                "cpu_us_per_delivery": report["cpu_us_per_delivery"],
            }
        )
    return points


def relay_curve(sizes: Sequence[int], budget: int) -> list[dict[str, Any]]:
    """The relay ring at each size: every message crosses two links, no protocol."""
    return [
        {
            "size": size,
            "bytes_per_s": round(
                raw_baselines.tcp_large_relay(frames=min(_count(size, budget), 5000), size=size)
            ),
        }
        for size in sizes
    ]


def measure(
    *,
    transports: Sequence[str] = TRANSPORTS,
    rates: Sequence[int] = RATES,
    sizes: Sequence[int] = SIZES,
    seconds: float = SECONDS_PER_POINT,
    budget: int = BYTES_PER_POINT,
    pysyncobj_s: float = 5.0,
) -> dict[str, Any]:
    """Every curve and baseline once; one JSON-ready object."""
    result: dict[str, Any] = {
        "benchmark": "curves",
        "cpu_cores": os.cpu_count(),
        "python": platform.python_version(),
        "event_loop": loop_in_use(),
        "core": core_in_use(),
        "load_average_before": [round(load, 2) for load in os.getloadavg()],
        "latency": {t: latency_curve(t, rates, seconds) for t in transports},
        "throughput": {t: throughput_curve(t, sizes, budget) for t in transports},
        "relay_ring": relay_curve(sizes, budget),
        "round_trip_us": {
            "tcp": round(raw_baselines.tcp_small_rtt_asyncio(), 1),
            "shm": round(raw_baselines.shm_small_rtt_asyncio(), 1),
        },
    }
    if pysyncobj_s > 0 and pysyncobj_baseline.installed():
        baseline = pysyncobj_baseline.run_baseline(
            pysyncobj_s, 5000, 1, latency_calls=0, no_batch_latency=False
        )
        result["pysyncobj_ops_per_s"] = baseline["ops_per_s"]
    result["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    return result


def plot(result: dict[str, Any], out: Path) -> None:
    """Draw both curves into one PNG (needs matplotlib)."""
    import matplotlib  # noqa: PLC0415 - optional: only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    colors = {"tcp": "tab:blue", "shm": "tab:orange"}
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for transport, points in result["latency"].items():
        rates = [p["delivered_per_s"] or p["offered_per_s"] for p in points]
        color = colors.get(transport)
        left.plot(
            rates,
            [p["latency_us_p50"] for p in points],
            "o-",
            color=color,
            label=f"{transport} p50",
        )
        left.plot(
            rates, [p["latency_us_p99"] for p in points], ":", color=color, label=f"{transport} p99"
        )
    for transport, rtt in result["round_trip_us"].items():
        left.axhline(rtt, linestyle="--", linewidth=0.8, color="grey")
        left.annotate(f"asyncio round trip, {transport}", (min(RATES), rtt), fontsize=7)
    left.set(
        xscale="log",
        yscale="log",
        xlabel="messages/s offered by one member",
        ylabel="latency from send, µs",
        title="Ordered 100-byte messages, 3 members",
    )
    left.legend(fontsize=8)
    for transport, points in result["throughput"].items():
        right.plot(
            [p["size"] for p in points],
            [p["bytes_per_s"] / 1e6 for p in points],
            "o-",
            color=colors.get(transport),
            label=f"pyderecho {transport}",
        )
    ring = result["relay_ring"]
    right.plot(
        [p["size"] for p in ring],
        [p["bytes_per_s"] / 1e6 for p in ring],
        "s--",
        color="tab:green",
        label="relay ring, no protocol (tcp)",
    )
    if "pysyncobj_ops_per_s" in result:
        right.plot(
            [100], [result["pysyncobj_ops_per_s"] * 100 / 1e6], "k^", label="PySyncObj, 100 B"
        )
    right.set(
        xscale="log",
        yscale="log",
        xlabel="message size, bytes",
        ylabel="MB/s delivered per member",
        title="Ordered, every member sending, 3 members",
    )
    right.legend(fontsize=8)
    figure.suptitle(
        f"pyderecho on {result['cpu_cores']} cores, Python {result['python']}, core "
        f"{result.get('core', 'python')}, {result['event_loop']} (one run)",
        fontsize=9,
    )
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("docs/performance.png"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results-curves.json"))
    parser.add_argument("--pysyncobj-seconds", type=float, default=5.0)
    parser.add_argument(
        "--replot", action="store_true", help="draw the figure from --json, measuring nothing"
    )
    args = parser.parse_args()
    if args.replot:
        result = json.loads(args.json.read_text())
    else:
        result = measure(pysyncobj_s=args.pysyncobj_seconds)
        args.json.write_text(json.dumps(result) + "\n")
    try:
        plot(result, args.out)
    except ImportError:
        print("curves: matplotlib is not installed; wrote the numbers only", file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
