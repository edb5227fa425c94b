"""The two ways the storage layer fails, kept apart because they call for different actions.

:class:`StorageFailed` is the operating system refusing a write, a sync or an open (a full disk,
an I/O error): the member cannot promise durability any more and must stop, fail-stop, rather
than retry. A failed ``fsync`` in particular may have dropped dirty pages the kernel will not
write again, so retrying it and carrying on could report as durable what never reached the disk.

:class:`CorruptLog` is data on disk that fails its checksum where a crash cannot explain it: the
member must not start from it, and an operator (or state transfer from the other members)
decides what to do.
"""

from __future__ import annotations

import errno
from pathlib import Path


class StorageFailed(OSError):
    """An operation on a storage file failed; the message names the operation, the file and the
    error code (``ENOSPC``, ``EIO``, ...). ``errno`` and ``filename`` are set as for ``OSError``.
    """

    def __init__(self, operation: str, path: Path, code: int | None, reason: str) -> None:
        name = errno.errorcode.get(code, f"errno {code}") if code is not None else "no errno"
        super().__init__(code, f"{operation} failed with {name} ({reason})", str(path))
        self.operation = operation

    @classmethod
    def from_os_error(cls, operation: str, path: Path, error: OSError) -> StorageFailed:
        """The failure of ``operation`` on ``path`` that raised ``error``."""
        return cls(operation, path, error.errno, error.strerror or str(error))


class CorruptLog(Exception):
    """A log or metadata file holds data that fails its checks and that a torn write at a crash
    cannot explain; ``path`` is the file and ``offset`` the byte where the bad data starts, or
    ``None`` where the fault is not at one place (a segment missing between two others).
    """

    def __init__(self, path: Path, offset: int | None, reason: str) -> None:
        where = f"{path}" if offset is None else f"{path} at byte offset {offset}"
        super().__init__(f"corrupt {where}: {reason}")
        self.path = path
        self.offset = offset
