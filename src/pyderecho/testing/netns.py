"""Member processes on hosts of their own, simulated with network namespaces, so that the links
between them can be cut with iptables: partitions and partial cuts on real sockets.

Each member id gets a network namespace with one end of a veth pair; the other ends join one
bridge in the host's namespace, which also holds an address, so a runner there reaches every
member. :meth:`NetworkLab.cut` drops every packet between two members, in both of their
namespaces (DROP, not REJECT: like a pulled cable, the sockets see silence, and TCP
retransmits what waited once the cut heals); :meth:`NetworkLab.heal` lifts every cut.

Needs root, ``ip`` (iproute2) and ``iptables``; :func:`unavailable` says why a host cannot.
Names carry the process id, so labs of concurrent test workers do not meet.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from pyderecho.core.view import NodeId

PORT = 7000
"""Every member listens on this port of its own address: each namespace has its own ports."""


def unavailable() -> str:
    """Why this host cannot run a lab; empty when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "iptables") if shutil.which(tool) is None]
    return f"missing {', '.join(missing)}" if missing else ""


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(f"{' '.join(command)}: {result.stderr.strip() or result.returncode}")


class NetworkLab:
    """A bridge and, created on first use, one namespace per member id (ids 0-249)."""

    def __init__(self) -> None:
        reason = unavailable()
        if reason:
            raise OSError(f"cannot build a network lab: {reason}")
        pid = os.getpid()
        self._tag = f"pd{pid % 100000}"
        self._subnet = f"10.{200 + pid // 250 % 50}.{pid % 250}"
        self.bridge = f"{self._tag}br"
        self._spaces: dict[NodeId, str] = {}
        self.cuts: set[frozenset[NodeId]] = set()
        """The pairs of members that cannot reach each other now."""
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self._subnet}.254/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")

    def host(self, member: NodeId) -> str:
        """The address of ``member``'s namespace (created now if it is new)."""
        assert 0 <= member < 250, "one /24 per lab"
        if member not in self._spaces:
            space, outer, inner = (f"{self._tag}{kind}{member}" for kind in ("n", "v", "p"))
            _run("ip", "netns", "add", space)
            self._spaces[member] = space
            _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            _run("ip", "link", "set", inner, "netns", space)
            _run("ip", "link", "set", outer, "master", self.bridge)
            _run("ip", "link", "set", outer, "up")
            _run("ip", "-n", space, "addr", "add", f"{self._subnet}.{member + 1}/24", "dev", inner)
            _run("ip", "-n", space, "link", "set", inner, "up")
            _run("ip", "-n", space, "link", "set", "lo", "up")
        return f"{self._subnet}.{member + 1}"

    def address(self, member: NodeId) -> str:
        return f"{self.host(member)}:{PORT}"

    def prefix(self, member: NodeId) -> list[str]:
        """The command prefix that runs a program in ``member``'s namespace."""
        self.host(member)
        return ["ip", "netns", "exec", self._spaces[member]]

    def cut(self, a: NodeId, b: NodeId) -> None:
        """Drop every packet between ``a`` and ``b`` until :meth:`heal`."""
        for here, there in ((a, b), (b, a)):
            space, peer = self._spaces[here], self.host(there)
            _run("ip", "netns", "exec", space, "iptables", "-A", "INPUT", "-s", peer, "-j", "DROP")
            _run("ip", "netns", "exec", space, "iptables", "-A", "OUTPUT", "-d", peer, "-j", "DROP")
        self.cuts.add(frozenset((a, b)))

    def heal(self) -> None:
        for space in self._spaces.values():
            _run("ip", "netns", "exec", space, "iptables", "-F")
        self.cuts.clear()

    def close(self) -> None:
        """Remove every namespace (their veths go with them) and the bridge."""
        for space in self._spaces.values():
            subprocess.run(["ip", "netns", "del", space], capture_output=True, check=False)
        self._spaces.clear()
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
