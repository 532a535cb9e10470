"""The tuning panel's sweep view: a grid and prompts, Run with a progress bar and Stop, the plot, pick a point.

Built by :class:`~aligned_llm.widgets.TuningPanel` (``panel.sweep``), it reads the panel's
method, principle, profile and sampling settings. One text box per method parameter takes the
values to try (comma-separated; empty: not swept); the prompts box takes one prompt per line;
adherence is a built-in checker or the principle-gain proxy. **Run** checks everything on the
calling thread (a bad value shows in the panel's error area and nothing runs), then a worker
waits for the sweep, moving the progress bar as points finish. The plot shows adherence
against perplexity with the Pareto front; the point first chosen is the most adherent one on
the front within 5× the front's lowest perplexity (not the broken text a too-strong setting
can score best with); choosing a point in the list rings it on the plot
and shows its answers as token views, and **Load into panel** sets the panel's controls to it.
"""

from __future__ import annotations

import html
import io
import threading
from typing import TYPE_CHECKING, Any, Literal

from aligned_llm.errors import InvalidSettingError
from aligned_llm.registry import method_parameters
from aligned_llm.sweeps.checkers import CHECKER_FACTORIES, checker_from_spec
from aligned_llm.sweeps.grid import SYMBOLS
from aligned_llm.sweeps.plot import sweep_figure
from aligned_llm.sweeps.records import SweepResult
from aligned_llm.sweeps.runner import SweepRun, start_sweep
from aligned_llm.sweeps.scoring import PrincipleGain
from aligned_llm.token_view import token_html

if TYPE_CHECKING:
    from aligned_llm.widgets import TuningPanel

SweepState = Literal["idle", "running", "done", "stopped", "error"]

PROXY = "principle gain (model)"
SUGGESTED = {"beta": "0.5, 1, 2, 4", "rho": "1, 2, 4", "alpha": "0.05, 0.1, 0.2", "k": "5, 10, 20"}
"""The grid a new sweep view proposes for the built-in parameters."""
_TEXT_STYLE = "white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, Menlo, Consolas, monospace"


class SweepView:
    """The sweep widgets of one panel; ``widget`` is what the panel shows.

    The widgets are attributes (``grid`` by parameter name, ``prompts``, ``check``,
    ``check_argument``, ``direct``, ``run_button``, ``stop_button``, ``progress``, ``points``,
    ``load_button``, ``plot``, ``answers``); :meth:`run`, :meth:`stop`, :meth:`wait`,
    :meth:`select` and :meth:`load` do what the buttons and the list do, and :meth:`show`
    displays a sweep run in code. ``result`` holds the
    last :class:`~aligned_llm.sweeps.records.SweepResult` and ``state`` how the last run ended.
    """

    def __init__(self, panel: TuningPanel, widgets: Any, prompts: list[str]) -> None:
        self.panel = panel
        self.state: SweepState = "idle"
        self.result: SweepResult | None = None
        self.thread: threading.Thread | None = None
        self._run: SweepRun | None = None
        style = {"description_width": "110px"}
        wide = widgets.Layout(width="100%")
        hint = "comma-separated; empty: not swept"
        self.grid: dict[str, Any] = {
            name: widgets.Text(SUGGESTED.get(name, ""), description=f"{SYMBOLS.get(name, name)} values", style=style,
                               placeholder=hint)
            for name in method_parameters()
        }  # fmt: skip
        self.prompts = widgets.Textarea(value="\n".join(prompts), description="prompts", layout=wide, style=style,
                                        placeholder="one prompt per line")  # fmt: skip
        self.check = widgets.Dropdown(options=[PROXY, *CHECKER_FACTORIES], value=PROXY, description="adherence",
                                      style=style)  # fmt: skip
        self.check_argument = widgets.Text(value="", description="checker arg", placeholder="e.g. 10, fr, Sure",
                                           style=style)  # fmt: skip
        self.direct = widgets.Checkbox(value=True, description="add direct prompting", style=style)
        self.run_button = widgets.Button(description="Run sweep", button_style="primary", icon="th")
        self.stop_button = widgets.Button(description="Stop", button_style="warning", icon="stop", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="points", style=style)
        self.status = widgets.HTML(value="")
        self.plot = widgets.Image(format="png", layout=widgets.Layout(display="none", max_width="100%"))
        self.points = widgets.Select(options=[], description="point", rows=6, layout=wide, style=style)
        self.load_button = widgets.Button(description="Load into panel", icon="upload", disabled=True)
        self.answers = widgets.HTML(value="")
        self.run_button.on_click(lambda _button: self.run())
        self.stop_button.on_click(lambda _button: self.stop())
        self.load_button.on_click(lambda _button: self.load())
        self.points.observe(self._on_point, names="value")
        panel.method.observe(self._on_method, names="value")
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox(list(self.grid.values())),
                          widgets.VBox([self.check, self.check_argument, self.direct])]),
            self.prompts,
            widgets.HBox([self.run_button, self.stop_button, self.progress, self.status]),
            self.plot, widgets.HBox([self.points, self.load_button]), self.answers,
        ])  # fmt: skip
        self._on_method()

    def _on_method(self, _change: object = None) -> None:
        """Show the value boxes of the parameters the panel's method declares."""
        from aligned_llm.widgets import parameters_of

        used = parameters_of(self.panel.method.value)
        for name, box in self.grid.items():
            box.layout.display = "" if name in used else "none"

    # --- running --------------------------------------------------------------------------

    def sweep_arguments(self) -> dict[str, Any]:
        """What :meth:`run` passes to ``start_sweep``, from the widgets (errors name the bad box)."""
        from aligned_llm.widgets import parameters_of

        method = self.panel.method.value
        used = parameters_of(method)
        grid = {name: _values(name, box.value) for name, box in self.grid.items() if name in used and box.value.strip()}
        prompts = [line.strip() for line in self.prompts.value.splitlines() if line.strip()]
        if not prompts:
            raise InvalidSettingError("prompts", "the sweep needs at least one prompt (one per line)")
        settings = {key: value for key, value in self.panel.settings().items() if key != "method" and key not in grid}
        return {"prompts": prompts, "grid": grid, "method": method, "adherence": self._adherence(),
                "baselines": ("direct",) if self.direct.value else (), "trace": True, **settings}  # fmt: skip

    def _adherence(self) -> Any:
        if self.check.value == PROXY:
            return PrincipleGain()
        spec = self.check.value + (f":{self.check_argument.value.strip()}" if self.check_argument.value.strip() else "")
        try:
            return checker_from_spec(spec)
        except ValueError as error:
            raise InvalidSettingError("adherence", str(error)) from None

    def run(self) -> None:
        """Check the sweep and start it (what Run does); a bad value shows in the panel's error area."""
        if self.thread is not None and self.thread.is_alive():
            return
        self.panel._show_error(None)
        try:
            arguments = self.sweep_arguments()
            prompts, grid, method = arguments.pop("prompts"), arguments.pop("grid"), arguments.pop("method")
            self.progress.value, self.progress.max = 0, 1
            self._run = start_sweep(self.panel.llm, prompts, grid, method=method, on_progress=self._on_progress,
                                    **arguments)  # fmt: skip
        except Exception as error:  # shown in the panel, like the panel's own errors
            self.state = "error"
            self.panel._show_error(error)
            self.status.value = "error"
            return
        self.result = None
        self.points.options = []
        self.answers.value = ""
        self.progress.max = len(self._run.points)
        self.status.value = html.escape(f"{len(self._run.points)} points × {len(prompts)} prompts decoding together…")
        self._set_running(True)
        self.state = "running"
        self.thread = threading.Thread(target=self._work, args=(self._run,), name="aligned-llm-sweep", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Cancel the points still decoding (what Stop does); what was decoded is scored and shown."""
        if self._run is not None:
            self._run.stop()

    def wait(self, timeout: float | None = None) -> SweepState:
        """Block until the sweep's worker has finished; return how it ended."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.state

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = total
        self.progress.value = done

    def _work(self, run: SweepRun) -> None:
        try:
            self.show(run.result())
        except Exception as error:  # shown in the panel: the notebook cell must not hang
            run.stop()
            self.state = "error"
            self.panel._show_error(error)
            self.status.value = "error"
        finally:
            self._set_running(False)

    def show(self, result: SweepResult) -> None:
        """Show a finished sweep (this view's, or one run in code with ``sweep``): plot, points, one chosen."""
        self.result = result
        self.points.options = [(_option(point), point.point.index) for point in result.points]
        first = first_choice(result)
        self._draw_plot(first)
        self.points.value = first
        self.load_button.disabled = False
        self.state = "stopped" if result.stopped else "done"
        front = ", ".join(point.label for point in result.front) or "none (stopped)"
        self.status.value = html.escape(f"{self.state} in {result.seconds:.1f} s · Pareto front: {front}")

    def _set_running(self, running: bool) -> None:
        self.run_button.disabled = running
        self.stop_button.disabled = not running

    # --- reading a point ------------------------------------------------------------------

    def select(self, index: int) -> None:
        """Choose point ``index`` (what picking it in the list does): ring it, show its answers."""
        self.points.value = index

    def _on_point(self, change: dict[str, Any]) -> None:
        if self.result is None or change["new"] is None:
            return
        summary = self.result.point(change["new"])
        self._draw_plot(summary.point.index)
        parts = [f"<p><b>{html.escape(summary.label)}</b>: adherence {summary.adherence:.3f}, perplexity "
                 f"{summary.perplexity:.2f}, repetition {summary.repetition:.3f}</p>"]  # fmt: skip
        for record in summary.records:
            body = token_html(record.result) if record.result.trace else (
                f'<div style="{_TEXT_STYLE}">{html.escape(record.text)}</div>'
            )  # fmt: skip
            parts.append(f"<p><i>{html.escape(str(record.prompt))}</i> · adherence {record.adherence}</p>{body}")
        self.answers.value = "".join(parts)

    def load(self, index: int | None = None) -> None:
        """Set the panel's method and controls to point ``index`` (default: the chosen one)."""
        if self.result is None:
            return
        point = self.result.point(self.points.value if index is None else index).point
        panel = self.panel
        panel.method.value = point.method
        for name, value in point.values.items():
            control = panel.controls.get(name) or getattr(panel, name)
            control.value = value
        if point.kind == "direct":
            panel.baseline.value = "vanilla"

    def _draw_plot(self, selected: int | None) -> None:
        assert self.result is not None
        figure = sweep_figure(self.result, selected=selected)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90)
        self.plot.value = buffer.getvalue()
        self.plot.layout.display = ""


FLUENCY_GUARD = 5.0
"""The point a finished sweep first shows is within this factor of the front's lowest perplexity."""


def first_choice(result: SweepResult) -> int:
    """The index of the point a finished sweep shows first.

    The most adherent point on the front whose perplexity is within :data:`FLUENCY_GUARD` × the
    front's lowest (so broken text is not what a sweep opens on); the first point when nothing
    is on the front.
    """
    front = result.front
    if not front:
        return result.points[0].point.index
    limit = FLUENCY_GUARD * front[0].perplexity
    return max((p for p in front if p.perplexity <= limit), key=lambda p: p.adherence).point.index


def _values(name: str, text: str) -> list[Any]:
    """A box's comma-separated values, converted by the parameter's declaration (ranges: the sweep checks them)."""
    parameter = method_parameters()[name][0][1]
    values = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise InvalidSettingError(name, f"grid values {text!r} hold an empty value")
        values.append(parameter.convert(item))
    return values


def _option(point: Any) -> str:
    mark = "★ " if point.pareto else "   "
    return f"{mark}{point.label}: adherence {point.adherence:.3f}, perplexity {point.perplexity:.2f}"
