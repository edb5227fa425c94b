"""The group of replicated objects an application starts: :class:`Group`.

A group member runs the protocol core (through :class:`~pyderecho.runtime.member.Member`) and
the object layer (:class:`~pyderecho.replicated.host.ObjectHost`) on one event loop. The
application reaches subgroups by type and index, shards by index, and calls the methods its
classes mark ``@ordered`` or ``@query``; results come back as awaitables. This module only
connects those pieces to asyncio: every decision is the host's or the core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, get_args, overload

from pyderecho.config import (
    DEFAULT_CATCH_UP_BYTES,
    DEFAULT_SNAPSHOT_EVERY,
    Settings,
    load_settings,
)
from pyderecho.core.config import CoreConfig
from pyderecho.core.events import Delivered, Event, Stopped, ViewInstalled
from pyderecho.core.layout import LayoutFunction, Mode, compute_layout
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.layouts import resolve_layout
from pyderecho.replicated.errors import NotInShard, RemoteError
from pyderecho.replicated.events import (
    CallDone,
    CallFailed,
    HostFailed,
    QueryDone,
    ReadLog,
    RunQuery,
    SaveDoubt,
    SaveState,
    SendPeer,
    StateWaiting,
)
from pyderecho.replicated.host import ObjectHost
from pyderecho.replicated.methods import type_spec
from pyderecho.replicated.recovery import Rebuilt, Replay
from pyderecho.runtime.connect import bound_address, build_transport, identify_contacts
from pyderecho.runtime.member import GroupStopped, Member
from pyderecho.runtime.persistence import (
    Recovery,
    ReplayFor,
    ShardKey,
    SnapshotFile,
    StoredRecord,
    load_recovery,
)
from pyderecho.storage import DEFAULT_SEGMENT_BYTES, SegmentedLog
from pyderecho.transport.base import Transport
from pyderecho.transport.tcp import TcpTransport

_log = logging.getLogger(__name__)

GroupEvent = Any
"""A core event (:mod:`pyderecho.core.events`) or an object-layer one
(:mod:`pyderecho.replicated.events`): what ``on_event`` receives."""


ReplyForm = Literal["all", "own"]
"""What an ordered call resolves to (``Group.subgroup(..., replies=...)``)."""
REPLY_FORMS: tuple[ReplyForm, ...] = get_args(ReplyForm)


class Replies(dict[NodeId, Any]):
    """The outcome of one ordered call: per replica, its return value or a
    :class:`~pyderecho.replicated.errors.RemoteError` (the method raised, or the replica was
    removed before it replied). The keys are the shard's members in the view where the call
    was delivered."""

    @property
    def errors(self) -> dict[NodeId, RemoteError]:
        return {m: r for m, r in self.items() if isinstance(r, RemoteError)}

    def value(self) -> Any:
        """The one value every replica returned: raises the first replica's error if any
        failed, and ``ValueError`` if replicas disagree (a non-deterministic method)."""
        for reply in self.values():
            if isinstance(reply, RemoteError):
                raise reply
        values = list(self.values())
        if any(v != values[0] for v in values[1:]):
            raise ValueError(f"replicas returned different values: {dict(self)}")
        return values[0]


class Group:
    """This process's member of a group of replicated objects.

    Start one with :meth:`start` (from settings: a TOML file, the environment) or :meth:`over`
    (over a transport you built, e.g. the in-process memory transport of
    :mod:`pyderecho.testing`), as ``async with``. Reach subgroups with :meth:`subgroup` and
    :meth:`shard`. ``on_event`` sees every event (views, deliveries, state transfer, user-code
    failures) on the loop; an exception from it is logged and counted, nothing more.
    """

    def __init__(
        self,
        member: Member,
        host: ObjectHost,
        *,
        on_event: Callable[[GroupEvent], None] | None = None,
        leave_timeout: float = 10.0,
    ) -> None:
        self.member = member
        self.host = host
        self.on_event = on_event
        self.leave_timeout = leave_timeout
        self.stats: Counter[str] = Counter()
        host.group = self
        member.on_event = self._on_core_event
        member.after_events = self._drain_host
        self._calls: dict[int, asyncio.Future[Replies]] = {}
        self._queries: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._raw: dict[tuple[str, int], asyncio.Queue[Delivered]] = {}
        self._subgroup_names: dict[int, tuple[str, int]] = {}
        """(type name, index) of each flattened subgroup id of the current view."""
        self._failed = ""

    # -- starting ---------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        config: str | Path | Settings | None = None,
        *,
        types: Mapping[str, type[Any]] | None = None,
        layout: LayoutFunction | None = None,
        member_id: NodeId | None = None,
        join: bool = False,
        on_event: Callable[[GroupEvent], None] | None = None,
        shm_dir: str | Path | None = None,
        record_digests: bool = False,
    ) -> _Starting:
        """Start a member from settings (a TOML path, :class:`~pyderecho.config.Settings`, or
        None for ``$PYDERECHO_CONFIG`` and ``PYDERECHO_*`` variables).

        ``member_id`` overrides the settings' one, so one file serves every member.
        ``layout`` defaults to the settings' ``layout`` name. A founder (``join=False``) must be
        in the settings' ``members``; a joiner contacts them and the ``contacts``.
        ``record_digests`` reports a ``StateDigest`` event for every replica at every view
        and transfer, for checking a run (it costs a snapshot each time).
        """

        async def build() -> Group:
            settings = _settings(config, member_id)
            recovery = await asyncio.to_thread(
                load_recovery,
                settings.data_dir,
                replay_for=_replay_for(types or {}, settings.member_id, asyncio.get_running_loop()),
            )
            return await _closing_logs_on_failure(recovery, start(settings, recovery))

        async def start(settings: Settings, recovery: Recovery | None) -> Group:
            transport, addresses = build_transport(settings, shm_dir=shm_dir)
            others = [m.id for m in settings.members if m.id != settings.member_id]
            # A restart from logs takes its view from the logs: neither the contacts nor the
            # founding members of the settings apply.
            if recovery is None and join and isinstance(transport, TcpTransport):
                try:
                    found = await identify_contacts(transport, settings, known=others)
                except BaseException:
                    await transport.close()
                    raise
                others += [m for m in found if m not in others]
                addresses = found | addresses
            elif (
                recovery is None
                and not join
                and settings.member_id not in {m.id for m in settings.members}
            ):
                await transport.close()
                raise settings.error(
                    "members", f"member {settings.member_id} founds the group but is not listed"
                )
            group = cls._assemble(
                transport,
                member_id=settings.member_id,
                members=None if join else [m.id for m in settings.members],
                contacts=others,
                addresses=addresses,
                layout=layout or resolve_layout(settings.layout),
                types=types or {},
                config=settings.core,
                on_event=on_event,
                record_digests=record_digests,
                data_dir=settings.data_dir,
                recovery=recovery,
                snapshot_every=settings.snapshot_every,
                catch_up_bytes=settings.catch_up_bytes,
            )
            await group._start(advertise=transport if isinstance(transport, TcpTransport) else None)
            return group

        return _Starting(build())

    @classmethod
    def over(
        cls,
        transport: Transport,
        *,
        member_id: NodeId,
        layout: LayoutFunction,
        types: Mapping[str, type[Any]] | None = None,
        members: Sequence[NodeId] | None = None,
        contacts: Sequence[NodeId] = (),
        addresses: Mapping[NodeId, str] | None = None,
        config: CoreConfig | None = None,
        on_event: Callable[[GroupEvent], None] | None = None,
        record_digests: bool = False,
        data_dir: str | Path | None = None,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        catch_up_bytes: int = DEFAULT_CATCH_UP_BYTES,
    ) -> _Starting:
        """Start a member over ``transport``: a founder of ``members``, or (``members=None``)
        a joiner through ``contacts``. ``data_dir`` is where it logs its ``Paxos`` shards
        (a layout that gives it one needs it); a Paxos replica snapshots itself every
        ``snapshot_every`` updates and its log before the snapshot is dropped, in whole
        segments of ``segment_bytes``; it keeps ``catch_up_bytes`` of the shard's latest
        updates in memory for members that come back with an older state."""

        directory = None if data_dir is None else Path(data_dir)

        async def build() -> Group:
            recovery = None
            if directory is not None:
                recovery = await asyncio.to_thread(
                    load_recovery,
                    directory,
                    segment_bytes=segment_bytes,
                    replay_for=_replay_for(types or {}, member_id, asyncio.get_running_loop()),
                )
            return await _closing_logs_on_failure(recovery, start(recovery))

        async def start(recovery: Recovery | None) -> Group:
            group = cls._assemble(
                transport,
                member_id=member_id,
                members=members,
                contacts=contacts,
                addresses=addresses or {},
                layout=layout,
                types=types or {},
                config=config or CoreConfig(),
                on_event=on_event,
                record_digests=record_digests,
                data_dir=directory,
                recovery=recovery,
                snapshot_every=snapshot_every,
                segment_bytes=segment_bytes,
                catch_up_bytes=catch_up_bytes,
            )
            await group._start(advertise=None)
            return group

        return _Starting(build())

    @classmethod
    def _assemble(
        cls,
        transport: Transport,
        *,
        member_id: NodeId,
        members: Sequence[NodeId] | None,
        contacts: Sequence[NodeId],
        addresses: Mapping[NodeId, str],
        layout: LayoutFunction,
        types: Mapping[str, type[Any]],
        config: CoreConfig,
        on_event: Callable[[GroupEvent], None] | None,
        record_digests: bool,
        data_dir: Path | None,
        recovery: Recovery | None = None,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        catch_up_bytes: int = DEFAULT_CATCH_UP_BYTES,
    ) -> Group:
        # Built first: it checks the classes before anything starts.
        host = ObjectHost(
            member_id,
            types,
            record_digests=record_digests,
            snapshot_every=snapshot_every,
            catch_up_bytes=catch_up_bytes,
            reads_logs=True,
        )
        view = None if members is None else View(0, tuple(members))
        recovered: dict[ShardKey, SegmentedLog] | None = None
        restart = None
        floors: dict[ShardKey, int] = {}
        if recovery is not None:
            # The members agree on the view to found from their logs (pyderecho.core.restart);
            # the last view this member logged says whom to ask, and where they listened.
            view, restart, floors = None, recovery.logs, recovery.floors
            addresses = recovery.addresses | dict(addresses)
            rebuilt = _rebuild(member_id, recovery)
            host.restart(rebuilt, compute_layout(layout, recovery.logs.installed))
            # The rebuilt shards' logs go on open, as the restart read them; the others close.
            recovered = {key: recovery.shards[key].log for key in rebuilt}
            for key, shard in recovery.shards.items():
                if key not in rebuilt:
                    shard.log.close()
        node = Node(
            member_id,
            view,
            layout,
            config,
            now=asyncio.get_running_loop().time(),
            contacts=() if view is not None or restart is not None else contacts,
            addresses=addresses,
            restart=restart,
            incarnation=secrets.randbits(62) + 1,
            floors=floors,
        )
        member = Member(
            node, transport, data_dir=data_dir, recovered=recovered, segment_bytes=segment_bytes
        )
        return cls(member, host, on_event=on_event)

    async def _start(self, *, advertise: TcpTransport | None) -> None:
        await self.member.start()
        node = self.member.node
        if advertise is not None and node.address_of(self.member_id) is None:
            # Bound to port 0: the join request (sent on the first timer) says where we are.
            node.advertise(bound_address(advertise))

    # -- the application side ---------------------------------------------------------------

    @property
    def member_id(self) -> NodeId:
        return self.member.node.node_id

    @property
    def view(self) -> View:
        return self.member.view

    @overload
    def subgroup(
        self, kind: type[Any], index: int = 0, *, replies: ReplyForm = "all"
    ) -> Subgroup: ...

    @overload
    def subgroup(
        self, kind: str, index: int = 0, *, replies: ReplyForm = "all"
    ) -> Subgroup | RawSubgroup: ...

    def subgroup(
        self, kind: type[Any] | str, index: int = 0, *, replies: ReplyForm = "all"
    ) -> Subgroup | RawSubgroup:
        """This member's shard of subgroup ``index`` of a replicated type (a class given to
        the group, or a type name of the layout): ordered calls and queries go there. A
        ``Raw`` subgroup gives a byte-level :class:`RawSubgroup` instead.

        ``replies``: what an ordered call through the handle resolves to. ``"all"``:
        :class:`Replies`, one outcome per replica, once every one answered. ``"own"``: the
        value this member's own replica returned (its :class:`RemoteError` raised), as soon
        as it applied the call; the other replicas send no reply. Applied here means
        delivered here, so it is held by every member of the shard and every one that stays
        applies it in the same order (in a ``Paxos`` shard: it is logged durably at every
        replica). What the caller gives up is the others' confirmation, a message hop later,
        that they did."""
        if replies not in REPLY_FORMS:
            raise ValueError(f'replies must be "all" or "own", got {replies!r}')
        name = self._type_name(kind)
        if name not in self.host.types:
            if replies != "all":
                raise ValueError(f"{name} is a Raw subgroup: it has no ordered calls to reply to")
            return RawSubgroup(self, name, index)
        return Subgroup(self, name, index, None, own=replies == "own")

    def shard(self, kind: type[Any] | str, shard: int, index: int = 0) -> Subgroup:
        """Shard ``shard`` of subgroup ``index``, for queries (from any member)."""
        return Subgroup(self, self._type_name(kind), index, shard)

    def shard_index(self, kind: type[Any] | str, index: int = 0) -> int | None:
        """Which shard of the subgroup this member holds in the current view (None: none)."""
        ref = self.host.my_shard(self._type_name(kind), index)
        return None if ref is None else ref.shard

    def replica(self, kind: type[Any] | str, index: int = 0) -> Any:
        """This member's own instance for its shard of the subgroup, to read locally (None
        while its state is on the way, or when the member holds no shard there)."""
        return self.host.replica(self._type_name(kind), index)

    async def wait_for_view(self, accept: Callable[[View], bool], timeout: float) -> View:
        """Wait until the current view satisfies ``accept``."""
        return await self.member.wait_for_view(accept, timeout)

    async def wait_ready(self, kind: type[Any] | str, index: int = 0, timeout: float = 30) -> Any:
        """Wait until this member holds its replica of the subgroup (its state, if it joined,
        has arrived); returns the replica."""
        async with asyncio.timeout(timeout):
            while (replica := self.replica(kind, index)) is None:
                self._raise_if_failed()
                await self.member.wait_progress()
        return replica

    async def leave(self) -> str:
        """Leave the group once this member's messages are delivered."""
        return await self.member.leave()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.member.close()
        self._fail_all(GroupStopped("the group member was closed"))

    async def __aenter__(self) -> Group:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self.member.node.stopped and self.member.node.is_member:
                with contextlib.suppress(TimeoutError, GroupStopped):
                    async with asyncio.timeout(self.leave_timeout):
                        await self.leave()
        finally:
            await self.close()

    # -- calls ------------------------------------------------------------------------------

    async def _ordered(
        self,
        type_name: str,
        index: int,
        method: str,
        args: tuple[Any, ...],
        kw: dict[str, Any],
        *,
        own: bool = False,
    ) -> Replies:
        self._raise_if_failed()
        call_id, subgroup, payload = self.host.prepare_call(
            type_name, index, method, args=args, kwargs=kw, timestamp=time.time(), own=own
        )
        future: asyncio.Future[Replies] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        try:
            await self.member.send(subgroup, payload)
        except BaseException:
            self._calls.pop(call_id, None)
            self.host.cancel_call(call_id)
            raise
        return await future

    async def _query(
        self,
        type_name: str,
        index: int,
        shard: int | None,
        method: str,
        *,
        args: tuple[Any, ...],
        kw: dict[str, Any],
    ) -> Any:
        self._raise_if_failed()
        query_id = self.host.prepare_query(type_name, index, shard, method, args=args, kwargs=kw)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queries[query_id] = future
        self._drain_host()
        result = await future
        if isinstance(result, RemoteError):
            raise result
        return result

    def _raw_queue(self, type_name: str, index: int) -> asyncio.Queue[Delivered]:
        return self._raw.setdefault((type_name, index), asyncio.Queue())

    async def _raw_send(self, type_name: str, index: int, payload: bytes) -> None:
        self._raise_if_failed()
        subgroup = self.member.node.layout.subgroup_ids.get((type_name, index))
        if subgroup is None or self.member.node.shard_of(subgroup) is None:
            raise NotInShard(
                f"member {self.member_id} is in no shard of {type_name}[{index}] in view "
                f"{self.view.epoch}"
            )
        await self.member.send(subgroup, payload)

    # -- the driver -------------------------------------------------------------------------

    def _on_core_event(self, event: Event) -> None:
        if isinstance(event, Delivered) and event.mode is Mode.RAW:
            name = self._subgroup_names.get(event.subgroup)
            if name is not None:
                self._raw_queue(*name).put_nowait(event.detached())
        elif isinstance(event, ViewInstalled):
            # Looked up per Raw delivery: an index, not a walk over the layout's shards.
            self._subgroup_names = {sid: key for key, sid in event.layout.subgroup_ids.items()}
        self.host.handle(event)
        self._tell(event)
        if isinstance(event, Stopped):
            # No reply can come any more: callers hear why instead of waiting forever.
            self._fail_all(GroupStopped(event.reason))

    def _state_saved(self, key: tuple[str, int, int], position: tuple[int, int]) -> None:
        if not self.member.node.stopped:
            self.host.saved(key, position)
            self._drain_host()

    def _log_read(self, read_id: int, records: Sequence[StoredRecord] | None) -> None:
        if not self.member.node.stopped:
            self.host.log_read(read_id, records)
            self._drain_host()

    def _drain_host(self) -> bool:
        """Act on what the object layer asked for; whether it sent anything. Runs once per
        step of the member, after the step's events, so one burst's replies leave together."""
        sent = False
        for output in self.host.outputs():
            if isinstance(output, SendPeer):
                if not self.member.node.stopped:
                    self.member.send_p2p(output.dst, output.payload)
                    sent = True
            elif isinstance(output, CallDone):
                call = self._calls.pop(output.call_id, None)
                if call is not None and not call.done():
                    call.set_result(Replies(output.replies))
            elif isinstance(output, CallFailed):
                call = self._calls.pop(output.call_id, None)
                if call is not None and not call.done():
                    call.set_exception(output.error)
            elif isinstance(output, QueryDone):
                query = self._queries.pop(output.query_id, None)
                if query is not None and not query.done():
                    query.set_result(output.result)
            elif isinstance(output, RunQuery):
                self._run_query(output)
            elif isinstance(output, SaveState):
                if not self.member.node.stopped:
                    self.member.save_state(
                        output.key,
                        output.position,
                        output.data,
                        functools.partial(self._state_saved, output.key, output.position),
                        epoch=output.epoch,
                    )
            elif isinstance(output, SaveDoubt):
                if not self.member.node.stopped:
                    self.member.save_doubt(output.key, output.doubted)
            elif isinstance(output, ReadLog):
                if not self.member.node.stopped:
                    self.member.read_log(
                        output.key,
                        output.after,
                        output.limit_bytes,
                        functools.partial(self._log_read, output.read_id),
                    )
            else:
                if isinstance(output, StateWaiting):
                    _log.warning(
                        "member %s: %s[%d] shard %d waits: %s",
                        self.member_id,
                        output.type_name,
                        output.subgroup_index,
                        output.shard,
                        output.reason,
                    )
                if isinstance(output, HostFailed):
                    self._fail(output.reason)
                self._tell(output)
        return sent

    def _run_query(self, run: RunQuery) -> None:
        task = asyncio.get_running_loop().create_task(run.coroutine, context=run.context)
        self._tasks.add(task)

        def finished(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            if task.cancelled():
                return
            error = task.exception()
            result = None if error is not None else task.result()
            self.host.finish_query(run.src, run.query_id, run.method, result, error)
            self._drain_host()

        task.add_done_callback(finished)

    def _tell(self, event: GroupEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            self.stats["event_handler_failed"] += 1
            _log.exception("on_event raised on %s", type(event).__name__)

    def _fail(self, reason: str) -> None:
        """The object layer cannot go on: fail every call and leave the group, so that the
        others install a view without this member instead of waiting for its replies."""
        if not self._failed:
            self._failed = reason
            _log.error("member %s leaves the group: %s", self.member_id, reason)
            self._fail_all(GroupStopped(reason))
            task = asyncio.get_running_loop().create_task(self._leave_after_failure())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _leave_after_failure(self) -> None:
        with contextlib.suppress(TimeoutError, GroupStopped):
            async with asyncio.timeout(self.leave_timeout):
                await self.leave()

    def _fail_all(self, error: Exception) -> None:
        for future in [*self._calls.values(), *self._queries.values()]:
            if not future.done():
                future.set_exception(error)
        self._calls.clear()
        self._queries.clear()

    def _raise_if_failed(self) -> None:
        if self._failed:
            raise GroupStopped(self._failed)
        if self.member.node.stopped:
            raise GroupStopped(self.member.node.stopped)

    def _type_name(self, kind: type[Any] | str) -> str:
        if isinstance(kind, str):
            return kind
        for name, spec in self.host.types.items():
            if spec.cls is kind:
                return name
        raise LookupError(f"{kind.__qualname__} was not given to the group in types=")


class Subgroup:
    """Calls into one subgroup: ``await handle.method(...)`` runs an ``@ordered`` method on
    every replica of this member's shard (returns :class:`Replies`, or with ``own`` this
    member's replica's value) or a ``@query`` method on one replica (returns its value,
    raises its :class:`RemoteError`)."""

    def __init__(
        self, group: Group, type_name: str, index: int, shard: int | None, *, own: bool = False
    ) -> None:
        self._group = group
        self._type_name = type_name
        self._index = index
        self._shard = shard
        self._own = own
        self._spec = group.host.spec(type_name)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = self._spec.method(name)
        group, type_name, index, shard = self._group, self._type_name, self._index, self._shard
        if method.kind == "ordered":
            if shard is not None:

                def refuse(*args: Any, **kwargs: Any) -> Awaitable[Any]:
                    raise NotInShard(
                        f"{type_name}.{name} is @ordered: call it through group.subgroup() "
                        "from a member of the shard (group.shard() is for queries)"
                    )

                return refuse

            if self._own:

                async def call_own(*args: Any, **kwargs: Any) -> Any:
                    replies = await group._ordered(type_name, index, name, args, kwargs, own=True)
                    return replies.value()

                return call_own

            def call(*args: Any, **kwargs: Any) -> Awaitable[Replies]:
                return group._ordered(type_name, index, name, args, kwargs)

            return call

        def ask(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            return group._query(type_name, index, shard, name, args=args, kw=kwargs)

        return ask


class RawSubgroup:
    """A ``Raw`` subgroup at the byte level: :meth:`send` multicasts bytes in this member's
    shard; :meth:`deliveries` is the queue of what arrives (copies, safe to keep)."""

    def __init__(self, group: Group, type_name: str, index: int) -> None:
        self._group = group
        self._type_name = type_name
        self._index = index

    async def send(self, payload: bytes) -> None:
        await self._group._raw_send(self._type_name, self._index, payload)

    def deliveries(self) -> asyncio.Queue[Delivered]:
        return self._group._raw_queue(self._type_name, self._index)


class _Starting:
    """What :meth:`Group.start` returns: await it, or use it as ``async with``."""

    def __init__(self, build: Awaitable[Group]) -> None:
        self._build = build
        self._group: Group | None = None

    def __await__(self) -> Generator[Any, None, Group]:
        return self._build.__await__()

    async def __aenter__(self) -> Group:
        self._group = await self._build
        return self._group

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        await self._group.__aexit__(exc_type, exc, tb)


def _settings(config: str | Path | Settings | None, member_id: NodeId | None) -> Settings:
    if isinstance(config, Settings):
        settings = config
    else:
        environ = dict(os.environ)
        if member_id is not None:
            environ["PYDERECHO_MEMBER_ID"] = str(member_id)
        return load_settings(path=config, environ=environ)
    if member_id is not None and member_id != settings.member_id:
        settings = dataclasses.replace(settings, member_id=member_id)
    return settings


async def _closing_logs_on_failure(
    recovery: Recovery | None, starting: Coroutine[Any, Any, Group]
) -> Group:
    """The group ``starting`` starts; should it fail, every log ``recovery`` opened is closed
    (those the member took too: closing a log again does nothing)."""
    try:
        return await starting
    except BaseException:
        if recovery is not None:
            recovery.close()
        raise


_REPLAY_BATCH_BYTES = 4 << 20
"""Payload bytes of log records a restart's loading thread hands the event loop at a time."""


def _replay_for(
    types: Mapping[str, type[Any]], member_id: NodeId, loop: asyncio.AbstractEventLoop
) -> ReplayFor:
    """How a restart rebuilds each recovered shard's replica while it reads the shard's log:
    from its snapshot, with the class the application gives for the shard's type (a shard of
    a type it gives no class for is only checked), on ``loop`` (:class:`_ReplayOnLoop`)."""

    def replay_for(key: ShardKey, snapshot: SnapshotFile) -> _ReplayOnLoop | None:
        cls = types.get(key[0])
        if cls is None:
            return None
        return _ReplayOnLoop(
            loop,
            functools.partial(
                Replay.from_snapshot,
                type_spec(key[0], cls),
                key,
                member_id,
                state=snapshot.state,
                position=(snapshot.epoch, snapshot.count),
            ),
        )

    return replay_for


class _ReplayOnLoop:
    """A shard's replay, fed by the thread that reads and checks the log, applied on the
    event loop: the application's methods run where delivery runs them (an ordered method
    may use the loop), and the disk is read meanwhile. Records go over in batches of
    :data:`_REPLAY_BATCH_BYTES`, and the thread waits while two are unapplied, so what is
    held of the log is those and the segments they and the thread's read lie in."""

    def __init__(self, loop: asyncio.AbstractEventLoop, start: Callable[[], Replay]) -> None:
        self._loop = loop
        self._start = start
        self._replay: Replay | None = None
        self._failure: BaseException | None = None
        self._batch: list[StoredRecord] = []
        self._batch_bytes = 0
        self._changed = threading.Condition()
        self._unapplied = 0
        """Batches handed to the loop and not applied yet (guarded by ``_changed``)."""

    def apply(self, record: StoredRecord) -> None:
        """On the loading thread: queue ``record`` for the loop."""
        self._batch.append(record)
        self._batch_bytes += len(record.payload)
        if self._batch_bytes >= _REPLAY_BATCH_BYTES:
            self._hand_over()

    def result(self) -> Rebuilt:
        """On the loading thread, once the log is read: the replica, every record applied."""
        self._hand_over()
        self._wait_until(0)
        if self._failure is not None:
            raise self._failure
        assert self._replay is not None, "the last batch started the replay if nothing did"
        return self._replay.result()

    def _hand_over(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._wait_until(1)
        with self._changed:
            self._unapplied += 1
        self._loop.call_soon_threadsafe(self._apply, batch)

    def _wait_until(self, unapplied: int) -> None:
        with self._changed:
            while self._unapplied > unapplied:
                if self._loop.is_closed():
                    raise RuntimeError("the event loop closed while a restart replayed its log")
                self._changed.wait(0.5)

    def _apply(self, batch: list[StoredRecord]) -> None:
        """On the loop: start from the snapshot (the first time), then apply ``batch``."""
        try:
            if self._failure is None:
                if self._replay is None:
                    self._replay = self._start()
                for record in batch:
                    self._replay.apply(record)
        except Exception as failure:  # restoring the snapshot failed: the restart does
            self._failure = failure
        finally:
            with self._changed:
                self._unapplied -= 1
                self._changed.notify_all()


def _rebuild(member_id: NodeId, recovery: Recovery) -> dict[ShardKey, Rebuilt]:
    """Each recovered shard's replica, rebuilt from its snapshot and log as the restart read
    them (:func:`_replay_for`)."""
    rebuilt: dict[ShardKey, Rebuilt] = {}
    for key, shard in recovery.shards.items():
        replica = shard.rebuilt
        if replica is None:
            _log.warning("member %s: no class for recovered shard %s; ignored", member_id, key)
            continue
        rebuilt[key] = replica
        _log.info(
            "member %s rebuilt %s at %s: %d updates replayed (%d raised), %d bytes of torn "
            "tail cut",
            member_id,
            key,
            replica.position,
            replica.applied,
            replica.raised,
            shard.truncated_bytes,
        )
    for key, why in recovery.ignored.items():
        _log.warning("member %s: shard %s not recovered: %s", member_id, key, why)
    return rebuilt
