"""``TcpTransport.identify``: learning who listens at an address, without opening a link.

A joiner configured with contact addresses asks each contact its member id before it can dial
it (a link is to a given id). Real sockets on 127.0.0.1; every wait is bounded, and the
members asked must carry on as if nothing happened: no link, no loss, no failure.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from pyderecho.transport.auth import HandshakeTimeout, Rejected
from pyderecho.transport.tcp import IDENTIFY_ID, TcpTransport
from test_tcp_transport import GROUP, HERE, SECRET, address_of, closing, legit_pair, run
from transport_conformance import ping


def asker(*, connect_timeout: float = 10.0, handshake_timeout: float = 5.0) -> TcpTransport:
    """A joiner's transport, never started: identify needs no listener."""
    return TcpTransport(
        7,
        f"{HERE}:0",
        group=GROUP,
        secret=SECRET,
        connect_timeout=connect_timeout,
        handshake_timeout=handshake_timeout,
    )


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind((HERE, 0))
        port: int = probe.getsockname()[1]
    return port


def test_identify_learns_the_id_and_opens_no_link() -> None:
    async def scenario() -> None:
        async with legit_pair() as (transports, recorders):
            joiner = asker()
            async with closing(joiner, check_tasks=False):
                assert await joiner.identify(address_of(transports[1])) == 1
                assert await joiner.identify(address_of(transports[0])) == 0
            await ping(transports, recorders, [(0, 1), (1, 0)])  # the members carry on
            for transport, recorder in zip(transports, recorders, strict=True):
                assert transport.stats["identified"] == 1
                assert transport.stats["accepted"] == 1  # the pair's own link, nothing more
                assert transport.stats["peer_lost"] == 0
                assert not recorder.lost
            assert joiner.stats["connected"] == 0

    run(scenario())


def test_identify_is_admitted_by_a_member_with_an_allowed_set() -> None:
    async def scenario() -> None:
        async with legit_pair(allowed_peers={0, 1}) as (transports, _):
            joiner = asker()
            async with closing(joiner, check_tasks=False):
                assert await joiner.identify(address_of(transports[1])) == 1
            assert transports[1].stats["bad_hello"] == 0

    run(scenario())


@pytest.mark.parametrize(
    ("group", "secret", "reason"),
    [(GROUP, b"not the group's secret", "bad_auth"), ("other-group", SECRET, "wrong_group")],
)
def test_a_member_of_another_group_or_secret_refuses_at_once(
    group: str, secret: bytes, reason: str
) -> None:
    async def scenario() -> None:
        async with legit_pair() as (transports, recorders):
            stranger = TcpTransport(7, f"{HERE}:0", group=group, secret=secret)
            async with closing(stranger, check_tasks=False):
                started = asyncio.get_running_loop().time()
                with pytest.raises(Rejected, match=reason):
                    await stranger.identify(address_of(transports[1]))
                assert asyncio.get_running_loop().time() - started < 2.0  # refusals are final
            assert transports[1].stats[reason] == 1
            assert transports[1].stats["identified"] == 0
            assert not recorders[1].lost

    run(scenario())


def test_nobody_listening_fails_within_the_timeout() -> None:
    async def scenario() -> None:
        joiner = asker(connect_timeout=10.0)
        async with closing(joiner):
            started = asyncio.get_running_loop().time()
            with pytest.raises(OSError):
                await joiner.identify(f"{HERE}:{unused_port()}", timeout=0.3)
            assert asyncio.get_running_loop().time() - started < 2.0
            assert joiner.stats["connect_retry"] > 0

    run(scenario())


def test_a_silent_listener_fails_within_the_timeouts() -> None:
    """A process that accepts and never answers (not a member, or a hung one) cannot hold the
    joiner: each try is cut by the handshake timeout, the tries by the identify timeout."""

    async def scenario() -> None:
        connections: list[asyncio.StreamWriter] = []

        def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)

        server = await asyncio.start_server(hold, HERE, 0)
        port = server.sockets[0].getsockname()[1]
        joiner = asker(handshake_timeout=0.2)
        try:
            async with closing(joiner):
                started = asyncio.get_running_loop().time()
                with pytest.raises(HandshakeTimeout):
                    await joiner.identify(f"{HERE}:{port}", timeout=0.3)
                assert asyncio.get_running_loop().time() - started < 2.0
        finally:
            for writer in connections:
                writer.close()
            server.close()
            await server.wait_closed()

    run(scenario())


def test_the_reserved_id_is_no_member_id() -> None:
    with pytest.raises(ValueError, match="reserved"):
        TcpTransport(IDENTIFY_ID, f"{HERE}:0", group=GROUP, secret=SECRET)


def test_identify_after_close_is_a_local_error() -> None:
    async def scenario() -> None:
        joiner = asker()
        await joiner.close()
        with pytest.raises(Exception, match="closed"):
            await joiner.identify(f"{HERE}:1")

    run(scenario())
