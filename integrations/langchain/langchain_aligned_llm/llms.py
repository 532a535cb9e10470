"""``AlignedLLMText``: a LangChain text LLM (string in, string out) over aligned-llm.

The string is one user turn rendered with the model's chat template (the core's behaviour
for a string prompt), so instruct models answer it instead of continuing it; the prompt is
never echoed. A batch of prompts is decoded as engine batches of ``max_batch_size``.
"""

from __future__ import annotations

from typing import Any

from aligned_llm import GenerationResult, StreamDelta
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LangSmithParams, LanguageModelInput
from langchain_core.language_models.llms import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from langchain_core.runnables import RunnableConfig
from pydantic import ConfigDict

from langchain_aligned_llm.decode_call import DecodeCall
from langchain_aligned_llm.decoding import CoreDecoding


class AlignedLLMText(CoreDecoding, LLM):
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
        return _llm_result(call, results)

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        call = self._core_call(stop, kwargs)
        size = self.max_batch_size
        results: list[GenerationResult] = []
        for start in range(0, len(prompts), size):
            results.extend(await call.llm.agenerate(prompts[start : start + size], **call.settings))
        return _llm_result(call, results)

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """LangChain's ``batch()``; with ``return_exceptions``, only the inputs that are bad get an exception."""
        if not return_exceptions or len(inputs) < 2:
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        refused, good, configs = self._refused_inputs(inputs, config, kwargs)
        answers = super().batch([inputs[i] for i in good], configs, return_exceptions=True, **kwargs) if good else []
        return _in_input_order(len(inputs), refused, answers)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """Async :meth:`batch`: with ``return_exceptions``, only the inputs that are bad get an exception."""
        if not return_exceptions or len(inputs) < 2:
            return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        refused, good, configs = self._refused_inputs(inputs, config, kwargs)
        answers = (
            await super().abatch([inputs[i] for i in good], configs, return_exceptions=True, **kwargs) if good else []
        )
        return _in_input_order(len(inputs), refused, answers)

    def _refused_inputs(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None,
        kwargs: dict[str, Any],
    ) -> tuple[dict[int, Exception], list[int], RunnableConfig | list[RunnableConfig] | None]:
        """The inputs the core refuses (by index, with their errors), the others' indices and their configs.

        LangChain decodes a batch's prompts in one ``_generate`` call, where one bad prompt would
        fail them all; each is checked first (no model work), so only the bad ones fail.
        """
        refused: dict[int, Exception] = {}
        for index, value in enumerate(inputs):
            try:
                call = self._core_call(kwargs.get("stop"), {k: v for k, v in kwargs.items() if k != "stop"})
                call.llm.check(self._convert_input(value).to_string(), **call.settings)
            except Exception as error:  # handed back in its input's place, as return_exceptions asks
                refused[index] = error
        good = [index for index in range(len(inputs)) if index not in refused]
        configs = [config[index] for index in good] if isinstance(config, list) else config
        return refused, good, configs

    def _core_prompt(self, value: str) -> str:
        return value

    def _text_chunk(self, delta: StreamDelta) -> GenerationChunk:
        return GenerationChunk(text=delta.text)

    def _last_chunk(self, call: DecodeCall, result: GenerationResult) -> GenerationChunk:
        return GenerationChunk(text="", generation_info=_info(call, result))


def _in_input_order(count: int, refused: dict[int, Exception], answers: list[Any]) -> list[Any]:
    """The refused inputs' errors and the others' answers, in the inputs' order."""
    remaining = iter(answers)
    return [refused[index] if index in refused else next(remaining) for index in range(count)]


def _info(call: DecodeCall, result: GenerationResult) -> dict[str, Any]:
    """``generation_info``: the chat model's ``response_metadata`` plus the token usage."""
    return {**call.metadata(result), "usage": dict(call.usage(result))}


def _llm_result(call: DecodeCall, results: list[GenerationResult]) -> LLMResult:
    """LangChain's result for a batch of core results, with the summed token usage."""
    generations = [[Generation(text=result.text, generation_info=_info(call, result))] for result in results]
    usage = {
        "input_tokens": sum(result.input_tokens for result in results),
        "output_tokens": sum(result.output_tokens for result in results),
    }
    usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    return LLMResult(generations=generations, llm_output={"model_name": call.llm.name, "token_usage": usage})
