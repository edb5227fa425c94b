"""``pyderecho chaos``: its schedule is a function of the seed, and a run on this machine passes.

The run itself starts real processes (slow suite); the checks it applies (the history checker,
the availability of the group) have their own planted-bug tests.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pyderecho.cli.chaos import FAULTS, schedule


def test_a_runs_faults_are_a_function_of_its_seed() -> None:
    assert schedule(7, 6) == schedule(7, 6)
    drawn = {fault for seed in range(50) for fault in schedule(seed, 4)}
    assert drawn == set(FAULTS)
    assert len({tuple(schedule(seed, 4)) for seed in range(50)}) > 40


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_chaos_runs_pass_and_report_as_json(transport: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pyderecho.cli", "chaos", "--members", "4", "--runs", "2",
         "--seed", "5", "--faults", "3", "--transport", transport, "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    runs, summary = lines[:-1], lines[-1]
    assert [run["faults"] for run in runs] == [schedule(5, 3), schedule(6, 3)]
    assert all(run["ok"] and run["deliveries"] > 0 for run in runs)
    assert summary["runs"] == summary["safe"] == summary["available"] == 2
