"""Tool calling on a tiny random model: bind_tools, AIMessage.tool_calls, tool_call_chunks, tool histories.

A random model writes nothing sensible, so every valid call here is the grammar's doing:
the tests fail if tools do not reach the core or its calls do not come back as LangChain's.
It never closes a free string either, so string arguments are bounded (``maxLength``).
"""

from __future__ import annotations

from typing import TypedDict

import pytest
from aligned_llm import InvalidSettingError, StreamDelta, ToolCallDelta
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from langchain_aligned_llm import ChatAlignedLLM
from langchain_aligned_llm.tool_messages import message_chunk


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Weather(BaseModel):
    """Get the weather in a city."""

    city: str = Field(description="The city", max_length=12)


def multiply(x: float, y: float) -> float:
    """Multiply two numbers.

    Args:
        x: The first number.
        y: The second number.
    """
    return x * y


class Lookup(TypedDict):
    """Look a word up."""

    word: str


ADD_SPEC = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


@pytest.fixture
def chat(tools_model_dir) -> ChatAlignedLLM:
    return ChatAlignedLLM(model=tools_model_dir, device="cpu", max_tokens=80)


def test_every_kind_of_tool_becomes_an_openai_spec(chat):
    plus = {"type": "function", "function": {**ADD_SPEC["function"], "name": "plus"}}
    bound = chat.bind_tools([add, Weather, multiply, Lookup, plus], tool_choice="Weather")
    tools = {spec["function"]["name"]: spec for spec in bound.kwargs["tools"]}
    assert list(tools) == ["add", "Weather", "multiply", "Lookup", "plus"]
    assert tools["add"] == ADD_SPEC
    assert tools["plus"] == plus
    assert tools["Weather"]["function"]["parameters"]["properties"]["city"] == {
        "description": "The city",
        "maxLength": 12,
        "type": "string",
    }
    assert tools["multiply"]["function"]["parameters"]["properties"]["x"]["description"] == "The first number."
    assert tools["Lookup"]["function"]["parameters"]["required"] == ["word"]
    assert bound.kwargs["tool_choice"] == "Weather"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", "auto"),
        ("none", "none"),
        ("any", "required"),
        ("required", "required"),
        ("add", "add"),
        ({"type": "function", "function": {"name": "add"}}, "add"),
        ({"name": "add"}, "add"),
    ],
)
def test_langchain_tool_choices_map_to_the_core(chat, choice, expected):
    assert chat.bind_tools([add, Weather], tool_choice=choice).kwargs.get("tool_choice") == expected


def test_strict_closes_the_schemas(chat):
    (spec,) = chat.bind_tools([Weather], strict=True).kwargs["tools"]
    assert spec["function"]["parameters"]["additionalProperties"] is False
    assert "additionalProperties" not in chat.bind_tools([Weather]).kwargs["tools"][0]["function"]["parameters"]


def test_true_forces_the_only_tool_or_any_tool(chat):
    assert chat.bind_tools([add], tool_choice=True).kwargs["tool_choice"] == "add"
    assert chat.bind_tools([add, Weather], tool_choice=True).kwargs["tool_choice"] == "required"


@pytest.mark.parametrize(
    ("tools", "choice", "parameter"),
    [
        ([add], "subtract", "tool_choice"),
        ([add], 3, "tool_choice"),
        ([{"type": "web_search"}], None, "tools[0]"),
        ([], "any", "tool_choice"),
    ],
    ids=["unknown-tool", "bad-choice", "not-a-function", "required-without-tools"],
)
def test_bad_tools_and_choices_are_refused_at_bind_time(chat, tools_spy, tools, choice, parameter):
    with pytest.raises(InvalidSettingError) as error:
        chat.bind_tools(tools, tool_choice=choice)
    assert error.value.parameter == parameter
    assert tools_spy.calls == []


def test_repeated_tool_names_are_refused_by_the_core_before_decoding(chat):
    with pytest.raises(InvalidSettingError) as error:
        chat.bind_tools([add, ADD_SPEC]).invoke("Add 2 and 3.")
    assert error.value.parameter == "tools"
    assert "add" in str(error.value)


def test_no_tools_binds_nothing_so_agents_without_tools_still_work(chat):
    assert chat.bind_tools([], tool_choice=None, parallel_tool_calls=False).kwargs == {}


def test_a_required_call_comes_back_as_a_valid_langchain_tool_call(chat, tools_spy):
    message = chat.bind_tools([add, Weather], tool_choice="add", parallel_tool_calls=False).invoke("Add 2 and 3.")
    settings = tools_spy.calls[0].settings
    assert [spec["function"]["name"] for spec in settings["tools"]] == ["add", "Weather"]
    assert (settings["tool_choice"], settings["parallel_tool_calls"]) == ("add", False)
    (call,) = message.tool_calls
    assert call["name"] == "add"
    assert call["type"] == "tool_call"
    assert call["id"].startswith("call_")
    assert add.args_schema.model_validate(call["args"])
    assert set(call["args"]) == {"a", "b"}
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert message.usage_metadata["output_tokens"] > 0
    assert isinstance(add.invoke(call), ToolMessage)  # a LangChain tool runs the call as it is
    assert "<tool_call>" not in message.content


def test_streamed_tool_call_chunks_add_up_to_the_invoked_call(chat):
    bound = chat.bind_tools([Weather], tool_choice="any")
    invoked = bound.invoke("Weather in Oslo?")
    chunks = list(bound.stream("Weather in Oslo?"))
    with_calls = [chunk for chunk in chunks if chunk.tool_call_chunks]
    assert with_calls[0].tool_call_chunks[0]["name"] == "Weather"
    assert with_calls[0].tool_call_chunks[0]["id"].startswith("call_")
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [(c["name"], c["args"]) for c in invoked.tool_calls]
    assert full.content == invoked.content
    assert full.response_metadata["finish_reason"] == "tool_calls"
    assert [chunk for chunk in chunks if chunk.usage_metadata] == [chunks[-1]]


def test_argument_fragments_join_into_one_call_per_index():
    fragments = [
        StreamDelta("Sure. ", ()),
        StreamDelta("", (ToolCallDelta(0, "call_a", "add", '{"a": 1'),)),
        StreamDelta("", (ToolCallDelta(0, None, None, ', "b": 2}'), ToolCallDelta(1, "call_b", "Weather", '{"ci'))),
        StreamDelta("", (ToolCallDelta(1, None, None, 'ty": "Oslo"}'),)),
    ]
    chunks = [message_chunk(fragment) for fragment in fragments]
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert full.content == "Sure. "
    assert [(c["id"], c["name"], c["args"]) for c in full.tool_calls] == [
        ("call_a", "add", {"a": 1, "b": 2}),
        ("call_b", "Weather", {"city": "Oslo"}),
    ]


def test_an_agent_history_reaches_the_core_as_openai_messages(chat, tools_spy):
    history = [
        SystemMessage("Use the tools."),
        HumanMessage("What is 1 + 2?"),
        AIMessage(
            [
                {"type": "text", "text": "Let me add."},
                {"type": "tool_use", "id": "call_1", "name": "add", "input": {"a": 1, "b": 2}},
            ],
            tool_calls=[
                {"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1", "type": "tool_call"},
                {"name": "add", "args": {"a": 1}, "id": "call_2", "type": "tool_call"},
            ],
        ),
        ToolMessage("3", tool_call_id="call_1", name="add"),
        ToolMessage([{"type": "text", "text": "Error: b missing"}], tool_call_id="call_2", status="error"),
    ]
    chat.bind_tools([add]).invoke(history)
    assert tools_spy.calls[0].prompt == [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "What is 1 + 2?"},
        {
            "role": "assistant",
            "content": "Let me add.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}},
                {"id": "call_2", "type": "function", "function": {"name": "add", "arguments": {"a": 1}}},
            ],
        },
        {"role": "tool", "content": "3", "tool_call_id": "call_1", "name": "add"},
        {"role": "tool", "content": "Error: b missing", "tool_call_id": "call_2"},
    ]


def test_the_models_own_tool_calls_round_trip_through_a_history(chat, tools_spy):
    bound = chat.bind_tools([add], tool_choice="add")
    first = bound.invoke("Add 2 and 3.")
    (call,) = first.tool_calls
    bound.invoke([HumanMessage("Add 2 and 3."), first, ToolMessage("5", tool_call_id=call["id"])], tool_choice="none")
    sent = tools_spy.calls[-1]
    assert sent.settings["tool_choice"] == "none"
    assert sent.prompt[1]["tool_calls"][0]["id"] == call["id"]
    assert sent.prompt[1]["tool_calls"][0]["function"]["arguments"] == call["args"]
    assert sent.prompt[2] == {"role": "tool", "content": "5", "tool_call_id": call["id"]}


def test_tool_choice_none_gives_prose_and_no_calls(chat):
    message = chat.bind_tools([add], tool_choice="none").invoke("Add 2 and 3.")
    assert message.tool_calls == []
    assert message.response_metadata["finish_reason"] != "tool_calls"


def test_principles_and_tools_bind_together(chat, tools_spy):
    chat.bind_tools([add], tool_choice="add", method="opad", principle="Be brief.").invoke("Add 2 and 3.")
    settings = tools_spy.calls[0].settings
    assert (settings["method"], settings["principle"], settings["tool_choice"]) == ("opad", "Be brief.", "add")


def test_v1_output_gives_tool_calls_as_standard_blocks(tools_model_dir):
    chat = ChatAlignedLLM(model=tools_model_dir, device="cpu", max_tokens=80, output_version="v1")
    message = chat.bind_tools([add], tool_choice="add").invoke("Add 2 and 3.")
    (block,) = [block for block in message.content if block["type"] == "tool_call"]
    (call,) = message.tool_calls
    assert (block["name"], block["args"], block["id"]) == ("add", call["args"], call["id"])
    assert message.response_metadata["output_version"] == "v1"
    assert message.response_metadata["model_provider"] == "aligned_llm"
