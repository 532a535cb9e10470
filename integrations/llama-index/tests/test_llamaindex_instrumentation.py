"""LlamaIndex instrumentation: start, in-progress and end events fire for every call style."""

from __future__ import annotations

import pytest
from aligned_llm import InvalidSettingError
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)

from llama_index.llms.aligned import AlignedHF

PROMPT = "Tell me a fact."
MESSAGES = [ChatMessage(role=MessageRole.USER, content=PROMPT)]
COMPLETION = (LLMCompletionStartEvent, LLMCompletionInProgressEvent, LLMCompletionEndEvent)
CHAT = (LLMChatStartEvent, LLMChatInProgressEvent, LLMChatEndEvent)


def _kinds(events, family):
    return [type(event) for event in events.of(*family)]


def test_complete_and_chat_fire_start_then_end(tiny, events):
    completion = tiny.complete(PROMPT, principle="Be kind.")
    chat = tiny.chat(MESSAGES)
    assert _kinds(events, COMPLETION) == [LLMCompletionStartEvent, LLMCompletionEndEvent]
    assert _kinds(events, CHAT) == [LLMChatStartEvent, LLMChatEndEvent]
    start, end = events.of(LLMCompletionStartEvent, LLMCompletionEndEvent)
    assert start.prompt == PROMPT and start.additional_kwargs == {"principle": "Be kind."}
    assert start.model_dict["model_name"] == tiny.core.name
    assert end.response.text == completion.text
    assert events.of(LLMChatEndEvent)[0].response.message.content == chat.message.content


def test_streams_fire_one_in_progress_event_per_chunk(tiny, events):
    chunks = list(tiny.stream_complete(PROMPT))
    chat_chunks = list(tiny.stream_chat(MESSAGES))
    assert _kinds(events, COMPLETION) == [
        LLMCompletionStartEvent, *[LLMCompletionInProgressEvent] * len(chunks), LLMCompletionEndEvent,
    ]  # fmt: skip
    assert _kinds(events, CHAT) == [LLMChatStartEvent, *[LLMChatInProgressEvent] * len(chat_chunks), LLMChatEndEvent]
    assert [e.response.delta for e in events.of(LLMCompletionInProgressEvent)] == [c.delta for c in chunks]
    completion_end, chat_end = events.of(LLMCompletionEndEvent, LLMChatEndEvent)
    assert completion_end.response.raw["usage"]["completion_tokens"] == 8, "the end event carries the usage"
    assert chat_end.response.message.content == chat_chunks[-1].message.content


async def test_async_calls_and_streams_fire_the_same_events(tiny, events):
    await tiny.acomplete(PROMPT)
    await tiny.achat(MESSAGES)
    completion_chunks = [chunk async for chunk in await tiny.astream_complete(PROMPT)]
    chat_chunks = [chunk async for chunk in await tiny.astream_chat(MESSAGES)]
    assert _kinds(events, COMPLETION) == [
        LLMCompletionStartEvent, LLMCompletionEndEvent,
        LLMCompletionStartEvent, *[LLMCompletionInProgressEvent] * len(completion_chunks), LLMCompletionEndEvent,
    ]  # fmt: skip
    assert _kinds(events, CHAT) == [
        LLMChatStartEvent, LLMChatEndEvent,
        LLMChatStartEvent, *[LLMChatInProgressEvent] * len(chat_chunks), LLMChatEndEvent,
    ]  # fmt: skip
    assert events.of(LLMChatEndEvent)[-1].response.raw["usage"]["prompt_tokens"] > 0


def test_legacy_callback_manager_sees_each_llm_call(tiny_core):
    debug = LlamaDebugHandler()
    llm = AlignedHF(tiny_core, max_new_tokens=8, callback_manager=CallbackManager([debug]))
    llm.complete(PROMPT)
    list(llm.stream_chat(MESSAGES))
    pairs = debug.get_event_pairs(CBEventType.LLM)
    assert len(pairs) == 2 and all(len(pair) == 2 for pair in pairs)


def test_a_refused_call_fires_no_end_event(tiny, events):
    with pytest.raises(InvalidSettingError):
        tiny.chat(MESSAGES, temperature=-1)
    assert _kinds(events, CHAT) == [LLMChatStartEvent]
