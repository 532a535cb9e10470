"""Qwen3-Coder / Qwen3.5 XML calls::

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

A parameter whose schema type is ``string`` is written as text; any other value as JSON (whitespace
around a value is not part of it, as in vLLM's parser). Plain
Qwen3 writes Hermes calls (``hermes``). The chat template renders tools, calls and results.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from aligned_llm.answer.formats.base import JSON_WHITESPACE, ParsedCall, ToolFormat, structural
from aligned_llm.answer.formats.hermes import CALL_CLOSE, CALL_OPEN, RESPONSE_CLOSE, RESPONSE_OPEN

_FUNCTION = re.compile(r"^\s*<function=([^>\n]+)>\n?(.*?)\n?</function>\s*$", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.DOTALL)


class Qwen3Format(ToolFormat):
    """Qwen3-Coder's XML-like calls inside ``<tool_call>`` tags."""

    name = "qwen3"
    open = CALL_OPEN
    close = CALL_CLOSE

    @classmethod
    def matches(cls, template: str) -> bool:
        return "<function=" in template and "<parameter=" in template

    def _tags(self, tools: Sequence[Any]) -> list[Any]:
        st = structural()
        return [
            st.TagFormat(
                begin=f"{CALL_OPEN}\n<function={tool.name}>\n",
                content=st.JSONSchemaFormat(
                    json_schema=tool.parameters, style="qwen_xml", max_whitespace_cnt=JSON_WHITESPACE
                ),
                end=f"\n</function>\n{CALL_CLOSE}",
            )
            for tool in tools
        ]

    def calls(self, tools: Sequence[Any], parallel: bool) -> Any:
        return structural().TagsWithSeparatorFormat(
            tags=self._tags(tools), separator="\n", at_least_one=True, stop_after_first=not parallel
        )

    def auto(self, tools: Sequence[Any], parallel: bool) -> Any:
        st = structural()
        tags = self._tags(tools)
        first = st.TriggeredTagsFormat(triggers=[CALL_OPEN], tags=tags, stop_after_first=True, excludes=self.excludes())
        if not parallel:
            return first
        return st.SequenceFormat(elements=[first, st.TagsWithSeparatorFormat(tags=tags, separator="\n")])

    def excludes(self) -> list[str]:
        return [RESPONSE_OPEN, RESPONSE_CLOSE]

    def parse_block(self, body: str, tools: Sequence[Any]) -> list[ParsedCall] | None:
        match = _FUNCTION.match(body)
        if match is None:
            return None
        name = match.group(1).strip()
        schemas = next((tool.parameters.get("properties", {}) for tool in tools if tool.name == name), {})
        arguments: dict[str, Any] = {}
        for parameter, raw in _PARAMETER.findall(match.group(2)):
            arguments[parameter] = _value(raw, schemas.get(parameter, {}))
        return [(name, arguments)]


def _value(raw: str, schema: Any) -> Any:
    """A parameter's text as its value, whitespace around it dropped: the text for strings, else JSON (or the text)."""
    text = raw.strip()
    if isinstance(schema, dict) and schema.get("type") == "string":
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text
