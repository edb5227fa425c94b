"""Subgroup and shard allocation: the application's layout function, applied to a view.

A layout maps a view to, for each replicated type, a list of subgroups, each a list of shards,
each a list of member ids with a delivery mode. It is recomputed at every view change, so it
must be a pure function of the view.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pyderecho.core.view import NodeId, View


class Mode(enum.Enum):
    """Delivery mode of a shard, named as in Derecho."""

    RAW = "raw"
    """Deliver on receipt, per-sender FIFO, no order across senders."""
    ORDERED = "ordered"
    """One total order over the shard's senders; deliver once every member holds the message."""
    PAXOS = "paxos"
    """As ordered, and deliver only once every member has logged the message durably."""


Raw = Mode.RAW
AtomicMulticast = Mode.ORDERED
Paxos = Mode.PAXOS


class InadequateView(Exception):
    """The view has too few members (or the wrong ones) for the layout.

    A layout function raises it; the view is still installed, but delivers nothing until enough
    members join.
    """


@dataclass(frozen=True, slots=True)
class ShardLayout:
    """One shard: its members in rank order, its mode and which members may send."""

    members: tuple[NodeId, ...]
    mode: Mode = Mode.ORDERED
    senders: tuple[NodeId, ...] | None = None
    """Members allowed to send; ``None`` means every member."""

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a shard needs at least one member")
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"a shard lists a member twice: {self.members}")
        if self.senders is not None:
            outside = [s for s in self.senders if s not in self.members]
            if outside:
                raise ValueError(f"senders {outside} are not members of the shard {self.members}")
            if not self.senders:
                raise ValueError("a shard needs at least one sender")

    @property
    def sending_members(self) -> tuple[NodeId, ...]:
        """The senders in the round robin's order: the members' order, filtered."""
        if self.senders is None:
            return self.members
        allowed = set(self.senders)
        return tuple(m for m in self.members if m in allowed)


Allocation = Mapping[str, Sequence[Sequence[ShardLayout]]]
"""Replicated type name -> subgroups -> shards."""

LayoutFunction = Callable[[View], Allocation]
"""The application's layout: called with each new view; raises :class:`InadequateView`."""


@dataclass(frozen=True, slots=True)
class ShardRef:
    """Where a shard sits: subgroup id (flattened over types) and shard number inside it."""

    subgroup: int
    shard: int
    type_name: str
    subgroup_index: int
    layout: ShardLayout


@dataclass(frozen=True, slots=True)
class ViewLayout:
    """A layout applied to one view: flattened ids, and each member's shards."""

    view: View
    adequate: bool
    shards: tuple[ShardRef, ...] = ()
    subgroup_ids: Mapping[tuple[str, int], int] = field(default_factory=dict)
    reason: str = ""
    """Why the view is inadequate, empty when it is adequate."""
    _by_member: dict[NodeId, list[ShardRef]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        # Every member looks up its own shards at every view: index them once, not per member.
        by_member: dict[NodeId, list[ShardRef]] = {}
        for ref in self.shards:
            for member in ref.layout.members:
                by_member.setdefault(member, []).append(ref)
        object.__setattr__(self, "_by_member", by_member)

    def shards_of(self, node: NodeId) -> list[ShardRef]:
        """The shards ``node`` belongs to, in subgroup and shard order."""
        return list(self._by_member.get(node, ()))


def describe_function(function: object) -> str:
    """A callable by the name a user would look for: ``module.qualname`` where it has them."""
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{name}" if module else name


def compute_layout(layout: LayoutFunction, view: View) -> ViewLayout:
    """Apply ``layout`` to ``view``, checking that it only names members of the view.

    Also checks that no member sits in two shards of one subgroup: a shard is a partition of its
    subgroup's state, so a member in two of them would hold two partitions under one identity.
    """
    try:
        allocation = layout(view)
    except InadequateView as exc:
        return ViewLayout(view=view, adequate=False, reason=str(exc) or "inadequate view")
    refs: list[ShardRef] = []
    subgroup_ids: dict[tuple[str, int], int] = {}
    for type_name, subgroups in allocation.items():
        for subgroup_index, shards in enumerate(subgroups):
            subgroup_id = len(subgroup_ids)
            subgroup_ids[(type_name, subgroup_index)] = subgroup_id
            seen: dict[NodeId, int] = {}
            for shard_num, shard in enumerate(shards):
                strangers = [m for m in shard.members if m not in view]
                if strangers:
                    raise ValueError(
                        f"layout put {strangers} in {type_name}[{subgroup_index}] shard "
                        f"{shard_num}, but they are not members of view {view.epoch}"
                    )
                placed = seen.keys() & shard.members
                if placed:
                    member = min(placed)
                    raise ValueError(
                        f"layout put member {member} in both shard {seen[member]} and shard "
                        f"{shard_num} of {type_name}[{subgroup_index}] in view {view.epoch}"
                    )
                seen.update(dict.fromkeys(shard.members, shard_num))
                refs.append(ShardRef(subgroup_id, shard_num, type_name, subgroup_index, shard))
    return ViewLayout(view=view, adequate=True, shards=tuple(refs), subgroup_ids=subgroup_ids)


class Policy(Protocol):
    """How one replicated type is allocated, given the members left for it.

    :class:`PolicyLayout` first gives every type its minimum, so an early flexible type cannot
    starve a later one, and then hands out the spare members in type order up to each maximum.
    """

    @property
    def min_members(self) -> int:
        """Members the type needs from the shared pool (reserved ids are not counted)."""
        ...

    @property
    def max_members(self) -> int | None:
        """Most members the type can use from the shared pool; ``None`` means no limit."""
        ...

    @property
    def reserved_ids(self) -> frozenset[NodeId]:
        """Ids the type claims by name; they never go to the shared pool."""
        ...

    def allocate(
        self, view: View, members: Sequence[NodeId]
    ) -> tuple[tuple[ShardLayout, ...], ...]:
        """The type's subgroups, given ``members``: pool members in rank order, as many as
        ``min_members`` and at most ``max_members``; every reserved id is in ``view``."""
        ...


def _per_shard_modes(mode: Mode | Sequence[Mode], num_shards: int) -> tuple[Mode, ...]:
    return (mode,) * num_shards if isinstance(mode, Mode) else tuple(mode)


def _shard(members: tuple[NodeId, ...], mode: Mode, senders: int | None) -> ShardLayout:
    return ShardLayout(members, mode, None if senders is None else members[:senders])


def _check_modes_and_senders(modes: tuple[Mode, ...], num_shards: int, senders: int | None) -> None:
    if len(modes) != num_shards:
        raise ValueError(f"{len(modes)} modes given for {num_shards} shards; give one per shard")
    if senders is not None and senders < 1:
        raise ValueError(f"senders must be at least 1, not {senders}")


@dataclass(frozen=True, slots=True)
class ShardPolicy:
    """Subgroups of ``num_shards`` shards each, filled from the shared pool.

    Each shard gets ``min_size`` members first; spare members then go one at a time round-robin
    over the shards until each holds ``max_size``, so shard sizes differ by at most one. Shards
    take consecutive runs of the pool, so the layout follows rank order and is easy to read off.
    """

    num_shards: int = 1
    min_size: int = 1
    max_size: int | None = None
    """``None``: the type takes every spare member left by the types before it."""
    modes: tuple[Mode, ...] = (Mode.ORDERED,)
    senders: int | None = None
    """How many of each shard's lowest-ranked members may send; ``None`` means all of them.

    A count rather than ids, because which ids land in a pooled shard depends on the view.
    """
    num_subgroups: int = 1

    def __post_init__(self) -> None:
        if self.num_shards < 1 or self.num_subgroups < 1:
            raise ValueError(
                f"need at least one subgroup of one shard, not {self.num_subgroups} "
                f"of {self.num_shards}"
            )
        if self.min_size < 1:
            raise ValueError(f"a shard needs at least one member, min_size is {self.min_size}")
        if self.max_size is not None and self.max_size < self.min_size:
            raise ValueError(f"max_size {self.max_size} is below min_size {self.min_size}")
        _check_modes_and_senders(self.modes, self.num_shards, self.senders)

    @property
    def min_members(self) -> int:
        return self.num_subgroups * self.num_shards * self.min_size

    @property
    def max_members(self) -> int | None:
        if self.max_size is None:
            return None
        return self.num_subgroups * self.num_shards * self.max_size

    @property
    def reserved_ids(self) -> frozenset[NodeId]:
        return frozenset()

    def allocate(
        self, view: View, members: Sequence[NodeId]
    ) -> tuple[tuple[ShardLayout, ...], ...]:
        # Dealing spare members round-robin from equal minimums is the same as splitting the
        # total as evenly as possible, with the earlier shards taking the remainder.
        base, bigger = divmod(len(members), self.num_subgroups * self.num_shards)
        subgroups = []
        start = 0
        for subgroup in range(self.num_subgroups):
            shards = []
            for shard, mode in enumerate(self.modes):
                end = start + base + (subgroup * self.num_shards + shard < bigger)
                shards.append(_shard(tuple(members[start:end]), mode, self.senders))
                start = end
            subgroups.append(tuple(shards))
        return tuple(subgroups)


@dataclass(frozen=True, slots=True)
class ReservedPolicy:
    """One subgroup whose shards are exactly the given ids (Derecho's reserved node ids).

    Reserved ids are kept out of the shared pool, but several types may reserve the same id:
    that is how overlapping subgroups are spelled. A view missing any of them is inadequate: the
    application named those members because the shard needs them, not any members.
    """

    shards: tuple[tuple[NodeId, ...], ...]
    modes: tuple[Mode, ...] = (Mode.ORDERED,)
    senders: int | None = None
    """How many of each shard's lowest-ranked members may send; ``None`` means all of them."""

    def __post_init__(self) -> None:
        if not self.shards or not all(self.shards):
            raise ValueError(f"reserved shards must each name at least one id: {self.shards}")
        ids = [node for shard in self.shards for node in shard]
        if len(set(ids)) != len(ids):
            raise ValueError(f"reserved shards of one subgroup name an id twice: {self.shards}")
        _check_modes_and_senders(self.modes, len(self.shards), self.senders)

    @property
    def min_members(self) -> int:
        return 0

    @property
    def max_members(self) -> int | None:
        return 0

    @property
    def reserved_ids(self) -> frozenset[NodeId]:
        return frozenset(node for shard in self.shards for node in shard)

    def allocate(
        self, view: View, members: Sequence[NodeId]
    ) -> tuple[tuple[ShardLayout, ...], ...]:
        return (
            tuple(
                _shard(tuple(sorted(shard, key=view.rank_of)), mode, self.senders)
                for shard, mode in zip(self.shards, self.modes, strict=True)
            ),
        )


@dataclass(frozen=True, slots=True)
class EveryMember:
    """One subgroup of one shard holding the whole view, whatever other types take.

    It overlaps every other type by design: a group-wide service (a registry, a lock table) sits
    beside the sharded ones instead of competing with them for members.
    """

    mode: Mode = Mode.ORDERED
    senders: int | None = None
    """How many of the lowest-ranked members may send; ``None`` means all of them."""

    def __post_init__(self) -> None:
        _check_modes_and_senders((self.mode,), 1, self.senders)

    @property
    def min_members(self) -> int:
        return 0

    @property
    def max_members(self) -> int | None:
        return 0

    @property
    def reserved_ids(self) -> frozenset[NodeId]:
        return frozenset()

    def allocate(
        self, view: View, members: Sequence[NodeId]
    ) -> tuple[tuple[ShardLayout, ...], ...]:
        return ((_shard(view.members, self.mode, self.senders),),)


def sharded(
    num_shards: int,
    shard_size: int | None = None,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    mode: Mode | Sequence[Mode] = Mode.ORDERED,
    senders: int | None = None,
    num_subgroups: int = 1,
    reserved: Sequence[Sequence[NodeId]] | None = None,
) -> ShardPolicy | ReservedPolicy:
    """``num_subgroups`` subgroups of ``num_shards`` shards, sized one of three ways.

    ``shard_size`` fixes every shard's size; ``min_size`` (default 1 when only ``max_size`` is
    given) and ``max_size`` (default unbounded) make them flexible; ``reserved`` names each
    shard's members. ``mode`` is one mode for all shards or one per shard.
    """
    modes = _per_shard_modes(mode, num_shards)
    if reserved is not None:
        if shard_size is not None or min_size is not None or max_size is not None:
            raise ValueError("reserved shards take exactly their ids; give no sizes with them")
        if num_subgroups != 1:
            raise ValueError("reserved ids name the shards of one subgroup; use one per type")
        if len(reserved) != num_shards:
            raise ValueError(f"{len(reserved)} reserved shards given for {num_shards} shards")
        return ReservedPolicy(tuple(tuple(shard) for shard in reserved), modes, senders)
    if shard_size is not None:
        if min_size is not None or max_size is not None:
            raise ValueError("give either shard_size or min_size/max_size, not both")
        min_size = max_size = shard_size
    elif min_size is None:
        if max_size is None:
            raise ValueError("give shard_size, min_size/max_size or reserved")
        min_size = 1
    return ShardPolicy(num_shards, min_size, max_size, modes, senders, num_subgroups)


def one_subgroup(
    size: int | None = None,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    mode: Mode = Mode.ORDERED,
    senders: int | None = None,
    reserved: Sequence[NodeId] | None = None,
) -> ShardPolicy | ReservedPolicy:
    """One subgroup of one shard: ``size`` members, ``min_size``..``max_size``, or ``reserved``.

    A flexible shard takes as many spare members as it can, up to ``max_size``.
    """
    return sharded(
        1,
        size,
        min_size=min_size,
        max_size=max_size,
        mode=mode,
        senders=senders,
        reserved=None if reserved is None else [reserved],
    )


def every_member(mode: Mode = Mode.ORDERED, *, senders: int | None = None) -> EveryMember:
    """One subgroup of one shard holding every member of the view."""
    return EveryMember(mode, senders)


@dataclass(frozen=True)
class PolicyLayout:
    """A layout function built from one policy per replicated type, applied in type order.

    Members are taken in rank order, so every member computes the same allocation from the same
    view. A pool member goes to at most one type; only reserved ids and :func:`every_member`
    make subgroups overlap.
    """

    policies: tuple[tuple[str, Policy], ...]
    _reserved: frozenset[NodeId] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        reserved = frozenset().union(*(policy.reserved_ids for _, policy in self.policies))
        object.__setattr__(self, "_reserved", reserved)

    def __call__(self, view: View) -> dict[str, tuple[tuple[ShardLayout, ...], ...]]:
        if not view.members:
            raise InadequateView(f"view {view.epoch} has no members")
        pool = [node for node in view.members if node not in self._reserved]
        needed = 0
        for name, policy in self.policies:
            absent = sorted(node for node in policy.reserved_ids if node not in view)
            if absent:
                raise InadequateView(
                    f"type {name!r} needs reserved members {absent}, absent from view {view.epoch}"
                )
            if needed + policy.min_members > len(pool):
                raise InadequateView(
                    f"type {name!r} needs {policy.min_members} members but had "
                    f"{len(pool) - needed} in view {view.epoch}: {view.num_members} members, "
                    f"{view.num_members - len(pool)} reserved, {needed} taken by earlier types"
                )
            needed += policy.min_members
        spare = len(pool) - needed
        allocation = {}
        start = 0
        for name, policy in self.policies:
            room = policy.max_members
            extra = spare if room is None else min(spare, room - policy.min_members)
            spare -= extra
            end = start + policy.min_members + extra
            allocation[name] = policy.allocate(view, pool[start:end])
            start = end
        return allocation


def layout_of(policies: Mapping[str, Policy]) -> PolicyLayout:
    """The layout function that allocates each type by its policy, in the mapping's order."""
    return PolicyLayout(tuple(policies.items()))


def seed_example() -> PolicyLayout:
    """Derecho's classic example, the size the simulator is tested at.

    "LoadBalancer": one ordered subgroup of 3; "Cache": 500 ordered shards of 2; "Backend": one
    Paxos shard of at least 22, which takes any members beyond the 1025 the layout needs.
    """
    return layout_of(
        {
            "LoadBalancer": one_subgroup(3),
            "Cache": sharded(500, 2),
            "Backend": one_subgroup(min_size=22, mode=Mode.PAXOS),
        }
    )


def every_member_layout() -> PolicyLayout:
    """ "Group": one ordered subgroup of every member; the simplest useful group, from one up."""
    return layout_of({"Group": every_member()})


def overlap_example() -> PolicyLayout:
    """ "Group": every member; "Trio": the three lowest-ranked members, also in "Group".

    Shows overlapping subgroups on any three or more members, whatever their ids.
    """
    return layout_of({"Group": every_member(), "Trio": one_subgroup(3)})


def shards_of_3() -> PolicyLayout:
    """ "Shards": one ordered subgroup of two shards of 3 members each; needs six members."""
    return layout_of({"Shards": sharded(2, 3)})


builtin_layouts: Mapping[str, Callable[[], LayoutFunction]] = {
    "seed-example": seed_example,
    "every-member": every_member_layout,
    "overlap-example": overlap_example,
    "shards-of-3": shards_of_3,
}
"""Layouts a command line or config file can name instead of ``module:function``."""
