"""Grammar-constrained decoding on tiny random models, whose free text is garbage: every call and
structured answer must still parse and validate, under every method, greedy and sampled, batched,
streamed and with stop strings."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest
import torch
from pydantic import BaseModel, Field

from aligned_llm import AlignedLLM, DecodeSettings
from aligned_llm.answer.constraint import constrain_scores
from aligned_llm.answer.formats.generic import GenericFormat
from aligned_llm.answer.formats.hermes import HermesFormat
from aligned_llm.answer.grammar import grammars_for
from aligned_llm.testing import WIDE_CONTEXT_WINDOW, build_tiny_model, count_forwards

ARGS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 10},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "days", "unit"],
}
FORECAST = {"type": "function", "function": {"name": "forecast", "description": "Weather forecast", "parameters": ARGS}}
ALARM = {
    "type": "function",
    "function": {
        "name": "set_alarm",
        "parameters": {"type": "object", "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23}}},
    },
}
TOOLS = [FORECAST, ALARM]
SCHEMAS = {"forecast": ARGS, "set_alarm": ALARM["function"]["parameters"]}
PROMPT = "What will the weather be in Oslo for the next three days?"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
}
METHODS = {
    "vanilla": {"method": "vanilla"},
    "opad": {"method": "opad", "principle": "Talk like a pirate."},
    "linear": {"method": "linear", "principle": "Talk like a pirate."},
    "pad": {"method": "pad", "profile": "pirate"},
    "pad-k1": {"method": "pad", "profile": "pirate", "k": 1},
}
SAMPLED = {"temperature": 1.0, "seed": 3}
ONE_CALL = {"tool_choice": "required", "parallel_tool_calls": False}


def assert_valid_calls(result, names=("forecast", "set_alarm")):
    assert result.finish_reason == "tool_calls", result
    assert result.tool_calls
    assert result.text == ""
    for call in result.tool_calls:
        assert call.name in names
        jsonschema.validate(call.arguments, SCHEMAS[call.name])


@pytest.mark.parametrize("sampling", [{}, SAMPLED], ids=["greedy", "sampled"])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_makes_valid_calls(tiny_wide_llm, method, sampling):
    result = tiny_wide_llm.generate(
        PROMPT, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_new_tokens=120,
        **METHODS[method], **sampling,
    )  # fmt: skip
    assert_valid_calls(result)
    assert len(result.tool_calls) == 1


@pytest.mark.parametrize("sampling", [{}, SAMPLED], ids=["greedy", "sampled"])
def test_aad_makes_valid_calls(tiny_wide_pair_llm, sampling):
    result = tiny_wide_pair_llm.generate(PROMPT, method="aad", tools=TOOLS, **ONE_CALL, max_new_tokens=120, **sampling)
    assert_valid_calls(result)


@pytest.mark.parametrize("tool_format", ["hermes", "generic"])
def test_parallel_calls_are_each_valid(tiny_wide_llm, tool_format):
    settings = {"tools": TOOLS, "tool_choice": "required", "max_new_tokens": 200, "tool_format": tool_format}
    result = tiny_wide_llm.generate(PROMPT, parallel_tool_calls=True, **settings, **METHODS["opad"])
    assert len(result.tool_calls) >= 2
    for call in result.tool_calls:
        jsonschema.validate(call.arguments, SCHEMAS[call.name])
    assert result.text == ""


def test_the_generic_format_writes_one_call_unless_parallel_calls_are_asked_for(tiny_wide_llm):
    settings = {"tools": TOOLS, "tool_choice": "required", "max_new_tokens": 200, **METHODS["opad"]}
    assert len(tiny_wide_llm.generate(PROMPT, **settings).tool_calls) == 1
    assert len(tiny_wide_llm.generate(PROMPT, tool_format="hermes", **settings).tool_calls) >= 2


def test_without_the_grammar_the_tiny_model_makes_no_call(tiny_wide_llm):
    free = tiny_wide_llm.generate(PROMPT, tools=TOOLS, tool_choice="required", constrained=False, max_new_tokens=40)
    assert free.tool_calls == ()
    assert free.finish_reason != "tool_calls"
    assert free.text


def test_named_tool_and_single_call(tiny_wide_llm):
    named = tiny_wide_llm.generate(PROMPT, tools=TOOLS, tool_choice="set_alarm", max_new_tokens=120, **SAMPLED)
    assert_valid_calls(named, names=("set_alarm",))
    as_dict = {"type": "function", "function": {"name": "forecast"}}
    single = tiny_wide_llm.generate(
        PROMPT, tools=TOOLS, tool_choice=as_dict, parallel_tool_calls=False, max_new_tokens=120
    )
    assert_valid_calls(single, names=("forecast",))
    assert len(single.tool_calls) == 1


def test_auto_lets_the_model_answer_in_prose_and_none_disables_tools(tiny_wide_llm):
    auto = tiny_wide_llm.generate(PROMPT, tools=TOOLS, max_new_tokens=30)
    assert auto.text and auto.tool_calls == ()
    assert "<tool_response>" not in auto.text
    none = tiny_wide_llm.generate(PROMPT, tools=TOOLS, tool_choice="none", max_new_tokens=30)
    assert none.tool_calls == () and none.text
    assert none == tiny_wide_llm.generate(PROMPT, max_new_tokens=30)


@pytest.mark.parametrize("method", ["vanilla", "opad", "pad"])
def test_structured_answers_parse_and_validate(tiny_wide_llm, method):
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    result = tiny_wide_llm.generate(
        PROMPT, response_format=response_format, max_new_tokens=150, **METHODS[method], **SAMPLED
    )
    assert result.finish_reason == "stop", result
    assert result.parsed == json.loads(result.text)
    jsonschema.validate(result.parsed, PERSON)


def test_pydantic_response_format_returns_an_instance(tiny_wide_llm):
    class Person(BaseModel):
        name: str = Field(max_length=12)
        age: int = Field(ge=0, le=120)

    result = tiny_wide_llm.generate(PROMPT, response_format=Person, max_new_tokens=150)
    assert isinstance(result.parsed, Person)
    assert result.parsed == Person.model_validate_json(result.text)


def test_response_format_or_tool_calls_under_auto(tiny_wide_llm):
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    result = tiny_wide_llm.generate(PROMPT, tools=TOOLS, response_format=response_format, max_new_tokens=150)
    if result.tool_calls:
        assert_valid_calls(result)
    else:
        jsonschema.validate(result.parsed, PERSON)


def test_batch_of_constrained_prompts_equals_each_alone(tiny_wide_llm):
    prompts = [PROMPT, [{"role": "user", "content": "Wake me up at seven."}]]
    settings = {"tools": TOOLS, **ONE_CALL, "max_new_tokens": 80, "method": "opad"}
    batch = tiny_wide_llm.generate(prompts, principle="Be brief.", **settings)
    for prompt, result in zip(prompts, batch, strict=True):
        assert_valid_calls(result)
        alone = tiny_wide_llm.generate(prompt, principle="Be brief.", **settings)
        assert alone.token_ids == result.token_ids
        assert [(c.name, c.arguments) for c in alone.tool_calls] == [(c.name, c.arguments) for c in result.tool_calls]


async def test_requests_with_and_without_grammars_share_one_batch(tiny_wide_llm):
    constrained = {"tools": TOOLS, "tool_choice": "required", "max_new_tokens": 60}
    free = {"max_new_tokens": 60}
    alone, forwards_alone = [], 0
    for settings in (constrained, free):
        with count_forwards(tiny_wide_llm) as forwards:
            alone.append(tiny_wide_llm.generate(PROMPT, **settings))
        forwards_alone += forwards.count
    with count_forwards(tiny_wide_llm) as forwards:
        mixed = await asyncio.gather(
            *(tiny_wide_llm.agenerate(PROMPT, **settings) for settings in (constrained, free, constrained))
        )
    assert [result.token_ids for result in mixed] == [alone[0].token_ids, alone[1].token_ids, alone[0].token_ids]
    assert alone[0].token_ids != alone[1].token_ids
    assert forwards.count < forwards_alone, "three concurrent requests took fewer forwards than two alone: one batch"


@pytest.mark.parametrize(
    "settings",
    [
        {"tools": TOOLS, "tool_choice": "required"},
        {"tools": TOOLS, **ONE_CALL, **SAMPLED, "method": "opad", "principle": "Be brief."},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}},
    ],
    ids=["calls", "calls-opad-sampled", "json"],
)
def test_stream_equals_generate(tiny_wide_llm, settings):
    result = tiny_wide_llm.generate(PROMPT, max_new_tokens=80, **settings)
    stream = tiny_wide_llm.stream(PROMPT, max_new_tokens=80, **settings)
    deltas = list(stream.deltas())
    assert "".join(delta.text for delta in deltas) == result.text
    pieces = [piece for delta in deltas for piece in delta.tool_calls]
    streamed_calls = [(p.index, p.name, json.loads(p.arguments)) for p in pieces]
    assert streamed_calls == [(i, c.name, c.arguments) for i, c in enumerate(result.tool_calls)]
    assert [p.id for p in pieces] == [c.id for c in stream.result.tool_calls]
    assert stream.result.token_ids == result.token_ids
    assert stream.result.parsed == result.parsed
    assert "".join(tiny_wide_llm.stream(PROMPT, max_new_tokens=80, **settings)) == result.text


def test_stop_strings_never_cut_a_call_or_a_json_answer(tiny_wide_llm):
    calls = tiny_wide_llm.generate(PROMPT, tools=TOOLS, **ONE_CALL, max_new_tokens=120, stop=['"', "city", "}"])
    assert_valid_calls(calls)
    response_format = {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    answer = tiny_wide_llm.generate(PROMPT, response_format=response_format, max_new_tokens=120, stop=['"', ":"])
    jsonschema.validate(answer.parsed, PERSON)


def test_stop_strings_still_cut_the_prose(tiny_wide_llm):
    full = tiny_wide_llm.generate(PROMPT, tools=TOOLS, max_new_tokens=30)
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    assert stop.strip() and full.tool_calls == ()
    cut = tiny_wide_llm.generate(PROMPT, tools=TOOLS, max_new_tokens=30, stop=stop)
    assert cut.text == full.text[: full.text.index(stop)].rstrip()
    assert cut.finish_reason == "stop"


def test_alignment_off_in_spans_decodes_calls_from_the_first_row(tiny_wide_llm):
    common = {"tools": [FORECAST], **ONE_CALL, "max_new_tokens": 80, "principle": "Talk like a pirate."}
    off = tiny_wide_llm.generate(PROMPT, method="opad", beta=0.2, constrained_alignment="off", **common)
    steer = tiny_wide_llm.generate(PROMPT, method="opad", beta=0.2, constrained_alignment="steer", **common)
    direct = tiny_wide_llm.generate(PROMPT, method="vanilla", **common)
    assert_valid_calls(off)
    assert_valid_calls(steer)
    assert off.token_ids == direct.token_ids
    assert steer.token_ids != off.token_ids


def test_alignment_off_still_steers_the_prose(tiny_wide_llm):
    common = {"tools": TOOLS, "max_new_tokens": 20, "principle": "Talk like a pirate.", "method": "opad", "beta": 0.2}
    off = tiny_wide_llm.generate(PROMPT, constrained_alignment="off", **common)
    steer = tiny_wide_llm.generate(PROMPT, constrained_alignment="steer", **common)
    assert off.tool_calls == () == steer.tool_calls
    assert off.token_ids == steer.token_ids
    assert (
        off.token_ids
        != tiny_wide_llm.generate(PROMPT, tools=TOOLS, max_new_tokens=20, principle="Talk like a pirate.").token_ids
    )


def test_a_padded_model_vocabulary_never_yields_padding_ids(tokenizer):
    padded = AlignedLLM(
        build_tiny_model(seed=5, vocab_size=len(tokenizer) + 64, context_window=WIDE_CONTEXT_WINDOW), tokenizer
    )
    with torch.no_grad():
        padded.model.lm_head.weight[len(tokenizer) :] *= 50
    result = padded.generate(PROMPT, tools=TOOLS, **ONE_CALL, max_new_tokens=120, **SAMPLED)
    assert_valid_calls(result)
    assert max(result.token_ids) < len(tokenizer)
    assert max(padded.generate(PROMPT, max_new_tokens=10).token_ids) >= len(tokenizer)


def test_grammars_compile_once_per_tokenizer_and_spec(tiny_wide_llm):
    grammars = grammars_for(tiny_wide_llm.tokenizer, len(tiny_wide_llm.tokenizer), [2])
    assert grammars is grammars_for(tiny_wide_llm.tokenizer, len(tiny_wide_llm.tokenizer), [2])
    spec = DecodeSettings(tools=TOOLS).output
    hermes = HermesFormat()
    assert grammars.compile(spec, hermes) is grammars.compile(DecodeSettings(tools=TOOLS).output, HermesFormat())
    required = DecodeSettings(tools=TOOLS, tool_choice="required").output
    assert grammars.compile(spec, hermes) is not grammars.compile(required, hermes)
    assert grammars.compile(spec, hermes) is not grammars.compile(spec, GenericFormat())


def _accepts(tiny_llm, schema, text: str) -> bool:
    import xgrammar

    grammars = grammars_for(tiny_llm.tokenizer, len(tiny_llm.tokenizer), [2])
    response_format = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    spec = DecodeSettings(response_format=response_format).output
    return xgrammar.GrammarMatcher(grammars.compile(spec)).accept_string(text)


def test_bounded_strings_refuse_raw_control_characters(tiny_wide_llm):
    """A ``maxLength`` string admits only what ``json.loads`` accepts (xgrammar 0.2.8 alone admits ESC and tab)."""
    assert _accepts(tiny_wide_llm, PERSON, '{"name": "Ann", "age": 3}')
    assert json.loads('{"name": "Ann", "age": 3}') == {"name": "Ann", "age": 3}
    assert not _accepts(tiny_wide_llm, PERSON, '{"name": "A\x1bn", "age": 3}')
    assert not _accepts(tiny_wide_llm, PERSON, '{"name": "A\tn", "age": 3}')


def test_numbers_have_at_most_sixteen_digits_per_part(tiny_wide_llm):
    """Runaway digits end: 16 digits before the point and 16 after are allowed, 17 are not."""
    schema = {"type": "object", "properties": {"x": {"type": "number"}, "n": {"type": "integer"}}}
    sixteen, seventeen = "1234567890123456", "12345678901234567"
    assert _accepts(tiny_wide_llm, schema, f'{{"x": {sixteen}.{sixteen}, "n": -{sixteen}}}')
    assert not _accepts(tiny_wide_llm, schema, f'{{"x": 1.{seventeen}}}')
    assert not _accepts(tiny_wide_llm, schema, f'{{"x": {seventeen}}}')
    assert not _accepts(tiny_wide_llm, schema, f'{{"n": {seventeen}}}')
    pattern = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[0-9]*$"}}}
    assert _accepts(tiny_wide_llm, pattern, f'{{"code": "{seventeen * 2}"}}'), "a pattern keeps its own bounds"


def test_constrain_scores_falls_back_when_the_method_allows_nothing(tiny_wide_llm):
    grammars = grammars_for(tiny_wide_llm.tokenizer, len(tiny_wide_llm.tokenizer), [2])
    from aligned_llm.answer.constraint import Constraint

    required = DecodeSettings(tools=TOOLS, tool_choice="required").output
    constraint = Constraint(grammars.compile(required, HermesFormat()))
    vocab = len(tiny_wide_llm.tokenizer)
    scores = torch.full((2, vocab), float("-inf"))
    scores[:, 7] = 0.0
    logits = torch.randn(2, 1, vocab)
    masked, _ = constrain_scores(scores, torch.zeros_like(scores), logits, [constraint.start(), None])
    allowed = torch.isfinite(masked[0]).nonzero().flatten().tolist()
    assert allowed and 7 not in allowed
    assert all('<tool_call>\n{"name": "'.startswith(tiny_wide_llm.tokenizer.decode([token])) for token in allowed)
    assert torch.equal(masked[0, allowed], torch.log_softmax(logits[0, 0], -1)[allowed])
    assert torch.equal(masked[1], scores[1])
