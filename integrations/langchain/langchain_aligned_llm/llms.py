"""``AlignedLLMText``: a LangChain text LLM (string in, string out) over aligned-llm.

The string is one user turn rendered with the model's chat template (the core's behaviour
for a string prompt), so instruct models answer it instead of continuing it; the prompt is
never echoed. A batch of prompts is decoded as engine batches of ``max_batch_size``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from aligned_llm import GenerationResult, GenerationStream
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict

from langchain_aligned_llm.async_stream import iterate_in_thread
from langchain_aligned_llm.core_call import CoreCall
from langchain_aligned_llm.params import AlignedLLMParams


class AlignedLLMText(AlignedLLMParams, LLM):
    """Text-completion LLM over a local model, aligned at decoding time by aligned-llm.

    Same model and decoding fields (and per-call keywords) as ``ChatAlignedLLM``; use it
    where LangChain wants a string-in/string-out LLM.
    """

    model_config = ConfigDict(extra="forbid")

    @property
    def _llm_type(self) -> str:
        return "aligned-llm"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self._aligned_identifying_params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_model_type="llm", **self._aligned_ls_params(stop, kwargs))

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return self._generate([prompt], stop, run_manager, **kwargs).generations[0][0].text

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        call = self._core_call(stop, kwargs)
        size = self.max_batch_size
        results: list[GenerationResult] = []
        for start in range(0, len(prompts), size):
            results.extend(call.llm.generate(prompts[start : start + size], **call.settings))
        generations = [[Generation(text=result.text, generation_info=_info(call, result))] for result in results]
        usage = {
            "input_tokens": sum(result.input_tokens for result in results),
            "output_tokens": sum(result.output_tokens for result in results),
        }
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        return LLMResult(generations=generations, llm_output={"model_name": call.llm.name, "token_usage": usage})

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return await run_in_executor(None, self._generate, prompts, stop, None, **kwargs)

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        call, stream = self._open_stream(prompt, stop, kwargs)
        for chunk in _chunks(call, stream):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        call, stream = await run_in_executor(None, self._open_stream, prompt, stop, kwargs)
        async for chunk in iterate_in_thread(_chunks(call, stream), stream.cancel):
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _open_stream(
        self, prompt: str, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[CoreCall, GenerationStream]:
        call = self._core_call(stop, kwargs)
        return call, call.llm.stream(prompt, **call.settings)


def _info(call: CoreCall, result: GenerationResult) -> dict[str, Any]:
    """``generation_info``: the chat model's ``response_metadata`` plus the token usage."""
    return {**call.metadata(result), "usage": dict(call.usage(result))}


def _chunks(call: CoreCall, stream: GenerationStream) -> Iterator[GenerationChunk]:
    """Text deltas as chunks, then an empty last chunk carrying the metadata; the stream is closed at the end."""
    try:
        for delta in stream:
            yield GenerationChunk(text=delta)
        if stream.result is None:
            raise RuntimeError("the stream ended without a result")
        yield GenerationChunk(text="", generation_info=_info(call, stream.result))
    finally:
        stream.close()
