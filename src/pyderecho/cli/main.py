"""The ``pyderecho`` command: ``node``, ``status``, ``check``, ``demo`` and ``simulate``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pyderecho.cli import bench
from pyderecho.cli.argtypes import non_negative_int, positive_int
from pyderecho.cli.chaos import main_chaos
from pyderecho.cli.demo import run_demo
from pyderecho.cli.node import run_node
from pyderecho.cli.status import format_status, query_status
from pyderecho.config import SettingsError, add_arguments, load_settings
from pyderecho.core.config import CoreConfig
from pyderecho.core.errors import RemoteProtocolError
from pyderecho.core.layout import Mode
from pyderecho.history.delivery_log import LogError, check_logs
from pyderecho.layouts import resolve_layout
from pyderecho.sim.swarm import PARTIAL_CUTS, SimulationSpec, run_simulation


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    defaults = CoreConfig()
    parser = argparse.ArgumentParser(
        prog="pyderecho", description="Replicated services from a group of processes."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser(
        "simulate",
        help="run a layout in the deterministic simulator and check its history",
        description="Run a layout in the deterministic simulator under a random workload, "
        "then check every member's delivery history. Exits 1 on any violation.",
    )
    simulate.add_argument("--members", type=positive_int, required=True, help="group size")
    simulate.add_argument(
        "--layout",
        default="every-member",
        help="a built-in layout name (seed-example, every-member, ...) or module:function",
    )
    simulate.add_argument(
        "--mode",
        choices=["raw", "ordered"],
        default="ordered",
        help="delivery mode forced on every shard (default: ordered)",
    )
    simulate.add_argument("--messages", type=non_negative_int, default=1000)
    simulate.add_argument("--size", type=positive_int, default=64, help="payload bytes")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--crash", type=non_negative_int, default=0, help="members to crash")
    simulate.add_argument("--join", type=non_negative_int, default=0, help="processes that join")
    simulate.add_argument("--leave", type=non_negative_int, default=0, help="members that leave")
    simulate.add_argument(
        "--rolling",
        action="store_true",
        help="replace every member in turn: a new process joins, then a founder leaves",
    )
    simulate.add_argument(
        "--stall",
        type=non_negative_int,
        default=0,
        help="members whose loop stalls again and again for just under the timeout",
    )
    simulate.add_argument(
        "--pause-at-once",
        action="store_true",
        help="the paused members freeze together (a starved machine)",
    )
    simulate.add_argument(
        "--leave-at-once",
        action="store_true",
        help="the leavers leave within a millisecond of each other",
    )
    simulate.add_argument(
        "--pause", type=non_negative_int, default=0, help="members to freeze past the timeout"
    )
    simulate.add_argument(
        "--partition", action="store_true", help="split off a minority for a while, then heal"
    )
    simulate.add_argument(
        "--partial-cut",
        choices=PARTIAL_CUTS,
        default="",
        help="cut one link, or two halves of the group with a bridge between them (the leader "
        "on the larger half, or on the smaller one), for a while, then heal",
    )
    simulate.add_argument("--window", type=positive_int, default=defaults.window_size)
    simulate.add_argument("--block-size", type=positive_int, default=defaults.block_size)
    simulate.add_argument("--json", action="store_true", help="print one JSON object")

    demo = commands.add_parser(
        "demo",
        help="run the sharded key-value service of examples/ as local processes",
        description="Run the sharded key-value service of examples/ as local processes: load "
        "through the front, a SIGKILL, a join with state transfer, equal digests in every "
        "shard, and the history checker's verdict.",
    )
    demo.add_argument("--transport", choices=["tcp", "shm"], default="tcp")

    _add_node_parser(commands)
    bench.add_parser(commands)

    chaos = commands.add_parser(
        "chaos",
        help="run real members under a seeded schedule of faults and check every log",
        description="Start member processes on this host under the built-in workload, inject a "
        "seeded schedule of faults (SIGKILL, SIGSTOP/SIGCONT, SIGTERM leaves, a majority "
        "leaving at once, garbage on a link), and check every delivery log with the history "
        "checker and the group's availability. One line per run, then a summary. Exits 1 if "
        "any run found a violation or lost the group.",
    )
    chaos.add_argument("--members", type=positive_int, default=5)
    chaos.add_argument("--runs", type=positive_int, default=10)
    chaos.add_argument("--seed", type=non_negative_int, default=1)
    chaos.add_argument("--faults", type=positive_int, default=4, help="faults per run [4]")
    chaos.add_argument("--transport", choices=["tcp", "shm"], default="tcp")
    chaos.add_argument("--heartbeat-timeout-ms", type=positive_int, default=1000)
    chaos.add_argument(
        "--netns",
        action="store_true",
        help="run each member in a network namespace of its own and also draw partitions and "
        "partial cuts made with iptables (tcp, root)",
    )
    chaos.add_argument(
        "--busy",
        type=non_negative_int,
        default=0,
        help="processes that spin on the CPU beside the runs: a loaded machine [0]",
    )
    chaos.add_argument("--json", action="store_true", help="one JSON object per line")

    status = commands.add_parser(
        "status",
        help="show a running member's view, layout and counters",
        description="Ask members started with --status-port for their view, layout and "
        "counters. The group and its secret come from member settings (a member's config "
        "file will do).",
    )
    status.add_argument(
        "--contact",
        metavar="HOST:PORT",
        action="append",
        required=True,
        help="a member's status address; repeat to ask several",
    )
    status.add_argument("--timeout", type=_non_negative_float, default=5.0, metavar="SECONDS")
    status.add_argument("--json", action="store_true", help="print each answer as JSON")
    add_arguments(status)

    check = commands.add_parser(
        "check",
        help="check members' delivery logs against the virtual synchrony guarantees",
        description="Read the delivery logs of a run (pyderecho node --delivery-log) and run the "
        "history checker over all of them together. Exits 1 on any violation.",
    )
    check.add_argument("logs", nargs="+", type=Path, metavar="LOG")
    return parser


def _add_node_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = commands.add_parser(
        "node",
        help="run one member of a group",
        description="Run one member until it stops. Prints one JSON line per event on stdout. "
        "SIGTERM or SIGINT makes it leave the group. Exit status: 0 after a leave or a stop "
        "on request, 3 when removed from the group or on the minority side of a partition.",
    )
    add_arguments(node)
    run = node.add_argument_group("process")
    run.add_argument(
        "--join",
        action="store_true",
        help="join a running group through contacts, or the other members listed in members",
    )
    run.add_argument(
        "--wait-for-start",
        action="store_true",
        help="print a waiting line, then start only once a line comes on standard input: "
        "founders started together this way do not suspect each other for starting late",
    )
    run.add_argument("--delivery-log", metavar="FILE", type=Path, help="append the history here")
    run.add_argument(
        "--shm-dir",
        metavar="DIR",
        default="/dev/shm",
        help="the members' socket directory for the shm transport [/dev/shm]",
    )
    run.add_argument(
        "--leave-timeout",
        metavar="SECONDS",
        type=_non_negative_float,
        default=10.0,
        help="longest wait for a clean leave after SIGTERM or SIGINT [10]",
    )
    run.add_argument(
        "--status-port",
        metavar="PORT",
        type=_port,
        help="answer `pyderecho status` on this port, 0 for any (needs the group secret)",
    )
    run.add_argument(
        "--status-host", metavar="HOST", default="127.0.0.1", help="status address [127.0.0.1]"
    )
    run.add_argument(
        "--stats-interval",
        metavar="SECONDS",
        type=_non_negative_float,
        default=0.0,
        help="print a stats line this often while the counts change; 0: never [0]",
    )
    work = node.add_argument_group("built-in workload")
    work.add_argument(
        "--send-count", metavar="N", type=non_negative_int, default=0, help="messages to send [0]"
    )
    work.add_argument(
        "--send-rate",
        metavar="PER_S",
        type=_non_negative_float,
        default=0.0,
        help="messages per second; 0: as fast as flow control allows [0]",
    )
    work.add_argument(
        "--size",
        metavar="BYTES",
        type=non_negative_int,
        default=64,
        help="payload bytes, or the payload's unique prefix if that is longer [64]",
    )
    work.add_argument(
        "--subgroup",
        metavar="ID",
        type=non_negative_int,
        help="send only in this subgroup (default: each of this member's subgroups in turn)",
    )


def _simulate(args: argparse.Namespace) -> int:
    try:
        layout = resolve_layout(args.layout)
        config = CoreConfig(
            window_size=args.window,
            block_size=args.block_size,
            max_message_size=max(args.size, args.block_size),
        )
        spec = SimulationSpec(
            members=args.members,
            layout=layout,
            seed=args.seed,
            mode=Mode(args.mode),
            messages=args.messages,
            size=args.size,
            crash=args.crash,
            join=args.join,
            leave=args.leave,
            leave_at_once=args.leave_at_once,
            rolling=args.rolling,
            pause_at_once=args.pause_at_once,
            stalls=args.stall,
            pauses=args.pause,
            partition=args.partition,
            partial_cut=args.partial_cut,
            config=config,
        )
        report = run_simulation(spec)
    except ValueError as exc:
        print(f"pyderecho simulate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_json()))
    else:
        print(
            f"seed {report.seed}: {report.members} members, {report.subgroups} subgroups, "
            f"{report.shards} shards; {report.messages} messages sent, {report.delivered} "
            f"deliveries in {report.sim_time_s * 1e3:.3f} ms simulated ({report.wall_s} s wall)"
        )
        print(
            f"views installed: {report.views_installed}; view changes took "
            f"{', '.join(f'{ms:.1f}' for ms in report.view_change_ms) or 'none'} ms; "
            f"stopped: {report.stopped or 'none'}"
        )
        for violation in report.violations:
            print(f"VIOLATION {violation}")
        print("no violations" if not report.violations else f"{len(report.violations)} violations")
    return 1 if report.violations else 0


def _check(args: argparse.Namespace) -> int:
    try:
        verdict = check_logs(args.logs)
    except LogError as exc:
        print(f"pyderecho check: {exc}", file=sys.stderr)
        return 2
    for violation in verdict.violations:
        print(violation)
    if verdict.reconstructed:
        print(
            f"note: {verdict.reconstructed} sends taken from deliveries "
            "(their senders have no log that ended cleanly)"
        )
    if verdict.violations:
        print(f"{len(verdict.violations)} violations")
        return 1
    print(f"no violations: {verdict.deliveries} deliveries at {verdict.members} members")
    return 0


def _status(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args)
    except SettingsError as exc:
        print(f"pyderecho status: {exc}", file=sys.stderr)
        return 2
    if settings.secret is None:
        print("pyderecho status: the group has no secret: no member serves status", file=sys.stderr)
        return 2
    failed = 0
    for contact in args.contact:
        try:
            answer = asyncio.run(
                query_status(contact, settings.group, settings.secret, args.timeout)
            )
        except (OSError, TimeoutError, ValueError, RemoteProtocolError) as exc:
            print(f"pyderecho status: {contact}: {exc or type(exc).__name__}", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps(answer) if args.json else format_status(answer))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        return _simulate(args)
    if args.command == "node":
        return run_node(args)
    if args.command == "check":
        return _check(args)
    if args.command == "status":
        return _status(args)
    if args.command == "bench":
        return bench.run(args)
    if args.command == "chaos":
        return main_chaos(args)
    return run_demo(transport=args.transport)


if __name__ == "__main__":
    sys.exit(main())
