"""The notebook tuning panel: pick a method, move β/ρ/k/α, generate, watch it stream and compare.

``TuningPanel(llm)`` holds ipywidgets (imported when a panel is built, so ``import aligned_llm``
never needs them): a method selector, a control per registered method parameter (a slider for
numbers, a dropdown for choices; enabled only for the methods that declare it), text areas
for the prompt, principle and user profile, Generate and
Stop buttons, a side-by-side baseline/aligned output that streams, a live tokens/s note, an
error area, and after each run the token-level view and signal plot of ``token_view``.

Generation runs on a worker thread, which only sets widget values (``HTML.value``,
``Image.value``), the thread-safe way to update widgets. The baseline and aligned streams
decode together in the model's running batch (one forward per step for both), and the worker
reads them **alternately**, so both columns grow together; each column's tokens/s is its
tokens over the time from the start of the run to its last token. Stop cancels both streams
at their next step.
Settings are checked on the calling thread before the worker starts, so a bad value shows as
an error at once and nothing runs; errors during decoding are shown the same way.
"""

from __future__ import annotations

import html
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aligned_llm.errors import MissingPackageError
from aligned_llm.parameters import Parameter
from aligned_llm.registry import method_class, method_parameters
from aligned_llm.result import GenerationResult
from aligned_llm.token_view import signal_figure, token_html

if TYPE_CHECKING:
    from aligned_llm.llm import AlignedLLM, GenerationStream

PanelState = Literal["idle", "running", "done", "cancelled", "error"]
Baseline = Literal["vanilla", "direct", "none"]

SYMBOLS: dict[str, str] = {"beta": "β", "rho": "ρ", "alpha": "α"}
"""Greek letters for the built-in methods' parameter labels; other parameters show their name."""

SWEEP_PROMPTS = ("Name three rivers.", "Why is the sky blue?")
"""Prompts the sweep view starts with, after the panel's own prompt."""

_UPDATE_EVERY_S = 0.05
"""Streamed text and the tokens/s note are redrawn at most this often (plus once at the end)."""

_TEXT_STYLE = "white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, Menlo, Consolas, monospace"


def _ipywidgets() -> Any:
    try:
        import ipywidgets
    except ImportError as error:
        raise MissingPackageError('the tuning panel needs ipywidgets: pip install "aligned-llm[widgets]"') from error
    return ipywidgets


def parameters_of(method: str) -> set[str]:
    """The parameter controls ``method`` reads: the parameters it declares."""
    return {parameter.name for parameter in method_class(method).parameters}


def _control(widgets: Any, name: str, declarations: list[tuple[str, Parameter]], style: dict[str, str]) -> Any:
    """A widget for one method parameter: a dropdown for choices, a checkbox, a text box or a slider."""
    parameter = declarations[0][1]
    label = f"{SYMBOLS.get(name, name)} ({', '.join(method for method, _ in declarations)})"
    tooltip = "; ".join(f"{method}: {declared.help}" for method, declared in declarations)
    options = {"description": label, "style": style, "tooltip": tooltip}
    if parameter.choices is not None:
        return widgets.Dropdown(options=list(parameter.choices), value=parameter.default, **options)
    if parameter.type is bool:
        return widgets.Checkbox(value=bool(parameter.default), **options)
    if parameter.type is str:
        return widgets.Text(value=parameter.default or "", **options)
    low, high = parameter.ui_range or (parameter.minimum or 0, max(10 * (parameter.default or 1), 1))
    if parameter.type is int:
        return widgets.IntSlider(value=parameter.default, min=int(low), max=int(high), **options)
    step = slider_step(low, high, parameter.default)
    return widgets.FloatSlider(value=parameter.default, min=low, max=high, step=step, **options)


def slider_step(low: float, high: float, default: float | None) -> float:
    """The coarsest 1-2-5 step (at least 50 positions) whose grid, from ``low``, holds ``default`` and ``high``.

    A slider shows and sets ``low + n·step`` only, so the default must lie on that grid
    (β from 0.05 to 5 gets 0.05: 0.5 and the default 1.0 are positions, not 0.4955 and 0.99).
    """
    span = high - low
    anchors = [value for value in (low, default, high) if value is not None]
    for exponent in range(3, -7, -1):
        for mantissa in (5, 2, 1):
            step = round(mantissa * 10.0**exponent, 10)
            if span / step >= 50 and all(_on_grid(value, step) for value in anchors):
                return step
    return span / 100


def _on_grid(value: float, step: float) -> bool:
    ratio = value / step
    return abs(ratio - round(ratio)) < 1e-9


@dataclass
class _Column:
    """One streamed output: its stream, its text so far, and the time from the run's start to its last token."""

    name: str
    stream: GenerationStream
    text: str = ""
    seconds: float = 0.0
    done: bool = False
    result: GenerationResult | None = field(default=None)

    @property
    def tokens(self) -> int:
        return self.stream.generated_tokens

    def note(self) -> str:
        rate = self.tokens / self.seconds if self.seconds > 0 else 0.0
        finish = f", {self.result.finish_reason}" if self.result is not None else ""
        return f"{self.name}: {self.tokens} tokens, {rate:.1f} tokens/s{finish}"


class TuningPanel:
    """An ipywidgets panel over one ``AlignedLLM`` to tune a method and see what it changed.

    Display it as the last expression of a cell (or ``display(panel)``). ``llm`` defaults to
    the bundled model. ``baseline`` is the left column: ``"vanilla"`` (the prompt alone),
    ``"direct"`` (the principle/profile in context, decoded plainly) or ``"none"``. The
    widgets are attributes (``method``, ``beta``, ``rho``, ``k``, ``alpha``, ``temperature``,
    ``top_p``, ``max_new_tokens``, ``seed``, ``prompt``, ``principle``, ``profile``,
    ``generate_button``, ``stop_button``, …), so code can set them; :meth:`wait` joins the
    worker; ``result``/``baseline_result`` hold the last run's results, ``state`` says how it
    ended and ``last_error`` holds the exception an ``"error"`` state shows.
    """

    def __init__(
        self,
        llm: AlignedLLM | None = None,
        *,
        prompt: str = "Tell me about the moon.",
        principle: str = "Be extremely brief: answer in at most ten words.",
        profile: str = "",
        method: str = "opad",
        baseline: Baseline = "vanilla",
        max_new_tokens: int = 48,
    ) -> None:
        """Build the widgets (loading the bundled model when ``llm`` is None)."""
        widgets = _ipywidgets()
        if llm is None:
            from aligned_llm.llm import AlignedLLM

            llm = AlignedLLM.default()
        self.llm = llm
        self.state: PanelState = "idle"
        self.result: GenerationResult | None = None
        self.baseline_result: GenerationResult | None = None
        self.last_error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self._columns: list[_Column] = []

        methods = llm.available_methods()
        wide = widgets.Layout(width="100%")
        slider_style = {"description_width": "110px"}
        self.method = widgets.Dropdown(options=methods, value=method, description="method", style=slider_style)
        self.baseline = widgets.Dropdown(
            options=[("vanilla (prompt only)", "vanilla"), ("direct prompting", "direct"), ("none", "none")],
            value=baseline, description="compare with", style=slider_style,
        )  # fmt: skip
        self.controls: dict[str, Any] = {
            name: _control(widgets, name, declarations, slider_style)
            for name, declarations in method_parameters().items()
        }
        """A control per registered method parameter, by name (also attributes: ``panel.beta``, ``panel.k``, …)."""
        for name, control in self.controls.items():
            if not hasattr(self, name):
                setattr(self, name, control)
        self.temperature = widgets.FloatSlider(value=0.0, min=0.0, max=2.0, step=0.05, description="temperature",
                                               style=slider_style)  # fmt: skip
        self.top_p = widgets.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p",
                                         style=slider_style)  # fmt: skip
        self.max_new_tokens = widgets.IntSlider(value=max_new_tokens, min=1, max=512, description="max tokens",
                                                style=slider_style)  # fmt: skip
        self.seed = widgets.IntText(value=0, description="seed", style=slider_style)
        self.prompt = widgets.Textarea(value=prompt, description="prompt", layout=wide, style=slider_style)
        self.principle = widgets.Textarea(value=principle, description="principle", layout=wide, style=slider_style)
        self.profile = widgets.Textarea(value=profile, description="user profile", layout=wide, style=slider_style,
                                        placeholder="PAD: e.g. 'A beginner who likes examples.'")  # fmt: skip
        self.generate_button = widgets.Button(description="Generate", button_style="primary", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="warning", icon="stop", disabled=True)
        self.status = widgets.HTML(value="ready")
        self.error = widgets.HTML(value="", layout=widgets.Layout(display="none"))
        self.baseline_title = widgets.HTML()
        self.aligned_title = widgets.HTML()
        self.baseline_output = widgets.HTML(layout=widgets.Layout(width="50%"))
        self.aligned_output = widgets.HTML(layout=widgets.Layout(width="50%"))
        self.plot = widgets.Image(format="png", layout=widgets.Layout(display="none", max_width="100%"))

        self.method.observe(self._on_settings_change, names="value")
        self.temperature.observe(self._on_settings_change, names="value")
        self.baseline.observe(self._on_settings_change, names="value")
        self.generate_button.on_click(lambda _button: self.generate())
        self.stop_button.on_click(lambda _button: self.stop())

        sliders = widgets.VBox([self.method, *self.controls.values()])
        sampling = widgets.VBox([self.baseline, self.temperature, self.top_p, self.max_new_tokens, self.seed])
        outputs = widgets.HBox([
            widgets.VBox([self.baseline_title, self.baseline_output], layout=widgets.Layout(width="50%")),
            widgets.VBox([self.aligned_title, self.aligned_output], layout=widgets.Layout(width="50%")),
        ])  # fmt: skip
        for column in outputs.children:
            column.children[1].layout.width = "100%"
        from aligned_llm.sweeps.panel import SweepView

        self.sweep = SweepView(self, widgets, [prompt, *(p for p in SWEEP_PROMPTS if p != prompt)])
        """The sweep view: a grid over the method's parameters on several prompts, its plot and points."""
        self.sweep_section = widgets.Accordion(children=[self.sweep.widget], titles=("Sweep: try a grid of settings",))
        self.widget = widgets.VBox([
            widgets.HTML(f"<b>aligned-llm</b> · {html.escape(str(llm.name))}"),
            widgets.HBox([sliders, sampling]),
            self.prompt, self.principle, self.profile,
            widgets.HBox([self.generate_button, self.stop_button, self.status]),
            self.error, outputs, self.plot, self.sweep_section,
        ])  # fmt: skip
        self._on_settings_change()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # --- settings -------------------------------------------------------------------------

    def _on_settings_change(self, _change: object = None) -> None:
        """Enable the controls the selected method reads; top-p and seed only when sampling."""
        used = parameters_of(self.method.value)
        for name, control in self.controls.items():
            control.disabled = name not in used
        sampling = self.temperature.value > 0
        self.top_p.disabled = not sampling
        self.seed.disabled = not sampling
        self.baseline_title.value = f"<b>{html.escape(self._baseline_label())}</b>"
        self.aligned_title.value = f"<b>{html.escape(self.method.value)}</b>"

    def _baseline_label(self) -> str:
        return {"vanilla": "vanilla (prompt only)", "direct": "direct prompting", "none": ""}[self.baseline.value]

    def settings(self) -> dict[str, Any]:
        """The ``stream`` settings the widgets hold now (only those the method reads, plus sampling)."""
        method = self.method.value
        used = parameters_of(method)
        settings: dict[str, Any] = {"method": method, "max_new_tokens": self.max_new_tokens.value}
        settings.update({name: control.value for name, control in self.controls.items() if name in used})
        settings.update(self._guidance())
        if self.temperature.value > 0:
            settings.update(temperature=self.temperature.value, top_p=self.top_p.value, seed=self.seed.value)
        return settings

    def _guidance(self) -> dict[str, str]:
        principle, profile = self.principle.value.strip(), self.profile.value.strip()
        return {name: value for name, value in (("principle", principle), ("profile", profile)) if value}

    def _baseline_settings(self, aligned: dict[str, Any]) -> dict[str, Any] | None:
        if self.baseline.value == "none":
            return None
        sampling = {key: aligned[key] for key in ("max_new_tokens", "temperature", "top_p", "seed") if key in aligned}
        if self.baseline.value == "direct":
            sampling.update(self._guidance())
        return {"method": "vanilla", **sampling}

    # --- running --------------------------------------------------------------------------

    def generate(self) -> None:
        """Start a run (what the Generate button does): check the settings, then decode on a worker."""
        if self.thread is not None and self.thread.is_alive():
            return
        self._show_error(None)
        prompt = self.prompt.value
        columns: list[_Column] = []
        try:
            settings = self.settings()
            columns.append(_Column(self.method.value, self.llm.stream(prompt, trace=True, **settings)))
            baseline = self._baseline_settings(settings)
            if baseline is not None:
                columns.insert(0, _Column(self._baseline_label(), self.llm.stream(prompt, **baseline)))
        except Exception as error:  # every failure belongs in the panel, not in a traceback
            for column in columns:
                column.stream.close()
            self._fail(error)
            return
        self.result = self.baseline_result = None
        self._columns = columns
        self.baseline_output.value = ""
        self.aligned_output.value = ""
        self.plot.layout.display = "none"
        self._set_running(True)
        self.state = "running"
        self.thread = threading.Thread(target=self._work, args=(columns,), name="aligned-llm-panel", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Cancel the run in progress (what the Stop button does); both columns end at their next step."""
        for column in self._columns:
            column.stream.cancel()

    def wait(self, timeout: float | None = None) -> PanelState:
        """Block until the worker has finished (tests and scripts); return the final state."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.state

    def _work(self, columns: list[_Column]) -> None:
        try:
            last_draw = 0.0
            for column in self._alternate(columns):
                now = time.perf_counter()
                if column.done or now - last_draw >= _UPDATE_EVERY_S:
                    self._draw(columns)
                    last_draw = now
            self._draw(columns)
            aligned = columns[-1]
            self.result = aligned.result
            self.baseline_result = columns[0].result if len(columns) == 2 else None
            if aligned.result is not None and aligned.result.trace is not None:
                self.aligned_output.value = token_html(aligned.result)
                self._show_plot(aligned.result)
            cancelled = any(c.result is not None and c.result.finish_reason == "cancelled" for c in columns)
            self.state = "cancelled" if cancelled else "done"
        except Exception as error:  # shown in the panel: the notebook cell must not hang
            for column in columns:
                column.stream.cancel()
                column.stream.close()
            self._fail(error)
        finally:
            self._set_running(False)

    def _alternate(self, columns: list[_Column]) -> Iterator[_Column]:
        """Advance the unfinished streams in turn, one text delta each; yield the column that moved."""
        started = time.perf_counter()
        while not all(column.done for column in columns):
            for column in columns:
                if column.done:
                    continue
                try:
                    column.text += next(column.stream)
                except StopIteration:
                    column.done = True
                    column.result = column.stream.result
                column.seconds = time.perf_counter() - started
                yield column

    def _draw(self, columns: list[_Column]) -> None:
        outputs = [self.aligned_output] if len(columns) == 1 else [self.baseline_output, self.aligned_output]
        for output, column in zip(outputs, columns, strict=True):
            output.value = f'<div style="{_TEXT_STYLE}">{html.escape(column.text)}</div>'
        self.status.value = html.escape(" · ".join(column.note() for column in reversed(columns)))

    def _show_plot(self, result: GenerationResult) -> None:
        figure = signal_figure(result)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
        self.plot.value = buffer.getvalue()
        self.plot.layout.display = ""

    def _set_running(self, running: bool) -> None:
        self.generate_button.disabled = running
        self.stop_button.disabled = not running

    def _fail(self, error: BaseException) -> None:
        self.state = "error"
        self._show_error(error)
        self.status.value = "error"

    def _show_error(self, error: BaseException | None) -> None:
        self.last_error = error
        if error is None:
            self.error.value = ""
            self.error.layout.display = "none"
            return
        self.error.value = (
            '<div style="color: #a50026; background: #fde0dc; border: 1px solid #f4a582; padding: 6px; '
            f'border-radius: 3px"><b>{html.escape(type(error).__name__)}</b>: {html.escape(str(error))}</div>'
        )
        self.error.layout.display = ""
