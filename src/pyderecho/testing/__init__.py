"""Tools for testing replicated code: the deterministic simulator, its link model, the
in-process transport (which can run on that link model), the fault proxy and the history checker
(with the state rule for replicated objects).

Public, like ``trio.testing``: users test their own layouts and replicated classes with them.
"""

from pyderecho.history.checker import (
    HistoryRecorder,
    Violation,
    check_history,
    check_state,
    check_views,
)
from pyderecho.history.records import DeliveryRecord, SentRecord, StateRecord, payload_digest
from pyderecho.sim.links import SimLinks
from pyderecho.sim.simulation import LinkModel, Simulation
from pyderecho.testing.fault_proxy import FaultProxy
from pyderecho.transport.memory import MemoryNetwork, MemoryTransport

__all__ = [
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
]
