"""Token-level view of a traced generation: coloured HTML of the output and a plot of the signal.

Each token of ``generate(..., trace=True)`` is coloured by how far the method moved it (its
``signal``: OPAD's scaled log-ratio, linear's ρ·(z_c − z_u), PAD's β·reward, AAD's advantage;
or, with ``by="kl"``, the KL between the first two rows at that step), on a scale normalised
per output and centred at 0; hovering a token shows its numbers. ``signal_figure`` plots the
same values along the sequence with matplotlib (imported only there). Both work without the
tuning panel, on any ``GenerationResult`` that has a trace.
"""

from __future__ import annotations

import functools
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from aligned_llm.errors import InvalidSettingError, MissingPackageError
from aligned_llm.registry import registered_methods
from aligned_llm.result import GenerationResult, TokenTrace

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ColourBy = Literal["signal", "kl"]
Traced = GenerationResult | Sequence[TokenTrace] | Sequence[Mapping[str, object]]


def signal_label(method: str) -> str:
    """What ``TokenTrace.signal`` means for ``method``: the registered method's own ``signal_label``."""
    cls = registered_methods().get(method)
    return cls.signal_label if cls is not None else "signal"


_WHITE = (255, 255, 255)
_RAISED = (178, 24, 43)
"""Red: the method raised the token (positive signal), or a large KL."""
_LOWERED = (33, 102, 172)
"""Blue: the method lowered the token (negative signal)."""
_MAX_BLEND = 0.75
"""The strongest colour stays light enough for dark text to be read on it."""


class TokenHTML(str):
    """An HTML string that notebooks display as HTML (``_repr_html_``), and tests read as text."""

    def _repr_html_(self) -> str:
        return str(self)


def _traces(traced: Traced) -> list[TokenTrace]:
    """The TokenTraces of a result, or of a list of them or of their dicts (LangChain's metadata)."""
    trace = traced.trace if isinstance(traced, GenerationResult) else traced
    if trace is None:
        raise InvalidSettingError("trace", "this result has no trace: generate or stream with trace=True")
    return [TokenTrace(**token) if isinstance(token, Mapping) else token for token in trace]


def _method_name(traced: Traced, method: str | None) -> str:
    if method is not None:
        return method
    return traced.method if isinstance(traced, GenerationResult) else "method"


def _values(traces: Sequence[TokenTrace], by: ColourBy) -> list[float | None]:
    if by == "signal":
        return [trace.signal for trace in traces]
    if by == "kl":
        return [trace.kl for trace in traces]
    raise InvalidSettingError("by", f"must be 'signal' or 'kl', got {by!r}")


def _scale(values: Sequence[float | None]) -> float:
    """The largest finite magnitude: the output's own colour scale (0 when nothing moved)."""
    return max((abs(value) for value in values if value is not None and math.isfinite(value)), default=0.0)


def colour(value: float | None, scale: float) -> str:
    """Background colour of a value on a diverging white-centred scale (red > 0 > blue)."""
    if value is None or not math.isfinite(value) or scale <= 0:
        return "rgb(255, 255, 255)"
    strength = _MAX_BLEND * min(abs(value) / scale, 1.0)
    end = _RAISED if value > 0 else _LOWERED
    red, green, blue = (round(white + (target - white) * strength) for white, target in zip(_WHITE, end, strict=True))
    return f"rgb({red}, {green}, {blue})"


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:+.4f}" if math.isfinite(value) else str(value)


def hover_text(index: int, trace: TokenTrace) -> str:
    """The numbers of one token, one per line (the ``title`` a browser shows on hover)."""
    lines = [
        f"#{index} {trace.text!r} (id {trace.token_id})",
        f"signal {_number(trace.signal)}",
        f"score {_number(trace.score)}",
    ]
    lines += [f"log p[{row}] {_number(logprob)}" for row, logprob in trace.logprobs.items()]
    if trace.kl is not None:
        lines.append(f"KL {_number(trace.kl)}")
    return "\n".join(lines)


def _visible(text: str) -> str:
    """Escaped token text with invisible characters made visible (newlines kept as breaks)."""
    if text == "":
        return '<span style="opacity: 0.5">∅</span>'
    escaped = html.escape(text, quote=False).replace("\t", "⇥\t")
    return escaped.replace("\n", '<span style="opacity: 0.5">↵</span>\n')


def _kl_label(traces: Sequence[TokenTrace]) -> str:
    rows = list(traces[0].logprobs) if traces else []
    return f"KL({rows[0]} ‖ {rows[1]})" if len(rows) >= 2 else "KL"


def token_html(traced: Traced, *, by: ColourBy = "signal", method: str | None = None) -> TokenHTML:
    """The output as HTML, each token coloured by how far the method moved it, numbers on hover.

    ``traced`` is a ``GenerationResult`` generated with ``trace=True``, or its trace list
    (``TokenTrace`` objects or their dicts, as LangChain's ``response_metadata["trace"]``;
    then name the ``method``). ``by="signal"`` colours by ``TokenTrace.signal``;
    ``by="kl"`` by the KL between the first two rows. The scale is centred at 0 and
    normalised to this output's largest magnitude, which the legend states.
    """
    traces = _traces(traced)
    name = _method_name(traced, method)
    values = _values(traces, by)
    scale = _scale(values)
    spans = []
    for index, (trace, value) in enumerate(zip(traces, values, strict=True)):
        title = html.escape(hover_text(index, trace), quote=True).replace("\n", "&#10;")
        spans.append(
            f'<span class="token" data-index="{index}" data-value="{_number(value)}" title="{title}" '
            f'style="background-color: {colour(value, scale)}; border-radius: 2px; padding: 1px 0">'
            f"{_visible(trace.text)}</span>"
        )
    label = _kl_label(traces) if by == "kl" else signal_label(name)
    if scale > 0:
        gradient = f"linear-gradient(to right, {colour(-scale, scale)}, #fff, {colour(scale, scale)})"
        low = "0" if by == "kl" else f"{-scale:+.3g}"
        legend = (
            f'<span style="display: inline-block; width: 90px; height: 0.8em; background: {gradient}; '
            f'vertical-align: middle; border: 1px solid #ccc"></span> {low} … {scale:+.3g}'
        )
    else:
        legend = "nothing moved: every value is 0"
    header = (
        f'<div class="legend" style="font-family: sans-serif; font-size: 12px; color: #444; margin-bottom: 4px">'
        f"<b>{html.escape(name)}</b> · {len(traces)} tokens · colour: {html.escape(label)} · {legend}"
        f"</div>"
    )
    body = (
        '<div class="tokens" style="font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; '
        f'font-size: 13px; line-height: 1.8; white-space: pre-wrap; word-break: break-word">{"".join(spans)}</div>'
    )
    return TokenHTML(f'<div class="aligned-llm-token-view">{header}{body}</div>')


def _tick_label(text: str) -> str:
    """A token as an axis label: visible whitespace, and ``$`` kept out of mathtext."""
    shown = text.replace("\n", "↵").replace("\t", "⇥")
    shown = "␣" + shown[1:] if shown.startswith(" ") else shown
    return (shown or "∅").replace("$", r"\$")


@functools.cache
def _figure_class() -> type[Figure]:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MissingPackageError('the signal plot needs matplotlib: pip install "aligned-llm[widgets]"') from error

    class SignalFigure(Figure):
        """A Figure that a notebook shows as a PNG even when no matplotlib backend was set up for it."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png")
            return buffer.getvalue()

    return SignalFigure


def signal_figure(traced: Traced, *, method: str | None = None, max_ticks: int = 64) -> Figure:
    """A matplotlib Figure of the signal along the sequence, and the KL between rows below it.

    The first axes plots ``TokenTrace.signal`` per token (with the zero line); when the
    trace has a KL (two rows or more) a second axes plots it. Up to ``max_ticks`` tokens
    label the x axis. The figure is made without pyplot (no global state, any backend):
    a notebook shows it as a PNG, or ``fig.savefig("signal.png")``.
    """
    figure_class = _figure_class()
    traces = _traces(traced)
    name = _method_name(traced, method)
    positions = list(range(len(traces)))
    kls = [trace.kl for trace in traces]
    has_kl = any(kl is not None for kl in kls)
    width = min(16.0, max(6.0, 0.22 * len(traces)))
    figure = figure_class(figsize=(width, 4.6 if has_kl else 2.8), layout="constrained")
    axes = figure.subplots(2 if has_kl else 1, 1, sharex=True, squeeze=False)[:, 0]
    signal_axes = axes[0]
    signal_axes.axhline(0.0, color="#999", linewidth=0.8)
    signal_axes.plot(positions, [trace.signal for trace in traces], color="#b2182b", marker="o", markersize=3,
                     linewidth=1.2, label="signal")  # fmt: skip
    signal_axes.set_ylabel("signal")
    signal_axes.set_title(f"{name}: {signal_label(name)}", fontsize=10, loc="left")
    if has_kl:
        kl_axes = axes[1]
        kl_axes.plot(positions, [math.nan if kl is None else kl for kl in kls], color="#2166ac", marker="o",
                     markersize=3, linewidth=1.2, label="kl")  # fmt: skip
        kl_axes.set_ylabel("KL")
        kl_axes.set_title(_kl_label(traces), fontsize=10, loc="left")
    bottom = axes[-1]
    bottom.set_xlabel("generated token")
    if 0 < len(traces) <= max_ticks:
        bottom.set_xticks(positions, [_tick_label(trace.text) for trace in traces], rotation=90, fontsize=8)
    return figure
