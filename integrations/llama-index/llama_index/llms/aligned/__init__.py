"""LlamaIndex integration of aligned-llm: ``AlignedHF``, an LLM aligned at decoding time."""

from __future__ import annotations

from llama_index.llms.aligned.base import AlignedHF
from llama_index.llms.aligned.tokenizer import model_tokenizer

__all__ = ["AlignedHF", "model_tokenizer"]
