"""Settings of one member process: a TOML file, then ``PYDERECHO_*`` variables, then flags.

A member with a wrong setting must stop before it joins, with a message that names the key, where
its value came from and what is wrong: a mistake found at the first view change would take the
group down with it. Every key is one row of :data:`_KEYS`, so the file, the environment and the
command line accept the same keys and check them the same way.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

from pyderecho.core.config import CoreConfig
from pyderecho.core.view import NodeId
from pyderecho.layouts import resolve_layout

ENV_PREFIX = "PYDERECHO_"
MIN_SECRET_BYTES = 16
MAX_MEMBER_ID = 2**64 - 3
"""Ids travel as 64-bit numbers, and the top two are reserved for processes that talk to members
without being one: ``pyderecho status`` and a joiner asking a contact who it is."""
Transport = Literal["tcp", "shm"]

_S = TypeVar("_S")
_T = TypeVar("_T")
_CORE = CoreConfig()
_HEARTBEAT_MS, _TIMEOUT_MS, _JOIN_TIMEOUT_MS = (
    round(_CORE.heartbeat_interval * 1000),
    round(_CORE.heartbeat_timeout * 1000),
    round(_CORE.join_timeout * 1000),
)
_CORE_KEYS = ("window_size", "window_bytes", "block_size", "max_message_size", "monitors")


DEFAULT_SNAPSHOT_EVERY = 100_000
"""Paxos updates a replica applies between its snapshots: the log a restart replays is at
most this long, and a snapshot costs one encoding of the state per this many updates."""
DEFAULT_CATCH_UP_BYTES = 16 * 1024 * 1024
"""Bytes of a Paxos shard's latest updates each replica keeps in memory: a member that comes
back while the group runs, holding the state from before them in its own logs, is sent those
updates instead of the whole state."""


class SettingsError(ValueError):
    """A setting that stops the member from starting.

    ``key`` is the dotted key (``tls.cert``, ``members[1].id``) and ``source`` where its value came
    from (``file PATH``, ``environment variable NAME``, ``flag --NAME``, ``default`` or ``not
    set``), so a caller can point at the place to fix without parsing the message.
    """

    def __init__(self, key: str, source: str, problem: str) -> None:
        super().__init__(f"{key} ({source}): {problem}")
        self.key = key
        self.source = source
        self.problem = problem


class _Problem(ValueError):
    """A value check's complaint; ``at`` locates it inside a list or table (``[1].id``)."""

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.at = at


@dataclass(frozen=True, slots=True)
class Address:
    """A TCP endpoint, kept as host and port so the transport never re-parses a string."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str, *, listening: bool = False) -> Address:
    """The address ``text`` names: ``host:port``, or ``[v6-address]:port``.

    IPv6 needs the brackets because its colons would make the port ambiguous. Port 0 (any free
    port) makes sense only for an address to listen on: nobody can contact port 0.
    """
    if text.startswith("["):
        host, bracket_colon, port_text = text[1:].partition("]:")
        if not bracket_colon:
            raise ValueError(f"expected [IPv6 address]:port, got {text!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
        return Address(host, _port(port_text, listening))
    host, colon, port_text = text.rpartition(":")
    if not colon:
        raise ValueError(f"expected host:port, got {text!r}")
    if ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, as [::1]:7000; got {text!r}")
    elif not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        raise ValueError(f"expected host:port with a host name or IP address, got {text!r}")
    return Address(host, _port(port_text, listening))


def _port(text: str, listening: bool) -> int:
    lowest = 0 if listening else 1
    if not (text.isascii() and text.isdigit()) or not lowest <= int(text) <= 65535:
        raise ValueError(f"port must be a number from {lowest} to 65535, got {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the founding view, or one to join through.

    ``address`` is None only for the shm transport, which reaches members by id through the
    socket directory: an address there would be a placeholder.
    """

    id: NodeId
    address: Address | None = None


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Certificate, key and (optionally) the CA that peers' certificates must chain to."""

    cert: Path
    key: Path
    ca: Path | None = None


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Everything one member process needs to start, already checked: build it with
    :func:`load_settings`, which is where the checks live.

    ``listen`` is None only for the shm transport; ``secret`` only for shm without one.
    ``members`` is the founding view, which a founder must be in (``pyderecho node`` checks it,
    knowing whether the process founds or joins); a joiner contacts the members listed there
    other than itself, and those it finds at the ``contacts`` addresses, so one file can serve
    founders and joiners alike. ``sources`` says where each key's value came from, for the
    errors that only a running member can find (a contact that does not answer): see
    :meth:`error`.
    """

    group: str
    member_id: NodeId
    listen: Address | None
    contacts: tuple[Address, ...]
    members: tuple[Member, ...]
    transport: Transport
    window_size: int
    window_bytes: int
    block_size: int
    max_message_size: int
    heartbeat_interval_ms: int
    heartbeat_timeout_ms: int
    heartbeat_timeout_max_ms: int
    join_timeout_ms: int
    monitors: int
    data_dir: Path
    snapshot_every: int
    catch_up_bytes: int
    layout: str
    secret: bytes | None
    tls: TlsFiles | None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def error(self, key: str, problem: str) -> SettingsError:
        """A :class:`SettingsError` about ``key`` (``contacts[1]`` is an item of ``contacts``),
        naming where its value came from."""
        return SettingsError(key, self.sources.get(key.partition("[")[0], "not set"), problem)

    @property
    def core(self) -> CoreConfig:
        return CoreConfig(
            window_size=self.window_size,
            window_bytes=self.window_bytes,
            block_size=self.block_size,
            max_message_size=self.max_message_size,
            heartbeat_interval=self.heartbeat_interval_ms / 1000,
            heartbeat_timeout=self.heartbeat_timeout_ms / 1000,
            heartbeat_timeout_max=self.heartbeat_timeout_max_ms / 1000,
            join_timeout=self.join_timeout_ms / 1000,
            monitors=self.monitors,
        )

    def __repr__(self) -> str:
        """Masks the secret: settings get logged, and a logged secret is a leaked one."""
        shown = {f.name: repr(getattr(self, f.name)) for f in fields(self) if f.compare}
        if self.secret is not None:
            shown["secret"] = "<hidden>"
        return f"Settings({', '.join(f'{name}={value}' for name, value in shown.items())})"


# Value checks: each takes what TOML gives (or what a ``_Key.parse_text`` made of a variable's or
# flag's text) and returns the typed value or raises a ValueError that never quotes a secret.


def _kind(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    kinds |= {list: "an array", dict: "a table"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _within(at: str, check: Callable[[_S], _T], value: _S) -> _T:
    try:
        return check(value)
    except ValueError as exc:
        raise _Problem(str(exc), at + (exc.at if isinstance(exc, _Problem) else "")) from None


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Problem(f"expected a string, got {_kind(value)}")
    if not value:
        raise _Problem("must not be empty")
    return value


def _integer(minimum: int | None = None) -> Callable[[object], int]:
    def check(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Problem(f"expected an integer, got {_kind(value)}")
        if minimum is not None and value < minimum:
            raise _Problem(f"must be at least {minimum}, got {value}")
        return value

    return check


def _array(value: object) -> list[object]:
    if not isinstance(value, list):
        raise _Problem(f"expected an array, got {_kind(value)}")
    return value


def _group(value: object) -> str:
    name = _string(value)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise _Problem(f"must be 1 to 64 of A-Z a-z 0-9 _ . -, got {name!r}")
    return name


def _choice(*options: str) -> Callable[[object], str]:
    def check(value: object) -> str:
        if _string(value) not in options:
            raise _Problem(f"must be one of {', '.join(options)}; got {value!r}")
        return str(value)

    return check


def _listen(value: object) -> Address:
    return parse_address(_string(value), listening=True)


def _contact(value: object) -> Address:
    return parse_address(_string(value))


def _contacts(value: object) -> tuple[Address, ...]:
    return tuple(_within(f"[{i}]", _contact, item) for i, item in enumerate(_array(value)))


def _members(value: object) -> tuple[Member, ...]:
    """The members as a table each; ``address`` may be left out here, and :func:`_assemble`
    requires it where the transport dials addresses."""
    members: list[Member] = []
    for i, entry in enumerate(_array(value)):
        if not isinstance(entry, dict):
            raise _Problem(f"expected a table of id and address, got {_kind(entry)}", f"[{i}]")
        unknown = sorted(entry.keys() - {"id", "address"})
        if unknown:
            raise _Problem(_unknown(unknown[0], ("id", "address")), f"[{i}].{unknown[0]}")
        if "id" not in entry:
            raise _Problem("missing", f"[{i}].id")
        address = entry.get("address")
        member = Member(
            _within(f"[{i}].id", _member_id, entry["id"]),
            None if address is None else _within(f"[{i}].address", _contact, address),
        )
        if any(other.id == member.id for other in members):
            raise _Problem(f"id {member.id} appears twice", f"[{i}].id")
        if member.address is not None and any(o.address == member.address for o in members):
            raise _Problem(f"address {member.address} appears twice", f"[{i}].address")
        members.append(member)
    return tuple(members)


def _member_id(value: object) -> int:
    member_id = _integer(0)(value)
    if member_id > MAX_MEMBER_ID:
        raise _Problem(f"must be at most {MAX_MEMBER_ID} (larger ids are reserved), got {value}")
    return member_id


def _path(value: object) -> Path:
    return Path(_string(value)).expanduser()


def _secret_bytes(secret: bytes) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise _Problem(f"is shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def _secret(value: object) -> bytes:
    if not isinstance(value, str):
        raise _Problem(f"expected a string, got {_kind(value)}")
    return _secret_bytes(value.encode())


# Text from an environment variable or a flag, turned into what the TOML file would hold.


def _int_text(text: str) -> object:
    try:
        return int(text.strip())
    except ValueError:
        raise _Problem(f"expected an integer, got {text!r}") from None


def _list_text(text: str) -> list[object]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _members_text(text: str) -> list[object]:
    """``ID=HOST:PORT,...``, or ``ID,...`` for the shm transport, which needs no address."""
    entries: list[object] = []
    for i, item in enumerate(_list_text(text)):
        id_text, equals, address = str(item).partition("=")
        if not equals and not id_text.isdigit():
            raise _Problem(f"expected ID=HOST:PORT, or ID alone for shm; got {item!r}", f"[{i}]")
        entry = {"id": _within(f"[{i}].id", _int_text, id_text)}
        entries.append(entry | {"address": address} if equals else entry)
    return entries


@dataclass(frozen=True)
class _Key:
    """One setting: its check, its flag's help, and how to read it from text."""

    name: str
    check: Callable[[object], object]
    help: str
    parse_text: Callable[[str], object] = str
    default: object = None
    required: bool = False
    flag: bool = True

    @property
    def dest(self) -> str:
        return self.name.replace(".", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()

    @property
    def option(self) -> str:
        return "--" + self.dest.replace("_", "-")


_KEYS: dict[str, _Key] = {
    key.name: key
    for key in (
        _Key("group", _group, "group name; other groups are refused", required=True),
        _Key("member_id", _member_id, "unique id of this member", _int_text, required=True),
        _Key("listen", _listen, "HOST:PORT to accept connections on; IPv6 as [::1]:7000"),
        _Key("contacts", _contacts, "HOST:PORT,... of members to join through", _list_text, ()),
        _Key(
            "members",
            _members,
            "founding view as ID=HOST:PORT,... (shm: ID,...)",
            _members_text,
            (),
        ),
        _Key("transport", _choice("tcp", "shm"), "tcp (any hosts) or shm (one host)", str, "tcp"),
        _Key("window_size", _integer(), "flow-control window", _int_text, _CORE.window_size),
        _Key("window_bytes", _integer(), "window in bytes", _int_text, _CORE.window_bytes),
        _Key("block_size", _integer(), "bytes sent in one piece", _int_text, _CORE.block_size),
        _Key("max_message_size", _integer(), "largest message", _int_text, _CORE.max_message_size),
        _Key("heartbeat_interval_ms", _integer(1), "heartbeat period", _int_text, _HEARTBEAT_MS),
        _Key(
            "heartbeat_timeout_ms", _integer(1), "silence before suspicion", _int_text, _TIMEOUT_MS
        ),
        _Key(
            "heartbeat_timeout_max_ms",
            _integer(0),
            "longest a slow member's timeout may grow (0: fixed)",
            _int_text,
            0,
        ),
        _Key(
            "join_timeout_ms",
            _integer(1),
            "how long a joiner waits to be let in before it gives up",
            _int_text,
            _JOIN_TIMEOUT_MS,
        ),
        _Key("monitors", _integer(), "successors each member watches", _int_text, _CORE.monitors),
        _Key("data_dir", _path, "log directory; default ./pyderecho-data/GROUP/MEMBER_ID"),
        _Key(
            "snapshot_every",
            _integer(),
            "Paxos updates between a replica's snapshots (the log before one is dropped)",
            _int_text,
            DEFAULT_SNAPSHOT_EVERY,
        ),
        _Key(
            "catch_up_bytes",
            _integer(0),
            "bytes of a Paxos shard's latest updates kept for members that come back",
            _int_text,
            DEFAULT_CATCH_UP_BYTES,
        ),
        _Key("layout", _string, "built-in layout or module:function", str, "every-member"),
        _Key("secret", _secret, "group secret", flag=False),  # see _RefuseSecret
        _Key("secret_file", _path, "file holding the group secret"),
        _Key("tls.cert", _path, "TLS certificate (PEM)"),
        _Key("tls.key", _path, "TLS private key (PEM)"),
        _Key("tls.ca", _path, "CA that peers' certificates must chain to (PEM)"),
    )
}
_TABLES = {name.partition(".")[0] for name in _KEYS if "." in name}
_Layer = dict[str, tuple[Any, str]]


def _unknown(name: str, known: Iterable[str]) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; the keys are {', '.join(known)}"


def _convert(
    key: _Key, raw: object, source: str, *, base: Path | None = None, text: bool = False
) -> tuple[object, str]:
    try:
        value = key.check(key.parse_text(str(raw)) if text else raw)
    except ValueError as exc:
        at = exc.at if isinstance(exc, _Problem) else ""
        raise SettingsError(key.name + at, source, str(exc)) from None
    if base is not None and isinstance(value, Path):
        value = base / value  # a path in the file is relative to the file, wherever one runs from
    return value, source


def _flatten(table: Mapping[str, object], prefix: str = "") -> Iterator[tuple[str, object]]:
    for name, value in table.items():
        if prefix + name in _TABLES and isinstance(value, dict):
            yield from _flatten(value, prefix + name + ".")
        else:
            yield prefix + name, value


def _file_layer(path: Path) -> _Layer:
    source = f"file {path}"
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise SettingsError("config", source, f"cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError("config", source, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError("config", source, f"not valid TOML: {exc}") from None
    layer: _Layer = {}
    for name, raw in _flatten(data):
        key = _KEYS.get(name)
        if key is None:
            table = name in _TABLES
            raise SettingsError(
                name,
                source,
                f"expected a table, got {_kind(raw)}" if table else _unknown(name, _KEYS),
            )
        layer[name] = _convert(key, raw, source, base=path.absolute().parent)
    return layer


def load_settings(
    args: argparse.Namespace | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    path: str | Path | None = None,
) -> Settings:
    """The member's settings: defaults, then the file, then the environment, then ``args``.

    The file is ``args.config``, else ``path``, else ``$PYDERECHO_CONFIG``; without one every
    required key must come from the environment or flags. Every value present is checked, even
    one a higher layer overrides: a broken file is worth knowing about before it is needed.
    """
    environ = os.environ if environ is None else environ
    flags = vars(args) if args is not None else {}
    config = flags.get("config") or path or environ.get(ENV_PREFIX + "CONFIG")
    layers = [
        _file_layer(Path(config)) if config else {},
        {
            key.name: _convert(key, text, f"environment variable {key.env}", text=True)
            for key in _KEYS.values()
            if (text := environ.get(key.env)) is not None
        },
        {
            key.name: _convert(key, text, f"flag {key.option}", text=True)
            for key in _KEYS.values()
            if key.flag and (text := flags.get(key.dest)) is not None
        },
    ]
    values: _Layer = {
        key.name: (key.default, "default") for key in _KEYS.values() if key.default is not None
    }
    for layer in layers:
        if "secret" in layer and "secret_file" in layer:
            raise SettingsError(
                "secret_file", layer["secret_file"][1], "give secret or secret_file, not both"
            )
        # secret and secret_file are one setting: the higher layer's wins, whichever form it has.
        for name, other in (("secret", "secret_file"), ("secret_file", "secret")):
            if name in layer:
                values.pop(other, None)
        values.update(layer)
    return _assemble(values)


def _assemble(values: _Layer) -> Settings:
    """Checks that involve more than one key, and the defaults that depend on other keys."""

    def fail(name: str, problem: str) -> NoReturn:
        raise SettingsError(name, values[name][1] if name in values else "not set", problem)

    for key in _KEYS.values():
        if key.required and key.name not in values:
            fail(
                key.name, f"required: set it in the config file, as {key.env} or with {key.option}"
            )
    got = {name: value for name, (value, _) in values.items()}
    if got["heartbeat_timeout_ms"] <= got["heartbeat_interval_ms"]:
        fail(
            "heartbeat_timeout_ms",
            f"must exceed heartbeat_interval_ms ({got['heartbeat_interval_ms']}), "
            f"got {got['heartbeat_timeout_ms']}",
        )
    if 0 < got["heartbeat_timeout_max_ms"] < got["heartbeat_timeout_ms"]:
        fail(
            "heartbeat_timeout_max_ms",
            f"must be 0 (a fixed timeout) or at least heartbeat_timeout_ms "
            f"({got['heartbeat_timeout_ms']}), got {got['heartbeat_timeout_max_ms']}",
        )
    if got["join_timeout_ms"] < got["heartbeat_timeout_ms"]:
        fail(
            "join_timeout_ms",
            f"must be at least heartbeat_timeout_ms ({got['heartbeat_timeout_ms']}), "
            f"got {got['join_timeout_ms']}",
        )
    member_id, members, tcp = got["member_id"], got["members"], got["transport"] == "tcp"
    for i, member in enumerate(members):
        if tcp and member.address is None:
            raise SettingsError(
                f"members[{i}].address",
                values["members"][1],
                "required for the tcp transport (only shm lists members by id alone)",
            )
    if not tcp and got["contacts"]:
        fail(
            "contacts",
            "the shm transport reaches members by id, not address: list the members to join "
            "through in members, by id",
        )
    try:
        resolve_layout(got["layout"])
    except ValueError as exc:
        fail("layout", str(exc))
    if "listen" not in got:
        got["listen"] = next((m.address for m in members if m.id == member_id), None)
    if tcp and got["listen"] is None:
        fail("listen", "required for the tcp transport (or give this member's address in members)")
    if "secret_file" in got:
        secret_file = got.pop("secret_file")
        try:
            got["secret"] = _secret_bytes(secret_file.read_bytes().strip())
        except OSError as exc:
            fail("secret_file", f"cannot read {secret_file}: {exc.strerror}")
        except ValueError as exc:
            fail("secret_file", f"the secret in {secret_file} {exc}")
    if tcp and "secret" not in got:
        fail(
            "secret", f"required for the tcp transport: give secret_file, or set {ENV_PREFIX}SECRET"
        )
    tls = {
        name.removeprefix("tls."): got.pop(name) for name in list(got) if name.startswith("tls.")
    }
    if tls:
        given = f"tls.{next(iter(tls))}"
        if not tcp:
            fail(given, "only the tcp transport uses TLS")
        for part in ("cert", "key"):
            if part not in tls:
                raise SettingsError(f"tls.{part}", values[given][1], f"required with {given}")
        for part, file in tls.items():
            if not file.is_file():
                fail(f"tls.{part}", f"no such file: {file}")
        got["tls"] = TlsFiles(**tls)
    got.setdefault("data_dir", Path("pyderecho-data", got["group"], str(member_id)))
    arguments: dict[str, Any] = {f.name: got.get(f.name) for f in fields(Settings) if f.compare}
    settings = Settings(**arguments, sources={name: source for name, (_, source) in values.items()})
    try:
        _ = settings.core  # CoreConfig checks its own fields; say which key its complaint is about
    except ValueError as exc:
        # The key the message names first, preferring one the user set over a default.
        message = str(exc)
        fail(
            min(
                _CORE_KEYS,
                key=lambda n: (n not in message, values[n][1] == "default", message.find(n)),
            ),
            message,
        )
    return settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--config`` and one flag per key; unset flags stay None so they override nothing."""
    group = parser.add_argument_group(
        "member settings", f"these override the config file and the {ENV_PREFIX}* variables"
    )
    group.add_argument(
        "--config", metavar="FILE", help=f"TOML settings file (or {ENV_PREFIX}CONFIG)"
    )
    for key in _KEYS.values():
        if key.flag:
            group.add_argument(key.option, dest=key.dest, help=f"{key.help} [{key.env}]")
    # Taken so that argparse cannot read --secret as an abbreviation of --secret-file.
    group.add_argument("--secret", action=_RefuseSecret, help=argparse.SUPPRESS)


class _RefuseSecret(argparse.Action):
    """Refuses --secret without echoing its value: a command line is readable by every user of
    the host (ps, /proc/PID/cmdline), so the secret must come from a file or the environment."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        parser.error(f"--secret is not accepted: use --secret-file or {ENV_PREFIX}SECRET")


def example_toml() -> str:
    """A settings file to start from, which doubles as the reference of every key."""
    return f"""\
# pyderecho member settings. Each key can also be set by an environment variable,
# PYDERECHO_<KEY> (PYDERECHO_MEMBER_ID, PYDERECHO_TLS_CERT, ...), or a flag (--member-id,
# --tls-cert, ...); flags win over variables, variables over this file. Lists given as text are
# comma-separated: PYDERECHO_CONTACTS="10.0.0.1:7000,10.0.0.2:7000",
# --members "0=10.0.0.1:7000,1=10.0.0.2:7000". Relative paths are relative to this file.

# The group: members of another group, or without its secret, are refused.
group = "inventory"
# This member's id, unique in the group.
member_id = 0
# Where this member accepts connections. Port 0 picks a free one. IPv6 in brackets: "[::1]:7000".
# Defaults to this member's address in members.
listen = "127.0.0.1:7000"
# Where a joining member (pyderecho node --join) finds the group: members' addresses. It asks
# each who listens there (both sides prove the group secret) and joins through those that answer
# within 10 s. Empty for a member that founds the group. tcp only: shm joins through members.
contacts = []
# "tcp" (any hosts) or "shm" (processes on one host, through shared memory).
transport = "tcp"
# The group secret, at least {MIN_SECRET_BYTES} bytes, read from a file (surrounding whitespace is
# ignored) so that it stays out of this one. Or: secret = "...", or PYDERECHO_SECRET; never both.
secret_file = "group.secret"
# Built-in layout (seed-example, every-member, overlap-example, shards-of-3) or module:function.
layout = "every-member"
# Where the logs of persistent subgroups go. Default: pyderecho-data/<group>/<member_id> in the
# working directory.
# data_dir = "/var/lib/pyderecho/inventory/0"
# Paxos updates a replica applies between snapshots; the log before a snapshot is dropped, so a
# restart replays at most this many updates.
snapshot_every = {DEFAULT_SNAPSHOT_EVERY}
# Bytes of a Paxos shard's latest updates each replica keeps in memory. A member that comes back
# while the group runs holds the state from before them in its logs, and is sent only those
# updates; one that has been away longer is sent the whole state. 0 keeps none.
catch_up_bytes = {DEFAULT_CATCH_UP_BYTES}

# Protocol parameters: every member of a group must use the same ones.
# Messages, and bytes of them, a sender may run ahead of the slowest member of its shard (flow
# control): a deep window in messages keeps small messages flowing through a round trip, the
# bound in bytes keeps large ones from filling every member's memory.
window_size = {_CORE.window_size}
window_bytes = {_CORE.window_bytes}
# Largest message sent in one piece, in bytes; larger ones are relayed in blocks of it (of
# four times it, up to 1 MiB, while a block's worth of the sender's others is in flight).
block_size = {_CORE.block_size}
# Largest message, in bytes; at least block_size.
max_message_size = {_CORE.max_message_size}
# A member silent for heartbeat_timeout_ms is suspected; the timeout must exceed the interval.
heartbeat_interval_ms = {_HEARTBEAT_MS}
heartbeat_timeout_ms = {_TIMEOUT_MS}
# On a machine shared with busy processes, let a member whose frames lately came late get up to
# this much (twice its longest recent gap); a crash is still found within it. 0: fixed.
heartbeat_timeout_max_ms = 0
# A joiner not let in within join_timeout_ms gives up (exit 2), saying why for each contact.
join_timeout_ms = {_JOIN_TIMEOUT_MS}
# How many ring successors each member watches for failures.
monitors = {_CORE.monitors}

# TLS between members: cert and key together, ca optional (then the system's CAs).
# [tls]
# cert = "member0.pem"
# key = "member0.key"
# ca = "group-ca.pem"

# The first view, for the members that found the group together; a founder must be in it. A
# joining member contacts the members listed here (other than itself) and those in contacts, so
# founders and joiners can share this file. The shm transport needs no addresses: there a member
# is [[members]] with its id alone (--members "0,1,2").
[[members]]
id = 0
address = "127.0.0.1:7000"

[[members]]
id = 1
address = "127.0.0.1:7001"

[[members]]
id = 2
address = "127.0.0.1:7002"
"""
