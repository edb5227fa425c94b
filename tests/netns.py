"""A small network of Linux network namespaces, for tests that need hosts with their own
addresses and links that can be cut.

:class:`Lab` builds, for ``size`` members, one namespace each (``10.77.0.1``, ``10.77.0.2``...
on a /24) plus a hub namespace holding a bridge that every member's veth pair plugs into. No
interface, address, route or firewall rule is added to the namespace the tests run in: the
whole network lives in namespaces this module creates, under names that carry the test
process's pid, so two runs on one machine never meet.

Links are cut at the bridge, by DROP rules (the peers see silence, not a reset, as behind a
failed switch) loaded with ``ebtables-restore`` in one nf_tables transaction, so that every link
of a cut goes at the same instant; healing flushes them. Rules added one command at a time
(``iptables`` in each member namespace) cut link after link over tens of milliseconds, hundreds
on a loaded machine: a member that has lost one peer while it still reaches the others then
spreads its suspicion of that peer to the side meant to survive, which adopts it, and with a
short heartbeat timeout the whole group can stop. A real partition may well evolve like that,
but a test of a clean split must make a clean split.

Everything is undone in :meth:`Lab.close` (also on the way out of ``with Lab(...)``): processes
started through :meth:`Lab.popen` are killed by their pid, the cut healed, namespaces deleted
(which deletes their interfaces). Each step runs even if an earlier one failed.

Needs root, the ``ip`` command (iproute2) and ``ebtables`` with ``ebtables-restore`` (Debian's
``iptables`` package ships them, on the nf_tables backend); :func:`unavailable` says what is
missing so a test can skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from functools import cache
from types import TracebackType
from typing import IO

SUBNET = "10.77.0"
"""The private /24 inside the lab's namespaces; never routed anywhere else."""


class NetnsError(RuntimeError):
    """A command that builds or changes the lab failed."""


def _run(
    argv: Sequence[str], *, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@cache
def unavailable() -> str | None:
    """Why network-namespace tests cannot run here, or None if they can.

    Probes for real (creates and deletes one namespace, runs ebtables inside it) rather than
    guessing from the uid: containers often run as root without the capabilities this needs.
    """
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for tool in ("ip", "ebtables", "ebtables-restore"):
        if shutil.which(tool) is None:
            return f"needs the {tool!r} command (apt-get install iproute2 iptables)"
    probe = f"pdr{os.getpid()}-probe"
    try:
        if (made := _run(["ip", "netns", "add", probe], check=False)).returncode != 0:
            return f"'ip netns add' failed: {made.stderr.strip()}"
        rules = _run(["ip", "netns", "exec", probe, "ebtables", "-L", "FORWARD"], check=False)
        if rules.returncode != 0:
            return f"ebtables does not work in a namespace: {rules.stderr.strip()}"
        veth = _run(
            ["ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"],
            check=False,
        )
        if veth.returncode != 0:
            return f"cannot create a veth pair: {veth.stderr.strip()}"
    finally:
        _run(["ip", "netns", "delete", probe], check=False)
    return None


class Lab:
    """``size`` member namespaces on one bridge; see the module docstring."""

    def __init__(self, size: int) -> None:
        if not 1 <= size <= 200:
            raise ValueError("a lab has 1..200 members")
        self.size = size
        self.prefix = f"pdr{os.getpid()}"
        self.hub = f"{self.prefix}-hub"
        self.namespaces = [f"{self.prefix}-m{i}" for i in range(size)]
        self._created: list[str] = []
        self._cut = False
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def ip(self, member: int) -> str:
        """Member ``member``'s address (members count from 0, addresses from .1)."""
        return f"{SUBNET}.{member + 1}"

    def build(self) -> None:
        self._add_namespace(self.hub)
        _run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.hub, "link", "set", "br0", "up"])
        for member, ns in enumerate(self.namespaces):
            self._add_namespace(ns)
            # Both ends are created inside namespaces: nothing appears in the caller's own.
            _run(
                [
                    *("ip", "-n", self.hub, "link", "add", f"v{member}", "type", "veth"),
                    *("peer", "name", "eth0", "netns", ns),
                ]
            )
            _run(["ip", "-n", self.hub, "link", "set", f"v{member}", "master", "br0", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.ip(member)}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _add_namespace(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._created.append(name)

    # -- processes --------------------------------------------------------------------------

    def command(self, member: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside member ``member``'s namespace (``ip netns exec`` then execs it,
        so the process's pid is the command's own)."""
        return ["ip", "netns", "exec", self.namespaces[member], *argv]

    def popen(
        self,
        member: int,
        argv: Sequence[str],
        *,
        stdin: int | IO[bytes] | None = None,
        stdout: int | IO[bytes] | None = None,
        stderr: int | IO[bytes] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in member ``member``'s namespace; :meth:`close` kills it if alive."""
        process = subprocess.Popen(
            self.command(member, argv), stdin=stdin, stdout=stdout, stderr=stderr
        )
        self._processes.append(process)
        return process

    def run(self, member: int, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return _run(self.command(member, argv))

    # -- faults -----------------------------------------------------------------------------

    def cut(self, side_a: Iterable[int], side_b: Iterable[int]) -> None:
        """Drop every IPv4 packet between each member of ``side_a`` and each of ``side_b``,
        both ways, at the bridge, in one transaction: every link of the cut goes at once."""
        side_b = list(side_b)
        rules = [
            f"-A FORWARD -p IPv4 --ip-src {self.ip(here)} --ip-dst {self.ip(there)} -j DROP"
            for a in side_a
            for b in side_b
            for here, there in ((a, b), (b, a))
        ]
        script = "*filter\n" + "\n".join(rules) + "\nCOMMIT\n"
        _run(["ip", "netns", "exec", self.hub, "ebtables-restore", "--noflush"], stdin=script)
        self._cut = True

    def heal(self) -> None:
        """Remove every rule :meth:`cut` added: the hub's FORWARD chain holds nothing else."""
        if self._cut:
            _run(["ip", "netns", "exec", self.hub, "ebtables", "-F", "FORWARD"])
            self._cut = False

    # -- teardown ---------------------------------------------------------------------------

    def stop_processes(self) -> None:
        """Kill (by pid) every process :meth:`popen` started that is still running, reap them
        all and close their stdin. Their stdout and stderr are left to whoever reads them."""
        errors: list[BaseException] = []
        while self._processes:
            process = self._processes.pop()
            try:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=10)
                if process.stdin is not None:
                    process.stdin.close()
            except BaseException as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Kill the lab's processes, remove its rules, delete its namespaces; each step runs
        whatever happened before it, and the first error is raised at the end."""
        errors: list[BaseException] = []
        try:
            self.stop_processes()
        except BaseException as exc:  # keep tearing down; report afterwards
            errors.append(exc)
        try:
            self.heal()
        except BaseException as exc:
            errors.append(exc)
        while self._created:
            name = self._created.pop()
            result = _run(["ip", "netns", "delete", name], check=False)
            if result.returncode != 0:
                errors.append(NetnsError(f"could not delete namespace {name}: {result.stderr}"))
        if errors:
            raise errors[0]
