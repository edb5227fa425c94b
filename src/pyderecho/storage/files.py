"""The few system calls the log and the metadata files share, with their failures named.

Each raises :class:`~pyderecho.storage.errors.StorageFailed` naming the file and the operation,
so that an ``ENOSPC`` or ``EIO`` from deep inside a write says which file it was.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyderecho.storage.errors import StorageFailed


def fsync_directory(directory: Path) -> None:
    """Make the names in ``directory`` durable: a file created, renamed or removed in it is
    only sure to survive a crash once its directory has been synced."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        raise StorageFailed.from_os_error("fsync of the directory", directory, error) from error


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to ``fd``, going on after a short write (a short write is how a
    file system reports that it filled up partway; the next call then raises ``ENOSPC``).
    Raises the bare ``OSError``: the caller knows which file and operation it was."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
