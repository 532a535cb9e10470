"""Mistral calls: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`` to the end of the answer.

The chat template renders tools (``[AVAILABLE_TOOLS]``), calls and results
(``[TOOL_RESULTS]``) itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aligned_llm.answer.formats.base import ParsedCall, ToolFormat, json_arguments, parse_call_object, structural

TOOL_CALLS = "[TOOL_CALLS]"
SEPARATOR = ", "


class MistralFormat(ToolFormat):
    """Mistral's ``[TOOL_CALLS]`` list of JSON calls."""

    name = "mistral"
    open = TOOL_CALLS
    close = None
    separator = ", "
    call_object = '{"name": '

    @classmethod
    def matches(cls, template: str) -> bool:
        return TOOL_CALLS in template

    def _list(self, tools: Sequence[Any], parallel: bool) -> Any:
        st = structural()
        tags = [
            st.TagFormat(
                begin=f'{{"name": {json.dumps(tool.name)}, "arguments": ', content=json_arguments(tool), end="}"
            )
            for tool in tools
        ]
        return st.TagsWithSeparatorFormat(
            tags=tags, separator=SEPARATOR, at_least_one=True, stop_after_first=not parallel
        )

    def calls(self, tools: Sequence[Any], parallel: bool) -> Any:
        st = structural()
        return st.TagFormat(begin=TOOL_CALLS + "[", content=self._list(tools, parallel), end="]")

    def auto(self, tools: Sequence[Any], parallel: bool) -> Any:
        st = structural()
        return st.TriggeredTagsFormat(
            triggers=[TOOL_CALLS], tags=[self.calls(tools, parallel)], stop_after_first=True, excludes=self.excludes()
        )

    def excludes(self) -> list[str]:
        return ["[TOOL_RESULTS]", "[/TOOL_RESULTS]"]

    def parse_block(self, body: str, tools: Sequence[Any]) -> list[ParsedCall] | None:
        try:
            value = json.loads(body.strip())
        except ValueError:
            return None
        if not isinstance(value, list):
            value = [value]
        calls = [parse_call_object(item) for item in value]
        return None if not calls or any(call is None for call in calls) else calls  # type: ignore[return-value]
