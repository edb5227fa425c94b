"""What this machine gives Python without any protocol: the baselines ``pyderecho bench`` is
judged against.

Each TCP figure is one sender process and one receiver process on the loopback, the frames
length-prefixed as the TCP transport frames them, timed at the receiver as the bench times a
member: from the first whole frame to the last, ``(frames - 1) / span``.

- ``tcp_100b_socket``: 100-byte frames over blocking sockets. The sender packs each frame
  (header and payload) into a batch of about 256 KiB and hands every batch to ``sendall``; the
  receiver reads 1 MiB at a time and walks the length prefixes, one Python step per frame. The
  least any Python program spends per small message on TCP.
- ``tcp_100b_asyncio``: the same frames over asyncio streams, written with ``writelines`` per
  batch and read with ``readexactly`` per header and payload, as the TCP transport does: the
  ceiling of that design with no protocol on top.
- ``tcp_1mib_socket``: 1 MiB frames over blocking sockets, ``sendall`` of one prepared frame
  again and again, read with ``recv_into`` into one buffer: raw loopback bandwidth.
- ``tcp_1mib_asyncio``: the same 1 MiB frames over asyncio streams (``writelines``, then
  ``readexactly``), as the TCP transport moves them: what the stream layer's own copies cost.
- ``tcp_100b_buffered`` and ``tcp_1mib_buffered``: the asyncio sender, and a receiver that
  reads in place (``asyncio.BufferedProtocol``: ``recv_into`` one reusable buffer, each frame
  a memoryview slice of it): what an asyncio TCP transport could reach without the stream
  reader's copies.
- ``tcp_1mib_relay3``: three processes in a ring over blocking sockets, each sending 1 MiB
  frames of its own to the next and forwarding what it receives until all three have it: the
  same bytes on the same links as three ordered senders of 1 MiB messages in one shard (each
  message crosses two links, each process receives and sends two thirds of what it
  delivers), with no protocol. Timed as the bench times a member (delivered bytes, own frames
  included, first to last), median over the three: the ceiling of ``ordered_1mib_tcp``.
- ``shm_copy``: ``memcpy`` of 1 MiB blocks into a shared segment, from ``shm_copy.py``: what
  the shared-memory transport must do per byte at least (the sender copies each frame into the
  ring once).
- Round trips, one 100-byte message in flight, the median in microseconds (``rtt_us``): what a
  protocol step that needs an answer pays at least. ``tcp_100b_rtt_socket``: two processes,
  blocking sockets with ``TCP_NODELAY``; ``tcp_100b_rtt_asyncio``: both ends on asyncio's loop
  (protocols, not streams), as members run; ``shm_100b_rtt``: the message written into shared
  memory and announced by an 8-byte doorbell on a unix socket, as the shared-memory transport
  does, blocking; ``shm_100b_rtt_asyncio``: the same with both ends woken by their loops.
- ``tcp_100b_paced_relay3``: light load's CPU floor, in microseconds of CPU per message per
  process (``cpu_us_per_message``, the median of three): three asyncio processes on the
  loopback, one sending a 100-byte message to the other two 1,000 times a second, each of
  those answering every message with a 26-byte frame to both others (its sender first). The
  frames an ordered message costs in a shard of three at light load (one hop out, one round of
  rows), with no protocol: the floor of ``paced_100b_tcp``'s CPU per delivery. On the
  standard asyncio loop, as the other asyncio baselines, and, when uvloop is installed, on
  uvloop too (``tcp_100b_paced_relay3_uvloop``), as members then run.
- ``tcp_100b_lone_relay3``: light load's latency floor, in microseconds (``latency_us``, the
  median): the same three processes and frames with one message in flight, timed at the sender
  from writing a message to both others until both answers are in (the next message leaves in
  the loop turn after, as the bench's sender sends its next after its own delivery): the
  floor of ``lone_100b_tcp``'s latency, where the target's round trip between two processes
  has one hop back and no third process on the two cores. On asyncio's loop, and on uvloop
  (``tcp_100b_lone_relay3_uvloop``) where installed.

Not in the JSON, for ``scale.py``: ``idle_heartbeats(members, peers, interval, seconds,
event_loop)``, the CPU of ``members`` processes doing nothing but what an idle group must: each
on the given loop (the one members run on), writing a small frame to ``peers`` others over TCP
at each multiple of ``interval`` (the grid members beat on) and reading theirs. The floor an
idle group of that size and heartbeat period stands on.

Prints one JSON object; every figure is the median of ``--repeat`` runs.

    .venv-fast/bin/python benchmarks/raw_baselines.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import mmap
import multiprocessing
import queue
import socket
import statistics
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shm_copy import raw_copy_gib_per_s

from pyderecho.cli.demo import free_ports
from pyderecho.core.membership import next_multiple
from pyderecho.runtime.loop import LoopKind, loop_factory

MiB = 1 << 20
HEADER = struct.Struct(">I")
"""The length prefix of :mod:`pyderecho.transport.framing`."""
BATCH_BYTES = 256 * 1024
"""As the TCP transport batches frames into one write."""
TIMEOUT_S = 60.0

Sender = Callable[[int, int, int], None]
"""A sender process's entry: ``(port, frames, size)``."""


# -- senders (each runs in its own process) ---------------------------------------------------


def _socket_sender(port: int, frames: int, size: int) -> None:
    payload = bytes(size)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        if size >= BATCH_BYTES:
            frame = HEADER.pack(size) + payload
            for _ in range(frames):
                sock.sendall(frame)
            return
        per_batch = max(1, BATCH_BYTES // (size + HEADER.size))
        sent = 0
        while sent < frames:
            parts: list[bytes] = []
            for _ in range(min(per_batch, frames - sent)):
                parts.append(HEADER.pack(len(payload)))
                parts.append(payload)
            sock.sendall(b"".join(parts))
            sent += len(parts) // 2


def _asyncio_sender(port: int, frames: int, size: int) -> None:
    asyncio.run(_asyncio_send(port, frames, size))


async def _asyncio_send(port: int, frames: int, size: int) -> None:
    payload = bytes(size)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    per_batch = max(1, BATCH_BYTES // (size + HEADER.size))
    sent = 0
    while sent < frames:
        parts: list[bytes] = []
        for _ in range(min(per_batch, frames - sent)):
            parts.append(HEADER.pack(len(payload)))
            parts.append(payload)
        writer.writelines(parts)
        await writer.drain()
        sent += len(parts) // 2
    writer.close()
    await writer.wait_closed()


def _run_sender(
    target: Sender, frames: int, size: int, receive: Callable[[socket.socket], float]
) -> float:
    """Listen, start ``target`` in a fresh process to send to us, return ``receive`` of the
    accepted connection."""
    context = multiprocessing.get_context("spawn")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        process = context.Process(target=target, args=(port, frames, size), daemon=True)
        process.start()
        try:
            server.settimeout(TIMEOUT_S)
            conn, _ = server.accept()
            with conn:
                conn.settimeout(TIMEOUT_S)
                return receive(conn)
        finally:
            process.join(TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()


# -- receivers --------------------------------------------------------------------------------


def _receive_small(sock: socket.socket, frames: int) -> float:
    """Walk the length prefixes of ``frames`` frames; frames per second from the first read
    that completes a frame to the last."""
    buffer = bytearray(MiB)
    view = memoryview(buffer)
    unpack = HEADER.unpack_from
    have = start = got = counted = 0
    first = last = 0.0
    while got < frames:
        read = sock.recv_into(view[have:])
        if not read:
            raise RuntimeError(f"the sender stopped after {got} of {frames} frames")
        have += read
        while have - start >= HEADER.size:
            (length,) = unpack(buffer, start)
            end = start + HEADER.size + length
            if end > have:
                break
            got += 1
            start = end
        if got:
            last = time.perf_counter()
            if not first:
                # Frames of the first read count as arriving together: time from there.
                first, counted = last, got
        buffer[: have - start] = buffer[start:have]
        have -= start
        start = 0
    view.release()
    return (frames - counted) / (last - first)


def _receive_large(sock: socket.socket, frames: int, size: int) -> float:
    """Read ``frames`` frames of ``size`` bytes into one buffer; bytes per second."""
    header = bytearray(HEADER.size)
    body = bytearray(size)
    first = last = 0.0
    for _ in range(frames):
        _read_exactly(sock, memoryview(header))
        _read_exactly(sock, memoryview(body))
        last = time.perf_counter()
        if not first:
            first = last
    return (frames - 1) * size / (last - first)


def _read_exactly(sock: socket.socket, into: memoryview) -> None:
    while into.nbytes:
        read = sock.recv_into(into)
        if not read:
            raise RuntimeError("the sender stopped early")
        into = into[read:]


async def _timed_from_sender(
    server: asyncio.Server, done: asyncio.Future[float], frames: int, size: int
) -> float:
    """Start the sending process against ``server`` and wait for the receiver's rate."""
    port = server.sockets[0].getsockname()[1]
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_asyncio_sender, args=(port, frames, size), daemon=True)
    process.start()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            return await done
    finally:
        process.join(TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()


async def _receive_asyncio(frames: int, size: int) -> float:
    """Serve one connection, reading frames as the TCP transport does."""
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = last = 0.0
        for _ in range(frames):
            (length,) = HEADER.unpack(await reader.readexactly(HEADER.size))
            await reader.readexactly(length)
            last = time.perf_counter()
            if not first:
                first = last
        writer.close()
        done.set_result((frames - 1) / (last - first))

    server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=MiB)
    async with server:
        return await _timed_from_sender(server, done, frames, size)


class _FrameProtocol(asyncio.BufferedProtocol):
    """Frames read in place: the kernel copies into one reusable buffer (``recv_into``), and
    each whole frame is a slice of it, as a memoryview. What a stream reader copies three times
    (into its buffer, out of it, into ``bytes``), this never copies."""

    def __init__(self, frames: int, done: asyncio.Future[float]) -> None:
        self.frames = frames
        self.done = done
        self.buffer = bytearray(4 * MiB)
        self.have = self.start = self.got = 0
        self.first = self.last = 0.0

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.start:  # move the partial frame to the front, then fill behind it
            rest = self.have - self.start
            self.buffer[:rest] = self.buffer[self.start : self.have]
            self.have, self.start = rest, 0
        if self.have >= HEADER.size:
            (length,) = HEADER.unpack_from(self.buffer)
            if HEADER.size + length > len(self.buffer):
                self.buffer.extend(bytes(HEADER.size + length - len(self.buffer)))
        return memoryview(self.buffer)[self.have :]

    def buffer_updated(self, nbytes: int) -> None:
        self.have += nbytes
        buffer, start, have = self.buffer, self.start, self.have
        while have - start >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + length
            if end > have:
                break
            with memoryview(buffer)[start + HEADER.size : end]:
                pass  # here a transport would hand the frame to on_frame
            self.got += 1
            self.last = time.perf_counter()
            if not self.first:
                self.first = self.last
            start = end
        self.start = start
        if self.got >= self.frames and not self.done.done():
            self.done.set_result((self.got - 1) / (self.last - self.first))


async def _receive_buffered(frames: int, size: int) -> float:
    """Serve one connection with :class:`_FrameProtocol`."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    server = await loop.create_server(lambda: _FrameProtocol(frames, done), "127.0.0.1", 0)
    async with server:
        return await _timed_from_sender(server, done, frames, size)


# -- three processes relaying, as the protocol's large messages travel ------------------------


@dataclass(frozen=True)
class _Ring:
    """What every process of the relay baseline shares: the shape of the run, a dictionary of
    listening ports, a barrier to dial after all listen, and a queue for the results."""

    members: int
    frames: int
    size: int
    ports: Any
    ready: Any
    rates: Any


def _relay_member(rank: int, ring: _Ring) -> None:
    """One of ``members`` processes in a ring: sends ``frames`` frames of its own to its
    successor and forwards each frame from its predecessor until every process has it, as the
    relay chain of a shard moves a large message. Puts its delivered bytes per second."""
    members, frames, size = ring.members, ring.frames, ring.size
    with socket.create_server(("127.0.0.1", 0)) as server:
        ring.ports[rank] = server.getsockname()[1]
        ring.ready.wait(TIMEOUT_S)
        out = socket.create_connection(("127.0.0.1", ring.ports[(rank + 1) % members]))
        server.settimeout(TIMEOUT_S)
        inbound, _ = server.accept()
    relay: queue.SimpleQueue[tuple[bytearray, bytearray] | None] = queue.SimpleQueue()
    times: list[float] = []

    def receive() -> None:
        # A fresh buffer per frame, so a frame can wait in the relay queue without a copy.
        for _ in range((members - 1) * frames):
            header = bytearray(HEADER.size)
            _read_exactly(inbound, memoryview(header))
            frame = bytearray(HEADER.unpack(header)[0])
            _read_exactly(inbound, memoryview(frame))
            times.append(time.perf_counter())
            if frame[0] > 1:  # hops still to go
                frame[0] -= 1
                relay.put((header, frame))
        relay.put(None)

    receiver = threading.Thread(target=receive)
    receiver.start()
    own = bytearray(HEADER.pack(size) + bytes(size))
    own[HEADER.size] = members - 1
    sent = 0
    relaying = True
    while sent < frames or relaying:
        # Own frames and relayed ones take turns, as the transport's one queue per peer mixes
        # them; the receiver never blocks on a send, so the ring cannot deadlock.
        if sent < frames:
            out.sendall(own)
            times.append(time.perf_counter())
            sent += 1
        while relaying:
            try:
                frame = relay.get(block=sent >= frames)
            except queue.Empty:
                break
            if frame is None:
                relaying = False
            else:
                out.sendall(frame[0])
                out.sendall(frame[1])
    receiver.join()
    out.close()
    inbound.close()
    times.sort()
    ring.rates.put((len(times) - 1) * size / (times[-1] - times[0]))


def tcp_large_relay(members: int = 3, frames: int = 600, size: int = MiB) -> float:
    """Bytes delivered per second per process (median) with ``members`` processes relaying
    ``size``-byte frames around a ring over blocking sockets: the traffic of ``members``
    ordered senders in one shard, with no protocol at all."""
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    with manager:
        ring = _Ring(
            members, frames, size, manager.dict(), context.Barrier(members), context.Queue()
        )
        processes = [
            context.Process(target=_relay_member, args=(rank, ring)) for rank in range(members)
        ]
        for process in processes:
            process.start()
        try:
            rates = [ring.rates.get(timeout=TIMEOUT_S) for _ in processes]
        finally:
            for process in processes:
                process.join(TIMEOUT_S)
                if process.is_alive():
                    process.kill()
        return float(statistics.median(rates))


# -- light load's floor: one paced sender, one round of answers ------------------------------

PACED_MEMBERS = 3
ACK_BYTES = 22
"""An answer's payload: with its length prefix, as long as a member's row frame (26 bytes)."""


@dataclass(frozen=True)
class _Paced:
    """What the members of :func:`tcp_small_paced_relay` share: the message count and rate,
    their listening ports, a barrier, and a queue for each member's CPU seconds."""

    messages: int
    rate: float | None
    """Messages a second, evenly spaced; ``None``: one in flight, the next sent in the loop
    turn after the last one's answers were all in (:func:`tcp_small_lone_relay`)."""
    size: int
    ports: list[int]
    ready: Any
    used: Any
    """Each member puts ``(CPU seconds, [seconds from each message's send to its last
    answer])``; only the sender's list has entries."""
    event_loop: LoopKind
    """``asyncio`` (the standard loop) or ``uvloop`` (as members run when it is installed)."""

    @property
    def time_limit_s(self) -> float:
        """How long a member may take over all its messages: paced, their schedule; unpaced,
        where one takes well under a millisecond, a second each is ample."""
        interval = 1.0 / self.rate if self.rate is not None else 1.0
        return self.messages * interval + TIMEOUT_S


class _PacedEnd(asyncio.Protocol):
    """The reading end of one link: splits length-prefixed frames and hands each payload's
    length on (the size tells a message from an answer)."""

    def __init__(self, on_frame: Callable[[int], None]) -> None:
        self.on_frame = on_frame
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, offset)
            if len(buffer) - offset - HEADER.size < length:
                break
            offset += HEADER.size + length
            self.on_frame(length)
        del buffer[:offset]


def _paced_member(rank: int, paced: _Paced) -> None:
    with asyncio.Runner(loop_factory=loop_factory(paced.event_loop)) as runner:
        runner.run(_paced_relay(rank, paced))


async def _paced_relay(rank: int, paced: _Paced) -> None:
    """Member ``rank`` of :func:`tcp_small_paced_relay` and :func:`tcp_small_lone_relay`:
    listen, dial the others (one link per direction, as the TCP transport opens them), then
    send (rank 0) or answer, and put the CPU seconds from the first message to the last frame
    this member waits for, with the sender's latencies."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    others = [peer for peer in range(PACED_MEMBERS) if peer != rank]
    # Rank 0 waits for both answers to each message; the others for each message and the
    # other answerer's answer to it: two frames a message either way.
    wanted = 2 * paced.messages
    links: list[asyncio.Transport] = []
    answer = HEADER.pack(ACK_BYTES) + bytes(ACK_BYTES)
    message = HEADER.pack(paced.size) + bytes(paced.size)
    latencies: list[float] = []
    received = 0
    started = sent_at = 0.0

    def send(index: int) -> None:
        nonlocal sent_at
        sent_at = time.perf_counter()
        for link in links:
            link.write(message)
        if paced.rate is not None and index + 1 < paced.messages:
            loop.call_at(first + (index + 1) / paced.rate, send, index + 1)

    def on_frame(length: int) -> None:
        nonlocal received, started
        if received == 0 and rank != 0:
            started = time.process_time()
        received += 1
        if length == paced.size:  # a message: answer everyone, its sender first
            for link in links:
                link.write(answer)
        elif rank == 0 and paced.rate is None and received % 2 == 0:
            # Both answers to the one message in flight are in: as a member's own delivery.
            latencies.append(time.perf_counter() - sent_at)
            if received < wanted:
                loop.call_soon(send, received // 2)
        if received == wanted and not done.done():
            done.set_result(time.process_time() - started)

    server = await loop.create_server(lambda: _PacedEnd(on_frame), "127.0.0.1", paced.ports[rank])
    await loop.run_in_executor(None, paced.ready.wait, TIMEOUT_S)
    for peer in others:
        transport, _ = await loop.create_connection(
            asyncio.Protocol, "127.0.0.1", paced.ports[peer]
        )
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        links.append(transport)
    await loop.run_in_executor(None, paced.ready.wait, TIMEOUT_S)
    first = loop.time()
    if rank == 0:
        started = time.process_time()
        send(0)
    used = await asyncio.wait_for(done, paced.time_limit_s)
    paced.used.put((used, latencies))
    for link in links:
        link.close()
    server.close()


def tcp_small_paced_relay(
    messages: int = 2000, rate: float = 1000.0, size: int = 100, event_loop: LoopKind = "asyncio"
) -> float:
    """CPU microseconds per message per process (the median of three, as the bench reports
    members) when one of three asyncio processes sends ``size``-byte messages to the other two
    at ``rate`` a second and each receiver answers every message to both others: the frames an
    ordered message costs at light load in a shard of three (one hop out, one round of rows),
    with no protocol. The floor of ``paced_100b_tcp``'s CPU per delivery."""
    used = [cpu for cpu, _ in _relay_members(messages, rate, size, event_loop)]
    return statistics.median(used) / messages * 1e6


def _relay_members(
    messages: int, rate: float | None, size: int, event_loop: LoopKind
) -> list[tuple[float, list[float]]]:
    """Run the three members of a paced or lone relay; what each put (see :class:`_Paced`)."""
    if size == ACK_BYTES:
        raise ValueError(f"a message must not be as long as an answer ({ACK_BYTES} bytes)")
    context = multiprocessing.get_context("spawn")
    paced = _Paced(
        messages,
        rate,
        size,
        free_ports(PACED_MEMBERS),
        context.Barrier(PACED_MEMBERS),
        context.Queue(),
        event_loop,
    )
    processes = [
        context.Process(target=_paced_member, args=(rank, paced)) for rank in range(PACED_MEMBERS)
    ]
    for process in processes:
        process.start()
    try:
        return [paced.used.get(timeout=paced.time_limit_s) for _ in processes]
    finally:
        for process in processes:
            process.join(TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()


def tcp_small_paced_relay_uvloop() -> float:
    """:func:`tcp_small_paced_relay` on uvloop's event loop, as members run when it is
    installed (``pip install 'pyderecho[fast]'``)."""
    return tcp_small_paced_relay(event_loop="uvloop")


def tcp_small_lone_relay(
    messages: int = 3000, size: int = 100, event_loop: LoopKind = "asyncio"
) -> float:
    """Median microseconds from the moment one of three asyncio processes writes a
    ``size``-byte message to the other two until both their answers are in, with one message
    in flight (the next leaves in the loop turn after): the frames of an ordered message at
    light load (one hop out, one round of rows, each receiver answering both others), with no
    protocol. The floor of ``lone_100b_tcp``'s latency, which the target divides by a round
    trip between two processes instead."""
    latencies = [
        latency
        for _, sender in _relay_members(messages, None, size, event_loop)
        for latency in sender
    ]
    if len(latencies) != messages:
        raise RuntimeError(f"{len(latencies)} latencies for {messages} messages")
    return statistics.median(latencies) * 1e6


def tcp_small_lone_relay_uvloop() -> float:
    """:func:`tcp_small_lone_relay` on uvloop's event loop, as members run when installed."""
    return tcp_small_lone_relay(event_loop="uvloop")


# -- an idle group's floor: heartbeats and nothing else ---------------------------------------


@dataclass(frozen=True)
class _Beats:
    members: int
    peers: int
    interval: float
    seconds: float
    event_loop: LoopKind
    ports: list[int]
    ready: Any
    used: Any


class _Sink(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass


def _beating_member(rank: int, beats: _Beats) -> None:
    with asyncio.Runner(loop_factory=loop_factory(beats.event_loop)) as runner:
        runner.run(_beat(rank, beats))


async def _beat(rank: int, beats: _Beats) -> None:
    """Listen, link to ``peers`` predecessors on the ring, then write a 20-byte frame to each
    at every multiple of ``interval`` (on the loop's clock, which processes on one host share)
    for ``seconds``; put the CPU seconds that took."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Sink, "127.0.0.1", beats.ports[rank])
    await loop.run_in_executor(None, beats.ready.wait, TIMEOUT_S)
    links = []
    for step in range(1, beats.peers + 1):
        peer = beats.ports[(rank - step) % beats.members]
        transport, _ = await loop.create_connection(_Sink, "127.0.0.1", peer)
        links.append(transport)
    await loop.run_in_executor(None, beats.ready.wait, TIMEOUT_S)
    frame = HEADER.pack(16) + bytes(16)

    timer: asyncio.TimerHandle | None = None

    def beat() -> None:
        nonlocal timer
        for link in links:
            link.write(frame)
        timer = loop.call_at(next_multiple(loop.time(), beats.interval), beat)

    start = time.process_time()
    beat()
    await asyncio.sleep(beats.seconds)
    beats.used.put(time.process_time() - start)
    assert timer is not None
    timer.cancel()
    server.close()


def idle_heartbeats(
    members: int, peers: int, interval: float, seconds: float, event_loop: LoopKind = "asyncio"
) -> float:
    """The CPU, in cores, of ``members`` processes that only exchange heartbeats (see the
    module's docstring): what an idle group of that size costs at least on ``event_loop``."""
    context = multiprocessing.get_context("spawn")
    beats = _Beats(
        members,
        peers,
        interval,
        seconds,
        event_loop,
        free_ports(members),
        context.Barrier(members),
        context.Queue(),
    )
    processes = [
        context.Process(target=_beating_member, args=(rank, beats)) for rank in range(members)
    ]
    for process in processes:
        process.start()
    try:
        used = [beats.used.get(timeout=seconds + TIMEOUT_S) for _ in processes]
    finally:
        for process in processes:
            process.join(TIMEOUT_S)
            if process.is_alive():
                process.kill()
    return float(sum(used)) / seconds


# -- round trips: one small frame in flight --------------------------------------------------


def _socket_echo(port: int, rounds: int, size: int) -> None:
    """Send back each ``size``-byte frame as soon as it is whole (blocking socket)."""
    frame = memoryview(bytearray(HEADER.size + size))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(rounds):
            _read_exactly(sock, frame)
            sock.sendall(frame)


def tcp_small_rtt_socket(rounds: int = 5000, size: int = 100) -> float:
    """Median microseconds for a ``size``-byte frame to go to another process and back over
    blocking loopback sockets: the round trip every protocol step over TCP pays at least."""
    context = multiprocessing.get_context("spawn")
    frame = HEADER.pack(size) + bytes(size)
    answer = memoryview(bytearray(len(frame)))
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(TIMEOUT_S)
        echo = context.Process(target=_socket_echo, args=(server.getsockname()[1], rounds, size))
        echo.start()
        try:
            sock, _ = server.accept()
            with sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                rtts = []
                for _ in range(rounds):
                    began = time.perf_counter()
                    sock.sendall(frame)
                    _read_exactly(sock, answer)
                    rtts.append(time.perf_counter() - began)
        finally:
            echo.join(TIMEOUT_S)
            if echo.is_alive():
                echo.kill()
    return statistics.median(rtts) * 1e6


class _Echo(asyncio.Protocol):
    """Writes back each whole frame it reads (the asyncio round trip's far end)."""

    def __init__(self, frame_size: int, done: asyncio.Future[None]) -> None:
        self.frame_size = frame_size
        self.buffer = bytearray()
        self.done = done
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= self.frame_size:
            assert self.transport is not None
            self.transport.write(bytes(self.buffer[: self.frame_size]))
            del self.buffer[: self.frame_size]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _asyncio_echo(port: int, rounds: int, size: int) -> None:
    async def echo() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(lambda: _Echo(HEADER.size + size, done), "127.0.0.1", port)
        await asyncio.wait_for(done, TIMEOUT_S)

    asyncio.run(echo())


class _Ping(asyncio.Protocol):
    """Resolves ``answered`` once a whole frame came back."""

    def __init__(self, frame_size: int) -> None:
        self.frame_size = frame_size
        self.have = 0
        self.answered: asyncio.Future[None] | None = None
        self.connected: asyncio.Future[asyncio.Transport] = (
            asyncio.get_running_loop().create_future()
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.connected.set_result(transport)

    def data_received(self, data: bytes) -> None:
        self.have += len(data)
        if self.have >= self.frame_size and self.answered is not None:
            self.have -= self.frame_size
            self.answered.set_result(None)


async def _asyncio_rtt(rounds: int, size: int) -> float:
    loop = asyncio.get_running_loop()
    ping = _Ping(HEADER.size + size)
    server = await loop.create_server(lambda: ping, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    echo = multiprocessing.get_context("spawn").Process(
        target=_asyncio_echo, args=(port, rounds, size)
    )
    echo.start()
    try:
        transport = await asyncio.wait_for(ping.connected, TIMEOUT_S)
        frame = HEADER.pack(size) + bytes(size)
        rtts = []
        async with asyncio.timeout(TIMEOUT_S):
            for _ in range(rounds):
                ping.answered = loop.create_future()
                began = time.perf_counter()
                transport.write(frame)
                await ping.answered
                rtts.append(time.perf_counter() - began)
        transport.close()
    finally:
        server.close()
        await loop.run_in_executor(None, echo.join, TIMEOUT_S)
        if echo.is_alive():
            echo.kill()
    return statistics.median(rtts) * 1e6


def tcp_small_rtt_asyncio(rounds: int = 5000, size: int = 100) -> float:
    """The same round trip with both ends on asyncio's event loop (protocols, no streams), as
    members run: what the loop adds to each hop."""
    return asyncio.run(_asyncio_rtt(rounds, size))


def _shm_echo(region: mmap.mmap, bell: socket.socket, rounds: int, size: int) -> None:
    for _ in range(rounds):
        _read_exactly(bell, memoryview(bytearray(8)))
        region[size : 2 * size] = region[:size]
        bell.sendall(b"\x00" * 8)


@dataclass
class _ShmPair:
    """A region two processes share, a socket pair for the doorbells and the echoing process
    (forked, so it inherits the anonymous mapping)."""

    region: mmap.mmap
    ours: socket.socket
    theirs: socket.socket
    echo: multiprocessing.process.BaseProcess
    payload: bytes

    @classmethod
    def start(cls, target: Callable[..., None], rounds: int, size: int) -> _ShmPair:
        region = mmap.mmap(-1, 2 * size)
        ours, theirs = socket.socketpair()
        echo = multiprocessing.get_context("fork").Process(
            target=target, args=(region, theirs, rounds, size)
        )
        echo.start()
        payload = (bytes(range(256)) * (size // 256 + 1))[:size]
        return cls(region, ours, theirs, echo, payload)

    def answered_intact(self, size: int) -> None:
        if self.region[size : 2 * size] != self.payload:
            raise RuntimeError("the shared-memory echo came back changed")

    def close(self) -> None:
        if self.echo.is_alive():
            self.echo.kill()
        self.echo.join(TIMEOUT_S)
        self.ours.close()
        self.theirs.close()
        self.region.close()


def shm_small_rtt(rounds: int = 5000, size: int = 100) -> float:
    """Median microseconds for a ``size``-byte message to go to another process and back
    through shared memory, each way announced by an 8-byte doorbell on a unix socket, as the
    shared-memory transport announces frames (blocking on both ends)."""
    pair = _ShmPair.start(_shm_echo, rounds, size)
    try:
        bell = memoryview(bytearray(8))
        rtts = []
        for _ in range(rounds):
            began = time.perf_counter()
            pair.region[:size] = pair.payload
            pair.ours.sendall(b"\x00" * 8)
            _read_exactly(pair.ours, bell)
            pair.answered_intact(size)
            rtts.append(time.perf_counter() - began)
        pair.echo.join(TIMEOUT_S)
    finally:
        pair.close()
    return statistics.median(rtts) * 1e6


def _shm_echo_asyncio(region: mmap.mmap, bell: socket.socket, rounds: int, size: int) -> None:
    async def echo() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        answered = 0

        def ring() -> None:
            nonlocal answered
            taken = len(bell.recv(4096)) // 8
            for _ in range(taken):
                region[size : 2 * size] = region[:size]
                bell.send(b"\x00" * 8)
            answered += taken
            if answered >= rounds:
                done.set_result(None)

        bell.setblocking(False)
        loop.add_reader(bell.fileno(), ring)
        await asyncio.wait_for(done, TIMEOUT_S)

    asyncio.run(echo())


async def _shm_rtt_asyncio(rounds: int, size: int) -> float:
    loop = asyncio.get_running_loop()
    pair = _ShmPair.start(_shm_echo_asyncio, rounds, size)
    ours = pair.ours
    ours.setblocking(False)
    answered: asyncio.Future[None] | None = None

    def ring() -> None:
        ours.recv(4096)
        if answered is not None and not answered.done():
            answered.set_result(None)

    loop.add_reader(ours.fileno(), ring)
    rtts = []
    try:
        async with asyncio.timeout(TIMEOUT_S):
            for _ in range(rounds):
                answered = loop.create_future()
                began = time.perf_counter()
                pair.region[:size] = pair.payload
                ours.send(b"\x00" * 8)
                await answered
                pair.answered_intact(size)
                rtts.append(time.perf_counter() - began)
        await loop.run_in_executor(None, pair.echo.join, TIMEOUT_S)
    finally:
        loop.remove_reader(ours.fileno())
        pair.close()
    return statistics.median(rtts) * 1e6


def shm_small_rtt_asyncio(rounds: int = 5000, size: int = 100) -> float:
    """The shared-memory round trip with both ends on asyncio's event loop, woken by the
    doorbell socket as members are."""
    return asyncio.run(_shm_rtt_asyncio(rounds, size))


# -- the baselines ----------------------------------------------------------------------------


def tcp_small_socket(frames: int = 300_000, size: int = 100) -> float:
    """Frames per second of ``size``-byte frames over blocking loopback sockets."""
    return _run_sender(_socket_sender, frames, size, lambda sock: _receive_small(sock, frames))


def tcp_small_asyncio(frames: int = 200_000, size: int = 100) -> float:
    """Frames per second of ``size``-byte frames over asyncio streams."""
    return asyncio.run(_receive_asyncio(frames, size))


def tcp_large_socket(frames: int = 2000, size: int = MiB) -> float:
    """Bytes per second of ``size``-byte frames over blocking loopback sockets."""
    return _run_sender(
        _socket_sender, frames, size, lambda sock: _receive_large(sock, frames, size)
    )


def tcp_large_asyncio(frames: int = 1000, size: int = MiB) -> float:
    """Bytes per second of ``size``-byte frames over asyncio streams."""
    return asyncio.run(_receive_asyncio(frames, size)) * size


def tcp_small_buffered(frames: int = 300_000, size: int = 100) -> float:
    """Frames per second of ``size``-byte frames, asyncio sender, read in place."""
    return asyncio.run(_receive_buffered(frames, size))


def tcp_large_buffered(frames: int = 1000, size: int = MiB) -> float:
    """Bytes per second of ``size``-byte frames, asyncio sender, read in place."""
    return asyncio.run(_receive_buffered(frames, size)) * size


def shm_copy(blocks: int = 2048, segment_mib: int = 4) -> float:
    """Bytes per second of ``memcpy`` of 1 MiB blocks into a shared segment (one run)."""
    return raw_copy_gib_per_s(blocks, 1, segment_mib) * (1 << 30)


BASELINES: dict[str, tuple[str, Callable[[], float]]] = {
    "tcp_100b_socket": ("messages_per_s", tcp_small_socket),
    "tcp_100b_asyncio": ("messages_per_s", tcp_small_asyncio),
    "tcp_100b_buffered": ("messages_per_s", tcp_small_buffered),
    "tcp_1mib_socket": ("bytes_per_s", tcp_large_socket),
    "tcp_1mib_asyncio": ("bytes_per_s", tcp_large_asyncio),
    "tcp_1mib_buffered": ("bytes_per_s", tcp_large_buffered),
    "tcp_1mib_relay3": ("bytes_per_s", tcp_large_relay),
    "shm_copy": ("bytes_per_s", shm_copy),
    "tcp_100b_rtt_socket": ("rtt_us", tcp_small_rtt_socket),
    "tcp_100b_rtt_asyncio": ("rtt_us", tcp_small_rtt_asyncio),
    "shm_100b_rtt": ("rtt_us", shm_small_rtt),
    "shm_100b_rtt_asyncio": ("rtt_us", shm_small_rtt_asyncio),
    "tcp_100b_paced_relay3": ("cpu_us_per_message", tcp_small_paced_relay),
    "tcp_100b_lone_relay3": ("latency_us", tcp_small_lone_relay),
}
"""Each baseline: its unit, and a function that measures it once."""
if importlib.util.find_spec("uvloop") is not None:
    BASELINES["tcp_100b_paced_relay3_uvloop"] = ("cpu_us_per_message", tcp_small_paced_relay_uvloop)
    BASELINES["tcp_100b_lone_relay3_uvloop"] = ("latency_us", tcp_small_lone_relay_uvloop)
_PRECISE_UNITS = {"cpu_us_per_message"}
"""Units kept to a tenth: a few tens of microseconds, where a whole one is a few percent."""


def measure_once() -> dict[str, float]:
    """Every baseline once."""
    return {name: run() for name, (_, run) in BASELINES.items()}


def summarize(samples: dict[str, list[float]]) -> dict[str, dict[str, object]]:
    """Medians (in each baseline's unit) and the samples they come from."""
    digits = {name: 1 if unit in _PRECISE_UNITS else None for name, (unit, _) in BASELINES.items()}
    return {
        name: {
            unit: round(statistics.median(samples[name]), digits[name]),
            "samples": [round(value, digits[name]) for value in samples[name]],
        }
        for name, (unit, _) in BASELINES.items()
    }


def measure(repeat: int) -> dict[str, dict[str, object]]:
    """Every baseline ``repeat`` times, interleaved; medians and samples."""
    samples: dict[str, list[float]] = {name: [] for name in BASELINES}
    for _ in range(repeat):
        for name, value in measure_once().items():
            samples[name].append(value)
    return summarize(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps({"benchmark": "raw_baselines", "repeat": args.repeat, **measure(args.repeat)}))


if __name__ == "__main__":
    main()
