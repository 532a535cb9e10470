"""The tuning panel, driven headlessly: set widget values, click, join the worker, read the widgets."""

from __future__ import annotations

import html
import threading

import matplotlib
import pytest

from aligned_llm import NonFiniteLogitsError, TuningPanel

matplotlib.use("Agg")

PROMPT = "Write a long story about a lighthouse keeper."
PRINCIPLE = "Answer like a pirate."


class StreamSpy:
    """Replaces ``llm.stream`` on one instance: records each call, and can wrap the streams it returns."""

    def __init__(self, llm, monkeypatch, wrap=None):
        self.calls: list[dict] = []
        self._real = llm.stream
        self._wrap = wrap
        monkeypatch.setattr(llm, "stream", self)

    def __call__(self, prompt, **settings):
        self.calls.append({"prompt": prompt, **settings})
        stream = self._real(prompt, **settings)
        return self._wrap(stream, settings) if self._wrap else stream


class GatedStream:
    """A stream that pauses after its first text delta until ``release`` is set (to stop it mid-run)."""

    def __init__(self, stream, started: threading.Event, release: threading.Event):
        self._stream, self._started, self._release = stream, started, release

    def __iter__(self):
        return self

    def __next__(self):
        delta = next(self._stream)
        if not self._started.is_set():
            self._started.set()
            assert self._release.wait(10)
        return delta

    def __getattr__(self, name):
        return getattr(self._stream, name)


class FailingStream(GatedStream):
    """A stream whose model fails after the first delta."""

    def __next__(self):
        if self._started.is_set():
            raise NonFiniteLogitsError("the model returned NaN or infinite logits at step 1")
        self._started.set()
        return next(self._stream)


def _panel(llm, **values) -> TuningPanel:
    panel = TuningPanel(llm, prompt=PROMPT, principle=PRINCIPLE, max_new_tokens=10)
    for name, value in values.items():
        getattr(panel, name).value = value
    return panel


def _enabled(panel) -> set[str]:
    return {name for name in ("beta", "rho", "k", "alpha", "top_p", "seed") if not getattr(panel, name).disabled}


def test_generate_streams_both_columns_and_the_settings_reach_the_engine(tiny_llm, monkeypatch):
    spy = StreamSpy(tiny_llm, monkeypatch)
    panel = _panel(tiny_llm, method="opad", beta=0.5, opad_window="last", rho=7.0, max_new_tokens=12)
    assert panel.state == "idle" and not panel.generate_button.disabled and panel.stop_button.disabled
    panel.generate_button.click()
    assert panel.wait(30) == "done"
    aligned, baseline = spy.calls
    assert aligned == {"prompt": PROMPT, "method": "opad", "beta": 0.5, "opad_window": "last",
                       "principle": PRINCIPLE, "max_new_tokens": 12, "trace": True}  # fmt: skip
    assert baseline == {"prompt": PROMPT, "method": "vanilla", "max_new_tokens": 12}
    expected = tiny_llm.generate(
        PROMPT, method="opad", beta=0.5, opad_window="last", principle=PRINCIPLE, max_new_tokens=12
    )
    assert panel.result.method == "opad"
    assert panel.result.text == expected.text and panel.result.token_ids == expected.token_ids
    assert panel.baseline_result.text == tiny_llm.generate(PROMPT, max_new_tokens=12).text
    # the aligned column ends as the token view, the baseline column holds the baseline text
    assert panel.aligned_output.value.count('<span class="token"') == 12
    assert "aligned-llm-token-view" in panel.aligned_output.value
    assert html.escape(panel.baseline_result.text) in panel.baseline_output.value
    assert "tokens/s" in panel.status.value and "opad: 12 tokens" in panel.status.value
    assert "vanilla (prompt only): 12 tokens" in panel.status.value
    assert bytes(panel.plot.value).startswith(b"\x89PNG") and panel.plot.layout.display != "none"
    assert panel.error.layout.display == "none"
    assert not panel.generate_button.disabled and panel.stop_button.disabled


def test_sliders_are_enabled_only_for_the_methods_that_use_them(tiny_llm, tiny_pair_llm):
    panel = _panel(tiny_llm)
    assert "aad" not in panel.method.options, "AAD needs a DPO/SFT pair, which this model does not have"
    expected = {"vanilla": set(), "opad": {"beta"}, "linear": {"rho"}, "pad": {"beta", "k"}}
    for method, enabled in expected.items():
        panel.method.value = method
        assert _enabled(panel) == enabled, method
        assert panel.aligned_title.value == f"<b>{method}</b>"
    panel.temperature.value = 0.7
    assert _enabled(panel) == expected["pad"] | {"top_p", "seed"}
    pair_panel = _panel(tiny_pair_llm, method="aad")
    assert _enabled(pair_panel) == {"alpha"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"method": "pad", "profile": "A sailor.", "beta": 2.0, "k": 5, "principle": ""},
         {"method": "pad", "profile": "A sailor.", "beta": 2.0, "k": 5, "pad_base": "profiled"}),
        ({"method": "linear", "rho": 3.0, "temperature": 0.8, "top_p": 0.9, "seed": 7},
         {"method": "linear", "rho": 3.0, "mask_top_p": 0.8, "principle": PRINCIPLE, "temperature": 0.8,
          "top_p": 0.9, "seed": 7}),
    ],
    ids=["pad", "linear-sampled"],
)  # fmt: skip
def test_each_method_gets_its_own_settings(tiny_llm, monkeypatch, values, expected):
    spy = StreamSpy(tiny_llm, monkeypatch)
    panel = _panel(tiny_llm, baseline="direct", **values)
    panel.generate()
    assert panel.wait(30) == "done"
    aligned, baseline = spy.calls
    assert aligned == {"prompt": PROMPT, "max_new_tokens": 10, "trace": True, **expected}
    sampling = {key: expected[key] for key in ("temperature", "top_p", "seed") if key in expected}
    guidance = {key: expected[key] for key in ("principle", "profile") if key in expected}
    assert baseline == {"prompt": PROMPT, "method": "vanilla", "max_new_tokens": 10, **sampling, **guidance}
    assert panel.result.method == values["method"]


def test_aad_on_an_adapter_pair_without_a_baseline(tiny_pair_llm, monkeypatch):
    spy = StreamSpy(tiny_pair_llm, monkeypatch)
    panel = _panel(tiny_pair_llm, method="aad", alpha=0.2, baseline="none")
    panel.generate_button.click()
    assert panel.wait(30) == "done"
    assert [call["method"] for call in spy.calls] == ["aad"] and spy.calls[0]["alpha"] == 0.2
    assert panel.result.method == "aad" and panel.baseline_result is None
    assert panel.baseline_output.value == ""
    assert "log p[dpo]" in panel.aligned_output.value and "log p[sft]" in panel.aligned_output.value


def test_stop_ends_the_run_early(tiny_llm, monkeypatch):
    started, release = threading.Event(), threading.Event()
    StreamSpy(tiny_llm, monkeypatch, wrap=lambda stream, _: GatedStream(stream, started, release))
    panel = _panel(tiny_llm, method="opad", max_new_tokens=200)
    panel.generate_button.click()
    assert started.wait(30), panel.error.value or "no token was streamed"
    assert panel.state == "running" and panel.generate_button.disabled and not panel.stop_button.disabled
    panel.stop_button.click()
    release.set()
    assert panel.wait(10) == "cancelled"
    assert panel.result.finish_reason == "cancelled"
    assert panel.result.output_tokens < 200
    assert panel.baseline_result.finish_reason == "cancelled"
    assert "cancelled" in panel.status.value
    assert panel.aligned_output.value.count('<span class="token"') == panel.result.output_tokens
    assert not panel.generate_button.disabled and panel.stop_button.disabled


@pytest.mark.parametrize(
    ("values", "parameter"),
    [({"method": "opad", "principle": "  "}, "principle"), ({"prompt": "\ud800 hi"}, "prompt"),
     ({"method": "pad", "profile": ""}, "profile"), ({"prompt": "word " * 300}, "prompt")],
    ids=["opad-without-principle", "lone-surrogate", "pad-without-profile", "prompt-too-long"],
)  # fmt: skip
def test_a_bad_value_shows_an_error_and_generates_nothing(tiny_llm, values, parameter):
    panel = _panel(tiny_llm, **values)
    panel.generate_button.click()
    assert panel.state == "error"
    assert panel.thread is None, "no worker may start on invalid settings"
    assert panel.result is None and panel.aligned_output.value == ""
    assert panel.error.layout.display != "none"
    assert "InvalidSettingError" in panel.error.value or "PromptTooLongError" in panel.error.value
    assert f"{parameter}:" in panel.error.value
    assert panel.last_error.parameter == parameter
    assert not panel.generate_button.disabled, "the panel stays usable"
    # fixing the value clears the error and runs
    panel.principle.value, panel.beta.value, panel.profile.value, panel.prompt.value = PRINCIPLE, 1.0, "A sailor.", "Hi"
    panel.generate_button.click()
    assert panel.wait(30) == "done"
    assert panel.error.layout.display == "none" and panel.error.value == "" and panel.last_error is None


def test_a_model_error_during_decoding_shows_in_the_panel(tiny_llm, monkeypatch):
    started = threading.Event()
    StreamSpy(tiny_llm, monkeypatch, wrap=lambda stream, _: FailingStream(stream, started, threading.Event()))
    panel = _panel(tiny_llm, method="opad", baseline="none")
    panel.generate_button.click()
    assert panel.wait(30) == "error"
    assert "NonFiniteLogitsError" in panel.error.value and "NaN" in panel.error.value
    assert panel.status.value == "error"
    assert not panel.generate_button.disabled and panel.stop_button.disabled


def test_the_panel_displays_as_a_widget(tiny_llm):
    panel = _panel(tiny_llm)
    bundle = panel._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.widget.model_id
