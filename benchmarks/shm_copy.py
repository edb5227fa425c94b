"""Raw shared-memory copy bandwidth next to the shm transport's 1 MiB frame throughput.

The raw figure is the ceiling: ``memcpy`` of 1 MiB blocks from private memory into a shared
segment (a memfd, as the transport uses) the size of the transport's ring, cycling through it,
which is all the transport must do per frame (the sender copies each frame into the ring once;
the receiver reads it in place). Same size, so both copies meet the same caches. The transport
figure is 1 MiB frames sent from one process to another through :class:`ShmTransport`, timed at
the receiver from the sender's start signal to the last frame, after one untimed run that
covers the link's set-up; the receiver's handler only counts the frames, as the copy does not
read its destination either. The ratio is what the transport's own work (Python per frame,
doorbells, flow-control reports, the hand-offs between two processes) leaves of the copy's
bandwidth on this machine. Each figure is the median of ``--repeat`` runs. Prints one JSON object.

    .venv-fast/bin/python benchmarks/shm_copy.py [--frames 2048] [--repeat 7] [--ring-mib 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import multiprocessing
import os
import statistics
import tempfile
import time
from multiprocessing.connection import Connection

from pyderecho.core.view import NodeId
from pyderecho.transport.shm import ShmTransport

MiB = 1 << 20
GROUP = "bench"
SECRET = b"benchmark secret, not for production"


def raw_copy_gib_per_s(blocks: int, repeat: int, segment_mib: int) -> float:
    fd = os.memfd_create("pyderecho-bench")
    try:
        os.ftruncate(fd, segment_mib * MiB)
        segment = mmap.mmap(fd, segment_mib * MiB)
    finally:
        os.close(fd)
    target = memoryview(segment)
    block = os.urandom(MiB)
    for index in range(segment_mib):  # fault every page in before timing
        target[index * MiB : (index + 1) * MiB] = block
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        for index in range(blocks):
            offset = (index % segment_mib) * MiB
            target[offset : offset + MiB] = block
        rates.append(blocks / (time.perf_counter() - started) / 1024)
    target.release()
    segment.close()
    return statistics.median(rates)


def sender(directory: str, frames: int, ring_mib: int, conn: Connection) -> None:
    """The sending process: on each command from the receiver, ``frames`` frames of 1 MiB."""
    asyncio.run(_send(directory, frames, ring_mib, conn))


async def _send(directory: str, frames: int, ring_mib: int, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    transport = ShmTransport(
        1,
        directory,
        group=GROUP,
        secret=SECRET,
        ring_size=ring_mib * MiB,
        max_send_queue_bytes=2 * frames * MiB,
    )
    await transport.start(lambda peer, frame: None, lambda peer, reason: None)
    transport.connect(0, directory)
    block = os.urandom(MiB)
    commands = asyncio.Queue[str]()
    loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv()))
    while await commands.get() == "go":
        for _ in range(frames):
            transport.send(0, block)
    loop.remove_reader(conn.fileno())
    await transport.close()


async def transport_gib_per_s(frames: int, repeat: int, ring_mib: int) -> float:
    with tempfile.TemporaryDirectory(prefix="pyderecho-bench-") as directory:
        context = multiprocessing.get_context("spawn")
        conn, theirs = context.Pipe()
        process = context.Process(target=sender, args=(directory, frames, ring_mib, theirs))
        process.start()
        received = 0
        done = asyncio.Event()

        def on_frame(peer: NodeId, frame: memoryview) -> None:
            nonlocal received
            received += 1
            if received == frames:
                done.set()

        transport = ShmTransport(0, directory, group=GROUP, secret=SECRET)
        await transport.start(on_frame, lambda peer, reason: None)
        rates = []
        for _ in range(repeat + 1):
            received = 0
            done.clear()
            started = time.perf_counter()
            conn.send("go")
            await done.wait()
            rates.append(frames / (time.perf_counter() - started) / 1024)
        del rates[0]  # the warm-up: it includes starting the sender and opening the link
        conn.send("stop")
        process.join(10)
        await transport.close()
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=2048, help="1 MiB frames per run")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--ring-mib", type=int, default=4, help="the transport's ring size")
    args = parser.parse_args()
    raw = raw_copy_gib_per_s(args.frames, args.repeat, args.ring_mib)
    sent = asyncio.run(transport_gib_per_s(args.frames, args.repeat, args.ring_mib))
    print(
        json.dumps(
            {
                "benchmark": "shm_copy",
                "block_bytes": MiB,
                "frames_per_run": args.frames,
                "repeat": args.repeat,
                "ring_bytes": args.ring_mib * MiB,
                "raw_copy_gib_per_s": round(raw, 3),
                "transport_gib_per_s": round(sent, 3),
                "transport_frames_per_s": round(sent * 1024),
                "ratio": round(sent / raw, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
