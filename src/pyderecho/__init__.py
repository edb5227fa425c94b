"""pyderecho: replicated services from a group of processes, with Derecho's guarantees.

Everything public is re-exported here; every other module may change without notice.
"""

from pyderecho.core.config import CoreConfig
from pyderecho.core.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from pyderecho.core.events import (
    Abandoned,
    Delivered,
    Event,
    MessageSent,
    NullsSent,
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
from pyderecho.runtime.blocking import BlockingMember
from pyderecho.runtime.member import GroupStopped, Member, deliveries

__all__ = [
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
]
