"""One decode call into the core: the model, the ``generate``/``stream`` keywords, and results as LangChain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from aligned_llm import AlignedLLM, DecodeSettings, DecodingMethod, GenerationResult
from langchain_core.messages.ai import UsageMetadata

PROVIDER = "aligned_llm"
"""``response_metadata["model_provider"]`` and LangSmith's ``ls_provider``."""


@dataclass(frozen=True)
class DecodeCall:
    """A resolved model and the keyword arguments for its ``generate``/``stream`` (only the settings that were set).

    Not the server's ``aligned_llm.server.translate.CoreCall``, which is an HTTP request's.
    """

    llm: AlignedLLM
    settings: dict[str, Any]

    def usage(self, result: GenerationResult) -> UsageMetadata:
        """Token counts as LangChain's ``usage_metadata``."""
        return UsageMetadata(
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            total_tokens=result.input_tokens + result.output_tokens,
        )

    def metadata(self, result: GenerationResult) -> dict[str, Any]:
        """``response_metadata``: model, why it stopped, the method and every setting in effect (defaults included)."""
        metadata: dict[str, Any] = {
            "model_name": self.llm.name,
            "model_provider": PROVIDER,
            "finish_reason": result.finish_reason,
            "method": result.method,
            "settings": self.effective_settings(),
        }
        if result.trace is not None:
            metadata["trace"] = [asdict(token) for token in result.trace]
        return metadata

    def effective_settings(self) -> dict[str, Any]:
        """The core's full decoding settings for this call, as plain values."""
        decode = DecodeSettings(**{name: value for name, value in self.settings.items() if name != "trace"})
        return {name: _plain(value) for name, value in decode.items() if name != "trace"}


def _plain(value: object) -> object:
    if isinstance(value, DecodingMethod):
        return value.name
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value
