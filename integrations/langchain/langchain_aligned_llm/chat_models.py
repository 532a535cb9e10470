"""``ChatAlignedLLM``: a LangChain chat model that decodes a local model with aligned-llm's methods."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aligned_llm import GenerationResult, StreamDelta
from aligned_llm.prompts import Conversation
from langchain_core.caches import BaseCache
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput, ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict

from langchain_aligned_llm.batching import BatchPlan, batch_plan, planned_result
from langchain_aligned_llm.core_call import CoreCall
from langchain_aligned_llm.decoding import CoreDecoding
from langchain_aligned_llm.messages import to_conversation
from langchain_aligned_llm.structured import structured_runnable
from langchain_aligned_llm.tool_messages import ai_message, message_chunk
from langchain_aligned_llm.tools import ToolLike, bind_kwargs


class ChatAlignedLLM(CoreDecoding, BaseChatModel):
    """Chat model over a local Hugging Face model, aligned at decoding time (OPAD, …) by aligned-llm.

    Pass a loaded ``AlignedLLM`` as ``llm``, or a ``model`` folder / hub id that is loaded on
    first use and shared (default: the bundled SmolLM2-135M-Instruct). Every decoding setting
    is a field and a per-call keyword: ``chat.invoke(messages, principle="Be brief.")``,
    ``chat.bind(method="opad", beta=2.0)``. Tool calls (``bind_tools``) and structured output
    (``with_structured_output``) are grammar-constrained: valid by construction. Text only.
    """

    model_config = ConfigDict(extra="forbid")

    streaming: bool = False
    """Decode through the streaming path even in ``invoke`` (callbacks then see each token)."""

    @property
    def _llm_type(self) -> str:
        return "aligned-llm-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self._aligned_identifying_params()

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        return LangSmithParams(ls_model_type="chat", **self._aligned_ls_params(stop, kwargs))

    def _resolve_model_profile(self) -> ModelProfile | None:
        profile = ModelProfile(
            text_inputs=True,
            text_outputs=True,
            image_inputs=False,
            audio_inputs=False,
            video_inputs=False,
            pdf_inputs=False,
            tool_calling=True,
            tool_choice=True,
            tool_call_streaming=True,
            structured_output=True,
        )
        llm = self._loaded_llm()
        if llm is not None:
            profile["max_input_tokens"] = llm.context_window
        return profile

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._core_call(stop, kwargs)
        conversation = to_conversation(messages)
        result = planned_result(call, conversation) or call.llm.generate(conversation, **call.settings)
        metadata = call.metadata(result)
        message = ai_message(result, usage_metadata=call.usage(result), response_metadata=metadata)
        return ChatResult(
            generations=[ChatGeneration(message=message, generation_info=metadata)],
            llm_output={"model_name": call.llm.name},
        )

    def _core_prompt(self, value: list[BaseMessage]) -> Conversation:
        return to_conversation(value)

    def _text_chunk(self, delta: StreamDelta) -> ChatGenerationChunk:
        return ChatGenerationChunk(message=message_chunk(delta))

    def _last_chunk(self, call: CoreCall, result: GenerationResult) -> ChatGenerationChunk:
        metadata = call.metadata(result)
        last = AIMessageChunk(
            content="", usage_metadata=call.usage(result), response_metadata=metadata, chunk_position="last"
        )
        return ChatGenerationChunk(message=last, generation_info=metadata)

    # --- tool calling and structured output: translation in tools.py, tool_messages.py, structured.py ---

    def bind_tools(
        self,
        tools: Sequence[ToolLike],
        *,
        tool_choice: str | bool | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (LangChain tools, pydantic classes, functions, TypedDicts, dicts): valid calls by construction.

        ``tool_choice``: ``"auto"`` (default), ``"none"``, ``"any"``/``"required"`` (at least one
        call), a tool's name, ``True`` (the only tool) or an OpenAI-style dict.
        ``parallel_tool_calls=False`` allows one call per answer; ``strict=True`` closes the
        schemas (no extra properties). ``kwargs`` (settings such as ``principle``) are bound too.
        """
        return self.bind(**bind_kwargs(tools, tool_choice, parallel_tool_calls, strict), **kwargs)

    def with_structured_output(
        self,
        schema: Mapping[str, Any] | type | None = None,
        *,
        method: str = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """A runnable returning validated objects of ``schema`` (pydantic instance or dict); see ``structured``.

        ``method``: ``"json_schema"`` (default; the core's ``response_format``),
        ``"function_calling"`` (a required call of the schema as a tool) or ``"json_mode"``.
        ``include_raw=True`` returns ``{"raw", "parsed", "parsing_error"}``.
        """
        return structured_runnable(self, schema, method=method, include_raw=include_raw, strict=strict, **kwargs)

    def batch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[BaseMessage]:
        """Like LangChain's ``batch()`` (one run per input), decoding inputs with equal settings as one engine batch."""
        with batch_plan(self._plan(inputs, kwargs)):
            return super().batch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    async def abatch(
        self,
        inputs: list[LanguageModelInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[BaseMessage]:
        """Async ``batch()``, batched the same way."""
        with batch_plan(self._plan(inputs, kwargs)):
            return await super().abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)

    def _plan(self, inputs: Sequence[LanguageModelInput], kwargs: dict[str, Any]) -> BatchPlan | None:
        """Announce the calls a batch will make; none when they would not reach ``_generate`` together."""
        if len(inputs) < 2 or self._caching() or self._should_stream(async_api=False, **kwargs):
            return None
        try:
            overrides = {name: value for name, value in kwargs.items() if name != "stop"}
            call = self._core_call(kwargs.get("stop"), overrides)
        except ValueError:
            return None  # every run fails on its own
        plan = BatchPlan(self.max_batch_size)
        for value in inputs:
            try:
                plan.expect(call, to_conversation(self._convert_input(value).to_messages()))
            except (ValueError, TypeError):
                continue  # this input fails on its own in its run
        return plan

    def _caching(self) -> bool:
        """Whether LangChain may answer some calls from its cache (they would then not reach the model)."""
        return self.cache is not False and (isinstance(self.cache, BaseCache) or get_llm_cache() is not None)
