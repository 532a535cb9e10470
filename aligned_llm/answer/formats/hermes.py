"""Hermes / Qwen2.5 (and Qwen3) calls: a ``<tool_call>`` block holding ``{"name": ..., "arguments": {...}}``.

Templates with a tools branch in this format render tools, calls and results themselves. On a
template without one, ``tool_format="hermes"`` renders them with the library's copy of the
Qwen2.5 tool prompt: an assistant turn that called tools is one assistant message with its
calls, each result as a ``<tool_response>`` block after them, and what the assistant said
next (the bundled model echoes ``<tool_response>`` blocks after user-turn results).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aligned_llm.answer.formats.base import (
    ParsedCall,
    Rendered,
    ToolFormat,
    json_arguments,
    parse_call_object,
    structural,
    system_section,
    with_system_text,
)
from aligned_llm.answer.spec import ToolSpec

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
RESPONSE_OPEN = "<tool_response>"
RESPONSE_CLOSE = "</tool_response>"
SEPARATOR = "\n"

TOOL_PROMPT = (
    "# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
"""The Qwen2.5 tool prompt, for templates without a tools branch."""


def format_call(name: str, arguments: dict[str, Any]) -> str:
    """One call exactly as the grammar makes the model write it."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


def tool_prompt_text(tools: Sequence[ToolSpec]) -> str:
    """:data:`TOOL_PROMPT` listing ``tools`` as JSON, one per line."""
    return TOOL_PROMPT.format(tools="\n".join(json.dumps(tool.as_openai(), ensure_ascii=False) for tool in tools))


class HermesFormat(ToolFormat):
    """Hermes/Qwen2.5 calls in ``<tool_call>`` tags, one JSON object each."""

    name = "hermes"
    open = CALL_OPEN
    close = CALL_CLOSE

    def __init__(self, template_renders: bool = True) -> None:
        self.template_renders = template_renders

    @classmethod
    def matches(cls, template: str) -> bool:
        return CALL_OPEN in template and "tools" in template

    def _tags(self, tools: Sequence[ToolSpec]) -> list[Any]:
        st = structural()
        return [
            st.TagFormat(
                begin=f'{CALL_OPEN}\n{{"name": {json.dumps(tool.name)}, "arguments": ',
                content=json_arguments(tool),
                end="}\n" + CALL_CLOSE,
            )
            for tool in tools
        ]

    def calls(self, tools: Sequence[ToolSpec], parallel: bool) -> Any:
        return structural().TagsWithSeparatorFormat(
            tags=self._tags(tools), separator=SEPARATOR, at_least_one=True, stop_after_first=not parallel
        )

    def auto(self, tools: Sequence[ToolSpec], parallel: bool) -> Any:
        st = structural()
        tags = self._tags(tools)
        first = st.TriggeredTagsFormat(triggers=[CALL_OPEN], tags=tags, stop_after_first=True, excludes=self.excludes())
        if not parallel:
            return first
        return st.SequenceFormat(elements=[first, st.TagsWithSeparatorFormat(tags=tags, separator=SEPARATOR)])

    def excludes(self) -> list[str]:
        return [RESPONSE_OPEN, RESPONSE_CLOSE]

    def parse_block(self, body: str, tools: Sequence[ToolSpec]) -> list[ParsedCall] | None:
        try:
            call = parse_call_object(json.loads(body.strip()))
        except ValueError:
            return None
        return None if call is None else [call]

    def render(
        self,
        conversation: list[dict[str, Any]],
        tools: Sequence[ToolSpec],
        instructions: str,
        *,
        supports_system: bool,
        default_system: str,
    ) -> Rendered:
        if self.template_renders:
            return super().render(
                conversation, tools, instructions, supports_system=supports_system, default_system=default_system
            )
        rendered: list[dict[str, Any]] = []
        in_tool_turn = False
        for message in conversation:
            if (
                message["role"] == "tool"
                or message.get("tool_calls")
                or (in_tool_turn and message["role"] == "assistant")
            ):
                parts = [message["content"]] if message["content"] else []
                parts += [format_call(**call["function"]) for call in message.get("tool_calls", ())]
                if message["role"] == "tool":
                    parts = [f"{RESPONSE_OPEN}\n{message['content']}\n{RESPONSE_CLOSE}\n"]
                if in_tool_turn:
                    rendered[-1] = dict(rendered[-1], content="\n".join([rendered[-1]["content"].rstrip("\n"), *parts]))
                else:
                    rendered.append({"role": "assistant", "content": "\n".join(parts)})
                in_tool_turn = True
            else:
                rendered.append(message)
                in_tool_turn = False
        section = system_section(tool_prompt_text(tools) if tools else "", instructions)
        return with_system_text(rendered, section, supports_system, default_system), {}
