"""What a history is made of: one record per message sent and per message delivered.

Drivers (the simulator, later a member's ``--delivery-log``) produce these; the checker in
:mod:`pyderecho.history.checker` reads them. Payloads are kept only as a digest, so histories of
large runs stay small and can be written as JSON lines.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pyderecho.core.layout import Mode
from pyderecho.core.view import NodeId


def payload_digest(payload: bytes | memoryview) -> str:
    """The first 16 hex digits of the payload's SHA-256: enough to tell messages apart."""
    return hashlib.sha256(payload).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SentRecord:
    """A message (or a null) that left a sender's queue with its per-sender index."""

    member: NodeId
    epoch: int
    subgroup: int
    shard: int
    index: int
    digest: str
    null: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A message handed to the application at ``member``, in delivery order."""

    member: NodeId
    epoch: int
    subgroup: int
    shard: int
    mode: Mode
    sender: NodeId
    index: int
    size: int
    digest: str


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A digest of a replica's encoded state at a position of its shard, as the object layer
    reported it (:class:`~pyderecho.replicated.events.StateDigest`) at ``reporter``.

    ``position`` is ``(epoch, n)``: the state holds the shard's deliveries up to the n-th of
    view ``epoch``. ``kind`` is "view" (``reporter``'s own replica at a view
    boundary), "sent" (``reporter`` shipped this state to ``member``), "received" (``reporter``,
    which is also ``member``, installed this state) or "final" (``reporter``'s replica when the
    run ended).
    """

    reporter: NodeId
    member: NodeId
    type_name: str
    subgroup_index: int
    shard: int
    position: tuple[int, int]
    digest: str
    kind: str

    @property
    def key(self) -> tuple[str, int, int]:
        return self.type_name, self.subgroup_index, self.shard
