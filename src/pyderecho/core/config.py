"""Settings the protocol core needs, validated once so the core can trust them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Protocol parameters shared by every member of a group.

    ``window_size`` and ``window_bytes`` bound how far a sender may run ahead of the slowest
    member of its shard, in messages and in bytes: that is the flow control. Small messages need
    a deep window in messages to keep a link busy for a round trip (100 messages of 100 bytes
    are one frame, and a sender then waits for its acknowledgements with nothing on the wire);
    large ones need a bound in bytes, or a window of them would be gigabytes held at every
    member. ``block_size`` is the largest message sent in one piece; larger ones are split into
    blocks relayed member to member so the sender's link carries each byte once: blocks of
    ``block_size`` for a message sent alone (they pipeline along the relay chain), of four
    times that up to 1 MiB for one sent while at least a block's worth of the sender's others
    are in flight or queued (fewer frames).
    """

    window_size: int = 1000
    window_bytes: int = 16 * 1024 * 1024
    """The most bytes of payload a sender may have that some member of its shard has not yet
    received (one message may always go, however large)."""
    block_size: int = 256 * 1024
    max_message_size: int = 64 * 1024 * 1024
    heartbeat_interval: float = 0.1
    """Seconds between heartbeats to the members that watch this one."""
    heartbeat_timeout: float = 1.0
    """Seconds of silence after which a watched member is suspected; also how long a step of a
    view change may wait on a member before that member is suspected."""
    heartbeat_timeout_max: float = 0.0
    """The longest the timeout of a watched member may grow to (0: it stays at
    ``heartbeat_timeout``). A member whose frames lately came with long gaps (its process
    starved of CPU, paused by the collector) gets twice the longest gap it showed in the last
    ``100 * heartbeat_timeout`` seconds, within these bounds: a slow member is not taken for a
    failed one, and a crash is still found within ``heartbeat_timeout_max``."""
    startup_timeout: float = 10.0
    """How long a founding member may take to show up at all before it is suspected."""
    join_timeout: float = 10.0
    """How long a joining process waits to be welcomed before it gives up and stops, saying
    for each contact why it did not get in (a refused link, a dead address, no answer)."""
    monitors: int = 3
    """How many ring successors each member watches: enough that one failure is seen by
    several members, few enough that heartbeats cost O(n), not O(n^2)."""

    def __post_init__(self) -> None:
        for name in ("window_size", "window_bytes", "block_size", "max_message_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < self.heartbeat_interval < self.heartbeat_timeout:
            raise ValueError(
                f"heartbeat_interval ({self.heartbeat_interval}) must be positive and below "
                f"heartbeat_timeout ({self.heartbeat_timeout})"
            )
        if self.heartbeat_timeout_max and self.heartbeat_timeout_max < self.heartbeat_timeout:
            raise ValueError(
                f"heartbeat_timeout_max ({self.heartbeat_timeout_max}) must be 0 or at least "
                f"heartbeat_timeout ({self.heartbeat_timeout})"
            )
        if self.startup_timeout < self.heartbeat_timeout:
            raise ValueError(
                f"startup_timeout ({self.startup_timeout}) must be at least heartbeat_timeout "
                f"({self.heartbeat_timeout})"
            )
        if self.join_timeout < self.heartbeat_timeout:
            raise ValueError(
                f"join_timeout ({self.join_timeout}) must be at least heartbeat_timeout "
                f"({self.heartbeat_timeout})"
            )
        if not isinstance(self.monitors, int) or self.monitors < 1:
            raise ValueError(f"monitors must be a positive integer, got {self.monitors!r}")
        if self.max_message_size < self.block_size:
            raise ValueError(
                f"max_message_size ({self.max_message_size}) must be at least block_size "
                f"({self.block_size})"
            )
