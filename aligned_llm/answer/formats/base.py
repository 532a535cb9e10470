"""``ToolFormat``: how one model family writes tool calls, and how its tools, calls and results are rendered.

A format knows (in the style of vLLM's per-model tool parsers and xgrammar's built-in
structural tags):

- how tools, past calls and results reach the model (:meth:`ToolFormat.render`: through the
  model's own chat template where it has a tools branch, or rendered by the library);
- the call markup: where a call block opens (:attr:`ToolFormat.open`) and closes
  (:attr:`ToolFormat.close`, ``None``: the block runs to the end of the answer);
- the grammar of calls (:meth:`ToolFormat.calls` and, under ``tool_choice="auto"``,
  :meth:`ToolFormat.auto`), as xgrammar structural-tag formats;
- the parser of one call block (:meth:`ToolFormat.parse_block`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from aligned_llm.answer.spec import ToolSpec

JSON_WHITESPACE = 1
"""Most whitespace characters allowed in a row inside JSON: one-line JSON, and no runaway
whitespace (a common failure of small models under a JSON grammar)."""

ParsedCall = tuple[str, dict[str, Any]]
Rendered = tuple[list[dict[str, Any]], dict[str, Any]]
"""A conversation ready for the chat template, and the template keywords (``tools=...``)."""


def structural() -> Any:
    """xgrammar's structural-tag module (imported when a grammar is first built)."""
    import xgrammar.structural_tag as st

    return st


def json_arguments(tool: ToolSpec) -> Any:
    """The grammar of one tool's arguments: one-line JSON valid against its ``parameters``."""
    return structural().JSONSchemaFormat(json_schema=tool.parameters, max_whitespace_cnt=JSON_WHITESPACE)


def with_system_text(
    conversation: list[dict[str, Any]], text: str, supports_system: bool, default_system: str
) -> list[dict[str, Any]]:
    """Append ``text`` to the system message (the template's default one when there is none).

    Without a system role it is prepended to the first user turn, as a principle is.
    """
    if not text:
        return conversation
    if conversation and conversation[0]["role"] == "system":
        system = conversation[0]["content"]
        return [{"role": "system", "content": f"{system}\n\n{text}" if system else text}, *conversation[1:]]
    if supports_system:
        merged = f"{default_system}\n\n{text}" if default_system else text
        return [{"role": "system", "content": merged}, *conversation]
    for index, message in enumerate(conversation):
        if message["role"] == "user":
            injected = dict(message, content=f"{text}\n\n{message['content']}")
            return [*conversation[:index], injected, *conversation[index + 1 :]]
    return [{"role": "user", "content": text}, *conversation]


def system_section(listing: str, instructions: str) -> str:
    """What a library-rendered format adds to the system message: its tool listing, then the instructions."""
    return "\n\n".join(part for part in (listing, instructions) if part)


def parse_call_object(value: object, arguments_keys: Sequence[str] = ("arguments", "parameters")) -> ParsedCall | None:
    """``{"name": ..., "arguments": {...}}`` (arguments as an object or JSON text) as a call, or None."""
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        return None
    arguments: object = {}
    for key in arguments_keys:
        if key in value:
            arguments = value[key]
            break
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return value["name"], arguments


class ToolFormat(ABC):
    """One family's tool-call format: rendering, call markup, grammar and parser."""

    name: ClassVar[str]
    """What ``tool_format=`` calls it."""
    open: ClassVar[str]
    """The text that opens a call block (the lazy grammar's trigger, the parser's marker)."""
    close: ClassVar[str | None]
    """The text that closes a call block; ``None``: the block runs to the end of the answer."""
    open_in_body: ClassVar[bool] = False
    """Whether the opening text belongs to the block's body (Llama's calls are bare JSON objects)."""
    native: ClassVar[bool] = True
    """Whether models of the family are trained on it (their chat template renders tools)."""
    decides: ClassVar[bool] = False
    """Whether an ``"auto"`` answer starts with the calibrated decision to call or answer (:mod:`.generic`)."""
    parallel: ClassVar[bool] = True
    """Several calls per answer when ``parallel_tool_calls`` is not given (what the family's models are trained on)."""
    separator: ClassVar[str] = "\n"
    """What the grammar writes between two calls."""
    call_object: ClassVar[str | None] = None
    """Where each call's JSON object starts, for formats whose block holds a list of calls."""

    @classmethod
    @abstractmethod
    def matches(cls, template: str) -> bool:
        """Whether a chat template's source renders tools in this format."""

    @abstractmethod
    def calls(self, tools: Sequence[ToolSpec], parallel: bool) -> Any:
        """The grammar of an answer that is only calls: one (``parallel=False``) or more."""

    @abstractmethod
    def auto(self, tools: Sequence[ToolSpec], parallel: bool) -> Any:
        """The grammar of an ``"auto"`` answer: prose, or calls from the format's trigger on."""

    @abstractmethod
    def parse_block(self, body: str, tools: Sequence[ToolSpec]) -> list[ParsedCall] | None:
        """The calls of one block's body, or ``None`` when it is not calls."""

    def render(
        self,
        conversation: list[dict[str, Any]],
        tools: Sequence[ToolSpec],
        instructions: str,
        *,
        supports_system: bool,
        default_system: str,
    ) -> Rendered:
        """A native format: the chat template renders tools, calls and results; ``instructions`` join the system."""
        kwargs = {"tools": [tool.as_openai() for tool in tools]} if tools else {}
        return with_system_text(conversation, instructions, supports_system, default_system), kwargs

    def complete_calls(self, text: str, tools: Sequence[ToolSpec]) -> list[ParsedCall]:
        """Every call complete so far in an answer's text (a call cut by the length limit is not)."""
        calls: list[ParsedCall] = []
        if self.call_object is not None:
            decoder = json.JSONDecoder()
            start = text.find(self.call_object)
            while start != -1:
                try:
                    value, end = decoder.raw_decode(text, start)
                except ValueError:
                    break
                call = parse_call_object(value)
                if call is not None:
                    calls.append(call)
                start = text.find(self.call_object, end)
            return calls
        start = text.find(self.open)
        while start != -1 and self.close is not None:
            close = text.find(self.close, start)
            if close == -1:
                break
            calls += self.parse_block(text[start + len(self.open) : close], tools) or []
            start = text.find(self.open, close)
        return calls

    def excludes(self) -> list[str]:
        """Text the prose of an answer may never hold (the family's result markup)."""
        return []
