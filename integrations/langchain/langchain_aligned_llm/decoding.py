"""The one decode path of ``ChatAlignedLLM`` and ``AlignedLLMText``: streams as LangChain chunks, sync and async.

Both classes turn their input into a core prompt (messages or a string) and their deltas into
their own chunk type; everything else — opening the core stream, the last chunk with usage and
metadata, callbacks, closing — is here once. Async streams iterate the core stream with
``async for``, which awaits the model's running batch without blocking the event loop.
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aligned_llm import GenerationResult, GenerationStream, StreamDelta
from aligned_llm.prompts import Prompt
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.outputs import GenerationChunk

from langchain_aligned_llm.decode_call import DecodeCall
from langchain_aligned_llm.params import AlignedLLMParams


class CoreDecoding(AlignedLLMParams):
    """``_stream``/``_astream`` for any LangChain model class over the core; subclasses define three hooks.

    The hooks are abstract (pydantic models are ``ABCMeta`` classes): a subclass missing one
    cannot be instantiated.
    """

    @abstractmethod
    def _core_prompt(self, value: Any) -> Prompt:
        """The core prompt for LangChain's input (messages or a string)."""

    @abstractmethod
    def _text_chunk(self, delta: StreamDelta) -> GenerationChunk:
        """A chunk carrying one delta: prose text and, for chat models, tool-call pieces."""

    @abstractmethod
    def _last_chunk(self, call: DecodeCall, result: GenerationResult) -> GenerationChunk:
        """The empty last chunk carrying usage and metadata."""

    def _open_stream(
        self, value: Any, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[DecodeCall, GenerationStream]:
        """Check the settings and render the prompt now; decoding starts on the first step."""
        call = self._core_call(stop, kwargs)
        return call, call.llm.stream(self._core_prompt(value), **call.settings)

    def _stream(
        self,
        value: Any,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[Any]:
        call, stream = self._open_stream(value, stop, kwargs)
        try:
            for chunk in self._chunks(call, stream):
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            stream.close()

    async def _astream(
        self,
        value: Any,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        # rendering and compiling a grammar can take seconds: off the event loop
        call, stream = await asyncio.to_thread(self._open_stream, value, stop, kwargs)
        try:
            async for delta in stream.adeltas():
                chunk = self._text_chunk(delta)
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
            last = self._last_chunk(call, _result(stream))
            if run_manager:
                await run_manager.on_llm_new_token(last.text, chunk=last)
            yield last
        finally:
            stream.cancel()
            stream.close()

    def _chunks(self, call: DecodeCall, stream: GenerationStream) -> Iterator[Any]:
        """Each text delta as a chunk, then the last chunk with usage and metadata."""
        for delta in stream.deltas():
            yield self._text_chunk(delta)
        yield self._last_chunk(call, _result(stream))


def _result(stream: GenerationStream) -> GenerationResult:
    if stream.result is None:
        raise RuntimeError("the stream ended without a result")
    return stream.result
