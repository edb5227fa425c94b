"""A joiner that cannot get in gives up: exit 2 within the join timeout, one line per contact.

Before, a ``--join`` that knew the group from its founding view (``members``) kept dialing
forever when its secret was wrong or its contacts were dead. The core now stops a joiner that
no contact welcomed within ``join_timeout`` and keeps, per contact, why its link broke; the
``pyderecho node`` command prints that and exits 2. The last tests run real processes over
real sockets; the first drives the core alone.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyderecho.cli.demo import LocalGroup
from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Stopped
from pyderecho.core.node import Node
from pyderecho.core.view import View
from pyderecho.layouts import resolve_layout
from pyderecho.wire import JoinRequest

WAIT_S = 30.0
HERE = "127.0.0.1"
JOIN_TIMEOUT_MS = 3000


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pdg-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_joiner_nobody_welcomes_stops_at_the_join_timeout_saying_why_per_contact() -> None:
    config = CoreConfig(join_timeout=3.0)
    addresses = {0: "10.0.0.1:7000", 1: "10.0.0.2:7000"}
    joiner = Node(
        5, None, resolve_layout("every-member"), config, now=0.0, contacts=(0, 1),
        addresses=addresses,
    )  # fmt: skip
    joiner.tick(0.0)
    asked = [dst for dst, message in joiner.outbox() if isinstance(message, JoinRequest)]
    assert asked == [0]
    joiner.link_lost(0, 0.5, "peer refused the link: bad_auth")
    now = 0.0
    while not joiner.stopped:
        deadline = joiner.next_deadline()
        assert deadline is not None and deadline <= config.join_timeout
        now = deadline
        joiner.tick(now)
    assert now == config.join_timeout
    assert joiner.join_failure == {0: "peer refused the link: bad_auth", 1: ""}
    assert joiner.stopped.startswith("could not join within 3 s: ")
    assert "member 0: peer refused the link: bad_auth; member 1: no welcome came" in (
        joiner.stopped
    )
    assert [e for e in joiner.events() if isinstance(e, Stopped)] == [Stopped(joiner.stopped)]
    assert joiner.next_deadline() is None


def test_a_welcomed_joiner_never_gives_up() -> None:
    """The deadline is for getting in: once a member, the joiner is timed like any member."""
    config = CoreConfig(join_timeout=2.0)
    layout = resolve_layout("every-member")
    founder = Node(0, View(0, (0,)), layout, config, now=0.0)
    joiner = Node(1, None, layout, config, now=0.0, contacts=(0,))
    now = 0.0
    while now < 3 * config.join_timeout:
        for node, peer in ((joiner, founder), (founder, joiner)):
            node.tick(now)
            for dst, message in node.outbox():
                assert dst == peer.node_id
                peer.receive(node.node_id, message, now)
        now += 0.05
    assert joiner.is_member and not joiner.stopped and not joiner.join_failure
    assert founder.view.members == (0, 1)


def unused_address() -> str:
    with socket.socket() as probe:
        probe.bind((HERE, 0))
        return f"{HERE}:{probe.getsockname()[1]}"


def joiner_file(path: Path, members: dict[int, str], group: str, secret_file: Path) -> Path:
    """A joiner's settings: it knows the founding view (``members``) and no contacts."""
    listed = "".join(f'[[members]]\nid = {m}\naddress = "{a}"\n\n' for m, a in members.items())
    path.write_text(
        f'group = "{group}"\nsecret_file = "{secret_file}"\nlisten = "{HERE}:0"\n'
        f"heartbeat_interval_ms = 100\nheartbeat_timeout_ms = 1000\n"
        f"join_timeout_ms = {JOIN_TIMEOUT_MS}\n\n{listed}"
    )
    return path


def run_joiner(config: Path, member_id: int) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pyderecho.cli", "node", "--config", str(config),
         "--member-id", str(member_id), "--join"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done.returncode, done.stderr, time.monotonic() - started


def test_a_joiner_whose_members_are_all_dead_exits_2_naming_each(workdir: Path) -> None:
    secret = workdir / "secret"
    secret.write_text("a group secret, long enough\n")
    dead = {0: unused_address(), 1: unused_address()}
    config = joiner_file(workdir / "dead.toml", dead, "gone", secret)
    status, stderr, took = run_joiner(config, 4)
    assert status == 2, stderr
    assert f"member 4 could not join within {JOIN_TIMEOUT_MS // 1000} s" in stderr
    for member, address in dead.items():
        line = next(x for x in stderr.splitlines() if x.strip().startswith(f"member {member} "))
        assert address in line and "unreachable" in line, line
    # The timeout, plus the interpreter's start (slow on a loaded machine), not forever.
    assert took < JOIN_TIMEOUT_MS / 1000 + 60


def test_a_joiner_with_the_wrong_secret_or_group_exits_2_and_disturbs_nobody(
    workdir: Path,
) -> None:
    async def scenario() -> None:
        async with LocalGroup(workdir, 3) as group:
            await group.found()
            views = [
                await node.wait_for_view(lambda v: v["epoch"] == 0, WAIT_S)
                for node in group.nodes.values()
            ]
            members = dict(zip(views[0]["members"], group_addresses(group), strict=True))
            wrong_secret = workdir / "wrong.secret"
            wrong_secret.write_text("not the group's secret at all\n")
            cases = [
                (joiner_file(workdir / "s.toml", members, group_name(group), wrong_secret),
                 "peer refused the link: bad_auth"),
                (joiner_file(workdir / "g.toml", members, "other", workdir / "group.secret"),
                 "peer refused the link: wrong_group"),
            ]  # fmt: skip
            for config, reason in cases:
                status, stderr, _ = await asyncio.to_thread(run_joiner, config, 7)
                assert status == 2, stderr
                lines = stderr.splitlines()
                for member, address in members.items():
                    named = [x for x in lines if x.startswith(f"  member {member} at {address}: ")]
                    assert len(named) == 1 and named[0].endswith(reason), stderr
            for node in group.nodes.values():
                assert node.last("suspected") is None
                assert node.process.returncode is None
            assert await group.stop_all(WAIT_S) == dict.fromkeys(range(3), 0)

    asyncio.run(scenario())


def group_name(group: LocalGroup) -> str:
    line = next(x for x in group.config.read_text().splitlines() if x.startswith("group"))
    return line.split("=", 1)[1].strip().strip('"')


def group_addresses(group: LocalGroup) -> list[str]:
    lines = group.config.read_text().splitlines()
    return [x.split("=", 1)[1].strip().strip('"') for x in lines if x.startswith("address")]
