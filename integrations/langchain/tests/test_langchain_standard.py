"""LangChain's standard conformance suites for ChatAlignedLLM, run on a tiny local model (no network)."""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_aligned_llm import ChatAlignedLLM


class _TinyModel:
    """Points the suites at the tiny model folders; no tool calling, text only (the suites' defaults)."""

    model_dir: str
    override_dir: str

    @pytest.fixture(autouse=True)
    def _tiny_model_folders(self, tiny_model_dir, other_model_dir):
        type(self).model_dir = tiny_model_dir
        type(self).override_dir = other_model_dir

    @property
    def chat_model_class(self) -> type[ChatAlignedLLM]:
        return ChatAlignedLLM

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return self.override_dir


class TestChatAlignedLLMStandardUnit(_TinyModel, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict:
        return {"model": self.model_dir, "device": "cpu"}


class TestChatAlignedLLMStandardIntegration(_TinyModel, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict:
        return {"model": self.model_dir, "device": "cpu", "max_tokens": 16}
