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
"""

from __future__ import annotations

import asyncio
import importlib
import os

import pytest

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
