"""The shared state table (SST), one slice per shard.

Each member of a shard owns one row and is the only one that writes it; it pushes the row to the
other members, who merge it into their local copy. Every column is monotonic within an epoch
(counters only grow), so merging is an element-wise maximum: a stale, duplicated or reordered
push can never move a column backwards. Protocol steps are predicates over these columns
("every member's ``seq`` is at least k"), which stay true once true.
"""

from __future__ import annotations

from pyderecho.core.errors import RemoteProtocolError
from pyderecho.wire import CLEANED, CUT_LOGGED, ShardRow


class ShardTable:
    """The SST slice of one shard: rows indexed by member rank within the shard."""

    __slots__ = (
        "cleaned",
        "cut_logged",
        "cutoff",
        "delivered",
        "floor",
        "num_members",
        "num_senders",
        "persisted",
        "received",
        "seq",
        "stale_pushes",
        "suspected",
        "wedged",
    )

    def __init__(self, num_members: int, num_senders: int) -> None:
        self.num_members = num_members
        self.num_senders = num_senders
        self.received: list[list[int]] = [[0] * num_senders for _ in range(num_members)]
        self.seq: list[int] = [-1] * num_members
        self.delivered: list[int] = [-1] * num_members
        self.wedged: list[bool] = [False] * num_members
        self.suspected: list[int] = [0] * num_members
        self.cutoff: list[tuple[int, ...]] = [()] * num_members
        self.persisted: list[int] = [-1] * num_members
        self.floor: list[int] = [0] * num_members
        self.cleaned: list[bool] = [False] * num_members
        self.cut_logged: list[bool] = [False] * num_members
        self.stale_pushes = 0
        """Pushes that changed nothing: harmless, counted so that a flood is visible."""

    def merge(self, rank: int, row: ShardRow) -> bool:
        """Fold a pushed row into the table; True when any column moved forward."""
        if len(row.received) != self.num_senders:
            raise RemoteProtocolError(
                f"row has {len(row.received)} received counters, the shard has "
                f"{self.num_senders} senders"
            )
        changed = False
        received = self.received[rank]
        for sender, count in enumerate(row.received):
            if count > received[sender]:
                received[sender] = count
                changed = True
        if row.seq > self.seq[rank]:
            self.seq[rank] = row.seq
            changed = True
        if row.delivered > self.delivered[rank]:
            self.delivered[rank] = row.delivered
            changed = True
        if row.wedged and not self.wedged[rank]:
            self.wedged[rank] = True
            changed = True
        if row.suspected | self.suspected[rank] != self.suspected[rank]:
            self.suspected[rank] |= row.suspected
            changed = True
        if row.cutoff and not self.cutoff[rank]:
            if len(row.cutoff) != self.num_senders:
                raise RemoteProtocolError(f"a cutoff of {len(row.cutoff)} senders")
            self.cutoff[rank] = row.cutoff
            changed = True
        if row.persisted > self.persisted[rank]:
            self.persisted[rank] = row.persisted
            changed = True
        if row.floor > self.floor[rank]:
            self.floor[rank] = row.floor
            changed = True
        if row.cleaned and not self.cleaned[rank]:
            self.cleaned[rank] = True
            changed = True
        if row.cut_logged and not self.cut_logged[rank]:
            self.cut_logged[rank] = True
            changed = True
        if not changed:
            self.stale_pushes += 1
        return changed

    def min_received(self, sender: int) -> int:
        """How many of ``sender``'s messages every member holds: frees window slots."""
        return min(row[sender] for row in self.received)

    def min_seq(self) -> int:
        """The largest global index every member holds: what is stable."""
        return min(self.seq)

    def min_persisted(self) -> int:
        """The largest global index every member has logged durably (``Paxos`` shards)."""
        return min(self.persisted)

    def row(self, rank: int, epoch: int, subgroup: int, shard: int, nulls: int = 0) -> ShardRow:
        """The row at ``rank`` as a push message, carrying ``nulls`` (see the wire field)."""
        return ShardRow(
            epoch=epoch,
            subgroup=subgroup,
            shard=shard,
            received=tuple(self.received[rank]),
            seq=self.seq[rank],
            delivered=self.delivered[rank],
            wedged=self.wedged[rank],
            suspected=self.suspected[rank],
            cutoff=self.cutoff[rank],
            persisted=self.persisted[rank],
            floor=self.floor[rank],
            nulls=nulls,
            cleanup=(CLEANED if self.cleaned[rank] else 0)
            | (CUT_LOGGED if self.cut_logged[rank] else 0),
        )
