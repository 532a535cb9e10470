"""``ChatAlignedLLM``: a LangChain chat model that decodes a local model with aligned-llm's methods."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aligned_llm import GenerationResult, StreamDelta
from aligned_llm.prompts import Conversation
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput, ModelProfile
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict

from langchain_aligned_llm.decode_call import DecodeCall
from langchain_aligned_llm.decoding import CoreDecoding
from langchain_aligned_llm.messages import to_conversation
from langchain_aligned_llm.structured import structured_runnable
from langchain_aligned_llm.tool_messages import message_chunk
from langchain_aligned_llm.tools import ToolLike, bind_kwargs


class ChatAlignedLLM(CoreDecoding, BaseChatModel):
    """Chat model over a local Hugging Face model, aligned at decoding time (OPAD, …) by aligned-llm.

    Pass a loaded ``AlignedLLM`` as ``llm``, or a ``model`` folder / hub id that is loaded on
    first use and shared (default: the bundled SmolLM2-135M-Instruct). Every decoding setting
    is a field and a per-call keyword: ``chat.invoke(messages, principle="Be brief.")``,
    ``chat.bind(method="opad", beta=2.0)``. Tool calls (``bind_tools``) and structured output
    (``with_structured_output``) are grammar-constrained: valid by construction. Text only.

    ``invoke`` decodes through the same stream as ``stream`` (one path) and aggregates it;
    concurrent calls (``batch``, ``abatch``, several threads or tasks) share the model's
    running batch, one forward per step for all of them. ``profile`` says what the model
    supports, ``max_input_tokens`` included; ``output_version="v1"`` answers with standard
    content blocks (text, ``tool_call``).
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
        """What the model supports: text in and out, tool calling and structured output (by grammar), its window."""
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
        window = llm.context_window if llm is not None else self._spec(self.model_name).declared_context_window()
        if window is not None:
            profile["max_input_tokens"] = window
        return profile

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """The stream, aggregated: the answer, its tool calls, usage and metadata (no per-token callbacks)."""
        return self._with_model_name(generate_from_stream(self._stream(messages, stop, **kwargs)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """The async stream, aggregated (the event loop keeps running while the model decodes)."""
        return self._with_model_name(await agenerate_from_stream(self._astream(messages, stop, **kwargs)))

    @staticmethod
    def _with_model_name(result: ChatResult) -> ChatResult:
        """``llm_output["model_name"]`` for callbacks' ``on_llm_end``, as hosted chat models report it."""
        result.llm_output = {"model_name": result.generations[0].message.response_metadata.get("model_name")}
        return result

    def _core_prompt(self, value: list[BaseMessage]) -> Conversation:
        return to_conversation(value)

    def _text_chunk(self, delta: StreamDelta) -> ChatGenerationChunk:
        return ChatGenerationChunk(message=message_chunk(delta))

    def _last_chunk(self, call: DecodeCall, result: GenerationResult) -> ChatGenerationChunk:
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
