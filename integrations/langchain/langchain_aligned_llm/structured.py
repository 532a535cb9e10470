"""``with_structured_output`` for ``ChatAlignedLLM``: a schema in, validated objects out.

The grammar engine makes the answer valid by construction, so every method returns what the
schema describes (unless the answer is cut by ``max_tokens`` first, which raises):

- ``"json_schema"`` (default): the core's ``response_format`` holds the schema; the whole
  answer is JSON valid against it.
- ``"function_calling"``: the schema is bound as the only tool, and one call of it is required;
  the call's arguments are the object.
- ``"json_mode"``: JSON mode. Without a schema the answer is any JSON object (returned as a
  dict). With one, the grammar enforces it as in ``"json_schema"``: hosted JSON modes only
  promise JSON and leave the keys to the prompt, but a local grammar can enforce the schema at
  no cost, and JSON that then failed validation would help nobody.

Pydantic classes (v2 or v1) give validated instances; TypedDicts, JSON schemas and OpenAI tool
dicts give dicts. Streaming yields the one finished object (a cut or partial object would not
validate), as other providers' ``json_schema`` methods do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, Literal

from aligned_llm import InvalidSettingError
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ValidationError
from pydantic.v1 import ValidationError as ValidationErrorV1

from langchain_aligned_llm.tools import bind_kwargs, check_strict, openai_tool

Method = Literal["json_schema", "function_calling", "json_mode"]
METHODS = ("json_schema", "function_calling", "json_mode")


def structured_runnable(
    model: BaseChatModel,
    schema: Mapping[str, Any] | type | None,
    *,
    method: str = "json_schema",
    include_raw: bool = False,
    strict: bool | None = None,
    **kwargs: Any,
) -> Runnable[LanguageModelInput, Any]:
    """The runnable ``with_structured_output`` returns: the bound model, then the parser."""
    if method not in METHODS:
        raise InvalidSettingError("method", f"must be one of {', '.join(METHODS)}; got {method!r}")
    if schema is None and method != "json_mode":
        raise InvalidSettingError("schema", f"is required with method={method!r} (only json_mode takes none)")
    if kwargs:
        raise InvalidSettingError(next(iter(kwargs)), "is not an argument of with_structured_output")
    check_strict(strict)
    tool = openai_tool(schema, strict, "schema") if schema is not None else None
    # what LangChain reports to callbacks and tracing (popped before the call: it never reaches the core)
    tracing = {"ls_structured_output_format": {"kwargs": {"method": method, "strict": strict}, "schema": schema}}
    tracing = tracing if schema is not None else {}
    if tool is not None and method == "function_calling":
        name = tool["function"]["name"]
        bound = model.bind(**bind_kwargs([tool], name, parallel_tool_calls=False), **tracing)
        parse = _parser(schema, lambda message: _tool_arguments(message, name))
    else:
        bound = model.bind(response_format=_response_format(tool, strict), **tracing)
        parse = _parser(schema, _json_content)
    parser = RunnableLambda(parse, name="parse_structured_output")
    if not include_raw:
        return bound | parser
    with_parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    without = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | with_parsed.with_fallbacks([without], exception_key="parsing_error")


def _response_format(tool: Mapping[str, Any] | None, strict: bool | None) -> dict[str, Any]:
    """The core's ``response_format``: the schema's function spec, or any JSON object when there is none (json_mode)."""
    if tool is None:
        return {"type": "json_object"}
    function = tool["function"]
    json_schema: dict[str, Any] = {"name": function["name"], "schema": function.get("parameters", {})}
    if function.get("description"):
        json_schema["description"] = function["description"]
    if strict is not None:
        json_schema["strict"] = strict
    return {"type": "json_schema", "json_schema": json_schema}


def _parser(schema: Mapping[str, Any] | type | None, extract: Callable[[AIMessage], Any]) -> Callable[[AIMessage], Any]:
    """Message -> the object: JSON from ``extract``, validated into ``schema`` when it is a pydantic class."""

    def parse(message: AIMessage) -> Any:
        value = extract(message)
        if not (isinstance(schema, type) and is_basemodel_subclass(schema)):
            return value
        try:
            return schema.model_validate(value) if hasattr(schema, "model_validate") else schema.parse_obj(value)
        except (ValidationError, ValidationErrorV1) as error:
            raise OutputParserException(f"the answer does not fit {schema.__name__}: {error}") from error

    return parse


def _json_content(message: AIMessage) -> Any:
    try:
        # strict=False: a control character inside a string is accepted, as the core's grammar lets it through
        return json.loads(message.text, strict=False)
    except json.JSONDecodeError as error:
        raise OutputParserException(_unparsed(message, f"is not JSON ({error})"), llm_output=message.text) from error


def _tool_arguments(message: AIMessage, name: str) -> dict[str, Any]:
    for call in message.tool_calls:
        if call["name"] == name:
            return call["args"]
    raise OutputParserException(_unparsed(message, f"has no call of {name!r}"), llm_output=message.text)


def _unparsed(message: AIMessage, problem: str) -> str:
    if message.response_metadata.get("finish_reason") == "length":
        return f"the answer was cut at max_tokens before it was complete, so it {problem}; raise max_tokens"
    return f"the answer {problem}"
