"""Streaming: real token deltas, stop strings cut, one usage chunk, async on one thread, callbacks fired once."""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from langchain_aligned_llm import ChatAlignedLLM


class TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)


@pytest.fixture
def chat(tiny_model_dir) -> ChatAlignedLLM:
    return ChatAlignedLLM(model=tiny_model_dir, device="cpu", max_tokens=12)


def test_stream_yields_token_deltas_that_add_up_to_invoke(chat, spy):
    chunks = list(chat.stream("Hello"))
    assert spy.calls[0].api == "stream"
    assert sum(1 for chunk in chunks if chunk.content) > 1
    assert "".join(chunk.content for chunk in chunks) == chat.invoke("Hello").content
    assert [chunk for chunk in chunks if chunk.usage_metadata] == [chunks[-1]]
    assert chunks[-1].chunk_position == "last"
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert full.usage_metadata["output_tokens"] == 12
    assert full.response_metadata["model_name"] == chat.model
    assert full.response_metadata["finish_reason"] == "length"


def _stop_inside(text: str) -> str:
    """A stop string taken from the second half of ``text`` that does not occur earlier."""
    for start in range(len(text) // 2, len(text) - 2):
        candidate = text[start : start + 3]
        if text.index(candidate) > 0:
            return candidate
    raise AssertionError(f"no usable stop string in {text!r}")


def test_stop_strings_from_fields_and_calls_are_cut(chat):
    text = chat.invoke("Hello").content
    late = _stop_inside(text)
    early = _stop_inside(text[: text.index(late)])
    cut_late, cut_early = text[: text.index(late)], text[: text.index(early)]

    stopped = chat.invoke("Hello", stop=[late])
    assert stopped.content == cut_late
    assert stopped.response_metadata["finish_reason"] == "stop"
    assert "".join(chunk.content for chunk in chat.stream("Hello", stop=[late])) == cut_late

    with_field = chat.model_copy(update={"stop": [late]})
    assert with_field.invoke("Hello").content == cut_late
    assert with_field.invoke("Hello", stop=[early]).content == cut_early


async def test_astream_matches_stream(chat):
    chunks = [chunk async for chunk in chat.astream("Hello")]
    assert sum(1 for chunk in chunks if chunk.content) > 1
    assert "".join(chunk.content for chunk in chunks) == "".join(chunk.content for chunk in chat.stream("Hello"))
    assert chunks[-1].usage_metadata is not None


async def test_concurrent_astreams_give_each_its_own_text(chat):
    """Concurrent async streams of one model interleave step by step (the lock is per forward), each its own text."""
    principles = [None, "Be brief.", "Answer like a pirate."]

    async def collect(principle: str | None) -> str:
        return "".join([chunk.content async for chunk in chat.astream("Hello", principle=principle)])

    streamed = await asyncio.wait_for(asyncio.gather(*(collect(p) for p in principles)), timeout=120)
    assert streamed == [chat.invoke("Hello", principle=p).content for p in principles]


async def test_an_abandoned_astream_releases_the_model(chat):
    stream = chat.astream("Hello", max_tokens=200)
    async for _chunk in stream:
        break
    await stream.aclose()
    message = await asyncio.wait_for(chat.ainvoke("Hello"), timeout=60)
    assert message.content == chat.invoke("Hello").content


async def test_astream_events_carry_the_tokens(chat):
    events = [event async for event in chat.astream_events("Hello", version="v2")]
    streamed = [event["data"]["chunk"].content for event in events if event["event"] == "on_chat_model_stream"]
    (end,) = [event for event in events if event["event"] == "on_chat_model_end"]
    assert sum(1 for token in streamed if token) > 1
    assert "".join(streamed) == end["data"]["output"].content


def test_callbacks_see_every_token_once(chat, tiny_model_dir):
    recorder = TokenRecorder()
    chunks = list(chat.stream("Hello", config={"callbacks": [recorder]}))
    assert recorder.tokens == [chunk.content for chunk in chunks]

    streaming = ChatAlignedLLM(model=tiny_model_dir, device="cpu", max_tokens=12, streaming=True)
    recorder = TokenRecorder()
    message = streaming.invoke("Hello", config={"callbacks": [recorder]})
    assert sum(1 for token in recorder.tokens if token) > 1
    assert "".join(recorder.tokens) == message.content


async def test_async_calls_prepare_their_request_off_the_event_loop(chat, monkeypatch):
    """Rendering the prompt and compiling a grammar (seconds for a large tool schema) never blocks the loop."""
    loop_thread = threading.current_thread()
    prepared_on = []
    open_stream = type(chat)._open_stream

    def recording(self, *args):
        prepared_on.append(threading.current_thread())
        return open_stream(self, *args)

    monkeypatch.setattr(type(chat), "_open_stream", recording)
    await chat.ainvoke("Hello")
    _ = [chunk async for chunk in chat.astream("Hello")]
    assert len(prepared_on) == 2 and loop_thread not in prepared_on
