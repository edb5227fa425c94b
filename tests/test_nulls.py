"""Nulls where there is no round robin: a ``Raw`` shard refuses them (they could only make a
member skip a sender's messages), counts them, and holds nothing."""

from __future__ import annotations

from pyderecho.core.config import CoreConfig
from pyderecho.core.layout import Mode, every_member, layout_of
from pyderecho.core.node import Node
from pyderecho.core.view import View
from pyderecho.wire import Nulls

CONFIG = CoreConfig(heartbeat_interval=0.05, heartbeat_timeout=0.5)
VIEW = View(0, (0, 1, 2))


def test_nulls_in_a_raw_shard_are_refused_and_counted() -> None:
    node = Node(0, VIEW, layout_of({"Log": every_member(Mode.RAW)}), CONFIG)
    node.receive(2, Nulls(0, 0, 0, 2, 0, 2), 0.0)
    assert node.stats["rejected"] == 1
    shard = node.shard_of(0)
    assert shard is not None and shard.table.received[shard.rank] == [0, 0, 0]
