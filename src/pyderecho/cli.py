"""The ``pyderecho`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pyderecho.core.config import CoreConfig
from pyderecho.core.layout import Mode
from pyderecho.demo import run_demo
from pyderecho.layouts import resolve_layout
from pyderecho.simulate import SimulationSpec, run_simulation


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
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
    simulate.add_argument("--members", type=_positive, required=True, help="group size")
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
    simulate.add_argument("--messages", type=_non_negative, default=1000)
    simulate.add_argument("--size", type=_positive, default=64, help="payload bytes")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--crash", type=_non_negative, default=0, help="members to crash")
    simulate.add_argument("--join", type=_non_negative, default=0, help="processes that join")
    simulate.add_argument("--leave", type=_non_negative, default=0, help="members that leave")
    simulate.add_argument(
        "--pause", type=_non_negative, default=0, help="members to freeze past the timeout"
    )
    simulate.add_argument(
        "--partition", action="store_true", help="split off a minority for a while, then heal"
    )
    simulate.add_argument("--window", type=_positive, default=defaults.window_size)
    simulate.add_argument("--block-size", type=_positive, default=defaults.block_size)
    simulate.add_argument("--json", action="store_true", help="print one JSON object")

    commands.add_parser(
        "demo",
        help="show a group at work: subgroups, shards, both modes",
        description="Run a small group and show subgroups, shards and both delivery modes.",
    )
    return parser


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
            pauses=args.pause,
            partition=args.partition,
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        return _simulate(args)
    return run_demo()


if __name__ == "__main__":
    sys.exit(main())
