"""Heartbeats in shared memory: an idle member wakes for its tick, not for every peer's beat.

Over the shared-memory transport a periodic heartbeat is a word in the link's segment that the
receiver reads at its own tick (:meth:`ShmTransport.beat`, :meth:`ShmTransport.beats_seen`),
not a frame with a doorbell. These tests check the word on its own, a group of real members
that stays quiet for many timeouts on beats read that way and exchanges no heartbeat frame,
and (planted) that members which never read the words suspect each other: the reading is what
keeps them. A paused member is still removed (tests/test_processes.py, on shm with no
traffic), and the simulator's sweeps run half their seeds with beats shown the same way.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
from collections.abc import Callable, Collection, Iterator
from typing import cast

import pytest

from pyderecho.core.events import Event, Suspected, ViewInstalled
from pyderecho.core.view import NodeId
from pyderecho.transport.base import (
    Frame,
    FrameHandler,
    QuietBeats,
    Transport,
)
from pyderecho.transport.shm import ShmTransport
from pyderecho.wire import Heartbeat, decode
from test_quiet_beats import run_quiet_group
from test_shm_transport import GROUP, SECRET, mapped_segments, pair, run
from wrapped_transport import WrappedTransport


@pytest.fixture
def directory() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="pyderecho-") as path:
        yield path
    gc.collect()
    assert mapped_segments() == [], "a segment is still mapped"


def test_a_beat_is_read_once_with_its_epoch_and_wakes_nobody(directory: str) -> None:
    async def scenario() -> None:
        async with pair(directory) as (transports, recorders):
            sender, receiver = transports
            assert isinstance(sender, QuietBeats)
            frames = len(recorders[1].frames[0])
            doorbells = sender.stats["doorbells"]
            assert receiver.beats_seen() == []
            assert sender.beat(1, 7, b"")
            assert receiver.beats_seen() == [(0, 7)]
            assert receiver.beats_seen() == [], "a beat is seen once"
            assert sender.beat(1, 7, b"") and sender.beat(1, 8, b"")
            assert receiver.beats_seen() == [(0, 8)], "the latest beat's epoch"
            await asyncio.sleep(0.05)
            assert len(recorders[1].frames[0]) == frames, "a beat is no frame"
            assert sender.stats["doorbells"] == doorbells, "nor a doorbell"
            assert not sender.beat(5, 7, b""), "no link to node 5: the caller sends a frame"
            assert (sender.stats["beats_written"], receiver.stats["beats_read"]) == (3, 2)

    run(scenario())


class CountingShm(WrappedTransport[ShmTransport]):
    """A member's shm transport that counts the heartbeat frames it receives; with
    ``read_beats`` false, it never reads the beats in memory (planted: the receiving half of the
    mechanism is gone)."""

    def __init__(self, node_id: NodeId, directory: str, *, read_beats: bool) -> None:
        super().__init__(ShmTransport(node_id, directory, group=GROUP, secret=SECRET))
        self.read_beats = read_beats
        self.heartbeat_frames = 0

    def taking(self, on_frame: FrameHandler) -> FrameHandler:
        def counting(src: NodeId, frame: memoryview) -> None:
            if isinstance(decode(frame), Heartbeat):
                self.heartbeat_frames += 1
            on_frame(src, frame)

        return counting

    def beat(self, peer: NodeId, epoch: int, frame: Frame) -> bool:
        return self.inner.beat(peer, epoch, frame)

    def beats_seen(self, expected: Collection[NodeId] | None) -> list[tuple[NodeId, int]]:
        return self.inner.beats_seen(expected) if self.read_beats else []


def quiet_group(directory: str, *, read_beats: bool) -> tuple[list[CountingShm], list[Event]]:
    """Three members over shm that send one message each, then nothing for ``QUIET_S``
    (tests/test_quiet_beats.py)."""

    async def scenario() -> tuple[list[CountingShm], list[Event]]:
        transports = [CountingShm(i, directory, read_beats=read_beats) for i in range(3)]
        addresses = {i: t.address for i, t in enumerate(transports)}

        def mark() -> Callable[[], None]:
            frames = [t.heartbeat_frames for t in transports]
            written = [t.stats["beats_written"] for t in transports]

            def end() -> None:
                for transport, before in zip(transports, frames, strict=True):
                    transport.heartbeat_frames -= before
                for transport, before in zip(transports, written, strict=True):
                    transport.stats["beats_written"] -= before

            return end

        shm = [cast(Transport, t) for t in transports]
        return transports, await run_quiet_group(shm, addresses, mark)

    return asyncio.run(scenario())


def test_a_quiet_group_keeps_its_view_on_beats_read_from_memory(directory: str) -> None:
    transports, events = quiet_group(directory, read_beats=True)
    changes = [
        e
        for e in events
        if isinstance(e, Suspected) or (isinstance(e, ViewInstalled) and e.view.epoch > 0)
    ]
    assert changes == [], changes
    # Each member beats to its two watchers every interval: QUIET_S / interval = 40 rounds.
    assert all(t.stats["beats_written"] >= 2 * 20 for t in transports), [
        t.stats for t in transports
    ]
    assert all(t.stats["beats_read"] >= 2 * 20 for t in transports)
    assert [t.heartbeat_frames for t in transports] == [0, 0, 0], "no beat went as a frame"


def test_members_that_never_read_the_beats_suspect_each_other(directory: str) -> None:
    """Planted: the beats are written but never read. Nothing else moves in a quiet group, so
    the members take each other for silent: the reading is what keeps the view."""
    _, events = quiet_group(directory, read_beats=False)
    assert [e for e in events if isinstance(e, Suspected)], events
