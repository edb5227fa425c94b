"""pyderecho: replicated services from a group of processes, with Derecho's guarantees.

Everything public is re-exported here; every other module may change without notice.
"""

from pyderecho.core.config import CoreConfig
from pyderecho.core.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from pyderecho.core.events import Delivered, Event, MessageSent, NullsSent, ViewInstalled
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

__all__ = [
    "Allocation",
    "AtomicMulticast",
    "CoreConfig",
    "Delivered",
    "Event",
    "InadequateView",
    "LayoutFunction",
    "LocalProtocolError",
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
    "View",
    "ViewInstalled",
    "ViewLayout",
    "compute_layout",
    "every_member",
    "layout_of",
    "one_subgroup",
    "resolve_layout",
    "seed_example",
    "sharded",
]
