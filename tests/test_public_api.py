"""The public API is exactly what ``pyderecho/__init__.py`` exports: changing it is deliberate."""

from __future__ import annotations

import pyderecho
import pyderecho.testing

PUBLIC = {
    "Abandoned",
    "Allocation",
    "AtomicMulticast",
    "BlockingGroup",
    "BlockingMember",
    "CallAbandoned",
    "CallContext",
    "CoreConfig",
    "Delivered",
    "Event",
    "Group",
    "GroupStopped",
    "HistoryTrimmed",
    "InadequateView",
    "LayoutFunction",
    "LocalProtocolError",
    "Member",
    "MemberRemoved",
    "MessageSent",
    "Mode",
    "Node",
    "NodeId",
    "NotInShard",
    "NotYetStable",
    "NullsSent",
    "Paxos",
    "PeerMessage",
    "ProtocolError",
    "Raw",
    "RawSubgroup",
    "RemoteError",
    "RemoteProtocolError",
    "Replies",
    "Settings",
    "SettingsError",
    "ShardLayout",
    "ShardRef",
    "StateLost",
    "StateProgress",
    "StateReceived",
    "Stopped",
    "Subgroup",
    "Suspected",
    "UserCodeFailed",
    "Versioned",
    "View",
    "ViewInstalled",
    "ViewLayout",
    "compute_layout",
    "context",
    "deliveries",
    "every_member",
    "layout_of",
    "load_settings",
    "one_subgroup",
    "ordered",
    "query",
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
    "StateRecord",
    "Violation",
    "check_history",
    "check_state",
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
