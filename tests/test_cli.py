"""The ``pyderecho`` command: simulate and demo."""

from __future__ import annotations

import json

import pytest

from pyderecho.cli.main import main


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    status = main(["simulate", *args, "--json"])
    return status, json.loads(capsys.readouterr().out)


def test_simulate_prints_the_promised_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = run_json(
        capsys,
        "--members",
        "12",
        "--layout",
        "overlap-example",
        "--messages",
        "300",
        "--seed",
        "4",
    )
    assert status == 0
    for key in ("seed", "members", "shards", "delivered", "violations", "sim_time_s", "wall_s"):
        assert key in report
    assert report["seed"] == 4
    assert report["members"] == 12
    assert report["violations"] == []
    # overlap-example: "Group" of all 12 and "Trio" of 3; each message reaches its whole shard.
    assert report["shards"] == 2
    assert isinstance(report["delivered"], int) and 3 * 300 <= report["delivered"] <= 12 * 300


def test_simulate_is_reproducible(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--members", "8", "--layout", "shards-of-3", "--messages", "200", "--pause", "2")
    _, first = run_json(capsys, *args, "--seed", "9")
    _, again = run_json(capsys, *args, "--seed", "9")
    _, other = run_json(capsys, *args, "--seed", "10")
    assert first["trace"] == again["trace"]
    assert first["delivered"] == again["delivered"]
    assert other["trace"] != first["trace"]


def test_seed_example_at_full_size(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = run_json(
        capsys,
        "--members",
        "1025",
        "--layout",
        "seed-example",
        "--mode",
        "ordered",
        "--messages",
        "20000",
    )
    assert status == 0
    assert report["violations"] == []
    assert report["shards"] == 502
    # Every message reaches each member of its shard: 2 in the cache, 3 or 22 elsewhere.
    assert isinstance(report["delivered"], int) and report["delivered"] >= 2 * 20000


def test_bad_arguments_get_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--members", "10", "--layout", "seed-example"]) == 2
    assert "needs" in capsys.readouterr().err
    assert main(["simulate", "--members", "4", "--layout", "no-such-layout"]) == 2
    assert "no-such-layout" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["simulate", "--members", "0"])


def test_simulate_with_faults_reports_views(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = run_json(
        capsys,
        "--members",
        "9",
        "--layout",
        "shards-of-3",
        "--messages",
        "300",
        "--crash",
        "1",
        "--join",
        "1",
        "--leave",
        "1",
        "--pause",
        "1",
        "--seed",
        "2",
    )
    assert status == 0, report["violations"]
    assert isinstance(report["views_installed"], int) and report["views_installed"] >= 1
    changes = report["view_change_ms"]
    assert isinstance(changes, list) and len(changes) == report["views_installed"]
    stopped = report["stopped"]
    assert isinstance(stopped, dict) and "left the group" in stopped.values()


def test_simulate_refuses_faults_that_leave_no_majority(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--members", "4", "--crash", "2"]) == 2
    assert "majority" in capsys.readouterr().err


@pytest.mark.slow
def test_seed_example_with_crashes_and_joins(capsys: pytest.CaptureFixture[str]) -> None:
    status, report = run_json(
        capsys,
        "--members",
        "1025",
        "--layout",
        "seed-example",
        "--mode",
        "ordered",
        "--messages",
        "20000",
        "--crash",
        "5",
        "--join",
        "3",
        "--seed",
        "11",
    )
    assert status == 0
    assert report["violations"] == []
    # Followers agree with a crash a quarter timeout after its watchers (they probe it first),
    # so this seed's five crashes and three joins fold into one change.
    assert isinstance(report["views_installed"], int) and report["views_installed"] >= 1
    changes = report["view_change_ms"]
    assert isinstance(changes, list) and len(changes) == report["views_installed"]
