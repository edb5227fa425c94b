"""Smoke tests of ``benchmarks/durable_baselines.py``: a one-second run of each baseline.

Each is skipped, with its reason, where its server is not installed
(``sudo bash benchmarks/setup_durable_baselines.sh``) or, for ZooKeeper, without ``kazoo``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import durable_baselines  # noqa: PLC0415 - from benchmarks/, on the path only here

    return durable_baselines


def _check(result: dict[str, float], data_root: Path) -> None:
    assert result["updates_per_s"] > 0
    assert result["updates"] > 0
    assert result["latency_updates"] == 5
    assert 0 < result["latency_ms_p50"] <= result["latency_ms_p99"]
    assert not math.isnan(result["loaded_latency_ms_p50"])
    # The cluster is stopped and its data directories are gone.
    assert os.listdir(data_root) == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed (setup script)")
def test_etcd_one_second(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    baselines = _module(monkeypatch)
    result = baselines.measure_etcd(
        6, 1.0, warmup_s=0.5, latency_updates=5, data_root=str(tmp_path)
    )
    _check(result, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("java") is None or not os.path.exists("/usr/share/java/zookeeper.jar"),
    reason="zookeeper not installed (setup script)",
)
@pytest.mark.skipif(importlib.util.find_spec("kazoo") is None, reason="kazoo not installed")
def test_zookeeper_one_second(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    baselines = _module(monkeypatch)
    result = baselines.measure_zookeeper(
        6, 1.0, warmup_s=0.5, latency_updates=5, data_root=str(tmp_path)
    )
    _check(result, tmp_path)
    assert result["sessions"] == 6


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("java") is None or not os.path.exists("/usr/share/java/zookeeper.jar"),
    reason="zookeeper not installed (setup script)",
)
@pytest.mark.skipif(importlib.util.find_spec("kazoo") is None, reason="kazoo not installed")
def test_zookeeper_takes_more_sessions_than_its_per_address_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """192 in flight, one session per slot: 64 sessions per member from one address, past
    ZooKeeper's default of 60 (kazoo timed out connecting the 61st)."""
    baselines = _module(monkeypatch)
    result = baselines.measure_zookeeper(
        192, 1.0, warmup_s=0.5, latency_updates=5, data_root=str(tmp_path)
    )
    _check(result, tmp_path)
    assert result["sessions"] == 192


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n"
        b'{"header":{}}',
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"hea\r\n8\r\nder":{}}\r\n0\r\n\r\n',
    ],
)
def test_http_reply_parsing(monkeypatch: pytest.MonkeyPatch, reply: bytes) -> None:
    """The hand-written HTTP/1.1 client reads a sized and a chunked reply alike (no server)."""
    baselines = _module(monkeypatch)

    async def parse() -> tuple[int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(reply + b"HTTP/1.1 next")
        result: tuple[int, bytes] = await baselines._HttpConnection._response(reader)
        assert await reader.read(8) == b"HTTP/1.1"  # nothing of the next reply consumed
        return result

    assert asyncio.run(parse()) == (200, b'{"header":{}}')
