"""Rates with 95% intervals as the benchmarks show them: a table cell and grouped bars with error bars."""

from __future__ import annotations

from typing import Any


def rate_cell(entry: dict[str, float] | None) -> str:
    """``"45% [26, 66]"`` for a :func:`scoring.proportion` entry; ``"—"`` for none."""
    if entry is None:
        return "—"
    return f"{100 * entry['rate']:.0f}% [{100 * entry['low']:.0f}, {100 * entry['high']:.0f}]"


def rate_bars(axis: Any, groups: list[str], series: dict[str, list[dict[str, float] | None]], ylabel: str) -> None:
    """One bar per series in each group, in percent, with the interval as the error bar; ``None`` leaves a gap."""
    width = 0.8 / max(1, len(series))
    for index, (label, entries) in enumerate(series.items()):
        xs = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
        present = [(x, e) for x, e in zip(xs, entries, strict=True) if e is not None]
        if not present:
            continue
        heights = [100 * e["rate"] for _, e in present]
        errors = [
            [max(0.0, 100 * (e["rate"] - e["low"])) for _, e in present],
            [max(0.0, 100 * (e["high"] - e["rate"])) for _, e in present],
        ]
        axis.bar([x for x, _ in present], heights, width, yerr=errors, capsize=2, label=label)
    axis.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=8)
    axis.set_ylabel(ylabel)
    axis.set_ylim(0, 100)
    axis.grid(True, axis="y", alpha=0.3)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
