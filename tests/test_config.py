"""Member settings: file < environment < flags, and errors that say which key, where, and why."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from pyderecho.cli.status import CLIENT_ID
from pyderecho.config import (
    MAX_MEMBER_ID,
    Address,
    Member,
    Settings,
    SettingsError,
    TlsFiles,
    add_arguments,
    example_toml,
    load_settings,
    parse_address,
)
from pyderecho.core.config import CoreConfig
from pyderecho.transport.tcp import IDENTIFY_ID

SECRET = "correct-horse-battery-staple"
BASE = {
    "group": '"g"',
    "member_id": "3",
    "listen": '"127.0.0.1:7000"',
    "secret": f'"{SECRET}"',
}


def write(tmp_path: Path, **lines: str | None) -> Path:
    """A settings file of BASE with ``lines`` replacing (or, when None, removing) its keys."""
    entries = {**BASE, **lines}
    path = tmp_path / "member.toml"
    path.write_text("".join(f"{key} = {value}\n" for key, value in entries.items() if value))
    return path


def flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def error(
    tmp_path: Path,
    lines: dict[str, str | None] | None = None,
    environ: dict[str, str] | None = None,
    argv: tuple[str, ...] = (),
) -> SettingsError:
    path = write(tmp_path, **(lines or {}))
    with pytest.raises(SettingsError) as caught:
        load_settings(flags(*argv), environ=environ or {}, path=path)
    assert SECRET not in str(caught.value)
    assert str(caught.value).startswith(f"{caught.value.key} ({caught.value.source}): ")
    return caught.value


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(environ={}, path=write(tmp_path))
    core = CoreConfig()
    assert settings == Settings(
        group="g",
        member_id=3,
        listen=Address("127.0.0.1", 7000),
        contacts=(),
        members=(),
        transport="tcp",
        window_size=core.window_size,
        window_bytes=core.window_bytes,
        block_size=core.block_size,
        max_message_size=core.max_message_size,
        heartbeat_interval_ms=100,
        heartbeat_timeout_ms=1000,
        heartbeat_timeout_max_ms=0,
        join_timeout_ms=10_000,
        monitors=core.monitors,
        data_dir=Path("pyderecho-data/g/3"),
        snapshot_every=100_000,
        catch_up_bytes=16 * 1024 * 1024,
        layout="every-member",
        secret=SECRET.encode(),
        tls=None,
    )
    assert settings.core == core


def test_core_gets_heartbeats_in_seconds(tmp_path: Path) -> None:
    path = write(tmp_path, heartbeat_interval_ms="250", heartbeat_timeout_ms="4000", monitors="2")
    core = load_settings(environ={}, path=path).core
    assert (core.heartbeat_interval, core.heartbeat_timeout, core.monitors) == (0.25, 4.0, 2)


def test_a_bounded_adaptive_timeout_reaches_the_core(tmp_path: Path) -> None:
    path = write(tmp_path, heartbeat_timeout_ms="800", heartbeat_timeout_max_ms="2400")
    core = load_settings(environ={}, path=path).core
    assert (core.heartbeat_timeout, core.heartbeat_timeout_max) == (0.8, 2.4)


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    path = write(tmp_path, contacts='["a:1"]', window_size="7")
    environ = {"PYDERECHO_MEMBER_ID": "4", "PYDERECHO_CONTACTS": "b:2, [::1]:3"}
    argv = ("--member-id", "5")

    assert load_settings(environ={}, path=path).member_id == 3
    from_env = load_settings(environ=environ, path=path)
    assert (from_env.member_id, from_env.window_size) == (4, 7)
    assert from_env.contacts == (Address("b", 2), Address("::1", 3))
    from_flags = load_settings(flags(*argv), environ=environ, path=path)
    assert (from_flags.member_id, from_flags.group, from_flags.window_size) == (5, "g", 7)
    assert from_flags.contacts == from_env.contacts  # an unset flag overrides nothing


def test_environment_defaults_to_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYDERECHO_MEMBER_ID", "9")
    assert load_settings(path=write(tmp_path)).member_id == 9


def test_config_file_from_flag_beats_path_and_environment(tmp_path: Path) -> None:
    chosen = write(tmp_path, member_id="8").rename(tmp_path / "chosen.toml")
    other = write(tmp_path, member_id="1")
    environ = {"PYDERECHO_CONFIG": str(other)}
    assert load_settings(environ=environ).member_id == 1
    assert load_settings(environ=environ, path=chosen).member_id == 8
    assert load_settings(flags("--config", str(chosen)), environ=environ, path=other).member_id == 8


def test_everything_from_environment_and_flags_without_a_file(tmp_path: Path) -> None:
    environ = {"PYDERECHO_GROUP": "g", "PYDERECHO_SECRET": SECRET, "PYDERECHO_TRANSPORT": "tcp"}
    argv = ("--member-id", "1", "--members", "0=10.0.0.1:7000, 1=10.0.0.2:7000")
    settings = load_settings(flags(*argv), environ=environ)
    assert settings.members == (
        Member(0, Address("10.0.0.1", 7000)),
        Member(1, Address("10.0.0.2", 7000)),
    )
    assert settings.listen == Address("10.0.0.2", 7000)  # this member's entry in members


def test_ipv6_listen_and_address_text() -> None:
    assert parse_address("[::1]:7000", listening=True) == Address("::1", 7000)
    assert str(Address("::1", 7000)) == "[::1]:7000"
    assert str(Address("db.example", 0)) == "db.example:0"
    assert parse_address("[fe80::1%eth0]:1") == Address("fe80::1%eth0", 1)


def test_ipv6_listen_from_file(tmp_path: Path) -> None:
    settings = load_settings(environ={}, path=write(tmp_path, listen='"[2001:db8::5]:0"'))
    assert settings.listen == Address("2001:db8::5", 0)


@pytest.mark.parametrize(
    ("lines", "key", "problem"),
    [
        ({"group": '"bad name"'}, "group", "A-Z a-z 0-9 _ . -"),
        ({"group": '"' + "x" * 65 + '"'}, "group", "1 to 64"),
        ({"group": '""'}, "group", "must not be empty"),
        ({"group": "1"}, "group", "expected a string, got an integer"),
        ({"member_id": "-1"}, "member_id", "at least 0, got -1"),
        ({"member_id": '"3"'}, "member_id", "expected an integer, got a string"),
        ({"member_id": "true"}, "member_id", "expected an integer, got a boolean"),
        ({"member_id": "3.0"}, "member_id", "expected an integer, got a float"),
        ({"listen": '"localhost"'}, "listen", "expected host:port"),
        ({"listen": '"localhost:65536"'}, "listen", "0 to 65535, got '65536'"),
        ({"listen": '"localhost:http"'}, "listen", "0 to 65535"),
        ({"listen": '":7000"'}, "listen", "host name or IP address"),
        ({"listen": '"::1:7000"'}, "listen", "in brackets"),
        ({"listen": '"[not-v6]:7000"'}, "listen", "not an IPv6 address"),
        ({"contacts": '"a:1"'}, "contacts", "expected an array, got a string"),
        ({"contacts": '["a:1", "b"]'}, "contacts[1]", "expected host:port"),
        ({"contacts": '["a:0"]'}, "contacts[0]", "1 to 65535"),
        (
            {"members": '[{id = 3, address = "a:1"}, {id = 3, address = "b:1"}]'},
            "members[1].id",
            "id 3 appears twice",
        ),
        (
            {"members": '[{id = 3, address = "a:1"}, {id = 4, address = "a:1"}]'},
            "members[1].address",
            "a:1 appears twice",
        ),
        ({"members": '[{id = 3, adress = "a:1"}]'}, "members[0].adress", "did you mean 'address'"),
        ({"members": "[{id = 3}]"}, "members[0].address", "required for the tcp transport"),
        ({"members": '[{address = "a:1"}]'}, "members[0].id", "missing"),
        ({"member_id": str(2**64 - 2)}, "member_id", "larger ids are reserved"),
        ({"members": f"[{{id = {2**64 - 1}}}]"}, "members[0].id", "larger ids are reserved"),
        (
            {"transport": '"shm"', "contacts": '["a:1"]'},
            "contacts",
            "the shm transport reaches members by id",
        ),
        ({"members": '["a:1"]'}, "members[0]", "expected a table of id and address"),
        ({"members": '[{id = -3, address = "a:1"}]'}, "members[0].id", "at least 0"),
        ({"transport": '"udp"'}, "transport", "one of tcp, shm"),
        ({"window_size": "0"}, "window_size", "window_size must be a positive integer, got 0"),
        ({"window_size": '"big"'}, "window_size", "expected an integer, got a string"),
        ({"max_message_size": "1024"}, "max_message_size", "must be at least block_size"),
        ({"heartbeat_interval_ms": "0"}, "heartbeat_interval_ms", "at least 1"),
        (
            {"heartbeat_timeout_ms": "100"},
            "heartbeat_timeout_ms",
            "must exceed heartbeat_interval_ms (100), got 100",
        ),
        (
            {"heartbeat_timeout_max_ms": "500"},
            "heartbeat_timeout_max_ms",
            "must be 0 (a fixed timeout) or at least heartbeat_timeout_ms (1000), got 500",
        ),
        ({"monitors": "0"}, "monitors", "monitors must be a positive integer, got 0"),
        ({"data_dir": "3"}, "data_dir", "expected a string, got an integer"),
        ({"layout": '"nope"'}, "layout", "unknown layout 'nope'"),
        ({"layout": '"no_such_module_xyz:f"'}, "layout", "no module named 'no_such_module_xyz'"),
        ({"secret": '"too short"'}, "secret", "shorter than 16 bytes"),
        ({"secret": "1234567890123456789"}, "secret", "expected a string, got an integer"),
        ({"secret_file": '"s"'}, "secret_file", "secret or secret_file, not both"),
        ({"secret": None, "secret_file": '"missing"'}, "secret_file", "cannot read"),
        ({"tls": '{cert = "c.pem"}'}, "tls.key", "required with tls.cert"),
        ({"tls": '{cert = "c.pem", key = "k.pem"}'}, "tls.cert", "no such file"),
        ({"tls": '"on"'}, "tls", "expected a table, got a string"),
        ({"membr_id": "3"}, "membr_id", "unknown key; did you mean 'member_id'?"),
        ({"tls": '{certificate = "c.pem"}'}, "tls.certificate", "did you mean 'tls.cert'?"),
        ({"colour": '"blue"'}, "colour", "unknown key; the keys are group, member_id,"),
    ],
)
def test_file_errors_name_key_source_and_problem(
    tmp_path: Path, lines: dict[str, str | None], key: str, problem: str
) -> None:
    caught = error(tmp_path, lines)
    assert caught.key == key
    assert caught.source == f"file {tmp_path / 'member.toml'}"
    assert problem in caught.problem


@pytest.mark.parametrize(
    ("environ", "argv", "expected"),
    [
        (
            {"PYDERECHO_MEMBER_ID": "x"},
            (),
            "member_id (environment variable PYDERECHO_MEMBER_ID): expected an integer, got 'x'",
        ),
        ({}, ("--member-id", "-2"), "member_id (flag --member-id): must be at least 0, got -2"),
        (
            {},
            ("--members", "3:a:1"),
            "members[0] (flag --members): expected ID=HOST:PORT, or ID alone for shm; got '3:a:1'",
        ),
        (
            {},
            ("--members", "3=a:1,4"),
            "members[1].address (flag --members): required for the tcp transport",
        ),
        ({}, ("--members", "3=a:1,x=b:1"), "members[1].id (flag --members): expected an integer"),
        (
            {"PYDERECHO_WINDOW_SIZE": "-1"},
            ("--block-size", "1024"),  # set by the user, but not what is wrong
            "window_size (environment variable PYDERECHO_WINDOW_SIZE): window_size must be a "
            "positive integer, got -1",
        ),
        # block_size is the key the user set; max_message_size keeps its default.
        (
            {},
            ("--block-size", str(2**30)),
            f"block_size (flag --block-size): max_message_size ({CoreConfig().max_message_size}) "
            f"must be at least block_size ({2**30})",
        ),
        (
            {"PYDERECHO_LISTEN": "[::1]"},
            (),
            "listen (environment variable PYDERECHO_LISTEN): expected [IPv6 address]:port",
        ),
        (
            {"PYDERECHO_LISTEN": "[::1]:"},
            (),
            "listen (environment variable PYDERECHO_LISTEN): port must be a number from 0 to 65535",
        ),
        (
            {"PYDERECHO_SECRET": "short"},
            (),
            "secret (environment variable PYDERECHO_SECRET): is shorter than 16 bytes",
        ),
        (
            {"PYDERECHO_SECRET": SECRET, "PYDERECHO_SECRET_FILE": "f"},
            (),
            "secret_file (environment variable PYDERECHO_SECRET_FILE): give secret or secret_file",
        ),
        (
            {"PYDERECHO_TRANSPORT": "shm"},
            ("--tls-cert", "c", "--tls-key", "k"),
            "tls.cert (flag --tls-cert): only the tcp transport uses TLS",
        ),
        (
            {"PYDERECHO_HEARTBEAT_INTERVAL_MS": "2000"},
            (),
            "heartbeat_timeout_ms (default): must exceed heartbeat_interval_ms (2000), got 1000",
        ),
        (
            {},
            ("--layout", "pyderecho:View"),
            "layout (flag --layout): layout 'pyderecho:View' cannot be called with a view",
        ),
    ],
)
def test_environment_and_flag_errors_name_their_source(
    tmp_path: Path, environ: dict[str, str], argv: tuple[str, ...], expected: str
) -> None:
    caught = error(tmp_path, environ=environ, argv=argv)
    assert str(caught).startswith(expected)
    assert expected.startswith(f"{caught.key} ({caught.source}): ")


@pytest.mark.parametrize(
    ("lines", "key", "problem"),
    [
        ({"group": None}, "group", "in the config file, as PYDERECHO_GROUP or with --group"),
        ({"member_id": None}, "member_id", "required"),
        ({"secret": None}, "secret", "required for the tcp transport"),
        ({"listen": None}, "listen", "required for the tcp transport"),
    ],
)
def test_missing_settings(
    tmp_path: Path, lines: dict[str, str | None], key: str, problem: str
) -> None:
    caught = error(tmp_path, lines)
    assert (caught.key, caught.source) == (key, "not set")
    assert problem in caught.problem


def test_shm_needs_neither_listen_nor_secret(tmp_path: Path) -> None:
    path = write(tmp_path, listen=None, secret=None, transport='"shm"')
    settings = load_settings(environ={}, path=path)
    assert (settings.transport, settings.listen, settings.secret) == ("shm", None, None)


def test_shm_members_by_id_alone(tmp_path: Path) -> None:
    path = write(tmp_path, listen=None, transport='"shm"', members="[{id = 3}, {id = 4}]")
    assert load_settings(environ={}, path=path).members == (Member(3), Member(4))
    from_flag = load_settings(flags("--members", "3, 5"), environ={}, path=path)
    assert from_flag.members == (Member(3), Member(5))
    # The placeholder addresses of existing shm files still load.
    placeholders = write(tmp_path, transport='"shm"', members='[{id = 3, address = "a:1"}]')
    assert load_settings(environ={}, path=placeholders).members == (Member(3, Address("a", 1)),)


def test_a_joiner_shares_the_founders_file(tmp_path: Path) -> None:
    """Member 3 is not in the founding view: as a joiner it contacts those who are."""
    path = write(tmp_path, members='[{id = 0, address = "a:1"}]', contacts='["b:2"]')
    settings = load_settings(environ={}, path=path)
    assert (settings.member_id, settings.members) == (3, (Member(0, Address("a", 1)),))
    assert settings.contacts == (Address("b", 2),)


def test_reserved_ids_are_out_of_reach_of_members() -> None:
    assert min(IDENTIFY_ID, CLIENT_ID) > MAX_MEMBER_ID


def test_settings_errors_found_later_name_where_the_value_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, contacts='["a:1", "b:2"]')
    settings = load_settings(flags("--member-id", "4"), environ={}, path=path)
    late = settings.error("contacts[1]", "did not answer")
    assert str(late) == f"contacts[1] (file {path}): did not answer"
    assert settings.error("member_id", "taken").source == "flag --member-id"
    assert settings.error("members", "empty").source == "default"
    assert settings.error("tls.cert", "absent").source == "not set"
    assert "sources" not in repr(settings)


def test_unreadable_or_broken_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={}, path=missing)
    assert (caught.value.key, caught.value.source) == ("config", f"file {missing}")
    assert "cannot read it" in caught.value.problem

    broken = tmp_path / "broken.toml"
    broken.write_text(f'secret = "{SECRET}\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={}, path=broken)
    assert (caught.value.key, caught.value.source) == ("config", f"file {broken}")
    assert "not valid TOML" in caught.value.problem
    assert SECRET not in str(caught.value)


def test_secret_file_is_relative_to_the_config_file_and_stripped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "group.secret").write_text(f"  {SECRET}\n")
    path = write(tmp_path, secret=None, secret_file='"group.secret"', data_dir='"data"')
    monkeypatch.chdir(Path(path.anchor))
    settings = load_settings(environ={}, path=path)
    assert settings.secret == SECRET.encode()
    assert settings.data_dir == tmp_path / "data"


def test_a_higher_layer_replaces_secret_by_secret_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "other.secret"
    secret_file.write_bytes(b"\x00\xff" * 10)
    environ = {"PYDERECHO_SECRET_FILE": str(secret_file)}
    settings = load_settings(environ=environ, path=write(tmp_path))
    assert settings.secret == b"\x00\xff" * 10


def test_a_higher_layer_replaces_secret_file_by_secret(tmp_path: Path) -> None:
    (tmp_path / "file.secret").write_text("from the file, long enough")
    path = write(tmp_path, secret=None, secret_file='"file.secret"')
    settings = load_settings(environ={"PYDERECHO_SECRET": SECRET}, path=path)
    assert settings.secret == SECRET.encode()


def test_short_secret_file_names_the_file_not_the_secret(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("short-secret\n")
    caught = error(tmp_path, {"secret": None, "secret_file": '"s"'})
    assert caught.key == "secret_file"
    assert caught.problem == f"the secret in {tmp_path / 's'} is shorter than 16 bytes"
    assert "short-secret" not in str(caught)


def test_secret_never_shown(tmp_path: Path) -> None:
    settings = load_settings(environ={}, path=write(tmp_path))
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert "secret=<hidden>" in repr(settings)
    assert "member_id=3" in repr(settings)


def test_tls_files(tmp_path: Path) -> None:
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("PEM")
    path = write(tmp_path, tls='{cert = "c.pem", key = "k.pem"}')
    assert load_settings(environ={}, path=path).tls == TlsFiles(
        tmp_path / "c.pem", tmp_path / "k.pem"
    )
    absent_ca = error(tmp_path, {"tls": '{cert = "c.pem", key = "k.pem", ca = "ca.pem"}'})
    assert (absent_ca.key, absent_ca.problem) == ("tls.ca", f"no such file: {tmp_path / 'ca.pem'}")


def test_unset_flags_are_none() -> None:
    namespace = vars(flags())
    assert namespace["member_id"] is None
    assert namespace["tls_cert"] is None
    assert all(value is None for value in namespace.values())


def test_example_loads_and_mentions_every_setting(tmp_path: Path) -> None:
    text = example_toml()
    (tmp_path / "example.toml").write_text(text)
    (tmp_path / "group.secret").write_text(SECRET + "\n")
    settings = load_settings(environ={}, path=tmp_path / "example.toml")
    assert (settings.group, settings.member_id, settings.transport) == ("inventory", 0, "tcp")
    assert [member.id for member in settings.members] == [0, 1, 2]
    assert settings.listen == Address("127.0.0.1", 7000)
    assert settings.core == CoreConfig()
    assert settings.secret == SECRET.encode()
    for field in fields(Settings):
        assert f"{field.name}" in text or field.name == "sources"  # where values came from
    for key in ("secret_file", "cert", "key", "ca"):
        assert f"{key} = " in text


def test_secret_flag_is_refused_without_echoing_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        flags("--secret", SECRET)  # not an abbreviation of --secret-file either
    message = capsys.readouterr().err
    assert "--secret is not accepted" in message
    assert SECRET not in message
