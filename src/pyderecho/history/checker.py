"""The history checker: does a run's record of sends and deliveries keep Derecho's promises?

A run (simulated, or real members writing delivery logs) produces one :class:`SentRecord` per
message or null that left a sender and one :class:`DeliveryRecord` per message handed to an
application. :func:`check_history` reads both and lists every broken promise as a
:class:`Violation`, so a failing seed says *what* went wrong, at which member, in which shard.

The ordering check has TigerBeetle's shape: each ordered shard gets one canonical sequence (the
longest one any member delivered) with a running hash per position, each of which stands for the
whole prefix up to it. A member is correct when its own running hash equals the canonical one at
its length; only when it does not are the entries walked to find and report the first divergence.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pyderecho.core.events import Delivered, Event, MessageSent, NullsSent, ViewInstalled
from pyderecho.core.layout import Mode, ViewLayout
from pyderecho.core.view import NodeId, View
from pyderecho.history.records import DeliveryRecord, SentRecord, StateRecord, payload_digest

ShardKey = tuple[int, int, int]
"""A shard of one epoch: ``(epoch, subgroup, shard)``. Indices restart in every epoch."""

ViolationKind = Literal[
    "order",
    "fifo",
    "duplicate",
    "invented",
    "null-delivered",
    "digest",
    "missing",
    "mode",
    "non-member",
    "index-reused",
    "view",
    "virtual-synchrony",
    "state",
    "state-transfer",
]

_SendKey = tuple[int, int, int, NodeId, int]
"""``(epoch, subgroup, shard, sender, index)``: what names one send."""

_MISSING_SHOWN = 5
"""How many missing messages a "missing" violation names before it only counts the rest."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken promise, located precisely enough to start debugging from.

    ``kind`` is a short identifier that stays stable, so tests can match on it:

    - ``order``: an ordered shard's member delivered a sequence that is not a prefix of the
      canonical one (``detail`` names the first divergence and both entries there);
    - ``fifo``: a sender's messages were delivered out of order, or with a message skipped;
    - ``duplicate``: the same ``(sender, index)`` delivered twice to one member;
    - ``invented``: a delivery that no sender sent;
    - ``null-delivered``: a null reached the application;
    - ``digest``: a delivery whose payload differs from what was sent;
    - ``missing``: with ``complete=True``, a member did not deliver everything sent in its shard;
    - ``mode``: members disagree on a shard's delivery mode (their layouts differ);
    - ``non-member``: a delivery at a member that ``members_of`` does not put in the shard;
    - ``index-reused``: a sender sent two different things under one index (``member`` is the
      sender);
    - ``view``: members installed different member lists under one epoch, or a member skipped
      an epoch (``shard`` is ``(epoch, -1, -1)``);
    - ``virtual-synchrony``: two members that both moved on to the next view delivered different
      messages of an ordered shard in this one;
    - ``state``, ``state-transfer``: replicas at the same position of a shard hold different
      state, or a member installed state nobody sent it (:func:`check_state`; ``shard`` is
      ``(epoch, subgroup index, shard)`` there, and ``detail`` names the type).
    """

    kind: ViolationKind
    member: NodeId
    shard: ShardKey
    detail: str

    def __str__(self) -> str:
        epoch, subgroup, shard = self.shard
        return (
            f"{self.kind}: member {self.member}, epoch {epoch} subgroup {subgroup} "
            f"shard {shard}: {self.detail}"
        )


def check_history(
    deliveries: Mapping[NodeId, Sequence[DeliveryRecord]],
    sent: Iterable[SentRecord],
    *,
    complete: bool = False,
    members_of: Mapping[ShardKey, Collection[NodeId]] | None = None,
) -> list[Violation]:
    """Every violation in a history; an empty list means the history keeps every promise.

    ``deliveries`` maps each member to what it delivered, in delivery order. Safety is always
    checked: ordered and persistent shards deliver one sequence everywhere, every shard keeps
    per-sender FIFO order, and nothing is duplicated, invented, altered or a null.

    ``complete=True`` adds liveness, for runs that ended with nothing in flight: every member of
    each shard delivered every non-null message sent in it. The members of a shard are
    ``members_of[shard]`` where given; otherwise (and for shards ``members_of`` does not name)
    every member that sent or delivered anything in it, since senders deliver their own messages.

    Violations come sorted by shard, then member, so the same history always reads the same.
    """
    sends = _Sends(sent)
    grouped, violations = _group(deliveries)
    violations += sends.violations
    shards = set(grouped) | set(sends.senders)
    if members_of is not None:
        shards |= set(members_of)
    for shard in sorted(shards):
        by_member = grouped.get(shard, {})
        named = members_of.get(shard) if members_of is not None else None
        members = (
            set(named) if named is not None else set(by_member) | sends.senders.get(shard, set())
        )
        if by_member and _mode_of(by_member) is not Mode.RAW:
            violations += _check_order(shard, by_member)
        for member in sorted(set(by_member) | members):
            records = by_member.get(member, [])
            if named is not None and member not in members:
                violations.append(
                    Violation(
                        "non-member",
                        member,
                        shard,
                        f"delivered {len(records)} messages in a shard it is not a member of",
                    )
                )
            found, delivered = _check_deliveries(shard, member, records, sends)
            violations += found
            if complete and member in members:
                violations += _check_complete(shard, member, delivered, sends)
    violations.sort(key=lambda v: (v.shard, v.member))
    return violations


def check_views(
    views: Mapping[NodeId, Sequence[View]],
    deliveries: Mapping[NodeId, Sequence[DeliveryRecord]],
    restarts: Mapping[NodeId, Collection[int]] | None = None,
) -> list[Violation]:
    """The virtual synchrony promises, on top of :func:`check_history`'s.

    Every member that installs epoch ``e`` installs the same member list, and a member moves
    through epochs one at a time (it may start later, by joining). Any two members that install
    view ``e + 1`` after ``e`` delivered exactly the same messages, in the same order, in every
    ordered shard of view ``e`` they share: the ragged edge leaves nothing half-delivered.

    ``restarts`` gives, per member, the epochs it founded when it restarted from its logs
    after a crash: it did not move on to such a view from the one before (it crashed in it),
    so neither rule about moving on applies there. The same-members rule does, unless the
    restart's view carried no delivery at that member: a member whose logs missed a view
    founds an outdated one, and is only safe if it stops before delivering anything there.
    """
    restarted = restarts or {}
    violations: list[Violation] = []
    agreed: dict[int, tuple[NodeId, tuple[NodeId, ...]]] = {}
    # The view every member moving through epochs installed is the reference; a restart from
    # logs that missed a view founds one of its own, which counts only if it delivered in it
    # (a member that finds out stops first: its view never carried a message).
    for member in sorted(views):
        for view in views[member]:
            if view.epoch not in restarted.get(member, ()):
                agreed.setdefault(view.epoch, (member, view.members))
    delivered_in = {
        (member, record.epoch) for member, records in deliveries.items() for record in records
    }
    moved_on: dict[NodeId, set[int]] = {}
    for member in sorted(views):
        epochs = moved_on.setdefault(member, set())
        previous: int | None = None
        for view in views[member]:
            first = agreed.setdefault(view.epoch, (member, view.members))
            silent_restart = (
                view.epoch in restarted.get(member, ()) and (member, view.epoch) not in delivered_in
            )
            if first[1] != view.members and not silent_restart:
                violations.append(
                    Violation(
                        "view",
                        member,
                        (view.epoch, -1, -1),
                        f"installed members {list(view.members)}, member {first[0]} installed "
                        f"{list(first[1])}",
                    )
                )
            if previous is not None and view.epoch not in restarted.get(member, ()):
                if view.epoch != previous + 1:
                    violations.append(
                        Violation(
                            "view",
                            member,
                            (view.epoch, -1, -1),
                            f"installed epoch {view.epoch} right after epoch {previous}",
                        )
                    )
                else:
                    epochs.add(previous)
            previous = view.epoch
    ended: dict[ShardKey, dict[NodeId, list[tuple[NodeId, int]]]] = {}
    for member, records in deliveries.items():
        finished = moved_on.get(member, set())
        for record in records:
            if record.mode is not Mode.RAW and record.epoch in finished:
                key = (record.epoch, record.subgroup, record.shard)
                ended.setdefault(key, {}).setdefault(member, []).append(
                    (record.sender, record.index)
                )
    for shard in sorted(ended):
        sequences = ended[shard]
        for member in sorted(sequences):
            reference = sequences[min(sequences)]
            if sequences[member] != reference:
                violations.append(
                    Violation(
                        "virtual-synchrony",
                        member,
                        shard,
                        f"delivered {len(sequences[member])} messages before the next view, "
                        f"member {min(sequences)} delivered {len(reference)} (or others)",
                    )
                )
    violations.sort(key=lambda v: (v.shard, v.member))
    return violations


_Key = tuple[str, int, int]
_STATE_SHOWN = 3
"""How many agreeing reporters a "state" violation names before it only counts the rest."""


def check_state(records: Iterable[StateRecord]) -> list[Violation]:
    """The state rule: replicas of a shard that delivered the same prefix hold the same state.

    The object layer reports a digest of each replica's encoded state at every view boundary
    and at both ends of every state transfer (:class:`StateRecord`), each at a *position*
    ``(epoch, n)``: the state holds exactly the shard's deliveries up to the n-th of view
    ``epoch``. Every replica of a shard delivers the same sequence in a view (the ordering
    rule), so equal positions mean equal prefixes, and must mean equal states:

    - ``state``: two records of one shard at one position disagree, whoever reported them (two
      replicas at a view boundary, a transfer's sender and a replica that took no part in it,
      a receiver and the replicas it joined). The record reported is the one that differs from
      the digest most records there agree on (ties: the first reported), so the replica that
      applied a message twice or installed the wrong state is the one named.
    - ``state-transfer``: a member installed state its sender did not ship: no "sent" record
      for that receiver, shard and position carries the digest the receiver installed.

    ``records`` come in reporting order. A violation's ``shard`` is ``(epoch of the position,
    subgroup index, shard index)`` and its ``detail`` names the type. Violations come sorted
    like :func:`check_history`'s, so the same records always read the same.
    """
    ordered = list(records)
    at: dict[tuple[_Key, tuple[int, int]], list[StateRecord]] = {}
    sent: dict[tuple[_Key, tuple[int, int], int], list[StateRecord]] = {}
    for record in ordered:
        at.setdefault((record.key, record.position), []).append(record)
        if record.kind == "sent":
            sent.setdefault((record.key, record.position, record.member), []).append(record)
    violations: list[Violation] = []
    for (_, position), group in at.items():
        violations += _check_state_at(position, group)
    for record in ordered:
        if record.kind != "received":
            continue
        shipped = sent.get((record.key, record.position, record.member), [])
        if not any(s.digest == record.digest for s in shipped):
            what = (
                "no member recorded sending it"
                if not shipped
                else "member(s) "
                + ", ".join(str(s.reporter) for s in shipped)
                + " sent digest(s) "
                + ", ".join(_short_digest(s.digest) for s in shipped)
            )
            violations.append(
                Violation(
                    "state-transfer",
                    record.member,
                    _state_shard(record),
                    f"{_state_name(record)} installed state "
                    f"{_short_digest(record.digest)} at position {record.position}; {what}",
                )
            )
    violations.sort(key=lambda v: (v.shard, v.member, v.kind, v.detail))
    return violations


def _check_state_at(position: tuple[int, int], group: list[StateRecord]) -> list[Violation]:
    """The records of one shard at one position (each describes its reporter's state)."""
    counts = Counter(record.digest for record in group)
    if len(counts) == 1:
        return []
    # Most common digest, ties broken by first appearance (Counter keeps insertion order).
    reference = max(counts, key=lambda d: counts[d])
    agreeing = sorted({r.reporter for r in group if r.digest == reference})
    named = ", ".join(str(m) for m in agreeing[:_STATE_SHOWN])
    if len(agreeing) > _STATE_SHOWN:
        named += f" and {len(agreeing) - _STATE_SHOWN} more"
    violations: list[Violation] = []
    seen: set[tuple[NodeId, str, str]] = set()
    for record in group:
        if record.digest == reference:
            continue
        holder = record.reporter
        if (holder, record.kind, record.digest) in seen:
            continue
        seen.add((holder, record.kind, record.digest))
        violations.append(
            Violation(
                "state",
                holder,
                _state_shard(record),
                f"{_state_name(record)} at position {position}: {_describe_state(record)} "
                f"has digest {_short_digest(record.digest)}, while {named} held "
                f"{_short_digest(reference)}",
            )
        )
    return violations


def _describe_state(record: StateRecord) -> str:
    if record.kind == "sent":
        return f"the state member {record.reporter} sent to {record.member}"
    if record.kind == "received":
        return f"the state member {record.member} installed"
    if record.kind == "final":
        return f"member {record.reporter}'s replica at the end of the run"
    return f"member {record.reporter}'s replica at a view boundary"


def _state_shard(record: StateRecord) -> tuple[int, int, int]:
    return record.position[0], record.subgroup_index, record.shard


def _state_name(record: StateRecord) -> str:
    return f"{record.type_name}[{record.subgroup_index}] shard {record.shard}"


def _short_digest(digest: str) -> str:
    return digest[:16]


class HistoryRecorder:
    """Collects a run's records as they happen, for a driver to check at the end.

    Drivers call :meth:`record_sent`, :meth:`record_delivery` and :meth:`record_view` from their
    hooks and :meth:`check` once the run is over; nothing is checked while recording, so
    recording costs one append.
    """

    def __init__(self) -> None:
        self._deliveries: dict[NodeId, list[DeliveryRecord]] = {}
        self._sent: list[SentRecord] = []
        self._views: dict[NodeId, list[View]] = {}
        self._layouts: dict[int, ViewLayout] = {}
        self._states: list[StateRecord] = []
        self._restarts: dict[NodeId, set[int]] = {}

    @property
    def views(self) -> Mapping[NodeId, Sequence[View]]:
        """Each member's installed views, in order."""
        return self._views

    def members_of(self) -> dict[ShardKey, tuple[NodeId, ...]]:
        """Every shard of every recorded view, with its members: for complete checks."""
        return {
            (epoch, ref.subgroup, ref.shard): ref.layout.members
            for epoch, layout in self._layouts.items()
            for ref in layout.shards
        }

    def record_event(self, member: NodeId, event: Event) -> None:
        """Record what a member's event means for the history (sends, nulls, deliveries,
        views); other events are not part of it. Drivers feed every event here."""
        if isinstance(event, Delivered):
            self.record_delivery(
                DeliveryRecord(
                    member,
                    event.epoch,
                    event.subgroup,
                    event.shard,
                    event.mode,
                    event.sender,
                    event.index,
                    len(event.payload),
                    payload_digest(event.payload),
                )
            )
        elif isinstance(event, MessageSent):
            self.record_sent(
                SentRecord(
                    member,
                    event.epoch,
                    event.subgroup,
                    event.shard,
                    event.index,
                    payload_digest(event.payload),
                )
            )
        elif isinstance(event, NullsSent):
            for index in range(event.first, event.first + event.count):
                self.record_sent(
                    SentRecord(member, event.epoch, event.subgroup, event.shard, index, "", True)
                )
        elif isinstance(event, ViewInstalled):
            self.record_view(member, event.view, event.layout)

    def record_restart(self, member: NodeId, epoch: int) -> None:
        """``member`` crashed and restarted from its logs, founding view ``epoch``."""
        self._restarts.setdefault(member, set()).add(epoch)

    def record_view(self, member: NodeId, view: View, layout: ViewLayout) -> None:
        self._views.setdefault(member, []).append(view)
        self._layouts.setdefault(view.epoch, layout)

    @property
    def deliveries(self) -> Mapping[NodeId, Sequence[DeliveryRecord]]:
        """Each member's deliveries, in the order it delivered them."""
        return self._deliveries

    @property
    def sent(self) -> Sequence[SentRecord]:
        """Every message and null that left a sender, in the order they were recorded."""
        return self._sent

    def record_sent(self, record: SentRecord) -> None:
        self._sent.append(record)

    def record_delivery(self, record: DeliveryRecord) -> None:
        self._deliveries.setdefault(record.member, []).append(record)

    @property
    def states(self) -> Sequence[StateRecord]:
        """Every state digest the object layer reported, in the order it was recorded."""
        return self._states

    def record_state(self, record: StateRecord) -> None:
        self._states.append(record)

    def check(
        self,
        *,
        complete: bool = False,
        members_of: Mapping[ShardKey, Collection[NodeId]] | None = None,
    ) -> list[Violation]:
        """:func:`check_history`, :func:`check_views` and, where the object layer reported
        state digests, :func:`check_state`, over what was
        recorded so far."""
        # What a member sent in a view its restart founded from logs that missed a later
        # view is no part of the group's history: that view's epoch is the group's for a
        # different view, the member stops once it hears so, and check_views flags it if
        # anything was delivered there.
        outdated = self._outdated_restarts()
        sent = [r for r in self._sent if (r.member, r.epoch) not in outdated]
        found = check_history(self._deliveries, sent, complete=complete, members_of=members_of)
        views = check_views(self._views, self._deliveries, self._restarts)
        return found + views + check_state(self._states)

    def _outdated_restarts(self) -> set[tuple[NodeId, int]]:
        agreed: dict[int, tuple[NodeId, ...]] = {}
        for member, views in self._views.items():
            for view in views:
                if view.epoch not in self._restarts.get(member, ()):
                    agreed.setdefault(view.epoch, view.members)
        return {
            (member, view.epoch)
            for member, views in self._views.items()
            for view in views
            if view.epoch in self._restarts.get(member, ())
            and agreed.get(view.epoch, view.members) != view.members
        }


class _Sends:
    """The sent records, indexed for the lookups every delivery needs.

    A sender's indices interleave messages and nulls, so FIFO cannot be "index = previous + 1".
    Instead each non-null message gets its *position*: its rank among its sender's non-null
    messages in the shard. Per-sender FIFO without gaps is then exactly "positions 0, 1, 2, ...".
    """

    def __init__(self, sent: Iterable[SentRecord]) -> None:
        self.records: dict[_SendKey, SentRecord] = {}
        self.senders: dict[ShardKey, set[NodeId]] = {}
        self.violations: list[Violation] = []
        for record in sent:
            shard = (record.epoch, record.subgroup, record.shard)
            key = (*shard, record.member, record.index)
            prior = self.records.setdefault(key, record)
            if prior is record:
                self.senders.setdefault(shard, set()).add(record.member)
            elif prior != record:
                # The same record twice (a driver logging a retransmission) is harmless.
                self.violations.append(
                    Violation(
                        "index-reused",
                        record.member,
                        shard,
                        f"index {record.index} sent as {_describe_sent(prior)} "
                        f"and again as {_describe_sent(record)}",
                    )
                )
        self.messages: dict[ShardKey, dict[NodeId, list[int]]] = {}
        """Each sender's non-null indices in each shard, ascending: position -> index."""
        for (epoch, subgroup, shard_no, sender, index), record in self.records.items():
            if not record.null:
                shard = (epoch, subgroup, shard_no)
                self.messages.setdefault(shard, {}).setdefault(sender, []).append(index)
        self.position: dict[_SendKey, int] = {}
        """Each non-null message's rank among its sender's non-null messages in the shard."""
        for shard, by_sender in self.messages.items():
            for sender, indices in by_sender.items():
                indices.sort()
                for position, index in enumerate(indices):
                    self.position[(*shard, sender, index)] = position


def _group(
    deliveries: Mapping[NodeId, Sequence[DeliveryRecord]],
) -> tuple[dict[ShardKey, dict[NodeId, list[DeliveryRecord]]], list[Violation]]:
    """Each member's deliveries split by shard, and "mode" violations found on the way.

    A shard's mode is the one its lowest member recorded first; a member that recorded another
    computed a different layout from the same view, which the layout contract forbids.
    """
    grouped: dict[ShardKey, dict[NodeId, list[DeliveryRecord]]] = {}
    for member in sorted(deliveries):
        mine: dict[ShardKey, list[DeliveryRecord]] = {}
        for record in deliveries[member]:
            if record.member != member:
                raise ValueError(f"a delivery at member {record.member} is filed under {member}")
            shard = (record.epoch, record.subgroup, record.shard)
            records = mine.get(shard)
            if records is None:
                mine[shard] = records = []
            records.append(record)
        for shard, records in mine.items():
            grouped.setdefault(shard, {})[member] = records
    violations: list[Violation] = []
    for shard in sorted(grouped):
        by_member = grouped[shard]
        mode = _mode_of(by_member)
        for member in sorted(by_member):
            other = next((r.mode for r in by_member[member] if r.mode is not mode), None)
            if other is not None:
                violations.append(
                    Violation(
                        "mode",
                        member,
                        shard,
                        f"delivered in mode {other.value}; the shard's mode is {mode.value}",
                    )
                )
    return grouped, violations


def _mode_of(by_member: Mapping[NodeId, Sequence[DeliveryRecord]]) -> Mode:
    return by_member[min(by_member)][0].mode


def _check_order(
    shard: ShardKey, by_member: Mapping[NodeId, Sequence[DeliveryRecord]]
) -> list[Violation]:
    """Every member's sequence must be a prefix of the longest one (ties: the lowest member's).

    If the members agree, every sequence is a prefix of the longest, so the longest is the one
    reference that needs no guessing; a member that delivered a different tail is reported at the
    first position where it leaves that reference.
    """
    canonical_member = min(by_member, key=lambda m: (-len(by_member[m]), m))
    canonical = by_member[canonical_member]
    chain = _prefix_hashes(canonical)
    violations: list[Violation] = []
    for member in sorted(by_member):
        records = by_member[member]
        if member == canonical_member or _head(records) == chain[len(records) - 1]:
            continue
        position = next(
            p for p, record in enumerate(records) if _entry(record) != _entry(canonical[p])
        )
        violations.append(
            Violation(
                "order",
                member,
                shard,
                f"at position {position} delivered {_describe(records[position])} where member "
                f"{canonical_member} delivered {_describe(canonical[position])}",
            )
        )
    return violations


def _prefix_hashes(records: Sequence[DeliveryRecord]) -> list[bytes]:
    """The running hash after each entry: equal hashes at position p mean equal prefixes up to p."""
    running = hashlib.blake2b(digest_size=16)
    hashes: list[bytes] = []
    for record in records:
        running.update(_encode(record))
        hashes.append(running.digest())
    return hashes


def _head(records: Sequence[DeliveryRecord]) -> bytes:
    """The running hash after the last entry, so one comparison settles a whole prefix."""
    running = hashlib.blake2b(digest_size=16)
    for record in records:
        running.update(_encode(record))
    return running.digest()


def _encode(record: DeliveryRecord) -> bytes:
    sender, index, digest = _entry(record)
    # The digest's length makes the concatenation of entries unambiguous.
    return f"{sender} {index} {len(digest)} {digest}".encode()


def _entry(record: DeliveryRecord) -> tuple[NodeId, int, str]:
    """What two members must agree on at each position of an ordered shard."""
    return record.sender, record.index, record.digest


def _check_deliveries(
    shard: ShardKey, member: NodeId, records: Sequence[DeliveryRecord], sends: _Sends
) -> tuple[list[Violation], set[tuple[NodeId, int]]]:
    """Per-delivery checks at one member of one shard.

    Returns the violations and the non-null messages sent in the shard that were delivered, as
    ``(sender, index)`` pairs, for the completeness check. A duplicate, invented or null delivery
    is reported as such and kept out of the FIFO check, so one fault is not reported twice.
    """
    violations: list[Violation] = []
    delivered: set[tuple[NodeId, int]] = set()
    bogus: set[tuple[NodeId, int]] = set()
    """Invented or null deliveries: kept apart so ``delivered`` stays a subset of the sends."""
    last: dict[NodeId, int] = {}
    """Per sender, the highest position delivered so far."""
    by_sender = sends.messages.get(shard, {})
    for record in records:
        sender, index = record.sender, record.index
        if (sender, index) in delivered or (sender, index) in bogus:
            violations.append(
                Violation("duplicate", member, shard, f"delivered {_describe(record)} again")
            )
            continue
        key = (*shard, sender, index)
        sent = sends.records.get(key)
        if sent is None:
            bogus.add((sender, index))
            violations.append(
                Violation("invented", member, shard, f"delivered {_describe(record)}, never sent")
            )
            continue
        if sent.null:
            bogus.add((sender, index))
            violations.append(
                Violation(
                    "null-delivered", member, shard, f"delivered the null {_describe(record)}"
                )
            )
            continue
        delivered.add((sender, index))
        if sent.digest != record.digest:
            violations.append(
                Violation(
                    "digest",
                    member,
                    shard,
                    f"delivered {_describe(record)}; the sender sent digest {sent.digest}",
                )
            )
        position = sends.position[key]
        previous = last.get(sender, -1)
        if position > previous + 1:
            violations.append(
                Violation(
                    "fifo",
                    member,
                    shard,
                    f"delivered {_describe(record)} having skipped sender {sender} "
                    f"#{by_sender[sender][previous + 1]} (a gap)",
                )
            )
        elif position <= previous:
            violations.append(
                Violation(
                    "fifo",
                    member,
                    shard,
                    f"delivered {_describe(record)} after sender {sender} "
                    f"#{by_sender[sender][previous]} (out of order)",
                )
            )
        last[sender] = max(previous, position)
    return violations, delivered


def _check_complete(
    shard: ShardKey, member: NodeId, delivered: set[tuple[NodeId, int]], sends: _Sends
) -> list[Violation]:
    """One "missing" violation when the member lacks any non-null message sent in the shard."""
    by_sender = sends.messages.get(shard, {})
    total = sum(len(indices) for indices in by_sender.values())
    if len(delivered) == total:
        return []
    missing = [
        (sender, index)
        for sender in sorted(by_sender)
        for index in by_sender[sender]
        if (sender, index) not in delivered
    ]
    named = ", ".join(f"sender {s} #{i}" for s, i in missing[:_MISSING_SHOWN])
    more = f" and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
    return [
        Violation(
            "missing",
            member,
            shard,
            f"delivered {total - len(missing)} of {total} messages sent; missing {named}{more}",
        )
    ]


def _describe(record: DeliveryRecord) -> str:
    return f"sender {record.sender} #{record.index} (digest {record.digest})"


def _describe_sent(record: SentRecord) -> str:
    return "a null" if record.null else f"digest {record.digest}"
