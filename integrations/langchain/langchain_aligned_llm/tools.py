"""``bind_tools`` for ``ChatAlignedLLM``: LangChain tools as the core's OpenAI-style specs; LangChain's tool choices.

Tools, tool choice and response format are settings of the core's registry, so fields and
per-call keywords (as for hosted chat models): ``bind_tools`` is ``bind(tools=...,
tool_choice=...)`` after translation, and they reach the core's ``generate``/``stream`` as
they are. What cannot be translated is refused here, at bind time, naming the parameter; the
core checks the rest when called, before decoding (repeated tool names, which LangChain's own
tests bind; schemas its grammar engine cannot compile).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aligned_llm import InvalidSettingError
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic.errors import PydanticUserError

ToolLike = Mapping[str, Any] | type | Callable[..., Any] | BaseTool

_CHOICE_WORDS = {"auto": "auto", "none": "none", "required": "required", "any": "required"}
TOOL_KINDS = "a LangChain tool, a pydantic class, a TypedDict, a function or an OpenAI-style dict"


def check_strict(strict: object) -> bool | None:
    """``strict``: ``True``, ``False`` or ``None`` (a string such as ``"yes"`` would silently mean True)."""
    if strict is not None and not isinstance(strict, bool):
        raise InvalidSettingError("strict", f"must be True, False or None, got {strict!r}")
    return strict


def openai_tool(tool: object, strict: bool | None, parameter: str) -> dict[str, Any]:
    """One tool (or a structured-output schema) as an OpenAI function spec; ``parameter`` names it in errors."""
    try:
        spec = convert_to_openai_tool(tool, strict=strict)  # type: ignore[arg-type]
    except (ValueError, TypeError, AttributeError, PydanticUserError) as error:
        reason = str(error).strip().splitlines()[0]
        raise InvalidSettingError(
            parameter, f"must be {TOOL_KINDS} whose arguments have a JSON schema; got {tool!r} ({reason})"
        ) from error
    if spec.get("type") != "function" or "name" not in spec.get("function", {}):
        raise InvalidSettingError(
            parameter, f"only function tools can be bound (a local model has no built-in tools): {spec!r}"
        )
    return spec


def openai_tools(tools: Sequence[ToolLike], strict: bool | None = None) -> list[dict[str, Any]]:
    """LangChain tools, pydantic classes, functions, TypedDicts and dicts as OpenAI function specs.

    ``strict=True`` closes the schemas (no extra properties), as OpenAI's strict mode does.
    """
    check_strict(strict)
    return [openai_tool(tool, strict, f"tools[{index}]") for index, tool in enumerate(tools)]


def core_tool_choice(choice: object, names: Sequence[str]) -> str | dict[str, Any] | None:
    """LangChain's ``tool_choice`` as the core's: ``"auto"``, ``"none"``, ``"required"`` or one tool's name.

    Accepted: ``None`` (the core's default, ``"auto"``), ``"auto"``, ``"none"``, ``"any"`` and
    ``"required"`` (at least one call), a tool name, ``True`` (the only tool, or any tool),
    and ``{"type": "function", "function": {"name": ...}}`` / ``{"name": ...}`` dicts.
    """
    if choice is None:
        return None
    if choice is True:
        return names[0] if len(names) == 1 else "required"
    if isinstance(choice, str):
        if choice in _CHOICE_WORDS:
            return _CHOICE_WORDS[choice]
        return _known_tool(choice, names)
    if isinstance(choice, Mapping):
        name = choice.get("function", {}).get("name") if "function" in choice else choice.get("name")
        if isinstance(name, str):
            return _known_tool(name, names)
    raise InvalidSettingError(
        "tool_choice",
        f"must be 'auto', 'none', 'any', 'required', True, a tool name or {{'type': 'function', 'function': "
        f"{{'name': ...}}}}; got {choice!r}",
    )


def _known_tool(name: str, names: Sequence[str]) -> str:
    if name not in names:
        raise InvalidSettingError("tool_choice", f"names no bound tool: {name!r}; the tools are {list(names)}")
    return name


def bind_kwargs(
    tools: Sequence[ToolLike], tool_choice: object, parallel_tool_calls: bool | None, strict: bool | None = None
) -> dict[str, Any]:
    """The keywords ``bind_tools`` binds: specs, the choice and parallelism, each only when given.

    No tools (``create_agent`` with a response format and no tools binds an empty list) binds
    nothing: a choice or parallelism is then meaningless, and only ``None``/``"auto"``/``"none"``
    are accepted as the choice.
    """
    specs = openai_tools(tools, strict)
    names = [spec["function"]["name"] for spec in specs]
    choice = core_tool_choice(tool_choice, names)
    if not specs and choice not in (None, "auto", "none"):
        raise InvalidSettingError("tool_choice", f"{tool_choice!r} needs at least one tool")
    kwargs: dict[str, Any] = {}
    if specs:
        kwargs["tools"] = specs
        if choice is not None:
            kwargs["tool_choice"] = choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
    return kwargs
