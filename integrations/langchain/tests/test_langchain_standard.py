"""LangChain's standard conformance suites for ChatAlignedLLM, offline, with tool calling and structured output on.

The unit suite runs on a tiny random model. The integration suite runs on the bundled
SmolLM2: its tool-calling tests check argument values (``magic_function(3)`` must be called
with ``{"input": 3}``), which only a real model can get right; the grammar makes every call
and object valid. The suites skip only what does not apply to a local text model (images,
audio, video, PDFs, Anthropic-format inputs), each with the suite's own reason.
"""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_aligned_llm import ChatAlignedLLM


class _Capabilities:
    """What ChatAlignedLLM implements; the model-override value is the second tiny model's folder."""

    override_dir: str

    @pytest.fixture(autouse=True)
    def _override_folder(self, other_model_dir):
        type(self).override_dir = other_model_dir

    @property
    def chat_model_class(self) -> type[ChatAlignedLLM]:
        return ChatAlignedLLM

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return self.override_dir


class TestChatAlignedLLMStandardUnit(_Capabilities, ChatModelUnitTests):
    model_dir: str

    @pytest.fixture(autouse=True)
    def _tiny_model_folder(self, tiny_model_dir):
        type(self).model_dir = tiny_model_dir

    @property
    def chat_model_params(self) -> dict:
        return {"model": self.model_dir, "device": "cpu"}


@pytest.mark.bundled
class TestChatAlignedLLMStandardIntegration(_Capabilities, ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _bundled_model(self, bundled):
        """Load the bundled model once (the class names it; every instance shares it)."""

    @property
    def chat_model_params(self) -> dict:
        """The bundled 135M model loops inside JSON strings ("A cat is a cat, a cat is a cat, …") until
        ``max_tokens``; OpenAI's frequency penalty breaks the loop, as a user of a small model would set it."""
        return {"device": "cpu", "max_tokens": 96, "frequency_penalty": 0.6}
