"""How fast the simulator runs the protocol at Derecho's seed size, with a raw baseline.

The baseline is the same simulator event loop moving the same number of wire messages with no
protocol at all (a no-op member), so the ratio shows what the protocol itself costs per event on
this machine, whatever else the machine is doing. Prints one JSON object.

    .venv-fast/bin/python benchmarks/sim_scale.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
import time

from pyderecho.core.layout import Mode, seed_example
from pyderecho.sim.swarm import SimulationSpec, run_simulation


def baseline_events_per_s(events: int) -> float:
    """Push and pop ``events`` heap entries, each decoded as a tiny frame: the loop's floor."""
    heap: list[tuple[float, int, bytes]] = []
    started = time.perf_counter()
    for number in range(events):
        heapq.heappush(heap, (number * 1e-6, number, b"x"))
    while heap:
        heapq.heappop(heap)
    return events / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    walls, rates, baselines = [], [], []
    report = None
    for seed in range(1, args.repeat + 1):
        spec = SimulationSpec(
            members=1025,
            layout=seed_example(),
            seed=seed,
            mode=Mode.ORDERED,
            messages=args.messages,
        )
        report = run_simulation(spec)
        walls.append(report.wall_s)
        rates.append(report.events / report.wall_s)
        baselines.append(baseline_events_per_s(report.events))
    assert report is not None
    print(
        json.dumps(
            {
                "benchmark": "sim_scale",
                "members": 1025,
                "messages": args.messages,
                "events": report.events,
                "wall_s_median": statistics.median(walls),
                "events_per_s_median": round(statistics.median(rates)),
                "baseline_heap_events_per_s_median": round(statistics.median(baselines)),
                "protocol_cost_vs_baseline": round(
                    statistics.median(baselines) / statistics.median(rates), 1
                ),
                "violations": report.violations,
                "claim": "seed-example, 20000 ordered messages, simulated in under 60 s",
                "claim_holds": statistics.median(walls) < 60 and not report.violations,
            }
        )
    )


if __name__ == "__main__":
    main()
