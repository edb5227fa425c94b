"""``pyderecho bench``: tiny runs of real member processes complete and report well-formed JSON.

Nothing here asserts a speed: the numbers only have to be there and be sane (a machine under
load may be as slow as it likes). Each run starts its own worker processes; the tests check
that none is left behind, whether the run succeeds or fails.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import json
import multiprocessing
import time
from pathlib import Path

import pytest

from pyderecho.cli import bench
from pyderecho.cli.bench import BenchError, BenchSpec, bench_layout, run_bench, sending_members
from pyderecho.core import node as node_module
from pyderecho.core.config import CoreConfig
from pyderecho.core.layout import Mode, compute_layout
from pyderecho.core.view import View
from pyderecho.runtime.loop import loop_in_use


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert bench.main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert isinstance(report, dict)
    return report


def check_report(report: dict[str, object], *, nodes: int, delivered: int) -> None:
    for key in ("nodes", "senders", "count", "size", "mode", "transport", "wall_s"):
        assert key in report
    assert report["nodes"] == nodes
    assert report["delivered_per_member"] == delivered
    for key in ("messages_per_s", "bytes_per_s"):
        value = report[key]
        assert isinstance(value, int) and value > 0, key
    for key in ("latency_us", "wire_latency_us"):
        percentiles = report[key]
        assert isinstance(percentiles, dict)
        p50, p99 = percentiles["p50"], percentiles["p99"]
        assert isinstance(p50, float) and isinstance(p99, float)
        assert 0 <= p50 <= p99
    wall = report["wall_s"]
    assert isinstance(wall, float) and wall > 0
    cpu = report["cpu_s_per_member"]
    assert isinstance(cpu, list) and len(cpu) == nodes
    assert report["duplicates"] == 0
    assert report["rejected"] == []
    assert report["clean_exit"] is True
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_ordered_run_reports_json(capsys: pytest.CaptureFixture[str], transport: str) -> None:
    report = run_json(capsys, "--nodes", "3", "--count", "200", "--transport", transport)
    check_report(report, nodes=3, delivered=3 * 200)
    assert report["transport"] == transport
    assert report["mode"] == "ordered"
    assert report["size"] == 100
    assert report["event_loop"] == loop_in_use()
    compiled = isinstance(node_module.__loader__, importlib.machinery.ExtensionFileLoader)
    assert report["core"] == ("compiled" if compiled else "python")
    rate, byte_rate = report["messages_per_s"], report["bytes_per_s"]
    assert isinstance(rate, int) and isinstance(byte_rate, int)
    assert byte_rate == pytest.approx(100 * rate, rel=0.01)


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_raw_large_messages_one_sender(capsys: pytest.CaptureFixture[str], transport: str) -> None:
    # 300 KiB: larger than a block, so every message is relayed block by block.
    args = ("--nodes", "3", "--senders", "one", "--mode", "raw", "--size", str(300 * 1024))
    report = run_json(capsys, *args, "--count", "20", "--transport", transport)
    check_report(report, nodes=3, delivered=20)
    assert report["sending_members"] == 1


def test_block_size_sets_how_large_messages_are_cut(capsys: pytest.CaptureFixture[str]) -> None:
    # 200 KiB in 64 KiB blocks: four blocks a message, three of them read in place over tcp.
    args = ("--nodes", "3", "--size", str(200 * 1024), "--block-size", str(64 * 1024))
    report = run_json(capsys, *args, "--count", "10", "--transport", "tcp")
    check_report(report, nodes=3, delivered=30)
    assert report["block_size"] == 64 * 1024
    assert run_json(capsys, "--count", "10")["block_size"] == CoreConfig().block_size
    with pytest.raises(ValueError, match="block_size"):
        BenchSpec(block_size=0)
    assert bench.main(["--workload", "objects", "--block-size", "65536"]) == 2


def test_a_paced_sender_keeps_to_its_rate(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--nodes", "3", "--senders", "one", "--count", "60", "--rate", "300")
    report = run_json(capsys, *args, "--transport", "tcp")
    check_report(report, nodes=3, delivered=60)
    assert report["rate"] == 300.0
    rate = report["messages_per_s"]
    # 60 messages 1/300 s apart span 0.197 s however fast the group is; a slow machine only
    # stretches it.
    assert isinstance(rate, int) and rate <= 300 * 1.05


def test_one_message_in_flight(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--nodes", "3", "--senders", "one", "--count", "100", "--in-flight", "1")
    report = run_json(capsys, *args, "--transport", "shm")
    check_report(report, nodes=3, delivered=100)
    assert report["in_flight"] == 1
    with pytest.raises(ValueError, match="in_flight"):
        BenchSpec(in_flight=0)
    with pytest.raises(ValueError, match="rate"):
        BenchSpec(rate=0.0)


def test_the_round_trip_baselines_measure_a_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    raw_baselines = importlib.import_module("raw_baselines")
    for measure in (
        raw_baselines.tcp_small_rtt_socket,
        raw_baselines.tcp_small_rtt_asyncio,
        raw_baselines.shm_small_rtt,
        raw_baselines.shm_small_rtt_asyncio,
    ):
        rtt = measure(rounds=50)
        assert 0 < rtt < 1e6, (measure.__name__, rtt)
    assert not multiprocessing.active_children()


def test_idle_cpu_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "--nodes", "2", "--count", "0", "--idle", "0.3")
    assert report["delivered_per_member"] == 0
    assert report["messages_per_s"] is None
    idle = report["idle_cpu_s_per_member"]
    assert isinstance(idle, list) and len(idle) == 2
    assert all(isinstance(seconds, float) and seconds >= 0 for seconds in idle)
    assert not multiprocessing.active_children()


def test_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--nodes", "2", "--senders", "half", "--count", "50"]) == 0
    out = capsys.readouterr().out
    assert "messages/s" in out
    assert "latency" in out


def test_failed_run_leaves_no_process() -> None:
    # No worker can even start within a millisecond: the run must fail and reap them all.
    with pytest.raises(BenchError, match="timed out"):
        run_bench(BenchSpec(nodes=3, count=10, timeout_s=0.001))
    assert not multiprocessing.active_children()


def test_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--nodes", "0"])
    assert bench.main(["--size", "1000", "--timeout", "0.000001", "--json"]) == 1
    assert "timed out" in capsys.readouterr().err
    with pytest.raises(ValueError, match="senders"):
        BenchSpec(senders="most")
    with pytest.raises(ValueError, match="loop"):
        BenchSpec(loop="trio")  # type: ignore[arg-type]
    if loop_in_use() == "asyncio":  # uvloop is not installed: asking for it is a bad argument
        assert bench.main(["--loop", "uvloop", "--count", "10"]) == 2
        assert "pyderecho[fast]" in capsys.readouterr().err


def test_add_parser_plugs_into_a_command() -> None:
    parser = argparse.ArgumentParser(prog="pyderecho")
    commands = parser.add_subparsers(dest="command", required=True)
    bench.add_parser(commands)
    args = parser.parse_args(["bench", "--nodes", "5", "--transport", "tcp", "--window", "7"])
    assert args.command == "bench"
    assert (args.nodes, args.transport, args.window, args.mode) == (5, "tcp", 7, "ordered")


@pytest.mark.parametrize(
    ("policy", "expected"), [("all", (0, 1, 2, 3, 4)), ("half", (0, 1)), ("one", (0,))]
)
def test_layout_senders(policy: str, expected: tuple[int, ...]) -> None:
    view = View(0, (0, 1, 2, 3, 4))
    assert sending_members(view.members, policy) == expected
    layout = compute_layout(bench_layout(Mode.RAW, policy), view)
    (ref,) = layout.shards_of(0)
    assert ref.layout.members == view.members
    assert ref.layout.sending_members == expected
    assert ref.layout.mode is Mode.RAW


def test_the_window_is_the_cores_and_the_queues_hold_its_bytes() -> None:
    """The bench runs the core's window (``window_bytes`` bounds large messages) and sizes the
    transports' queues from both bounds: a 1 MiB sender's window of 1,000 messages must not
    turn into gigabytes of queue, nor a bound its 16 MiB in flight can reach."""
    core = CoreConfig()
    assert BenchSpec(size=100).window_size == core.window_size
    assert BenchSpec(size=100, window=7).window_size == 7
    large = BenchSpec(size=1 << 20, nodes=3)
    in_flight = 3 * (core.window_bytes + (1 << 20))
    assert 2 * in_flight <= large.queue_bytes() <= 2 * (in_flight + 3 * 256 * core.window_size)


def test_the_relay_baseline_runs_three_processes_to_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``benchmarks/raw_baselines.py``'s ring of three relaying processes: every process
    delivers every frame (it raises otherwise) and reports a rate."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    raw_baselines = importlib.import_module("raw_baselines")
    rate = raw_baselines.tcp_large_relay(frames=30, size=64 * 1024)
    assert rate > 0


def test_the_paced_baseline_waits_for_every_answer_and_reports_cpu_per_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``benchmarks/raw_baselines.py``'s light-load floor: each of the three processes waits
    for two frames a message (it times out and raises otherwise) and the CPU per message is
    positive and bounded by the wall time the processes had."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    raw_baselines = importlib.import_module("raw_baselines")
    messages, rate = 100, 2000.0
    loops = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])
    for event_loop in loops:
        began = time.perf_counter()
        cpu_us = raw_baselines.tcp_small_paced_relay(
            messages=messages, rate=rate, event_loop=event_loop
        )
        elapsed_us = (time.perf_counter() - began) * 1e6
        # A process's CPU from its first message to its last frame fits in the call's time,
        # and is timed from the first message: the processes' start-up (imports, a few hundred
        # milliseconds of CPU) would put it over the messages' interval.
        assert 0 < cpu_us * messages < elapsed_us, event_loop
        assert cpu_us < 1e6 / rate, event_loop
    with pytest.raises(ValueError, match="answer"):
        raw_baselines.tcp_small_paced_relay(size=raw_baselines.ACK_BYTES)
    assert not multiprocessing.active_children()


def test_the_lone_relay_baseline_times_each_message_to_its_last_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``benchmarks/raw_baselines.py``'s light-load latency floor: one latency per message (it
    raises otherwise), each a message's trip out and both answers' trips back, so the median
    is positive and under the time the whole run took divided by the messages."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    raw_baselines = importlib.import_module("raw_baselines")
    messages = 200
    loops = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])
    for event_loop in loops:
        began = time.perf_counter()
        latency_us = raw_baselines.tcp_small_lone_relay(messages=messages, event_loop=event_loop)
        elapsed_us = (time.perf_counter() - began) * 1e6
        assert 0 < latency_us * messages < elapsed_us, event_loop
    with pytest.raises(ValueError, match="answer"):
        raw_baselines.tcp_small_lone_relay(size=raw_baselines.ACK_BYTES)
    assert not multiprocessing.active_children()


def test_the_growth_benchmark_counts_what_each_size_costs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``benchmarks/growth.py`` on small groups: each size measured, every message delivered
    everywhere, and a kill's view change costing more frames in the larger group."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    growth = importlib.import_module("growth")
    assert growth.main(["--sizes", "3,8", "--sharded", "9", "--messages", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {row["members"]: row for row in report["sizes"]}
    assert sorted(rows) == [3, 8, 9]
    assert rows[8]["one_shard"]["deliveries"] == 8 * 8 * 3
    assert rows[9]["shards_of_3"]["deliveries"] == 9 * 3 * 3
    assert "one_shard" not in rows[9]
    small, large = rows[3]["view_change"], rows[8]["view_change"]
    assert 0 < small["frames"] < large["frames"]
    assert large["frames_leader"] > 0 and large["sim_ms"] > 0
    leader_killed = rows[9]["leader_killed_shards_of_3"]
    assert leader_killed["frames_leader"] > 0 and leader_killed["sim_ms"] > 0


def test_the_scale_benchmark_reports_each_group_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks/scale.py`` on tiny runs: one case per size, with the group-wide rate."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    scale = importlib.import_module("scale")
    monkeypatch.setattr(scale, "SMALL_DELIVERIES", 3000)
    monkeypatch.setattr(scale, "IDLE_TARGET_NODES", 3)
    result = scale.scale([2, 3], ["shm"], [100], repeat=1, idle_s=0.2)
    assert [case["nodes"] for case in result["cases"]] == [2, 3]
    [target] = result["targets"]  # the idle target, for the group of IDLE_TARGET_NODES alone
    idle_3 = result["cases"][1]["idle_cores_group"]
    assert (target["measured"], target["met"]) == (idle_3, idle_3 < scale.IDLE_TARGET_CORES)
    assert "nothing else" in result["cases"][1]["idle_floor"], "over shm, the timer alone"
    for case in result["cases"]:
        assert case["messages_per_s_group"] == case["messages_per_s_per_member"] * case["nodes"]
        assert case["count_per_sender"] == 3000 // case["nodes"]
        assert 0 < case["links_s"] < 60
        assert case["idle_cores_group"] >= 0
        assert case["idle_floor_cores_group"] > 0, "the heartbeat floor of the same run"
        assert case["heartbeat_interval_s"] == CoreConfig().heartbeat_interval
    slower = scale.scale([2], ["shm"], [100], repeat=1, idle_s=0.2, heartbeat_interval=0.25)
    assert slower["cases"][0]["heartbeat_interval_s"] == 0.25


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_objects_workload_completes_every_call(
    capsys: pytest.CaptureFixture[str], transport: str
) -> None:
    """``--workload objects`` on tiny sizes: every ordered call gets every replica's reply,
    every lone call and query completes, and a joiner receives the whole state."""
    args = ["--workload", "objects", "--transport", transport, "--count", "40"]
    args += ["--in-flight", "8", "--latency-calls", "6", "--queries", "30", "--state-mib", "5"]
    report = run_json(capsys, *args)
    assert report["workload"] == "objects"
    assert (report["nodes"], report["transport"], report["size"]) == (3, transport, 100)
    assert (report["count"], report["in_flight"]) == (40, 8)
    calls = report["calls"]
    assert isinstance(calls, dict)
    assert calls["members"] == [0, 1, 2]
    assert calls["calls"] == calls["completed"] == 3 * 40
    assert calls["failed"] == 0 and calls["duplicates"] == 0
    rates = calls["calls_per_s_per_member"]
    assert isinstance(rates, list) and len(rates) == 3 and all(rate > 0 for rate in rates)
    assert calls["calls_per_s_group"] >= calls["calls_per_s_member_median"] > 0
    assert 0 <= calls["latency_us"]["p50"] <= calls["latency_us"]["p99"]
    lone = report["latency_one_in_flight"]
    assert isinstance(lone, dict)
    assert (lone["calls"], lone["failed"]) == (6, 0)
    assert 0 <= lone["latency_us"]["p50"] <= lone["latency_us"]["p99"]
    queries = report["queries"]
    assert isinstance(queries, dict)
    assert (queries["from"], queries["to"]) == (1, 0)
    assert queries["queries"] == queries["completed"] == 30 and queries["failed"] == 0
    assert queries["queries_per_s"] > 0
    state = report["state_transfer"]
    assert isinstance(state, dict)
    assert state["state_bytes"] == state["received_bytes"] == 5 * 1024 * 1024
    assert state["encoded_bytes"] >= state["state_bytes"]
    assert state["seconds"] > 0 and state["mib_per_s"] > 0
    assert report["clean_exit"] is True
    assert not multiprocessing.active_children()


def test_objects_workload_bad_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert bench.main(["--workload", "objects", "--nodes", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
    with pytest.raises(ValueError, match="in_flight"):
        bench.ObjectsSpec(in_flight=0)
    with pytest.raises(ValueError, match="replies"):
        bench.ObjectsSpec(replies="some")
    missing = tmp_path / "missing"
    args = ["--workload", "objects", "--mode", "paxos", "--data-dir", str(missing)]
    assert bench.main(args) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not missing.exists()


def test_objects_workload_with_own_replies(capsys: pytest.CaptureFixture[str]) -> None:
    """``--replies own``: every call resolves to the caller's own replica's int, counted
    like every-reply calls, and the report says which form it measured."""
    args = ["--workload", "objects", "--transport", "shm", "--count", "40", "--in-flight", "8"]
    args += ["--latency-calls", "3", "--queries", "0", "--state-mib", "0", "--replies", "own"]
    report = run_json(capsys, *args)
    assert report["replies"] == "own"
    calls = report["calls"]
    assert isinstance(calls, dict)
    assert calls["calls"] == calls["completed"] == 3 * 40 and calls["failed"] == 0
    lone = report["latency_one_in_flight"]
    assert isinstance(lone, dict)
    assert (lone["calls"], lone["failed"]) == (3, 0)
    assert report["clean_exit"] is True


def test_objects_workload_in_paxos_mode_logs_every_call(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--mode paxos``: the counter's shard is a Paxos shard, every call completes with every
    replica's reply, each member's writer reports its fdatasync calls and the records they
    made durable, and the members' data directories are gone afterwards."""
    args = ["--workload", "objects", "--mode", "paxos", "--transport", "shm", "--count", "30"]
    args += ["--in-flight", "8", "--latency-calls", "3", "--queries", "0", "--state-mib", "0"]
    report = run_json(capsys, *args, "--data-dir", str(tmp_path))
    assert (report["mode"], report["data_dir"]) == ("paxos", str(tmp_path))
    calls = report["calls"]
    assert isinstance(calls, dict)
    assert calls["calls"] == calls["completed"] == 3 * 30 and calls["failed"] == 0
    log = calls["log"]
    assert isinstance(log, dict)
    syncs, records = log["syncs_per_member"], log["records_per_member"]
    assert len(syncs) == len(records) == 3
    assert all(0 < sync <= record for sync, record in zip(syncs, records, strict=True))
    assert sum(records) > 0 and log["records_per_sync"] >= 1
    lone = report["latency_one_in_flight"]
    assert isinstance(lone, dict)
    assert (lone["calls"], lone["failed"]) == (3, 0)
    assert "log" in lone
    assert "queries" not in report and "state_transfer" not in report
    assert report["clean_exit"] is True
    assert list(tmp_path.iterdir()) == []
    assert not multiprocessing.active_children()


def test_paxos_layout_and_mode_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    view = View(0, (0, 1, 2))
    layouts = {
        mode: compute_layout(bench.OBJECT_LAYOUTS[mode], view) for mode in bench.OBJECT_MODES
    }
    for mode, expected in (("ordered", Mode.ORDERED), ("paxos", Mode.PAXOS)):
        modes = {ref.type_name: ref.layout.mode for ref in layouts[mode].shards}
        assert modes == {bench.COUNTER_TYPE: expected, bench.LOOKUP_TYPE: Mode.ORDERED}
    assert bench.main(["--workload", "objects", "--mode", "raw"]) == 2
    assert "ordered, paxos" in capsys.readouterr().err
    assert bench.main(["--mode", "paxos"]) == 2
    assert "objects workload" in capsys.readouterr().err
    with pytest.raises(ValueError, match="mode"):
        bench.ObjectsSpec(mode="raw")


def test_the_durable_comparison_computes_ratios_and_targets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``benchmarks/durable_compare.py`` with stand-ins for the runs (no servers, no members):
    the rate is judged against the better baseline's rate, the latency against the better
    (lower) baseline latency, and the durable rate against the ordered one."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    durable_compare = importlib.import_module("durable_compare")
    durable_baselines = importlib.import_module("durable_baselines")

    def fake_objects(spec: bench.ObjectsSpec) -> dict[str, object]:
        rate = {"paxos": 20_000, "ordered": 40_000}[spec.mode]
        calls: dict[str, object] = {
            "calls_per_s_group": rate,
            "latency_us": {"p50": 2000.0, "p99": 4000.0},
            "cpu_us_per_call": 100.0,
        }
        if spec.mode == "paxos":
            calls["log"] = {"records_per_sync": 8.0, "syncs_per_member": [10, 10, 10]}
        lone = {"latency_us": {"p50": 900.0, "p99": 1500.0}}
        return {"calls": calls, "latency_one_in_flight": lone, "clean_exit": True}

    def fake_baseline(rate: float, latency: float) -> object:
        def measure(in_flight: int, seconds: float, **options: object) -> dict[str, float]:
            assert in_flight == 48
            keys = ["latency_ms_p99", "loaded_latency_ms_p50", "loaded_latency_ms_p99"]
            return {"updates_per_s": rate, "latency_ms_p50": latency} | dict.fromkeys(
                [*keys, "client_cpu", "server_cpu"], 1.0
            )

        return measure

    monkeypatch.setattr(durable_compare, "run_objects", fake_objects)
    monkeypatch.setitem(durable_baselines.MEASURES, "etcd", fake_baseline(4000.0, 1.0))
    monkeypatch.setitem(durable_baselines.MEASURES, "zookeeper", fake_baseline(2000.0, 1.8))
    monkeypatch.setattr(durable_baselines, "fdatasync_latency_ms", lambda **_: {"p50": 0.1})
    monkeypatch.setattr(durable_baselines, "server_versions", dict)
    monkeypatch.setattr(durable_compare, "missing_requirements", lambda args: [])
    out = tmp_path / "durable.json"
    assert durable_compare.main(["--repeat", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["in_flight"] == 48 and result["repeat"] == 2
    assert result["best_baseline"] == {"updates_per_s": 4000.0, "latency_ms_p50": 1.0}
    ratios = result["ratios"]
    for transport in ("tcp", "shm"):
        paxos = result["pyderecho_paxos"][transport]
        assert paxos["samples_updates_per_s"] == [20_000, 20_000]
        assert paxos["records_per_sync"] == 8.0
        assert ratios[f"updates_per_s_{transport}_vs_best_baseline"] == 5.0
        assert ratios[f"latency_p50_{transport}_vs_best_baseline"] == 0.9
        assert ratios[f"durable_vs_ordered_{transport}"] == 0.5
    assert [target["met"] for target in result["targets"]] == [True] * 4
    assert result["all_met"] is True
    assert "2 of 3" in result["durability"]["note"]


def test_the_curves_measure_each_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks/curves.py`` on one tiny point per curve: the numbers the README's figure
    is drawn from, each from its own run."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    curves = importlib.import_module("curves")
    monkeypatch.setattr(curves.raw_baselines, "tcp_small_rtt_asyncio", lambda: 40.0)
    monkeypatch.setattr(curves.raw_baselines, "shm_small_rtt_asyncio", lambda: 30.0)
    result = curves.measure(
        transports=("shm",), rates=(400,), sizes=(1000,), seconds=0.3, budget=100_000, pysyncobj_s=0
    )
    (lone,) = result["latency"]["shm"]
    assert lone["offered_per_s"] == 400
    assert lone["delivered_per_s"] <= 400 * 1.05
    assert 0 < lone["latency_us_p50"] <= lone["latency_us_p99"]
    (point,) = result["throughput"]["shm"]
    assert point["size"] == 1000 and point["bytes_per_s"] > 0
    (ring,) = result["relay_ring"]
    assert ring["size"] == 1000 and ring["bytes_per_s"] > 0
    assert result["round_trip_us"] == {"tcp": 40.0, "shm": 30.0}
    assert "pysyncobj_ops_per_s" not in result
    assert not multiprocessing.active_children()
