"""Errors a caller of a replicated method meets, split the h11 way: what the caller got wrong
raises at the call site (``TypeError``, ``AttributeError``, :class:`NotInShard`); what happened
on a replica comes back in that replica's slot as a :class:`RemoteError`."""

from __future__ import annotations

from pyderecho.core.errors import LocalProtocolError
from pyderecho.core.view import NodeId


class RemoteError(Exception):
    """A replica's method raised, or the replica could not run it; ``error_type`` names the
    exception's class on that replica (the class itself never travels)."""

    def __init__(self, member: NodeId, error_type: str, message: str) -> None:
        super().__init__(f"member {member}: {error_type}: {message}")
        self.member = member
        self.error_type = error_type
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteError) and (self.member, self.error_type, self.message) == (
            other.member,
            other.error_type,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.member, self.error_type, self.message))


class MemberRemoved(RemoteError):
    """The replica left the view before it replied: whether it ran the method is unknown."""

    def __init__(self, member: NodeId, epoch: int) -> None:
        super().__init__(member, "MemberRemoved", f"removed from the group in view {epoch}")


class NotInShard(LocalProtocolError):
    """This member cannot make the call: it is in no shard of that subgroup (ordered calls),
    or the shard it names does not exist in the current view."""


class CallAbandoned(LocalProtocolError):
    """An ordered call was not delivered in its view and this member no longer sends in that
    subgroup in the next, so nobody will run it."""


class NotYetStable(LookupError):
    """A read of a :class:`~pyderecho.Versioned` field at a version or time past the shard's
    stability frontier: the answer could still change, so none is given. It becomes readable
    once this replica has applied an update at or after that version or time (ask again)."""


class HistoryTrimmed(LookupError):
    """A read of a :class:`~pyderecho.Versioned` field before the oldest entry it keeps (its
    ``keep=`` bound dropped the older ones); the message says the oldest readable version and
    time."""
