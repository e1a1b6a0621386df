"""Medians, ratios, the interleaved schedule and the result records. Pure: no I/O."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: Figure statuses other than "ok" start with one of these words.
NOT_AVAILABLE = "not available"
PENDING = "pending"


@dataclass
class Measure:
    """One tool's samples for one figure, in ``unit`` (s, MB, events/s ...).

    ``failures`` counts samples that did not complete (non-zero exit, timeout); they are
    left out of ``samples`` and reported beside the median.
    """

    tool: str
    unit: str
    samples: list[float] = field(default_factory=list)
    failures: int = 0
    note: str = ""
    #: Set when the measure could not be taken at all: "not available: <reason>".
    status: str = "ok"

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def add(self, value: float | None) -> None:
        if value is None:
            self.failures += 1
        else:
            self.samples.append(value)

    def as_map(self) -> dict[str, Any]:
        data = asdict(self)
        data["median"] = self.median
        data["n"] = len(self.samples)
        return data


@dataclass
class Figure:
    """One row of the issue 9 table: dockyard's measure against the anchors'."""

    key: str
    title: str
    target: str
    unit: str
    anchors: list[Measure] = field(default_factory=list)
    dockyard: list[Measure] = field(default_factory=list)
    #: dockyard / reference, and what the reference is ("the faster of docker and podman").
    ratio: float | None = None
    ratio_basis: str = ""
    met: bool | None = None
    status: str = "ok"
    notes: list[str] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)

    def as_map(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "target": self.target,
            "unit": self.unit,
            "anchors": [m.as_map() for m in self.anchors],
            "dockyard": [m.as_map() for m in self.dockyard],
            "ratio": self.ratio,
            "ratio_basis": self.ratio_basis,
            "met": self.met,
            "status": self.status,
            "notes": self.notes,
            "commands": self.commands,
        }


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or None when either is missing or the reference is zero."""
    if value is None or not reference:
        return None
    return value / reference


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, interpolated linearly between the
    two nearest ranks (numpy's default): p50 of [1, 2, 3, 4] is 2.5, p99 of 100 values
    lies between the 99th and the 100th smallest."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def fastest(measures: Sequence[Measure]) -> Measure | None:
    """The measure with the smallest median (the anchor dockyard must beat)."""
    measured = [m for m in measures if m.median is not None]
    return min(measured, key=lambda m: m.median) if measured else None


def interleaved(tools: Sequence[str], repetitions: int) -> Iterator[tuple[int, str]]:
    """``(repetition, tool)`` in rotating order: A B C, B C A, C A B, ...

    Rotating the order cancels the bias of always running first (cold caches) or right
    after the heaviest tool.
    """
    count = len(tools)
    for repetition in range(repetitions):
        for offset in range(count):
            yield repetition, tools[(repetition + offset) % count]


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, looking inside (trio's) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def human(value: float | None, unit: str) -> str:
    """A median for the table: seconds to 3 significant places, rates with thousands."""
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.3f} ms"
    if unit == "MB":
        return f"{value:.2f} MB"
    if unit == "events/s":
        return f"{value:,.0f}/s"
    return f"{value:g} {unit}"
