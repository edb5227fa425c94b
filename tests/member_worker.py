"""A group member in its own process, for tests that need real processes on real addresses.

Runs one :class:`~pyderecho.runtime.Member` over :class:`~pyderecho.transport.tcp.TcpTransport`
with a built-in workload (every member multicasts numbered messages into the first subgroup of
the layout at a steady rate) and reports what happens as JSON lines on stdout, one object per
line, flushed at once, so a test can follow it live::

    python tests/member_worker.py --id 0 --members 0=10.77.0.1:7000,1=10.77.0.2:7000,... \\
        --control-stdin

Lines (``event`` says which): ``loaded`` (imports done, waiting for ``go`` when
``--control-stdin``), ``started`` (listening, view 0 installed), ``view`` (each view installed),
``suspected`` (this member now suspects a node; a monotonic time stamp), ``checkpoint`` (every
``--checkpoint-every`` deliveries: the count and a digest of everything delivered so far, so
members can be compared position by position), ``progress`` (every ``--report-every``
seconds), ``stopped`` (the protocol stopped this member, with its reason) and ``final`` (a clean
end, with the transport's and the node's counters; ``report`` says the same on request while
running).

Exit status: 0 after a clean end (stdin closed or ``stop`` with ``--control-stdin``, SIGTERM,
SIGINT or ``--duration`` over), 3 when the member stopped because it was on the minority side of
a partition, 4 when it stopped for another reason (removed, left), 1 on an error.

With ``--control-stdin`` the member obeys lines on stdin: ``go``, ``report``, ``stop``. It
starts only when it reads ``go``: the test can launch every process, wait until each has paid
its interpreter start-up, and then start them together, so that start-up time never looks like
a failure to a short heartbeat timeout. The end of stdin then stops the member, which also
means an orphaned worker (its test killed) exits instead of running on.

This is test scaffolding, kept independent of the ``pyderecho`` command on purpose: the tests
that use it exercise the runtime and the transport, not the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import signal
import sys
import time
from collections import Counter
from typing import Any

from pyderecho.core.config import CoreConfig
from pyderecho.core.errors import LocalProtocolError
from pyderecho.core.events import Delivered, Event, Stopped, Suspected, ViewInstalled
from pyderecho.core.node import Node
from pyderecho.core.view import NodeId, View
from pyderecho.layouts import resolve_layout
from pyderecho.runtime.connect import LINK_TIMEOUTS
from pyderecho.runtime.member import GroupStopped, Member
from pyderecho.transport.tcp import TcpTransport

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PARTITIONED = 3
EXIT_STOPPED = 4
DEFAULT_SECRET = b"pyderecho member_worker test secret".hex()
"""A fixed secret: these are test processes on private addresses."""


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def parse_members(text: str) -> dict[NodeId, str]:
    """``0=host:port,1=host:port,...`` into a map from node id to address."""
    members: dict[NodeId, str] = {}
    for item in text.split(","):
        node, sep, address = item.partition("=")
        if not sep or not node.strip().isdigit() or not address:
            raise argparse.ArgumentTypeError(f"{item!r} is not id=host:port")
        members[int(node)] = address.strip()
    return members


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--id", type=int, required=True, help="this member's node id")
    p.add_argument("--members", type=parse_members, required=True, help="view 0: id=host:port,...")
    p.add_argument("--listen", help="address to listen on (default: this member's entry)")
    p.add_argument("--group", default="pyderecho-test")
    p.add_argument("--secret-hex", default=DEFAULT_SECRET)
    p.add_argument("--layout", default="every-member")
    p.add_argument("--heartbeat-interval", type=float, default=0.05)
    p.add_argument("--heartbeat-timeout", type=float, default=0.5)
    p.add_argument("--rate", type=float, default=50.0, help="messages per second; 0: none")
    p.add_argument("--checkpoint-every", type=int, default=25)
    p.add_argument("--report-every", type=float, default=0.2)
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0: until told")
    p.add_argument("--control-stdin", action="store_true", help="wait for 'go'; EOF stops")
    return p


class Workload:
    """The member, its counters, and the checks a test reads from the output.

    Payloads are ``sender:number``. Each sender numbers from 0 and virtual synchrony re-sends in
    the next view what a view change discarded, so at every member each sender's numbers must
    arrive as 0, 1, 2, ... with no gap and no repeat: ``fifo_violations`` counts departures.
    The digest chains (epoch, sender, payload) of every delivery in order, so two members that
    delivered the same sequence in the same views show the same digest at the same count.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.delivered = 0
        self.sent = 0
        self.fifo_violations = 0
        self.next_from: Counter[NodeId] = Counter()
        self.digest = hashlib.sha256()
        self.stopped = asyncio.Event()
        self.reason = ""
        self.member: Member | None = None

    def on_event(self, event: Event) -> None:
        if isinstance(event, Delivered):
            self._delivered(event)
        elif isinstance(event, ViewInstalled):
            view = event.view
            emit("view", id=self.args.id, epoch=view.epoch, members=list(view.members))
        elif isinstance(event, Suspected):
            emit("suspected", id=self.args.id, node=event.node, at=round(time.monotonic(), 3))
        elif isinstance(event, Stopped):
            self.reason = event.reason
            emit("stopped", id=self.args.id, reason=event.reason, delivered=self.delivered)
            self.stopped.set()

    def _delivered(self, event: Delivered) -> None:
        self.delivered += 1
        sender_text, _, number_text = bytes(event.payload).partition(b":")
        if int(sender_text) != event.sender or int(number_text) != self.next_from[event.sender]:
            self.fifo_violations += 1
        self.next_from[event.sender] = int(number_text) + 1
        self.digest.update(b"%d|%d|%d|" % (event.epoch, event.sender, len(event.payload)))
        self.digest.update(event.payload)
        if self.delivered % self.args.checkpoint_every == 0:
            emit("checkpoint", id=self.args.id, n=self.delivered, digest=self.hexdigest())

    def hexdigest(self) -> str:
        return self.digest.copy().hexdigest()[:32]

    def progress(self) -> dict[str, Any]:
        assert self.member is not None
        return {
            "id": self.args.id,
            "delivered": self.delivered,
            "sent": self.sent,
            "epoch": self.member.view.epoch,
            "fifo_violations": self.fifo_violations,
        }

    def summary(self) -> dict[str, Any]:
        assert self.member is not None
        return {
            **self.progress(),
            "digest": self.hexdigest(),
            "transport_stats": dict(self.member.transport.stats),
            "node_stats": dict(self.member.node.stats),
        }

    async def send_forever(self) -> None:
        """Multicast at ``--rate`` until stopped; waits out views with nothing to send in."""
        member = self.member
        assert member is not None
        if self.args.rate <= 0:
            return
        period = 1.0 / self.args.rate
        while True:
            subgroup = self._subgroup()
            if subgroup is None:
                await member.wait_for_view(functools.partial(later, member.view.epoch), 3600)
                continue
            try:
                await member.send(subgroup, b"%d:%d" % (self.args.id, self.sent))
            except GroupStopped:
                return
            except LocalProtocolError:
                continue  # the view changed under us: look again
            self.sent += 1
            await asyncio.sleep(period)  # the workload's pace, not a protocol step

    def _subgroup(self) -> int | None:
        assert self.member is not None
        node = self.member.node
        if not node.layout.adequate or not node.layout.shards_of(node.node_id):
            return None
        return node.layout.shards_of(node.node_id)[0].subgroup

    async def report_forever(self) -> None:
        while True:
            await asyncio.sleep(self.args.report_every)
            emit("progress", **self.progress())


def later(epoch: int, view: View) -> bool:
    return view.epoch > epoch


async def wait_for_go(reader: asyncio.StreamReader) -> bool:
    """True on a ``go`` line, False if stdin ends first."""
    while line := await reader.readline():
        if line.strip() == b"go":
            return True
    return False


async def follow_commands(reader: asyncio.StreamReader, work: Workload) -> None:
    """Until stdin ends or says ``stop``: on ``report``, print a ``report`` line (what
    ``final`` would say) and go on running."""
    while line := await reader.readline():
        command = line.strip()
        if command == b"stop":
            return
        if command == b"report":
            emit("report", **work.summary())


async def main_async(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stdin: asyncio.StreamReader | None = None
    if args.control_stdin:
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    emit("loaded", id=args.id)
    if stdin is not None and not await wait_for_go(stdin):
        return EXIT_OK
    members: dict[NodeId, str] = args.members
    config = CoreConfig(
        heartbeat_interval=args.heartbeat_interval, heartbeat_timeout=args.heartbeat_timeout
    )
    node = Node(
        args.id,
        View(0, tuple(sorted(members))),
        resolve_layout(args.layout),
        config,
        now=loop.time(),
        addresses=members,
    )
    transport = TcpTransport(
        args.id,
        args.listen or members[args.id],
        group=args.group,
        secret=bytes.fromhex(args.secret_hex),
        user_timeout=LINK_TIMEOUTS * args.heartbeat_timeout,
    )
    work = Workload(args)
    ended = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, ended.set)
    member = Member(node, transport, on_event=work.on_event)
    work.member = member
    async with member:
        emit("started", id=args.id, address=transport.address)
        endings: list[asyncio.Task[Any]] = [
            loop.create_task(work.stopped.wait()),
            loop.create_task(ended.wait()),
        ]
        if stdin is not None:
            endings.append(loop.create_task(follow_commands(stdin, work)))
        if args.duration > 0:
            endings.append(loop.create_task(asyncio.sleep(args.duration)))
        workers = [
            loop.create_task(work.send_forever()),
            loop.create_task(work.report_forever()),
        ]
        try:
            running = {*endings, *workers}
            while True:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()  # a workload that failed fails the worker, loudly
                if not done.issubset(workers):
                    break  # else the sender ran out of things to do: keep running
        finally:
            for task in (*endings, *workers):
                task.cancel()
            await asyncio.gather(*endings, *workers, return_exceptions=True)
        emit("progress", **work.progress())
        if work.reason:
            return EXIT_PARTITIONED if work.reason.startswith("partitioned") else EXIT_STOPPED
        emit("final", **work.summary())
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.id not in args.members:
        parser().error(f"--id {args.id} is not among --members")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
