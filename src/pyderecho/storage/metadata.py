"""Small files replaced whole and atomically: a member's view history, its ragged-edge decisions,
the version of its last snapshot (DESIGN.md 3.4).

A write goes to ``<name>.tmp`` in the same directory, is fsynced, renamed over ``<name>`` and then
the directory is fsynced. A crash at any point leaves either the old file or the new one, never a
mix; the directory sync makes the rename itself durable (Derecho renames without it, so a crash
just after a write it reported done could bring the old file back).

The file carries a header with a magic, the body's length and a CRC32C over the header and the
body: a file damaged on disk is reported as :class:`~pyderecho.storage.errors.CorruptLog`, never
handed to the caller as if it were good. A ``.tmp`` file left by a crash is not read, and the
next write of that name replaces it.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import crc32c

from pyderecho.storage.errors import CorruptLog, StorageFailed
from pyderecho.storage.files import fsync_directory, write_all

MAGIC = b"PDMD"
_HEADER = struct.Struct("<4sII")  # magic, body length, crc32c of magic + length + body
TEMP_SUFFIX = ".tmp"


def _checksum(length: int, data: bytes | memoryview) -> int:
    return crc32c.crc32c(data, value=crc32c.crc32c(MAGIC + length.to_bytes(4, "little")))


def temp_path(path: Path) -> Path:
    """Where :func:`write_atomic` writes ``path``'s next content before renaming it."""
    return path.with_name(path.name + TEMP_SUFFIX)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` durably: once this returns, a crash leaves ``data``.

    One writer per path at a time (the temporary file's name is fixed).
    """
    if len(data) >= 1 << 32:
        raise ValueError(f"metadata of {len(data)} bytes for {path}: the limit is 4 GiB")
    temp = temp_path(path)
    header = _HEADER.pack(MAGIC, len(data), _checksum(len(data), data))
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as error:
        raise StorageFailed.from_os_error("create", temp, error) from error
    step = "write"
    try:
        write_all(fd, header + data)
        step = "fsync"
        os.fsync(fd)
        step = "close"
        os.close(fd)
    except OSError as error:
        if step != "close":
            with contextlib.suppress(OSError):
                os.close(fd)
        raise StorageFailed.from_os_error(step, temp, error) from error
    try:
        os.replace(temp, path)
    except OSError as error:
        raise StorageFailed.from_os_error("rename", path, error) from error
    fsync_directory(path.parent)


def read_metadata(path: Path) -> bytes | None:
    """The body last written to ``path`` by :func:`write_atomic`, or ``None`` if there is none.

    Raises :class:`CorruptLog` if the file fails its checks.
    """
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StorageFailed.from_os_error("read", path, error) from error
    if len(content) < _HEADER.size:
        raise CorruptLog(path, 0, f"{len(content)} bytes, shorter than the metadata header")
    magic, length, checksum = _HEADER.unpack_from(content)
    if magic != MAGIC:
        raise CorruptLog(path, 0, f"magic {magic!r}, expected {MAGIC!r}")
    body = content[_HEADER.size :]
    if len(body) != length:
        raise CorruptLog(
            path, _HEADER.size, f"the header announces {length} bytes, the file holds {len(body)}"
        )
    if _checksum(length, body) != checksum:
        raise CorruptLog(path, _HEADER.size, "checksum mismatch")
    return body
