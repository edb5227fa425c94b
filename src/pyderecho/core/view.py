"""Views: the epoch-numbered member lists that virtual synchrony moves through."""

from __future__ import annotations

from dataclasses import dataclass, field

NodeId = int


@dataclass(frozen=True, slots=True)
class View:
    """One installed membership: every member sees the same views in the same order.

    Rank is a member's position in ``members``; the lowest-ranked unsuspected member leads
    view changes, and ranks order the senders of each shard's round robin.
    """

    epoch: int
    members: tuple[NodeId, ...]
    joined: tuple[NodeId, ...] = ()
    departed: tuple[NodeId, ...] = ()
    _ranks: dict[NodeId, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        ranks = {node: rank for rank, node in enumerate(self.members)}
        if len(ranks) != len(self.members):
            raise ValueError(f"view {self.epoch} lists a member twice: {self.members}")
        object.__setattr__(self, "_ranks", ranks)

    def __contains__(self, node: object) -> bool:
        return node in self._ranks

    def rank_of(self, node: NodeId) -> int:
        """The member's rank, or ``-1`` when it is not in this view."""
        return self._ranks.get(node, -1)

    @property
    def num_members(self) -> int:
        return len(self.members)
