"""A transport around another, for tests that watch what a member's transport hands it.

The fast build compiles the transports and allows no interpreted subclass of them, so a test
that needs one to behave a little differently wraps it: every attribute is the inner
transport's, except what the wrapper defines, and :meth:`WrappedTransport.taking` may put a
handler of its own between the inner transport and the member's ``on_frame``.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pyderecho.transport.base import FrameHandler, LargeFrameHandler, PeerLostHandler, Transport

Inner = TypeVar("Inner", bound=Transport)


class WrappedTransport(Generic[Inner]):
    def __init__(self, inner: Inner) -> None:
        self.inner = inner
        self.on_frame: FrameHandler | None = None
        """What the inner transport hands each frame to (after :meth:`taking`)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def start(
        self,
        on_frame: FrameHandler,
        on_peer_lost: PeerLostHandler,
        on_large_frame: LargeFrameHandler | None = None,
    ) -> None:
        self.on_frame = self.taking(on_frame)
        await self.inner.start(self.on_frame, on_peer_lost, on_large_frame)

    def taking(self, on_frame: FrameHandler) -> FrameHandler:
        """The handler the inner transport gets in place of the member's ``on_frame``."""
        return on_frame
