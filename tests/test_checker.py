"""The history checker passes correct histories and catches each kind of planted violation."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pyderecho.core.layout import Mode
from pyderecho.core.view import NodeId
from pyderecho.history.checker import (
    HistoryRecorder,
    ShardKey,
    Violation,
    check_history,
    check_state,
)
from pyderecho.history.records import DeliveryRecord, SentRecord, StateRecord, payload_digest

SHARD: ShardKey = (1, 0, 0)

Entry = tuple[NodeId, int]
"""A message as a test names it: (sender, index)."""


def digest_of(sender: NodeId, index: int, epoch: int = SHARD[0]) -> str:
    return payload_digest(f"{epoch}/{sender}/{index}".encode())


def sends(pattern: Mapping[NodeId, str], epoch: int = SHARD[0]) -> list[SentRecord]:
    """Sent records from one string per sender: ``m`` a message, ``n`` a null, in index order."""
    return [
        SentRecord(
            sender, epoch, SHARD[1], SHARD[2], index, digest_of(sender, index, epoch), kind == "n"
        )
        for sender, slots in pattern.items()
        for index, kind in enumerate(slots)
    ]


def delivered(
    member: NodeId, entries: Sequence[Entry], mode: Mode = Mode.ORDERED, epoch: int = SHARD[0]
) -> list[DeliveryRecord]:
    return [
        DeliveryRecord(
            member,
            epoch,
            SHARD[1],
            SHARD[2],
            mode,
            sender,
            index,
            8,
            digest_of(sender, index, epoch),
        )
        for sender, index in entries
    ]


def kinds(violations: Sequence[Violation]) -> list[str]:
    return [v.kind for v in violations]


# Two senders, 1 and 2; sender 2 is idle once and sends a null (index 1).
PATTERN = {1: "mmm", 2: "mnm"}
# The round robin's order over the non-null messages.
ORDER: list[Entry] = [(1, 0), (2, 0), (1, 1), (1, 2), (2, 2)]
MEMBERS = (1, 2, 3)


def ordered_history(**overrides: Sequence[Entry]) -> dict[NodeId, list[DeliveryRecord]]:
    """Every member delivers ``ORDER``, except those given as ``m<id>=entries``."""
    sequences = {m: overrides.get(f"m{m}", ORDER) for m in MEMBERS}
    return {m: delivered(m, entries) for m, entries in sequences.items()}


def test_a_correct_ordered_history_passes() -> None:
    history = ordered_history()
    assert check_history(history, sends(PATTERN)) == []
    assert check_history(history, sends(PATTERN), complete=True, members_of={SHARD: MEMBERS}) == []


def test_members_may_deliver_prefixes_unless_the_history_is_complete() -> None:
    history = ordered_history(m2=ORDER[:3], m3=[])
    assert check_history(history, sends(PATTERN)) == []
    found = check_history(history, sends(PATTERN), complete=True)
    assert kinds(found) == ["missing"]
    assert found[0].member == 2
    assert "3 of 5" in found[0].detail and "sender 1 #2, sender 2 #2" in found[0].detail


def test_members_of_names_members_that_delivered_nothing() -> None:
    history = ordered_history()
    found = check_history(history, sends(PATTERN), complete=True, members_of={SHARD: (1, 2, 3, 9)})
    assert [(v.kind, v.member) for v in found] == [("missing", 9)]


def test_complete_catches_a_message_nobody_delivered() -> None:
    history = ordered_history()
    found = check_history(history, sends({**PATTERN, 3: "m"}), complete=True)
    assert [(v.kind, v.member) for v in found] == [("missing", m) for m in MEMBERS]


def test_different_orders_are_caught_at_the_first_divergence() -> None:
    swapped = [ORDER[0], ORDER[2], ORDER[1], *ORDER[3:]]
    found = check_history(ordered_history(m3=swapped), sends(PATTERN))
    assert kinds(found) == ["order"]
    assert found[0].member == 3
    assert found[0].detail.startswith("at position 1 delivered sender 1 #1")
    assert "member 1 delivered sender 2 #0" in found[0].detail


def test_the_canonical_sequence_is_the_longest() -> None:
    # Member 1 delivered less, and differently; the longer sequence is the reference.
    found = check_history(ordered_history(m1=[ORDER[1]]), sends(PATTERN))
    assert [(v.kind, v.member) for v in found] == [("order", 1)]
    assert "member 2 delivered sender 1 #0" in found[0].detail


def test_a_dropped_delivery_is_caught() -> None:
    dropped = [*ORDER[:1], *ORDER[2:]]
    found = check_history(ordered_history(m2=dropped), sends(PATTERN), complete=True)
    # Sender 2's #2 now follows nothing of sender 2: a gap, as well as a divergence and a loss.
    assert sorted(kinds(found)) == ["fifo", "missing", "order"]
    assert {v.member for v in found} == {2}


def test_a_duplicate_is_caught() -> None:
    found = check_history(ordered_history(m1=[*ORDER, ORDER[2]]), sends(PATTERN))
    assert kinds(found) == ["duplicate"]
    assert "sender 1 #1" in found[0].detail


def test_an_invented_message_is_caught() -> None:
    found = check_history(ordered_history(m1=[*ORDER, (1, 3)]), sends(PATTERN))
    assert kinds(found) == ["invented"]
    assert found[0].member == 1


def test_a_digest_mismatch_is_caught() -> None:
    history = ordered_history()
    original = history[3][2]
    history[3][2] = replace(original, digest="0" * 16)
    found = check_history(history, sends(PATTERN))
    # The altered payload also breaks agreement with the other members.
    assert sorted(kinds(found)) == ["digest", "order"]
    assert {v.member for v in found} == {3}


def test_a_delivered_null_is_caught() -> None:
    found = check_history(ordered_history(m2=[*ORDER[:2], (2, 1)]), sends(PATTERN))
    # Delivering the null in place of sender 1 #1 also breaks agreement.
    assert sorted(kinds(found)) == ["null-delivered", "order"]
    assert {v.member for v in found} == {2}


def test_ordered_shards_are_fifo_per_sender_even_with_no_one_to_compare_with() -> None:
    history = {1: delivered(1, [(1, 1), (1, 0)])}
    found = check_history(history, sends(PATTERN))
    assert kinds(found) == ["fifo", "fifo"]
    assert "skipped sender 1 #0" in found[0].detail
    assert "out of order" in found[1].detail


def test_paxos_shards_are_checked_like_ordered_ones() -> None:
    history = {
        1: delivered(1, ORDER, Mode.PAXOS),
        2: delivered(2, [ORDER[1], ORDER[0]], Mode.PAXOS),
    }
    assert kinds(check_history(history, sends(PATTERN))) == ["order"]


def test_raw_members_may_interleave_senders_differently() -> None:
    history = {
        1: delivered(1, ORDER, Mode.RAW),
        2: delivered(2, [(2, 0), (2, 2), (1, 0), (1, 1), (1, 2)], Mode.RAW),
    }
    assert check_history(history, sends(PATTERN), complete=True) == []


def test_a_raw_fifo_reorder_is_caught() -> None:
    history = {1: delivered(1, [(1, 0), (1, 2), (1, 1)], Mode.RAW)}
    found = check_history(history, sends(PATTERN))
    assert kinds(found) == ["fifo", "fifo"]
    assert "sender 1 #2" in found[0].detail and "(a gap)" in found[0].detail
    assert "sender 1 #1" in found[1].detail and "out of order" in found[1].detail


def test_a_raw_gap_is_caught_but_skipping_a_null_is_not() -> None:
    over_null = {1: delivered(1, [(2, 0), (2, 2)], Mode.RAW)}
    assert check_history(over_null, sends(PATTERN)) == []
    gap = {1: delivered(1, [(1, 0), (1, 2)], Mode.RAW)}
    found = check_history(gap, sends(PATTERN))
    assert kinds(found) == ["fifo"]
    assert "skipped sender 1 #1" in found[0].detail


def test_a_raw_history_missing_a_message_is_incomplete() -> None:
    history = {
        1: delivered(1, ORDER, Mode.RAW),
        2: delivered(2, ORDER[:-1], Mode.RAW),
    }
    assert check_history(history, sends(PATTERN)) == []
    found = check_history(history, sends(PATTERN), complete=True)
    assert [(v.kind, v.member) for v in found] == [("missing", 2)]


def test_indices_restart_in_each_epoch() -> None:
    history = {1: delivered(1, ORDER) + delivered(1, [(1, 0)], epoch=2), 2: delivered(2, ORDER)}
    sent = sends(PATTERN) + sends({1: "m"}, epoch=2)
    assert check_history(history, sent, complete=True) == []
    stale = {1: delivered(1, ORDER) + delivered(1, [(1, 1)], epoch=2)}
    found = check_history(stale, sent)
    assert [(v.kind, v.shard) for v in found] == [("invented", (2, 0, 0))]


def test_members_disagreeing_on_the_mode_are_caught() -> None:
    history = {1: delivered(1, ORDER), 2: delivered(2, ORDER, Mode.RAW)}
    found = check_history(history, sends(PATTERN))
    assert [(v.kind, v.member) for v in found] == [("mode", 2)]


def test_a_delivery_outside_the_shard_is_caught() -> None:
    found = check_history(ordered_history(), sends(PATTERN), members_of={SHARD: (1, 2)})
    assert [(v.kind, v.member) for v in found] == [("non-member", 3)]


def test_a_reused_index_is_caught() -> None:
    sent = [*sends(PATTERN), SentRecord(2, *SHARD, 1, digest_of(2, 1))]
    found = check_history(ordered_history(), sent)
    assert [(v.kind, v.member) for v in found] == [("index-reused", 2)]
    assert "a null" in found[0].detail
    # The same record logged twice is harmless.
    assert check_history(ordered_history(), [*sends(PATTERN), sends(PATTERN)[0]]) == []


def test_a_delivery_filed_under_another_member_is_rejected() -> None:
    with pytest.raises(ValueError, match="filed under 2"):
        check_history({2: delivered(1, ORDER)}, sends(PATTERN))


def test_violations_read_as_one_line_sorted_by_shard_then_member() -> None:
    history = {
        3: delivered(3, [*ORDER, (1, 0)]),
        1: delivered(1, ORDER) + delivered(1, [(1, 0), (1, 0)], epoch=2),
    }
    # Sender 1 also reuses its index 0 in epoch 2: found while indexing the sends, before any
    # delivery is looked at, yet listed after epoch 1's violation.
    reused = SentRecord(1, 2, 0, 0, 0, "f" * 16)
    sent = [*sends(PATTERN), *sends({1: "m"}, epoch=2), reused]
    found = check_history(history, sent)
    assert [(v.shard, v.member, v.kind) for v in found] == [
        (SHARD, 3, "duplicate"),
        ((2, 0, 0), 1, "index-reused"),
        ((2, 0, 0), 1, "duplicate"),
    ]
    line = str(found[0])
    assert "\n" not in line
    assert line.startswith("duplicate: member 3, epoch 1 subgroup 0 shard 0: delivered sender 1 #0")


def test_the_recorder_checks_what_it_recorded() -> None:
    recorder = HistoryRecorder()
    for sent in sends(PATTERN):
        recorder.record_sent(sent)
    history = ordered_history(m2=ORDER[:2])
    for delivery in [*history[1], *history[2]]:
        recorder.record_delivery(delivery)
    assert recorder.sent == sends(PATTERN)
    assert dict(recorder.deliveries) == {1: history[1], 2: history[2]}
    assert recorder.check() == []
    assert kinds(recorder.check(complete=True, members_of={SHARD: (1, 2)})) == ["missing"]


# --- Property tests: random valid histories pass; one random mutation is always caught. ----------


@dataclass(frozen=True)
class RandomShard:
    """A round-robin shard's sends and the total order of its non-null messages."""

    sent: list[SentRecord]
    order: list[Entry]
    members: tuple[NodeId, ...]

    def by_sender(self) -> dict[NodeId, list[Entry]]:
        queues: dict[NodeId, list[Entry]] = {}
        for sender, index in self.order:
            queues.setdefault(sender, []).append((sender, index))
        return queues


@st.composite
def random_shards(draw: st.DrawFn) -> RandomShard:
    """Several senders in round robin, each slot a message or a null, plus non-sending members."""
    num_senders = draw(st.integers(1, 4))
    members = tuple(range(1, num_senders + draw(st.integers(0, 2)) + 1))
    rounds = draw(st.integers(1, 6))
    nulls = draw(
        st.lists(st.booleans(), min_size=rounds * num_senders, max_size=rounds * num_senders)
    )
    sent: list[SentRecord] = []
    order: list[Entry] = []
    for slot, null in enumerate(nulls):
        index, sender = divmod(slot, num_senders)
        sent.append(SentRecord(sender + 1, *SHARD, index, digest_of(sender + 1, index), null))
        if not null:
            order.append((sender + 1, index))
    assume(order)
    return RandomShard(sent, order, members)


@st.composite
def ordered_prefixes(draw: st.DrawFn) -> tuple[RandomShard, dict[NodeId, list[Entry]]]:
    """A random shard and, per member, a prefix of its order (often all of it)."""
    shard = draw(random_shards())
    full = len(shard.order)
    lengths = st.one_of(st.just(full), st.integers(0, full))
    return shard, {m: shard.order[: draw(lengths)] for m in shard.members}


def as_history(
    sequences: Mapping[NodeId, Sequence[Entry]], mode: Mode = Mode.ORDERED
) -> dict[NodeId, list[DeliveryRecord]]:
    return {m: delivered(m, entries, mode) for m, entries in sequences.items()}


@given(ordered_prefixes())
def test_random_valid_ordered_histories_pass(
    case: tuple[RandomShard, dict[NodeId, list[Entry]]],
) -> None:
    shard, sequences = case
    assert check_history(as_history(sequences), shard.sent) == []
    full = {m: shard.order for m in shard.members}
    members_of = {SHARD: shard.members}
    assert check_history(as_history(full), shard.sent, complete=True, members_of=members_of) == []


@given(ordered_prefixes(), st.data())
def test_one_random_mutation_is_caught(
    case: tuple[RandomShard, dict[NodeId, list[Entry]]], data: st.DataObject
) -> None:
    shard, sequences = case
    nonempty = [m for m, s in sequences.items() if s]
    assume(nonempty)
    member = data.draw(st.sampled_from(nonempty))
    mine = list(sequences[member])
    mutation = data.draw(st.sampled_from(["swap", "drop", "duplicate"]))

    def witnessed(position: int) -> bool:
        """Another member delivered ``position`` too, so the change shows against its sequence."""
        return any(len(s) > position for m, s in sequences.items() if m != member)

    def sender_at(position: int) -> NodeId:
        return mine[position][0]

    if mutation == "duplicate":
        source = data.draw(st.integers(0, len(mine) - 1))
        mine.insert(data.draw(st.integers(source + 1, len(mine))), mine[source])
        expected = {"duplicate", "order"}
    else:
        # Without a witness or a FIFO break, a swap or a drop yields another valid-looking
        # history (the checker does not know the round robin's ranks), so such cases are skipped.
        if mutation == "swap":
            positions = [
                p for p in range(len(mine) - 1) if witnessed(p) or sender_at(p) == sender_at(p + 1)
            ]
        else:
            positions = [
                p
                for p in range(len(mine) - 1)
                if witnessed(p)
                or any(sender_at(p) == sender_at(q) for q in range(p + 1, len(mine)))
            ]
        assume(positions)
        position = data.draw(st.sampled_from(positions))
        if mutation == "swap":
            mine[position], mine[position + 1] = mine[position + 1], mine[position]
        else:
            del mine[position]
        expected = {"order", "fifo"}
    found = check_history(as_history({**sequences, member: mine}), shard.sent)
    assert found, f"{mutation} at member {member} went unnoticed"
    assert set(kinds(found)) <= expected


@given(random_shards(), st.data())
def test_dropping_any_delivery_from_a_complete_history_is_caught(
    shard: RandomShard, data: st.DataObject
) -> None:
    member = data.draw(st.sampled_from(shard.members))
    position = data.draw(st.integers(0, len(shard.order) - 1))
    sequences = {m: shard.order for m in shard.members}
    sequences[member] = shard.order[:position] + shard.order[position + 1 :]
    members_of = {SHARD: shard.members}
    found = check_history(as_history(sequences), shard.sent, complete=True, members_of=members_of)
    assert [(v.kind, v.member) for v in found if v.kind == "missing"] == [("missing", member)]


@given(random_shards(), st.randoms(use_true_random=False))
def test_random_valid_raw_histories_pass(shard: RandomShard, rng: random.Random) -> None:
    queues = shard.by_sender()
    sequences: dict[NodeId, list[Entry]] = {}
    for member in shard.members:
        # Per sender a prefix of its messages, senders interleaved at random.
        prefixes = {s: q[: rng.randint(0, len(q))] for s, q in queues.items()}
        turns = [s for s, prefix in prefixes.items() for _ in prefix]
        rng.shuffle(turns)
        sequences[member] = [prefixes[s].pop(0) for s in turns]
    assert check_history(as_history(sequences, Mode.RAW), shard.sent) == []


@given(random_shards(), st.data())
def test_a_random_raw_reorder_within_a_sender_is_caught(
    shard: RandomShard, data: st.DataObject
) -> None:
    queues = [q for q in shard.by_sender().values() if len(q) >= 2]
    assume(queues)
    queue = list(data.draw(st.sampled_from(queues)))
    first = data.draw(st.integers(0, len(queue) - 2))
    second = data.draw(st.integers(first + 1, len(queue) - 1))
    queue[first], queue[second] = queue[second], queue[first]
    found = check_history(as_history({1: queue}, Mode.RAW), shard.sent)
    assert kinds(found) and set(kinds(found)) == {"fifo"}


# The state rule.


def state(
    reporter: NodeId,
    position: tuple[int, int],
    digest: str,
    kind: str = "view",
    member: NodeId | None = None,
) -> StateRecord:
    return StateRecord(
        reporter, reporter if member is None else member, "KV", 0, 1, position, digest, kind
    )


def test_replicas_agreeing_at_every_position_pass() -> None:
    records = [
        state(1, (0, 3), "aa"),
        state(2, (0, 3), "aa"),
        state(1, (1, 0), "bb", "sent", member=4),
        state(4, (1, 0), "bb", "received"),
        state(4, (1, 2), "cc", "final"),
        state(2, (1, 2), "cc", "final"),
    ]
    assert check_state(records) == []


def test_a_replica_that_diverges_is_named_against_the_majority() -> None:
    records = [state(1, (2, 5), "aa"), state(2, (2, 5), "bad"), state(3, (2, 5), "aa")]
    found = check_state(records)
    assert [(v.kind, v.member, v.shard) for v in found] == [("state", 2, (2, 0, 1))]
    assert "KV[0] shard 1 at position (2, 5)" in found[0].detail
    assert "while 1, 3 held aa" in found[0].detail


def test_a_received_state_must_be_one_its_sender_sent() -> None:
    nobody = check_state([state(4, (1, 0), "bb", "received")])
    assert [(v.kind, v.member) for v in nobody] == [("state-transfer", 4)]
    assert "no member recorded sending it" in nobody[0].detail
    other = check_state(
        [state(0, (1, 0), "bb", "sent", member=4), state(4, (1, 0), "xx", "received")]
    )
    assert sorted(v.kind for v in other) == ["state", "state-transfer"]
    assert "member(s) 0 sent digest(s) bb" in next(
        v.detail for v in other if v.kind == "state-transfer"
    )


def test_a_sent_record_names_the_receiver_not_the_sender() -> None:
    # Member 0 sent its state to 4: that transfer does not vouch for the same state at 6.
    records = [
        state(0, (1, 0), "bb", "sent", member=4),
        state(4, (1, 0), "bb", "received"),
        state(6, (1, 0), "bb", "received"),
    ]
    assert [(v.kind, v.member) for v in check_state(records)] == [("state-transfer", 6)]


def test_the_recorder_applies_the_state_rule() -> None:
    recorder = HistoryRecorder()
    recorder.record_state(state(1, (0, 1), "aa"))
    recorder.record_state(state(2, (0, 1), "ab"))
    recorder.record_state(state(3, (0, 1), "ab"))
    assert [(v.kind, v.member) for v in recorder.check()] == [("state", 1)]
