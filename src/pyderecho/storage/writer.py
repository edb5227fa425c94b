"""One thread per member that owns its durable writes, so the event loop never waits on a disk.

The loop hands records over with :meth:`GroupCommitWriter.submit` and goes on; the thread takes
everything queued since it last looked, appends it, syncs each log it touched once, and reports
each submission durable, in submission order. That is group commit: under load, one
``fdatasync`` covers many records, so its cost is shared instead of paid per record, and the
batch grows by itself with the load (no timer, no wait for a batch to fill: an idle writer
syncs a lone record at once).

A metadata write (:meth:`GroupCommitWriter.submit_metadata`) is a barrier: what was submitted
before it is durable before it is written, and what comes after is written after it is durable.
So a restart never finds records of a view whose installation the metadata does not yet show.

The first :class:`~pyderecho.storage.errors.StorageFailed` stops the writer for good
(fail-stop): the failure is reported once to ``on_failure``, nothing queued is written or
reported durable after it, and later submissions are refused.

Callbacks run on the writer thread. They must be quick and must not raise (an asyncio driver
wraps them with ``loop.call_soon_threadsafe``); one that raises stops the writer, since the
submissions after it could no longer be reported in order, and the exception goes to
``threading.excepthook``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyderecho.storage.errors import StorageFailed
from pyderecho.storage.log import Body, SegmentedLog, record_view
from pyderecho.storage.metadata import write_atomic


@dataclass(frozen=True, slots=True)
class WriterStats:
    """What a writer has made durable; ``records / syncs`` shows how well group commit works."""

    batches: int = 0
    """Times the thread woke up and took what was queued."""
    syncs: int = 0
    """``fdatasync`` calls on logs (one per touched log per run of records)."""
    records: int = 0
    body_bytes: int = 0
    metadata_writes: int = 0


@dataclass(slots=True)
class _Records:
    log: SegmentedLog
    bodies: list[memoryview]
    on_durable: Callable[[int], None]


@dataclass(slots=True)
class _Metadata:
    path: Path
    data: bytes
    on_done: Callable[[], None]


class _Stop:
    """Queued by :meth:`GroupCommitWriter.close`, always last."""


_Item = _Records | _Metadata | _Stop


class GroupCommitWriter:
    """The durable-write thread of one member (a daemon thread named ``pyderecho-writer-<name>``,
    started here). ``on_failure`` is called once, on that thread, with the first failure."""

    def __init__(self, name: str, on_failure: Callable[[StorageFailed], None]) -> None:
        self.name = name
        self._on_failure = on_failure
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        """Orders the closed and stopped checks with the queue, so nothing follows the stop."""
        self._closed = False
        self._stopped_by: BaseException | None = None
        self._batches = self._syncs = self._records = self._body_bytes = self._metadata_writes = 0
        """Counted on the writer thread; :attr:`stats` reads them."""
        self._thread = threading.Thread(target=self._run, name=f"pyderecho-writer-{name}")
        self._thread.daemon = True
        self._thread.start()

    @property
    def stats(self) -> WriterStats:
        """Counts so far (a snapshot)."""
        return WriterStats(
            self._batches, self._syncs, self._records, self._body_bytes, self._metadata_writes
        )

    def submit(
        self, log: SegmentedLog, bodies: Sequence[Body], on_durable: Callable[[int], None]
    ) -> None:
        """Append ``bodies`` to ``log`` (as consecutive records, if this writer is the log's only
        writer) and call ``on_durable`` with the sequence number of the last one once all are
        durable.

        The bodies must not change until then. Raises :class:`StorageFailed` once the writer
        has failed, ``RuntimeError`` once it is closed, ``ValueError`` for no bodies or one over
        the record limit.
        """
        if not bodies:
            raise ValueError("submit needs at least one record")
        self._put(_Records(log, [record_view(body) for body in bodies], on_durable))

    def submit_metadata(self, path: Path, data: bytes, on_done: Callable[[], None]) -> None:
        """Replace the metadata file ``path`` with ``data`` (see
        :func:`~pyderecho.storage.metadata.write_atomic`) after everything submitted before is
        durable, and call ``on_done`` once it is."""
        self._put(_Metadata(path, data, on_done))

    def close(self) -> None:
        """Write what was submitted, then stop the thread and wait for it. The logs stay open:
        they are the caller's."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_Stop())
        self._thread.join()

    # -- the caller's side ------------------------------------------------------------------

    def _put(self, item: _Item) -> None:
        with self._lock:
            stopped_by = self._stopped_by
            if isinstance(stopped_by, StorageFailed):
                raise StorageFailed(
                    "submit",
                    Path(stopped_by.filename),
                    stopped_by.errno,
                    f"refused: the writer {self.name} failed earlier, {stopped_by.strerror}",
                )
            if stopped_by is not None:
                raise RuntimeError(f"the writer {self.name} stopped: {stopped_by!r}")
            if self._closed:
                raise RuntimeError(f"the writer {self.name} is closed")
            self._queue.put(item)

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except StorageFailed as failure:
            self._stop(failure)
            self._on_failure(failure)
        except BaseException as error:
            self._stop(error)
            raise

    def _stop(self, cause: BaseException) -> None:
        with self._lock:
            self._stopped_by = cause

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._batches += 1
            run: list[_Records] = []
            for item in batch:
                if isinstance(item, _Records):
                    run.append(item)
                    continue
                self._commit(run)
                run = []
                if isinstance(item, _Stop):
                    assert item is batch[-1], "nothing is queued after the stop"
                    return
                write_atomic(item.path, item.data)
                self._metadata_writes += 1
                item.on_done()
            self._commit(run)

    def _commit(self, run: list[_Records]) -> None:
        """Append a run of submissions, sync each log once, then report them in order."""
        touched: dict[SegmentedLog, None] = {}
        lasts: list[int] = []
        for submission in run:
            for body in submission.bodies:
                last = submission.log.append(body)
                self._records += 1
                self._body_bytes += body.nbytes
            lasts.append(last)
            touched[submission.log] = None
        for log in touched:
            log.sync()
            self._syncs += 1
        for submission, last in zip(run, lasts, strict=True):
            submission.on_durable(last)
