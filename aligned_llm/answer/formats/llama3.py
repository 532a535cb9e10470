"""Llama 3.x JSON calls: the answer is ``{"name": ..., "parameters": {...}}`` (several joined by ``; ``).

The chat template renders tools (in the user turn or the system turn) and results (the
``ipython`` role) itself. A call block starts at ``{"name": `` and runs to the end of the
answer; an optional ``<|python_tag|>`` before it is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aligned_llm.answer.formats.base import ParsedCall, ToolFormat, json_arguments, parse_call_object, structural

SEPARATOR = "; "
PYTHON_TAG = "<|python_tag|>"


class Llama3Format(ToolFormat):
    """Llama 3.x custom-tool calls: bare JSON objects with ``parameters``."""

    name = "llama3"
    open = '{"name": '
    close = None
    separator = "; "
    call_object = '{"name": '
    open_in_body = True

    @classmethod
    def matches(cls, template: str) -> bool:
        return "<|start_header_id|>" in template and '"parameters"' in template and "tools" in template

    def _tags(self, tools: Sequence[Any]) -> list[Any]:
        st = structural()
        return [
            st.TagFormat(
                begin=f'{{"name": {json.dumps(tool.name)}, "parameters": ', content=json_arguments(tool), end="}"
            )
            for tool in tools
        ]

    def calls(self, tools: Sequence[Any], parallel: bool) -> Any:
        return structural().TagsWithSeparatorFormat(
            tags=self._tags(tools), separator=SEPARATOR, at_least_one=True, stop_after_first=not parallel
        )

    def auto(self, tools: Sequence[Any], parallel: bool) -> Any:
        st = structural()
        tags = self._tags(tools)
        first = st.TriggeredTagsFormat(triggers=[self.open], tags=tags, stop_after_first=True)
        if not parallel:
            return first
        return st.SequenceFormat(elements=[first, st.TagsWithSeparatorFormat(tags=tags, separator=SEPARATOR)])

    def parse_block(self, body: str, tools: Sequence[Any]) -> list[ParsedCall] | None:
        decoder = json.JSONDecoder()
        text = body.replace(PYTHON_TAG, "").strip()
        calls: list[ParsedCall] = []
        while text:
            try:
                value, end = decoder.raw_decode(text)
            except ValueError:
                return None
            call = parse_call_object(value, ("parameters", "arguments"))
            if call is None:
                return None
            calls.append(call)
            text = text[end:].lstrip().removeprefix(";").lstrip()
        return calls or None
