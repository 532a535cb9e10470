"""The panel's sweep view, driven headlessly; and the sliders landing on the values users want."""

from __future__ import annotations

import html

import matplotlib
import pytest

from aligned_llm import TuningPanel
from aligned_llm.widgets import slider_step

matplotlib.use("Agg")

PRINCIPLE = "Answer like a pirate."
PROMPTS = "Tell me about the moon.\nName three rivers."


def _panel(llm, **values) -> TuningPanel:
    panel = TuningPanel(llm, prompt="Tell me about the moon.", principle=PRINCIPLE, max_new_tokens=6)
    for name, value in values.items():
        getattr(panel, name).value = value
    panel.sweep.prompts.value = PROMPTS
    return panel


def _positions(slider) -> float:
    return (slider.value - slider.min) / slider.step


@pytest.mark.parametrize(("low", "high", "default", "step"),
                         [(0.05, 5.0, 1.0, 0.05), (0.0, 10.0, 2.0, 0.2), (0.01, 1.0, 0.1, 0.01),
                          (0.05, 1.0, 0.8, 0.01), (0.0, 5.0, 1.0, 0.1), (0.3, 0.7, 0.5, 0.005),
                          (0.05, 5.0, 0.33, 0.01)])  # fmt: skip
def test_slider_steps_put_the_default_on_the_grid(low, high, default, step):
    assert slider_step(low, high, default) == step


def test_the_beta_slider_selects_the_default_and_one_half_exactly(tiny_llm):
    panel = _panel(tiny_llm)
    assert panel.beta.value == 1.0 and panel.beta.step == 0.05 and panel.beta.min == 0.05
    for value in (1.0, 0.5, 2.0):
        panel.beta.value = value
        assert panel.beta.value == value
        assert _positions(panel.beta) == pytest.approx(round(_positions(panel.beta)), abs=1e-9), value
    for name, control in panel.controls.items():
        if type(control).__name__ == "FloatSlider":
            assert _positions(control) == pytest.approx(round(_positions(control)), abs=1e-9), name


def test_a_sweep_runs_plots_and_loads_a_point_into_the_panel(tiny_llm):
    panel = _panel(tiny_llm, method="opad")
    view = panel.sweep
    view.grid["beta"].value = "0.5, 2"
    view.check.value, view.check_argument.value = "max-words", "5"
    assert view.grid["beta"].layout.display == "" and view.grid["rho"].layout.display == "none"
    view.run_button.click()
    assert view.wait(60) == "done", panel.error.value
    assert view.progress.value == view.progress.max == 3
    assert bytes(view.plot.value).startswith(b"\x89PNG") and view.plot.layout.display != "none"
    labels = [label for label, _index in view.points.options]
    assert len(labels) == 3 and any(label.startswith("★") for label in labels)
    assert "opad β=0.5: adherence" in labels[0] and "direct prompting" in labels[2]
    result = view.result
    assert [r.adherence for r in result.records] == [float(0 < len(r.text.split()) <= 5) for r in result.records]
    expected = tiny_llm.generate(PROMPTS.splitlines(), method="opad", beta=2.0, principle=PRINCIPLE, max_new_tokens=6)
    assert [r.result.token_ids for r in result.point("opad β=2").records] == [e.token_ids for e in expected]
    assert "Pareto front" in view.status.value and not view.run_button.disabled and view.stop_button.disabled

    view.select(0)
    assert "opad β=0.5" in view.answers.value and view.answers.value.count("aligned-llm-token-view") == 2
    assert html.escape("Name three rivers.") in view.answers.value
    panel.beta.value = 1.0
    view.load_button.click()
    assert panel.method.value == "opad" and panel.beta.value == 0.5
    view.select(2)
    view.load()
    assert panel.method.value == "vanilla", "direct prompting is the plain method with the principle"

    other = TuningPanel(tiny_llm, max_new_tokens=6)
    other.sweep.show(result)  # a sweep run elsewhere (in code) browsed in another panel
    assert other.sweep.points.options == view.points.options and other.sweep.state == "done"
    assert bytes(other.sweep.plot.value).startswith(b"\x89PNG") and "token-view" in other.sweep.answers.value


def test_the_sweep_reads_the_panels_other_settings(tiny_llm, monkeypatch):
    calls = []
    real = tiny_llm.submit
    monkeypatch.setattr(tiny_llm, "submit", lambda prompts, **s: calls.append(s) or real(prompts, **s))
    panel = _panel(tiny_llm, method="pad", profile="A sailor.", k=5, temperature=0.5, seed=3)
    panel.sweep.grid["beta"].value = "0, 1"
    panel.sweep.grid["k"].value = ""
    panel.sweep.direct.value = False
    panel.sweep.run()
    assert panel.sweep.wait(60) == "done", panel.error.value
    common = {"method": "pad", "k": 5, "pad_base": "profiled", "max_new_tokens": 6, "principle": PRINCIPLE,
              "profile": "A sailor.", "temperature": 0.5, "top_p": 1.0, "seed": 3, "trace": True}  # fmt: skip
    assert calls == [{**common, "beta": 0.0}, {**common, "beta": 1.0}]
    assert panel.sweep.result.adherence_name == "principle gain (model)"


@pytest.mark.parametrize(
    ("changes", "parameter"),
    [({"beta": "1, -1"}, "beta"), ({"beta": "1,,2"}, "beta"), ({"beta": "one"}, "beta"), ({"beta": ""}, "grid"),
     ({"prompts": "  \n"}, "prompts"), ({"check": "max-words"}, "adherence")],
    ids=["negative", "empty-value", "not-a-number", "no-grid", "no-prompts", "checker-without-argument"],
)  # fmt: skip
def test_bad_sweep_input_shows_in_the_panel_and_runs_nothing(tiny_llm, changes, parameter):
    panel = _panel(tiny_llm, method="opad")
    view = panel.sweep
    for name, value in changes.items():
        widget = view.grid[name] if name in view.grid else getattr(view, name)
        widget.value = value
    view.run_button.click()
    assert view.state == "error" and view.thread is None
    assert panel.last_error.parameter == parameter and f"{parameter}:" in panel.error.value
    assert panel.error.layout.display != "none" and not view.run_button.disabled


def test_stop_ends_the_sweep_and_keeps_what_was_decoded(tiny_llm):
    panel = _panel(tiny_llm, method="opad", max_new_tokens=200)
    view = panel.sweep
    view.grid["beta"].value = "0.5, 1, 2"
    view.run_button.click()
    assert view.state == "running" and view.run_button.disabled and not view.stop_button.disabled
    view.stop_button.click()
    assert view.wait(60) == "stopped", panel.error.value
    assert view.result.stopped and all(r.result.output_tokens < 200 for r in view.result.records)
    assert "stopped" in view.status.value and not view.run_button.disabled


def test_a_finished_sweep_opens_on_the_most_adherent_fluent_point_of_the_front():
    from aligned_llm.sweeps.grid import SweepPoint
    from aligned_llm.sweeps.panel import first_choice
    from aligned_llm.sweeps.records import PointSummary, SweepResult

    def summary(index, adherence, perplexity, pareto):
        point = SweepPoint(index, "opad", {"beta": float(index)})
        return PointSummary(point, [], adherence, perplexity, pareto=pareto)

    broken, useful, fluent, dominated = (summary(0, 1.0, 300.0, True), summary(1, 0.67, 9.9, True),
                                         summary(2, 0.0, 2.5, True), summary(3, 0.0, 4.2, False))  # fmt: skip
    assert first_choice(SweepResult([], [broken, useful, fluent, dominated], "x", 1.0)) == 1
    assert first_choice(SweepResult([], [summary(0, 0.5, 3.0, False)], "x", 1.0)) == 0
