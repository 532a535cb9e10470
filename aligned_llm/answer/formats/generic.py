"""The library's own format, for chat templates without a tools branch (the bundled SmolLM2).

As llama.cpp does for templates it does not know, the answer under ``tool_choice="auto"`` is
an explicit choice written by the grammar: it opens with ``{"`` and goes on either with
``tool_calls": [{"name": ..., "arguments": {...}}, ...]}`` (calls, valid by construction) or
with ``response"`` (the model answers). Unlike llama.cpp, the choice is **calibrated**: at that
token the model's own log-probability of the call branch, plus ``tool_call_bias``, is compared
with that of the answer branch (forced to choose, a small model leans to calling, measured in
docs/results.md). When it answers, the ``{"response"`` opening is not the answer: the prose is
decoded afresh, steered by the method, from the conversation without the tool listing.
Unless ``parallel_tool_calls=True`` is given, an answer holds one call (the bundled model,
allowed more, adds calls nobody asked for; an agent calls again after the result).

Past calls and their results are folded into the user message they answer ("Tool results:"
and one line per call), which the bundled model reads as context and answers from.
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

DECISION_PREFIX = '{"'
CALL_BRANCH = 'tool_calls": ['
ANSWER_BRANCH = 'response"'
CALLS_OPEN = DECISION_PREFIX + CALL_BRANCH
CALLS_CLOSE = "]}"
ANSWER_OPENING = DECISION_PREFIX + ANSWER_BRANCH
"""What an ``"auto"`` answer writes when the decision is to answer in prose."""
SEPARATOR = ", "

TOOL_PROMPT = (
    "You can call these tools:\n{tools}\n\n"
    'Answer with one JSON object: {{"tool_calls": [{{"name": ..., "arguments": {{...}}}}]}} to call tools, '
    'or {{"response": "..."}} to answer the user directly.'
)
"""The system-message section listing the tools and the two ways to answer."""
RESULT_LINE = "The tool {name}({arguments}) returned: {result}"
ANSWER_FROM_RESULTS = ("Answer using this result.", "Answer using these results.")
"""The last line of a user message with folded results (one result, several)."""


def tool_prompt_text(tools: Sequence[ToolSpec]) -> str:
    """:data:`TOOL_PROMPT` with one JSON line per tool."""
    return TOOL_PROMPT.format(tools="\n".join(json.dumps(tool.as_openai(), ensure_ascii=False) for tool in tools))


def fold_tool_rounds(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls and results folded into the user message before them.

    One :data:`RESULT_LINE` per result, in the order of the results, then
    :data:`ANSWER_FROM_RESULTS` (chosen by measurement: the bundled model answered from results
    written this way more often than from results in the system message or in a user turn of
    their own, docs/tools.md). Assistant messages that only called tools disappear (their text,
    if any, is kept).
    """
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    pending: list[tuple[str, dict[str, Any]]] = []
    lines: dict[int, list[str]] = {}
    folded: list[dict[str, Any]] = []
    for message in conversation:
        if message.get("tool_calls"):
            for call in message["tool_calls"]:
                calls[call["id"]] = (call["function"]["name"], call["function"]["arguments"])
                pending.append(calls[call["id"]])
            if message["content"]:
                folded.append({"role": "assistant", "content": message["content"]})
            continue
        if message["role"] != "tool":
            folded.append(message)
            continue
        call_id = message.get("tool_call_id")
        name, arguments = calls[call_id] if call_id in calls else pending[0]
        if (name, arguments) in pending:
            pending.remove((name, arguments))
        user = next((index for index in range(len(folded) - 1, -1, -1) if folded[index]["role"] == "user"), None)
        if user is None:
            folded.insert(0, {"role": "user", "content": ""})
            lines = {index + 1: found for index, found in lines.items()}
            user = 0
        arguments_json = json.dumps(arguments, ensure_ascii=False)
        lines.setdefault(user, []).append(
            RESULT_LINE.format(name=name, arguments=arguments_json, result=message["content"])
        )
    for user, found in lines.items():
        closing = ANSWER_FROM_RESULTS[len(found) > 1]
        text = "\n".join([*found, closing])
        content = folded[user]["content"]
        folded[user] = dict(folded[user], content=f"{content}\n\n{text}" if content else text)
    return folded


class GenericFormat(ToolFormat):
    """The calibrated call-or-answer envelope for templates that know no tool format."""

    name = "generic"
    open = CALLS_OPEN
    close = None
    separator = ", "
    call_object = '{"name": '
    open_in_body = True
    native = False
    decides = True
    parallel = False

    @classmethod
    def matches(cls, template: str) -> bool:
        return True

    def _calls(self, tools: Sequence[ToolSpec], parallel: bool) -> Any:
        st = structural()
        tags = [
            st.TagFormat(
                begin=f'{{"name": {json.dumps(tool.name)}, "arguments": ', content=json_arguments(tool), end="}"
            )
            for tool in tools
        ]
        calls = st.TagsWithSeparatorFormat(
            tags=tags, separator=SEPARATOR, at_least_one=True, stop_after_first=not parallel
        )
        return st.SequenceFormat(
            elements=[st.ConstStringFormat(value=CALL_BRANCH), calls, st.ConstStringFormat(value=CALLS_CLOSE)]
        )

    def calls(self, tools: Sequence[ToolSpec], parallel: bool) -> Any:
        st = structural()
        return st.SequenceFormat(elements=[st.ConstStringFormat(value=DECISION_PREFIX), self._calls(tools, parallel)])

    def auto(self, tools: Sequence[ToolSpec], parallel: bool) -> Any:
        st = structural()
        branches = st.OrFormat(elements=[self._calls(tools, parallel), st.ConstStringFormat(value=ANSWER_BRANCH)])
        return st.SequenceFormat(elements=[st.ConstStringFormat(value=DECISION_PREFIX), branches])

    def parse_block(self, body: str, tools: Sequence[ToolSpec]) -> list[ParsedCall] | None:
        try:
            value = json.loads(body.strip())
        except ValueError:
            return None
        items = value.get("tool_calls") if isinstance(value, dict) else None
        if not isinstance(items, list) or not items:
            return None
        calls = [parse_call_object(item) for item in items]
        return None if any(call is None for call in calls) else calls  # type: ignore[return-value]

    def render(
        self,
        conversation: list[dict[str, Any]],
        tools: Sequence[ToolSpec],
        instructions: str,
        *,
        supports_system: bool,
        default_system: str,
    ) -> Rendered:
        section = system_section(tool_prompt_text(tools) if tools else "", instructions)
        return with_system_text(fold_tool_rounds(conversation), section, supports_system, default_system), {}
