"""Progress of a pull or push: events per blob, and a renderer for a terminal.

A transfer calls its ``on_progress`` callback with :class:`Progress` events: one when a
blob's fate is known (``exists``, ``mounted``, ``waiting``), then ``downloading`` or
``uploading`` at most every :data:`INTERVAL` seconds while bytes flow, then ``done``
(verified); for a pull through the daemon, ``extracting`` while the store unpacks the
layer and ``complete`` once the image is in the store.
The daemon forwards them (as dicts, :meth:`Progress.to_json`) to the client that asked
and to the bus; :class:`TerminalProgress` draws them as docker does, one line per layer
with bytes and speed, redrawn in place, and draws nothing when the output is not a
terminal.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, TextIO

#: Seconds between two byte-count events of one blob.
INTERVAL = 0.2

STATUSES = ("waiting", "exists", "mounted", "downloading", "uploading", "verifying", "done", "extracting", "complete")


@dataclass(frozen=True)
class Progress:
    operation: str  # "pull" or "push"
    reference: str
    digest: str
    kind: str  # "manifest", "config" or "layer"
    status: str  # one of STATUSES
    current: int = 0
    total: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Progress:
        return cls(**{key: document[key] for key in cls.__dataclass_fields__ if key in document})


ProgressCallback = Callable[[Progress], None]


def ignore(progress: Progress) -> None:
    pass


class Meter:
    """Throttles the byte-count events of one blob: :meth:`advance` calls back at most
    every ``interval`` seconds; ``clock`` is injectable for tests."""

    def __init__(self, callback: ProgressCallback, template: Progress, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic):
        self.callback = callback
        self.template = template
        self.interval = interval
        self.clock = clock
        self.current = 0
        self.last = float("-inf")

    def emit(self, status: str) -> None:
        self.callback(Progress(self.template.operation, self.template.reference, self.template.digest,
                               self.template.kind, status, self.current, self.template.total))

    def advance(self, count: int) -> None:
        self.current += count
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.emit(self.template.status)


def human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.3g}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    return f"{size:.3g}TB"


_LABELS = {"waiting": "Waiting", "exists": "Already exists", "mounted": "Mounted from another repository",
           "downloading": "Downloading", "uploading": "Pushing", "verifying": "Verifying checksum",
           "done": "Download complete", "extracting": "Extracting", "complete": "Pull complete"}


class TerminalProgress:
    """Draws progress events on ``stream`` if it is a terminal; otherwise draws nothing.

    One line per blob (short digest, status, bytes of total, speed), in the order the blobs
    first appeared; every event redraws the block in place with ANSI cursor moves.
    """

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 force: bool | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = force if force is not None else self.stream.isatty()
        self.clock = clock
        self.rows: dict[str, list[Any]] = {}  # digest -> [progress, first byte time]
        self.drawn = 0

    def __call__(self, progress: Progress) -> None:
        if not self.enabled or progress.kind == "manifest":
            return
        row = self.rows.setdefault(progress.digest, [progress, None])
        if progress.status in ("downloading", "uploading") and row[1] is None:
            row[1] = (self.clock(), progress.current)
        row[0] = progress
        self.draw()

    def line(self, progress: Progress, started: tuple[float, int] | None) -> str:
        short = progress.digest.partition(":")[2][:12]
        label = "Pushed" if progress.operation == "push" and progress.status == "done" else \
            _LABELS.get(progress.status, progress.status)
        text = f"{short}: {label}"
        if progress.status in ("downloading", "uploading") and progress.total:
            text += f"  {human_bytes(progress.current)}/{human_bytes(progress.total)}"
            if started is not None and progress.current > started[1]:
                elapsed = self.clock() - started[0]
                if elapsed > 0:
                    text += f"  {human_bytes((progress.current - started[1]) / elapsed)}/s"
        elif progress.status == "uploading" and progress.current:  # compressed as sent: no total yet
            text += f"  {human_bytes(progress.current)}"
        return text

    def draw(self) -> None:
        out = []
        if self.drawn:
            out.append(f"\x1b[{self.drawn}F")  # to the start of the block
        for progress, started in self.rows.values():
            out.append("\x1b[2K" + self.line(progress, started) + "\n")
        self.drawn = len(self.rows)
        self.stream.write("".join(out))
        self.stream.flush()
