"""Tool parts of a conversation: past calls and tool results, checked and put in one shape.

An assistant message with ``tool_calls`` gets its arguments parsed to dicts; a ``tool`` message
its content as a string. :func:`check_history` refuses histories that cannot be right before
any model work: a tool result before any call, a result naming a call id no earlier call has,
and a past call of a tool that is not offered.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from aligned_llm.answer.spec import ToolSpec
from aligned_llm.errors import InvalidSettingError


def new_call_id() -> str:
    """A fresh OpenAI-style call id: ``call_`` and 24 random hex digits."""
    return "call_" + uuid.uuid4().hex[:24]


def normalize_tool_message(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check an assistant message with ``tool_calls`` or a ``tool`` result message; return it in one shape."""
    role = message.get("role")
    if role == "tool":
        content = message.get("content")
        if not isinstance(content, str):
            raise InvalidSettingError(f"{where}.content", f"must be a string, got {type(content).__name__}")
        normalized = {"role": "tool", "content": content}
        for key in ("tool_call_id", "name"):
            value = message.get(key)
            if value is not None and not isinstance(value, str):
                raise InvalidSettingError(f"{where}.{key}", f"must be a string, got {value!r}")
            if value:
                normalized[key] = value
        return normalized
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise InvalidSettingError(f"{where}.content", f"must be a string or None, got {type(content).__name__}")
    calls = message.get("tool_calls")
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence):
        raise InvalidSettingError(f"{where}.tool_calls", f"must be a list of tool calls, got {calls!r}")
    return {
        "role": "assistant",
        "content": content or "",
        "tool_calls": [_past_call(call, f"{where}.tool_calls[{i}]") for i, call in enumerate(calls)],
    }


def _past_call(call: object, where: str) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        shape = '{"id", "type": "function", "function": {"name", "arguments"}}'
        raise InvalidSettingError(where, f"must be {shape}, got {call!r}")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise InvalidSettingError(f"{where}.function.arguments", f"is not JSON: {arguments!r}") from None
    if not isinstance(arguments, Mapping):
        raise InvalidSettingError(f"{where}.function.arguments", f"must be a JSON object, got {arguments!r}")
    call_id = call.get("id") or new_call_id()  # type: ignore[union-attr]
    return {
        "id": str(call_id),
        "type": "function",
        "function": {"name": function["name"], "arguments": dict(arguments)},
    }


def has_tool_parts(conversation: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a conversation holds tool calls or tool results."""
    return any(message["role"] == "tool" or message.get("tool_calls") for message in conversation)


def check_history(conversation: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec], where: str = "prompt") -> None:
    """Refuse a history no model could have produced with these tools.

    A ``tool`` message needs an earlier assistant call (its ``tool_call_id``, when given, must
    be one of theirs); a past call must name one of ``tools`` when tools are given.
    """
    names = {tool.name for tool in tools}
    call_ids: set[str] = set()
    for index, message in enumerate(conversation):
        for call in message.get("tool_calls", ()):
            name = call["function"]["name"]
            if names and name not in names:
                raise InvalidSettingError(
                    f"{where}[{index}].tool_calls",
                    f"calls {name!r}, which is not one of the tools {sorted(names)}; pass the tool in tools=[...]",
                )
            call_ids.add(call["id"])
        if message["role"] != "tool":
            continue
        if not call_ids:
            raise InvalidSettingError(
                f"{where}[{index}]", "is a tool result, but no assistant message before it called a tool"
            )
        call_id = message.get("tool_call_id")
        if call_id and call_id not in call_ids:
            raise InvalidSettingError(
                f"{where}[{index}].tool_call_id",
                f"{call_id!r} matches no earlier tool call; the calls are {sorted(call_ids)}",
            )


def call_key(name: str, arguments: Mapping[str, Any]) -> str:
    """One call as a comparable key: its name and arguments (key order does not matter)."""
    return json.dumps([name, arguments], sort_keys=True, ensure_ascii=False)


def calls_since_last_user(conversation: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(name, arguments)`` of every call made after the last user message (the current agent turn)."""
    calls: list[tuple[str, dict[str, Any]]] = []
    for message in conversation:
        if message["role"] == "user":
            calls = []
        for call in message.get("tool_calls", ()):
            calls.append((call["function"]["name"], call["function"]["arguments"]))
    return calls
