"""AlignedHF as a FunctionCallingLLM on a tiny random model: tool calls, selections, tool messages, structured output.

A random model writes nothing sensible, so every valid call and object here is the grammar's
doing: the tests fail if tools do not reach the core or its calls do not come back as LlamaIndex's.
It never closes a free string either, so string arguments are bounded (``maxLength``).
"""

from __future__ import annotations

import json

import pytest
from aligned_llm import InvalidSettingError
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.program.function_program import FunctionCallingProgram
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from llama_index.llms.aligned import AlignedHF


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def weather(city: str) -> str:
    """Get the weather in a city."""
    return f"Sunny in {city}."


class City(BaseModel):
    city: str = Field(description="The city", max_length=12)


ADD = FunctionTool.from_defaults(add)
WEATHER = FunctionTool.from_defaults(weather, fn_schema=City)


class Pet(BaseModel):
    """A pet."""

    name: str = Field(description="The pet's name", max_length=12)
    age: int = Field(description="Age in years")


@pytest.fixture
def llm(tools_core) -> AlignedHF:
    return AlignedHF(tools_core, max_new_tokens=80)


@pytest.fixture
def core_calls(tools_core, monkeypatch) -> list[tuple[object, dict]]:
    """Records each ``generate``/``stream`` call (prompt, keywords) on the tiny core, then lets it run."""
    calls: list[tuple[object, dict]] = []
    real_generate, real_stream = tools_core.generate, tools_core.stream

    def generate(prompt, **kwargs):
        calls.append((prompt, kwargs))
        return real_generate(prompt, **kwargs)

    def stream(prompt, **kwargs):
        calls.append((prompt, kwargs))
        return real_stream(prompt, **kwargs)

    monkeypatch.setattr(tools_core, "generate", generate)
    monkeypatch.setattr(tools_core, "stream", stream)
    return calls


def test_it_is_a_function_calling_llm(llm):
    assert isinstance(llm, FunctionCallingLLM)
    assert llm.metadata.is_function_calling_model


def test_a_required_call_comes_back_as_a_block_and_a_selection(llm, core_calls):
    response = llm.chat_with_tools([ADD, WEATHER], user_msg="Add 2 and 3.", tool_choice="add")
    _, kwargs = core_calls[0]
    assert [spec["function"]["name"] for spec in kwargs["tools"]] == ["add", "weather"]
    assert kwargs["tools"][0]["function"]["parameters"]["required"] == ["a", "b"]
    assert (kwargs["tool_choice"], kwargs["parallel_tool_calls"]) == ("add", False)

    (selection,) = llm.get_tool_calls_from_response(response)
    assert selection.tool_name == "add"
    assert selection.tool_id.startswith("call_")
    assert ADD.metadata.fn_schema.model_validate(selection.tool_kwargs)
    assert isinstance(ADD(**selection.tool_kwargs).raw_output, int)  # the tool runs on the arguments as they are
    (block,) = [block for block in response.message.blocks if isinstance(block, ToolCallBlock)]
    assert (block.tool_call_id, block.tool_name, block.tool_kwargs) == (
        selection.tool_id,
        "add",
        selection.tool_kwargs,
    )
    (openai_call,) = response.message.additional_kwargs["tool_calls"]
    assert json.loads(openai_call["function"]["arguments"]) == selection.tool_kwargs
    assert response.raw["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, "auto"), ({"tool_required": True}, "required"), ({"tool_choice": "none"}, "none")],
)
def test_tool_required_and_tool_choice_map_to_the_core(llm, core_calls, kwargs, expected):
    llm.chat_with_tools([ADD], user_msg="Add 2 and 3.", **kwargs)
    assert core_calls[0][1]["tool_choice"] == expected


def test_tool_choice_none_gives_no_calls(llm):
    response = llm.chat_with_tools([ADD], user_msg="Add 2 and 3.", tool_choice="none")
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="tool call"):
        llm.get_tool_calls_from_response(response)


def test_unknown_tool_choice_is_refused_before_any_model_work(llm, core_calls):
    with pytest.raises(InvalidSettingError) as error:
        llm.chat_with_tools([ADD], user_msg="Add 2 and 3.", tool_choice="subtract")
    assert error.value.parameter == "tool_choice"
    assert core_calls == []


def test_settings_ride_along_with_tools(llm, core_calls):
    llm.chat_with_tools([ADD], user_msg="Add 2 and 3.", tool_required=True, method="opad", principle="Be brief.")
    kwargs = core_calls[0][1]
    assert (kwargs["method"], kwargs["principle"], kwargs["tool_choice"]) == ("opad", "Be brief.", "required")


def test_streamed_calls_grow_and_end_as_the_chat_call(llm):
    chunks = list(llm.stream_chat_with_tools([WEATHER], user_msg="Weather in Oslo?", tool_required=True))
    partial = [llm.get_tool_calls_from_response(chunk, error_on_no_tool_call=False) for chunk in chunks]
    assert sum(1 for calls in partial if calls) > 1, "the call arrives in pieces"
    final = llm.chat_with_tools([WEATHER], user_msg="Weather in Oslo?", tool_required=True)
    (streamed,) = partial[-1]
    (called,) = llm.get_tool_calls_from_response(final)
    assert (streamed.tool_name, streamed.tool_kwargs) == (called.tool_name, called.tool_kwargs)
    assert "".join(chunk.delta for chunk in chunks) == chunks[-1].message.content == final.message.content
    assert chunks[-1].raw["finish_reason"] == "tool_calls"


async def test_async_with_tools_matches_sync(llm):
    sync = llm.chat_with_tools([ADD], user_msg="Add 2 and 3.", tool_required=True)
    response = await llm.achat_with_tools([ADD], user_msg="Add 2 and 3.", tool_required=True)
    assert [(s.tool_name, s.tool_kwargs) for s in llm.get_tool_calls_from_response(response)] == [
        (s.tool_name, s.tool_kwargs) for s in llm.get_tool_calls_from_response(sync)
    ]
    chunks = [chunk async for chunk in await llm.astream_chat_with_tools([ADD], user_msg="Add.", tool_required=True)]
    assert llm.get_tool_calls_from_response(chunks[-1])


def openai_call(call_id: str, arguments: str | dict) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "add", "arguments": arguments}}


def test_an_agent_history_reaches_the_core_as_openai_messages(llm, core_calls):
    adding = ToolCallBlock(tool_call_id="call_1", tool_name="add", tool_kwargs={"a": 1, "b": 2})
    history = [
        ChatMessage(role=MessageRole.USER, content="What is 1 + 2?"),
        ChatMessage(
            role=MessageRole.ASSISTANT,
            blocks=[TextBlock(text="Adding."), adding],
        ),
        ChatMessage(role=MessageRole.TOOL, content="3", additional_kwargs={"tool_call_id": "call_1", "name": "add"}),
        ChatMessage(
            role=MessageRole.ASSISTANT,
            content="",
            additional_kwargs={"tool_calls": [openai_call("call_2", '{"a": 3, "b": 4}')]},
        ),
        ChatMessage(role=MessageRole.TOOL, content="7", additional_kwargs={"tool_call_id": "call_2"}),
    ]
    llm.chat_with_tools([ADD], chat_history=history)
    prompt, _ = core_calls[0]
    assert prompt == [
        {"role": "user", "content": "What is 1 + 2?"},
        {
            "role": "assistant",
            "content": "Adding.",
            "tool_calls": [openai_call("call_1", {"a": 1, "b": 2})],
        },
        {"role": "tool", "content": "3", "tool_call_id": "call_1", "name": "add"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [openai_call("call_2", {"a": 3, "b": 4})],
        },
        {"role": "tool", "content": "7", "tool_call_id": "call_2"},
    ]


def test_one_call_unless_parallel_calls_are_allowed(llm, core_calls):
    llm.chat_with_tools([ADD], user_msg="Add.", tool_required=True)
    llm.chat_with_tools([ADD], user_msg="Add.", tool_required=True, allow_parallel_tool_calls=True)
    assert [kwargs["parallel_tool_calls"] for _, kwargs in core_calls] == [False, True]


def test_predict_and_call_runs_the_tool(llm):
    output = llm.predict_and_call([ADD], user_msg="Add 2 and 3.", tool_required=True)
    (source,) = output.sources
    assert source.tool_name == "add" and not source.is_error
    assert output.response == str(add(**source.raw_input["kwargs"]))


def test_structured_predict_returns_a_validated_object(llm, core_calls):
    pet = llm.structured_predict(Pet, PromptTemplate("Describe a pet called {name}."), name="Rex")
    assert isinstance(pet, Pet)
    assert core_calls[0][1]["tool_choice"] == "required"


def test_as_structured_llm_returns_the_object_as_json_and_raw(llm):
    response = llm.as_structured_llm(Pet).chat([ChatMessage(role=MessageRole.USER, content="Describe a pet.")])
    assert isinstance(response.raw, Pet)
    assert Pet.model_validate_json(response.message.content) == response.raw


def test_stream_structured_predict_requires_the_call_and_ends_with_a_valid_object(llm, core_calls):
    objects = list(llm.stream_structured_predict(Pet, PromptTemplate("Describe a pet.")))
    assert isinstance(objects[-1], Pet)
    assert core_calls[0][1]["tool_choice"] == "Pet"  # LlamaIndex's streaming program alone would leave it "auto"


async def test_astream_structured_predict_ends_with_a_valid_object(llm):
    objects = [obj async for obj in await llm.astream_structured_predict(Pet, PromptTemplate("Describe a pet."))]
    assert isinstance(objects[-1], Pet)


def test_the_function_calling_program_is_chosen(llm):
    program = FunctionCallingProgram.from_defaults(output_cls=Pet, llm=llm, prompt_template_str="Describe a pet.")
    assert isinstance(program(), Pet)
