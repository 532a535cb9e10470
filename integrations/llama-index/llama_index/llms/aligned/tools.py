"""Function calling for ``AlignedHF``: tools and choices for the core; tool calls back as blocks and selections.

``chat_with_tools`` (LlamaIndex's ``FunctionCallingLLM``) calls ``chat(messages, tools=...,
tool_choice=..., parallel_tool_calls=...)``; those keywords, and ``response_format``, go to the
core as they are. A tool call comes back twice in the assistant message, as LlamaIndex's own
LLMs return it: a ``ToolCallBlock`` in ``blocks`` and an OpenAI-style entry in
``additional_kwargs["tool_calls"]`` (which LlamaIndex's streaming structured output reads).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aligned_llm import InvalidSettingError
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.utils import parse_partial_json
from llama_index.core.tools.types import ToolMetadata
from pydantic.errors import PydanticUserError

if TYPE_CHECKING:
    from aligned_llm import GenerationResult, ToolCallDelta
    from llama_index.core.tools.types import BaseTool

_CHOICE_WORDS = ("auto", "none", "required")


def chat_kwargs_with_tools(
    tools: Sequence[BaseTool],
    user_msg: str | ChatMessage | None,
    chat_history: Sequence[ChatMessage] | None,
    allow_parallel_tool_calls: bool,
    tool_required: bool,
    tool_choice: str | Mapping[str, Any] | None,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The keywords of ``chat`` for one turn with tools: messages, OpenAI-style specs, choice, parallelism.

    ``tool_choice`` (a tool name, ``"auto"``, ``"none"``, ``"required"`` or an OpenAI-style dict)
    wins over ``tool_required`` (``"required"``); without either it is ``"auto"``.
    """
    specs = [_openai_tool(tool, index) for index, tool in enumerate(tools)]
    messages = list(chat_history or [])
    if isinstance(user_msg, str):
        user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
    if user_msg is not None:
        messages.append(user_msg)
    kwargs: dict[str, Any] = {"messages": messages, **settings}
    if specs:
        names = [spec["function"]["name"] for spec in specs]
        kwargs["tools"] = specs
        kwargs["tool_choice"] = core_tool_choice(tool_choice, tool_required, names)
        kwargs["parallel_tool_calls"] = allow_parallel_tool_calls
    elif tool_choice not in (None, "auto", "none") or tool_required:
        raise InvalidSettingError("tool_choice", "a required tool call needs at least one tool")
    return kwargs


def _openai_tool(tool: object, index: int) -> dict[str, Any]:
    """One LlamaIndex tool as an OpenAI function spec, or an error naming ``tools[index]``."""
    metadata = getattr(tool, "metadata", None)
    if not isinstance(metadata, ToolMetadata):
        raise InvalidSettingError(
            f"tools[{index}]",
            f"must be a LlamaIndex tool (FunctionTool, QueryEngineTool, … with a ToolMetadata), got {tool!r}",
        )
    try:
        return metadata.to_openai_tool(skip_length_check=True)
    except PydanticUserError as error:
        reason = str(error).strip().splitlines()[0]
        raise InvalidSettingError(f"tools[{index}]", f"arguments must have a JSON schema; {reason}") from error


def core_tool_choice(choice: str | Mapping[str, Any] | None, required: bool, names: Sequence[str]) -> str:
    """LlamaIndex's ``tool_choice``/``tool_required`` as the core's ``"auto"``/``"none"``/``"required"``/a name."""
    if choice is None:
        return "required" if required else "auto"
    if isinstance(choice, Mapping):
        choice = choice.get("function", {}).get("name") if "function" in choice else choice.get("name")
    if isinstance(choice, str) and (choice in _CHOICE_WORDS or choice in names):
        return choice
    raise InvalidSettingError(
        "tool_choice", f"must be 'auto', 'none', 'required' or one of the tools {list(names)}; got {choice!r}"
    )


Call = tuple[str, str, dict[str, Any] | str]
"""``(id, name, arguments)``: arguments a dict, or JSON text (partial while streaming)."""


def result_calls(result: GenerationResult) -> list[Call]:
    """A core result's tool calls."""
    return [(call.id, call.name, dict(call.arguments)) for call in result.tool_calls]


class PartialCalls:
    """The tool calls of a stream so far, from its ``ToolCallDelta`` fragments."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}

    def add(self, deltas: Sequence[ToolCallDelta]) -> None:
        """Take one event's fragments: a call's id and name come first, its arguments in pieces."""
        for delta in deltas:
            call = self._calls.setdefault(delta.index, ["", "", ""])
            call[0] = delta.id or call[0]
            call[1] = delta.name or call[1]
            call[2] += delta.arguments

    def so_far(self) -> list[Call]:
        """The calls in order, arguments as the JSON text received."""
        return [(call[0], call[1], call[2]) for _, call in sorted(self._calls.items())]


def assistant_message(text: str, calls: Sequence[Call]) -> ChatMessage:
    """The answer: its text block, then one ``ToolCallBlock`` per call (also in ``additional_kwargs``)."""
    blocks: list[Any] = [TextBlock(text=text), *tool_call_blocks(calls)]
    extra = {"tool_calls": openai_tool_calls(calls)} if calls else {}
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)


def tool_call_blocks(calls: Sequence[Call]) -> list[ToolCallBlock]:
    """``(id, name, arguments)`` as LlamaIndex blocks (arguments: a dict, or partial JSON text while streaming)."""
    return [ToolCallBlock(tool_call_id=call_id, tool_name=name, tool_kwargs=args) for call_id, name, args in calls]


def openai_tool_calls(calls: Sequence[Call]) -> list[dict[str, Any]]:
    """The same calls as OpenAI-style ``additional_kwargs["tool_calls"]`` entries (arguments as JSON text)."""
    return [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)},
        }
        for call_id, name, arguments in calls
    ]


def tool_selections(response: ChatResponse, error_on_no_tool_call: bool) -> list[ToolSelection]:
    """The response's tool calls as ``ToolSelection``s (partial arguments parsed as far as they go)."""
    selections = [
        ToolSelection(tool_id=block.tool_call_id or "", tool_name=block.tool_name, tool_kwargs=_arguments(block))
        for block in response.message.blocks
        if isinstance(block, ToolCallBlock)
    ]
    if not selections and error_on_no_tool_call:
        raw = response.raw if isinstance(response.raw, Mapping) else {}
        if raw.get("finish_reason") == "length":
            budget = raw.get("settings", {}).get("max_new_tokens", "max_new_tokens")
            raise ValueError(
                f"the answer was cut at max_new_tokens={budget} (the max_tokens budget) before a tool call was "
                f"complete; raise max_new_tokens (the field, or a per-call keyword): {response.message.content!r}"
            )
        raise ValueError(f"expected at least one tool call, but the answer has none: {response.message.content!r}")
    return selections


def first_call_only(response: ChatResponse) -> ChatResponse:
    """Keep only the first tool call (``allow_parallel_tool_calls=False``)."""
    blocks = response.message.blocks
    calls = [index for index, block in enumerate(blocks) if isinstance(block, ToolCallBlock)]
    if len(calls) > 1:
        response.message.blocks = [block for index, block in enumerate(blocks) if index not in calls[1:]]
        response.message.additional_kwargs["tool_calls"] = response.message.additional_kwargs["tool_calls"][:1]
    return response


def _arguments(block: ToolCallBlock) -> dict[str, Any]:
    if isinstance(block.tool_kwargs, dict):
        return block.tool_kwargs
    try:
        parsed = parse_partial_json(block.tool_kwargs)
    except (ValueError, TypeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def core_tool_fields(message: ChatMessage) -> dict[str, Any]:
    """An assistant message's tool calls (arguments as dicts), or a tool message's call id and name, for the core.

    Calls come from ``ToolCallBlock``s, or else from OpenAI-style ``additional_kwargs["tool_calls"]``
    (dicts or OpenAI client objects), as other LlamaIndex LLMs leave them in chat memory.
    """
    if message.role == MessageRole.TOOL:
        fields = {"tool_call_id": str(message.additional_kwargs.get("tool_call_id", ""))}
        if message.additional_kwargs.get("name"):
            fields["name"] = str(message.additional_kwargs["name"])
        return fields
    if message.role != MessageRole.ASSISTANT:
        return {}
    blocks = [block for block in message.blocks if isinstance(block, ToolCallBlock)]
    if blocks:
        calls = [(block.tool_call_id or "", block.tool_name, block.tool_kwargs) for block in blocks]
    else:
        calls = [_openai_call(call) for call in message.additional_kwargs.get("tool_calls") or []]
    return {"tool_calls": [_core_call(*call) for call in calls]} if calls else {}


def _core_call(call_id: str, name: str, arguments: dict[str, Any] | str) -> dict[str, Any]:
    """One call for the core: arguments as a dict when they parse, else as the text they are."""
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            parsed = None
        arguments = parsed if isinstance(parsed, dict) else arguments
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _openai_call(call: Any) -> Call:
    if isinstance(call, Mapping):
        function = call.get("function", {})
        return str(call.get("id") or ""), function.get("name", ""), function.get("arguments", "")
    return str(call.id or ""), call.function.name, call.function.arguments
