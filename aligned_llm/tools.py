"""Tool specs: validate OpenAI-style tools, render them (and past calls) in, parse calls out.

Tools and past calls are rendered into the conversation; calls are read back out of text.

The one call format the library writes, constrains and parses is Hermes-style (Qwen2.5's)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Chat templates that render ``tools=`` in that format are used as they are. For every other
template the tools go into the system message as :data:`TOOL_PROMPT`, and an assistant turn
that calls tools is written as one assistant message: its calls in the format above, each
result as a ``<tool_response>`` block after them, then what the assistant said next. A
conversation that ends with tool results is continued inside that turn. (Qwen2.5 puts results
in a user turn; models without tool training, such as the bundled one, answer the question
after in-turn results but echo ``<tool_response>`` blocks after user-turn ones: docs/tools.md.)
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

from aligned_llm.errors import InvalidSettingError
from aligned_llm.output_format import ResponseFormat
from aligned_llm.result import GenerationResult, StreamDelta, ToolCall, ToolCallDelta

E = TypeVar("E")

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
CALL_PREFIX = '\n{"name": '
"""What follows ``<tool_call>`` in a library-written call, before the JSON-quoted name."""
ARGUMENTS_PREFIX = ', "arguments": '
CALL_SUFFIX = "}\n" + CALL_CLOSE
RESPONSE_OPEN = "<tool_response>"
RESPONSE_CLOSE = "</tool_response>"

TOOL_PROMPT = (
    "# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)
"""The library's tool prompt (Hermes/Qwen2.5 wording), appended to the system message."""

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}

ToolMode = Literal["auto", "none", "required"]


@dataclass(frozen=True)
class ToolSpec:
    """One function tool: its name, description and JSON-schema ``parameters`` (an object)."""

    name: str
    description: str
    parameters: dict[str, Any]

    def as_openai(self) -> dict[str, Any]:
        """The OpenAI ``{"type": "function", "function": {...}}`` form (what templates read)."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.parameters
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolChoice:
    """Normalised ``tool_choice``: ``mode`` and, for a named tool, its ``name`` (mode "required")."""

    mode: ToolMode = "auto"
    name: str | None = None


def normalize_tools(tools: object) -> tuple[ToolSpec, ...]:
    """Validate OpenAI-style function tools; ``None`` or ``[]`` means no tools."""
    if tools is None:
        return ()
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise InvalidSettingError("tools", f"must be a list of tool dicts, got {type(tools).__name__}")
    specs: list[ToolSpec] = []
    for index, tool in enumerate(tools):
        spec = _tool_spec(tool, index)
        if any(other.name == spec.name for other in specs):
            raise InvalidSettingError("tools", f"tool names must be unique; {spec.name!r} appears twice")
        specs.append(spec)
    return tuple(specs)


def _tool_spec(tool: object, index: int) -> ToolSpec:
    shape = '{"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}'
    if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(tool.get("function"), Mapping):
        raise InvalidSettingError("tools", f"tools[{index}] must be {shape}, got {tool!r}")
    function = tool["function"]
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidSettingError(
            "tools", f"tools[{index}].function.name must be 1-64 letters, digits, '_', '.' or '-', got {name!r}"
        )
    description = function.get("description") or ""
    if not isinstance(description, str):
        raise InvalidSettingError("tools", f"tools[{index}].function.description must be a string")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = dict(_NO_PARAMETERS)
    if not isinstance(parameters, Mapping) or parameters.get("type", "object") != "object":
        raise InvalidSettingError(
            "tools", f"tools[{index}].function.parameters must be a JSON schema of type 'object', got {parameters!r}"
        )
    try:
        parameters = json.loads(json.dumps(parameters))
    except (TypeError, ValueError) as error:
        raise InvalidSettingError("tools", f"tools[{index}].function.parameters is not JSON: {error}") from None
    return ToolSpec(name, description, parameters)


def normalize_tool_choice(choice: object, tools: Sequence[ToolSpec]) -> ToolChoice:
    """``"auto"``, ``"none"``, ``"required"``, a tool name or ``{"type": "function", "function": {"name"}}``."""
    name: object = None
    if isinstance(choice, Mapping):
        function = choice.get("function")
        if choice.get("type") != "function" or not isinstance(function, Mapping):
            raise InvalidSettingError(
                "tool_choice", f'a dict must be {{"type": "function", "function": {{"name": ...}}}}, got {choice!r}'
            )
        name = function.get("name")
    elif choice in ("auto", "none", "required"):
        if choice == "required" and not tools:
            raise InvalidSettingError("tool_choice", "'required' needs tools: pass tools=[...]")
        return ToolChoice(choice)  # type: ignore[arg-type]
    elif isinstance(choice, str):
        name = choice
    else:
        raise InvalidSettingError(
            "tool_choice", f"must be 'auto', 'none', 'required', a tool name or a function dict, got {choice!r}"
        )
    known = [tool.name for tool in tools]
    if not tools:
        raise InvalidSettingError("tool_choice", f"names the tool {name!r} but no tools were given")
    if name not in known:
        raise InvalidSettingError("tool_choice", f"names an unknown tool {name!r}; the tools are {known}")
    return ToolChoice("required", str(name))


# ---------------------------------------------------------------- conversation messages


def normalize_tool_message(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check an assistant message with ``tool_calls`` or a ``tool`` result message.

    Returns it in one shape: arguments parsed to dicts, ``content`` a string.
    """
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
            if value is not None:
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
    function = {"name": function["name"], "arguments": dict(arguments)}
    return {"id": str(call_id), "type": "function", "function": function}


def new_call_id() -> str:
    """A fresh OpenAI-style call id: ``call_`` and 24 random hex digits."""
    return "call_" + uuid.uuid4().hex[:24]


def format_call(name: str, arguments: Mapping[str, Any]) -> str:
    """One call in the library's format: exactly what the grammar makes the model write."""
    arguments_json = json.dumps(arguments, ensure_ascii=False)
    return f"{CALL_OPEN}{CALL_PREFIX}{json.dumps(name)}{ARGUMENTS_PREFIX}{arguments_json}{CALL_SUFFIX}"


# ---------------------------------------------------------------- rendering


@dataclass(frozen=True)
class ToolPrompt:
    """What a request adds to its conversation: tools to offer and extra system instructions."""

    tools: tuple[ToolSpec, ...] = ()
    instructions: str = ""


def tool_prompt_text(tools: Sequence[ToolSpec]) -> str:
    """:data:`TOOL_PROMPT` listing ``tools`` as JSON, one per line."""
    listing = "\n".join(json.dumps(tool.as_openai(), ensure_ascii=False) for tool in tools)
    return TOOL_PROMPT.format(tools=listing)


_PROBE_TOOL = ToolSpec("aligned_llm_probe_tool", "probe", {"type": "object", "properties": {}})
_PROBE_RESULT = "aligned-llm-probe-result"


def template_renders_tools(render: Callable[..., str]) -> bool:
    """Whether a chat template renders ``tools=``, past calls and results in the Hermes format.

    ``render(conversation, **template_kwargs)`` renders with the template. A template that
    renders tools in another format is not used for them: the library prompt is, so that the
    prompt asks for the format the grammar and the parser know.
    """
    conversation = [
        {"role": "user", "content": "probe"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_probe", "type": "function", "function": {"name": _PROBE_TOOL.name, "arguments": {}}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_probe", "content": _PROBE_RESULT},
    ]
    try:
        text = render(conversation, tools=[_PROBE_TOOL.as_openai()])
    except Exception:  # a template that cannot render these messages does not support them
        return False
    return text.count(_PROBE_TOOL.name) >= 2 and CALL_OPEN in text and _PROBE_RESULT in text


def has_tool_parts(conversation: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a conversation holds tool calls or tool results."""
    return any(message["role"] == "tool" or message.get("tool_calls") for message in conversation)


def render_conversation(
    conversation: list[dict[str, Any]],
    prompt: ToolPrompt | None,
    *,
    template_tools: bool,
    supports_system: bool,
    default_system: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The conversation (and chat-template kwargs) with tools, calls and results rendered.

    ``template_tools``: the chat template renders them itself (see
    :func:`template_renders_tools`); otherwise the library renders them into plain messages.
    """
    prompt = prompt or ToolPrompt()
    if template_tools:
        kwargs = {"tools": [tool.as_openai() for tool in prompt.tools]} if prompt.tools else {}
        return _with_system_text(conversation, prompt.instructions, supports_system, default_system), kwargs
    rendered: list[dict[str, Any]] = []
    in_tool_turn = False
    for message in conversation:
        if message["role"] == "tool" or message.get("tool_calls") or (in_tool_turn and message["role"] == "assistant"):
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
    sections = [tool_prompt_text(prompt.tools)] if prompt.tools else []
    if prompt.instructions:
        sections.append(prompt.instructions)
    return _with_system_text(rendered, "\n\n".join(sections), supports_system, default_system), {}


def _with_system_text(
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


# ---------------------------------------------------------------- parsing


def protect_calls(text: str) -> str:
    """``text`` with every tool-call block (from ``<tool_call>`` to its close or the end) blanked.

    Stop strings are searched in what this returns, so they never cut a call.
    """
    start = text.find(CALL_OPEN)
    while start != -1:
        close = text.find(CALL_CLOSE, start)
        end = len(text) if close == -1 else close + len(CALL_CLOSE)
        text = text[:start] + "\0" * (end - start) + text[end:]
        start = text.find(CALL_OPEN, end)
    return text


def parse_call(body: str) -> tuple[str, dict[str, Any]] | None:
    """Name and arguments of one call body (the text between the tags), or None.

    Accepts ``{"name": ..., "arguments": {...}}`` with arguments as an object or as JSON text,
    and ``"parameters"`` in place of ``"arguments"`` (what unconstrained models often write).
    """
    try:
        value = json.loads(body.strip())
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return value["name"], arguments


@dataclass
class ToolCallParser:
    """Splits generated text, fed in deltas, into prose and tool calls.

    The same object serves streaming and the final result, so the streamed prose concatenates
    to ``text`` and the streamed calls are ``calls``. Text that may be the start of
    ``<tool_call>`` is held back; a call is sent whole (one :class:`ToolCallDelta`) when its
    block closes. A block that does not parse as a call stays in the prose; a call that exactly
    repeats an earlier one of the same answer is dropped (small models loop on calls).
    Whitespace at the ends of the answer and around calls is not prose and is dropped.
    """

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    _pending: str = ""
    _body: str | None = None
    _held: str = ""
    _gap: str = ""
    _boundary: bool = True

    def feed(self, delta: str) -> StreamDelta:
        """Take the next piece of generated text; return what is now decided."""
        prose: list[str] = []
        pieces: list[ToolCallDelta] = []
        self._pending += delta
        while self._pending:
            if self._body is None:
                start = self._pending.find(CALL_OPEN)
                if start == -1:
                    keep = _partial_suffix(self._pending, CALL_OPEN)
                    prose.append(self._prose(self._pending[: len(self._pending) - keep]))
                    self._pending = self._pending[len(self._pending) - keep :]
                    break
                prose.append(self._prose(self._pending[:start]))
                self._pending = self._pending[start + len(CALL_OPEN) :]
                self._body, self._gap, self._held = "", self._held, ""
                continue
            body = self._body + self._pending
            close = body.find(CALL_CLOSE)
            if close == -1:
                self._body, self._pending = body, ""
                break
            self._body, self._pending = body[:close], body[close + len(CALL_CLOSE) :]
            prose.append(self._prose(self._close_call(closed=True, pieces=pieces)))
        text = "".join(prose)
        self.text += text
        return StreamDelta(text, tuple(pieces))

    def finish(self) -> StreamDelta:
        """End of generation: settle an unclosed call and flush held-back text."""
        pieces: list[ToolCallDelta] = []
        prose = self._prose(
            ("" if self._body is None else self._close_call(closed=False, pieces=pieces)) + self._pending
        )
        self._pending = ""
        self.text += prose
        return StreamDelta(prose, tuple(pieces))

    def _prose(self, chunk: str) -> str:
        """The part of a prose chunk to emit now: whitespace at a boundary or at the end is held."""
        text = self._held + chunk
        if self._boundary:
            text = text.lstrip()
        emitted = text.rstrip()
        self._held = text[len(emitted) :]
        self._boundary = self._boundary and not emitted
        return emitted

    def _close_call(self, closed: bool, pieces: list[ToolCallDelta]) -> str:
        """Turn the open block into a call (appending its delta to ``pieces``); return its prose."""
        body, self._body = self._body or "", None
        parsed = parse_call(body)
        if parsed is None:
            return self._gap + CALL_OPEN + body + (CALL_CLOSE if closed else "")
        self._boundary = True
        name, arguments = parsed
        if any(call.name == name and call.arguments == arguments for call in self.calls):
            return ""
        call = ToolCall(new_call_id(), name, arguments)
        pieces.append(ToolCallDelta(len(self.calls), call.id, name, json.dumps(arguments, ensure_ascii=False)))
        self.calls.append(call)
        return ""


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


# ---------------------------------------------------------------- answers


class AnswerReader:
    """Reads one request's answer as it streams: prose, tool calls, and the structured value.

    ``calls``: the answer may hold tool calls (they are taken out of the text);
    ``response``: the answer's JSON is parsed into ``result.parsed``.
    """

    def __init__(self, calls: bool, response: ResponseFormat | None) -> None:
        self.parser = ToolCallParser() if calls else None
        self.response = response

    def feed(self, delta: str) -> StreamDelta:
        """The next text delta of the generation, split into prose and call pieces."""
        return StreamDelta(delta) if self.parser is None else self.parser.feed(delta)

    def finish(self, result: GenerationResult) -> tuple[StreamDelta, GenerationResult]:
        """The last pieces, and ``result`` with prose text, tool calls, parsed value and finish reason."""
        if self.parser is None:
            tail, text, calls = StreamDelta(""), result.text, ()
        else:
            tail, text, calls = self.parser.finish(), self.parser.text, tuple(self.parser.calls)
        parsed = self.response.parse(text) if self.response is not None and not calls else None
        reason = "tool_calls" if calls and result.finish_reason == "stop" else result.finish_reason
        return tail, replace(result, text=text, tool_calls=calls, parsed=parsed, finish_reason=reason)


def read_answers(events: Iterable[E], readers: Callable[[], AnswerReader]) -> Iterator[E]:
    """Pass engine step events through one :class:`AnswerReader` per request.

    Each event's ``delta`` becomes its prose part and ``tool_calls`` its call pieces; the final
    event's ``result`` is rewritten by the reader.
    """
    by_index: dict[int, AnswerReader] = {}
    for event in events:
        reader = by_index.setdefault(event.index, readers())  # type: ignore[attr-defined]
        piece = reader.feed(event.delta)  # type: ignore[attr-defined]
        result = event.result  # type: ignore[attr-defined]
        if result is not None:
            tail, result = reader.finish(result)
            piece = StreamDelta(piece.text + tail.text, piece.tool_calls + tail.tool_calls)
        yield replace(event, delta=piece.text, tool_calls=piece.tool_calls, result=result)  # type: ignore[type-var]
