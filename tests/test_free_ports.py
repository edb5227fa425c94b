"""The ports the process tests and the demo put members on (``free_ports``, ``PYDERECHO_PORTS``).

A member killed and restarted on its port leaves that port free in between; a test on another
xdist worker once drew it there, and the restarted member's peers dialed a stranger. Each worker
now draws from its own slice of the range, and these cases check the range is honoured, that the
slices never overlap, and that a bad range is refused instead of quietly widened.
"""

from __future__ import annotations

import itertools
import os
import socket

import pytest

from conftest import worker_ports
from pyderecho.cli.demo import PORTS_VARIABLE, free_ports, port_range


def test_ports_are_drawn_from_the_range_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PORTS_VARIABLE, "23000-23009")
    assert port_range() == (23000, 23009)
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(23000 <= port <= 23009 for port in ports), ports


def test_a_range_without_enough_free_ports_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        taken = holder.getsockname()[1]
        monkeypatch.setenv(PORTS_VARIABLE, f"{taken}-{taken}")
        with pytest.raises(OSError, match="fewer than 1 ports free"):
            free_ports(1)


@pytest.mark.parametrize(
    "text", ["", "23000", "23000-", "a-b", "23009-23000", "80-90", "2000-70000"]
)
def test_a_bad_range_is_refused_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv(PORTS_VARIABLE, text)
    with pytest.raises(ValueError, match=PORTS_VARIABLE):
        port_range()


def test_without_the_variable_ports_stay_below_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PORTS_VARIABLE, raising=False)
    low, high = port_range()
    with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
        ephemeral_low = int(ranges.read().split()[0])
    assert high == ephemeral_low - 1
    assert all(low <= port <= high for port in free_ports(20))


@pytest.mark.parametrize("workers", [1, 2, 3, 16])
def test_the_workers_slices_are_disjoint_and_inside_the_range(workers: int) -> None:
    slices = []
    for index in range(workers):
        low_text, _, high_text = worker_ports(f"gw{index}", workers, 10_000, 32_767).partition("-")
        slices.append((int(low_text), int(high_text)))
    assert slices[0][0] == 10_000 and slices[-1][1] <= 32_767
    for (_, high), (next_low, _) in itertools.pairwise(slices):
        assert high < next_low
    assert all(low <= high for low, high in slices)


@pytest.mark.skipif("PYTEST_XDIST_WORKER" not in os.environ, reason="runs on an xdist worker")
def test_this_worker_draws_from_its_own_slice() -> None:
    assert os.environ[PORTS_VARIABLE] == worker_ports(
        os.environ["PYTEST_XDIST_WORKER"],
        int(os.environ["PYTEST_XDIST_WORKER_COUNT"]),
        *port_range_without_the_variable(),
    )


def port_range_without_the_variable() -> tuple[int, int]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(PORTS_VARIABLE)
        return port_range()
