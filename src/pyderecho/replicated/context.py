"""What a replicated method may know about the call it runs: :func:`context`.

A context variable rather than an argument, so that method signatures stay the application's
own (their annotations are the wire contract), and so that an ``async`` query method's tasks
see the context of the call that started them.
"""

from __future__ import annotations

import contextvars
from typing import Any

import msgspec

from pyderecho.core.view import NodeId


class CallContext(msgspec.Struct, frozen=True):
    """The call being run on this replica.

    ``version`` is (epoch, n): the call is the n-th delivery of its shard in view ``epoch``,
    the same at every replica (None for a query). ``timestamp`` is the caller's clock when it
    called (the same at every replica): a deterministic method uses it instead of reading a
    clock. In a ``Paxos`` shard it is the update's hybrid logical timestamp, the one its log
    records: the caller's clock at send, raised where needed so that it rises strictly in the
    shard's order. ``group`` is the running group (None in the simulator), for calls to other
    subgroups from a query method.

    ``applied_version`` and ``applied_timestamp`` are set for queries only: how far the state
    the query reads has come, which is what makes a read in the past final (the *stability
    frontier*: versions, and in a ``Paxos`` shard timestamps, rise strictly in the shard's
    order, so no later update can land at or before them). ``applied_version`` is the last
    update the replica's state holds, (epoch, 0) before the first one of view ``epoch``.
    ``applied_timestamp``, in a ``Paxos`` shard, is the largest timestamp among the updates
    this replica applied since it started or received its state (0.0 before the first: the
    timestamp a restored state reaches is not known here, so this lags and never leads);
    None in other modes, whose timestamps are callers' clocks. In an ordered method both are
    None: the call itself is the latest update (``version``, ``timestamp``), and a replay
    from the log after a restart runs it with the same context.
    """

    caller: NodeId
    member: NodeId
    shard: tuple[str, int, int]
    """The replica's shard: (type name, subgroup index, shard index)."""
    version: tuple[int, int] | None
    timestamp: float
    group: Any
    applied_version: tuple[int, int] | None = None
    applied_timestamp: float | None = None

    # A msgspec struct, not a dataclass: one is made per call, and a frozen dataclass's
    # construction was the largest single cost of applying a call after the method itself.


_current: contextvars.ContextVar[CallContext] = contextvars.ContextVar("pyderecho_call")


def context() -> CallContext:
    """The context of the ordered or query method now running; raises outside of one."""
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError(
            "pyderecho.context() is only available inside an @ordered or @query method"
        ) from None


def enter(ctx: CallContext) -> contextvars.Token[CallContext]:
    return _current.set(ctx)


def leave(token: contextvars.Token[CallContext]) -> None:
    _current.reset(token)
