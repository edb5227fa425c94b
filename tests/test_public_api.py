"""The public API is exactly what ``pyderecho/__init__.py`` exports: changing it is deliberate."""

from __future__ import annotations

import pyderecho
import pyderecho.testing

PUBLIC = {
    "Abandoned",
    "Allocation",
    "AtomicMulticast",
    "BlockingMember",
    "CoreConfig",
    "Delivered",
    "Event",
    "GroupStopped",
    "InadequateView",
    "LayoutFunction",
    "LocalProtocolError",
    "Member",
    "MessageSent",
    "Mode",
    "Node",
    "NodeId",
    "NullsSent",
    "Paxos",
    "ProtocolError",
    "Raw",
    "RemoteProtocolError",
    "ShardLayout",
    "ShardRef",
    "Stopped",
    "Suspected",
    "View",
    "ViewInstalled",
    "ViewLayout",
    "compute_layout",
    "deliveries",
    "every_member",
    "layout_of",
    "one_subgroup",
    "resolve_layout",
    "seed_example",
    "sharded",
}

TESTING = {
    "DeliveryRecord",
    "FaultProxy",
    "HistoryRecorder",
    "LinkModel",
    "MemoryNetwork",
    "MemoryTransport",
    "SentRecord",
    "SimLinks",
    "Simulation",
    "Violation",
    "check_history",
    "check_views",
    "payload_digest",
}


def test_public_names_are_pinned() -> None:
    assert set(pyderecho.__all__) == PUBLIC
    assert set(pyderecho.testing.__all__) == TESTING


def test_every_public_name_resolves() -> None:
    for name in pyderecho.__all__:
        assert getattr(pyderecho, name) is not None, name
    for name in pyderecho.testing.__all__:
        assert getattr(pyderecho.testing, name) is not None, name
