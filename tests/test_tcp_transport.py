"""The TCP transport: the conformance suite, then everything a hostile or broken peer can do.

Every socket is on 127.0.0.1. Each test runs its own event loop with ``asyncio.run`` and ends by
closing its transports, which the helpers check leaves no task behind. After each bad
connection the test makes the legitimate members exchange frames again: a member that refused
bad input must carry on.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import transport_conformance as conformance
from pyderecho.core.errors import LocalProtocolError, RemoteProtocolError
from pyderecho.core.view import NodeId
from pyderecho.transport.auth import (
    NONCE_SIZE,
    BadAuth,
    BadHello,
    Handshake,
    HandshakeError,
    Identity,
    Rejected,
    Role,
    WrongGroup,
    reject_message,
    run_handshake,
)
from pyderecho.transport.base import Transport
from pyderecho.transport.framing import (
    PAD,
    QUIET_BYTES,
    OversizedFrame,
    TruncatedFrame,
    frame_header,
    read_frame,
)
from pyderecho.transport.tcp import TcpTransport, format_address, parse_address
from transport_conformance import Recorder, TransportFactory, group_of, ping, start_all_to_all

GROUP = "test-group"
SECRET = b"correct horse battery staple"
MiB = 1 << 20
HERE = "127.0.0.1"


def run(coro: Awaitable[None], timeout: float = 30.0) -> None:
    """Run one scenario in a fresh event loop, bounded so a bug fails the test, not CI."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await coro

    asyncio.run(bounded())


def tcp_factory(**options: Any) -> TransportFactory:
    """A conformance factory: node ids 0..n-1 on 127.0.0.1, all dialing all."""

    async def make(recorders: Sequence[Recorder]) -> list[Transport]:
        transports = [
            TcpTransport(node, f"{HERE}:0", group=GROUP, secret=SECRET, **options)
            for node in range(len(recorders))
        ]
        return await start_all_to_all(transports, recorders)

    return make


def address_of(transport: Transport) -> str:
    assert isinstance(transport, TcpTransport)
    return transport.address


@asynccontextmanager
async def legit_pair(
    **options: Any,
) -> AsyncIterator[tuple[list[Transport], list[Recorder]]]:
    """Members 0 and 1, connected and proven to work; the attacks below target member 1."""
    async with group_of(tcp_factory(**options), 2) as (transports, recorders):
        await ping(transports, recorders, [(0, 1), (1, 0)])
        yield transports, recorders
        await ping(transports, recorders, [(0, 1), (1, 0)])


async def raw_connection(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = parse_address(address)
    return await asyncio.open_connection(host, port)


def woken(data: bytes) -> bytes:
    """``data`` padded as a member pads a write that must wake its receiver: a receiver's
    low-water mark keeps fewer bytes waiting (only heartbeats go so)."""
    return data + PAD * max(0, -(-(QUIET_BYTES - len(data)) // len(PAD)))


async def authenticated_connection(
    address: str, node_id: NodeId, *, expected: NodeId = 1
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-driven dialer that proves itself as ``node_id``, to then misbehave at will."""
    reader, writer = await raw_connection(address)
    handshake = Handshake(
        Identity(GROUP, SECRET, node_id),
        Role.DIALER,
        secrets.token_bytes(NONCE_SIZE),
        expected_peer=expected,
    )
    assert await run_handshake(reader, writer, handshake, 5.0) == expected
    return reader, writer


async def closed_by_peer(reader: asyncio.StreamReader) -> bytes:
    """Everything the transport sends before closing on us (it must close: this returns)."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b""


async def drain_and_close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with suppress(ConnectionError):
        await writer.wait_closed()


@asynccontextmanager
async def closing(*transports: TcpTransport, check_tasks: bool = True) -> AsyncIterator[None]:
    """Close ``transports`` on the way out and require that no task outlives them.

    Inside :func:`legit_pair` the pair is still running, so its own tasks would show:
    ``check_tasks=False`` there, and the pair's exit checks every task at once.
    """
    before = asyncio.all_tasks()
    try:
        yield
    finally:
        for transport in transports:
            await transport.close()
    if check_tasks:
        leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
        assert not leaked, f"tasks left running after close(): {leaked}"


# -- the conformance suite -------------------------------------------------------------------


def test_conformance_fifo_and_integrity() -> None:
    run(conformance.check_fifo_and_integrity(tcp_factory()))


def test_conformance_all_to_all() -> None:
    run(conformance.check_all_to_all(tcp_factory()))


def test_conformance_large_frames() -> None:
    run(conformance.check_large_frames(tcp_factory()))


def test_conformance_peer_lost_on_close() -> None:
    run(conformance.check_peer_lost_on_close(tcp_factory()))


def test_conformance_disconnect() -> None:
    run(conformance.check_disconnect(tcp_factory()))


def test_conformance_a_closing_transport_hands_over_no_frames() -> None:
    with socket.socket() as unused:
        unused.bind((HERE, 0))  # bound, never listening: dials to it are refused, and retried
        nowhere = f"{HERE}:{unused.getsockname()[1]}"
        run(conformance.check_a_closing_transport_hands_over_no_frames(tcp_factory(), nowhere))


def test_conformance_flush_sends_without_a_turn_of_the_loop() -> None:
    run(
        conformance.threaded_check_flush_sends_without_a_turn_of_the_loop(
            lambda node: TcpTransport(node, f"{HERE}:0", group=GROUP, secret=SECRET)
        )
    )


def test_conformance_caller_flushes_leaves_the_write_to_flush() -> None:
    run(
        conformance.threaded_check_caller_flushes_leaves_the_write_to_flush(
            lambda node: TcpTransport(node, f"{HERE}:0", group=GROUP, secret=SECRET)
        )
    )


def test_conformance_over_tls(tmp_path: Path) -> None:
    server, client = tls_contexts(tmp_path)
    make = tcp_factory(ssl_server=server, ssl_client=client)
    run(conformance.check_fifo_and_integrity(make, frames=40))


def tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throwaway self-signed certificate for 127.0.0.1, made with the ``openssl`` command (the
    ``cryptography`` package is not a dependency)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=pyderecho-test"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


def test_tls_dialer_refuses_an_untrusted_certificate(tmp_path: Path) -> None:
    server, _ = tls_contexts(tmp_path)
    stranger = ssl.create_default_context()  # trusts the system roots, not our test cert

    async def scenario() -> None:
        ra, rb = Recorder(), Recorder()
        a = TcpTransport(0, f"{HERE}:0", group=GROUP, secret=SECRET, ssl_client=stranger)
        b = TcpTransport(1, f"{HERE}:0", group=GROUP, secret=SECRET, ssl_server=server)
        await a.start(ra.on_frame, ra.on_peer_lost)
        await b.start(rb.on_frame, rb.on_peer_lost)
        async with closing(a, b):
            a.connect(1, b.address)
            await ra.wait_until(lambda: bool(ra.lost), "the dial to fail")
            assert "CERTIFICATE_VERIFY_FAILED" in ra.lost[0][1]
            assert a.stats["bad_tls"] == 1
            assert a.stats["connect_retry"] == 0, "a certificate that fails once fails always"
            assert rb.frames == {}

    run(scenario())


def test_tls_acceptor_refuses_a_plaintext_dialer(tmp_path: Path) -> None:
    server, _ = tls_contexts(tmp_path)

    async def scenario() -> None:
        ra, rb = Recorder(), Recorder()
        a = TcpTransport(0, f"{HERE}:0", group=GROUP, secret=SECRET, connect_timeout=0.3)
        b = TcpTransport(1, f"{HERE}:0", group=GROUP, secret=SECRET, ssl_server=server)
        await a.start(ra.on_frame, ra.on_peer_lost)
        await b.start(rb.on_frame, rb.on_peer_lost)
        async with closing(a, b):
            a.connect(1, b.address)
            a.send(1, b"in the clear")
            await ra.wait_until(lambda: bool(ra.lost), "the dial to give up")
            assert b.stats["bad_tls"] >= 1
            assert rb.frames == {}

    run(scenario())


# -- the handshake, without sockets ----------------------------------------------------------


def pair(
    dialer: Identity | None = None,
    acceptor: Identity | None = None,
    **acceptor_options: Any,
) -> tuple[Handshake, Handshake]:
    return (
        Handshake(
            dialer or Identity(GROUP, SECRET, 1),
            Role.DIALER,
            secrets.token_bytes(NONCE_SIZE),
            expected_peer=2,
        ),
        Handshake(
            acceptor or Identity(GROUP, SECRET, 2),
            Role.ACCEPTOR,
            secrets.token_bytes(NONCE_SIZE),
            **acceptor_options,
        ),
    )


def converse(dialer: Handshake, acceptor: Handshake) -> None:
    """Pass messages between the two sides until both are done (or one raises)."""
    assert acceptor.initial() is None
    message = dialer.initial()
    sides = (acceptor, dialer)
    turn = 0
    while message is not None:
        message = sides[turn].receive(message)
        turn = 1 - turn


def test_handshake_authenticates_both_sides() -> None:
    dialer, acceptor = pair()
    converse(dialer, acceptor)
    assert dialer.done and acceptor.done
    assert dialer.peer == 2 and acceptor.peer == 1


@pytest.mark.parametrize(
    ("dialer", "acceptor", "options", "error"),
    [
        (Identity(GROUP, b"x" * 16, 1), None, {}, BadAuth),
        (None, Identity(GROUP, b"x" * 16, 2), {}, BadAuth),
        (Identity("other", SECRET, 1), None, {}, WrongGroup),
        (None, None, {"allowed_peers": {7}}, BadHello),
        (Identity(GROUP, SECRET, 2), None, {}, BadHello),  # claims the acceptor's own id
        (None, Identity(GROUP, SECRET, 3), {}, BadHello),  # not the node the dialer meant
    ],
)
def test_handshake_refusals(
    dialer: Identity | None,
    acceptor: Identity | None,
    options: dict[str, Any],
    error: type[HandshakeError],
) -> None:
    one, other = pair(dialer, acceptor, **options)
    with pytest.raises(error):
        converse(one, other)
    assert not (one.done and other.done)


def test_acceptor_reveals_no_proof_to_an_unproven_dialer() -> None:
    """A stranger who dials gets a hello, never a MAC made with the secret it could reuse."""
    stranger, acceptor = pair(dialer=Identity(GROUP, b"y" * 16, 1))
    hello = stranger.initial()
    assert hello is not None
    answer = acceptor.receive(hello)
    assert answer is not None and answer.startswith(b"PDRH")
    bad_proof = stranger.receive(answer)
    assert bad_proof is not None
    with pytest.raises(BadAuth):
        acceptor.receive(bad_proof)


def test_a_recorded_proof_does_not_open_a_second_session() -> None:
    dialer, acceptor = pair()
    hello = dialer.initial()
    assert hello is not None
    answer = acceptor.receive(hello)
    assert answer is not None
    recorded_proof = dialer.receive(answer)
    assert recorded_proof is not None
    # The replayer resends the same hello and proof; the acceptor's fresh nonce defeats it.
    _, fresh = pair()
    fresh.receive(hello)
    with pytest.raises(BadAuth):
        fresh.receive(recorded_proof)


def test_an_acceptor_proof_cannot_pass_as_a_dialer_proof() -> None:
    """The prover's role is in the MAC: even over the very same transcript (same ids, same
    nonces), the acceptor's proof reflected back as the dialer's is refused."""

    def session() -> tuple[Handshake, Handshake]:
        return (
            Handshake(Identity(GROUP, SECRET, 1), Role.DIALER, b"d" * 32, expected_peer=2),
            Handshake(Identity(GROUP, SECRET, 2), Role.ACCEPTOR, b"a" * 32),
        )

    dialer, acceptor = session()
    hello = dialer.initial()
    assert hello is not None
    answer = acceptor.receive(hello)
    assert answer is not None
    dialer_proof = dialer.receive(answer)
    assert dialer_proof is not None
    acceptor_proof = acceptor.receive(dialer_proof)
    assert acceptor_proof is not None and acceptor.done
    _, twin = session()
    twin.receive(hello)
    with pytest.raises(BadAuth):
        twin.receive(acceptor_proof)


def test_handshake_reports_a_rejection_and_refuses_misuse() -> None:
    dialer, _ = pair()
    dialer.initial()
    with pytest.raises(Rejected, match="bad_auth"):
        dialer.receive(reject_message("bad_auth"))
    with pytest.raises(LocalProtocolError):
        dialer.receive(b"anything")
    with pytest.raises(LocalProtocolError):
        _ = dialer.peer


@pytest.mark.parametrize(
    ("group", "secret", "node"),
    [("", SECRET, 1), ("g" * 256, SECRET, 1), (GROUP, b"short", 1), (GROUP, SECRET, -1)],
)
def test_identity_is_validated(group: str, secret: bytes, node: NodeId) -> None:
    with pytest.raises(ValueError):
        Identity(group, secret, node)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([Role.DIALER, Role.ACCEPTOR]), st.booleans())
def test_handshake_fuzz_only_raises_handshake_errors(
    message: bytes, role: Role, after_hello: bool
) -> None:
    """Any bytes, at either step, either advance the handshake or are refused cleanly."""
    dialer, acceptor = pair()
    side = dialer if role is Role.DIALER else acceptor
    if after_hello:
        hello = dialer.initial()
        assert hello is not None
        reply = acceptor.receive(hello)
        assert reply is not None
        if role is Role.DIALER:
            dialer.receive(reply)
    else:
        side.initial()
    try:
        side.receive(message)
    except HandshakeError:
        assert not side.done


# -- framing, without sockets ----------------------------------------------------------------


def test_read_frame_edges() -> None:
    async def scenario() -> None:
        def stream(data: bytes) -> asyncio.StreamReader:
            reader = asyncio.StreamReader()
            reader.feed_data(data)
            reader.feed_eof()
            return reader

        reader = stream(frame_header(3) + b"abc" + frame_header(0))
        assert await read_frame(reader, 10) == b"abc"
        assert await read_frame(reader, 10) == b""
        assert await read_frame(reader, 10) is None
        with pytest.raises(TruncatedFrame, match="header"):
            await read_frame(stream(b"\x00\x00"), 10)
        with pytest.raises(TruncatedFrame, match="2 bytes into a 5-byte frame"):
            await read_frame(stream(frame_header(5) + b"ab"), 10)
        with pytest.raises(OversizedFrame):
            await read_frame(stream(frame_header(11) + b"x" * 11), 10)
        assert issubclass(OversizedFrame, RemoteProtocolError)

    run(scenario())


def test_addresses() -> None:
    assert parse_address("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_address("[::1]:0") == ("::1", 0)
    assert format_address("::1", 9) == "[::1]:9"
    for bad in ("127.0.0.1", "127.0.0.1:x", ":80", "h:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


# -- hostile and broken peers ----------------------------------------------------------------


def test_wrong_secret_is_refused_on_both_sides() -> None:
    async def scenario() -> None:
        async with legit_pair() as (transports, recorders):
            recorder = Recorder()
            intruder = TcpTransport(9, f"{HERE}:0", group=GROUP, secret=b"wrong" * 4)
            await intruder.start(recorder.on_frame, recorder.on_peer_lost)
            async with closing(intruder, check_tasks=False):
                intruder.connect(1, address_of(transports[1]))
                intruder.send(1, b"let me in")
                await recorder.wait_until(lambda: bool(recorder.lost), "the intruder's link")
                assert recorder.lost[0][0] == 1
                assert "refused" in recorder.lost[0][1] and "bad_auth" in recorder.lost[0][1]
                assert intruder.stats["rejected"] == 1
                assert transports[1].stats["bad_auth"] == 1
                assert 9 not in recorders[1].frames

    run(scenario())


def test_wrong_group_is_refused() -> None:
    async def scenario() -> None:
        async with legit_pair() as (transports, recorders):
            recorder = Recorder()
            other = TcpTransport(9, f"{HERE}:0", group="other-group", secret=SECRET)
            await other.start(recorder.on_frame, recorder.on_peer_lost)
            async with closing(other, check_tasks=False):
                other.connect(1, address_of(transports[1]))
                await recorder.wait_until(lambda: bool(recorder.lost), "the link to fail")
                assert "wrong_group" in recorder.lost[0][1]
                assert transports[1].stats["wrong_group"] == 1
                assert 9 not in recorders[1].frames

    run(scenario())


def test_a_node_outside_the_allowed_set_is_refused() -> None:
    async def scenario() -> None:
        async with legit_pair(allowed_peers={0, 1}) as (transports, _):
            recorder = Recorder()
            stranger = TcpTransport(5, f"{HERE}:0", group=GROUP, secret=SECRET)
            await stranger.start(recorder.on_frame, recorder.on_peer_lost)
            async with closing(stranger, check_tasks=False):
                stranger.connect(1, address_of(transports[1]))
                await recorder.wait_until(lambda: len(recorder.lost) == 1, "refusal of node 5")
                assert "bad_hello" in recorder.lost[0][1]
                assert transports[1].stats["bad_hello"] == 1

    run(scenario())


def test_a_dialer_hangs_up_on_the_wrong_member() -> None:
    async def scenario() -> None:
        async with legit_pair() as (transports, recorders):
            recorder = Recorder()
            confused = TcpTransport(5, f"{HERE}:0", group=GROUP, secret=SECRET)
            await confused.start(recorder.on_frame, recorder.on_peer_lost)
            async with closing(confused, check_tasks=False):
                confused.connect(3, address_of(transports[0]))  # but member 0 listens there
                confused.send(3, b"for node 3 only")
                await recorder.wait_until(lambda: bool(recorder.lost), "the dialer to hang up")
                assert recorder.lost[0][0] == 3
                assert "dialed node 3 but node 0 answered" in recorder.lost[0][1]
                assert confused.stats["bad_hello"] == 1
                assert 5 not in recorders[0].frames

    run(scenario())


def test_garbage_before_the_handshake_is_refused() -> None:
    async def scenario() -> None:
        async with legit_pair() as (transports, recorders):
            reader, writer = await raw_connection(address_of(transports[1]))
            writer.write(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
            answer = await closed_by_peer(reader)
            assert answer.endswith(reject_message("bad_hello"))
            await drain_and_close(writer)
            assert transports[1].stats["bad_hello"] == 1
            assert set(recorders[1].frames) == {0}

    run(scenario())


def test_stalled_handshake_times_out() -> None:
    async def scenario() -> None:
        async with legit_pair(handshake_timeout=0.3) as (transports, _):
            reader, writer = await raw_connection(address_of(transports[1]))
            writer.write(frame_header(100) + b"PDRH")  # the start of a hello, then nothing
            started = asyncio.get_running_loop().time()
            assert await closed_by_peer(reader) == b""
            assert asyncio.get_running_loop().time() - started < 2.0
            await drain_and_close(writer)
            assert transports[1].stats["handshake_timeout"] == 1

    run(scenario())


def test_dials_go_in_turns_and_the_queue_does_not_time_out() -> None:
    """With ``max_dials_in_flight=2``, five peers that accept and never answer hold two dials
    at a time, not five; a live peer queued behind them still gets its link, although it
    waited longer than ``connect_timeout`` for a turn."""

    async def scenario() -> None:
        accepted: list[socket.socket] = []
        loop = asyncio.get_running_loop()
        stallers = []

        def take(listener: socket.socket) -> None:
            accepted.append(listener.accept()[0])

        for _ in range(5):
            listener = socket.create_server((HERE, 0))
            listener.setblocking(False)
            loop.add_reader(listener.fileno(), take, listener)
            stallers.append(listener)
        dialer = TcpTransport(
            0,
            f"{HERE}:0",
            group=GROUP,
            secret=SECRET,
            handshake_timeout=0.4,
            connect_timeout=0.3,
            max_dials_in_flight=2,
        )
        live = TcpTransport(9, f"{HERE}:0", group=GROUP, secret=SECRET)
        lost: list[NodeId] = []
        await dialer.start(lambda src, frame: None, lambda peer, reason: lost.append(peer))
        await live.start(lambda src, frame: None, lambda peer, reason: None)
        try:
            for peer, listener in enumerate(stallers, start=1):
                dialer.connect(peer, format_address(HERE, listener.getsockname()[1]))
            dialer.connect(9, live.address)
            await asyncio.sleep(0.2)
            assert len(accepted) == 2, "two dials at a time"
            async with asyncio.timeout(10):
                while dialer.stats["connected"] < 1 or len(lost) < 5:
                    await asyncio.sleep(0.01)
            assert sorted(lost) == [1, 2, 3, 4, 5], "the stallers were given up on"
            assert 9 not in lost
        finally:
            await dialer.close()
            await live.close()
            for listener in stallers:
                loop.remove_reader(listener.fileno())
                listener.close()
            for connection in accepted:
                connection.close()

    run(scenario())


def test_waiting_for_a_turn_to_dial_is_not_counted_against_connect_timeout() -> None:
    """One dial at a time: a peer that accepts and never answers holds the turn until its
    ``connect_timeout`` has passed; the member queued behind it starts listening only then,
    and still gets its link (its own ``connect_timeout`` runs from its turn)."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        accepted: list[socket.socket] = []
        staller = socket.create_server((HERE, 0))
        staller.setblocking(False)
        loop.add_reader(staller.fileno(), lambda: accepted.append(staller.accept()[0]))
        with socket.create_server((HERE, 0)) as reserved:
            port = reserved.getsockname()[1]
        dialer = TcpTransport(
            0,
            f"{HERE}:0",
            group=GROUP,
            secret=SECRET,
            handshake_timeout=1.0,
            connect_timeout=2.0,
            max_dials_in_flight=1,
        )
        late = TcpTransport(9, f"{HERE}:{port}", group=GROUP, secret=SECRET)
        lost: list[NodeId] = []
        await dialer.start(lambda src, frame: None, lambda peer, reason: lost.append(peer))
        try:
            dialer.connect(1, format_address(HERE, staller.getsockname()[1]))
            dialer.connect(9, f"{HERE}:{port}")
            async with asyncio.timeout(20):
                while not lost:
                    await asyncio.sleep(0.01)
                assert lost == [1]
                await asyncio.sleep(0.5)  # the late member's turn has begun: it is refused
                await late.start(lambda src, frame: None, lambda peer, reason: None)
                while dialer.stats["connected"] < 1:
                    await asyncio.sleep(0.01)
            assert lost == [1]
        finally:
            await dialer.close()
            await late.close()
            loop.remove_reader(staller.fileno())
            staller.close()
            for connection in accepted:
                connection.close()

    run(scenario(), timeout=40)


def test_unauthenticated_connections_are_bounded() -> None:
    """Connections still in their handshake are capped, so a crowd of silent sockets cannot
    exhaust the member; the cap frees up as they time out."""

    async def scenario() -> None:
        async with legit_pair(max_pending_handshakes=2, handshake_timeout=1.0) as (transports, _):
            target = address_of(transports[1])
            silent = [await raw_connection(target) for _ in range(2)]
            reader, writer = await raw_connection(target)
            assert await closed_by_peer(reader) == b""
            assert transports[1].stats["handshake_limit"] == 1
            for silent_reader, silent_writer in silent:
                assert await closed_by_peer(silent_reader) == b""
                await drain_and_close(silent_writer)
            await drain_and_close(writer)
            assert transports[1].stats["handshake_timeout"] == 2

    run(scenario())


def test_oversized_frame_drops_the_link() -> None:
    async def scenario() -> None:
        async with legit_pair(max_frame_size=1 * MiB) as (transports, recorders):
            reader, writer = await authenticated_connection(address_of(transports[1]), 7)
            writer.write(frame_header(5) + b"hello" + frame_header(1 * MiB + 1) + b"x" * 100)
            await closed_by_peer(reader)
            await drain_and_close(writer)
            await recorders[1].wait_until(lambda: bool(recorders[1].lost), "node 7 to be lost")
            assert recorders[1].lost_peers() == [7]
            assert transports[1].stats["oversized"] == 1
            assert recorders[1].frames[7] == [conformance.digest(b"hello")]

    run(scenario())


def test_truncated_frame_then_close_drops_the_link() -> None:
    async def scenario() -> None:
        async with legit_pair() as (transports, recorders):
            _, writer = await authenticated_connection(address_of(transports[1]), 7)
            writer.write(frame_header(100) + b"only ten b")
            await drain_and_close(writer)
            await recorders[1].wait_until(lambda: bool(recorders[1].lost), "node 7 to be lost")
            assert recorders[1].lost[0][0] == 7
            assert "10 bytes into a 100-byte frame" in recorders[1].lost[0][1]
            assert transports[1].stats["truncated"] == 1
            assert 7 not in recorders[1].frames

    run(scenario())


def test_handler_rejecting_a_frame_drops_only_that_link() -> None:
    async def scenario() -> None:
        recorder = Recorder()

        def picky(peer: NodeId, frame: memoryview) -> None:
            if bytes(frame) == b"poison":
                raise RemoteProtocolError("not a wire message")
            recorder.on_frame(peer, frame)

        a = TcpTransport(0, f"{HERE}:0", group=GROUP, secret=SECRET)
        b = TcpTransport(1, f"{HERE}:0", group=GROUP, secret=SECRET)
        lost_at_a = Recorder()
        await a.start(lost_at_a.on_frame, lost_at_a.on_peer_lost)
        await b.start(picky, recorder.on_peer_lost)
        async with closing(a, b):
            a.connect(1, b.address)
            b.connect(0, a.address)
            for frame in (b"one", b"poison", b"never"):
                a.send(1, frame)
            await recorder.wait_until(lambda: bool(recorder.lost), "b to drop a")
            await lost_at_a.wait_until(lambda: bool(lost_at_a.lost), "a to see it")
            assert recorder.frames[0] == [conformance.digest(b"one")]
            assert "bad frame" in recorder.lost[0][1]
            assert b.stats["malformed"] == 1
            assert lost_at_a.lost_peers() == [1]

    run(scenario())


def test_a_peer_that_does_not_read_is_failed_not_buffered() -> None:
    """A flood towards a stalled peer fills the bounded send queue; the peer is then failed and
    its queue freed, instead of the member growing without bound."""

    async def scenario() -> None:
        authenticated, release = asyncio.Event(), asyncio.Event()
        stalled: list[tuple[asyncio.Task[Any] | None, asyncio.StreamWriter]] = []

        async def stalled_acceptor(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            stalled.append((asyncio.current_task(), writer))
            handshake = Handshake(
                Identity(GROUP, SECRET, 5), Role.ACCEPTOR, secrets.token_bytes(NONCE_SIZE)
            )
            await run_handshake(reader, writer, handshake, 5.0)
            authenticated.set()
            await release.wait()  # and never read a frame

        server = await asyncio.start_server(stalled_acceptor, HERE, 0)
        port = server.sockets[0].getsockname()[1]
        recorder = Recorder()
        a = TcpTransport(
            0,
            f"{HERE}:0",
            group=GROUP,
            secret=SECRET,
            max_frame_size=1 * MiB,
            max_send_queue_bytes=4 * MiB,
        )
        await a.start(recorder.on_frame, recorder.on_peer_lost)
        async with closing(a):
            a.connect(5, f"{HERE}:{port}")
            await authenticated.wait()  # flood a live link, not one still dialing
            frame = memoryview(bytes(1 * MiB))
            for _ in range(1000):  # far more than the kernel buffers; stops at the failure
                if recorder.lost:
                    break
                a.send(5, frame)
                await asyncio.sleep(0)  # let the writer run: a yield, not a wait for time
            await recorder.wait_until(lambda: bool(recorder.lost), "the slow peer to be failed")
            assert recorder.lost[0][0] == 5 and "not keeping up" in recorder.lost[0][1]
            assert a.stats["send_overflow"] == 1
            a.send(5, b"dropped now")
            assert a.stats["send_no_link"] == 1
            release.set()
            for task, writer in stalled:
                writer.transport.abort()
                if task is not None:
                    await task
            server.close()
            await server.wait_closed()

    run(scenario())


def test_frames_queue_until_a_late_peer_comes_up() -> None:
    async def scenario() -> None:
        with socket.socket() as probe:  # a port nobody listens on yet
            probe.bind((HERE, 0))
            port = probe.getsockname()[1]
        ra, rb = Recorder(), Recorder()
        a = TcpTransport(0, f"{HERE}:0", group=GROUP, secret=SECRET)
        b = TcpTransport(1, f"{HERE}:{port}", group=GROUP, secret=SECRET)
        await a.start(ra.on_frame, ra.on_peer_lost)
        async with closing(a, b):
            a.connect(1, f"{HERE}:{port}")
            frames = [b"%d" % i for i in range(100)]
            for frame in frames:
                a.send(1, frame)
            await asyncio.sleep(0.2)  # the scenario: member 1 starts late
            await b.start(rb.on_frame, rb.on_peer_lost)
            await rb.wait_until(lambda: len(rb.frames[0]) == 100, "the queued frames")
            assert rb.frames[0] == [conformance.digest(f) for f in frames]
            assert a.stats["connect_retry"] >= 1
            assert a.stats["connected"] == 1

    run(scenario())


def test_a_peer_that_never_comes_up_is_reported_lost() -> None:
    async def scenario() -> None:
        with socket.socket() as probe:
            probe.bind((HERE, 0))
            port = probe.getsockname()[1]
        recorder = Recorder()
        a = TcpTransport(0, f"{HERE}:0", group=GROUP, secret=SECRET, connect_timeout=0.3)
        await a.start(recorder.on_frame, recorder.on_peer_lost)
        async with closing(a):
            a.connect(1, f"{HERE}:{port}")
            a.send(1, b"queued")
            await recorder.wait_until(lambda: bool(recorder.lost), "the dial to give up")
            assert "could not reach node 1" in recorder.lost[0][1]
            assert a.stats["connect_failed"] == 1

    run(scenario())


def test_local_misuse_is_a_local_error() -> None:
    async def scenario() -> None:
        a = TcpTransport(0, f"{HERE}:0", group=GROUP, secret=SECRET, max_frame_size=1024)
        with pytest.raises(LocalProtocolError):
            a.send(1, b"before start")
        with pytest.raises(LocalProtocolError):
            _ = a.address
        recorder = Recorder()
        await a.start(recorder.on_frame, recorder.on_peer_lost)
        async with closing(a):
            with pytest.raises(LocalProtocolError):
                a.connect(0, "127.0.0.1:1")
            with pytest.raises(ValueError):
                a.connect(1, "nowhere")
            a.connect(1, "127.0.0.1:1")
            with pytest.raises(LocalProtocolError):
                a.send(1, bytes(1025))
        with pytest.raises(LocalProtocolError):
            a.send(1, b"after close")

    run(scenario())
    with pytest.raises(ValueError):
        TcpTransport(0, f"{HERE}:0", group=GROUP, secret=SECRET, max_send_queue_bytes=1)
    with pytest.raises(ValueError):
        TcpTransport(0, f"{HERE}:0", group=GROUP, secret=SECRET, user_timeout=0)


def test_dialed_connections_bound_unacknowledged_data() -> None:
    """``user_timeout`` reaches the kernel on each dialed socket (``TCP_USER_TIMEOUT``)."""

    async def scenario() -> None:
        receiver = TcpTransport(1, f"{HERE}:0", group=GROUP, secret=SECRET)
        dialer = TcpTransport(0, f"{HERE}:0", group=GROUP, secret=SECRET, user_timeout=2.5)
        arrived = asyncio.Event()
        await receiver.start(lambda peer, frame: arrived.set(), lambda *_: None)
        await dialer.start(lambda *_: None, lambda *_: None)
        try:
            dialer.connect(1, receiver.address)
            dialer.send(1, b"hello")
            await asyncio.wait_for(arrived.wait(), 30)
            # The transport keeps its sockets to itself; the dialed one is its only writer.
            (writer,) = dialer._writers
            sock = writer.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2500
        finally:
            await dialer.close()
            await receiver.close()

    run(scenario())


def test_a_reconnecting_peer_replaces_its_old_connection() -> None:
    async def scenario() -> None:
        async with legit_pair() as (transports, recorders):
            _, first = await authenticated_connection(address_of(transports[1]), 7)
            first.write(woken(frame_header(3) + b"one"))
            await recorders[1].wait_until(lambda: len(recorders[1].frames[7]) == 1, "one")
            _, second = await authenticated_connection(address_of(transports[1]), 7)
            second.write(woken(frame_header(3) + b"two"))
            await recorders[1].wait_until(lambda: len(recorders[1].frames[7]) == 2, "two")
            assert transports[1].stats["inbound_replaced"] == 1
            assert recorders[1].lost == []
            await drain_and_close(first)
            await drain_and_close(second)
            await recorders[1].wait_until(lambda: recorders[1].lost_peers() == [7], "loss")

    run(scenario())


# -- fuzzing a live member -------------------------------------------------------------------

Attack = tuple[str, bytes]


def attacks() -> st.SearchStrategy[Attack]:
    """What a stranger or a broken peer might send on a fresh connection: raw noise; a genuine
    hello followed by noise (a bad proof, stray bytes); a mangled hello; or, as an authenticated
    member, a stream of random frames (bad lengths, truncation) and noise."""
    hello = Handshake(Identity(GROUP, SECRET, 8), Role.DIALER, b"n" * NONCE_SIZE).initial()
    assert hello is not None
    framed_hello = frame_header(len(hello)) + hello

    def mangle(data: bytes, flips: list[tuple[int, int]]) -> bytes:
        out = bytearray(data)
        for index, value in flips:
            out[index % len(out)] = value
        return bytes(out)

    noise = st.binary(max_size=300)
    flips = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4)
    frames = st.lists(st.binary(max_size=40), max_size=5).map(
        lambda parts: b"".join(frame_header(len(p)) + p for p in parts)
    )
    return st.one_of(
        noise.map(lambda b: ("raw", b)),
        noise.map(lambda b: ("raw", framed_hello + b)),
        st.tuples(flips, noise).map(lambda t: ("raw", mangle(framed_hello, t[0]) + t[1])),
        st.tuples(frames, noise).map(lambda t: ("member", t[0] + t[1])),
    )


def test_fuzzing_a_live_member_leaves_it_working() -> None:
    """Throw bounded random input at member 1; after every connection, 0 and 1 still talk, and
    nothing unauthenticated ever reached the frame handler.

    Hypothesis drives a plain function, so the live pair is set up once on a loop that this
    test runs step by step: one ``run_until_complete`` per example.
    """
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    try:
        transports, recorders = loop.run_until_complete(
            stack.enter_async_context(legit_pair(handshake_timeout=2.0, max_frame_size=1024))
        )
        target = address_of(transports[1])

        async def attack(kind: str, payload: bytes) -> None:
            async with asyncio.timeout(10):
                if kind == "member":
                    _, writer = await authenticated_connection(target, 7)
                else:
                    _, writer = await raw_connection(target)
                writer.write(payload)
                await drain_and_close(writer)
                await ping(transports, recorders, [(0, 1), (1, 0)])

        @settings(
            max_examples=200,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        )
        @given(attacks())
        def throw(case: Attack) -> None:
            loop.run_until_complete(attack(*case))

        throw()
        assert set(recorders[1].frames) <= {0, 7}, "frames from an unauthenticated connection"
        assert recorders[0].lost == []
        assert set(recorders[1].lost_peers()) <= {7}
        assert transports[1].stats["bad_hello"] + transports[1].stats["bad_auth"] > 0
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
