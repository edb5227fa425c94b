"""``pyderecho node``: one member of a group as an operating-system process.

The process reads its settings (:mod:`pyderecho.config`), builds its transport (tcp or shm), its
protocol core (:class:`~pyderecho.core.node.Node`) and the runtime that joins them
(:class:`~pyderecho.runtime.Member`), then runs until the member stops or is told to.

How it starts. Without ``--join`` the member founds the group with the others in ``members``.
With it, the member asks to join through the members listed there (other than itself) and
those it finds at the ``contacts`` addresses: a link is authenticated as a given member id, so
it first asks each address who listens there (:meth:`TcpTransport.identify`, which opens no
link) and goes on with the contacts that answered.

What the process says. Standard output carries one JSON object per line, flushed at once, for
scripts and supervisors to follow (``{"event": "ready" | "view" | "suspected" | "abandoned" |
"workload-done" | "stats" | "stopped", ...}``); diagnostics go to standard error.

How it ends. SIGTERM or SIGINT makes the member leave the group (its messages are delivered
first), waiting at most ``--leave-timeout`` seconds; a second signal ends it at once. Exit status:
0 once told to stop, however the leave ended (the ``stopped`` line's reason says how); 3 when,
unasked, the group removed the member or it found itself on the minority side of a partition (it
must join again as a new member); 2 for bad settings; 1 for anything else.

The flags are defined with the command (:mod:`pyderecho.cli.main`). A built-in workload
(``--send-count``, ``--send-rate``, ``--size``, ``--subgroup``) gives tests and the demo traffic
without writing an application: each message is unique per member and counter, so a delivery log
can tell every one apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any

from pyderecho.cli.status import StatusServer
from pyderecho.config import Settings, SettingsError, load_settings
from pyderecho.core.errors import LocalProtocolError
from pyderecho.core.events import (
    Abandoned,
    Delivered,
    Event,
    Suspected,
    ViewInstalled,
)
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.history.delivery_log import DeliveryLog, view_record
from pyderecho.layouts import resolve_layout
from pyderecho.runtime.connect import bound_address, build_transport, identify_contacts
from pyderecho.runtime.loop import loop_factory
from pyderecho.runtime.member import GroupStopped, Member
from pyderecho.transport.base import Transport
from pyderecho.transport.tcp import TcpTransport

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SETTINGS = 2
EXIT_REMOVED = 3
_YIELD_EVERY = 64
"""An unthrottled workload gives the loop a turn this often even when no window is full, so
heartbeats and incoming frames never wait behind a long burst of sends."""


def run_node(args: argparse.Namespace) -> int:
    """Run one member until it stops; returns the process's exit status."""
    try:
        settings = load_settings(args)
        _check_process_flags(settings, args)
    except SettingsError as exc:
        print(f"pyderecho node: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s member {settings.member_id} %(levelname)s %(name)s: %(message)s",
    )
    if args.wait_for_start:
        # Founders that start more than heartbeat_timeout apart suspect each other before
        # they ever meet: a supervisor loads them all, then releases them together.
        _emit({"event": "waiting"})
        if not sys.stdin.readline():
            print("pyderecho node: standard input closed before the start line", file=sys.stderr)
            return EXIT_FAILED
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(MemberProcess(settings, args).run())


def _check_process_flags(settings: Settings, args: argparse.Namespace) -> None:
    """The checks that involve the process's own flags; the settings checked themselves."""
    others = [m for m in settings.members if m.id != settings.member_id]
    if args.join and not others and not settings.contacts:
        raise SettingsError(
            "contacts",
            "flag --join",
            "a joining member needs members to contact: their addresses in contacts, or their "
            "ids in members",
        )
    if not args.join and not settings.members:
        raise SettingsError(
            "members",
            "not set",
            "a founding member needs the first view (or give --join, to join through contacts)",
        )
    if not args.join and not any(m.id == settings.member_id for m in settings.members):
        raise settings.error(
            "members",
            f"does not include member_id {settings.member_id}: a founding member is in the "
            "first view (or give --join)",
        )
    if args.size > settings.max_message_size:
        raise SettingsError(
            "size", "flag --size", f"exceeds max_message_size ({settings.max_message_size})"
        )
    if args.status_port is not None and settings.secret is None:
        raise SettingsError("secret", "not set", "--status-port needs the group secret")


def _emit(record: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class MemberProcess:
    """The member, its workload, its log and its status port, for one run of the process."""

    def __init__(self, settings: Settings, args: argparse.Namespace) -> None:
        self.settings = settings
        self.args = args
        self.member_id: NodeId = settings.member_id
        self.sent = 0
        """Messages the workload handed to the member."""
        self.delivered: Counter[str] = Counter()
        """Deliveries, by mode."""
        self.address = ""
        """Where peers reach this member."""
        self._view_changed = asyncio.Event()
        self._terminate = asyncio.Event()
        self._leaving = False
        """Told to stop, the member is leaving: however that ends, it ends as asked."""
        self._abort = asyncio.Event()
        self._log: DeliveryLog | None = None
        self._started = 0.0

    async def run(self) -> int:
        """Start the member, serve until it stops or a signal asks it to leave; the exit status."""
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        settings, args = self.settings, self.args
        try:
            transport, addresses = self._transport()
        except (OSError, ssl.SSLError, ValueError) as exc:
            print(f"pyderecho node: cannot set up the transport: {exc}", file=sys.stderr)
            return EXIT_SETTINGS
        others = [m.id for m in settings.members if m.id != self.member_id]
        if args.join and isinstance(transport, TcpTransport):
            try:
                found = await identify_contacts(transport, settings, known=others)
            except SettingsError as exc:
                print(f"pyderecho node: {exc}", file=sys.stderr)
                await transport.close()
                return EXIT_SETTINGS
            others += [member for member in found if member not in others]
            addresses = found | addresses  # an address given in members wins
        node = Node(
            self.member_id,
            None if args.join else View(0, tuple(m.id for m in settings.members)),
            resolve_layout(settings.layout),
            settings.core,
            now=loop.time(),
            contacts=others if args.join else (),
            addresses=addresses,
        )
        if args.delivery_log is not None:
            self._log = DeliveryLog(args.delivery_log, self.member_id, settings.group)
        member = Member(node, transport, on_event=self._on_event)
        status: StatusServer | None = None
        reason, failed = "failed", True
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal)
        try:
            await member.start()
            self.address = addresses.get(self.member_id) or bound_address(transport)
            # The join request goes out on the first timer, which runs after this: it carries
            # the address actually bound when the settings asked for port 0.
            node.advertise(self.address)
            ready: dict[str, Any] = {
                "event": "ready",
                "member": self.member_id,
                "pid": os.getpid(),
                "transport": settings.transport,
                "address": self.address,
            }
            if args.status_port is not None:
                assert settings.secret is not None, "checked with the flags"
                status = StatusServer(
                    settings.group, settings.secret, self.member_id, lambda: self.status(member)
                )
                ready["status"] = await status.start(args.status_host, args.status_port)
            _emit(ready)
            reason = await self._serve(member)
            failed = False
        except OSError as exc:
            print(f"pyderecho node: {exc}", file=sys.stderr)
            reason = f"failed: {exc}"
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            if status is not None:
                await status.close()
            await member.close()
            if self._log is not None:
                self._log.close(reason)
        _emit(
            {"event": "stopped", "reason": reason, "sent": self.sent, "delivered": self.delivered}
        )
        if failed:
            return EXIT_FAILED
        if node.join_failure:
            self._report_join_failure(node, transport)
            return EXIT_SETTINGS
        return EXIT_REMOVED if node.stopped and not self._leaving else EXIT_OK

    def _report_join_failure(self, node: Node, transport: Transport) -> None:
        """Say, one line per contact, why this joiner did not get in (exit status 2): the
        reason its link was refused or broke, else why dialing it still fails, else that it
        answered but never let this process in."""
        timeout = node.config.join_timeout
        print(
            f"pyderecho node: member {self.member_id} could not join within {timeout:g} s "
            "(join_timeout_ms); its contacts:",
            file=sys.stderr,
        )
        for contact, refused in node.join_failure.items():
            address = node.address_of(contact) or ""
            dialing = None
            if not refused and address and isinstance(transport, TcpTransport):
                dialing = transport.dial_error(address)
            problem = refused or (f"unreachable: {dialing}" if dialing else "")
            problem = problem or "linked, but no welcome came (is the group running and reachable?)"
            where = f" at {address}" if address else ""
            print(f"  member {contact}{where}: {problem}", file=sys.stderr)

    def _transport(self) -> tuple[Transport, dict[NodeId, str]]:
        """The transport, and the address of every member known so far."""
        return build_transport(self.settings, shm_dir=self.args.shm_dir)

    async def _serve(self, member: Member) -> str:
        """Run the workload until the member stops or a signal comes; why the member ended."""
        args = self.args
        helpers: list[asyncio.Future[None]] = []
        if args.send_count > 0:
            helpers.append(asyncio.ensure_future(self._workload(member)))
        if args.stats_interval > 0:
            helpers.append(asyncio.ensure_future(self._report_stats()))
        stopped = asyncio.ensure_future(member.stopped())
        terminate = asyncio.ensure_future(self._terminate.wait())
        try:
            await asyncio.wait((stopped, terminate), return_when=asyncio.FIRST_COMPLETED)
            await _cancel(helpers)
            if stopped.done():
                return stopped.result()
            self._leaving = True
            return await self._leave(member)
        finally:
            await _cancel([*helpers, stopped, terminate])

    async def _leave(self, member: Member) -> str:
        """Leave the group, waiting at most ``--leave-timeout`` or until a second signal."""
        if not member.node.is_member:
            return "terminated before it joined"
        timeout = self.args.leave_timeout
        leave = asyncio.ensure_future(member.leave())
        abort = asyncio.ensure_future(self._abort.wait())
        try:
            await asyncio.wait((leave, abort), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if leave.done():
                return leave.result()
            if abort.done():
                return "terminated: interrupted while leaving"
            return f"terminated: still in the group after {timeout:g} s"
        finally:
            await _cancel([leave, abort])

    def _on_signal(self) -> None:
        (self._abort if self._terminate.is_set() else self._terminate).set()

    def _on_event(self, event: Event) -> None:
        if self._log is not None:
            self._log.record(event)
        if isinstance(event, Delivered):
            self.delivered[event.mode.value] += 1
        elif isinstance(event, ViewInstalled):
            self._view_changed.set()
            _emit({"event": "view", **view_record(event.view, event.layout)})
        elif isinstance(event, Suspected):
            _emit({"event": "suspected", "member": event.node})
        elif isinstance(event, Abandoned):
            _emit(
                {
                    "event": "abandoned",
                    "type": event.type_name,
                    "index": event.subgroup_index,
                    "size": len(event.payload),
                }
            )

    # -- the built-in workload ----------------------------------------------------------------

    async def _workload(self, member: Member) -> None:
        """Send ``--send-count`` messages, round robin over this member's subgroups, paced by
        ``--send-rate`` or else by flow control alone; wait out views it cannot send in."""
        args = self.args
        loop = asyncio.get_running_loop()
        interval = 1.0 / args.send_rate if args.send_rate else 0.0
        filler = b"." * args.size
        next_at = loop.time()
        while self.sent < args.send_count:
            node = member.node
            targets = self._targets(node)
            if not targets:
                await self._next_view()
                continue
            prefix = f"{self.member_id}:{self.sent}:".encode()
            epoch = node.view.epoch
            try:
                await member.send(targets[self.sent % len(targets)], prefix + filler[len(prefix) :])
            except GroupStopped:
                return
            except LocalProtocolError:
                # The view changed while the send waited for room: pick again in the new one.
                if node.view.epoch == epoch:
                    await self._next_view()
                continue
            self.sent += 1
            if interval:
                next_at = max(next_at + interval, loop.time() - 1.0)  # catch up at most 1 s
                await asyncio.sleep(next_at - loop.time())
            elif self.sent % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        _emit({"event": "workload-done", "sent": self.sent})

    def _targets(self, node: Node) -> list[int]:
        """The subgroups this member can send in now."""
        wanted = self.args.subgroup
        return sorted(
            ref.subgroup
            for ref in node.layout.shards_of(self.member_id)
            if (wanted is None or ref.subgroup == wanted) and node.can_send(ref.subgroup)
        )

    async def _next_view(self) -> None:
        self._view_changed.clear()
        await self._view_changed.wait()

    async def _report_stats(self) -> None:
        last: tuple[int, dict[str, int]] | None = None
        while True:
            await asyncio.sleep(self.args.stats_interval)
            counts = (self.sent, dict(self.delivered))
            if counts != last:
                last = counts
                _emit({"event": "stats", "sent": counts[0], "delivered": counts[1]})

    # -- status -------------------------------------------------------------------------------

    def status(self, member: Member) -> dict[str, Any]:
        """What ``pyderecho status`` shows: view, layout, counters."""
        node = member.node
        record = view_record(node.view, node.layout)
        mine = {(ref.subgroup, ref.shard) for ref in node.layout.shards_of(self.member_id)}
        for shard in record["shards"]:
            shard["mine"] = (shard["subgroup"], shard["shard"]) in mine
        view = {key: record.pop(key) for key in ("epoch", "members", "joined", "departed")}
        return {
            "member": self.member_id,
            "pid": os.getpid(),
            "transport": self.settings.transport,
            "address": self.address,
            "uptime_s": asyncio.get_running_loop().time() - self._started,
            "stopped": node.stopped,
            "view": view,
            **record,
            "counts": {"sent": self.sent, "delivered": dict(self.delivered)},
            "node_stats": dict(node.stats),
            "transport_stats": dict(member.transport.stats),
        }


async def _cancel(tasks: list[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
