"""A live group under fire: three members keep multicasting while a fuzzer throws bad input at
one member's TCP port; afterwards that member is up, has counted what it refused, and the group
still delivers new messages, in the same order, at every member.

The group runs in its own thread and event loop (real :class:`~pyderecho.runtime.Member` objects
over :class:`~pyderecho.transport.tcp.TcpTransport` on 127.0.0.1), so it keeps its heartbeats
and traffic going for the whole run while Hypothesis drives the attacks from the test's thread
with plain blocking sockets. Each attack ends by half-closing its socket and reading until the
member hangs up, so the member has dealt with it before the next one begins.

The attacks: random bytes; a well-formed length prefix in front of garbage; a frame cut short;
an announced length far over the limit; a real hello cut, corrupted or naming another group; a
complete handshake with the wrong secret, then frames anyway; and an *insider*, a process that
holds the secret (a real handshake through :mod:`pyderecho.transport.auth`) under a node id
outside the view, sending garbage frames, then a clean end, a frame cut short or an oversized
one. The insider's ids are never those of members: posing as a member would replace that
member's real link, which is the insider's right, not bad input.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pyderecho.cli.demo import free_ports
from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered, Event
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.layouts import resolve_layout
from pyderecho.runtime.member import Member
from pyderecho.transport.auth import (
    MAX_HANDSHAKE_MESSAGE,
    NONCE_SIZE,
    Handshake,
    HandshakeError,
    Identity,
    Role,
)
from pyderecho.transport.tcp import TcpTransport

GROUP = "live-fuzz"
SECRET = b"live fuzz group secret, 32 bytes"
WRONG_SECRET = b"not the group secret, but long!!"
HERE = "127.0.0.1"
MEMBERS = (0, 1, 2)
TARGET = 1
"""The member under attack."""
MAX_FRAME = 1 << 20
SOCKET_TIMEOUT_S = 10.0
INSIDER_IDS = st.integers(1000, 2**64 - 1)
NOT_MSGPACK = b"\xc1"
"""A byte msgpack never uses: a frame starting with it is malformed whatever follows, so an
insider's garbage can never decode, by chance, into a real protocol message."""

T = TypeVar("T")


@dataclass
class Group:
    """Three members in a thread of their own, each sending every few milliseconds."""

    members: dict[NodeId, Member] = field(default_factory=dict)
    delivered: dict[NodeId, list[tuple[int, NodeId, bytes]]] = field(default_factory=dict)
    addresses: dict[NodeId, str] = field(default_factory=dict)
    sending = True
    loop: asyncio.AbstractEventLoop | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _failure: BaseException | None = None

    def start(self) -> None:
        ports = free_ports(len(MEMBERS))
        self.addresses = {m: f"{HERE}:{port}" for m, port in zip(MEMBERS, ports, strict=True)}
        self._thread = threading.Thread(target=self._run, name="live-group", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("the group did not start")
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
        if self._failure is not None:
            raise self._failure

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the group's loop and return its result (the only way this test
        touches the members from its own thread)."""
        assert self.loop is not None
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        layout = resolve_layout("every-member")
        # Generous timeouts: this test is about bad input, not failure detection, and the
        # fuzzer shares the interpreter (and two CPUs) with the group.
        config = CoreConfig(heartbeat_interval=0.1, heartbeat_timeout=3.0)
        for member in MEMBERS:
            node = Node(
                member,
                View(0, MEMBERS),
                layout,
                config,
                now=self.loop.time(),
                addresses=self.addresses,
            )
            transport = TcpTransport(
                member,
                self.addresses[member],
                group=GROUP,
                secret=SECRET,
                max_frame_size=MAX_FRAME,
                handshake_timeout=3.0,
            )
            self.delivered[member] = []
            self.members[member] = Member(node, transport, on_event=self._recorder(member))
        for running in self.members.values():
            await running.start()
        senders = [asyncio.ensure_future(self._send_forever(m)) for m in MEMBERS]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
            for running in self.members.values():
                await running.close()

    def _recorder(self, member: NodeId) -> Callable[[Event], None]:
        def record(event: Event) -> None:
            if isinstance(event, Delivered):
                self.delivered[member].append((event.epoch, event.sender, bytes(event.payload)))

        return record

    async def _send_forever(self, member: NodeId) -> None:
        count = 0
        while True:
            if self.sending:
                await self.members[member].send(0, b"bg:%d:%d" % (member, count))
                count += 1
            await asyncio.sleep(0.01)  # the background traffic's pace


# -- the attacks, over blocking sockets ------------------------------------------------------


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def read_frame(sock: socket.socket) -> bytes:
    header = read_exactly(sock, 4)
    return read_exactly(sock, struct.unpack(">I", header)[0])


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def hang_up_and_drain(sock: socket.socket) -> None:
    """Half-close and read until the member closes its side: it has then handled everything
    sent (a member that never closed would fail the test here, by timeout)."""
    try:
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    except (ConnectionError, OSError) as exc:
        if isinstance(exc, TimeoutError):
            raise AssertionError("the member kept a bad connection open") from exc
        # a reset (or a socket the reset already disconnected) is a close too


def connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def hello(node: NodeId, group: str = GROUP, secret: bytes = SECRET) -> tuple[Handshake, bytes]:
    handshake = Handshake(
        Identity(group, secret, node),
        Role.DIALER,
        secrets.token_bytes(NONCE_SIZE),
        expected_peer=TARGET,
    )
    first = handshake.initial()
    assert first is not None
    return handshake, first


def handshake_through(sock: socket.socket, node: NodeId, secret: bytes) -> bool:
    """Run the dialer's side of the handshake by hand; True if the member accepted us."""
    handshake, first = hello(node, secret=secret)
    sock.sendall(frame(first))
    try:
        proof = handshake.receive(read_frame(sock))  # the member's hello
        assert proof is not None
        sock.sendall(frame(proof))
        handshake.receive(read_frame(sock))  # its proof, or its refusal
    except (HandshakeError, ConnectionError):
        return False
    return handshake.done


@dataclass(frozen=True)
class Attack:
    kind: str
    data: bytes = b""
    number: int = 0
    frames: tuple[bytes, ...] = ()
    tail: str = "clean"


def run_attack(address: str, attack: Attack) -> None:
    with connect(address) as sock:
        try:
            send_attack(sock, attack)
        except ConnectionError:
            return  # the member hung up on us mid-attack: that is what it should do
        hang_up_and_drain(sock)


def send_attack(sock: socket.socket, attack: Attack) -> None:
    """Write ``attack``; a ``ConnectionError`` means the member already hung up."""
    if attack.kind == "random":
        sock.sendall(attack.data)
    elif attack.kind == "prefix":  # a length that fits, then garbage of that length
        sock.sendall(frame(attack.data))
    elif attack.kind == "truncated":  # a length, then fewer bytes than it says
        sock.sendall(struct.pack(">I", len(attack.data) + attack.number) + attack.data)
    elif attack.kind == "oversized":
        sock.sendall(struct.pack(">I", attack.number) + attack.data)
    elif attack.kind == "hello-cut":
        _, message = hello(attack.number % 1000 + 3)
        stream = frame(message)
        sock.sendall(stream[: len(attack.data) % len(stream)])
    elif attack.kind == "hello-flip":
        _, message = hello(attack.number % 1000 + 3)
        flipped = bytearray(message)
        for i, byte in enumerate(attack.data):
            flipped[(attack.number + 31 * i) % len(flipped)] ^= byte or 1
        sock.sendall(frame(bytes(flipped)))
    elif attack.kind == "wrong-group":
        _, message = hello(attack.number % 1000 + 3, group="other-" + attack.data.hex())
        sock.sendall(frame(message))
    elif attack.kind == "wrong-secret":
        assert not handshake_through(sock, attack.number, WRONG_SECRET)
        for payload in attack.frames:
            sock.sendall(frame(payload))
    elif attack.kind == "insider":
        assert handshake_through(sock, attack.number, SECRET), "the insider was refused"
        for payload in attack.frames:
            sock.sendall(frame(NOT_MSGPACK + payload))
        if attack.tail == "truncated":
            sock.sendall(struct.pack(">I", 100) + b"cut short")
        elif attack.tail == "oversized":
            sock.sendall(struct.pack(">I", MAX_FRAME + 1))
    else:
        raise AssertionError(f"unknown attack {attack.kind}")


garbage = st.binary(max_size=MAX_HANDSHAKE_MESSAGE)
attacks = st.one_of(
    st.builds(Attack, st.just("random"), st.binary(min_size=1, max_size=2000)),
    st.builds(Attack, st.just("prefix"), garbage),
    st.builds(Attack, st.just("truncated"), st.binary(max_size=200), st.integers(1, 300)),
    st.builds(
        Attack,
        st.just("oversized"),
        st.binary(max_size=100),
        st.integers(MAX_HANDSHAKE_MESSAGE + 1, 2**32 - 1),
    ),
    st.builds(Attack, st.just("hello-cut"), st.binary(min_size=1, max_size=400), INSIDER_IDS),
    st.builds(Attack, st.just("hello-flip"), st.binary(min_size=1, max_size=8), INSIDER_IDS),
    st.builds(Attack, st.just("wrong-group"), st.binary(max_size=20), INSIDER_IDS),
    st.builds(
        Attack,
        st.just("wrong-secret"),
        number=st.integers(0, 2**64 - 1).filter(lambda n: n != TARGET),
        frames=st.lists(st.binary(max_size=300), max_size=5).map(tuple),
    ),
    st.builds(
        Attack,
        st.just("insider"),
        number=INSIDER_IDS,
        frames=st.lists(st.binary(max_size=300), min_size=1, max_size=5).map(tuple),
        tail=st.sampled_from(["clean", "truncated", "oversized"]),
    ),
)


async def snapshot(group: Group) -> dict[str, Any]:
    target = group.members[TARGET]
    return {
        "transport": dict(target.transport.stats),
        "node": dict(target.node.stats),
        "stopped": {m: member.node.stopped for m, member in group.members.items()},
        "views": {m: member.view for m, member in group.members.items()},
        "delivered": {m: len(d) for m, d in group.delivered.items()},
    }


async def finish(group: Group, per_member: int, timeout: float) -> None:
    """Stop the background traffic, have every member send ``per_member`` marked messages and
    wait until every member has delivered all of them."""
    group.sending = False
    for i in range(per_member):
        for m, member in group.members.items():
            await member.send(0, b"after:%d:%d" % (m, i))
    want = per_member * len(group.members)
    async with asyncio.timeout(timeout):
        while any(
            sum(p.startswith(b"after:") for _, _, p in d) < want for d in group.delivered.values()
        ):
            await asyncio.sleep(0.02)  # a test polling for an outcome, with a deadline


@pytest.mark.timeout(120)
def test_a_member_under_fuzzing_stays_up_and_the_group_keeps_delivering() -> None:
    group = Group()
    group.start()
    try:
        address = group.addresses[TARGET]
        before = group.call(snapshot(group))

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @example(Attack("random", b"\x00\x00\x00\x05hello"))
        @example(Attack("prefix", b"G" * 64))
        @example(Attack("truncated", b"abc", 10))
        @example(Attack("oversized", b"", 2**32 - 1))
        @example(Attack("hello-cut", b"x" * 20, 7))
        @example(Attack("wrong-group", b"x", 7))
        @example(Attack("wrong-secret", number=0, frames=(b"let me in",)))
        @example(Attack("insider", number=1000, frames=(b"garbage",), tail="clean"))
        @example(Attack("insider", number=1001, frames=(b"garbage",), tail="truncated"))
        @example(Attack("insider", number=1002, frames=(b"garbage",), tail="oversized"))
        @given(attacks)
        def fuzz(attack: Attack) -> None:
            run_attack(address, attack)

        fuzz()
        during = group.call(snapshot(group))
        with connect(address) as sock:  # the listener still answers, and still authenticates
            assert handshake_through(sock, 999, SECRET)
            hang_up_and_drain(sock)
        group.call(finish(group, per_member=20, timeout=30.0))
        after = group.call(snapshot(group))
    finally:
        group.stop()

    # The member under attack counted each kind of refusal it met...
    stats = after["transport"]
    for counter in (
        "bad_hello",
        "wrong_group",
        "bad_auth",
        "handshake_incomplete",
        "oversized",
        "truncated",
    ):
        assert stats.get(counter, 0) > 0, f"{counter} not counted: {stats}"
    assert after["node"].get("malformed", 0) > 0, after["node"]
    assert stats.get("handshake_limit", 0) == 0
    # ...and nobody stopped, suspected anyone or changed view.
    assert all(not reason for reason in after["stopped"].values()), after["stopped"]
    assert {view.epoch for view in after["views"].values()} == {0}
    # The group delivered throughout, and delivers new messages in one order everywhere.
    for m in MEMBERS:
        assert during["delivered"][m] > before["delivered"][m]
    sequences = list(group.delivered.values())
    assert sequences[0] == sequences[1] == sequences[2]
    for sender in MEMBERS:
        own = [p for _, s, p in sequences[0] if s == sender and p.startswith(b"after:")]
        assert own == [b"after:%d:%d" % (sender, i) for i in range(20)]
