"""Fixtures: tiny random models saved as local folders (fast), an engine spy, and the bundled model."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aligned_llm import AlignedLLM
from aligned_llm.loading import BUNDLED_NAME, bundled_model_dir
from aligned_llm.testing import build_tiny_model
from transformers import AutoTokenizer

from langchain_aligned_llm.registry import set_max_shared_models, shared_llm


@pytest.fixture(scope="session", autouse=True)
def keep_the_fixture_models_loaded():
    """The fixtures share three models by name (tiny, other, bundled) and spy on them by identity: keep all."""
    set_max_shared_models(8)
    yield
    set_max_shared_models(None)


@pytest.fixture(scope="session")
def lc_tokenizer():
    return AutoTokenizer.from_pretrained(bundled_model_dir(), local_files_only=True)


TOOLS_CONTEXT_WINDOW = 1024
"""Tool prompts (the library's tool instructions and the specs) need more than the tiny models' 256 tokens."""


def _save_tiny(folder: Path, tokenizer, seed: int, context_window: int | None = None) -> str:
    model = build_tiny_model(seed=seed, vocab_size=len(tokenizer))
    if context_window is not None:
        model.config.max_position_embeddings = context_window  # rotary positions: the weights do not change
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, lc_tokenizer) -> str:
    """A tiny random Llama with the SmolLM2 tokenizer, as a model folder LangChain objects name."""
    return _save_tiny(tmp_path_factory.mktemp("lc-tiny-a"), lc_tokenizer, seed=0)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory, lc_tokenizer) -> str:
    """A second tiny model (other weights), for per-call ``model=`` overrides."""
    return _save_tiny(tmp_path_factory.mktemp("lc-tiny-b"), lc_tokenizer, seed=1)


@pytest.fixture(scope="session")
def tools_model_dir(tmp_path_factory, lc_tokenizer) -> str:
    """The first tiny model's weights with a 1024-token window, for tool-calling and structured-output tests."""
    folder = tmp_path_factory.mktemp("lc-tiny-tools")
    return _save_tiny(folder, lc_tokenizer, seed=0, context_window=TOOLS_CONTEXT_WINDOW)


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
