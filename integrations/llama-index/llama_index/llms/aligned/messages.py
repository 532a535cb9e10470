"""LlamaIndex chat messages → the OpenAI-style messages the core renders with the chat template."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aligned_llm import InvalidSettingError
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock

from llama_index.llms.aligned.tools import core_tool_fields

_ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
}


def to_core_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Map roles and take the text (and tool calls and results); consecutive system messages become one.

    Chat engines add their own system message (retrieved context) next to the LLM's
    ``system_prompt``; many chat templates accept a single system message, and the core
    appends the principle to the first one, so they are joined with a blank line.
    """
    converted: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise InvalidSettingError(
                f"messages[{index}].role",
                f"{message.role.value!r} messages are not supported; use system, user, assistant or tool",
            )
        for block in message.blocks:
            if not isinstance(block, (TextBlock, ToolCallBlock)):
                raise InvalidSettingError(
                    f"messages[{index}]", f"{type(block).__name__} content is not supported: the model reads text only"
                )
        text = message.content or ""
        if role == "system" and converted and converted[-1]["role"] == "system":
            previous = converted[-1]["content"]
            converted[-1]["content"] = f"{previous}\n\n{text}" if previous and text else previous or text
        else:
            converted.append({"role": role, "content": text, **core_tool_fields(message)})
    return converted
