"""Test-wide settings.

``PYDERECHO_TEST_EVENT_LOOP=uvloop`` runs every ``asyncio.run`` of the tests on uvloop's event
loop, the one ``pyderecho node`` takes whenever uvloop is installed (``make test-uvloop``): the
transports lean on event-loop behaviour (when reading starts, how TLS is layered) where the two
loops differ.
"""

from __future__ import annotations

import asyncio
import importlib
import os

EVENT_LOOP = os.environ.get("PYDERECHO_TEST_EVENT_LOOP", "asyncio")

if EVENT_LOOP == "uvloop":
    asyncio.set_event_loop_policy(importlib.import_module("uvloop").EventLoopPolicy())
elif EVENT_LOOP != "asyncio":
    raise RuntimeError(f"PYDERECHO_TEST_EVENT_LOOP={EVENT_LOOP!r}: use asyncio or uvloop")
