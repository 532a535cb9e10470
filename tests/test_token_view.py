"""The token-level view: coloured HTML and the signal plot, for every method's trace."""

from __future__ import annotations

import dataclasses
import html
import io
import itertools
import math
import re
import subprocess
import sys

import matplotlib
import pytest

from aligned_llm import InvalidSettingError, MissingPackageError, TokenTrace, signal_figure, token_html, token_view
from aligned_llm.token_view import colour

matplotlib.use("Agg")

PROMPT = "Tell me about the moon."
SETTINGS = {
    "vanilla": {},
    "opad": {"principle": "Answer like a pirate.", "beta": 0.5},
    "linear": {"principle": "Answer like a pirate.", "rho": 2.0},
    "pad": {"profile": "A pirate who loves the sea.", "beta": 2.0, "k": 8},
    "aad": {"alpha": 0.1},
}
SPAN = re.compile(r'<span class="token" data-index="(\d+)" data-value="([^"]*)" title="([^"]*)" '
                  r'style="background-color: (rgb\(\d+, \d+, \d+\));[^"]*">')  # fmt: skip


@pytest.fixture(scope="module", params=list(SETTINGS))
def traced(request, tiny_llm, tiny_pair_llm):
    method = request.param
    llm = tiny_pair_llm if method == "aad" else tiny_llm
    return llm.generate(PROMPT, method=method, max_new_tokens=12, trace=True, **SETTINGS[method])


def _spans(page: str) -> list[tuple[int, str, str, str]]:
    return [(int(i), value, html.unescape(title), rgb) for i, value, title, rgb in SPAN.findall(page)]


def test_html_has_one_coloured_span_per_token_with_its_numbers(traced):
    page = token_html(traced)
    spans = _spans(page)
    assert [index for index, *_ in spans] == list(range(len(traced.trace))) == list(range(traced.output_tokens))
    for (_, value, title, _), token in zip(spans, traced.trace, strict=True):
        assert value == f"{token.signal:+.4f}"
        assert f"signal {token.signal:+.4f}" in title
        assert f"score {token.score:+.4f}" in title
        assert f"(id {token.token_id})" in title
        for row, logprob in token.logprobs.items():
            assert f"log p[{row}] {logprob:+.4f}" in title
        if token.kl is not None:
            assert f"KL {token.kl:+.4f}" in title
    assert f"<b>{traced.method}</b>" in page


def test_colours_follow_the_signal(traced):
    spans = _spans(token_html(traced))
    signals = [token.signal for token in traced.trace]
    colours = [rgb for *_, rgb in spans]
    if traced.method == "vanilla":
        assert set(colours) == {"rgb(255, 255, 255)"}
        assert "nothing moved" in token_html(traced)
        return
    scale = max(abs(s) for s in signals)
    assert scale > 0, "the method moved no token: the test prompt is too weak"
    # tokens whose signals differ (by more than 2 % of the scale) get different colours
    for i, j in itertools.combinations(range(len(signals)), 2):
        if abs(signals[i] - signals[j]) > 0.02 * scale:
            assert colours[i] != colours[j], (signals[i], signals[j])
        if signals[i] == signals[j]:
            assert colours[i] == colours[j]
    # the largest magnitude gets the strongest colour
    strongest = max(range(len(signals)), key=lambda i: abs(signals[i]))
    assert colours[strongest] == colour(signals[strongest], scale)
    assert colours[strongest] != "rgb(255, 255, 255)"
    for signal, rgb in zip(signals, colours, strict=True):
        red, _, blue = map(int, re.findall(r"\d+", rgb))
        assert (red > blue) if signal > 0 else (blue > red) if signal < 0 else rgb == "rgb(255, 255, 255)"


def test_kl_colouring_uses_the_kl_between_rows(traced):
    if traced.method == "vanilla":
        assert all(token.kl is None for token in traced.trace)
        return
    spans = _spans(token_html(traced, by="kl"))
    assert [value for _, value, *_ in spans] == [f"{token.kl:+.4f}" for token in traced.trace]
    first, second = list(traced.trace[0].logprobs)
    assert f"KL({first} ‖ {second})" in token_html(traced, by="kl")


def test_figure_plots_the_trace(traced):
    figure = signal_figure(traced)
    signal_line = next(line for line in figure.axes[0].lines if line.get_label() == "signal")
    assert list(signal_line.get_ydata()) == [token.signal for token in traced.trace]
    assert list(signal_line.get_xdata()) == list(range(len(traced.trace)))
    assert figure.axes[0].get_title(loc="left").startswith(traced.method)
    if traced.method == "vanilla":
        assert len(figure.axes) == 1
    else:
        kl_line = next(line for line in figure.axes[1].lines if line.get_label() == "kl")
        assert list(kl_line.get_ydata()) == [token.kl for token in traced.trace]
    ticks = [label.get_text() for label in figure.axes[-1].get_xticklabels()]
    assert len(ticks) == len(traced.trace)
    assert figure._repr_png_().startswith(b"\x89PNG"), "notebooks show it without a matplotlib backend set up"


def _token(text: str, signal: float, kl: float | None = 0.5) -> TokenTrace:
    return TokenTrace(token_id=7, text=text, logprobs={"constrained": -1.0, "unconstrained": -2.0}, score=-0.5,
                      signal=signal, kl=kl)  # fmt: skip


def test_token_text_is_escaped_and_whitespace_is_visible():
    traces = [_token("<b>&", 1.0), _token('"q"', -1.0), _token("\n", 0.5), _token(" lead", 0.0), _token("", 0.2)]
    page = token_html(traces, method="opad")
    assert "<b>&" not in page and "&lt;b&gt;&amp;" in page
    assert '↵</span>\n</span>' in page
    assert ">\u0020lead</span>" in page, "a leading space stays inside the token's span"
    assert "∅" in page
    titles = [title for _, _, title, _ in _spans(page)]
    assert titles[1].startswith("#1 '\"q\"'"), "quotes in the hover text are escaped, not cutting the attribute"
    assert len(_spans(page)) == 5


def test_trace_dicts_render_like_traces(traced):
    """LangChain's response_metadata["trace"] holds the traces as dicts."""
    as_dicts = [dataclasses.asdict(token) for token in traced.trace]
    assert token_html(as_dicts, method=traced.method) == token_html(traced)


def test_dollar_signs_and_infinite_values_do_not_break_the_plot():
    traces = [_token("$x$", math.inf), _token("$", -1.0, kl=None), _token("a", 0.3)]
    figure = signal_figure(traces, method="opad")
    figure.savefig(io.BytesIO(), format="png")
    assert "\\$" in figure.axes[-1].get_xticklabels()[0].get_text()
    assert colour(math.inf, 1.0) == "rgb(255, 255, 255)"


def test_a_result_without_trace_is_refused(tiny_llm):
    result = tiny_llm.generate(PROMPT, max_new_tokens=2)
    with pytest.raises(InvalidSettingError, match="trace=True"):
        token_html(result)
    with pytest.raises(InvalidSettingError, match="by"):
        token_html([_token("a", 1.0)], by="score")


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setattr(token_view, "_figure_class", token_view._figure_class.__wrapped__)
    with pytest.raises(MissingPackageError, match=r'pip install "aligned-llm\[widgets\]"'):
        signal_figure([_token("a", 1.0)], method="opad")


def test_importing_the_package_imports_no_widget_library():
    code = (
        "import sys, aligned_llm\n"
        "assert not {'ipywidgets', 'matplotlib', 'aligned_llm.widgets'} & set(sys.modules), sys.modules.keys()\n"
        "aligned_llm.token_html\n"
        "assert 'ipywidgets' not in sys.modules and 'matplotlib' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
