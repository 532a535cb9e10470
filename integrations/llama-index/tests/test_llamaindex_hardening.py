"""Bad input to AlignedHF (issue 23's cases) is refused by name before any model forward.

Each row: what a user does, the error it raises, the parameter the error names. A forward hook
on the tiny model counts forwards: none may run. A tool call cut by the token budget says
which budget to raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aligned_llm import AlignedLLM, InvalidSettingError
from aligned_llm.testing import count_forwards
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel

from llama_index.llms.aligned import AlignedHF


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class WithCallable(BaseModel):
    """Arguments whose field has no JSON schema."""

    callback: Callable[[int], int]


ADD = FunctionTool.from_defaults(add)
NO_SCHEMA = FunctionTool.from_defaults(lambda callback: callback, name="no_schema", fn_schema=WithCallable)
MESSAGES = [ChatMessage(role=MessageRole.USER, content="Add 2 and 3.")]

Case = Callable[[AlignedHF], Any]

CASES: dict[str, tuple[Case, str]] = {
    "tools-not-tools": (lambda llm: llm.chat_with_tools(["x"], "Hi"), "tools[0]"),
    "tool-without-json-schema": (lambda llm: llm.chat_with_tools([NO_SCHEMA], "Hi"), "tools[0]"),
    "unknown-tool-choice": (lambda llm: llm.chat_with_tools([ADD], "Hi", tool_choice="subtract"), "tool_choice"),
    "per-call-beta-as-text": (lambda llm: llm.chat(MESSAGES, method="opad", principle="Be brief.", beta="2"), "beta"),
    "per-call-unknown-setting": (lambda llm: llm.chat(MESSAGES, betta=2.0), "betta"),
    "constructor-unknown-field": (lambda llm: AlignedHF(llm.core, foo=1), "foo"),
    "constructor-beta-as-text": (lambda llm: AlignedHF(llm.core, beta="2"), "beta"),
    "constructor-answer-cannot-fit": (lambda llm: AlignedHF(llm.core, max_new_tokens=10**9), "max_new_tokens"),
    "assignment-out-of-range": (lambda llm: setattr(llm, "top_p", 0.0), "top_p"),
}


@pytest.fixture
def forwards(tools_core: AlignedLLM):
    """The forwards of the tiny model while the test runs."""
    with count_forwards(tools_core) as counted:
        yield counted


@pytest.mark.parametrize(("case", "parameter"), CASES.values(), ids=list(CASES))
def test_bad_input_is_refused_by_name_before_any_forward(tools_core, forwards, case, parameter):
    llm = AlignedHF(tools_core, max_new_tokens=8)
    with pytest.raises(InvalidSettingError) as error:
        case(llm)
    assert error.value.parameter == parameter
    assert forwards.count == 0


def test_a_tool_call_that_cannot_fit_is_refused_naming_the_budget_before_any_forward(tools_core, forwards):
    llm = AlignedHF(tools_core, max_new_tokens=3)
    with pytest.raises(InvalidSettingError, match=r"is 3, but a tool call needs at least \d+ tokens") as error:
        llm.chat_with_tools([ADD], "Add 2 and 3.", tool_required=True)
    assert error.value.parameter == "max_new_tokens"
    assert forwards.count == 0


def test_a_tool_call_cut_by_the_budget_names_the_budget_to_raise(tools_core, forwards):
    llm = AlignedHF(tools_core, max_new_tokens=20)
    response = llm.chat_with_tools([ADD], "Add 2 and 3.", tool_required=True)
    assert response.raw["finish_reason"] == "length"
    with pytest.raises(ValueError, match=r"max_new_tokens=20 \(the max_tokens budget\).*raise max_new_tokens"):
        llm.get_tool_calls_from_response(response)
    assert 0 < forwards.count <= 20
