"""pyderecho: replicated services from a group of processes, with Derecho's guarantees.

Everything public is re-exported here; every other module may change without notice.
"""

from pyderecho.config import Settings, SettingsError, load_settings
from pyderecho.core.config import CoreConfig
from pyderecho.core.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from pyderecho.core.events import (
    Abandoned,
    Delivered,
    Event,
    MessageSent,
    NullsSent,
    PeerMessage,
    Stopped,
    Suspected,
    ViewInstalled,
)
from pyderecho.core.layout import (
    Allocation,
    AtomicMulticast,
    InadequateView,
    LayoutFunction,
    Mode,
    Paxos,
    Raw,
    ShardLayout,
    ShardRef,
    ViewLayout,
    compute_layout,
    every_member,
    layout_of,
    one_subgroup,
    seed_example,
    sharded,
)
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.layouts import resolve_layout
from pyderecho.replicated.context import CallContext, context
from pyderecho.replicated.errors import (
    CallAbandoned,
    HistoryTrimmed,
    MemberRemoved,
    NotInShard,
    NotYetStable,
    RemoteError,
)
from pyderecho.replicated.events import (
    StateLost,
    StateProgress,
    StateReceived,
    UserCodeFailed,
)
from pyderecho.replicated.methods import ordered, query
from pyderecho.replicated.versioned import Versioned
from pyderecho.runtime.blocking import BlockingGroup, BlockingMember
from pyderecho.runtime.group import Group, RawSubgroup, Replies, Subgroup
from pyderecho.runtime.member import GroupStopped, Member, deliveries

__all__ = [
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
]
