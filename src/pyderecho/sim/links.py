"""The simulator's links, without its clock: when a frame sent at time t reaches its receiver.

:class:`SimLinks` holds the only timing model of the project's simulated networks. The
deterministic simulator asks it about every message on its virtual clock, and
:class:`~pyderecho.transport.memory.MemoryNetwork` asks it about every frame on the asyncio
loop's clock, so protocol runs in the simulator and runtime members over memory transports meet
the same latency, jitter, bandwidth and reordering, and the memory transport proves against the
transport conformance suite that these links keep the contract the protocol assumes (reliable,
FIFO per link).

The model never loses a frame. Losses are faults a driver injects (the simulator's crashes and
partitions); a real transport reports a broken link instead of hiding the hole, so they stay
with the simulator rather than here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pyderecho.core.view import NodeId


@dataclass(frozen=True, slots=True)
class LinkModel:
    """How long a message takes between two members."""

    latency_s: float = 20e-6
    jitter_s: float = 30e-6
    """Uniform extra delay per message; it reorders messages across links, never within one."""
    bandwidth_bytes_per_s: float = 1.25e9
    """Each member's outgoing link (10 Gbit/s by default): sends queue behind each other."""
    overhead_bytes: int = 64
    """Framing and headers charged to every message on top of its encoded size."""
    beats_in_memory: bool = False
    """Periodic heartbeats travel as on the shared-memory transport: not as frames but as a word
    of the link that the sender overwrites and the receiver reads at its own ticks. They then
    wake nobody, are seen up to a heartbeat interval late, and are not ordered with the link's
    frames. Only the simulator models it (:class:`~pyderecho.sim.simulation.Simulation`); the
    memory transport still sends every beat as a frame."""
    slow_share: float = 0.0
    """The share of links (each direction of a pair on its own) that are slow: a congested or
    long path beside fast ones. Which links are slow follows from the seed and the two ends
    alone, so a joiner's links are drawn like the founders'."""
    slow_latency_s: float = 0.0
    """What a slow link adds to every frame's latency. A message then often arrives after
    messages sent later over other links: a request one member sends another in one view can
    reach it after a view change that went round by the fast links."""


class SimLinks:
    """Every link of a network under one :class:`LinkModel`, with jitter from a seeded RNG.

    A sender's frames leave one at a time (each waits for the sender's link to be free, then
    takes its size over the bandwidth), then travel for the latency plus a uniform draw of the
    jitter. A frame never overtakes an earlier one on its own link: its arrival is clamped to the
    link's last, as TCP or an RDMA queue pair would order it. Frames on different links reorder
    freely. Times are in seconds on whatever clock the caller keeps; the same seed and the same
    questions in the same order give the same answers.
    """

    def __init__(self, model: LinkModel | None = None, *, seed: int) -> None:
        self.model = model or LinkModel()
        self.seed = seed
        self._rng = random.Random(seed)
        self._free: dict[NodeId, float] = {}
        """When each sender's outgoing link finishes the last frame handed to it."""
        self._last_arrival: dict[tuple[NodeId, NodeId], float] = {}
        self._slow: dict[tuple[NodeId, NodeId], bool] = {}

    def slow(self, src: NodeId, dst: NodeId) -> bool:
        """Whether the link from ``src`` to ``dst`` is one of the model's slow ones."""
        key = (src, dst)
        if key not in self._slow:
            draw = random.Random(f"{self.seed}:{src}:{dst}").random()
            self._slow[key] = draw < self.model.slow_share
        return self._slow[key]

    def hold(self, src: NodeId, dst: NodeId, until: float) -> None:
        """No frame from ``src`` reaches ``dst`` before ``until`` (a cut link that TCP
        retransmits over once it heals); the link's order is kept."""
        key = (src, dst)
        self._last_arrival[key] = max(until, self._last_arrival.get(key, 0.0))

    def arrival(self, src: NodeId, dst: NodeId, size: int, now: float) -> float:
        """When a frame of ``size`` bytes, handed to ``src``'s link at ``now``, reaches ``dst``.

        Asking is sending: the frame occupies ``src``'s link and draws its jitter, so each frame
        must be asked about exactly once, in the order it is sent.
        """
        model = self.model
        wire = size + model.overhead_bytes
        departure = max(now, self._free.get(src, 0.0)) + wire / model.bandwidth_bytes_per_s
        self._free[src] = departure
        arrival = departure + model.latency_s + model.jitter_s * self._rng.random()
        if model.slow_share and self.slow(src, dst):
            arrival += model.slow_latency_s
        key = (src, dst)
        arrival = max(arrival, self._last_arrival.get(key, 0.0))
        self._last_arrival[key] = arrival
        return arrival
