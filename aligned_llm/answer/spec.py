"""What an answer must be: tools, tool choice, parallel calls and response format, each checked once.

The registry's ``Parameter``s call the ``normalize_*`` functions here, so a ``DecodeSettings``
keeps the normalised values (``ToolSpec`` tuples, a ``ResponseFormat``); :func:`answer_spec`
puts them together (the tool choice needs the tools) into the :class:`AnswerSpec` the rest of
the wing reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aligned_llm.errors import InvalidSettingError
from aligned_llm.schema_limits import check_schema

ToolMode = Literal["auto", "none", "required"]
ConstrainedAlignment = Literal["steer", "off"]
CONSTRAINED_ALIGNMENT: tuple[ConstrainedAlignment, ...] = ("steer", "off")
DEFAULT_CONSTRAINED_ALIGNMENT: ConstrainedAlignment = "off"
"""Chosen by measurement (docs/tools.md): with the method steering inside calls, a principle
changed argument values; with it off, arguments are the model's own reading of the request."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
"""Tool names: what OpenAI accepts; nothing that could break the call markup (no spaces, quotes or line breaks)."""
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}

JSON_PROMPT = "Respond only with JSON, on one line, that matches this JSON schema:\n{schema}"
"""The instruction a response format adds to the system message (the grammar enforces it)."""
JSON_OBJECT_PROMPT = "Respond only with a JSON object, on one line."


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


@dataclass(frozen=True)
class ResponseFormat:
    """A normalised ``response_format``: the JSON schema (``None`` = any object) and the model class."""

    schema: dict[str, Any] | None
    model: Any = None

    @property
    def grammar_schema(self) -> dict[str, Any]:
        """The schema the grammar enforces (``json_object``: any JSON object)."""
        return self.schema if self.schema is not None else {"type": "object"}

    def instruction(self) -> str:
        """The system-prompt section describing the expected answer."""
        if self.schema is None:
            return JSON_OBJECT_PROMPT
        return JSON_PROMPT.format(schema=json.dumps(self.schema, ensure_ascii=False))

    def parse(self, text: str) -> Any:
        """The answer as JSON (or a validated model instance); ``None`` when it does not parse.

        Without a grammar models wrap JSON in prose or code fences: the span from the first
        ``{`` to the last ``}`` is tried too.
        """
        value = _loads(text.strip())
        if value is None and "{" in text and "}" in text:
            value = _loads(text[text.index("{") : text.rindex("}") + 1])
        if value is None or self.model is None:
            return value
        from pydantic import ValidationError

        try:
            return self.model.model_validate(value)
        except ValidationError:
            return None


@dataclass(frozen=True)
class AnswerSpec:
    """What the answer must be: tool calls of ``tools`` under ``choice``, and/or JSON of ``response``.

    ``constrained``: valid by grammar; ``alignment``: what the method does inside constrained
    spans; ``tool_format``: the call format asked for (``None``: the chat template's own);
    ``tool_call_bias``: the margin of the calibrated decision to call (see ``formats.generic``).
    """

    tools: tuple[ToolSpec, ...] = ()
    choice: ToolChoice = field(default_factory=ToolChoice)
    parallel: bool | None = None
    """Several calls per answer; ``None``: the tool format's own default (:attr:`ToolFormat.parallel`)."""
    response: ResponseFormat | None = None
    constrained: bool = True
    alignment: ConstrainedAlignment = DEFAULT_CONSTRAINED_ALIGNMENT
    tool_format: str | None = None
    tool_call_bias: float = 0.0

    @property
    def calls_tools(self) -> bool:
        """Whether tool calls may appear in the answer."""
        return bool(self.tools) and self.choice.mode != "none"

    @property
    def is_free_text(self) -> bool:
        """Whether nothing shapes the answer."""
        return not self.calls_tools and self.response is None

    @property
    def callable_tools(self) -> tuple[ToolSpec, ...]:
        """The tools a call may name (only the named one under a named ``tool_choice``)."""
        if self.choice.name is None:
            return self.tools
        return tuple(tool for tool in self.tools if tool.name == self.choice.name)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def is_json(text: str) -> bool:
    """Whether ``text`` is one JSON value (``null`` included)."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def normalize_tools(tools: object) -> tuple[ToolSpec, ...]:
    """Validate OpenAI-style function tools (or already normalised ones); ``None`` or ``[]`` means no tools."""
    if tools is None:
        return ()
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise InvalidSettingError("tools", f"must be a list of tool dicts, got {type(tools).__name__}")
    specs: list[ToolSpec] = []
    for index, tool in enumerate(tools):
        spec = tool if isinstance(tool, ToolSpec) else _tool_spec(tool, index)
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
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
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
    return ToolSpec(name, description, _json_copy(parameters, "tools", f"tools[{index}].function.parameters"))


def _json_copy(schema: Mapping[str, Any], parameter: str, where: str) -> dict[str, Any]:
    """A plain-JSON copy of a schema, once its bounds are checked (``schema_limits``: local refs, sizes, depth)."""
    check_schema(schema, parameter, where)
    try:
        return json.loads(json.dumps(schema))
    except (TypeError, ValueError) as error:
        raise InvalidSettingError(parameter, f"{where} is not JSON: {error}") from None


def check_tool_choice(choice: object) -> str | dict[str, Any]:
    """The shape of ``tool_choice`` on its own (whether a named tool exists needs the tools: :func:`answer_spec`)."""
    if isinstance(choice, str):
        return choice
    if isinstance(choice, Mapping):
        return dict(choice)
    raise InvalidSettingError(
        "tool_choice", f"must be 'auto', 'none', 'required', a tool name or a function dict, got {choice!r}"
    )


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


def _is_pydantic_model(value: object) -> bool:
    from pydantic import BaseModel

    return isinstance(value, type) and issubclass(value, BaseModel)


def normalize_response_format(value: object) -> ResponseFormat | None:
    """Validate ``response_format`` (or pass a normalised one on); ``None`` and ``{"type": "text"}`` mean free text."""
    if value is None or isinstance(value, ResponseFormat):
        return value
    if _is_pydantic_model(value):
        return ResponseFormat(_model_schema(value), model=value)
    allowed = (
        "None, {'type': 'json_object'}, {'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}} "
        "or a pydantic BaseModel class"
    )
    if not isinstance(value, Mapping):
        raise InvalidSettingError("response_format", f"must be {allowed}, got {value!r}")
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat(None)
    if kind != "json_schema":
        raise InvalidSettingError(
            "response_format", f"type must be 'text', 'json_object' or 'json_schema', got {kind!r}"
        )
    spec = value.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
        raise InvalidSettingError(
            "response_format", f"json_schema must be {{'name': ..., 'schema': {{...}}}}, got {spec!r}"
        )
    return ResponseFormat(_json_copy(spec["schema"], "response_format", "the schema"))


def _model_schema(model: Any) -> dict[str, Any]:
    """A pydantic class's JSON schema, or an error naming ``response_format`` when a field has none."""
    from pydantic.errors import PydanticInvalidForJsonSchema, PydanticUserError

    try:
        schema = model.model_json_schema()
    except (PydanticInvalidForJsonSchema, PydanticUserError) as error:
        raise InvalidSettingError(
            "response_format", f"the pydantic class {model.__name__} has no JSON schema: {error}"
        ) from None
    return _json_copy(schema, "response_format", "the schema")


def answer_spec(
    tools: tuple[ToolSpec, ...],
    tool_choice: str | Mapping[str, Any],
    parallel: bool | None,
    response: ResponseFormat | None,
    *,
    constrained: bool = True,
    alignment: ConstrainedAlignment = DEFAULT_CONSTRAINED_ALIGNMENT,
    tool_format: str | None = None,
    tool_call_bias: float = 0.0,
) -> AnswerSpec:
    """The answer spec from settings their ``Parameter``s already normalised; only ``tool_choice`` needs the tools."""
    choice = normalize_tool_choice(tool_choice, tools)
    return AnswerSpec(tools, choice, parallel, response, constrained, alignment, tool_format, tool_call_bias)
