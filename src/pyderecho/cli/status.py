"""``pyderecho status``: ask a running member for its view, layout and counters.

A member started with ``--status-port`` answers on that port (on 127.0.0.1 unless
``--status-host`` says otherwise). The exchange reuses the links' authentication
(:mod:`pyderecho.transport.auth`): the client proves it holds the group secret with an HMAC over
both sides' fresh nonces, the member proves it back, then the member sends one frame holding one
JSON object and closes. Binding to the loopback address alone would let any local user read the
group's membership and traffic; the secret keeps the answer to those who could join the group
anyway, and a group without a secret gets no status port. The answer itself travels in clear (no
TLS here, even in a TLS group): bind the port elsewhere than the loopback only on a network where
reading it does no harm.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from pyderecho.transport.auth import (
    NONCE_SIZE,
    Handshake,
    HandshakeError,
    Identity,
    Role,
    run_handshake,
)
from pyderecho.transport.framing import FrameError, read_frame, write_frames
from pyderecho.transport.tcp import format_address, parse_address

CLIENT_ID = 2**64 - 1
"""The node id a status client gives in the handshake: no member can hold it (a member's id is
checked to differ from its peer's)."""
MAX_STATUS_BYTES = 1 << 20
HANDSHAKE_TIMEOUT_S = 5.0

Snapshot = Callable[[], Mapping[str, Any]]


class StatusServer:
    """Answers each authenticated connection with ``snapshot()`` as JSON, then closes it."""

    def __init__(self, group: str, secret: bytes, member: int, snapshot: Snapshot) -> None:
        self._identity = Identity(group, secret, member)
        self._snapshot = snapshot
        self._server: asyncio.Server | None = None
        self._log = logging.getLogger(__name__)

    async def start(self, host: str, port: int) -> str:
        """Listen; returns the ``host:port`` actually bound (``port`` 0 picks a free one)."""
        self._server = await asyncio.start_server(self._serve, host, port)
        bound_host, bound_port = self._server.sockets[0].getsockname()[:2]
        return format_address(bound_host, bound_port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handshake = Handshake(self._identity, Role.ACCEPTOR, secrets.token_bytes(NONCE_SIZE))
        try:
            await run_handshake(reader, writer, handshake, HANDSHAKE_TIMEOUT_S)
            write_frames(writer, (json.dumps(self._snapshot()).encode(),))
            await writer.drain()
        except (HandshakeError, OSError) as exc:
            self._log.info(
                "status request from %s refused: %s", writer.get_extra_info("peername"), exc
            )
        finally:
            writer.close()


async def query_status(address: str, group: str, secret: bytes, timeout: float) -> dict[str, Any]:
    """The status of the member at ``address``; raises ``OSError``, ``TimeoutError`` or
    :class:`~pyderecho.transport.auth.HandshakeError` (a wrong group or secret)."""
    host, port = parse_address(address)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            handshake = Handshake(
                Identity(group, secret, CLIENT_ID), Role.DIALER, secrets.token_bytes(NONCE_SIZE)
            )
            await run_handshake(reader, writer, handshake, timeout)
            frame = await read_frame(reader, MAX_STATUS_BYTES)
        finally:
            writer.close()
    if frame is None:
        raise FrameError("the member closed the connection without answering")
    status = json.loads(frame)
    if not isinstance(status, dict):
        raise FrameError("the member's answer is not a JSON object")
    return status


def format_status(status: Mapping[str, Any]) -> str:
    """A member's status as a few lines of text for a terminal."""
    view = status["view"]
    lines = [
        f"member {status['member']} ({status['transport']} {status['address']}, "
        f"pid {status['pid']}, up {status['uptime_s']:.1f} s)"
        + (f", stopped: {status['stopped']}" if status["stopped"] else ""),
        f"view {view['epoch']}: members {view['members']}"
        + (f", joined {view['joined']}" if view["joined"] else "")
        + (f", departed {view['departed']}" if view["departed"] else "")
        + ("" if status["adequate"] else f" (inadequate: {status['reason']})"),
    ]
    for shard in status["shards"]:
        mark = "*" if shard["mine"] else " "
        lines.append(
            f" {mark} {shard['type']}[{shard['index']}] subgroup {shard['subgroup']} shard "
            f"{shard['shard']}: {shard['members']} {shard['mode']}"
        )
    counts = status["counts"]
    delivered = ", ".join(f"{mode} {n}" for mode, n in sorted(counts["delivered"].items()))
    lines.append(f"sent {counts['sent']}, delivered {delivered or 'nothing yet'}")
    for name in ("node", "transport"):
        stats = status[f"{name}_stats"]
        if stats:
            shown = ", ".join(f"{key} {value}" for key, value in sorted(stats.items()))
            lines.append(f"{name} counters: {shown}")
    return "\n".join(lines)
