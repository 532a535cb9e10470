"""Tool formats per model family, and which one a chat template asks for.

``tool_format=None`` (the default) detects the format from the chat template's source;
``"hermes"``, ``"llama3"``, ``"mistral"``, ``"qwen3"`` or ``"generic"`` choose one. A family's
format other than the template's own is refused (the model was trained on its own); the
library's ``generic`` format suits every template, and ``hermes`` is also rendered by the
library for templates without a tools branch (the library's behaviour before ``generic``).
"""

from __future__ import annotations

from aligned_llm.answer.formats.base import ToolFormat
from aligned_llm.answer.formats.generic import GenericFormat
from aligned_llm.answer.formats.hermes import HermesFormat
from aligned_llm.answer.formats.llama3 import Llama3Format
from aligned_llm.answer.formats.mistral import MistralFormat
from aligned_llm.answer.formats.qwen3 import Qwen3Format
from aligned_llm.errors import InvalidSettingError

NATIVE_FORMATS: tuple[type[ToolFormat], ...] = (MistralFormat, Llama3Format, Qwen3Format, HermesFormat)
"""Detected in this order (Qwen3-Coder templates also mention ``<tool_call>``)."""
TOOL_FORMATS: tuple[str, ...] = (*(cls.name for cls in NATIVE_FORMATS), GenericFormat.name)

__all__ = ["TOOL_FORMATS", "ToolFormat", "detect_format", "resolve_format"]


def detect_format(template: str | None) -> str:
    """The format a chat template renders tools in: a family's name, or ``"generic"`` without a tools branch."""
    if not template or "tools" not in template:
        return GenericFormat.name
    return next((cls.name for cls in NATIVE_FORMATS if cls.matches(template)), GenericFormat.name)


def resolve_format(requested: str | None, template: str | None) -> ToolFormat:
    """The format to use: ``requested`` (checked against the template) or the detected one."""
    detected = detect_format(template)
    name = requested or detected
    if name not in TOOL_FORMATS:
        raise InvalidSettingError("tool_format", f"must be None (detect) or one of {list(TOOL_FORMATS)}, got {name!r}")
    if name == GenericFormat.name:
        return GenericFormat()
    if name == HermesFormat.name and detected == GenericFormat.name:
        return HermesFormat(template_renders=False)
    if name != detected:
        raise InvalidSettingError(
            "tool_format",
            f"{name!r} contradicts the chat template, which renders tools in the {detected!r} format; "
            f"use {detected!r} (or None to detect it) or 'generic'",
        )
    return next(cls for cls in NATIVE_FORMATS if cls.name == name)()
