"""Issue 23 on the core (``AlignedLLM``): every case refused by name before any forward, grammar work bounded.

``HOSTILE_CALLS`` is the table: a row is a decoding call (prompt and settings) that must raise
``error`` naming ``parameter``, run through ``generate``, ``stream`` and ``agenerate`` with the
model's forwards counted (none may run). The schema bounds themselves are unit-tested in
``test_schema_limits.py``; loads (a garbage ``pytorch_model.bin`` …) on every surface in
``test_bad_inputs.py``. The rest: cheap limits come before any grammar compiles, the grammar
cache is bounded, ``close(timeout=...)`` is checked, and a structured answer that cannot complete
is refused up front or ended early (its forwards counted).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel

from aligned_llm import AlignedLLM, DecodeSettings, InvalidSettingError, PromptTooLongError
from aligned_llm.answer import grammar
from aligned_llm.answer.budget import TokenSpelling
from aligned_llm.answer.grammar import GRAMMAR_CACHE_SIZE, Grammars
from aligned_llm.answer.spec import AnswerSpec, ResponseFormat
from aligned_llm.testing import count_forwards


def tool(name: str, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters or {"type": "object"}}}


def json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def _callable_model() -> type[BaseModel]:
    class WithCallable(BaseModel):
        transform: Callable[[int], int]

    return WithCallable


CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CALL = {"id": "call-1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
FIXED_ANSWER = {"type": "string", "enum": ["the one and only answer this schema allows, written out in full"]}


@dataclass(frozen=True)
class HostileCall:
    """A call that must raise ``error`` naming ``parameter`` before any forward."""

    name: str
    parameter: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    prompt: Any = "What is the weather in Oslo?"
    error: type[Exception] = InvalidSettingError


HOSTILE_CALLS = [
    HostileCall("response format $ref to a file", "response_format",
                {"response_format": json_schema({"$ref": "file:///etc/passwd"})}),
    HostileCall("tool $ref to a URL", "tools",
                {"tools": [tool("f", {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/x.json"}}})]}),
    HostileCall("minLength 10**7", "response_format", {"response_format": json_schema(
        {"type": "object", "properties": {"s": {"type": "string", "minLength": 10**7}}, "required": ["s"]})}),
    HostileCall("minItems = maxItems = 10**9", "tools", {"tools": [tool("f", {"type": "object", "properties": {
        "xs": {"type": "array", "minItems": 10**9, "maxItems": 10**9}}})]}),
    HostileCall("pattern a{1000000}", "response_format",
                {"response_format": json_schema({"type": "string", "pattern": "a{1000000}"})}),
    HostileCall("nested 1,000 levels deep", "response_format", {"response_format": json_schema(nested(1000))}),
    HostileCall("tool name with a newline", "tools", {"tools": [tool("f\n")], "tool_choice": "required"}),
    HostileCall("pydantic field without a JSON schema", "response_format", {"response_format": _callable_model()}),
    HostileCall("history starting with a tool message", "prompt[0]", {"tools": [tool("weather", CITY)]},
                prompt=[{"role": "tool", "tool_call_id": "x", "content": "1"}, {"role": "user", "content": "Hi"}]),
    HostileCall("tool result for an unknown call id", "prompt[2].tool_call_id", {"tools": [tool("weather", CITY)]},
                prompt=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                        {"role": "tool", "tool_call_id": "zzz", "content": "1"}]),
    HostileCall("past call of a tool not in tools", "prompt[1].tool_calls", {"tools": [tool("other", CITY)]},
                prompt=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
                        {"role": "tool", "tool_call_id": "call-1", "content": "1"}]),
    HostileCall("OPAD beta 1e-40", "beta", {"method": "opad", "principle": "Be brief.", "beta": 1e-40}),
    HostileCall("PAD beta 1e38", "beta", {"method": "pad", "profile": "A sailor.", "beta": 1e38}),
    HostileCall("linear rho 1e39", "rho", {"method": "linear", "principle": "Be brief.", "rho": 1e39}),
    HostileCall("a required call longer than max_new_tokens", "max_new_tokens",
                {"tools": [tool("weather", CITY)], "tool_choice": "required", "max_new_tokens": 3}),
    HostileCall("a response format longer than max_new_tokens", "max_new_tokens",
                {"response_format": json_schema(FIXED_ANSWER), "max_new_tokens": 4}),
    HostileCall("a prompt longer than the context window", "prompt",
                {"tools": [tool("weather", CITY)], "max_new_tokens": 10**6 // 2}, error=PromptTooLongError),
]  # fmt: skip


def _generate(llm: AlignedLLM, call: HostileCall) -> Any:
    return llm.generate(call.prompt, **{"max_new_tokens": 8, **call.settings})


def _stream(llm: AlignedLLM, call: HostileCall) -> Any:
    return list(llm.stream(call.prompt, **{"max_new_tokens": 8, **call.settings}))


def _agenerate(llm: AlignedLLM, call: HostileCall) -> Any:
    return asyncio.run(llm.agenerate(call.prompt, **{"max_new_tokens": 8, **call.settings}))


SURFACES = {"generate": _generate, "stream": _stream, "agenerate": _agenerate}


@pytest.mark.parametrize("surface", list(SURFACES))
@pytest.mark.parametrize("call", HOSTILE_CALLS, ids=[call.name for call in HOSTILE_CALLS])
def test_a_hostile_call_is_refused_naming_the_parameter_before_any_forward(tiny_wide_llm, call, surface):
    with count_forwards(tiny_wide_llm) as forwards, pytest.raises(InvalidSettingError) as raised:
        SURFACES[surface](tiny_wide_llm, call)
    assert type(raised.value) is call.error
    assert raised.value.parameter == call.parameter
    assert str(raised.value).startswith(f"{call.parameter}: ")
    assert forwards.count == 0


def test_the_refused_budget_says_how_many_tokens_the_answer_needs(tiny_wide_llm):
    with pytest.raises(InvalidSettingError, match=r"max_new_tokens: is 3, but a tool call needs at least \d+ tokens"):
        tiny_wide_llm.generate("Hi", tools=[tool("weather", CITY)], tool_choice="required", max_new_tokens=3)


def test_cheap_limits_come_before_any_grammar_compiles(tiny_wide_llm, monkeypatch):
    """A prompt too long for the context window is refused without compiling its tool's grammar."""
    compiled: list[object] = []
    monkeypatch.setattr(grammar, "tightened_grammar", lambda tag: compiled.append(tag))
    schema = {"type": "object", "properties": {f"p{index}": {"type": "string"} for index in range(200)}}
    with pytest.raises(PromptTooLongError):
        tiny_wide_llm.generate("Hi", tools=[tool("unseen", schema)], tool_choice="required", max_new_tokens=10**6)
    assert compiled == []


@pytest.mark.parametrize("timeout", ["x", -1.0, math.nan, True])
def test_close_checks_its_timeout_before_cancelling_anything(tiny_llm, timeout):
    with pytest.raises(InvalidSettingError) as raised:
        tiny_llm.close(timeout=timeout)
    assert raised.value.parameter == "timeout"


def test_the_grammar_cache_keeps_the_most_recent_formats_and_drops_the_oldest(tiny_llm):
    head = tiny_llm.model.get_output_embeddings()
    grammars = Grammars(tiny_llm.tokenizer, int(head.weight.shape[0]), sorted(tiny_llm.stop_token_ids))
    compiles: list[object] = []
    compiler = grammars.compiler

    class Counting:
        def compile_grammar(self, compiled: Any) -> Any:
            compiles.append(compiled)
            return compiler.compile_grammar(compiled)

    grammars.compiler = Counting()

    def tag(index: int) -> Any:
        schema = {"type": "object", "properties": {f"field_{index}": {"type": "integer"}}}
        return grammar.structural_tag(AnswerSpec(response=ResponseFormat(schema)), None)

    for index in range(GRAMMAR_CACHE_SIZE + 1):
        grammars.compile_tag(tag(index))
    assert grammars.cached() == GRAMMAR_CACHE_SIZE
    assert len(compiles) == GRAMMAR_CACHE_SIZE + 1
    grammars.compile_tag(tag(GRAMMAR_CACHE_SIZE))  # the newest: still cached
    grammars.compile_tag(tag(1))  # the second oldest: still cached
    assert len(compiles) == GRAMMAR_CACHE_SIZE + 1
    grammars.compile_tag(tag(0))  # the oldest was dropped: compiled again
    assert len(compiles) == GRAMMAR_CACHE_SIZE + 2
    assert grammars.cached() == GRAMMAR_CACHE_SIZE


TWO_LONG_NAMES = [tool(f"{letter}_long_shared_suffix_name_for_the_tool", CITY) for letter in "xy"]
"""Two tools whose names differ in the first letter: once it is written, the grammar forces the long rest."""


@pytest.mark.parametrize("stream", [False, True], ids=["generate", "stream"])
def test_a_call_that_can_no_longer_complete_ends_at_once_as_cut(tiny_wide_llm, stream):
    """The answer starts (the opening fits), then the forced name and markup no longer fit: it ends early."""
    settings = {"tools": TWO_LONG_NAMES, "tool_choice": "required", "tool_format": "hermes", "max_new_tokens": 30}
    with count_forwards(tiny_wide_llm) as forwards:
        if stream:
            generation = tiny_wide_llm.stream("Weather in Oslo?", **settings)
            assert "".join(generation) == ""
            result = generation.result
        else:
            result = tiny_wide_llm.generate("Weather in Oslo?", **settings)
    assert (result.finish_reason, result.tool_calls, result.text) == ("length", (), "")
    assert result.output_tokens < 30
    assert forwards.count == result.output_tokens


def test_a_call_that_fits_is_not_ended_early(tiny_wide_llm):
    result = tiny_wide_llm.generate(
        "Weather in Oslo?", tools=[tool("weather", {"type": "object", "properties": {}})], tool_choice="required",
        tool_format="hermes", max_new_tokens=60,
    )  # fmt: skip
    assert result.finish_reason == "tool_calls"
    assert [call.name for call in result.tool_calls] == ["weather"]


def _state_after(llm: AlignedLLM, text: str, budget_after: int, **settings: Any) -> Any:
    """The constraint state of ``settings`` after the tokens of ``text``, with ``budget_after`` tokens left."""
    tokens = llm.tokenizer(text, add_special_tokens=False)["input_ids"]
    constraint = llm._constraint(llm.answer_plan(DecodeSettings(**settings)), len(tokens) + budget_after)
    state = constraint.start()
    for token in tokens:
        state.accept(token)
    return state


def test_a_call_that_completes_in_the_budget_is_not_cut_though_its_envelope_cannot_close(tiny_wide_llm):
    """One ``}`` completes the call (the reader keeps it) though ``}]}`` is forced: one token left is enough."""
    state = _state_after(tiny_wide_llm, '{"tool_calls": [{"name": "f", "arguments": {}', 1,
                         tools=[tool("f", {"type": "object", "properties": {}})], tool_choice="required")  # fmt: skip
    assert state.matcher.find_jump_forward_string() == "}]}"
    assert (state.tokens_needed(), state.cut) == (1, False)


def test_json_whose_forced_rest_cannot_fit_is_cut(tiny_wide_llm):
    schema = {"type": "object", "properties": {"a": FIXED_ANSWER}, "required": ["a"]}
    state = _state_after(tiny_wide_llm, '{"a": ', 3, response_format=json_schema(schema))
    assert state.tokens_needed() > 3
    assert state.cut and state.finished
    roomy = _state_after(tiny_wide_llm, '{"a": ', 40, response_format=json_schema(schema))
    assert not roomy.cut and not roomy.finished


@pytest.mark.parametrize(
    ("text", "fewest"),
    [(b"", 0), (b"abcd", 2), (b"xy", 1), (b"ac", 2), (b"abcab", 2), (b"q", 1), (b"aq", 2)],
    ids=["nothing", "the longest first token is not the best", "the last runs past the end", "no token spans it",
         "two of three", "unwritable: its length", "half unwritable"],
)  # fmt: skip
def test_the_fewest_tokens_that_write_a_text(text, fewest):
    spelling = TokenSpelling([b"a", b"ab", b"abc", b"c", b"cd", b"cab", b"x", b"xyz", b""])
    assert spelling.fewest_tokens(text) == fewest
