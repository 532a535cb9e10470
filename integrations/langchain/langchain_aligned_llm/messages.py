"""LangChain messages to the OpenAI-style ``{"role", "content"}`` dicts the core renders with the chat template.

Messages keep their order and roles, so any sequence the model's chat template accepts
works: several system messages, a system message mid-conversation, consecutive turns of one
role, or a trailing AI message (which the model then continues). AI messages' tool calls and
tool messages carry over (see ``tool_messages``). Only text can be decoded, so other content
(images, audio, files) is refused rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_aligned_llm.tool_messages import TOOL_CALL_BLOCKS, tool_fields

_ROLE_ALIASES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "ai": "assistant"}


def to_conversation(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Convert LangChain messages into the core's conversation format."""
    return [{"role": _role(message), "content": _text(message), **tool_fields(message)} for message in messages]


def _role(message: BaseMessage) -> str:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, ChatMessage) and message.role.lower() in _ROLE_ALIASES:
        return _ROLE_ALIASES[message.role.lower()]
    raise ValueError(
        f"ChatAlignedLLM takes system, human, AI and tool messages; got a {type(message).__name__}"
        + (f" with role {message.role!r}" if isinstance(message, ChatMessage) else "")
    )


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif isinstance(message, AIMessage) and block.get("type") in TOOL_CALL_BLOCKS:
            continue  # the same calls are in message.tool_calls
        else:
            raise ValueError(
                f"ChatAlignedLLM decodes text only; a {type(message).__name__} "
                f"has a {block.get('type')!r} content block"
            )
    return "".join(parts)
