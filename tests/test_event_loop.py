"""The loop pyderecho starts when it owns the loop: uvloop's where installed, else asyncio's.

Run in both virtual environments (``make test`` without uvloop, ``make test-uvloop`` with it),
so each branch below is checked by one of them.
"""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from pyderecho.cli.bench import BenchSpec, run_bench
from pyderecho.runtime.blocking import _LoopThread
from pyderecho.runtime.loop import loop_factory, loop_in_use

UVLOOP = importlib.util.find_spec("uvloop") is not None


def _module_of(kind: str) -> str:
    loop = loop_factory(kind)()  # type: ignore[arg-type]
    try:
        return type(loop).__module__
    finally:
        loop.close()


def test_auto_takes_uvloop_exactly_where_it_is_installed() -> None:
    module = _module_of("auto")
    if UVLOOP:
        assert module.startswith("uvloop") and loop_in_use() == "uvloop"
    else:
        assert module.startswith("asyncio") and loop_in_use() == "asyncio"


def test_asyncio_is_always_asyncio() -> None:
    assert _module_of("asyncio").startswith("asyncio")
    assert loop_in_use("asyncio") == "asyncio"


def test_asking_for_uvloop_where_it_is_missing_says_how_to_get_it() -> None:
    if UVLOOP:
        assert _module_of("uvloop").startswith("uvloop")
    else:
        with pytest.raises(RuntimeError, match=r"pyderecho\[fast\]"):
            loop_factory("uvloop")


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="trio"):
        loop_factory("trio")  # type: ignore[arg-type]


def test_the_blocking_faces_run_on_the_chosen_loop() -> None:
    thread = _LoopThread("loop-test")
    thread.start()
    try:

        async def which() -> str:
            return type(asyncio.get_running_loop()).__module__

        assert thread.call(which(), timeout=10).split(".")[0] == loop_in_use()
    finally:
        thread.stop(timeout=10)


def test_a_bench_member_reports_a_large_result_on_the_chosen_loop() -> None:
    # uvloop makes a descriptor it watches non-blocking: the worker's pipe to the parent, which
    # then refused a result larger than its buffer (EAGAIN) and the run failed.
    report = run_bench(BenchSpec(nodes=2, count=60_000, size=10, transport="shm"))
    assert report["event_loop"] == loop_in_use()
    assert report["delivered_per_member"] == 2 * 60_000
    assert report["clean_exit"] is True
