"""Versioned fields: a value's history, read as of a past version or time, up to the frontier.

The unit tests run a :class:`Versioned` under hand-made call contexts (an ordered call at a
version and timestamp, a query at a replica's applied version and timestamp) and check it
against a plain list of entries. The group tests run a class with a Versioned field in a
``Paxos`` shard: in the simulator (replicas agree, reads past the frontier are refused to a
remote caller, a joiner and a total restart keep the history) and on real members with real
logs (the history survives a snapshot and a restart of the whole group).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyderecho import (
    CoreConfig,
    Group,
    HistoryTrimmed,
    NotYetStable,
    RemoteError,
    Versioned,
    context,
    every_member,
    layout_of,
    ordered,
    query,
)
from pyderecho.core.layout import Mode
from pyderecho.replicated import context as ctx
from pyderecho.replicated.events import CallDone, QueryDone, StateReceived
from pyderecho.replicated.methods import type_spec
from pyderecho.replicated.state import restore, snapshot
from pyderecho.runtime.persistence import load_recovery, read_shard_log, shard_directory
from pyderecho.sim.simulation import Simulation
from pyderecho.testing import MemoryNetwork, MemoryTransport

KEY = ("Account", 0, 0)


@contextmanager
def ordered_call(version: tuple[int, int], timestamp: float) -> Iterator[None]:
    """Run the block as an ordered call of ``KEY`` at ``version`` and ``timestamp``."""
    token = ctx.enter(ctx.CallContext(0, 0, KEY, version, timestamp, None))
    try:
        yield
    finally:
        ctx.leave(token)


@contextmanager
def query_call(applied: tuple[int, int], applied_timestamp: float | None) -> Iterator[None]:
    """Run the block as a query on a replica that has applied up to ``applied``."""
    token = ctx.enter(
        ctx.CallContext(
            0,
            0,
            KEY,
            None,
            0.0,
            None,
            applied_version=applied,
            applied_timestamp=applied_timestamp,
        )
    )
    try:
        yield
    finally:
        ctx.leave(token)


# -- the field on its own ---------------------------------------------------------------------


def test_a_field_reads_its_default_until_set_and_each_set_is_kept() -> None:
    field: Versioned[str] = Versioned("none")
    assert field.current == "none"
    with ordered_call((1, 1), 10.0):
        field.set("a")
    with ordered_call((1, 3), 12.0):
        field.set("b")
        field.set("c")  # a second set in one call replaces the first
    assert field.current == "c"
    with query_call((1, 5), 20.0):
        assert [field.at_version((1, n)) for n in range(5)] == ["none", "a", "a", "c", "c"]
        assert field.at_version((0, 9)) == "none"
        assert [field.at_time(t) for t in (9.9, 10.0, 11.9, 12.0, 20.0)] == [
            "none",
            "a",
            "a",
            "c",
            "c",
        ]


def test_set_is_refused_outside_an_ordered_call_and_backwards() -> None:
    field: Versioned[int] = Versioned(0)
    with pytest.raises(RuntimeError, match="only available inside an @ordered or @query"):
        field.set(1)
    with query_call((1, 1), 1.0), pytest.raises(RuntimeError, match="needs an @ordered method"):
        field.set(1)
    with ordered_call((2, 4), 1.0):
        field.set(1)
    with ordered_call((2, 3), 2.0), pytest.raises(ValueError, match="versions only go forward"):
        field.set(2)
    with pytest.raises(RuntimeError, match="only available inside"):
        field.at_version((2, 4))
    assert field.current == 1 and field.versions == [(2, 4)]


def test_reads_past_the_frontier_are_refused() -> None:
    field: Versioned[int] = Versioned(0)
    with ordered_call((1, 1), 5.0):
        field.set(1)
        assert field.at_version((1, 1)) == 1 and field.at_time(5.0) == 1
        with pytest.raises(NotYetStable, match=r"version \(1, 2\) is past"):
            field.at_version((1, 2))
        with pytest.raises(NotYetStable, match=r"time 5\.5 is past"):
            field.at_time(5.5)
    with query_call((1, 4), 7.0):
        assert field.at_version((1, 4)) == 1 and field.at_time(7.0) == 1
        with pytest.raises(NotYetStable):
            field.at_version((2, 0))
        with pytest.raises(NotYetStable):
            field.at_time(7.25)
        with pytest.raises(ValueError, match="NaN"):
            field.at_time(float("nan"))
    # Right after a restart the replica knows no timestamp yet: the field's own last entry
    # was applied, so times up to it are still answered.
    with query_call((1, 4), 0.0):
        assert field.at_time(5.0) == 1
        with pytest.raises(NotYetStable):
            field.at_time(5.5)


def test_a_query_outside_a_paxos_shard_refuses_reads_at_a_time() -> None:
    field: Versioned[int] = Versioned(0)
    with ordered_call((1, 1), 5.0):
        field.set(1)
    with query_call((1, 1), None):
        assert field.at_version((1, 1)) == 1
        with pytest.raises(RuntimeError, match="needs a Paxos shard"):
            field.at_time(5.0)


def test_keep_bounds_the_history_and_says_what_is_still_readable() -> None:
    field: Versioned[int] = Versioned(-1, keep=2)
    for n in range(1, 5):
        with ordered_call((3, n), float(n)):
            field.set(n * 10)
    assert field.values == [30, 40] and field.trimmed
    with query_call((3, 4), 4.0):
        assert field.at_version((3, 3)) == 30 and field.at_time(3.5) == 30
        with pytest.raises(HistoryTrimmed, match=r"oldest readable version is \(3, 3\), time 3.0"):
            field.at_version((3, 2))
        with pytest.raises(HistoryTrimmed, match="keep=2"):
            field.at_time(2.9)
    with pytest.raises(ValueError, match="keep must be at least 1"):
        Versioned(0, keep=0)


def test_times_never_go_back_even_when_a_timestamp_does() -> None:
    """Timestamps rise strictly within a view; a later view's may start lower (senders'
    clocks): the field raises such a time to the one before, so a time has one answer."""
    field: Versioned[int] = Versioned(0)
    with ordered_call((1, 1), 10.0):
        field.set(1)
    with ordered_call((2, 1), 8.0):
        field.set(2)
    assert field.times == [10.0, 10.0]
    with query_call((2, 1), 10.0):
        assert field.at_time(9.0) == 0 and field.at_time(10.0) == 2


class Account:
    """A replicated balance that remembers every past balance."""

    balance: Versioned[int]
    log: Versioned[list[str]]

    def __init__(self) -> None:
        self.balance = Versioned(0)
        self.log = Versioned([], keep=3)

    @ordered
    def deposit(self, amount: int) -> tuple[tuple[int, int], float, int]:
        """Returns the update's version and timestamp, and the new balance."""
        call = context()
        assert call.version is not None
        self.balance.set(self.balance.current + amount)
        self.log.set([*self.log.current, str(amount)][-3:])
        return call.version, call.timestamp, self.balance.current

    @query
    def balance_at_version(self, version: tuple[int, int]) -> int:
        return self.balance.at_version(version)

    @query
    def balance_at_time(self, time: float) -> int:
        return self.balance.at_time(time)

    @query
    def frontier(self) -> tuple[tuple[int, int] | None, float | None]:
        call = context()
        return call.applied_version, call.applied_timestamp


def test_the_history_travels_with_the_state_and_is_checked_on_the_way_in() -> None:
    spec = type_spec("Account", Account)
    account = Account()
    with ordered_call((0, 1), 1.5):
        account.deposit(5)
    copy = restore(spec, snapshot(spec, account))
    assert copy.balance == account.balance and copy.log == account.log
    assert isinstance(copy.balance, Versioned) and copy.log.keep == 3
    with query_call((0, 1), 1.5):
        assert copy.balance_at_version((0, 1)) == 5 and copy.balance_at_time(1.0) == 0

    # As the state travels: one array per field, in the struct's order.
    uneven = [[0, None, [[0, 1]], [], [5], False], [[], 3, [], [], [], False]]
    with pytest.raises(msgspec.ValidationError, match="as many versions"):
        restore(spec, msgspec.msgpack.encode(uneven))
    unsorted = [[0, None, [[0, 2], [0, 1]], [1.0, 2.0], [5, 6], False], [[], 3, [], [], [], False]]
    with pytest.raises(msgspec.ValidationError, match="must rise"):
        restore(spec, msgspec.msgpack.encode(unsorted))
    wrong_type = [[0, None, [], [], [], False], [[], 3, [[0, 1]], [1.0], [[7]], False]]
    with pytest.raises(msgspec.ValidationError, match="Expected `str`"):
        restore(spec, msgspec.msgpack.encode(wrong_type))


# Each step: how far the version moves on (0: the same call again; a new epoch restarts n),
# the timestamp (may go back, as across a view change) and the value.
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["same", "next", "skip", "epoch"]),
        st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
        st.integers(-1000, 1000),
    ),
    max_size=30,
)


@given(steps=STEPS, keep=st.one_of(st.none(), st.integers(1, 5)), probe=st.data())
def test_reads_agree_with_a_list_of_every_entry(
    steps: list[tuple[str, float, int]], keep: int | None, probe: st.DataObject
) -> None:
    field: Versioned[int] = Versioned(-1, keep=keep)
    versions: list[tuple[int, int]] = []  # every entry, never trimmed
    times: list[float] = []
    values: list[int] = []
    epoch, n = 0, 0
    for move, stamp, value in steps:
        if move == "epoch":
            epoch, n = epoch + 1, 1
        elif move == "skip":
            n += 2
        elif move == "next" or n == 0:
            n += 1
        with ordered_call((epoch, n), stamp):
            field.set(value)
        if versions and versions[-1] == (epoch, n):
            values[-1] = value
        else:
            versions.append((epoch, n))
            times.append(max(stamp, times[-1]) if times else stamp)
            values.append(value)
    oldest = 0 if keep is None else max(0, len(values) - keep)
    field = msgspec.msgpack.decode(msgspec.msgpack.encode(field), type=Versioned[int])
    assert field.current == (values[-1] if values else -1)

    def expect(entries: int) -> int | type[Exception]:
        """The value after the first ``entries`` entries, or the error reading it raises."""
        if entries < oldest or (entries == oldest and oldest > 0):
            return HistoryTrimmed
        return values[entries - 1] if entries else -1

    frontier_time = times[-1] if times else 0.0
    with query_call((epoch, n), frontier_time):
        for _ in range(10):
            version = (probe.draw(st.integers(0, epoch + 1)), probe.draw(st.integers(0, n + 2)))
            wanted = (
                NotYetStable
                if version > (epoch, n)
                else expect(sum(1 for v in versions if v <= version))
            )
            time = probe.draw(st.floats(-1.0, 101.0))
            wanted_at_time = (
                NotYetStable if time > frontier_time else expect(sum(1 for t in times if t <= time))
            )
            check(partial(field.at_version, version), wanted)
            check(partial(field.at_time, time), wanted_at_time)


def check(read: Callable[[], int], wanted: int | type[Exception]) -> None:
    if isinstance(wanted, int):
        assert read() == wanted
    else:
        with pytest.raises(wanted):
            read()


# -- a Paxos shard in the simulator ------------------------------------------------------------

FAST = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5, startup_timeout=2.0)
LAYOUT = layout_of({"Account": every_member(Mode.PAXOS)})


def deposits(sim: Simulation, members: list[int], count: int, start: float) -> None:
    for number in range(count):
        member = members[number % len(members)]
        sim.call_ordered(member, "Account", 0, "deposit", number + 1, at=start + number * 0.01)


def acknowledged(sim: Simulation) -> list[tuple[tuple[int, int], float, int]]:
    """Every deposit's (version, timestamp, balance after it), in the shard's order, as every
    replica that ran it answered (a joiner that received it inside its state says so)."""
    found = set()
    for results in sim.results.values():
        for done in results.values():
            if isinstance(done, CallDone):
                answers = [
                    answer
                    for answer in done.replies.values()
                    if not (
                        isinstance(answer, RemoteError) and answer.error_type == "StateTransferred"
                    )
                ]
                version, stamp, balance = answers[0]
                assert all(answer == answers[0] for answer in answers), done
                found.add((tuple(version), stamp, balance))
    return sorted(found)


def ask(sim: Simulation, member: int, method: str, *args: object) -> object:
    """A query from ``member`` to its own replica, run to its answer."""
    query_id = sim.query_now(member, "Account", 0, None, method, *args)
    assert sim.settle(limit=sim.now + 10.0)
    done = sim.results[member][query_id]
    assert isinstance(done, QueryDone)
    return done.result


def check_history(
    sim: Simulation, members: list[int], history: list[tuple[tuple[int, int], float, int]]
) -> None:
    """Every replica answers every past version and time as the acknowledged replies say."""
    for member in members:
        previous = 0
        for version, stamp, balance in history:
            before = (version[0], version[1] - 1)
            assert ask(sim, member, "balance_at_version", before) == previous, (member, version)
            assert ask(sim, member, "balance_at_version", version) == balance
            assert ask(sim, member, "balance_at_time", stamp - 1e-6) == previous
            assert ask(sim, member, "balance_at_time", stamp) == balance
            previous = balance


def refused(result: object) -> str:
    assert isinstance(result, RemoteError), result
    assert result.error_type == "NotYetStable", result
    return result.message


def test_replicas_of_a_paxos_shard_agree_on_the_past_and_refuse_the_future() -> None:
    sim = Simulation(3, LAYOUT, seed=5, config=FAST, types={"Account": Account})
    deposits(sim, [0, 1, 2], 12, start=0.1)
    assert sim.settle(limit=10.0)
    history = acknowledged(sim)
    assert len(history) == 12
    assert [s for _, s, _ in history] == sorted({s for _, s, _ in history}), "strictly rising"
    check_history(sim, [0, 1, 2], history)
    (epoch, last), stamp, _ = history[-1]
    for member in (0, 1, 2):
        assert ask(sim, member, "frontier") == ((epoch, last), stamp)
        assert "past this replica's latest update" in refused(
            ask(sim, member, "balance_at_version", (epoch, last + 1))
        )
        assert "stability frontier" in refused(ask(sim, member, "balance_at_time", stamp + 1e-3))
    # Once an update lands after it, the time that was refused is answered, and for good.
    deposits(sim, [1], 1, start=sim.now + 0.1)
    assert sim.settle(limit=sim.now + 10.0)
    assert ask(sim, 2, "balance_at_time", stamp + 1e-3) == history[-1][2]


def test_a_joiner_receives_the_history_and_a_total_restart_keeps_it() -> None:
    sim = Simulation([0, 1, 2], LAYOUT, seed=7, config=FAST, types={"Account": Account})
    deposits(sim, [0, 1, 2], 9, start=0.1)
    sim.join(3, at=0.5, contacts=[0, 1])
    deposits(sim, [0, 1, 2, 3], 6, start=1.5)
    assert sim.settle(limit=10.0)
    received = [e for e in sim.host_events.get(3, []) if isinstance(e, StateReceived)]
    assert received, "the joiner took the state by transfer"
    history = acknowledged(sim)
    assert len(history) == 15 and history[0][0][0] < history[-1][0][0], "two views"
    check_history(sim, [0, 1, 2, 3], history)

    crash_at = sim.now + 0.1
    for member in range(4):
        sim.crash(member, at=crash_at)
        sim.restart(member, at=crash_at + 0.2)
    assert sim.settle(limit=crash_at + 20.0)
    assert len(sim.restarts) == 4
    check_history(sim, [0, 1, 2, 3], history)
    _, stamp, balance = history[-1]
    assert ask(sim, 3, "balance_at_time", stamp) == balance, "the field's own last entry"
    refused(ask(sim, 3, "balance_at_time", stamp + 1e-3))


# -- real members, real logs -------------------------------------------------------------------

WAIT = 30.0
"""Generous: the real-time waits run on a loaded two-core machine."""


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.network = MemoryNetwork()
        self.addresses = {i: f"mem-{i}" for i in range(3)}
        self.groups: list[Group] = []

    async def start_all(self) -> list[Group]:
        self.groups = list(
            await asyncio.gather(
                *(
                    Group.over(
                        MemoryTransport(m, self.network, self.addresses[m]),
                        member_id=m,
                        layout=LAYOUT,
                        types={"Account": Account},
                        members=[0, 1, 2],
                        addresses=self.addresses,
                        config=FAST,
                        data_dir=self.root / f"member-{m}",
                        snapshot_every=4,
                        segment_bytes=128,
                    )
                    for m in range(3)
                )
            )
        )
        for group in self.groups:
            await group.wait_ready(Account, timeout=WAIT)
        return self.groups

    async def crash_all(self) -> None:
        """Every member stops at once, without leaving."""
        await asyncio.gather(*(group.close() for group in self.groups))
        self.groups = []
        self.network = MemoryNetwork()


def test_the_history_survives_a_snapshot_and_a_restart_of_the_whole_group(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path)

    async def scenario() -> None:
        groups = await cluster.start_all()
        history = []
        for number in range(10):
            replies = await groups[number % 3].subgroup(Account).deposit(number + 1)
            version, stamp, balance = replies.value()
            history.append((tuple(version), stamp, balance))
        await cluster.crash_all()
        recovery = load_recovery(tmp_path / "member-0")
        assert recovery is not None
        recovery.close()
        shard = recovery.shards[KEY]
        records = read_shard_log(shard_directory(tmp_path / "member-0", KEY))
        # The first updates are in the snapshot only, the last ones in the log only.
        assert 0 < shard.snapshot.count < 10 and records[-1].number == 10
        assert records[0].number > 1, "the log segments before the snapshot are gone"

        groups = await cluster.start_all()
        for group in groups:
            accounts = group.subgroup(Account)
            previous = 0
            for version, stamp, balance in history:
                assert await accounts.balance_at_version(version) == balance
                assert await accounts.balance_at_time(stamp) == balance
                assert await accounts.balance_at_time(stamp - 1e-6) == previous
                previous = balance
            with pytest.raises(RemoteError) as late:
                await accounts.balance_at_time(history[-1][1] + 60.0)
            assert late.value.error_type == "NotYetStable"
        replies = await groups[0].subgroup(Account).deposit(100)
        version, stamp, balance = replies.value()
        assert version[0] > history[-1][0][0] and balance == history[-1][2] + 100
        for group in groups:
            assert await group.subgroup(Account).balance_at_time(stamp) == balance

    async def main() -> None:
        try:
            await asyncio.wait_for(scenario(), WAIT * 3)
        finally:
            await cluster.crash_all()

    asyncio.run(main())
