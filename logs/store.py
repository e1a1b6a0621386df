"""The log store: one directory per container of append-only segments with a sparse index
(the format is in :mod:`logs.format`).

:class:`LogWriter` is used by one process only, the log collector: it appends records, rotates
segments at ``max_size`` keeping ``max_file`` of them (a segment is larger than ``max_size`` only
when it holds one record, bigger than the limit: records are never split), and, when it opens a log, recovers from
a crash (a torn last record is cut off, each stream's last seq is found from the last segment's
header and index). :class:`LogReader` is used by anyone (the daemon answers ``logs.read`` with
it) while the writer writes: it never sees a record before the whole of it is there, and it
follows a rotation (a segment is final once the next one exists).

Durability (docs/logs.md): records are written with ``writev`` (page cache) and the collector
acknowledges them to the supervisor once written, so a killed collector loses nothing; the
writer fsyncs a segment when it rotates and when :meth:`LogWriter.sync` is called (the
collector calls it about once a second), so a machine crash loses at most about a second.

The store is three modules behind this one: the directory's names (:mod:`logs.segments`),
the writer (:mod:`logs.writer`) and the reader (:mod:`logs.reader`); their public names are
re-exported here, where they lived before, so ``from logs.store import ...`` keeps working.
"""

from __future__ import annotations

from logs.reader import END, MORE, UNTIL, LogReader, Page, Position, count_lines
from logs.segments import (
    HEADER_END,
    LOGS_DIR,
    SEGMENT_NAME,
    container_directory,
    index_path,
    list_segments,
    segment_path,
)
from logs.writer import WRITEV_BATCH, LogWriter

__all__ = [
    "END", "HEADER_END", "LOGS_DIR", "MORE", "SEGMENT_NAME", "UNTIL", "WRITEV_BATCH", "LogReader", "LogWriter",
    "Page", "Position", "container_directory", "count_lines", "index_path", "list_segments", "segment_path",
]
