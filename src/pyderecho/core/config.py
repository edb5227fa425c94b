"""Settings the protocol core needs, validated once so the core can trust them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Protocol parameters shared by every member of a group.

    ``window_size`` bounds how far a sender may run ahead of the slowest member of its shard: it
    is the flow control. ``block_size`` is the largest message sent in one piece; larger ones are
    split into blocks relayed member to member so the sender's link carries each byte once.
    """

    window_size: int = 100
    block_size: int = 256 * 1024
    max_message_size: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("window_size", "block_size", "max_message_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_message_size < self.block_size:
            raise ValueError(
                f"max_message_size ({self.max_message_size}) must be at least block_size "
                f"({self.block_size})"
            )
