"""Fixtures: the tiny model folders LangChain objects name, an engine spy, and the bundled model.

The folders come from ``aligned_llm.pytest_plugin`` (loaded by ``addopts``), shared with the other suites.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from aligned_llm import AlignedLLM
from aligned_llm.loading import BUNDLED_NAME
from aligned_llm.testing import save_tiny_model

from langchain_aligned_llm.registry import set_max_shared_models, shared_llm


@pytest.fixture(scope="session", autouse=True)
def keep_the_fixture_models_loaded():
    """The fixtures share three models by name (tiny, other, bundled) and spy on them by identity: keep all."""
    set_max_shared_models(8)
    yield
    set_max_shared_models(None)


@pytest.fixture(scope="session")
def lc_tokenizer(tokenizer):
    """The bundled SmolLM2's tokenizer (``aligned_llm.pytest_plugin``'s ``tokenizer``)."""
    return tokenizer


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dir) -> str:
    """A tiny random Llama with the SmolLM2 tokenizer, as a model folder LangChain objects name."""
    return str(tiny_dir)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory, tokenizer) -> str:
    """A second tiny model (other weights), for per-call ``model=`` overrides."""
    return str(save_tiny_model(tmp_path_factory.mktemp("lc-tiny-b"), seed=1, tokenizer=tokenizer))


@pytest.fixture(scope="session")
def tools_model_dir(tiny_wide_dir) -> str:
    """The first tiny model's weights with a window wide enough for tool-calling and structured-output prompts."""
    return str(tiny_wide_dir)


@pytest.fixture(scope="session")
def tools_tiny(tools_model_dir) -> AlignedLLM:
    """The shared AlignedLLM every ``ChatAlignedLLM(model=tools_model_dir, device="cpu")`` uses."""
    return shared_llm(tools_model_dir, {"device": "cpu"})


@pytest.fixture(scope="session")
def tiny(tiny_model_dir) -> AlignedLLM:
    """The shared AlignedLLM every ``ChatAlignedLLM(model=tiny_model_dir, device="cpu")`` uses."""
    return shared_llm(tiny_model_dir, {"device": "cpu"})


@dataclass
class EngineCall:
    """One call into the core, as the adapter made it."""

    api: str
    prompt: Any
    settings: dict[str, Any]

    @property
    def batch_size(self) -> int:
        return len(self.prompt) if isinstance(self.prompt, list) and not isinstance(self.prompt[0], dict) else 1


@dataclass
class EngineSpy:
    """Records every ``generate``/``stream`` call on one AlignedLLM, then lets it run."""

    calls: list[EngineCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, api: str, prompt: Any, settings: dict[str, Any]) -> None:
        with self.lock:
            self.calls.append(EngineCall(api, prompt, dict(settings)))


def spy_on(llm: AlignedLLM, monkeypatch: pytest.MonkeyPatch) -> EngineSpy:
    """Record the calls into ``llm`` for the rest of the test."""
    recorder = EngineSpy()
    real_generate, real_stream = llm.generate, llm.stream

    def generate(prompt, **settings):
        recorder.record("generate", prompt, settings)
        return real_generate(prompt, **settings)

    def stream(prompt, **settings):
        recorder.record("stream", prompt, settings)
        return real_stream(prompt, **settings)

    monkeypatch.setattr(llm, "generate", generate)
    monkeypatch.setattr(llm, "stream", stream)
    return recorder


@pytest.fixture
def spy(tiny, monkeypatch) -> EngineSpy:
    return spy_on(tiny, monkeypatch)


@pytest.fixture
def tools_spy(tools_tiny, monkeypatch) -> EngineSpy:
    return spy_on(tools_tiny, monkeypatch)


@pytest.fixture(scope="session")
def bundled() -> AlignedLLM:
    """The bundled SmolLM2, as ``ChatAlignedLLM(device="cpu")`` (no model named) loads and shares it."""
    return shared_llm(BUNDLED_NAME, {"device": "cpu"})
