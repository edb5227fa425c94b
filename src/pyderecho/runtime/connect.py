"""From checked settings to a running transport: the one place that knows how tcp, shm, TLS
and contact addresses are set up, for :class:`~pyderecho.runtime.group.Group` and the
``pyderecho node`` command alike."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
from collections.abc import Collection
from pathlib import Path

from pyderecho.config import Settings
from pyderecho.core.view import NodeId
from pyderecho.transport.auth import HandshakeError, HandshakeIncomplete, HandshakeTimeout
from pyderecho.transport.base import Transport
from pyderecho.transport.shm import ShmTransport
from pyderecho.transport.tcp import TcpTransport

DEFAULT_SHM_DIR = "/tmp/pyderecho-shm"
"""Where shm members meet when nobody says otherwise: one directory per host and group."""


LINK_TIMEOUTS = 10
"""Heartbeat timeouts a TCP link's sent data may stay unacknowledged before the link breaks
(``TcpTransport(user_timeout=)``): long enough that only a cut link, never a busy peer, breaks
it; short enough that a cut between members that do not watch each other is found."""


def build_transport(
    settings: Settings, *, shm_dir: str | Path | None = None
) -> tuple[Transport, dict[NodeId, str]]:
    """The transport, and the address of every member known so far (this one's included
    when the settings give it)."""
    me = settings.member_id
    if settings.transport == "shm":
        # Members on one host share the socket directory: its path is every address.
        directory = os.path.abspath(shm_dir or os.path.join(DEFAULT_SHM_DIR, settings.group))
        os.makedirs(directory, exist_ok=True)
        shm = ShmTransport(me, directory, group=settings.group, secret=shm_secret(settings))
        return shm, {m.id: directory for m in settings.members} | {me: directory}
    assert settings.listen is not None and settings.secret is not None, "checked by config"
    server, client = tls_contexts(settings) if settings.tls is not None else (None, None)
    tcp = TcpTransport(
        me,
        str(settings.listen),
        group=settings.group,
        secret=settings.secret,
        user_timeout=LINK_TIMEOUTS * settings.core.heartbeat_timeout,
        ssl_server=server,
        ssl_client=client,
    )
    addresses = {m.id: str(m.address) for m in settings.members if m.address is not None}
    if me not in addresses and settings.listen.port != 0:
        addresses[me] = str(settings.listen)
    return tcp, addresses


async def identify_contacts(
    transport: TcpTransport, settings: Settings, *, known: Collection[NodeId] = ()
) -> dict[NodeId, str]:
    """The id of the member behind each contact address, asked of all at once; those that
    answer are enough to join through, the others only earn a warning. The addresses listed
    in ``members`` are asked too (once each, no retry: a listed member may well be gone), since
    ids are unique: a joiner under the id of a running member would have its links taken for
    that member's reconnection, and the member's own links dropped.

    Raises :class:`~pyderecho.config.SettingsError` about ``contacts`` when none answers and
    no member is ``known`` to join through otherwise, each contact named by its place in the
    list, its address and why; and about ``member_id`` when a contact or a listed member's
    address answers with this member's own id.
    """
    listed = [
        (f"members[{i}]", str(m.address))
        for i, m in enumerate(settings.members)
        if m.address is not None
    ]
    contacts = [(f"contacts[{i}]", str(address)) for i, address in enumerate(settings.contacts)]
    answers = await asyncio.gather(
        *(transport.identify(address) for _, address in contacts),
        *(transport.identify(address, timeout=0) for _, address in listed),
        return_exceptions=True,
    )
    for (where, address), answer in zip(contacts + listed, answers, strict=True):
        if isinstance(answer, BaseException) and not isinstance(answer, HandshakeError | OSError):
            raise answer
        if answer == settings.member_id:
            raise settings.error(
                "member_id", f"{answer} is taken: the member at {address} ({where}) holds it"
            )
    found: dict[NodeId, str] = {}
    problems: list[str] = []
    for (where, address), answer in zip(contacts, answers[: len(contacts)], strict=True):
        if isinstance(answer, HandshakeError | OSError):
            problems.append(f"{where} {address}: {_contact_problem(answer)}")
        elif not isinstance(answer, BaseException):
            found.setdefault(answer, address)
    if contacts and not found and not known:
        raise settings.error("contacts", "no contact answered: " + "; ".join(problems))
    for problem in problems:
        logging.getLogger(__name__).warning("joining without %s", problem)
    return found


def _contact_problem(exc: HandshakeError | OSError) -> str:
    """Why a contact did not say who it is, in words a person configuring the member can use."""
    if isinstance(exc, HandshakeTimeout | HandshakeIncomplete | OSError):
        return f"no answer within the connect timeout: {exc or type(exc).__name__}"
    return f"{exc} (is it a member of this group, with the same secret?)"


def bound_address(transport: Transport) -> str:
    """Where a TCP member listening on port 0 ended up (other transports know beforehand)."""
    assert isinstance(transport, TcpTransport), "only tcp addresses are left to the bind"
    return transport.address


def shm_secret(settings: Settings) -> bytes:
    """The group secret, or for an shm group without one a stand-in derived from its name.

    The shm transport always runs the secret handshake, and the settings let an shm group go
    without a secret: its members are then told apart from other users' processes only by the
    transport's same-user check (``SO_PEERCRED``), which is what such a group asked for.
    """
    if settings.secret is not None:
        return settings.secret
    logging.getLogger(__name__).warning(
        "no group secret: shm peers are authenticated only as processes of the same user"
    )
    return hashlib.sha256(
        b"pyderecho shm group without a secret\x00" + settings.group.encode()
    ).digest()


def tls_contexts(settings: Settings) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """Server and client contexts from the settings' certificate, key and CA: with a CA, each
    side requires the other's certificate to chain to it (mutual TLS)."""
    tls = settings.tls
    assert tls is not None
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls.ca)
    server.load_cert_chain(tls.cert, tls.key)
    if tls.ca is not None:
        server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca)
    client.load_cert_chain(tls.cert, tls.key)
    return server, client
