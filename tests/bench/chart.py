"""docs/benchmarks.png: one small bar chart per figure, dockyard beside its anchors, the
ratio and the target verdict in each panel's title. matplotlib is a bench-only package
(installed into .venv by scripts/bench.sh)."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from tests.bench.stats import Figure, human

DOCKYARD = "#d9601a"
ANCHOR = "#5b7fa6"
MET = {True: ("target met", "#2e7d32"), False: ("target missed", "#c62828"), None: ("no target", "#555555")}


def draw(figures: Sequence[Figure], path: Path, subtitle: str = "") -> str | None:
    """Write the chart; returns None (and draws nothing) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    columns = 3
    rows = math.ceil(len(figures) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False)
    for ax, figure in zip(axes.flat, figures):
        _panel(ax, figure)
    for ax in list(axes.flat)[len(figures):]:
        ax.axis("off")
    fig.suptitle("dockyard (orange) against the anchors (blue): medians" + (f" - {subtitle}" if subtitle else ""),
                 fontsize=13, fontweight="bold")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _panel(ax, figure: Figure) -> None:
    bars = [(m.tool, m.median, ANCHOR) for m in figure.anchors if m.median is not None]
    bars += [(m.tool, m.median, DOCKYARD) for m in figure.dockyard if m.median is not None]
    ax.set_title("\n".join(textwrap.wrap(figure.title.replace("`", ""), 46)), fontsize=10)
    missing = [m for m in figure.dockyard if m.median is None]
    if not bars:
        ax.axis("off")
        reason = figure.status if figure.status != "ok" else next(
            (f"{m.tool}: {m.status}" for m in figure.dockyard + figure.anchors if m.status != "ok"), "no data")
        reason = reason if len(reason) < 200 else reason[:199] + "…"
        ax.text(0.5, 0.5, "\n".join(textwrap.wrap(reason, 44)),
                ha="center", va="center", fontsize=10, color="#555555", transform=ax.transAxes)
        return
    labels = ["\n".join(textwrap.wrap(name, 12)) for name, _, _ in bars]
    values = [value for _, value, _ in bars]
    positions = range(len(bars))
    ax.bar(positions, values, color=[color for _, _, color in bars], width=0.6)
    ax.set_xticks(list(positions), labels, fontsize=8)
    ax.set_ylabel(figure.unit)
    ax.set_ylim(0, max(values) * 1.3)
    for x, value in zip(positions, values):
        ax.text(x, value, human(value, figure.unit), ha="center", va="bottom", fontsize=8)
    if missing:
        text = "dockyard: " + missing[0].status.split(":")[0]
        ax.text(0.98, 0.95, text, ha="right", va="top", fontsize=8, color="#555555", transform=ax.transAxes)
    verdict, color = MET[figure.met]
    line = f"{figure.ratio:.2f}x ({figure.ratio_basis})" if figure.ratio is not None else ""
    line = f"{line}\n{verdict}: {figure.target}" if figure.met is not None else line
    if line:
        ax.text(0.02, 0.95, line, ha="left", va="top", fontsize=8, color=color, transform=ax.transAxes,
                fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)
