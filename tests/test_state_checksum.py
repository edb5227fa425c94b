"""A state damaged on its way to a newcomer is refused, and the next old member is asked.

The object layer alone, driven by hand (sans-IO), as in tests/test_holderless_shards.py: the
test routes the members' point-to-point messages and flips one byte of one chunk. The state's
CRC32C, summed chunk by chunk on both sides, is what catches it; a check that passed anything
would install the damaged state (the planted twin).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from pyderecho.core.events import Delivered, PeerMessage, ViewInstalled
from pyderecho.core.layout import Mode, ViewLayout, compute_layout, every_member, layout_of
from pyderecho.core.view import NodeId, View
from pyderecho.replicated.events import (
    SendPeer,
    StateDigest,
    StateReceived,
    UserCodeFailed,
)
from pyderecho.replicated.host import ObjectHost
from pyderecho.replicated.messages import StateChunk, decode_peer, encoder
from pyderecho.sim.swarm import KV

KEY = ("KV", 0, 0)


class Members:
    """Object hosts whose messages the test routes, damaging the chunks ``damage`` picks."""

    def __init__(self, count: int, chunk_size: int) -> None:
        self.plan = layout_of({"KV": every_member(Mode.ORDERED)})
        self.hosts = {
            m: ObjectHost(m, {"KV": KV}, record_digests=True, chunk_size=chunk_size)
            for m in range(count)
        }
        self.outputs: dict[NodeId, list[Any]] = {m: [] for m in self.hosts}
        self.layout: ViewLayout | None = None
        self.damaged: list[tuple[NodeId, NodeId, int]] = []

    def install(self, view: View) -> None:
        layout = compute_layout(self.plan, view)
        for m in view.members:
            self.hosts[m].handle(ViewInstalled(view, layout, self.layout))
        self.layout = layout

    def route(self, damage: NodeId | None = None) -> None:
        """Hand over every message until none is left; flip a byte in the first chunk of the
        state that member ``damage`` sends."""
        moved = True
        while moved:
            moved = False
            for src, host in self.hosts.items():
                for output in host.outputs():
                    self.outputs[src].append(output)
                    if not isinstance(output, SendPeer):
                        continue
                    payload = output.payload
                    message = decode_peer(payload)
                    if src == damage and isinstance(message, StateChunk) and not self.damaged:
                        payload = encoder.encode(flipped(message))
                        self.damaged.append((src, output.dst, message.offset))
                    self.hosts[output.dst].handle(PeerMessage(src, payload))
                    moved = True

    def put(self, epoch: int, index: int, members: tuple[NodeId, ...]) -> None:
        _, subgroup, payload = self.hosts[members[0]].prepare_call(
            "KV", 0, "put", args=(f"key{index}" + "k" * 200, index), kwargs={}, timestamp=0.0
        )
        for m in members:
            self.hosts[m].handle(
                Delivered(epoch, subgroup, 0, Mode.ORDERED, members[0], index, payload)
            )

    def reported(self, member: NodeId, kind: type) -> list[Any]:
        return [o for o in self.outputs[member] if isinstance(o, kind)]


def flipped(chunk: StateChunk) -> StateChunk:
    data = bytearray(chunk.data)
    data[len(data) // 2] ^= 0x01
    return msgspec.structs.replace(chunk, data=memoryview(bytes(data)))


def newcomer_after_a_damaged_transfer() -> Members:
    """0 and 1 hold the shard with twenty puts (several chunks of state); 2 joins, asks 0
    first, and one chunk of 0's state is damaged on the way."""
    members = Members(3, chunk_size=1024)
    members.install(View(0, (0, 1)))
    members.route()
    for index in range(1, 21):
        members.put(0, index, (0, 1))
    members.route()
    members.install(View(1, (0, 1, 2), joined=(2,)))
    members.route(damage=0)
    return members


def test_a_damaged_state_is_refused_and_the_next_old_member_asked() -> None:
    members = newcomer_after_a_damaged_transfer()
    assert members.damaged and members.damaged[0][:2] == (0, 2), "a chunk 0 sent 2 was damaged"
    failures = [f.error for f in members.reported(2, UserCodeFailed)]
    assert len(failures) == 1 and "fails its CRC32C" in failures[0], failures
    assert members.hosts[2].stats["state_rejected"] == 1
    sources = [r.source for r in members.reported(2, StateReceived)]
    assert sources == [1], "the state came from the next old member"
    assert members.hosts[2].state_digest(KEY) == members.hosts[0].state_digest(KEY)
    received_digests = [d for d in members.reported(2, StateDigest) if d.kind == "received"]
    sent_digests = [d for d in members.reported(1, StateDigest) if d.kind == "sent"]
    assert [d.digest for d in received_digests] == [d.digest for d in sent_digests]


@pytest.mark.patches_compiled
def test_a_check_that_passes_a_damaged_state_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the receiver takes the sender's word for its own sum."""
    on_chunk = ObjectHost._on_state_chunk

    def trusting(self: ObjectHost, src: NodeId, chunk: StateChunk) -> None:
        on_chunk(self, src, chunk)
        for replica in self._replicas.values():
            if replica.incoming is not None:
                replica.incoming.checksum = chunk.checksum

    monkeypatch.setattr(ObjectHost, "_on_state_chunk", trusting)
    with pytest.raises(AssertionError):
        test_a_damaged_state_is_refused_and_the_next_old_member_asked()
