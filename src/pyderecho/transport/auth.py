"""Mutual authentication of a new link: an HMAC-SHA256 challenge-response over the group secret.

Every link starts with this handshake, before any frame is accepted, so a process without the
group's secret can neither join nor inject messages (DESIGN.md section 4). It runs over any
ordered byte stream, in four length-prefixed messages (see :mod:`pyderecho.transport.framing`)::

    dialer                                   acceptor
      HELLO(version, role, id, nonce_d, group) ->
                                               checks version, role, group, id
                                            <- HELLO(version, role, id, nonce_a, group)
      checks the same, and that the id is the
      member it meant to dial
      PROOF(mac(dialer))                     ->
                                               checks the MAC
                                            <- PROOF(mac(acceptor))
      checks the MAC

where ``mac(role) = HMAC-SHA256(secret, tag | version | group | nonce_d | nonce_a | id_d | id_a
| role)``. Each side answers a fresh nonce of the other, so a recorded proof is useless in any
later session; the prover's role is in the MAC, so an acceptor's proof can never pass as a
dialer's. The acceptor speaks second and proves itself last: a stranger who connects learns
neither the group name (the acceptor checks the dialer's group before sending its own hello) nor
a single MAC made with the secret. Proofs are compared with :func:`hmac.compare_digest`.

A side that refuses the other sends a short REJECT with the reason's *category* only (the
details stay in its own log, so the rejection tells a stranger nothing), then closes; the
refused side learns why at once instead of retrying blindly.

What this does not do: it authenticates the peer when the link opens, it does not protect the
bytes that follow. Against an attacker who can rewrite traffic on the network, run the link over
TLS (the TCP transport accepts an :class:`ssl.SSLContext`); the handshake then runs inside it.

:class:`Handshake` is the protocol as a state machine over byte strings (no I/O, nonce
injected), so it is tested without sockets; :func:`run_handshake` drives it over asyncio
streams for the transports.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import struct
from collections.abc import Container
from dataclasses import dataclass, field
from typing import ClassVar

from pyderecho.core.errors import LocalProtocolError, RemoteProtocolError
from pyderecho.core.view import NodeId
from pyderecho.transport.framing import (
    OversizedFrame,
    TruncatedFrame,
    read_frame,
    write_frames,
)
from pyderecho.wire import WIRE_VERSION

NONCE_SIZE = 32
MIN_SECRET_SIZE = 16
"""A proof and its nonces are visible to an eavesdropper, who can then guess secrets offline at
leisure: a short secret would fall to a dictionary. 16 random bytes cannot."""
MAX_GROUP_NAME = 255
"""Bytes of UTF-8; the name travels behind a one-byte length."""
MAX_HANDSHAKE_MESSAGE = 512
"""No handshake message is longer (a hello is at most 303 bytes): a peer announcing more is
refused before anything is buffered."""
MAX_REJECT_REASON = 64

_HELLO_TAG = b"PDRH"
_PROOF_TAG = b"PDRP"
_REJECT_TAG = b"PDRX"
_HELLO = struct.Struct(">4sHBQ32sB")
"""tag, wire version, role, node id, nonce, length of the group name (which follows)."""
_MAC_DOMAIN = b"pyderecho-link-auth-v1\x00"


class Role(enum.IntEnum):
    """Which end of the link a side is; part of every MAC, so proofs cannot be reflected."""

    DIALER = 0
    ACCEPTOR = 1


@dataclass(frozen=True, slots=True)
class Identity:
    """What a member proves on every link: its node id, and that it holds the group's secret."""

    group: str
    secret: bytes = field(repr=False)
    node_id: NodeId

    def __post_init__(self) -> None:
        name = self.group.encode()
        if not name or len(name) > MAX_GROUP_NAME:
            raise ValueError(f"group name must be 1..{MAX_GROUP_NAME} bytes of UTF-8")
        if len(self.secret) < MIN_SECRET_SIZE:
            raise ValueError(f"group secret must be at least {MIN_SECRET_SIZE} bytes")
        if not 0 <= self.node_id < 2**64:
            raise ValueError(f"node id {self.node_id} is outside 0..2**64-1")


class HandshakeError(RemoteProtocolError):
    """The link was refused during the handshake; ``counter`` is the ``stats`` key it counts as."""

    counter: ClassVar[str] = "bad_hello"


class BadHello(HandshakeError):
    """A message that is not a well-formed handshake message of this version, or an unexpected
    node id (our own, not the member we dialed, not among the allowed ones)."""

    counter: ClassVar[str] = "bad_hello"


class WrongGroup(HandshakeError):
    """The peer belongs to another group."""

    counter: ClassVar[str] = "wrong_group"


class BadAuth(HandshakeError):
    """The peer's proof does not verify: it does not hold the group secret (or replays one)."""

    counter: ClassVar[str] = "bad_auth"


class Rejected(HandshakeError):
    """The peer refused us, with the category of its reason."""

    counter: ClassVar[str] = "rejected"


class HandshakeTimeout(HandshakeError):
    """The handshake did not finish in time: a stalled or too-slow peer."""

    counter: ClassVar[str] = "handshake_timeout"


class HandshakeIncomplete(HandshakeError):
    """The connection ended or failed before the handshake finished."""

    counter: ClassVar[str] = "handshake_incomplete"


class _State(enum.Enum):
    HELLO = enum.auto()
    PROOF = enum.auto()
    DONE = enum.auto()
    FAILED = enum.auto()


class Handshake:
    """One side of the handshake, fed the peer's messages, returning what to send back.

    Usage: send :meth:`initial` if it is not ``None``; then hand each message received to
    :meth:`receive` and send whatever it returns, until :attr:`done`. Any refusal raises a
    :class:`HandshakeError`; the handshake is then over (further calls are a local error).
    """

    def __init__(
        self,
        identity: Identity,
        role: Role,
        nonce: bytes,
        *,
        expected_peer: NodeId | None = None,
        allowed_peers: Container[NodeId] | None = None,
    ) -> None:
        """``nonce`` must be fresh and unpredictable (``secrets.token_bytes(NONCE_SIZE)``).

        ``expected_peer``: the node id the dialer meant to reach; anyone else is refused.
        ``allowed_peers``: when given, the only node ids accepted.
        """
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes")
        self._identity = identity
        self._role = role
        self._nonce = nonce
        self._expected = expected_peer
        self._allowed = allowed_peers
        self._state = _State.HELLO
        self._peer: NodeId | None = None
        self._peer_nonce = b""
        self._proof_sent = False

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def peer(self) -> NodeId:
        """The authenticated peer's node id, once :attr:`done`."""
        if self._state is not _State.DONE or self._peer is None:
            raise LocalProtocolError("the handshake has not completed")
        return self._peer

    @property
    def can_reject(self) -> bool:
        """Whether a REJECT would still be read as part of the handshake: not once a dialer has
        sent its proof (the acceptor may already be reading frames), nor once done."""
        return self._state is not _State.DONE and not self._proof_sent

    def initial(self) -> bytes | None:
        """The opening message: the dialer speaks first, the acceptor waits."""
        return self._hello() if self._role is Role.DIALER else None

    def receive(self, message: bytes) -> bytes | None:
        """Take the peer's next message; return the reply to send, if any."""
        if self._state in (_State.DONE, _State.FAILED):
            raise LocalProtocolError(f"handshake already {self._state.name.lower()}")
        try:
            if message[:4] == _REJECT_TAG:
                raw = message[4 : 4 + MAX_REJECT_REASON].decode("ascii", "replace")
                reason = "".join(ch if ch.isprintable() else "?" for ch in raw)
                raise Rejected(f"peer refused the link: {reason}")
            if self._state is _State.HELLO:
                return self._receive_hello(message)
            return self._receive_proof(message)
        except HandshakeError:
            self._state = _State.FAILED
            raise

    def _hello(self) -> bytes:
        group = self._identity.group.encode()
        header = _HELLO.pack(
            _HELLO_TAG, WIRE_VERSION, self._role, self._identity.node_id, self._nonce, len(group)
        )
        return header + group

    def _receive_hello(self, message: bytes) -> bytes:
        if len(message) < _HELLO.size:
            raise BadHello(f"not a hello ({len(message)} bytes)")
        tag, version, role, node, nonce, group_len = _HELLO.unpack_from(message)
        if tag != _HELLO_TAG:
            raise BadHello(f"not a hello (starts with {message[:4]!r})")
        if len(message) != _HELLO.size + group_len:
            raise BadHello(f"hello of {len(message)} bytes, its group name says otherwise")
        if version != WIRE_VERSION:
            raise BadHello(f"peer speaks wire version {version}, we speak {WIRE_VERSION}")
        if role != 1 - self._role:
            raise BadHello(f"peer claims role {role}, expected the other end of the link")
        group = message[_HELLO.size :]
        if group != self._identity.group.encode():
            shown = group.decode("utf-8", "replace")
            raise WrongGroup(f"peer is in group {shown!r}, we are in {self._identity.group!r}")
        if node == self._identity.node_id:
            raise BadHello(f"peer claims our own node id {node}")
        if self._expected is not None and node != self._expected:
            raise BadHello(f"dialed node {self._expected} but node {node} answered")
        if self._allowed is not None and node not in self._allowed:
            raise BadHello(f"node {node} is not among the allowed members")
        self._peer = node
        self._peer_nonce = nonce
        self._state = _State.PROOF
        if self._role is Role.ACCEPTOR:
            return self._hello()
        self._proof_sent = True
        return _PROOF_TAG + self._mac(self._role)

    def _receive_proof(self, message: bytes) -> bytes | None:
        if len(message) != len(_PROOF_TAG) + hashlib.sha256().digest_size:
            raise BadAuth(f"proof of {len(message)} bytes")
        expected = _PROOF_TAG + self._mac(Role(1 - self._role))
        if not hmac.compare_digest(message, expected):
            raise BadAuth(f"node {self._peer} failed to prove it holds the group secret")
        self._state = _State.DONE
        return _PROOF_TAG + self._mac(self._role) if self._role is Role.ACCEPTOR else None

    def _mac(self, prover: Role) -> bytes:
        """The MAC ``prover`` must present: over both nonces, both ids and the prover's role."""
        assert self._peer is not None
        mine = (self._nonce, self._identity.node_id)
        theirs = (self._peer_nonce, self._peer)
        (dialer_nonce, dialer), (acceptor_nonce, acceptor) = (
            (mine, theirs) if self._role is Role.DIALER else (theirs, mine)
        )
        group = self._identity.group.encode()
        transcript = b"".join(
            (
                _MAC_DOMAIN,
                struct.pack(">HB", WIRE_VERSION, len(group)),
                group,
                dialer_nonce,
                acceptor_nonce,
                struct.pack(">QQB", dialer, acceptor, prover),
            )
        )
        return hmac.digest(self._identity.secret, transcript, "sha256")


def reject_message(reason: str) -> bytes:
    """A REJECT carrying ``reason`` (a category such as ``bad_auth``, never details)."""
    return _REJECT_TAG + reason.encode("ascii", "replace")[:MAX_REJECT_REASON]


async def run_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handshake: Handshake,
    timeout: float,
) -> NodeId:
    """Run ``handshake`` over a fresh stream; return the authenticated peer's node id.

    The whole exchange must finish within ``timeout`` seconds, so a peer that connects and
    stalls (or trickles bytes) holds a socket for a bounded time. Every failure comes out as a
    :class:`HandshakeError`; when the refusal is ours, a REJECT naming its category is written
    first (the caller should then close the stream gracefully so it reaches the peer).
    """
    try:
        async with asyncio.timeout(timeout):
            first = handshake.initial()
            if first is not None:
                write_frames(writer, (first,))
            while not handshake.done:
                message = await read_frame(reader, MAX_HANDSHAKE_MESSAGE)
                if message is None:
                    raise HandshakeIncomplete("connection closed during the handshake")
                reply = handshake.receive(message)
                if reply is not None:
                    write_frames(writer, (reply,))
    except TimeoutError:
        raise HandshakeTimeout(f"no complete handshake within {timeout} s") from None
    except OversizedFrame as exc:
        _reject(writer, handshake, BadHello.counter)
        raise BadHello(f"not a handshake message: {exc}") from None
    except TruncatedFrame as exc:
        raise HandshakeIncomplete(str(exc)) from None
    except OSError as exc:
        raise HandshakeIncomplete(f"connection failed during the handshake: {exc}") from None
    except (Rejected, HandshakeIncomplete):
        raise
    except HandshakeError as exc:
        _reject(writer, handshake, exc.counter)
        raise
    return handshake.peer


def _reject(writer: asyncio.StreamWriter, handshake: Handshake, reason: str) -> None:
    if handshake.can_reject:
        write_frames(writer, (reject_message(reason),))
