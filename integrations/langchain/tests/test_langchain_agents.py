"""Real LangChain and LangGraph agents on the bundled SmolLM2: they call the tool, read its result, and answer.

No mocks: the frameworks' own agents drive ``ChatAlignedLLM``. The 135M model is weak, so the
tests assert what must hold (a valid call of the right tool, the tool ran, a final answer
without calls or markup), not wording. With default settings the calibrated decision of the
generic tool format makes it call; a middleware that requires the first call (the way to force
it) is tested too.
"""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import wrap_model_call
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent
from pydantic import BaseModel, Field

from langchain_aligned_llm import ChatAlignedLLM

pytestmark = pytest.mark.bundled

SYSTEM = "You are a helpful assistant. Use the get_weather tool to look up the weather, then answer the user."
QUESTION = "What is the weather in Paris?"
PRINCIPLE = "Answer like a pirate."
FORECAST = "Sunny, 21 degrees Celsius."


class WeatherQuery(BaseModel):
    city: str = Field(description="The name of the city, e.g. London")


@tool(args_schema=WeatherQuery)
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"{city}: {FORECAST}"


@pytest.fixture
def chat(bundled) -> ChatAlignedLLM:
    return ChatAlignedLLM(llm=bundled, max_tokens=48)


def tool_answered(messages: list) -> bool:
    """Whether a tool result follows the last human message (the model may then answer)."""
    for message in reversed(messages):
        if isinstance(message, ToolMessage):
            return True
        if isinstance(message, HumanMessage):
            return False
    return False


@wrap_model_call
def call_a_tool_first(request, handler):
    """Require one tool call until a tool has answered; then the model chooses (and answers)."""
    if tool_answered(request.messages):
        return handler(request)
    one_call = {**request.model_settings, "parallel_tool_calls": False}
    return handler(request.override(tool_choice="any", model_settings=one_call))


def assert_called_the_tool_then_answered(messages: list) -> None:
    """Human → AI with a valid get_weather call → the tool's result → AI answer without calls."""
    assert isinstance(messages[0], HumanMessage)
    call_message, result, answer = messages[1], messages[2], messages[-1]
    assert isinstance(call_message, AIMessage)
    (call,) = call_message.tool_calls
    assert call["name"] == "get_weather"
    WeatherQuery.model_validate(call["args"])
    assert isinstance(result, ToolMessage)
    assert result.tool_call_id == call["id"]
    assert result.content == f"{call['args']['city']}: {FORECAST}"
    assert isinstance(answer, AIMessage)
    assert answer.tool_calls == []
    assert answer.content.strip()
    assert len(messages) == 4


def test_create_agent_with_default_settings_calls_the_tool_reads_it_and_answers(bundled):
    agent = create_agent(ChatAlignedLLM(llm=bundled), tools=[get_weather], system_prompt=SYSTEM)
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]}, config={"recursion_limit": 10})
    assert_called_the_tool_then_answered(state["messages"])
    assert "<tool_" not in state["messages"][-1].content and '{"' not in state["messages"][-1].content


def test_langgraph_prebuilt_react_agent_with_default_settings(bundled):
    agent = create_react_agent(ChatAlignedLLM(llm=bundled), tools=[get_weather], prompt=SYSTEM)
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]}, config={"recursion_limit": 10})
    assert_called_the_tool_then_answered(state["messages"])


def test_create_agent_calls_the_tool_reads_it_and_answers(chat):
    agent = create_agent(chat, tools=[get_weather], system_prompt=SYSTEM, middleware=[call_a_tool_first])
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert_called_the_tool_then_answered(state["messages"])


def test_a_principle_reaches_every_model_call_through_middleware(chat):
    @wrap_model_call
    def principle_from_context(request, handler):
        principle = request.runtime.context["principle"]
        settings = {**request.model_settings, "method": "opad", "principle": principle}
        return handler(request.override(model_settings=settings))

    middleware = [principle_from_context, call_a_tool_first]
    agent = create_agent(chat, tools=[get_weather], system_prompt=SYSTEM, middleware=middleware)
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]}, context={"principle": PRINCIPLE})
    assert_called_the_tool_then_answered(state["messages"])
    for message in state["messages"]:
        if isinstance(message, AIMessage):
            assert message.response_metadata["method"] == "opad"
            assert message.response_metadata["settings"]["principle"] == PRINCIPLE


def test_langgraph_prebuilt_react_agent(chat):
    def model(state, runtime):
        choice = "auto" if tool_answered(state["messages"]) else "get_weather"
        return chat.bind_tools([get_weather], tool_choice=choice, parallel_tool_calls=False)

    agent = create_react_agent(model, tools=[get_weather], prompt=SYSTEM)
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert_called_the_tool_then_answered(state["messages"])


def test_create_agent_with_a_response_format_returns_the_object(chat):
    class Report(BaseModel):
        city: str
        summary: str

    agent = create_agent(chat, tools=[get_weather], system_prompt=SYSTEM, response_format=Report)
    state = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert isinstance(state["structured_response"], Report)
    final = state["messages"][-1]
    assert final.tool_calls == []
    assert Report.model_validate_json(final.content) == state["structured_response"]
