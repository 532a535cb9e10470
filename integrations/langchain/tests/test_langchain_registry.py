"""Models loaded by name are shared, and at most ``max_shared_models()`` of them stay loaded (LRU)."""

from __future__ import annotations

import pytest
from aligned_llm import InvalidSettingError
from aligned_llm.testing import save_tiny_model

from langchain_aligned_llm import ChatAlignedLLM, max_shared_models, registry, set_max_shared_models
from langchain_aligned_llm.registry import MAX_MODELS_VARIABLE, loaded_llm

CPU = {"device": "cpu"}


@pytest.fixture
def isolated_registry():
    """This test's models only; the session's shared models and limit come back afterwards."""
    saved_models, saved_limit = dict(registry._loaded), registry._max_models
    registry._loaded.clear()
    yield
    registry._loaded.clear()
    registry._loaded.update(saved_models)
    registry._max_models = saved_limit


@pytest.fixture
def three_models(tmp_path, lc_tokenizer) -> list[str]:
    return [str(save_tiny_model(tmp_path / name, seed=seed, tokenizer=lc_tokenizer)) for seed, name in enumerate("abc")]


def _resident(models: list[str]) -> list[str]:
    return [name for name, model in zip("abc", models, strict=True) if loaded_llm(model, CPU) is not None]


def test_per_call_models_beyond_the_limit_evict_the_least_recently_used(isolated_registry, three_models):
    set_max_shared_models(2)
    a, b, c = three_models
    chat = ChatAlignedLLM(model=a, device="cpu", max_tokens=2)
    first_a = chat.invoke("Hi")
    chat.invoke("Hi", model=b)
    assert _resident(three_models) == ["a", "b"]
    chat.invoke("Hi")  # a is now the most recently used
    in_flight = loaded_llm(b, CPU)
    chat.invoke("Hi", model=c)
    assert _resident(three_models) == ["a", "c"], "b, the least recently used, is out"
    assert in_flight.generate("Hi", max_new_tokens=2).output_tokens == 2, "a held model still works"
    assert chat.invoke("Hi", model=b).response_metadata["model_name"] == b, "named again, it loads again"
    assert _resident(three_models) == ["b", "c"]
    assert chat.invoke("Hi").content == first_a.content


def test_lowering_the_limit_evicts_at_once(isolated_registry, three_models):
    set_max_shared_models(3)
    for model in three_models:
        ChatAlignedLLM(model=model, device="cpu", max_tokens=1).invoke("Hi")
    assert _resident(three_models) == ["a", "b", "c"]
    set_max_shared_models(1)
    assert _resident(three_models) == ["c"]


def test_the_limit_comes_from_the_environment_unless_set(isolated_registry, monkeypatch):
    set_max_shared_models(None)
    monkeypatch.delenv(MAX_MODELS_VARIABLE, raising=False)
    assert max_shared_models() == registry.DEFAULT_MAX_MODELS == 2
    monkeypatch.setenv(MAX_MODELS_VARIABLE, "5")
    assert max_shared_models() == 5
    set_max_shared_models(3)
    assert max_shared_models() == 3


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_limit_in_the_environment_is_named(isolated_registry, monkeypatch, value):
    set_max_shared_models(None)
    monkeypatch.setenv(MAX_MODELS_VARIABLE, value)
    with pytest.raises(InvalidSettingError) as raised:
        max_shared_models()
    assert raised.value.parameter == MAX_MODELS_VARIABLE


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "2"])
def test_a_bad_limit_is_named(isolated_registry, value):
    with pytest.raises(InvalidSettingError) as raised:
        set_max_shared_models(value)
    assert raised.value.parameter == "limit"
