"""The shared state table merges pushed rows monotonically."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyderecho.core.errors import RemoteProtocolError
from pyderecho.core.sst import ShardTable
from pyderecho.wire import ShardRow


def row(received: tuple[int, ...], seq: int = -1, delivered: int = -1) -> ShardRow:
    return ShardRow(epoch=0, subgroup=0, shard=0, received=received, seq=seq, delivered=delivered)


def test_merge_moves_columns_forward_only() -> None:
    table = ShardTable(num_members=2, num_senders=2)
    assert table.merge(1, row((3, 1), seq=2, delivered=1))
    assert not table.merge(1, row((2, 0), seq=1, delivered=0))
    assert table.received[1] == [3, 1]
    assert table.seq[1] == 2
    assert table.delivered[1] == 1
    assert table.stale_pushes == 1


def test_predicates_are_minimums_over_rows() -> None:
    table = ShardTable(num_members=3, num_senders=2)
    table.merge(0, row((5, 2), seq=4))
    table.merge(1, row((3, 4), seq=6))
    assert table.min_received(0) == 0  # row 2 has nothing yet
    table.merge(2, row((4, 3), seq=5))
    assert table.min_received(0) == 3
    assert table.min_received(1) == 2
    assert table.min_seq() == 4


def test_a_row_of_the_wrong_width_is_rejected() -> None:
    table = ShardTable(num_members=2, num_senders=3)
    with pytest.raises(RemoteProtocolError, match="3 senders"):
        table.merge(0, row((1, 1)))


pushes = st.lists(
    st.tuples(st.lists(st.integers(0, 50), min_size=3, max_size=3), st.integers(-1, 100)),
    min_size=1,
    max_size=20,
)


@given(pushes, st.randoms(use_true_random=False))
def test_merge_order_does_not_matter(history: list[tuple[list[int], int]], rnd: Random) -> None:
    """Reordered and duplicated pushes give the same table: merge is a join (max)."""
    in_order = ShardTable(1, 3)
    for received, seq in history:
        in_order.merge(0, row(tuple(received), seq))
    shuffled = history + history[: len(history) // 2]
    rnd.shuffle(shuffled)
    scrambled = ShardTable(1, 3)
    for received, seq in shuffled:
        scrambled.merge(0, row(tuple(received), seq))
    assert scrambled.received == in_order.received
    assert scrambled.seq == in_order.seq
    assert in_order.received[0] == [max(r[i] for r, _ in history) for i in range(3)]
