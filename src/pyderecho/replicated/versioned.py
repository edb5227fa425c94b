"""Versioned fields: one value's history, readable as of a past version or a past time.

A replicated class keeps a :class:`Versioned` as one of its annotated attributes. Each
:meth:`Versioned.set` in an ``@ordered`` method records the update's version and timestamp
with the value, the same at every replica; reads at a version or time answer from that
history. A read is answered only up to the *stability frontier* of the call reading it, so
that an answer never changes afterwards:

- versions (epoch, n) rise strictly in the shard's order, so once a replica holds the update
  at version v, no later update can land at or before v;
- in a ``Paxos`` shard timestamps are hybrid logical and rise strictly in the shard's order
  too, so a time t is final once an update with timestamp t or later has been applied.

The frontier comes from :func:`~pyderecho.replicated.context.context`: in an ordered method
it is the call itself, in a query the replica's last applied update
(``applied_version``, ``applied_timestamp``). Elsewhere than ``Paxos`` the timestamps are the
callers' clocks, which need not rise in the shard's order: no time is ever final there, so a
query refuses ``at_time``.

The field is a msgspec struct, so it travels inside the class's default state like any other
attribute (snapshots on disk, state transfer), never pickled.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Generic, TypeVar

import msgspec

from pyderecho.replicated.context import CallContext, context
from pyderecho.replicated.errors import HistoryTrimmed, NotYetStable

T = TypeVar("T")

Version = tuple[int, int]


class Versioned(msgspec.Struct, Generic[T], array_like=True, forbid_unknown_fields=True):
    """The history of one value of a replicated object's state.

    ``Versioned(default)`` reads as ``default`` until the first :meth:`set`; ``keep=N``
    bounds the history to the last N entries (reads before the oldest are refused with
    :class:`HistoryTrimmed`); unbounded by default. Annotate it with the value's type
    (``balance: Versioned[int]``), which is how its values are checked when a state is
    decoded. Values are kept as given: set a new value rather than change a kept one in
    place, which would change the past too.

    The other fields are the history itself, in the struct so that it travels with the
    state: ``versions``, ``times`` and ``values`` in step, oldest first, and ``trimmed`` once
    ``keep`` has dropped an entry.
    """

    default: T
    keep: int | None = None
    versions: list[Version] = []
    times: list[float] = []
    """Each entry's timestamp, raised to the one before it where it was lower, so that the
    times never go back and a read at a time has one answer."""
    values: list[T] = []
    trimmed: bool = False

    def __post_init__(self) -> None:
        # Runs on decoding too: a state whose history is inconsistent is refused there.
        if self.keep is not None and self.keep < 1:
            raise ValueError(f"keep must be at least 1 (the current value), got {self.keep}")
        if not len(self.versions) == len(self.times) == len(self.values):
            raise ValueError(
                f"a Versioned history needs as many versions ({len(self.versions)}), times "
                f"({len(self.times)}) and values ({len(self.values)})"
            )
        versions, times = self.versions, self.times
        if any(
            versions[i] >= versions[i + 1] or times[i] > times[i + 1] for i in range(len(times) - 1)
        ):
            raise ValueError("a Versioned history's versions and times must rise, oldest first")

    @property
    def current(self) -> T:
        """The latest value: the last one set, or the default before any."""
        return self.values[-1] if self.values else self.default

    def set(self, value: T) -> None:
        """Record ``value`` as of the running ``@ordered`` call's version and timestamp.

        Refused outside an ordered method (``RuntimeError``: a query must not change the
        state, and only an ordered call has a version every replica shares) and where the
        version is below the last one recorded (``ValueError``). A second ``set`` in the same
        call replaces the first."""
        call = _context("set")
        version = call.version
        if version is None:
            raise RuntimeError(
                "Versioned.set() needs an @ordered method: a query must not change the state"
            )
        if self.versions:
            last = self.versions[-1]
            if version < last:
                raise ValueError(
                    f"Versioned.set() at version {version} after an entry at {last}: versions "
                    "only go forward"
                )
            if version == last:
                self.values[-1] = value
                return
        self.versions.append(version)
        self.times.append(max(call.timestamp, self.times[-1]) if self.times else call.timestamp)
        self.values.append(value)
        if self.keep is not None and len(self.values) > self.keep:
            drop = len(self.values) - self.keep
            del self.versions[:drop], self.times[:drop], self.values[:drop]
            self.trimmed = True

    def at_version(self, version: Version) -> T:
        """The value as of ``version`` (epoch, n): the one the latest update at or before it
        set. :class:`NotYetStable` past the frontier (a later version of the call's own
        view, or past what the replica a query reads has applied); :class:`HistoryTrimmed`
        before the oldest entry kept."""
        call = _context("at_version")
        epoch, number = version
        version = (epoch, number)  # a list, as arguments may arrive, would not compare
        frontier = call.version if call.version is not None else call.applied_version
        if frontier is None:
            raise NotYetStable(
                f"version {version} cannot be read: this call does not say which version its "
                "replica has applied"
            )
        if version > frontier:
            raise NotYetStable(
                f"version {version} is past this replica's latest update {frontier}: "
                "what it holds could still change"
            )
        return self._read(bisect_right(self.versions, version) - 1, f"version {version}")

    def at_time(self, time: float) -> T:
        """The value as of ``time`` (the updates' timestamps, in seconds): the one the latest
        update with a timestamp at or before it set. :class:`NotYetStable` past the frontier
        (an ordered call's own timestamp; in a query, the latest timestamp this replica has
        seen applied); :class:`HistoryTrimmed` before the oldest entry kept.

        A query outside a ``Paxos`` shard refuses it (``RuntimeError``): timestamps there are
        callers' clocks, which need not rise in the shard's order, so no time is ever final.
        An ordered method still gets an answer there, by the callers' clocks as recorded, the
        same at every replica."""
        call = _context("at_time")
        if math.isnan(time):
            raise ValueError("Versioned.at_time(): time is NaN")
        if call.version is not None:
            frontier = call.timestamp
        elif call.applied_timestamp is not None:
            frontier = call.applied_timestamp
        else:
            raise RuntimeError(
                "Versioned.at_time() in a query needs a Paxos shard: elsewhere timestamps are "
                "callers' clocks, which do not rise in the shard's order, so no time is ever "
                "final; read at a version instead"
            )
        if self.times:
            # The field's own last entry is applied here too, whatever the replica could say
            # (right after a restart or a state transfer it knows no timestamp yet).
            frontier = max(frontier, self.times[-1])
        if time > frontier:
            raise NotYetStable(
                f"time {time} is past this replica's stability frontier {frontier}: an update "
                "not yet applied here could still land before it"
            )
        return self._read(bisect_right(self.times, time) - 1, f"time {time}")

    def _read(self, index: int, what: str) -> T:
        if index >= 0:
            return self.values[index]
        if self.trimmed:
            raise HistoryTrimmed(
                f"{what} is before the oldest entry kept (keep={self.keep}): the oldest readable "
                f"version is {self.versions[0]}, time {self.times[0]}"
            )
        return self.default


def _context(operation: str) -> CallContext:
    try:
        return context()
    except RuntimeError:
        raise RuntimeError(
            f"Versioned.{operation}() is only available inside an @ordered or @query method: "
            "the call's context says which version it runs at and how far the shard is stable"
        ) from None
