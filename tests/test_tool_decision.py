"""The generic format's calibrated decision to call, its prose follow-up, and the rules that keep agents from loops."""

from __future__ import annotations

import math

import torch

from aligned_llm import DecodeSettings

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
PROMPT = "What's the weather like in Paris right now?"


def _log_odds_by_hand(llm, prompt, tools, opening_ids):
    """The decision's log-odds recomputed from scratch: a full forward, every token's text compared by string."""
    ids = llm.encode_rows([{"role": "user", "content": prompt}], DecodeSettings(tools=tools))[0] + opening_ids
    with torch.no_grad():
        logprobs = torch.log_softmax(llm.model(torch.tensor([ids])).logits[0, -1].float(), -1)
    written = llm.tokenizer.decode(opening_ids)
    call, answer = [], []
    for token in range(logprobs.shape[0]):
        text = written + llm.tokenizer.decode([token])
        if len(text) <= 2:
            continue
        if '{"tool_calls": ['.startswith(text) or text.startswith('{"tool_calls": ['):
            call.append(logprobs[token].item())
        if '{"response"'.startswith(text) or text.startswith('{"response"'):
            answer.append(logprobs[token].item())
    return math.log(sum(math.exp(v) for v in call)) - math.log(sum(math.exp(v) for v in answer))


def test_the_decision_compares_the_models_own_branch_masses_with_the_bias(tiny_wide_llm):
    forced = tiny_wide_llm.generate(PROMPT, tools=[WEATHER], tool_call_bias=50.0, max_new_tokens=60)
    assert forced.tool_calls and forced.tool_calls[0].name == "get_weather" and forced.text == ""
    opening = [token for token in forced.token_ids[:3]]
    while tiny_wide_llm.tokenizer.decode(opening) != '{"':
        opening.pop()
    by_hand = _log_odds_by_hand(tiny_wide_llm, PROMPT, [WEATHER], opening)
    assert forced.call_log_odds is not None
    assert abs(forced.call_log_odds - by_hand) < 1e-3
    just_above = tiny_wide_llm.generate(PROMPT, tools=[WEATHER], tool_call_bias=-by_hand + 0.05, max_new_tokens=60)
    just_below = tiny_wide_llm.generate(PROMPT, tools=[WEATHER], tool_call_bias=-by_hand - 0.05, max_new_tokens=60)
    assert [c.arguments for c in just_above.tool_calls] == [c.arguments for c in forced.tool_calls]
    assert just_below.tool_calls == () and just_below.call_log_odds == forced.call_log_odds


def test_a_decision_to_answer_is_exactly_the_answer_without_the_tools_and_streams_no_markup(tiny_wide_llm):
    answered = tiny_wide_llm.generate(PROMPT, tools=[WEATHER], tool_call_bias=-50.0, max_new_tokens=30)
    plain = tiny_wide_llm.generate(PROMPT, tools=[WEATHER], tool_choice="none", max_new_tokens=30)
    assert answered.tool_calls == () and answered.text == plain.text and answered.text
    assert answered.token_ids == plain.token_ids
    assert answered.output_tokens > plain.output_tokens
    stream = tiny_wide_llm.stream(PROMPT, tools=[WEATHER], tool_call_bias=-50.0, max_new_tokens=30)
    deltas = list(stream.deltas())
    assert "".join(delta.text for delta in deltas) == plain.text
    assert not any("{" in delta.text and "response" in delta.text for delta in deltas)
    assert stream.result.text == plain.text


def test_a_call_this_turn_already_made_gives_a_prose_answer_instead(tiny_wide_llm):
    history = [
        {"role": "user", "content": "What time is it?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": {}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:30"},
    ]  # fmt: skip
    again = tiny_wide_llm.generate(history, tools=[TIME], tool_call_bias=50.0, max_new_tokens=80)
    assert again.output_tokens - len(again.token_ids) < 80, "the repeat ended the first part as soon as it was written"
    plain = tiny_wide_llm.generate(history, tools=[TIME], tool_choice="none", max_new_tokens=80)
    assert again.tool_calls == ()
    assert again.text == plain.text and again.text
    new_turn = [*history, {"role": "assistant", "content": "It is 12:30."}, {"role": "user", "content": "And now?"}]
    called = tiny_wide_llm.generate(new_turn, tools=[TIME], tool_call_bias=50.0, max_new_tokens=80)
    assert [call.name for call in called.tool_calls] == ["get_time"], "a new user turn may call it again"


def test_no_second_call_starts_when_it_could_not_finish(tiny_wide_llm):
    settings = {"tools": [WEATHER], "tool_choice": "required", "tool_format": "hermes", "temperature": 1.0, "seed": 4}
    single = tiny_wide_llm.generate(PROMPT, parallel_tool_calls=False, max_new_tokens=80, **settings)
    assert len(single.tool_calls) == 1 and single.finish_reason == "tool_calls"
    budget = len(single.token_ids) + 3
    parallel = tiny_wide_llm.generate(PROMPT, max_new_tokens=budget, **settings)
    assert parallel.finish_reason == "tool_calls", "it ended instead of starting a call it could not finish"
    assert [c.arguments for c in parallel.tool_calls] == [c.arguments for c in single.tool_calls]
    assert parallel.text == "" and len(parallel.token_ids) < budget


def test_under_opad_the_model_without_the_principle_decides(tiny_wide_llm):
    plain = tiny_wide_llm.generate(PROMPT, tools=[WEATHER], tool_call_bias=50.0, max_new_tokens=3)
    guided = tiny_wide_llm.generate(
        PROMPT, tools=[WEATHER], tool_call_bias=50.0, max_new_tokens=3, method="opad", principle="Talk like a pirate."
    )
    direct = tiny_wide_llm.generate(
        PROMPT, tools=[WEATHER], tool_call_bias=50.0, max_new_tokens=3, principle="Talk like a pirate."
    )
    assert abs(guided.call_log_odds - plain.call_log_odds) < 1e-4
    assert abs(direct.call_log_odds - plain.call_log_odds) > 1e-3, "direct prompting has only the guided row"


def test_beside_tools_a_json_answer_is_the_answer_and_an_envelope_of_calls_is_calls():
    from aligned_llm import GenerationResult
    from aligned_llm.answer.formats.generic import GenericFormat
    from aligned_llm.answer.reader import AnswerReader
    from aligned_llm.answer.spec import ResponseFormat, normalize_tools

    tools = normalize_tools([WEATHER])
    done = GenerationResult(text="", input_tokens=1, output_tokens=1, finish_reason="stop")
    answer = AnswerReader(GenericFormat(), tools, ResponseFormat(None))
    streamed = answer.feed('{"city": "Paris"}').text
    tail, result = answer.finish(done)
    assert streamed + tail.text == '{"city": "Paris"}' == result.text
    assert result.parsed == {"city": "Paris"} and result.tool_calls == ()
    calls = AnswerReader(GenericFormat(), tools, ResponseFormat(None))
    calls.feed('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}')
    _, result = calls.finish(done)
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert result.text == "" and result.parsed is None and result.finish_reason == "tool_calls"
