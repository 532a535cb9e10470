"""Core results and streams → LlamaIndex chat responses (completions are derived from them by LlamaIndex).

``raw`` carries what the core reports: token usage (read by LlamaIndex's token counter),
the finish reason, the method that ran, the settings given and, with ``trace=True``, the
per-token trace. A stream yields one response per text delta, then a last one with an
empty delta that carries ``raw`` (the totals are only known at the end).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from aligned_llm import GenerationResult, GenerationStream, StreamDelta
from llama_index.core.base.llms.types import ChatResponse

from llama_index.llms.aligned.tools import PartialCalls, assistant_message, result_calls


def result_raw(result: GenerationResult, model_name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What LlamaIndex keeps as the response's ``raw``: usage, finish reason, method, settings."""
    raw: dict[str, Any] = {
        "model": model_name,
        "usage": {
            "prompt_tokens": result.input_tokens,
            "completion_tokens": result.output_tokens,
            "total_tokens": result.input_tokens + result.output_tokens,
        },
        "finish_reason": result.finish_reason,
        "method": result.method,
        "settings": dict(settings),
    }
    if result.trace is not None:
        raw["trace"] = result.trace
    return raw


def chat_response(result: GenerationResult, model_name: str, settings: Mapping[str, Any]) -> ChatResponse:
    """A finished generation as the assistant's chat message, with its tool calls."""
    message = assistant_message(result.text, result_calls(result))
    return ChatResponse(message=message, raw=result_raw(result, model_name, settings))


def chat_chunks(stream: GenerationStream, model_name: str, settings: Mapping[str, Any]) -> Iterator[ChatResponse]:
    """Like :func:`completion_chunks`, as assistant messages with the tool calls so far (arguments as partial JSON).

    The last message is the finished result's: tool-call arguments parsed, ids final.
    """
    chat = _ChatStream(stream, model_name, settings)
    try:
        for delta in stream.deltas():
            yield chat.add(delta)
        yield chat.last()
    finally:
        stream.close()


async def achat_chunks(
    stream: GenerationStream, model_name: str, settings: Mapping[str, Any]
) -> AsyncIterator[ChatResponse]:
    """:func:`chat_chunks` over the core's async stream."""
    chat = _ChatStream(stream, model_name, settings)
    try:
        async for delta in stream.adeltas():
            yield chat.add(delta)
        yield chat.last()
    finally:
        stream.cancel()
        stream.close()


class _ChatStream:
    """The assistant message growing with a stream's prose and tool-call pieces."""

    def __init__(self, stream: GenerationStream, model_name: str, settings: Mapping[str, Any]) -> None:
        self.stream, self.model_name, self.settings = stream, model_name, settings
        self.text, self.calls = "", PartialCalls()

    def add(self, delta: StreamDelta) -> ChatResponse:
        self.text += delta.text
        self.calls.add(delta.tool_calls)
        return ChatResponse(message=assistant_message(self.text, self.calls.so_far()), delta=delta.text)

    def last(self) -> ChatResponse:
        result = self.stream.result
        final = (self.text, self.calls.so_far()) if result is None else (result.text, result_calls(result))
        raw = _final_raw(self.stream, self.model_name, self.settings)
        return ChatResponse(message=assistant_message(*final), delta="", raw=raw)


def _final_raw(stream: GenerationStream, model_name: str, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    return None if stream.result is None else result_raw(stream.result, model_name, settings)
