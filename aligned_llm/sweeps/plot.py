"""The sweep's plot: adherence against perplexity, one marker per point, the Pareto front drawn."""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING

from aligned_llm.token_view import _figure_class

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from aligned_llm.sweeps.records import PointSummary, SweepResult

_KIND_STYLE = {
    "grid": {"marker": "o", "color": "#4393c3"},
    "default": {"marker": "D", "color": "#762a83"},
    "direct": {"marker": "s", "color": "#1b7837"},
    "vanilla": {"marker": "^", "color": "#878787"},
}
_FRONT_COLOUR = "#d6604d"


def sweep_figure(result: SweepResult, *, title: str | None = None, selected: int | None = None) -> Figure:
    """A matplotlib Figure: x = perplexity under the plain model (lower: more fluent), y = adherence.

    Grid points are circles, baselines other markers (legend); Pareto-optimal points are
    ringed in red and joined by the front's staircase; ``selected`` (a point index) is
    ringed in black. The x axis is logarithmic when perplexities span more than 5×. Made without
    pyplot, so it shows as a PNG in any notebook.
    """
    figure = _figure_class()(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.subplots()
    shown = [p for p in result.points if not (math.isnan(p.perplexity) or math.isnan(p.adherence))]
    for kind, style in _KIND_STYLE.items():
        points = [p for p in shown if p.point.kind == kind]
        if points:
            axes.scatter([p.perplexity for p in points], [p.adherence for p in points], s=46, zorder=3,
                         label=kind if kind != "grid" else "grid point", **style)  # fmt: skip
    front = sorted((p for p in shown if p.pareto), key=lambda p: p.perplexity)
    if front:
        xs, ys = [front[0].perplexity], [front[0].adherence]
        for point in front[1:]:  # staircase: what is reachable at each perplexity
            xs += [point.perplexity, point.perplexity]
            ys += [ys[-1], point.adherence]
        axes.plot(xs, ys, color=_FRONT_COLOUR, linewidth=1.4, zorder=2, label="Pareto front")
        axes.scatter([p.perplexity for p in front], [p.adherence for p in front], s=140, facecolors="none",
                     edgecolors=_FRONT_COLOUR, linewidths=1.6, zorder=4)  # fmt: skip
    perplexities = [p.perplexity for p in shown]
    log_x = bool(perplexities) and max(perplexities) > 5 * min(perplexities)
    if log_x:
        axes.set_xscale("log")
    for point, offset in zip(shown, _label_offsets(shown, log_x), strict=True):
        axes.annotate(point.label, (point.perplexity, point.adherence), textcoords="offset points", xytext=(6, offset),
                      fontsize=8, color="#333")  # fmt: skip
        if point.point.index == selected:
            axes.scatter([point.perplexity], [point.adherence], s=260, facecolors="none", edgecolors="black",
                         linewidths=1.8, zorder=5)  # fmt: skip
    axes.margins(x=0.12, y=0.08)
    axes.set_xlabel("perplexity under the plain model  (← more fluent)")
    axes.set_ylabel(f"adherence: {result.adherence_name}  (↑ better)")
    axes.grid(True, color="#e5e5e5", zorder=0)
    axes.legend(fontsize=8, loc="best")
    count = len(result.prompts)
    title = title or f"{len(result.points)} points × {count} prompt{'s' * (count != 1)}" + (
        " (stopped)" if result.stopped else ""
    )
    axes.set_title(textwrap.fill(title, 80), fontsize=9, loc="left")
    return figure


def _label_offsets(points: list[PointSummary], log_x: bool) -> list[float]:
    """Vertical label offsets (points): labels of points close on the plot alternate above and below.

    Closeness is in fractions of the data's span: within 4% in adherence and 25% in (log)
    perplexity, about the width of a label.
    """
    xs = [math.log(p.perplexity) if log_x else p.perplexity for p in points]
    ys = [p.adherence for p in points]
    x_span = (max(xs) - min(xs)) or 1.0 if xs else 1.0
    y_span = (max(ys) - min(ys)) or 1.0 if ys else 1.0
    offsets = [4.0] * len(points)
    placed: list[int] = []
    for index in sorted(range(len(points)), key=lambda i: (ys[i], xs[i])):
        near = sum(
            1 for other in placed
            if abs(ys[other] - ys[index]) < 0.04 * y_span and abs(xs[other] - xs[index]) < 0.25 * x_span
        )  # fmt: skip
        offsets[index] = (4.0, -11.0, 15.0, -22.0, 26.0, -33.0)[near % 6]
        placed.append(index)
    return offsets
