"""Tool specs, tool_choice, response_format and message validation; rendering; parsing calls out of text."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from aligned_llm import DecodeSettings, InvalidSettingError, StreamDelta, ToolCallDelta
from aligned_llm.answer.constraint import protect_blocks
from aligned_llm.answer.formats.generic import ANSWER_FROM_RESULTS, GenericFormat
from aligned_llm.answer.formats.generic import tool_prompt_text as generic_prompt
from aligned_llm.answer.formats.hermes import HermesFormat, tool_prompt_text
from aligned_llm.answer.plan import plan_answer
from aligned_llm.answer.reader import CallSplitter
from aligned_llm.answer.spec import normalize_response_format, normalize_tool_choice, normalize_tools
from aligned_llm.prompts import ChatFormat, normalize_prompts
from tests.tool_templates import HERMES

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 21}'},
]


# ---------------------------------------------------------------- settings errors


@pytest.mark.parametrize(
    ("settings", "parameter", "message"),
    [
        ({"tools": WEATHER}, "tools", "list of tool dicts"),
        ({"tools": [{"name": "get_weather"}]}, "tools", '"type": "function"'),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools", "letters, digits"),
        ({"tools": [WEATHER, WEATHER]}, "tools", "unique"),
        ({"tools": [{"type": "function", "function": {"name": "f\n"}}]}, "tools", "letters, digits"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/x.json"}}}}}]},
            "tools", "$ref",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x",
                                                                        "schema": {"$ref": "file:///etc/passwd"}}}},
            "response_format", "$ref",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
            "tools",
            "type 'object'",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "x": {1}}}}]},
            "tools",
            "not JSON",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "x"}}}},
                    }
                ]
            },
            "tools",
            "cannot be compiled",
        ),
        ({"tools": [WEATHER], "tool_choice": "get_time"}, "tool_choice", "unknown tool 'get_time'"),
        ({"tool_choice": "required"}, "tool_choice", "needs tools"),
        ({"tool_choice": "get_weather"}, "tool_choice", "no tools were given"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function"}}, "tool_choice", "a dict must be"),
        ({"tools": [WEATHER], "tool_choice": 3}, "tool_choice", "must be 'auto'"),
        ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls", "True or False"),
        ({"response_format": {"type": "xml"}}, "response_format", "'json_schema'"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format", "schema"),
        ({"response_format": "json"}, "response_format", "pydantic"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"type": "integer", "minimum": 5, "maximum": 1}},
                }
            },
            "response_format",
            "cannot be compiled",
        ),
        ({"constrained": 1}, "constrained", "True or False"),
        ({"constrained_alignment": "loud"}, "constrained_alignment", "'steer', 'off'"),
        ({"tools": [WEATHER], "tool_format": "llama4"}, "tool_format", "one of 'mistral', 'llama3'"),
        ({"tools": [WEATHER], "tool_format": "mistral"}, "tool_format", "contradicts the chat template"),
        ({"tools": [WEATHER], "tool_call_bias": 80.0}, "tool_call_bias", "<= 50"),
        ({"tools": [WEATHER], "tool_call_bias": float("nan")}, "tool_call_bias", "finite"),
        ([{"role": "tool", "content": "1"}, {"role": "user", "content": "hi"}], "prompt[0]", "no assistant message"),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "ok"},
                {"role": "tool", "tool_call_id": "zzz", "content": "1"},
            ],
            "prompt[2]",
            "no assistant message",
        ),
        (
            [*HISTORY[:2], {"role": "tool", "tool_call_id": "call_9", "content": "1"}],
            "prompt[2].tool_call_id",
            "matches no",
        ),
        (json.loads(json.dumps(HISTORY).replace("get_weather", "get_forecast")), "prompt[1].tool_calls", "not one of"),
    ],
)
def test_bad_tool_settings_name_the_parameter_before_any_forward(tiny_llm, settings, parameter, message):
    """Bad settings, formats, margins and impossible histories (a list: the prompt, with tools=[WEATHER])."""
    prompt, settings = ("Hello", settings) if isinstance(settings, dict) else (settings, {"tools": [WEATHER]})
    forwards = []
    handle = tiny_llm.model.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        with pytest.raises(InvalidSettingError) as error:
            tiny_llm.generate(prompt, max_new_tokens=2, **settings)
        with pytest.raises(InvalidSettingError):
            tiny_llm.stream(prompt, max_new_tokens=2, **settings)
    finally:
        handle.remove()
    assert error.value.parameter == parameter
    assert message in str(error.value)
    assert forwards == []


def test_uncompilable_schema_is_accepted_without_the_grammar():
    bad = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "x"}}}},
    }
    assert DecodeSettings(tools=[bad], constrained=False).output.tools[0].name == "f"


@pytest.mark.parametrize(
    ("message", "parameter"),
    [
        ({"role": "tool", "content": 3}, "prompt[1].content"),
        ({"role": "tool", "content": "ok", "tool_call_id": 7}, "prompt[1].tool_call_id"),
        ({"role": "assistant", "content": None, "tool_calls": "get_weather"}, "prompt[1].tool_calls"),
        ({"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}, "prompt[1].tool_calls[0]"),
        (
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]},
            "prompt[1].tool_calls[0].function.arguments",
        ),
        (
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]},
            "prompt[1].tool_calls[0].function.arguments",
        ),
    ],
)
def test_bad_tool_messages_name_their_place(message, parameter):
    with pytest.raises(InvalidSettingError) as error:
        normalize_prompts([{"role": "user", "content": "hi"}, message])
    assert error.value.parameter == parameter


def test_tool_specs_and_choices_normalise():
    tools = normalize_tools([WEATHER, TIME])
    assert [tool.name for tool in tools] == ["get_weather", "get_time"]
    assert tools[1].parameters == {"type": "object", "properties": {}}
    assert normalize_tools(None) == () == normalize_tools([])
    assert normalize_tool_choice("auto", tools).mode == "auto"
    assert normalize_tool_choice("none", ()).mode == "none"
    named = normalize_tool_choice({"type": "function", "function": {"name": "get_time"}}, tools)
    assert (named.mode, named.name) == ("required", "get_time")
    assert normalize_tool_choice("get_weather", tools).name == "get_weather"


def test_response_formats_normalise_and_parse():
    class Person(BaseModel):
        name: str
        age: int

    assert normalize_response_format(None) is None
    assert normalize_response_format({"type": "text"}) is None
    any_object = normalize_response_format({"type": "json_object"})
    assert any_object.grammar_schema == {"type": "object"}
    assert any_object.parse('{"a": [1]}') == {"a": [1]}
    assert any_object.parse("not json") is None
    assert any_object.parse('Sure! ```json\n{"a": 1}\n```') == {"a": 1}
    assert any_object.parse("{ oops") is None
    model = normalize_response_format(Person)
    assert model.schema["required"] == ["name", "age"]
    assert model.parse('{"name": "Ann", "age": 30}') == Person(name="Ann", age=30)
    assert model.parse('{"name": "Ann"}') is None
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    assert (
        normalize_response_format({"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}).schema
        == schema
    )


def test_past_tool_calls_are_normalised():
    conversation, _ = normalize_prompts(HISTORY)
    assert conversation[0][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        ],
    }
    assert conversation[0][2] == {"role": "tool", "content": '{"temperature_c": 21}', "tool_call_id": "call_1"}


# ---------------------------------------------------------------- rendering


def test_bundled_template_gets_the_generic_tool_prompt_and_results_folded_into_the_question(tokenizer):
    chat = ChatFormat(tokenizer)
    conversation, _ = normalize_prompts(HISTORY)
    plan = plan_answer(DecodeSettings(tools=[WEATHER]).output, chat.template)
    assert isinstance(plan.fmt, GenericFormat)
    text = tokenizer.decode(chat.encode(conversation[0], plan))
    system = chat.default_system + "\n\n" + generic_prompt(normalize_tools([WEATHER]))
    assert text == (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?\n\n"
        'The tool get_weather({"city": "Paris"}) returned: {"temperature_c": 21}\n'
        f"{ANSWER_FROM_RESULTS[0]}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert '{"type": "function", "function": {"name": "get_weather", "description": "Get the current' in system


def test_hermes_on_the_bundled_template_renders_the_library_prompt_and_in_turn_results(tokenizer):
    chat = ChatFormat(tokenizer)
    conversation, _ = normalize_prompts(HISTORY)
    plan = plan_answer(DecodeSettings(tools=[WEATHER], tool_format="hermes").output, chat.template)
    text = tokenizer.decode(chat.encode(conversation[0], plan))
    system = chat.default_system + "\n\n" + tool_prompt_text(normalize_tools([WEATHER]))
    assert text == (
        f"<|im_start|>system\n{system}<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_response>\n{"temperature_c": 21}\n</tool_response>\n'
    )


def test_later_turns_keep_the_folded_results_and_a_new_user_turn_follows(tokenizer):
    chat = ChatFormat(tokenizer)
    conversation, _ = normalize_prompts(
        [*HISTORY, {"role": "assistant", "content": "It is 21 C."}, {"role": "user", "content": "Thanks!"}]
    )
    text = tokenizer.decode(chat.encode(conversation[0]))
    assert text.endswith(
        "<|im_start|>user\nWeather in Paris?\n\n"
        'The tool get_weather({"city": "Paris"}) returned: {"temperature_c": 21}\n'
        f"{ANSWER_FROM_RESULTS[0]}<|im_end|>\n"
        "<|im_start|>assistant\nIt is 21 C.<|im_end|>\n"
        "<|im_start|>user\nThanks!<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "You can call these tools" not in text


def test_several_results_fold_in_order_under_one_closing_line(tokenizer):
    two_calls = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
        {"role": "tool", "tool_call_id": "b", "content": "30 C"},
        {"role": "tool", "tool_call_id": "a", "content": "21 C"},
    ]  # fmt: skip
    conversation, _ = normalize_prompts(two_calls)
    text = tokenizer.decode(ChatFormat(tokenizer).encode(conversation[0]))
    assert (
        'Rome?\n\nThe tool get_weather({"city": "Rome"}) returned: 30 C\n'
        'The tool get_weather({"city": "Paris"}) returned: 21 C\n'
        f"{ANSWER_FROM_RESULTS[1]}<|im_end|>"
    ) in text


def test_principle_goes_before_the_tools_and_the_unguided_row_has_none(tiny_llm):
    settings = DecodeSettings(method="opad", principle="Talk like a pirate.", tools=[WEATHER])
    guided, plain = (tiny_llm.tokenizer.decode(ids) for ids in tiny_llm.encode_rows(HISTORY[:1], settings))
    assert "Talk like a pirate.\n\nYou can call these tools" in guided
    assert "pirate" not in plain
    assert plain.replace(tiny_llm.chat_format.default_system, "") != plain
    assert "You can call these tools" in plain


def test_a_template_with_hermes_tools_renders_them_itself(tokenizer):
    import copy

    qwen_like = copy.deepcopy(tokenizer)
    qwen_like.chat_template = HERMES
    chat = ChatFormat(qwen_like)
    plan = plan_answer(DecodeSettings(tools=[WEATHER]).output, chat.template)
    assert type(plan.fmt) is HermesFormat and plan.fmt.template_renders
    conversation, _ = normalize_prompts(HISTORY)
    text = qwen_like.decode(chat.encode(conversation[0], plan))
    assert text.startswith("<|im_start|>system\n# Tools\n<tools>\n" + json.dumps(WEATHER))
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert text.endswith('<tool_response>\n{"temperature_c": 21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n')
    assert "You may call one or more functions" not in text


def test_response_format_instruction_is_in_the_system_message(tokenizer):
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    chat = ChatFormat(tokenizer)
    spec = DecodeSettings(response_format={"type": "json_schema", "json_schema": {"schema": schema}}).output
    text = tokenizer.decode(chat.encode([{"role": "user", "content": "hi"}], plan_answer(spec, chat.template)))
    assert f"matches this JSON schema:\n{json.dumps(schema)}<|im_end|>" in text


def test_tool_choice_none_leaves_the_tools_out(tokenizer):
    chat = ChatFormat(tokenizer)
    plan = plan_answer(DecodeSettings(tools=[WEATHER], tool_choice="none").output, chat.template)
    assert not plan.offers_tools
    text = tokenizer.decode(chat.encode([{"role": "user", "content": "hi"}], plan))
    assert "get_weather" not in text


# ---------------------------------------------------------------- parsing


CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def _parse(text: str, chunk: int) -> tuple[CallSplitter, list[StreamDelta]]:
    parser = CallSplitter(HermesFormat())
    deltas = [parser.feed(text[i : i + chunk]) for i in range(0, len(text), chunk)]
    deltas.append(parser.finish())
    return parser, deltas


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_parser_splits_prose_and_calls_whatever_the_chunking(chunk):
    text = f"Let me check.\n{CALL}\n{CALL.replace('Paris', 'Rome')}\n"
    parser, deltas = _parse(text, chunk)
    assert parser.text == "Let me check." == "".join(delta.text for delta in deltas)
    assert [(call.name, call.arguments) for call in parser.calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Rome"}),
    ]
    pieces = [piece for delta in deltas for piece in delta.tool_calls]
    assert pieces == [
        ToolCallDelta(0, parser.calls[0].id, "get_weather", '{"city": "Paris"}'),
        ToolCallDelta(1, parser.calls[1].id, "get_weather", '{"city": "Rome"}'),
    ]
    assert all(call.id.startswith("call_") and len(call.id) == 29 for call in parser.calls)
    assert parser.calls[0].id != parser.calls[1].id


def test_parser_holds_back_a_partial_marker_and_releases_it_when_it_is_prose():
    parser = CallSplitter(HermesFormat())
    assert parser.feed("a <tool").text == "a"
    assert parser.feed("box> b").text == " <toolbox> b"
    assert parser.finish().text == ""


def test_parser_drops_a_repeated_call_and_keeps_blocks_that_are_not_calls():
    parser, _ = _parse(f"{CALL}\n{CALL}\n<tool_call>not json</tool_call> done", 5)
    assert len(parser.calls) == 1
    assert parser.text == "<tool_call>not json</tool_call> done"


def test_parser_drops_an_unclosed_block_at_the_end_markup_and_all():
    parser, _ = _parse('<tool_call>\n{"name": "f", "arguments": {"a": 1}}', 4)
    assert parser.calls == [] and parser.text == ""
    cut, _ = _parse(f'Hi {CALL}\n<tool_call>\n{{"name": "f", "argu', 4)
    assert [call.name for call in cut.calls] == ["get_weather"]
    assert cut.text == "Hi"


def test_call_bodies_parse_leniently():
    def parse_call(body: str):
        calls = HermesFormat().parse_block(body, ())
        return None if calls is None else calls[0]

    assert parse_call('{"name": "f", "arguments": "{\\"a\\": 1}"}') == ("f", {"a": 1})
    assert parse_call('{"name": "f", "parameters": {"a": 1}}') == ("f", {"a": 1})
    assert parse_call('{"name": "f"}') == ("f", {})
    assert parse_call('{"arguments": {}}') is None
    assert parse_call('{"name": "f", "arguments": [1]}') is None


def test_protect_calls_blanks_call_blocks_only():
    text = f"a {CALL} b <tool_call>open"
    protected = protect_blocks(text, HermesFormat())
    assert len(protected) == len(text)
    assert protected.startswith("a ") and " b " in protected
    assert "tool_call" not in protected and "Paris" not in protected
