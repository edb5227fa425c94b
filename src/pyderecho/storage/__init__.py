"""The on-disk log of Paxos shards: segment files of checksummed records, crash recovery that
cuts a torn tail and refuses a corrupt middle, atomic metadata files, and the group-commit
writer thread (DESIGN.md 3.4; the format and the rules are in docs/storage.md).

It depends on nothing else in pyderecho: ``runtime`` and ``sim`` use it.
"""

from pyderecho.storage.errors import CorruptLog, StorageFailed
from pyderecho.storage.files import fsync_directory
from pyderecho.storage.log import DEFAULT_SEGMENT_BYTES, MAX_RECORD_BYTES, SegmentedLog
from pyderecho.storage.metadata import read_metadata, write_atomic
from pyderecho.storage.writer import GroupCommitWriter, WriterStats

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "MAX_RECORD_BYTES",
    "CorruptLog",
    "GroupCommitWriter",
    "SegmentedLog",
    "StorageFailed",
    "WriterStats",
    "fsync_directory",
    "read_metadata",
    "write_atomic",
]
