"""Durable updates: pyderecho's ``Paxos`` shards against etcd and ZooKeeper, measured in one run.

Each round (``--repeat`` rounds, interleaved so that whatever else the machine does weighs on
every figure alike) runs:

- ``pyderecho bench --workload objects --mode paxos`` on each transport (``--transports``,
  default tcp and shm): three member processes, the counter's shard in ``Paxos`` mode, every
  member calling an ``@ordered`` method with a 100-byte argument, ``--in-flight`` calls
  outstanding per member (16: 48 in the whole group); a replica applies a call only once
  *every* member has logged it with ``fdatasync`` (group commit on each member's writer
  thread; ``records_per_sync`` shows how many calls one ``fdatasync`` covered). A call counts
  once the caller's own replica applied it (``replies="own"``: the one answer, once durable
  everywhere, as an etcd or ZooKeeper client gets one answer once committed), and in a second
  run once every replica's reply is in (``replies="all"``, ``pyderecho_paxos_every_reply``).
  Then one call in flight in the whole group, the members taking turns (``--latency-calls``).
  Each member logs to a fresh directory under ``--data-root``;
- the same workload in ``ordered`` mode (nothing logged), unless ``--no-ordered``: context
  for what durability costs (``durable_vs_ordered``);
- etcd and ZooKeeper (``durable_baselines.py``, a fresh three-member cluster each): the same
  total in flight (48, over the three members), a 100-byte value per update, for
  ``--seconds`` after ``--warmup``; then one update in flight, the members taking turns.

The durability differs, in pyderecho's disfavour: pyderecho answers a call once all three
replicas have ``fdatasync``-ed it; etcd (Raft) and ZooKeeper (Zab) answer once a majority, two
of three, has it on disk. Rates are acknowledged updates per second, summed over the group
(pyderecho: each member's calls over its own span, summed; the baselines: every
acknowledgement in the window). Latency is the p50 with one update in flight.

Targets, per transport: ``updates_per_s`` at least 5x the better of etcd and ZooKeeper, and the
lone-update latency p50 at most the better (lower) of theirs. The host's ``fdatasync``
latency (a 100-byte append, in ``--data-root``) is recorded before and after: a floor under
every system here; a disk that acknowledges ``fdatasync`` from a write cache leaves them all
CPU-bound.

Prints one JSON object (and writes it to ``--out``): per system the medians over rounds and
the samples, the ratios, each target with whether it is met, the machine, the ``fdatasync``
latency and the load average before and after::

    .venv-fast/bin/python benchmarks/durable_compare.py [--repeat 3] [--seconds 5] [--count 5000]
        [--in-flight 16] [--latency-calls 300] [--transports tcp,shm] [--no-ordered]
        [--baselines etcd,zookeeper] [--data-root DIR] [--out benchmarks/results-durable.json]

Needs etcd and ZooKeeper (``sudo bash benchmarks/setup_durable_baselines.sh``) and kazoo
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import durable_baselines

from pyderecho.cli.bench import ObjectsSpec, core_in_use, run_objects
from pyderecho.runtime.loop import loop_in_use

MEMBERS = 3
VALUE_BYTES = 100
RATE_TARGET = 5.0
"""pyderecho's durable updates per second over the better baseline's, at least."""
LATENCY_TARGET = 1.0
"""pyderecho's lone-update latency p50 over the better baseline's, at most."""
BASELINES = ("etcd", "zookeeper")


def _median(values: list[Any]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def _ms(microseconds: float | None) -> float | None:
    return None if microseconds is None else round(microseconds / 1000, 3)


def _pyderecho_summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of one transport and mode's reports, and the samples."""

    def samples(pick: Callable[[dict[str, Any]], Any]) -> list[Any]:
        return [pick(report) for report in reports]

    rates = samples(lambda r: r["calls"]["calls_per_s_group"])
    lone_p50 = samples(lambda r: _ms(r["latency_one_in_flight"]["latency_us"]["p50"]))
    summary: dict[str, Any] = {
        "updates_per_s": _median(rates),
        "latency_ms_p50": _median(lone_p50),
        "latency_ms_p99": _median(
            samples(lambda r: _ms(r["latency_one_in_flight"]["latency_us"]["p99"]))
        ),
        "loaded_latency_ms_p50": _median(samples(lambda r: _ms(r["calls"]["latency_us"]["p50"]))),
        "loaded_latency_ms_p99": _median(samples(lambda r: _ms(r["calls"]["latency_us"]["p99"]))),
        "cpu_us_per_call": _median(samples(lambda r: r["calls"]["cpu_us_per_call"])),
        "samples_updates_per_s": rates,
        "samples_latency_ms_p50": lone_p50,
    }
    if all("log" in report["calls"] for report in reports):
        per_sync = samples(lambda r: r["calls"]["log"]["records_per_sync"])
        summary["records_per_sync"] = _median(per_sync)
        summary["samples_records_per_sync"] = per_sync
        summary["samples_syncs_per_member"] = samples(
            lambda r: r["calls"]["log"]["syncs_per_member"]
        )
    summary["clean_exit"] = all(report["clean_exit"] for report in reports)
    summary["runs"] = reports
    return summary


def _baseline_summary(system: str, runs: list[dict[str, float]]) -> dict[str, Any]:
    keys = ["updates_per_s", "latency_ms_p50", "latency_ms_p99", "loaded_latency_ms_p50"]
    keys += ["loaded_latency_ms_p99", "client_cpu", "server_cpu"]
    return {
        "durability": durable_baselines.DURABILITY[system],
        **{key: _median([run[key] for run in runs]) for key in keys},
        "samples_updates_per_s": [run["updates_per_s"] for run in runs],
        "samples_latency_ms_p50": [run["latency_ms_p50"] for run in runs],
        "runs": runs,
    }


def _target(
    name: str, measured: float | None, threshold: float, *, at_most: bool
) -> dict[str, Any]:
    met = measured is not None and (measured <= threshold if at_most else measured >= threshold)
    return {"target": name, "measured": measured, "threshold": threshold, "met": met}


def _filesystem(path: str) -> dict[str, str] | None:
    """The mount holding ``path`` (its device, mount point and type), from /proc/mounts."""
    real = os.path.realpath(path)
    best: dict[str, str] | None = None
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, point, kind = line.split()[:3]
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) > len(best["mount"])):
                    best = {"device": device, "mount": point, "type": kind}
    except OSError:
        return None
    return best


def _proc_field(path: str, name: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine(data_root: str) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "memory": _proc_field("/proc/meminfo", "MemTotal"),
        "python": platform.python_version(),
        "event_loop": loop_in_use(),
        "core": core_in_use(),
        "pyderecho": _version("pyderecho"),
        "kazoo": _version("kazoo"),
        "data_root": data_root,
        "data_root_filesystem": _filesystem(data_root),
        **durable_baselines.server_versions(),
    }


def _objects_spec(
    args: argparse.Namespace, transport: str, mode: str, replies: str = "own"
) -> ObjectsSpec:
    return ObjectsSpec(
        nodes=MEMBERS,
        transport=transport,
        mode=mode,
        replies=replies,
        count=args.count,
        size=VALUE_BYTES,
        in_flight=args.in_flight,
        latency_calls=args.latency_calls,
        queries=0,
        state_bytes=0,
        data_dir=args.data_root,
    )


def compare(args: argparse.Namespace) -> dict[str, Any]:
    transports: list[str] = args.transports.split(",")
    baselines: list[str] = [b for b in args.baselines.split(",") if b]
    data_root = args.data_root or tempfile.gettempdir()
    total_in_flight = MEMBERS * args.in_flight
    load_before = os.getloadavg()
    began = time.perf_counter()
    fsync_before = durable_baselines.fdatasync_latency_ms(directory=args.data_root)
    paxos: dict[str, list[dict[str, Any]]] = {t: [] for t in transports}
    every_reply: dict[str, list[dict[str, Any]]] = {t: [] for t in transports}
    ordered: dict[str, list[dict[str, Any]]] = {t: [] for t in transports}
    runs: dict[str, list[dict[str, float]]] = {b: [] for b in baselines}
    for _ in range(args.repeat):
        for transport in transports:
            paxos[transport].append(run_objects(_objects_spec(args, transport, "paxos")))
            every_reply[transport].append(
                run_objects(_objects_spec(args, transport, "paxos", replies="all"))
            )
            if args.ordered:
                ordered[transport].append(run_objects(_objects_spec(args, transport, "ordered")))
        for system in baselines:
            options: dict[str, Any] = {
                "warmup_s": args.warmup,
                "latency_updates": args.latency_calls,
                "data_root": args.data_root,
            }
            if system == "zookeeper":
                options["sessions_per_member"] = args.zk_sessions_per_member
            runs[system].append(
                durable_baselines.MEASURES[system](total_in_flight, args.seconds, **options)
            )
    fsync_after = durable_baselines.fdatasync_latency_ms(directory=args.data_root)

    pyderecho = {t: _pyderecho_summary(reports) for t, reports in paxos.items()}
    all_replies = {t: _pyderecho_summary(reports) for t, reports in every_reply.items()}
    context = {t: _pyderecho_summary(reports) for t, reports in ordered.items() if reports}
    systems = {system: _baseline_summary(system, runs[system]) for system in baselines}
    rates = [systems[s]["updates_per_s"] for s in baselines if systems[s]["updates_per_s"]]
    latencies = [systems[s]["latency_ms_p50"] for s in baselines if systems[s]["latency_ms_p50"]]
    best_rate = max(rates) if rates else None
    best_latency = min(latencies) if latencies else None
    ratios: dict[str, float | None] = {}
    targets = []
    for transport in transports:
        rate = pyderecho[transport]["updates_per_s"]
        latency = pyderecho[transport]["latency_ms_p50"]
        rate_ratio = ratios[f"updates_per_s_{transport}_vs_best_baseline"] = _ratio(rate, best_rate)
        latency_ratio = ratios[f"latency_p50_{transport}_vs_best_baseline"] = _ratio(
            latency, best_latency
        )
        for system in baselines:
            ratios[f"updates_per_s_{transport}_vs_{system}"] = _ratio(
                rate, systems[system]["updates_per_s"]
            )
            ratios[f"latency_p50_{transport}_vs_{system}"] = _ratio(
                latency, systems[system]["latency_ms_p50"]
            )
        ratios[f"updates_per_s_{transport}_every_reply_vs_best_baseline"] = _ratio(
            all_replies[transport]["updates_per_s"], best_rate
        )
        ratios[f"latency_p50_{transport}_every_reply_vs_best_baseline"] = _ratio(
            all_replies[transport]["latency_ms_p50"], best_latency
        )
        if transport in context:
            ratios[f"durable_vs_ordered_{transport}"] = _ratio(
                rate, context[transport]["updates_per_s"]
            )
        targets.append(
            _target(
                f"durable updates/s, {transport}, {total_in_flight} in flight: at least "
                f"{RATE_TARGET:g}x max(etcd, zookeeper)",
                rate_ratio,
                RATE_TARGET,
                at_most=False,
            )
        )
        targets.append(
            _target(
                f"latency p50 with one update in flight, {transport}: at most "
                f"{LATENCY_TARGET:g}x min(etcd, zookeeper)",
                latency_ratio,
                LATENCY_TARGET,
                at_most=True,
            )
        )
    return {
        "benchmark": "durable_compare",
        "members": MEMBERS,
        "value_bytes": VALUE_BYTES,
        "in_flight_per_member": args.in_flight,
        "in_flight": total_in_flight,
        "repeat": args.repeat,
        "pyderecho_calls_per_member": args.count,
        "latency_calls": args.latency_calls,
        "baseline_seconds": args.seconds,
        "baseline_warmup_s": args.warmup,
        "durability": {
            "pyderecho": "every call logged with fdatasync at all 3 replicas before it is applied "
            "and answered (Paxos shard, group commit); answered by the caller's own replica "
            '(replies="own"), and in pyderecho_paxos_every_reply once every replica replied',
            **{system: durable_baselines.DURABILITY[system] for system in baselines},
            "note": "pyderecho waits for all 3 replicas' fdatasync; etcd and ZooKeeper commit "
            "once 2 of 3 have it on disk",
        },
        "machine": machine(data_root),
        "fdatasync_ms": {"before": fsync_before, "after": fsync_after},
        "load_average": {
            "before": [round(load, 2) for load in load_before],
            "after": [round(load, 2) for load in os.getloadavg()],
        },
        "wall_s": round(time.perf_counter() - began, 1),
        "pyderecho_paxos": pyderecho,
        "pyderecho_paxos_every_reply": all_replies,
        "pyderecho_ordered": context or None,
        "baselines": systems,
        "best_baseline": {"updates_per_s": best_rate, "latency_ms_p50": best_latency},
        "ratios": ratios,
        "targets": targets,
        "all_met": all(target["met"] for target in targets),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3); medians")
    parser.add_argument(
        "--in-flight", type=int, default=16, help="updates outstanding per member (default 16)"
    )
    parser.add_argument(
        "--count", type=int, default=5000, help="pyderecho calls per member (default 5000)"
    )
    parser.add_argument(
        "--latency-calls",
        type=int,
        default=durable_baselines.DEFAULT_LATENCY_UPDATES,
        help="updates with one in flight, for every system (default 300)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=durable_baselines.DEFAULT_SECONDS,
        help="etcd/ZooKeeper measured window (default 5)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=durable_baselines.DEFAULT_WARMUP_S,
        help="etcd/ZooKeeper warm-up before the window (default 1)",
    )
    parser.add_argument("--transports", default="tcp,shm", help="comma-separated (tcp,shm)")
    parser.add_argument(
        "--baselines", default=",".join(BASELINES), help="comma-separated (etcd,zookeeper)"
    )
    parser.add_argument(
        "--no-ordered",
        dest="ordered",
        action="store_false",
        help="skip pyderecho's ordered (not durable) runs",
    )
    parser.add_argument(
        "--data-root", help="where every system's data directories go (default: tmp)"
    )
    parser.add_argument(
        "--zk-sessions-per-member", type=int, help="kazoo sessions per ZooKeeper member"
    )
    parser.add_argument("--out", type=Path, help="also write the JSON object here")
    args = parser.parse_args(argv)
    unknown = [b for b in args.baselines.split(",") if b and b not in BASELINES]
    if unknown or not set(args.transports.split(",")) <= {"tcp", "shm"}:
        parser.error(f"unknown baselines {unknown} or transports {args.transports!r}")
    return args


def missing_requirements(args: argparse.Namespace) -> list[str]:
    """What the chosen baselines need and this machine lacks."""
    missing = []
    if "etcd" in args.baselines and shutil.which(durable_baselines.ETCD_BINARY) is None:
        missing.append("etcd")
    if "zookeeper" in args.baselines:
        if not os.path.exists(durable_baselines.ZOOKEEPER_JAR):
            missing.append("zookeeper")
        if _version("kazoo") is None:
            missing.append("kazoo (pip install -e '.[bench]')")
    return missing


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_requirements(args)
    if missing:
        print(
            f"durable_compare: needs {', '.join(missing)} "
            "(sudo bash benchmarks/setup_durable_baselines.sh)",
            file=sys.stderr,
        )
        return 2
    result = compare(args)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
