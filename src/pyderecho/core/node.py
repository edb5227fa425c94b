"""The state machine of one member: events in, actions out.

A driver calls :meth:`Node.send` for the application and :meth:`Node.receive` for each message
from a peer, then drains :meth:`Node.outbox` (messages to send, in order, per peer) and
:meth:`Node.events` (deliveries and other news). The node never does I/O, never reads a clock
and keeps no randomness, so the same inputs always give the same outputs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping

from pyderecho.core.config import CoreConfig
from pyderecho.core.errors import LocalProtocolError, RemoteProtocolError
from pyderecho.core.events import Event, ViewInstalled
from pyderecho.core.layout import LayoutFunction, ViewLayout, compute_layout
from pyderecho.core.multicast import Outbox, ShardMulticast
from pyderecho.core.view import NodeId, View
from pyderecho.wire import WireMessage, decode


class Node:
    """One member of the group."""

    def __init__(
        self,
        node_id: NodeId,
        view: View,
        layout: LayoutFunction,
        config: CoreConfig | None = None,
        *,
        layout_cache: MutableMapping[tuple[int, tuple[NodeId, ...]], ViewLayout] | None = None,
    ) -> None:
        """``layout_cache`` lets members in one process share each view's layout: a layout
        is a pure function of the view, and a simulated group of a thousand members would
        otherwise compute it a thousand times."""
        if node_id not in view:
            raise LocalProtocolError(f"node {node_id} is not a member of view {view.epoch}")
        self.node_id = node_id
        self.config = config or CoreConfig()
        self.stats: Counter[str] = Counter()
        """Counts of rejected or ignored input, by reason: a peer's misbehaviour shows here."""
        self._outbox: Outbox = []
        self._events: list[Event] = []
        self._shards: dict[tuple[int, int], ShardMulticast] = {}
        self._by_subgroup: dict[int, ShardMulticast] = {}
        self._layout_function = layout
        self._layout_cache = {} if layout_cache is None else layout_cache
        self.view = view
        self.layout = self._install(view, self._layout_for(view))

    def _layout_for(self, view: View) -> ViewLayout:
        key = (view.epoch, view.members)
        layout = self._layout_cache.get(key)
        if layout is None:
            layout = self._layout_cache[key] = compute_layout(self._layout_function, view)
        return layout

    def _install(self, view: View, layout: ViewLayout) -> ViewLayout:
        self._shards.clear()
        self._by_subgroup.clear()
        if layout.adequate:
            for ref in layout.shards_of(self.node_id):
                shard = ShardMulticast(
                    self.node_id,
                    view.epoch,
                    ref,
                    self.config,
                    outbox=self._outbox,
                    events=self._events,
                )
                self._shards[(ref.subgroup, ref.shard)] = shard
                self._by_subgroup[ref.subgroup] = shard
        self._events.append(ViewInstalled(view, layout))
        return layout

    # -- inputs -----------------------------------------------------------------------------

    def send(self, subgroup: int, payload: bytes) -> None:
        """Multicast ``payload`` to this member's shard of ``subgroup``.

        The message is queued and leaves as soon as the shard's window has room; its index shows
        in the :class:`~pyderecho.core.events.MessageSent` event.
        """
        if not self.layout.adequate:
            raise LocalProtocolError(
                f"view {self.view.epoch} is inadequate ({self.layout.reason}): nothing is sent "
                "until enough members join"
            )
        shard = self._by_subgroup.get(subgroup)
        if shard is None:
            raise LocalProtocolError(
                f"member {self.node_id} is in no shard of subgroup {subgroup} in view "
                f"{self.view.epoch}"
            )
        shard.send(payload)
        self._flush()

    def receive(self, src: NodeId, message: WireMessage) -> None:
        """Handle one message from peer ``src``; a bad message is counted and dropped."""
        if message.epoch != self.view.epoch:
            self.stats["other_epoch"] += 1
            return
        shard = self._shards.get((message.subgroup, message.shard))
        if shard is None:
            self.stats["unknown_shard"] += 1
            return
        try:
            shard.receive(src, message)
        except RemoteProtocolError:
            self.stats["rejected"] += 1
        self._flush()

    def receive_bytes(self, src: NodeId, data: bytes | memoryview) -> None:
        """Decode and handle one framed message; malformed bytes are counted and dropped."""
        try:
            message = decode(data)
        except RemoteProtocolError:
            self.stats["malformed"] += 1
            return
        self.receive(src, message)

    # -- outputs ----------------------------------------------------------------------------

    def outbox(self) -> Outbox:
        """Messages to send, oldest first; per destination they must stay in this order."""
        out, self._outbox[:] = self._outbox[:], []
        return out

    def events(self) -> list[Event]:
        """What happened since the last call, oldest first."""
        out, self._events[:] = self._events[:], []
        return out

    def _flush(self) -> None:
        """Push every row that changed during this input, once, to the shard's other members.

        Pushing once per input rather than once per change coalesces a burst of updates into
        one small frame per peer.
        """
        for shard in self._shards.values():
            if shard.dirty:
                row = shard.row()
                self._outbox.extend((peer, row) for peer in shard.peers)

    def shard_of(self, subgroup: int) -> ShardMulticast | None:
        """This member's shard of ``subgroup`` in the current view, if any."""
        return self._by_subgroup.get(subgroup)

    @property
    def duplicates(self) -> int:
        return sum(shard.duplicates for shard in self._shards.values())
