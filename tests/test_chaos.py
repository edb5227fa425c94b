"""``pyderecho chaos``: its schedule is a function of the seed, and a run on this machine passes.

The run itself starts real processes (slow suite); the checks it applies (the history checker,
the availability of the group) have their own planted-bug tests.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pyderecho.cli.chaos import CUTS, FAULTS, schedule
from pyderecho.testing.netns import NetworkLab, unavailable


def test_a_runs_faults_are_a_function_of_its_seed() -> None:
    assert schedule(7, 6) == schedule(7, 6)
    drawn = {fault for seed in range(50) for fault in schedule(seed, 4)}
    assert drawn == set(FAULTS)
    assert len({tuple(schedule(seed, 4)) for seed in range(50)}) > 40
    with_cuts = {fault for seed in range(50) for fault in schedule(seed, 4, cuts=True)}
    assert with_cuts == set(FAULTS + CUTS)


@pytest.mark.slow
@pytest.mark.parametrize(("transport", "busy"), [("tcp", "1"), ("shm", "0")])
def test_chaos_runs_pass_and_report_as_json(transport: str, busy: str) -> None:
    """Over tcp with a process spinning beside the members: a loaded machine."""
    done = subprocess.run(
        [sys.executable, "-m", "pyderecho.cli", "chaos", "--members", "4", "--runs", "2",
         "--seed", "5", "--faults", "3", "--transport", transport, "--busy", busy, "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    runs, summary = lines[:-1], lines[-1]
    assert [run["faults"] for run in runs] == [schedule(5, 3), schedule(6, 3)]
    assert all(run["ok"] and run["deliveries"] > 0 for run in runs)
    assert all(run["kept"] == "" for run in runs), "only a failed run's files are kept"
    assert summary["runs"] == summary["safe"] == summary["available"] == 2
    assert summary["busy_processes"] == int(busy)


@pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "")
def test_a_lab_cut_drops_packets_between_two_members_only() -> None:
    """Real namespaces, real iptables: a cut link carries nothing; the others still do."""
    probe = "import socket,sys; socket.create_connection((sys.argv[1], 7000), timeout=1).close()"
    serve = "import socket,time; s=socket.create_server(('', 7000)); time.sleep(30)"
    lab = NetworkLab()
    try:
        server = subprocess.Popen([*lab.prefix(0), sys.executable, "-c", serve])
        try:

            def reaches(member: int) -> bool:
                done = subprocess.run(
                    [*lab.prefix(member), sys.executable, "-c", probe, lab.host(0)],
                    capture_output=True, timeout=30, check=False,
                )  # fmt: skip
                return done.returncode == 0

            for _ in range(50):  # the server may still be starting
                if reaches(1):
                    break
            assert reaches(1) and reaches(2)
            lab.cut(0, 1)
            assert not reaches(1)
            assert reaches(2)
            lab.heal()
            assert reaches(1)
        finally:
            server.kill()
            server.wait()
    finally:
        lab.close()


@pytest.mark.slow
@pytest.mark.skipif(bool(unavailable()), reason=unavailable() or "")
def test_partitions_and_partial_cuts_of_real_processes() -> None:
    """Seed 202 draws a partition, then a partial cut (two halves with the witness between
    them): the cut-off members are removed and come back; every log checks; the witness
    keeps delivering."""
    done = subprocess.run(
        [sys.executable, "-m", "pyderecho.cli", "chaos", "--members", "5", "--runs", "1",
         "--seed", "202", "--faults", "2", "--netns", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    run = json.loads(done.stdout.splitlines()[0])
    assert run["faults"] == ["partition", "partial-cut"]
    assert len(run["cuts"]) == 2 and run["removed_by_cuts"], run
