"""Tool calling and structured output on the bundled SmolLM2: a real agent turn, then its answer."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

pytestmark = pytest.mark.bundled

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city name"}},
            "required": ["city"],
        },
    },
}
TIMER = {
    "type": "function",
    "function": {
        "name": "set_timer",
        "description": "Start a countdown timer",
        "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]},
    },
}
QUESTION = "What's the weather like in Paris right now?"


def test_weather_question_yields_a_sensible_call_then_a_prose_answer(bundled_llm):
    first = bundled_llm.generate(QUESTION, tools=[WEATHER, TIMER], tool_choice="required", max_new_tokens=80)
    assert first.finish_reason == "tool_calls"
    assert [(call.name, call.arguments) for call in first.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert first.text == ""
    assert first.output_tokens < 80, "the repeated call ends the answer"
    call = first.tool_calls[0]
    conversation = [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call.id, "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21, "condition": "sunny"}'},
    ]
    answer = bundled_llm.generate(conversation, tools=[WEATHER, TIMER], max_new_tokens=60)
    assert answer.finish_reason == "stop"
    assert answer.tool_calls == ()
    assert "sunny" in answer.text.lower()
    assert "<tool_call>" not in answer.text and "<tool_response>" not in answer.text


def test_streamed_call_matches_the_generated_one(bundled_llm):
    settings = {"tools": [WEATHER, TIMER], "tool_choice": "set_timer", "max_new_tokens": 60}
    prompt = "Set a timer for 10 minutes."
    result = bundled_llm.generate(prompt, **settings)
    assert [(call.name, call.arguments) for call in result.tool_calls] == [("set_timer", {"minutes": 10})]
    stream = bundled_llm.stream(prompt, **settings)
    pieces = [piece for delta in stream.deltas() for piece in delta.tool_calls]
    assert [(p.index, p.name, json.loads(p.arguments)) for p in pieces] == [(0, "set_timer", {"minutes": 10})]
    assert pieces[0].id == stream.result.tool_calls[0].id
    assert stream.result.finish_reason == "tool_calls"


def test_structured_output_extracts_the_fields(bundled_llm):
    class Person(BaseModel):
        name: str
        age: int

    result = bundled_llm.generate("Ann is 30 years old. Extract the person.", response_format=Person, max_new_tokens=40)
    assert result.parsed == Person(name="Ann", age=30)
    assert result.finish_reason == "stop"
    any_object = bundled_llm.generate(
        "Describe a cat as JSON with its name and colour.", response_format={"type": "json_object"}, max_new_tokens=60
    )
    assert isinstance(any_object.parsed, dict) and any_object.parsed
    assert any_object.parsed == json.loads(any_object.text)


def test_a_principle_steers_the_prose_but_not_the_arguments(bundled_llm):
    settings = {"tools": [WEATHER], "tool_choice": "required", "max_new_tokens": 60, "method": "opad"}
    result = bundled_llm.generate(QUESTION, principle="Write everything in capital letters.", **settings)
    assert [(call.name, call.arguments) for call in result.tool_calls] == [("get_weather", {"city": "Paris"})]
