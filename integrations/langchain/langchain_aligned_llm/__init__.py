"""LangChain integration of aligned-llm: ``ChatAlignedLLM`` (chat model) and ``AlignedLLMText`` (text LLM)."""

from __future__ import annotations

from langchain_aligned_llm.chat_models import ChatAlignedLLM
from langchain_aligned_llm.llms import AlignedLLMText
from langchain_aligned_llm.registry import max_shared_models, set_max_shared_models

__all__ = ["AlignedLLMText", "ChatAlignedLLM", "max_shared_models", "set_max_shared_models"]
