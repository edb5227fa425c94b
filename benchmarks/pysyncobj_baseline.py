"""The baseline for a replicated object: a three-replica PySyncObj (Raft) group on this machine.

PySyncObj (pip name ``pysyncobj``) replicates a Python object: a method decorated with
``@replicated`` is appended to the Raft log and, once committed, runs on every replica in log
order. That is the service a replicated object of pyderecho gives, so its figures are what the
replicated-object benchmark is judged against.

Setup: three replicas, three OS processes (this file run with ``--child``), each a
``Counter(SyncObj)`` listening on ``127.0.0.1`` on a port free at start-up; nothing leaves the
loopback. ``Counter.add(value: bytes) -> int`` takes a 100-byte argument (random bytes, because
PySyncObj zlib-compresses every message and zeros would flatter it) and returns the number of
calls applied so far, a small int.

Throughput phase (``--repeat`` runs on the same group, once a leader is elected and every
replica has completed one call): every replica calls ``add(value, callback=cb)`` with
``--in-flight`` calls outstanding. Each callback that brings a result issues the next call at
once, so the window stays full without a second thread fighting the tick thread for the GIL;
a call that fails (election, full queue) is re-issued by the replica's main thread, which tops
the window up every few milliseconds. After ``--warmup`` seconds, the callbacks with a result
are counted for ``--seconds``; the three windows share one start time (``time.monotonic`` is
system-wide on Linux). ``ops_per_s`` of a run is the group's sum of its members' rates: every
committed call counts once, at the replica that issued it (a follower's callback fires when the
call has been applied there). The reported ``ops_per_s`` is the median over runs.

Latency phase: exactly one call in flight in the whole group; the replicas take turns
(``--latency-calls`` split between them), each timing ``add`` from its main thread, from the
call to the callback. ``latency_ms`` is p50/p99 over all of them; ``latency_detail`` splits
them by replica, since a follower's call takes an extra hop to the leader.

Configuration: PySyncObj's defaults (``SyncObjConf()``), with no option changed for the
throughput phase and ``latency_ms``. The only non-default settings are optional:

- ``latency_ms_no_batch`` (on unless ``--skip-no-batch``): the latency phase again on a second,
  fresh group with ``appendEntriesUseBatch=False``. With the default (batching on) the leader
  sends log entries only on its ``appendEntriesPeriod`` timer (0.1 s) and a call enqueued from
  another thread waits for the tick thread's next wake-up (``autoTickPeriod``, 0.05 s), so a
  lone call takes tens of milliseconds. PySyncObj documents batching off as the setting that
  "improve[s] single request speed"; reporting both keeps the baseline from being a straw man.
  Throughput is measured only with the default, which PySyncObj documents as the faster one.
- ``--journal``: ``journalFile`` in a temporary directory per replica (PySyncObj's file journal
  instead of its default in-memory log), for comparison with a persistent mode. Off by default.

Durability, as PySyncObj 0.3.17 does it (nothing here turns anything off): by default the Raft
log is in memory only (``journalFile=None``), so a committed call survives only while a
majority of processes lives. With ``journalFile`` the log is written into an ``mmap`` that is
never ``msync``-ed or ``fsync``-ed while running (only flushed when the object is destroyed),
and term/vote metadata is written and renamed without ``fsync``: PySyncObj never fsyncs.

Throughput is latency-bound at small windows: with batching on, the leader ships log entries
only on its 0.1 s append-entries timer, so a call issued at the leader commits after about one
period and a follower's after about two (forwarded to the leader, then the new commit index
arrives with the next append-entries). A replica with W calls in flight therefore commits at
most about W / 0.1 s (leader) or W / 0.2 s (follower) calls per second, whatever the CPU could
do; at the default window of 100 the processes mostly sleep. Raise ``--in-flight`` (into the
thousands) to find the CPU-bound ceiling; ``in_flight`` is in the output so that a comparison
uses the same window.

Prints one JSON object::

    .venv-fast/bin/python benchmarks/pysyncobj_baseline.py [--seconds 5] [--in-flight 100]
        [--repeat 3] [--latency-calls 500] [--warmup 1] [--skip-no-batch] [--journal]

Another script can call :func:`run_baseline` (import this file through ``sys.path``, as
``compare.py`` imports ``raw_baselines``, or with ``runpy``); importing it starts nothing and
does not need ``pysyncobj`` until the children run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from types import TracebackType
from typing import IO, Any

from pyderecho.cli.demo import free_ports

MEMBERS = 3
VALUE_BYTES = 100
HOST = "127.0.0.1"
"""Loopback only: the replicas bind and connect nowhere else."""

START_LEAD_S = 0.5
"""How far ahead the parent schedules a throughput run, so all three start together."""
STARTUP_TIMEOUT_S = 45.0
"""Bind, connect (PySyncObj retries a refused connection only every 5 s), elect, one call."""
CALL_TIMEOUT_S = 5.0
"""A single call that takes longer than this is counted as failed."""
DRAIN_TIMEOUT_S = 10.0
"""After a throughput window, how long a replica waits for its outstanding calls."""
LATENCY_PHASE_CAP_S = 60.0
"""A replica's latency phase stops after this long, whatever it has measured."""
TOP_UP_PERIOD_S = 0.005
"""How often a replica's main thread refills the window after failed calls."""
REPLY_MARGIN_S = 15.0
"""Slack on every wait for a child's reply, beyond what the phase itself may take."""


# -- the replicated object (in the children) ---------------------------------------------------


def _counter_class() -> Any:
    """Define ``Counter(SyncObj)`` on first use, so that importing this file needs no
    ``pysyncobj`` (only the child processes do)."""
    from pysyncobj import SyncObj, replicated  # noqa: PLC0415

    class Counter(SyncObj):  # type: ignore[misc]
        """The replicated object: ``add`` runs on every replica in Raft log order."""

        def __init__(self, self_addr: str, partners: list[str], conf: Any) -> None:
            super().__init__(self_addr, partners, conf)
            # Set after SyncObj.__init__: PySyncObj snapshots (log compaction) only the
            # attributes that did not exist when its own constructor finished.
            self._calls = 0
            self._bytes = 0

        @replicated  # type: ignore[untyped-decorator]
        def add(self, value: bytes) -> int:
            self._calls += 1
            self._bytes += len(value)
            return self._calls

    return Counter


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class _Waiter:
    """One call's completion, for the latency phase and the readiness check."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: int | None = None

    def done(self, result: object, error: int) -> None:
        self.error = error
        self.event.set()


def _call_once(counter: Any, value: bytes) -> tuple[float, int | None]:
    """One call from this thread; its latency in seconds and its error (``None``: timed out)."""
    waiter = _Waiter()
    start = time.perf_counter()
    counter.add(value, callback=waiter.done)
    finished = waiter.event.wait(CALL_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    if not finished:
        return elapsed, None
    return elapsed, waiter.error


def _leader_id(counter: Any) -> str | None:
    leader = counter._getLeader()
    return None if leader is None else str(leader.id)


def _wait_ready(counter: Any, value: bytes, success: int) -> dict[str, Any]:
    """Wait for a leader and this replica's first committed call: the group works end to end."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if _leader_id(counter) is not None and counter.isReady():
            _, error = _call_once(counter, value)
            if error == success:
                return {"ready": True, "leader": _leader_id(counter)}
        time.sleep(0.05)
    return {"ready": False, "leader": _leader_id(counter)}


class _Pump:
    """Keeps ``in_flight`` calls outstanding on one replica and counts the committed ones.

    A successful callback (on PySyncObj's tick thread) issues the next call itself; a failed
    one gives its slot back for the main thread's :meth:`top_up`, so that a call failing at
    once (full queue) cannot recurse.
    """

    def __init__(self, counter: Any, value: bytes, in_flight: int, success: int) -> None:
        self._counter = counter
        self._value = value
        self._in_flight = in_flight
        self._success = success
        self._lock = threading.Lock()
        self.committed = 0
        self.errors: dict[str, int] = {}
        self.outstanding = 0
        self.stopping = False

    def _issue(self) -> None:
        self._counter.add(self._value, callback=self._done)

    def _done(self, result: object, error: int) -> None:
        with self._lock:
            again = error == self._success and not self.stopping
            if error == self._success:
                self.committed += 1
            else:
                self.errors[str(error)] = self.errors.get(str(error), 0) + 1
            if not again:
                self.outstanding -= 1
        if again:
            self._issue()

    def top_up(self) -> None:
        with self._lock:
            missing = 0 if self.stopping else self._in_flight - self.outstanding
            self.outstanding += missing
        for _ in range(missing):
            self._issue()

    def stop(self) -> None:
        with self._lock:
            self.stopping = True


def _throughput(
    counter: Any, value: bytes, success: int, command: dict[str, Any]
) -> dict[str, Any]:
    """One throughput run on this replica, on the shared schedule in ``command``."""
    start = float(command["start"])
    begin = start + float(command["warmup"])
    end = begin + float(command["seconds"])
    pump = _Pump(counter, value, int(command["in_flight"]), success)
    leader_before = _leader_id(counter)
    time.sleep(max(0.0, start - time.monotonic()))
    t0: float | None = None
    c0 = 0
    while True:
        now = time.monotonic()
        if t0 is None and now >= begin:
            t0, c0 = now, pump.committed
        if now >= end:
            break
        pump.top_up()
        time.sleep(TOP_UP_PERIOD_S)
    t1, c1 = time.monotonic(), pump.committed
    pump.stop()
    drain_deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while pump.outstanding > 0 and time.monotonic() < drain_deadline:
        time.sleep(0.01)
    assert t0 is not None
    return {
        "ops": c1 - c0,
        "span_s": t1 - t0,
        "errors": pump.errors,
        "drained": pump.outstanding == 0,
        "leader_before": leader_before,
        "leader_after": _leader_id(counter),
    }


def _latency(counter: Any, value: bytes, success: int, calls: int) -> dict[str, Any]:
    """``calls`` calls one after another from this thread: the latency of a lone call."""
    latencies_ms: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + LATENCY_PHASE_CAP_S
    for _ in range(calls):
        if time.monotonic() >= deadline:
            errors["phase_cap"] = errors.get("phase_cap", 0) + 1
            break
        elapsed, error = _call_once(counter, value)
        if error == success:
            latencies_ms.append(elapsed * 1e3)
        else:
            key = "timeout" if error is None else str(error)
            errors[key] = errors.get(key, 0) + 1
    return {"latencies_ms": latencies_ms, "errors": errors, "leader": _leader_id(counter)}


def _child_main(argv: list[str]) -> int:
    """A replica: build the group member, report readiness, then serve the parent's commands
    (one JSON line each on stdin, one JSON reply each on stdout) until ``quit`` or EOF."""
    parser = argparse.ArgumentParser(prog="pysyncobj_baseline --child")
    parser.add_argument("self_addr")
    parser.add_argument("partners", nargs="+")
    parser.add_argument("--no-batch", action="store_true")
    parser.add_argument("--journal-file")
    parser.add_argument("--lifetime", type=float, required=True)
    args = parser.parse_args(argv)

    # Whatever happens to the parent, this process ends on its own.
    watchdog = threading.Timer(args.lifetime, os._exit, args=(3,))
    watchdog.daemon = True
    watchdog.start()

    from pysyncobj import FAIL_REASON, SyncObjConf  # noqa: PLC0415 - children only

    options: dict[str, Any] = {}
    if args.no_batch:
        options["appendEntriesUseBatch"] = False
    if args.journal_file:
        options["journalFile"] = args.journal_file
    success = int(FAIL_REASON.SUCCESS)
    value = os.urandom(VALUE_BYTES)
    counter = _counter_class()(args.self_addr, args.partners, SyncObjConf(**options))
    try:
        _emit(_wait_ready(counter, value, success))
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] == "throughput":
                _emit(_throughput(counter, value, success, command))
            elif command["cmd"] == "leader":
                _emit({"leader": _leader_id(counter)})
            elif command["cmd"] == "latency":
                _emit(_latency(counter, value, success, int(command["calls"])))
            else:
                break
    finally:
        counter.destroy()
        deadline = time.monotonic() + 2.0
        while counter.tick_thread_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        sys.stdout.flush()
    # The tick thread is not a daemon; do not let a stuck one keep the process alive.
    os._exit(0)


# -- the parent ---------------------------------------------------------------------------------


class _Child:
    """One replica process and a thread that turns its stdout into a queue of replies."""

    def __init__(self, argv: list[str]) -> None:
        self._stderr: IO[str] = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - close()
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._replies.put(line)
        self._replies.put(None)

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no reply within {timeout:.0f} s{self._stderr_tail()}") from None
        if line is None:
            raise RuntimeError(f"replica exited ({self.process.poll()}){self._stderr_tail()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:]
        return f"; its stderr ends:\n{tail}" if tail else ""

    def close(self) -> None:
        """Ask politely, then terminate, then kill: the child never outlives the parent."""
        with contextlib.suppress(OSError, ValueError):
            self.send({"cmd": "quit"})
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(timeout=3.0)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()


class _Group:
    """Three replica processes on fresh loopback ports, killed on exit whatever happened."""

    def __init__(self, lifetime_s: float, *, no_batch: bool = False, journal: bool = False) -> None:
        self._lifetime_s = lifetime_s
        self._no_batch = no_batch
        self._journal_dir = tempfile.mkdtemp(prefix="pysyncobj-") if journal else None
        self.children: list[_Child] = []
        self.leader: str | None = None
        self.addresses = [f"{HOST}:{port}" for port in free_ports(MEMBERS)]

    def __enter__(self) -> _Group:
        try:
            for i, address in enumerate(self.addresses):
                argv = [sys.executable, os.path.abspath(__file__), "--child", address]
                argv += [other for other in self.addresses if other != address]
                argv += ["--lifetime", str(self._lifetime_s)]
                if self._no_batch:
                    argv.append("--no-batch")
                if self._journal_dir is not None:
                    argv += ["--journal-file", os.path.join(self._journal_dir, f"journal-{i}")]
                self.children.append(_Child(argv))
            readies = [child.reply(STARTUP_TIMEOUT_S + REPLY_MARGIN_S) for child in self.children]
        except BaseException:
            self._close()
            raise
        leaders = {ready["leader"] for ready in readies}
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        # A re-election can leave replicas briefly naming different leaders: ask again until
        # they agree, so that the run starts on a settled group.
        while (len(leaders) != 1 or None in leaders) and time.monotonic() < deadline:
            time.sleep(0.2)
            for child in self.children:
                child.send({"cmd": "leader"})
            leaders = {child.reply(REPLY_MARGIN_S)["leader"] for child in self.children}
        if not all(ready["ready"] for ready in readies) or len(leaders) != 1 or None in leaders:
            self._close()
            raise RuntimeError(f"group not ready: {readies}, leaders {leaders}")
        self.leader = leaders.pop()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        for child in self.children:
            child.close()
        if self._journal_dir is not None:
            shutil.rmtree(self._journal_dir, ignore_errors=True)

    def role(self, member: int) -> str:
        return "leader" if self.addresses[member] == self.leader else "follower"

    def throughput(self, seconds: float, in_flight: int, warmup_s: float) -> dict[str, Any]:
        """One run, all replicas on one schedule; the group's rate and each member's."""
        command = {
            "cmd": "throughput",
            "start": time.monotonic() + START_LEAD_S,
            "warmup": warmup_s,
            "seconds": seconds,
            "in_flight": in_flight,
        }
        for child in self.children:
            child.send(command)
        timeout = START_LEAD_S + warmup_s + seconds + DRAIN_TIMEOUT_S + REPLY_MARGIN_S
        replies = [child.reply(timeout) for child in self.children]
        members = [
            {
                "member": i,
                "role": self.role(i),
                "ops_per_s": reply["ops"] / reply["span_s"],
                **reply,
            }
            for i, reply in enumerate(replies)
        ]
        return {"ops_per_s": sum(m["ops_per_s"] for m in members), "members": members}

    def latency(self, calls: int) -> dict[str, Any]:
        """``calls`` lone calls, the replicas taking turns; one call in flight in the group."""
        shares = [calls // MEMBERS + (1 if i < calls % MEMBERS else 0) for i in range(MEMBERS)]
        everything: list[float] = []
        members: list[dict[str, Any]] = []
        for i, (child, share) in enumerate(zip(self.children, shares, strict=True)):
            child.send({"cmd": "latency", "calls": share})
            reply = child.reply(LATENCY_PHASE_CAP_S + CALL_TIMEOUT_S + REPLY_MARGIN_S)
            samples: list[float] = reply["latencies_ms"]
            everything += samples
            members.append(
                {"member": i, "role": self.role(i), **_percentiles(samples), "calls": len(samples)}
                | {"errors": reply["errors"]}
            )
        return {"all": _percentiles(everything), "members": members}


def _percentiles(samples_ms: list[float]) -> dict[str, float | None]:
    if not samples_ms:
        return {"p50": None, "p99": None}
    if len(samples_ms) == 1:
        return {"p50": samples_ms[0], "p99": samples_ms[0]}
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {"p50": statistics.median(samples_ms), "p99": cuts[98]}


def installed() -> bool:
    """Whether pysyncobj is installed (``pip install -e '.[bench]'``). Importing this module
    does not need it, so callers that treat the baseline as optional ask here."""
    try:
        metadata.version("pysyncobj")
    except metadata.PackageNotFoundError:
        return False
    return True


def run_baseline(
    seconds: float,
    in_flight: int,
    repeat: int,
    *,
    latency_calls: int = 500,
    warmup_s: float = 1.0,
    no_batch_latency: bool = True,
    journal: bool = False,
) -> dict[str, object]:
    """Measure a three-replica PySyncObj group on this machine (see the module docstring).

    ``ops_per_s`` is the median of ``repeat`` runs of ``seconds`` each with ``in_flight`` calls
    outstanding per replica; ``latency_ms`` is p50/p99 of ``latency_calls`` lone calls with
    PySyncObj's defaults, ``latency_ms_no_batch`` the same with batching off (unless
    ``no_batch_latency`` is false). Every child process is gone when this returns or raises.
    """
    version = metadata.version("pysyncobj")
    run_s = START_LEAD_S + warmup_s + seconds + DRAIN_TIMEOUT_S + REPLY_MARGIN_S
    latency_s = MEMBERS * (LATENCY_PHASE_CAP_S + CALL_TIMEOUT_S + REPLY_MARGIN_S)
    lifetime_s = 2 * STARTUP_TIMEOUT_S + repeat * run_s + latency_s + 60.0
    load_before = os.getloadavg()
    with _Group(lifetime_s, journal=journal) as group:
        runs = [group.throughput(seconds, in_flight, warmup_s) for _ in range(repeat)]
        latency = group.latency(latency_calls)
    result: dict[str, object] = {
        "system": "pysyncobj",
        "version": version,
        "members": MEMBERS,
        "ops_per_s": statistics.median(run["ops_per_s"] for run in runs),
        "runs": runs,
        "latency_ms": latency["all"],
        "in_flight": in_flight,
        "value_bytes": VALUE_BYTES,
        "seconds": seconds,
        "warmup_s": warmup_s,
        "journal": "file (no fsync)" if journal else "memory (PySyncObj default)",
        "latency_detail": latency["members"],
    }
    if no_batch_latency:
        with _Group(lifetime_s, no_batch=True, journal=journal) as group:
            unbatched = group.latency(latency_calls)
        result["latency_ms_no_batch"] = unbatched["all"]
        result["latency_detail_no_batch"] = unbatched["members"]
    result["load_avg"] = {"before": list(load_before), "after": list(os.getloadavg())}
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    parser.add_argument("--in-flight", type=int, default=100, help="outstanding calls per replica")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs; the median counts")
    parser.add_argument("--latency-calls", type=int, default=500, help="lone calls, in all")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    parser.add_argument(
        "--skip-no-batch", action="store_true", help="no latency phase with batching off"
    )
    parser.add_argument("--journal", action="store_true", help="file journal (never fsynced)")
    args = parser.parse_args(argv)
    result = run_baseline(
        args.seconds,
        args.in_flight,
        args.repeat,
        latency_calls=args.latency_calls,
        warmup_s=args.warmup,
        no_batch_latency=not args.skip_no_batch,
        journal=args.journal,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
