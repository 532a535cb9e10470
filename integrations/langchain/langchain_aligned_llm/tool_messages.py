"""Tool calls between LangChain messages and the core's OpenAI-style messages and results, both ways.

In: an ``AIMessage``'s ``tool_calls`` become the assistant message's ``tool_calls`` (arguments as
a dict; an invalid call's as the text it had) and a ``ToolMessage`` becomes a ``{"role": "tool",
"tool_call_id", "content"}`` message, so an agent's history renders through the chat template.
Out: a stream's tool-call deltas become ``tool_call_chunks`` (the fragments of one call share its
``index``); LangChain joins them into ``AIMessage.tool_calls``, for ``invoke`` too (the stream, aggregated).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
from langchain_core.messages.tool import tool_call_chunk

if TYPE_CHECKING:
    from aligned_llm import StreamDelta

TOOL_CALL_BLOCKS = frozenset({"tool_use", "tool_call", "tool_call_chunk", "invalid_tool_call", "function_call"})
"""Content blocks that mirror ``AIMessage.tool_calls`` (Anthropic's ``tool_use``, LangChain's v1 blocks)."""


def tool_fields(message: BaseMessage) -> dict[str, Any]:
    """What the core needs besides role and text: an AI message's calls, a tool message's call id and name."""
    if isinstance(message, AIMessage):
        calls = [_call(c["id"], c["name"], c["args"]) for c in message.tool_calls]
        calls += [_call(c["id"], c["name"], c["args"]) for c in message.invalid_tool_calls]
        return {"tool_calls": calls} if calls else {}
    if isinstance(message, ToolMessage):
        fields = {"tool_call_id": message.tool_call_id}
        if message.name:
            fields["name"] = message.name
        return fields
    return {}


def _call(call_id: str | None, name: str | None, arguments: dict[str, Any] | str | None) -> dict[str, Any]:
    return {"id": call_id or "", "type": "function", "function": {"name": name or "", "arguments": arguments or ""}}


def message_chunk(delta: StreamDelta) -> AIMessageChunk:
    """One stream event: a text delta and the fragments of tool calls it carries."""
    chunks = [
        tool_call_chunk(name=call.name, args=call.arguments, id=call.id, index=call.index) for call in delta.tool_calls
    ]
    return AIMessageChunk(content=delta.text, tool_call_chunks=chunks)
