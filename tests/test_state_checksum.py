"""A state damaged on its way to a newcomer is refused, and the next old member is asked.

The object layer alone, driven by hand (sans-IO), as in tests/test_holderless_shards.py: the
test routes the members' point-to-point messages and flips one byte of one chunk. The state's
CRC32C, summed chunk by chunk on both sides, is what catches it; a check that passed anything
would install the damaged state (the planted twin).
"""

from __future__ import annotations

import msgspec
import pytest

from object_hosts import KEY, Members, Tamper
from pyderecho.core.layout import Mode
from pyderecho.core.view import NodeId, View
from pyderecho.replicated.events import StateDigest, StateReceived, UserCodeFailed
from pyderecho.replicated.host import ObjectHost
from pyderecho.replicated.messages import StateChunk, decode_peer, encoder


def damaging_the_first_chunk_from(sender: NodeId, damaged: list[NodeId]) -> Tamper:
    """A route's tamper that flips a byte in the first state chunk ``sender`` sends, noting
    to whom in ``damaged``."""

    def tamper(src: NodeId, dst: NodeId, payload: bytes) -> bytes:
        message = decode_peer(payload)
        if src != sender or damaged or not isinstance(message, StateChunk):
            return payload
        damaged.append(dst)
        return encoder.encode(flipped(message))

    return tamper


def flipped(chunk: StateChunk) -> StateChunk:
    data = bytearray(chunk.data)
    data[len(data) // 2] ^= 0x01
    return msgspec.structs.replace(chunk, data=memoryview(bytes(data)))


def newcomer_after_a_damaged_transfer() -> tuple[Members, list[NodeId]]:
    """0 and 1 hold the shard with twenty puts (several chunks of state); 2 joins, asks 0
    first, and one chunk of 0's state is damaged on the way."""
    members = Members(3, Mode.ORDERED, record_digests=True, chunk_size=1024)
    members.install(View(0, (0, 1)))
    members.route()
    for index in range(1, 21):
        members.call(0, 0, index, (0, 1), key="k" * 200)
    members.route()
    members.install(View(1, (0, 1, 2), joined=(2,)))
    damaged: list[NodeId] = []
    members.route(damaging_the_first_chunk_from(0, damaged))
    return members, damaged


def test_a_damaged_state_is_refused_and_the_next_old_member_asked() -> None:
    members, damaged = newcomer_after_a_damaged_transfer()
    assert damaged == [2], "a chunk 0 sent 2 was damaged"
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
