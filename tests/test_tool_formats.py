"""Tool formats per family: detection, render → constrain → parse round trips, streams and multi-turn histories.

Tiny random models carry a minimal template of each family (``tool_templates.py``); under a
grammar even a random model writes valid calls, so what is checked is the format's plumbing.
"""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from aligned_llm import AlignedLLM, DecodeSettings, InvalidSettingError
from aligned_llm.answer import detect_format, resolve_format
from aligned_llm.answer.formats.generic import GenericFormat
from aligned_llm.answer.reader import CallSplitter
from aligned_llm.testing import WIDE_CONTEXT_WINDOW, build_tiny_model
from tests.test_constraints import ARGS, FORECAST
from tests.tool_templates import FAMILIES

TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
TOOLS = [FORECAST, TIME]
SCHEMAS = {"forecast": ARGS, "get_time": TIME["function"]["parameters"]}
PROMPT = "What will the weather be in Oslo for the next three days?"
PAST_CALL = {"city": "Oslo", "days": 3, "unit": "celsius"}
SAMPLED = {"temperature": 1.0, "seed": 11}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tokenizer) -> tuple[str, AlignedLLM]:
    with_template = copy.deepcopy(tokenizer)
    with_template.chat_template = FAMILIES[request.param]
    model = build_tiny_model(seed=21, vocab_size=len(tokenizer), context_window=WIDE_CONTEXT_WINDOW)
    return request.param, AlignedLLM(model, with_template)


def _history(call_id: str, arguments: dict) -> list[dict]:
    call = {"id": call_id, "type": "function", "function": {"name": "forecast", "arguments": arguments}}
    return [
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny, 18 C"},
    ]


def _assert_valid(result) -> None:
    assert result.tool_calls and result.text == "" and result.finish_reason == "tool_calls"
    for call in result.tool_calls:
        jsonschema.validate(call.arguments, SCHEMAS[call.name])


def test_each_family_template_is_detected_and_the_bundled_one_is_generic(family, tokenizer):
    name, llm = family
    assert detect_format(llm.chat_format.template) == name
    assert llm.answer_plan(DecodeSettings(tools=TOOLS)).fmt.name == name
    assert detect_format(tokenizer.chat_template) == "generic"
    assert detect_format(None) == "generic"


def test_a_family_format_the_template_contradicts_is_refused_but_generic_is_not(family):
    name, llm = family
    other = next(candidate for candidate in FAMILIES if candidate != name)
    with pytest.raises(InvalidSettingError) as error:
        llm.generate(PROMPT, tools=TOOLS, tool_format=other)
    assert error.value.parameter == "tool_format" and repr(name) in str(error.value)
    assert isinstance(resolve_format("generic", llm.chat_format.template), GenericFormat)


def test_the_template_renders_a_past_call_that_the_format_parses_back(family):
    _, llm = family
    tokenizer = llm.tokenizer
    history = _history("call_1", PAST_CALL)[:2]
    tools = list(TOOLS)
    prefix = tokenizer.apply_chat_template(history[:1], tools=tools, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(history, tools=tools, tokenize=False, add_generation_prompt=False)
    assert full.startswith(prefix)
    answer = full[len(prefix) :].removesuffix("\n").removesuffix("<|im_end|>")
    fmt = llm.answer_plan(DecodeSettings(tools=TOOLS)).fmt
    splitter = CallSplitter(fmt, fmt_tools(llm))
    for start in range(0, len(answer), 5):
        splitter.feed(answer[start : start + 5])
    splitter.finish()
    assert [(call.name, call.arguments) for call in splitter.calls] == [("forecast", PAST_CALL)]
    assert splitter.text == ""


def fmt_tools(llm: AlignedLLM):
    return DecodeSettings(tools=TOOLS).output.tools


def test_required_calls_are_valid_parse_back_from_the_raw_text_and_stream_the_same(family):
    _, llm = family
    settings = {"tools": TOOLS, "tool_choice": "required", "max_new_tokens": 160, **SAMPLED}
    result = llm.generate(PROMPT, **settings)
    _assert_valid(result)
    raw = llm.tokenizer.decode(result.token_ids, skip_special_tokens=False).removesuffix("<|im_end|>")
    splitter = CallSplitter(llm.answer_plan(DecodeSettings(tools=TOOLS)).fmt, fmt_tools(llm))
    splitter.feed(raw)
    splitter.finish()
    assert [(c.name, c.arguments) for c in splitter.calls] == [(c.name, c.arguments) for c in result.tool_calls]
    stream = llm.stream(PROMPT, **settings)
    deltas = list(stream.deltas())
    assert "".join(delta.text for delta in deltas) == ""
    pieces = [piece for delta in deltas for piece in delta.tool_calls]
    assert [(piece.name, json.loads(piece.arguments)) for piece in pieces] == [
        (call.name, call.arguments) for call in stream.result.tool_calls
    ]
    assert [(c.name, c.arguments) for c in stream.result.tool_calls] == [
        (c.name, c.arguments) for c in result.tool_calls
    ]


def test_auto_answers_hold_no_call_markup_and_only_valid_calls(family):
    _, llm = family
    fmt = llm.answer_plan(DecodeSettings(tools=TOOLS)).fmt
    for seed in range(4):
        result = llm.generate(PROMPT, tools=TOOLS, max_new_tokens=60, temperature=1.0, seed=seed)
        assert fmt.open.strip() not in result.text
        for call in result.tool_calls:
            jsonschema.validate(call.arguments, SCHEMAS[call.name])


def test_a_multi_turn_history_renders_in_the_family_markup_and_decodes_on(family):
    name, llm = family
    first = llm.generate(PROMPT, tools=TOOLS, tool_choice="forecast", max_new_tokens=160, **SAMPLED)
    _assert_valid(first)
    call = first.tool_calls[0]
    history = _history(call.id, call.arguments)
    text = llm.tokenizer.decode(llm.encode_rows(history, DecodeSettings(tools=TOOLS))[0])
    assert "sunny, 18 C" in text and json.dumps(call.arguments["city"])[1:-1] in text
    assert {"hermes": "<tool_response>", "llama3": "ipython", "mistral": "[TOOL_RESULTS]", "qwen3": "<tool_response>"}[
        name
    ] in text
    again = llm.generate(history, tools=TOOLS, tool_choice="get_time", max_new_tokens=160, **SAMPLED)
    _assert_valid(again)
