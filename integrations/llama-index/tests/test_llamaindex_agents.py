"""Real LlamaIndex agents on the bundled SmolLM2: FunctionAgent and AgentWorkflow call the tool, read it, answer.

No mocks: LlamaIndex's own agents drive ``AlignedHF``. The 135M model is weak, so the tests
assert what must hold (a valid call of the right tool, the tool ran, a final answer without
calls), not wording. With default settings the calibrated decision of the generic tool format
makes it call; LlamaIndex's own ways to require the first call (``initial_tool_choice``, one
call at a time) are tested too.
"""

from __future__ import annotations

import pytest
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import ToolCallBlock
from llama_index.core.tools import FunctionTool

from llama_index.llms.aligned import AlignedHF

pytestmark = pytest.mark.bundled

SYSTEM = "You are a helpful assistant. Use the get_weather tool to look up the weather, then answer the user."
QUESTION = "What is the weather in Paris?"
FORECAST = "Sunny, 21 degrees Celsius."


def get_weather(city: str) -> str:
    """Get the current weather in a city (its name, e.g. London)."""
    return f"{city}: {FORECAST}"


WEATHER = FunctionTool.from_defaults(get_weather)


@pytest.fixture
def llm(bundled_core) -> AlignedHF:
    return AlignedHF(bundled_core, max_new_tokens=48)


async def run_and_collect(agent: FunctionAgent | AgentWorkflow) -> tuple[list[ToolCallResult], object]:
    handler = agent.run(user_msg=QUESTION)
    results = [event async for event in handler.stream_events() if isinstance(event, ToolCallResult)]
    return results, await handler


def assert_called_the_tool_then_answered(results: list[ToolCallResult], output: object) -> None:
    (result,) = results
    assert result.tool_name == "get_weather"
    WEATHER.metadata.fn_schema.model_validate(result.tool_kwargs)
    assert not result.tool_output.is_error
    assert result.tool_output.content == f"{result.tool_kwargs['city']}: {FORECAST}"
    assert [call.tool_id for call in output.tool_calls] == [result.tool_id]  # the run's calls: that one only
    assert not [block for block in output.response.blocks if isinstance(block, ToolCallBlock)]
    assert output.response.content.strip()


async def test_function_agent_with_default_settings_calls_the_tool_reads_it_and_answers(bundled_core):
    agent = FunctionAgent(tools=[WEATHER], llm=AlignedHF(bundled_core), system_prompt=SYSTEM)
    results, output = await run_and_collect(agent)
    assert_called_the_tool_then_answered(results, output)
    assert "<tool_" not in output.response.content and '{"' not in output.response.content


async def test_function_agent_calls_the_tool_reads_it_and_answers(llm):
    agent = FunctionAgent(
        tools=[WEATHER],
        llm=llm,
        system_prompt=SYSTEM,
        initial_tool_choice="get_weather",
        allow_parallel_tool_calls=False,
    )
    assert_called_the_tool_then_answered(*await run_and_collect(agent))


async def test_agent_workflow_with_a_principle(llm):
    pirate = llm.with_settings(method="opad", principle="Answer like a pirate.")
    agent = FunctionAgent(
        name="weather",
        description="Answers questions about the weather.",
        tools=[WEATHER],
        llm=pirate,
        system_prompt=SYSTEM,
        initial_tool_choice="get_weather",
        allow_parallel_tool_calls=False,
    )
    results, output = await run_and_collect(AgentWorkflow(agents=[agent]))
    assert_called_the_tool_then_answered(results, output)
    assert output.raw["method"] == "opad"
    assert output.raw["settings"]["principle"] == "Answer like a pirate."
