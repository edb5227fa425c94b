"""A member's history on disk (``pyderecho node --delivery-log``), and ``pyderecho check``.

The history checker (:mod:`pyderecho.history.checker`) judges a run from what every member sent,
delivered and installed. In the simulator those records are collected in memory; a group of real
processes writes them instead, one JSON object per line, so that a run can be checked after the
fact, even one in which members were killed.

The format. Each line has a ``kind``:

- ``start``: a process began writing (``member``, ``pid``, ``group``); everything up to the next
  ``start`` is that process's, so a member restarted on the same file stays apart from its
  earlier self;
- ``view``: a view was installed (``epoch``, ``members``, ``joined``, ``departed``, ``adequate``,
  ``reason`` (empty unless inadequate), and ``shards``, each with its ``type``, ``index``,
  ``subgroup``, ``shard``, ``mode`` and ``members``);
- ``sent``: a message left this member (``view``, ``subgroup``, ``shard``, ``index``, ``size``,
  ``sha``);
- ``nulls``: ``count`` nulls left this member from index ``first``;
- ``delivered``: a message was handed to the application (``view``, ``subgroup``, ``shard``,
  ``mode``, ``sender``, ``index``, ``size``, ``sha``);
- ``end``: the process stopped in good order (``reason``); a log without it belongs to a
  process that died.

``sha`` is :func:`~pyderecho.history.records.payload_digest`: the first 16 hex digits of the
payload's SHA-256. Lines are written in batches (at most :data:`FLUSH_S` apart), so recording
costs a string format per event, not a system call; a killed process loses at most its last
batch, and a line cut short by the kill is recognised as such.

Checking logs of killed members. The sends of a member that died are not all on disk (or not at
all, when its log is left out), yet the survivors delivered them. For a sender without a log that
ended cleanly, a delivered message with no recorded send is taken as sent with the payload digest
of its first delivery: every other delivery of it must then agree (a ``digest`` or ``order``
violation otherwise), so what cannot be checked is only that the dead member really sent it.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from pyderecho.core.events import Delivered, MessageSent, NullsSent, ViewInstalled
from pyderecho.core.layout import Mode, ViewLayout
from pyderecho.core.view import NodeId, View
from pyderecho.history.checker import Violation, check_history, check_views
from pyderecho.history.records import DeliveryRecord, SentRecord, payload_digest

FLUSH_S = 0.1
"""The longest a record waits in memory before it is written."""
MAX_BUFFERED = 8192
"""Records buffered before a write even within :data:`FLUSH_S`, bounding the memory a fast
member's log can hold."""
_LATER_INCARNATION = 2**62
"""Where :func:`check_logs` numbers the second and later runs of one member id, so the view
checker sees each run as its own member; far above any id a group uses."""


class DeliveryLog:
    """Appends one member's sends, deliveries and views to a file, written in batches.

    The file is opened for appending: a member restarted with the same file adds a new run
    after a ``start`` record. Records wait in memory for at most :data:`FLUSH_S` (a timer on the
    running loop, armed only while something waits, so an idle member does not wake up).
    """

    def __init__(self, path: Path, member: NodeId, group: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._file: IO[bytes] = path.open("ab")
        if self._file.tell() > 0 and _last_byte(path) != b"\n":
            self._file.write(b"\n")  # a killed run's cut line stays a line of its own
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        start = {"kind": "start", "member": member, "pid": os.getpid(), "group": group}
        self._add(json.dumps(start) + "\n")

    def record(self, event: object) -> None:
        """Log ``event`` if it is one the log keeps (a delivery, a send, nulls, a view)."""
        if isinstance(event, Delivered):
            self.delivered(event)
        elif isinstance(event, MessageSent):
            self.sent(event)
        elif isinstance(event, NullsSent):
            self.nulls(event)
        elif isinstance(event, ViewInstalled):
            self.view(event)

    def delivered(self, event: Delivered) -> None:
        self._add(
            f'{{"kind":"delivered","view":{event.epoch},"subgroup":{event.subgroup},'
            f'"shard":{event.shard},"mode":"{event.mode.value}","sender":{event.sender},'
            f'"index":{event.index},"size":{len(event.payload)},'
            f'"sha":"{payload_digest(event.payload)}"}}\n'
        )

    def sent(self, event: MessageSent) -> None:
        self._add(
            f'{{"kind":"sent","view":{event.epoch},"subgroup":{event.subgroup},'
            f'"shard":{event.shard},"index":{event.index},"size":{len(event.payload)},'
            f'"sha":"{payload_digest(event.payload)}"}}\n'
        )

    def nulls(self, event: NullsSent) -> None:
        self._add(
            f'{{"kind":"nulls","view":{event.epoch},"subgroup":{event.subgroup},'
            f'"shard":{event.shard},"first":{event.first},"count":{event.count}}}\n'
        )

    def view(self, event: ViewInstalled) -> None:
        self._add(json.dumps({"kind": "view", **view_record(event.view, event.layout)}) + "\n")

    def close(self, reason: str) -> None:
        """Write the ``end`` record and everything still buffered, then close the file."""
        self._add(json.dumps({"kind": "end", "reason": reason}) + "\n")
        self.flush()
        self._file.close()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            data = "".join(self._lines).encode()
            self._lines.clear()
            self._file.write(data)
            self._file.flush()

    def _add(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= MAX_BUFFERED:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(FLUSH_S, self.flush)


def view_record(view: View, layout: ViewLayout) -> dict[str, Any]:
    """A view and its layout as JSON: in the log, on ``pyderecho node``'s output, in its status."""
    return {
        "epoch": view.epoch,
        "members": list(view.members),
        "joined": list(view.joined),
        "departed": list(view.departed),
        "adequate": layout.adequate,
        "reason": layout.reason,
        "shards": [
            {
                "type": ref.type_name,
                "index": ref.subgroup_index,
                "subgroup": ref.subgroup,
                "shard": ref.shard,
                "mode": ref.layout.mode.value,
                "members": list(ref.layout.members),
            }
            for ref in layout.shards
        ],
    }


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1)


# -- reading and checking ----------------------------------------------------------------------


class LogError(ValueError):
    """A log that cannot be read as a delivery log; the message names the file and line."""


@dataclass
class Run:
    """What one process wrote between its ``start`` record and its ``end`` (or the file's end)."""

    member: NodeId
    source: str
    clean: bool = False
    """The process wrote its ``end`` record: its sends are all on disk."""
    views: list[View] = field(default_factory=list)
    deliveries: list[DeliveryRecord] = field(default_factory=list)
    sent: list[SentRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    """What :func:`check_logs` found."""

    violations: list[Violation]
    deliveries: int
    members: int
    reconstructed: int
    """Sends taken from deliveries, for senders without a cleanly ended log."""


def read_log(path: Path) -> list[Run]:
    """The runs one log file holds, oldest first.

    The last line of a run that has no ``end`` record may be cut short (the process was killed
    while writing); it is skipped. Anything else unreadable raises :class:`LogError`.
    """
    runs: list[Run] = []
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise LogError(f"{path}: cannot read it: {exc.strerror}") from None
    pending_error: LogError | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise TypeError("not a JSON object")
            kind = record["kind"]
            if pending_error is not None and kind != "start":
                raise pending_error
            pending_error = None
            if kind == "start":
                runs.append(Run(_int(record["member"]), where))
                continue
            if not runs:
                raise LogError(f"{where}: a {kind!r} record before any start record")
            _read_record(runs[-1], kind, record)
        except LogError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            error = LogError(f"{where}: not a delivery-log record: {_describe(exc)}")
            if not runs or runs[-1].clean or pending_error is not None:
                raise error from None
            pending_error = error  # fine if this is the cut last line of a killed run
    return runs


def _read_record(run: Run, kind: str, record: dict[str, Any]) -> None:
    if run.clean:
        raise ValueError(f"a {kind!r} record after the run's end record")
    member = run.member
    if kind == "delivered":
        run.deliveries.append(
            DeliveryRecord(
                member,
                _int(record["view"]),
                _int(record["subgroup"]),
                _int(record["shard"]),
                Mode(record["mode"]),
                _int(record["sender"]),
                _int(record["index"]),
                _int(record["size"]),
                _str(record["sha"]),
            )
        )
    elif kind == "sent":
        run.sent.append(
            SentRecord(
                member,
                _int(record["view"]),
                _int(record["subgroup"]),
                _int(record["shard"]),
                _int(record["index"]),
                _str(record["sha"]),
            )
        )
    elif kind == "nulls":
        epoch, subgroup, shard = (_int(record[k]) for k in ("view", "subgroup", "shard"))
        first = _int(record["first"])
        run.sent.extend(
            SentRecord(member, epoch, subgroup, shard, index, "", null=True)
            for index in range(first, first + _int(record["count"]))
        )
    elif kind == "view":
        run.views.append(
            View(
                _int(record["epoch"]),
                tuple(_int(m) for m in record["members"]),
                tuple(_int(m) for m in record["joined"]),
                tuple(_int(m) for m in record["departed"]),
            )
        )
    elif kind == "end":
        run.clean = True
    else:
        raise ValueError(f"unknown kind {kind!r}")


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _describe(exc: Exception) -> str:
    return f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)


def check_logs(paths: Iterable[Path]) -> Verdict:
    """Read every log and run :func:`~pyderecho.history.checker.check_history` and
    :func:`~pyderecho.history.checker.check_views` over them together."""
    runs = [run for path in paths for run in read_log(path)]
    deliveries: dict[NodeId, list[DeliveryRecord]] = {}
    sent: list[SentRecord] = []
    for run in runs:
        deliveries.setdefault(run.member, []).extend(run.deliveries)
        sent.extend(run.sent)
    reconstructed = list(_reconstructed_sends(runs, deliveries, sent))
    violations = check_history(deliveries, [*sent, *reconstructed])
    violations += _check_views(runs)
    return Verdict(
        violations=violations,
        deliveries=sum(len(records) for records in deliveries.values()),
        members=len(deliveries),
        reconstructed=len(reconstructed),
    )


def _reconstructed_sends(
    runs: Sequence[Run],
    deliveries: dict[NodeId, list[DeliveryRecord]],
    sent: Sequence[SentRecord],
) -> Iterator[SentRecord]:
    """A send for every delivered message whose sender has no clean log of that view."""
    accounted = {(run.member, view.epoch) for run in runs if run.clean for view in run.views}
    known = {(r.epoch, r.subgroup, r.shard, r.member, r.index) for r in sent}
    for member in sorted(deliveries):
        for record in deliveries[member]:
            key = (record.epoch, record.subgroup, record.shard, record.sender, record.index)
            if key not in known and (record.sender, record.epoch) not in accounted:
                known.add(key)
                yield SentRecord(record.sender, *key[:3], record.index, record.digest)


def _check_views(runs: Sequence[Run]) -> list[Violation]:
    """:func:`check_views` with each run of a restarted member as a member of its own: a run
    that joined again starts at a later epoch, which is no skipped epoch."""
    views: dict[NodeId, list[View]] = {}
    deliveries: dict[NodeId, list[DeliveryRecord]] = {}
    real: dict[NodeId, NodeId] = {}
    for run in runs:
        key = run.member
        if key in views:
            key = _LATER_INCARNATION + len(real)
        real[key] = run.member
        views[key] = run.views
        deliveries[key] = run.deliveries
    return [replace(v, member=real[v.member]) for v in check_views(views, deliveries)]
