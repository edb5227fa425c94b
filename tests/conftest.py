"""Test-wide settings.

``PYDERECHO_TEST_EVENT_LOOP=uvloop`` runs every ``asyncio.run`` of the tests on uvloop's event
loop, the one ``pyderecho node`` takes whenever uvloop is installed (``make test-fast``): the
transports lean on event-loop behaviour (when reading starts, how TLS is layered) where the two
loops differ.

``PYDERECHO_TEST_CORE=compiled`` says the run must test a core compiled by mypyc (``make
test-fast`` installs one), so that a build that quietly fell back to the Python source fails
the run instead of passing it. Tests marked ``patches_compiled`` patch or subclass a class the
fast build compiles (planted bugs in the core, a transport that records its writes), which
compiled classes do not allow; they skip there and run on the Python source (``make test``).

Each pytest-xdist worker draws its members' ports (``free_ports``) from a slice of the range of
its own, set in ``PYDERECHO_PORTS`` unless the run sets that itself: a port is free again from a
member's death until its restart, and a member of a test on another worker once took it there
(the restarted member's peers dialed it and a stranger answered).
"""

from __future__ import annotations

import asyncio
import importlib
import os

import pytest

from pyderecho.cli.demo import PORTS_VARIABLE, port_range
from pyderecho.core import COMPILED

EVENT_LOOP = os.environ.get("PYDERECHO_TEST_EVENT_LOOP", "asyncio")

if EVENT_LOOP == "uvloop":
    asyncio.set_event_loop_policy(importlib.import_module("uvloop").EventLoopPolicy())
elif EVENT_LOOP != "asyncio":
    raise RuntimeError(f"PYDERECHO_TEST_EVENT_LOOP={EVENT_LOOP!r}: use asyncio or uvloop")

CORE = os.environ.get("PYDERECHO_TEST_CORE", "any")
if CORE not in ("any", "compiled", "python"):
    raise RuntimeError(f"PYDERECHO_TEST_CORE={CORE!r}: use any, compiled or python")
if CORE != "any" and (CORE == "compiled") != COMPILED:
    raise RuntimeError(
        f"PYDERECHO_TEST_CORE={CORE} but the core imported is "
        f"{'compiled' if COMPILED else 'Python source'}"
    )


def worker_ports(worker: str, workers: int, low: int, high: int) -> str:
    """The slice of ``low-high`` that the xdist worker ``gwN`` of ``workers`` draws from."""
    index = int(worker.removeprefix("gw"))
    assert 0 <= index < workers, (worker, workers)
    share = (high - low + 1) // workers
    return f"{low + index * share}-{low + (index + 1) * share - 1}"


if "PYTEST_XDIST_WORKER" in os.environ and PORTS_VARIABLE not in os.environ:
    os.environ[PORTS_VARIABLE] = worker_ports(
        os.environ["PYTEST_XDIST_WORKER"],
        int(os.environ["PYTEST_XDIST_WORKER_COUNT"]),
        *port_range(),
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not COMPILED:
        return
    skip = pytest.mark.skip(
        reason="patches or subclasses a compiled class, which the fast build does not allow: "
        "runs on the Python source (make test)"
    )
    for item in items:
        if item.get_closest_marker("patches_compiled") is not None:
            item.add_marker(skip)
