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
    """

    caller: NodeId
    member: NodeId
    shard: tuple[str, int, int]
    """The replica's shard: (type name, subgroup index, shard index)."""
    version: tuple[int, int] | None
    timestamp: float
    group: Any

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
