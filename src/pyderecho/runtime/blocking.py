"""A blocking face for :class:`~pyderecho.runtime.Member`, for applications that are not async.

As httpx pairs ``Client`` with ``AsyncClient``, this runs the same member on one event-loop
thread of its own and lets plain threads call into it. The protocol still runs on exactly one
loop thread per process; the caller's thread only hands it work and waits for answers.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from pyderecho.core.events import Delivered, Event
from pyderecho.core.node import Node
from pyderecho.core.view import View
from pyderecho.runtime.group import Group, ReplyForm
from pyderecho.runtime.loop import loop_factory
from pyderecho.runtime.member import Member
from pyderecho.transport.base import Transport

T = TypeVar("T")


class _LoopThread:
    """One event loop on a daemon thread of its own (uvloop's where installed: see
    :mod:`.loop`), and a way to run coroutines on it from other threads: what both blocking
    faces stand on."""

    def __init__(self, name: str) -> None:
        self.loop = loop_factory()()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run ``coroutine`` on the loop and block until it returns (or ``timeout``)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self, timeout: float | None) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        self.loop.close()


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
        self._runner = _LoopThread(f"pyderecho-{node.node_id}")

    def _forward(self, event: Event) -> None:
        if isinstance(event, Delivered):
            self.deliveries.put(event.detached())  # it outlives its handling
        if self._user_handler is not None:
            self._user_handler(event)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
        return self._runner.call(coroutine, timeout)

    def start(self, timeout: float | None = 30.0) -> None:
        self._runner.start()
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
        if not self._runner.alive:
            return
        try:
            self._call(self._member.close(), timeout)
        finally:
            self._runner.stop(timeout)

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


class BlockingGroup:
    """A :class:`~pyderecho.runtime.group.Group` for code that is not async.

    The group runs on an event-loop thread of its own; calls block the calling thread::

        with BlockingGroup.start("group.toml", member_id=0, types={"Store": Store}) as group:
            replies = group.subgroup(Store).put("x", b"1")

    Replicated methods still run on the loop thread, in order; ``on_event`` runs there too and
    must not block it.
    """

    def __init__(self, starting: Callable[[], Awaitable[Group]], timeout: float | None) -> None:
        self._runner = _LoopThread("pyderecho-group")
        self._runner.start()
        self.timeout = timeout
        """How long a call may block before ``TimeoutError`` (None: no limit)."""
        try:
            self.group: Group = self._call(_awaited(starting), timeout)
        except BaseException:
            self._runner.stop(timeout)
            raise

    @classmethod
    def start(
        cls, config: Any = None, *, timeout: float | None = 60.0, **options: Any
    ) -> BlockingGroup:
        """Start a member as :meth:`Group.start` does (same arguments), on a loop thread."""
        return cls(lambda: Group.start(config, **options), timeout)

    @classmethod
    def over(
        cls, transport: Transport, *, timeout: float | None = 60.0, **options: Any
    ) -> BlockingGroup:
        """Start a member as :meth:`Group.over` does, on a loop thread."""
        return cls(lambda: Group.over(transport, **options), timeout)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None) -> T:
        return self._runner.call(coroutine, timeout)

    @property
    def member_id(self) -> int:
        return self.group.member_id

    @property
    def view(self) -> View:
        return self.group.view

    def subgroup(
        self, kind: type[Any] | str, index: int = 0, *, replies: ReplyForm = "all"
    ) -> _BlockingHandle:
        return _BlockingHandle(self, lambda: self.group.subgroup(kind, index, replies=replies))

    def shard(self, kind: type[Any] | str, shard: int, index: int = 0) -> _BlockingHandle:
        return _BlockingHandle(self, lambda: self.group.shard(kind, shard, index))

    def replica(self, kind: type[Any] | str, index: int = 0) -> Any:
        """This member's own replica (read it only while no call runs, or accept a race)."""
        return self.group.replica(kind, index)

    def wait_for_view(self, accept: Callable[[View], bool], timeout: float) -> View:
        return self._call(self.group.wait_for_view(accept, timeout), timeout + 1)

    def wait_ready(self, kind: type[Any] | str, index: int = 0, timeout: float = 30) -> Any:
        return self._call(self.group.wait_ready(kind, index, timeout), timeout + 1)

    def leave(self) -> str:
        return self._call(self.group.leave(), self.timeout)

    def close(self) -> None:
        """Leave (bounded by the group's ``leave_timeout``), close, and stop the loop thread."""
        if not self._runner.alive:
            return
        try:
            self._call(self.group.__aexit__(None, None, None), self.timeout)
        finally:
            self._runner.stop(self.timeout)

    def __enter__(self) -> BlockingGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _BlockingHandle:
    """A subgroup or shard handle whose calls block; the handle is made on the loop thread,
    where the group's state lives."""

    def __init__(self, owner: BlockingGroup, make: Callable[[], Any]) -> None:
        self._owner = owner
        self._handle = owner._call(_returned(make), owner.timeout)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._handle, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._owner._call(_awaited(lambda: method(*args, **kwargs)), self._owner.timeout)

        return call


async def _awaited(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


async def _returned(make: Callable[[], T]) -> T:
    return make()
