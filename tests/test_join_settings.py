"""Joining as the settings describe it: through contact addresses (tcp), or by id alone (shm).

The first tests drive ``pyderecho node``'s contact lookup over real sockets; the others start
real member processes through :class:`pyderecho.cli.demo.LocalGroup`, every wait bounded, and leave
nothing running whatever way they end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from pyderecho.cli.demo import LocalGroup
from pyderecho.config import Settings, SettingsError, load_settings
from pyderecho.runtime.connect import identify_contacts
from pyderecho.transport.tcp import TcpTransport
from transport_conformance import Recorder

WAIT_S = 20.0
HERE = "127.0.0.1"
GROUP = "join-test"
SECRET = "a group secret, long enough"


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pdj-", dir="/tmp"))  # shm socket paths must be short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def unused_address() -> str:
    with socket.socket() as probe:
        probe.bind((HERE, 0))
        return f"{HERE}:{probe.getsockname()[1]}"


def joiner_settings(contacts: Sequence[str], member_id: int = 7) -> Settings:
    return load_settings(
        environ={
            "PYDERECHO_GROUP": GROUP,
            "PYDERECHO_MEMBER_ID": str(member_id),
            "PYDERECHO_SECRET": SECRET,
            "PYDERECHO_LISTEN": f"{HERE}:0",
            "PYDERECHO_CONTACTS": ",".join(contacts),
        }
    )


@asynccontextmanager
async def members(*ids: int) -> AsyncIterator[list[TcpTransport]]:
    """Started transports standing for running members, which must hear of no lost peer."""
    recorder = Recorder()
    transports = [TcpTransport(i, f"{HERE}:0", group=GROUP, secret=SECRET.encode()) for i in ids]
    try:
        for transport in transports:
            await transport.start(recorder.on_frame, recorder.on_peer_lost)
        yield transports
        assert not recorder.lost
    finally:
        for transport in transports:
            await transport.close()


def lookup(settings: Settings, known: Sequence[int] = ()) -> dict[int, str]:
    async def scenario() -> dict[int, str]:
        joiner = TcpTransport(
            settings.member_id,
            str(settings.listen),
            group=GROUP,
            secret=SECRET.encode(),
            connect_timeout=0.3,
        )
        try:
            return await identify_contacts(joiner, settings, known=known)
        finally:
            await joiner.close()

    return asyncio.run(asyncio.wait_for(scenario(), WAIT_S))


def test_contacts_are_identified_and_the_silent_ones_only_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    silent = unused_address()

    async def scenario() -> None:
        async with members(0, 1) as (zero, one):
            settings = joiner_settings([one.address, silent, zero.address])
            found = await asyncio.to_thread(lookup, settings)
            assert found == {1: one.address, 0: zero.address}
            assert (zero.stats["identified"], one.stats["identified"]) == (1, 1)

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert f"joining without contacts[1] {silent}: no answer" in caplog.text


def test_no_contact_answering_names_the_key_and_each_address() -> None:
    silent = [unused_address(), unused_address()]
    with pytest.raises(SettingsError) as caught:
        lookup(joiner_settings(silent))
    error = caught.value
    assert (error.key, error.source) == ("contacts", "environment variable PYDERECHO_CONTACTS")
    assert error.problem.startswith("no contact answered: ")
    assert f"contacts[0] {silent[0]}: no answer within the connect timeout" in error.problem
    assert f"contacts[1] {silent[1]}" in error.problem
    # A joiner that also knows members by id goes on without the contacts.
    assert lookup(joiner_settings(silent), known=[0]) == {}


def test_a_contact_holding_this_members_id_is_refused() -> None:
    async def scenario() -> None:
        async with members(7) as (seven,):
            with pytest.raises(SettingsError) as caught:
                await asyncio.to_thread(lookup, joiner_settings([seven.address], member_id=7))
            assert caught.value.key == "member_id"
            assert f"7 is taken: the member at {seven.address} (contacts[0])" in str(caught.value)

    asyncio.run(scenario())


# -- real processes ------------------------------------------------------------------------------


def node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyderecho.cli", "node", "--group", GROUP, *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PYDERECHO_SECRET": SECRET},
    )  # fmt: skip


def test_who_founds_and_who_joins_is_checked_before_starting() -> None:
    outsider = node("--member-id", "3", "--transport", "shm", "--members", "0,1")
    assert outsider.returncode == 2
    assert "members (flag --members): does not include member_id 3" in outsider.stderr
    alone = node("--member-id", "3", "--listen", "127.0.0.1:0", "--join")
    assert alone.returncode == 2
    assert "contacts (flag --join): a joining member needs members to contact" in alone.stderr
    shm_by_address = node("--member-id", "3", "--transport", "shm", "--contacts", "a:1")
    assert shm_by_address.returncode == 2
    assert "contacts (flag --contacts): the shm transport reaches members by id" in (
        shm_by_address.stderr
    )


def joiner_config(group: LocalGroup, path: Path, contacts: list[str], secret_file: str) -> Path:
    """The group's settings file without its founding view: a joiner that knows the group only
    by the contacts' addresses, listening on any free port."""
    settings = tomllib.loads(group.config.read_text())
    lines = [
        f"{key} = {json.dumps(settings[key])}"
        for key in ("group", "transport", "layout", "heartbeat_interval_ms", "heartbeat_timeout_ms")
    ]
    lines += [
        f"secret_file = {json.dumps(secret_file)}",
        f'listen = "{HERE}:0"',
        f"contacts = {json.dumps(contacts)}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def status(*contacts: str, config: Path) -> list[dict[str, object]]:
    shown = subprocess.run(
        [sys.executable, "-m", "pyderecho.cli", "status", "--json", "--config", str(config),
         "--member-id", "0", *(arg for c in contacts for arg in ("--contact", c))],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return [json.loads(line) for line in shown.stdout.splitlines()]


def test_a_member_joins_through_contact_addresses(workdir: Path) -> None:
    async def scenario() -> None:
        async with LocalGroup(workdir, 3) as group:
            await group.found("--status-port", "0")
            ready = {
                m: await node.wait_for(lambda r: r.get("event") == "ready", WAIT_S)
                for m, node in group.nodes.items()
            }
            for node in group.nodes.values():
                await node.wait_for_view(lambda v: v["epoch"] == 0, WAIT_S)
            contacts = [ready[m]["address"] for m in (2, 0, 1)]

            # A wrong secret: refused by every contact, a clear error, exit 2, nobody disturbed.
            (workdir / "wrong.secret").write_text("not the group's secret at all\n")
            wrong = joiner_config(group, workdir / "wrong.toml", contacts, "wrong.secret")
            refused = await group.start(4, "--config", str(wrong), "--join")
            assert await refused.exit_status(WAIT_S) == 2
            message = refused.stderr.read_text()
            assert "contacts (file " in message and "no contact answered" in message
            assert f"contacts[0] {contacts[0]}: peer refused the link: bad_auth" in message

            config = joiner_config(group, workdir / "joiner.toml", contacts, "group.secret")
            joiner = await group.start(3, "--config", str(config), "--join")
            for node in group.running():
                view = await node.wait_for_view(lambda v: 3 in v["joined"], WAIT_S)
                assert view["members"] == [0, 1, 2, 3]
            assert joiner.last("ready") is not None

            answers = await asyncio.to_thread(
                status, *(ready[m]["status"] for m in (0, 1, 2)), config=config
            )
            for answer in answers:
                stats = answer["transport_stats"]
                assert isinstance(stats, dict)
                # Asked once by each joiner, refused once: no link lost, nobody suspected.
                assert stats["identified"] == 1 and stats["bad_auth"] == 1
                assert stats.get("peer_lost", 0) == 0
            for node in group.nodes.values():
                assert node.last("suspected") is None
            statuses = await group.stop_all(WAIT_S)
            assert statuses == dict.fromkeys(range(4), 0)

    asyncio.run(scenario())


def test_an_shm_group_lists_its_members_by_id_alone(workdir: Path) -> None:
    async def scenario() -> None:
        async with LocalGroup(workdir, 2, transport="shm") as group:
            await group.found("--members", "0,1")  # replaces the file's placeholder addresses
            for node in group.nodes.values():
                view = await node.wait_for_view(lambda v: v["epoch"] == 0, WAIT_S)
                assert view["members"] == [0, 1]
            await group.start(2, "--join", "--members", "0,1")  # a joiner need not list itself
            for node in group.running():
                view = await node.wait_for_view(lambda v: 2 in v["joined"], WAIT_S)
                assert view["members"] == [0, 1, 2]
            assert await group.stop_all(WAIT_S) == {0: 0, 1: 0, 2: 0}

    asyncio.run(scenario())


def test_a_joiner_under_the_id_of_a_listed_member_exits_2_and_disturbs_nobody(
    workdir: Path,
) -> None:
    """A second process started under a running member's id, joining through ``members``:
    were it let to link, the contacts would take its links for the real member's reconnection
    and drop the real ones, and the real member would suspect innocent peers."""

    async def scenario() -> None:
        async with LocalGroup(workdir, 3) as group:
            await group.found()
            for node in group.nodes.values():
                await node.wait_for_view(lambda v: v["epoch"] == 0, WAIT_S)
            real = group.nodes[1]
            twin = await group.start(1, "--join", "--listen", f"{HERE}:0")
            assert await twin.exit_status(WAIT_S) == 2
            message = twin.stderr.read_text()
            taken = f"1 is taken: the member at {group.address_of(1)} (members[1]) holds it"
            assert "member_id (flag --member-id): " + taken in message, message
            # A real joiner gets in, and by then a dropped link would have been suspected.
            await group.start(3, join=True, contacts=[0, 1, 2])
            for node in (group.nodes[0], real, group.nodes[2]):
                view = await node.wait_for_view(lambda v: 3 in v["joined"], WAIT_S)
                assert view["members"] == [0, 1, 2, 3]
                assert node.last("suspected") is None
            assert real.process.returncode is None

    asyncio.run(scenario())
