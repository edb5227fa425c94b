"""A blocking face for :class:`~pyderecho.runtime.Member`, for applications that are not async.

As httpx pairs ``Client`` with ``AsyncClient``, this runs the same member on one event-loop
thread of its own and lets plain threads call into it. The protocol still runs on exactly one
loop thread per process; the caller's thread only hands it work and waits for answers.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from pyderecho.core.events import Delivered, Event
from pyderecho.core.node import Node
from pyderecho.core.view import View
from pyderecho.runtime.member import Member
from pyderecho.transport.base import Transport

T = TypeVar("T")


class BlockingMember:
    """A member whose methods block the calling thread instead of awaiting.

    Deliveries arrive on :attr:`deliveries`, a thread-safe queue (Raw payloads as copies, since
    they are read after their handling). ``on_event`` runs on the
    loop thread and must not block it.
    """

    def __init__(
        self,
        node: Node,
        transport: Transport,
        *,
        on_event: Callable[[Event], None] | None = None,
        max_queued: int | None = None,
    ) -> None:
        self.deliveries: queue.Queue[Delivered] = queue.Queue()
        self._user_handler = on_event
        self._member = Member(node, transport, on_event=self._forward, max_queued=max_queued)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"pyderecho-{node.node_id}", daemon=True
        )

    def _forward(self, event: Event) -> None:
        if isinstance(event, Delivered):
            self.deliveries.put(event.detached())  # it outlives its handling
        if self._user_handler is not None:
            self._user_handler(event)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self, timeout: float | None = 30.0) -> None:
        self._thread.start()
        self._call(self._member.start(), timeout)

    @property
    def view(self) -> View:
        return self._member.view

    def send(self, subgroup: int, payload: bytes, timeout: float | None = None) -> None:
        """Multicast ``payload``; blocks while too many of this member's messages wait."""
        self._call(self._member.send(subgroup, payload), timeout)

    def wait_for_view(self, accept: Callable[[View], bool], timeout: float) -> View:
        return self._call(self._member.wait_for_view(accept, timeout), timeout + 1)

    def leave(self, timeout: float | None = 30.0) -> str:
        """Leave the group once this member's messages are delivered; returns the reason."""
        return self._call(self._member.leave(), timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Close the transport and stop the loop thread."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self._member.close(), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._loop.close()

    def __enter__(self) -> BlockingMember:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
