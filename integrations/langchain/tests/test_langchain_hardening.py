"""Bad input to the LangChain surfaces (issue 23's cases) is refused by name before any model forward.

Each row: what a user does, the error it raises, the parameter the error names. A forward hook
on the shared model counts forwards: none may run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aligned_llm import AlignedLLM, InvalidSettingError
from aligned_llm.testing import count_forwards
from langchain_core.tools import tool
from pydantic import BaseModel, ValidationError

from langchain_aligned_llm import AlignedLLMText, ChatAlignedLLM


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class WithCallable(BaseModel):
    """A schema whose field has no JSON schema."""

    callback: Callable[[int], int]


Case = Callable[[ChatAlignedLLM], Any]

CASES: dict[str, tuple[Case, type[Exception], str]] = {
    "structured-output-of-int": (lambda chat: chat.with_structured_output(int), InvalidSettingError, "schema"),
    "structured-output-without-json-schema": (
        lambda chat: chat.with_structured_output(WithCallable), InvalidSettingError, "schema",
    ),
    "structured-output-strict-yes": (
        lambda chat: chat.with_structured_output({"title": "T", "type": "object"}, strict="yes"),
        InvalidSettingError, "strict",
    ),
    "bind-tools-strict-yes": (lambda chat: chat.bind_tools([add], strict="yes"), InvalidSettingError, "strict"),
    "bind-tools-without-json-schema": (
        lambda chat: chat.bind_tools([WithCallable]), InvalidSettingError, "tools[0]",
    ),
    "bind-tools-not-a-tool": (lambda chat: chat.bind_tools([3]), InvalidSettingError, "tools[0]"),
    "per-call-beta-as-text": (lambda chat: chat.invoke("Hi", method="opad", principle="Be brief.", beta="2"),
                              InvalidSettingError, "beta"),
    "constructor-unknown-field": (lambda chat: ChatAlignedLLM(llm=chat.llm, foo=1), ValidationError, "foo"),
    "constructor-beta-as-text": (lambda chat: ChatAlignedLLM(llm=chat.llm, beta="2"), ValidationError, "beta"),
    "constructor-answer-cannot-fit": (
        lambda chat: ChatAlignedLLM(llm=chat.llm, max_tokens=10**9), ValidationError, "max_tokens",
    ),
}  # fmt: skip


@pytest.fixture
def forwards(tools_tiny: AlignedLLM):
    """The forwards of the tiny model while the test runs."""
    with count_forwards(tools_tiny) as counted:
        yield counted


@pytest.mark.parametrize(("case", "error_type", "parameter"), CASES.values(), ids=list(CASES))
def test_bad_input_is_refused_by_name_before_any_forward(tools_tiny, forwards, case, error_type, parameter):
    chat = ChatAlignedLLM(llm=tools_tiny, max_tokens=8)
    with pytest.raises(error_type) as error:
        case(chat)
    if isinstance(error.value, InvalidSettingError):
        assert error.value.parameter == parameter
    else:  # pydantic's error: the field's location, or (checks across fields) the core's message, names it
        (detail,) = error.value.errors()
        assert detail["loc"] == (parameter,) or str(detail["msg"]).startswith(f"Value error, {parameter}:")
    assert forwards.count == 0


async def test_text_llm_abatch_fails_only_the_bad_input(tools_tiny):
    text_llm = AlignedLLMText(llm=tools_tiny, max_tokens=4)
    results = await text_llm.abatch(["", "hi"], return_exceptions=True)
    assert isinstance(results[0], InvalidSettingError)
    assert results[1] == text_llm.invoke("hi")
