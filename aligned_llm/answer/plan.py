"""What the facade asks of the answer wing for one request: the prompt rendering, the constraint and the reader.

``AnswerPlan`` ties an :class:`AnswerSpec` to the tool format of the model's chat template. An
``"auto"`` answer with tools has a *follow-up without calls* (:meth:`AnswerPlan.prose`): the
same conversation without the tool listing (``tool_choice="none"``: prose, or the response
format's JSON), decoded when the first answer chose to answer (the ``generic`` format's
decision) or only repeated calls this turn already made.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from aligned_llm.answer.constraint import Constraint
from aligned_llm.answer.formats import ToolFormat, resolve_format
from aligned_llm.answer.formats.base import Rendered
from aligned_llm.answer.grammar import Grammars, prose_tag
from aligned_llm.answer.history import call_key, calls_since_last_user, has_tool_parts
from aligned_llm.answer.reader import AnswerReader
from aligned_llm.answer.spec import AnswerSpec, ToolChoice

CALL_TOKEN_MARGIN = 4
"""Tokens added to a call's opening and a bare ``{"name": ..., "arguments": {}}`` to estimate the shortest call."""


@dataclass(frozen=True)
class AnswerPlan:
    """How one request's answer is prompted, constrained and read.

    ``fmt``: the tool format (of the chat template, or ``tool_format=``); ``None`` when the
    request has no tools. ``is_prose``: the prose follow-up of an ``"auto"`` answer.
    """

    spec: AnswerSpec
    fmt: ToolFormat | None
    is_prose: bool = False

    @property
    def offers_tools(self) -> bool:
        """Whether the prompt lists the tools."""
        return self.spec.calls_tools

    def render(
        self, conversation: list[dict[str, Any]], template: str | None, *, supports_system: bool, default_system: str
    ) -> Rendered:
        """The conversation with tools, past calls, results and the response-format instruction rendered."""
        instructions = "" if self.spec.response is None else self.spec.response.instruction()
        if not self.offers_tools and not instructions and not has_tool_parts(conversation):
            return conversation, {}
        fmt = self.fmt or resolve_format(None, template)
        tools = self.spec.tools if self.offers_tools else ()
        return fmt.render(
            conversation, tools, instructions, supports_system=supports_system, default_system=default_system
        )

    def prose(self) -> AnswerPlan | None:
        """The follow-up answering without calls (prose, or the response format's JSON) for ``"auto"`` with tools."""
        if not self.spec.calls_tools or self.spec.choice.mode != "auto":
            return None
        return AnswerPlan(replace(self.spec, choice=ToolChoice("none")), self.fmt, is_prose=True)

    def constraint(
        self, grammars: Grammars, tokenizer: Any, max_new_tokens: int, decision_row: int = 0
    ) -> Constraint | None:
        """The grammar and rules the engine applies (compiled once, cached); ``None`` for free text.

        ``decision_row``: the method's row whose log-probs take the calibrated decision.
        """
        spec, fmt = self.spec, self.fmt
        if self.is_prose and spec.response is None:
            if not spec.constrained or fmt is None or not fmt.excludes():
                return None
            return Constraint(grammars.compile_tag(prose_tag(fmt)), token_bytes=grammars.token_bytes)
        if spec.is_free_text:
            return None
        calls_fmt = fmt if spec.calls_tools else None
        if not spec.constrained:
            return Constraint(fmt=calls_fmt)
        decides = calls_fmt is not None and calls_fmt.decides and spec.choice.mode == "auto" and spec.response is None
        return Constraint(
            grammars.compile(spec, calls_fmt),
            whole=spec.response is not None or spec.choice.mode == "required" or decides,
            alignment=spec.alignment,
            token_bytes=grammars.token_bytes,
            fmt=calls_fmt,
            tools=spec.callable_tools,
            decision=replace(grammars.decision(spec.tool_call_bias), row=decision_row) if decides else None,
            separator_tokens=None
            if calls_fmt is None
            else grammars.tokens_starting(calls_fmt.separator.strip() or calls_fmt.separator),
            min_call_tokens=self._shortest_call(tokenizer) if calls_fmt is not None else 0,
            max_new_tokens=max_new_tokens,
            must_complete=self.must_complete,
            spelling=grammars.spelling,
        )

    @property
    def must_complete(self) -> bool:
        """Whether the answer is of use only complete: a response format's JSON, or the calls "required" asks for."""
        spec = self.spec
        return spec.constrained and (spec.response is not None or (spec.calls_tools and spec.choice.mode == "required"))

    def _shortest_call(self, tokenizer: Any) -> int:
        """An estimate of the fewest tokens a call of one of the tools takes."""
        assert self.fmt is not None
        markup = self.fmt.open + (self.fmt.close or "")
        return (
            min(
                len(
                    tokenizer(markup + json.dumps({"name": tool.name, "arguments": {}}), add_special_tokens=False)[
                        "input_ids"
                    ]
                )
                for tool in self.spec.callable_tools
            )
            + CALL_TOKEN_MARGIN
        )

    def for_conversation(
        self, constraint: Constraint | None, conversation: Sequence[dict[str, Any]]
    ) -> Constraint | None:
        """``constraint`` knowing the calls this turn of ``conversation`` already made (none may be made again)."""
        if constraint is None or constraint.fmt is None or self.spec.choice.mode != "auto":
            return constraint
        earlier = frozenset(call_key(name, arguments) for name, arguments in calls_since_last_user(conversation))
        return replace(constraint, earlier=earlier) if earlier else constraint

    def reader(self, conversation: Sequence[dict[str, Any]]) -> AnswerReader:
        """A fresh reader of one answer to ``conversation``."""
        if self.is_prose:
            return AnswerReader(None, response=self.spec.response, must_complete=self.must_complete)
        fmt = self.fmt if self.spec.calls_tools else None
        earlier = calls_since_last_user(conversation) if self.spec.choice.mode == "auto" else []
        holds = fmt is not None and fmt.decides and self.spec.response is None
        return AnswerReader(
            fmt, self.spec.callable_tools, self.spec.response, earlier, holds=holds, must_complete=self.must_complete
        )


def plan_answer(spec: AnswerSpec, template: str | None) -> AnswerPlan:
    """The plan of ``spec`` for a chat template (its tool format checked against ``tool_format``)."""
    fmt = resolve_format(spec.tool_format, template) if spec.calls_tools or spec.tool_format else None
    return AnswerPlan(spec, fmt)
