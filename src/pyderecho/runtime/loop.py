"""The event loop pyderecho starts when it runs a member's loop itself.

``pyderecho node``, :class:`~pyderecho.BlockingGroup` (its loop thread) and the benchmark's
member processes create their own loop; an application that awaits :class:`~pyderecho.Group`
brings its own. Where pyderecho chooses, it takes uvloop's loop when uvloop is installed (the
``fast`` extra): a member spends much of its time per message in the loop's turns and system
calls, and uvloop's are cheaper (``pyderecho bench --workload objects``, interleaved pairs on a
2-core machine: about 5% less CPU per ordered call and lone latency; within the noise for
Paxos). Both loops pass the same transport and process tests (``make test-uvloop``).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Literal

LoopKind = Literal["auto", "asyncio", "uvloop"]
LOOP_KINDS: tuple[LoopKind, ...] = ("auto", "asyncio", "uvloop")


def loop_factory(kind: LoopKind = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes a loop of ``kind``: ``auto`` is uvloop's where installed, else the one the
    event loop policy gives; ``asyncio`` is asyncio's own selector loop, whatever the policy;
    ``uvloop`` raises ``RuntimeError`` where uvloop is not installed."""
    if kind not in LOOP_KINDS:
        raise ValueError(f"event loop {kind!r}: use one of {', '.join(LOOP_KINDS)}")
    if kind == "asyncio":
        return asyncio.SelectorEventLoop
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if kind == "uvloop":
            raise RuntimeError(
                "the uvloop event loop was asked for but uvloop is not installed "
                "(pip install 'pyderecho[fast]')"
            ) from None
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_in_use(kind: LoopKind = "auto") -> str:
    """``uvloop`` or ``asyncio``: the loop :func:`loop_factory` gives for ``kind``, for
    reports."""
    factory = loop_factory(kind)
    return "asyncio" if factory in (asyncio.SelectorEventLoop, asyncio.new_event_loop) else "uvloop"
