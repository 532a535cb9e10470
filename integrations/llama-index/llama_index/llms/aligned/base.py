"""``AlignedHF``: a LlamaIndex LLM that decodes a local Hugging Face model with aligned-llm."""

from __future__ import annotations

import difflib
import os
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from aligned_llm import AlignedLLM, InvalidSettingError
from aligned_llm.typed_fields import SchemaOfSettings, keep_setting_fields
from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr, ValidationError
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection

from llama_index.llms.aligned.messages import to_core_messages
from llama_index.llms.aligned.responses import achat_chunks, chat_chunks, chat_response
from llama_index.llms.aligned.settings import (
    check_answer_fits,
    core_kwargs,
    decoding_fields,
    merge_overrides,
    reserved_tokens,
    setting_error,
    settings_names,
)
from llama_index.llms.aligned.structured import forced_program
from llama_index.llms.aligned.tools import chat_kwargs_with_tools, first_call_only, tool_selections

if TYPE_CHECKING:
    from aligned_llm.llm import ModelSource
    from llama_index.core.prompts import PromptTemplate
    from llama_index.core.tools.types import BaseTool
    from llama_index.core.types import Model


def _checked() -> frozenset[str]:
    """Fields checked by the core on assignment: every registry setting, and the context-window cap."""
    return frozenset(settings_names()) | {"context_window"}


class AlignedHF(SchemaOfSettings, FunctionCallingLLM):
    """A chat LLM for query engines, chat engines and agents, aligned at decoding time.

    It wraps a loaded :class:`aligned_llm.AlignedLLM` (``core``), which copies share. Every
    decoding setting is a field (``None``: the library's default) and a per-call keyword of
    ``complete``/``chat``; since query engines pass no keywords, :meth:`with_settings` makes
    a configured copy per query or per user. Settings are checked by the core on
    construction, on assignment and per call: a bad value raises ``InvalidSettingError``
    naming it. Chats are rendered with the model's own chat template. The settings' fields
    come from the core's registry (methods registered later add theirs). Tool calls
    (``chat_with_tools``, ``FunctionAgent``) and structured outputs are grammar-constrained:
    valid by construction. ``complete`` and its variants are ``chat`` with the prompt as one
    user turn (LlamaIndex's own decorators); ``metadata`` is computed when the settings change,
    not on each access.
    """

    model_config = ConfigDict(validate_assignment=True, arbitrary_types_allowed=True)

    core: AlignedLLM = Field(exclude=True, description="The loaded aligned-llm model; copies share it.")
    context_window: int | None = Field(None, strict=True, description="A cap on the model's context window")
    _metadata: LLMMetadata | None = PrivateAttr(default=None)

    def __init__(self, core: AlignedLLM, **fields: Any) -> None:
        """Wrap a loaded ``AlignedLLM``; ``fields`` are settings and LlamaIndex LLM fields (an unknown name raises)."""
        self._check_names(fields)
        try:
            super().__init__(core=core, **fields)
        except ValidationError as error:
            raise setting_error(error) from error
        self._check()

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        adapter: str | os.PathLike[str] | None = None,
        reference: ModelSource | None = None,
        reward_model: ModelSource | None = None,
        **fields: Any,
    ) -> AlignedHF:
        """Load a local model folder (offline) or a hub id, then wrap it with ``fields`` (names checked first).

        The load options are ``ModelSpec``'s (``AlignedLLM.from_pretrained``'s): ``adapter`` a LoRA
        folder on the model (AAD's DPO side), ``reference`` the SFT model of a DPO model
        (two-model AAD), ``reward_model`` PAD's PersRM (a model, or a LoRA folder on the model).
        """
        cls._check_names(fields)
        core = AlignedLLM.from_pretrained(
            name_or_path, device=device, dtype=dtype, adapter=adapter, reference=reference, reward_model=reward_model
        )
        return cls(core, **fields)

    @classmethod
    def default(
        cls,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        adapter: str | None = None,
        reward_model: ModelSource | None = None,
        **fields: Any,
    ) -> AlignedHF:
        """The bundled SmolLM2-135M-Instruct, which works offline (``fields``' names are checked before it loads).

        ``adapter="bundled"`` adds the shipped DPO adapter (an AAD pair); ``reward_model`` as in
        :meth:`from_pretrained`.
        """
        cls._check_names(fields)
        return cls(AlignedLLM.default(device=device, dtype=dtype, adapter=adapter, reward_model=reward_model), **fields)

    @classmethod
    def class_name(cls) -> str:
        return "AlignedHF"

    @classmethod
    def _check_names(cls, fields: Mapping[str, Any]) -> None:
        """Refuse a keyword that is not a field (pydantic would drop it silently), suggesting the closest."""
        known = [name for name in cls.model_fields if name != "core"]
        for name in fields:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise InvalidSettingError(
                    name,
                    f"is not a field of AlignedHF; {hint}the settings are {', '.join(settings_names())}; "
                    f"the other fields are {', '.join(sorted(set(known) - set(settings_names())))}",
                )

    @property
    def settings(self) -> dict[str, Any]:
        """The current settings (``None``: the library's default)."""
        return {name: getattr(self, name) for name in settings_names()}

    def with_settings(self, **changes: Any) -> AlignedHF:
        """A copy with ``changes`` applied that shares the loaded model: cheap, per query or per user.

        Besides the settings, ``context_window`` and ``system_prompt`` may change; the
        original is left as it is, and changing the copy later does not affect it.
        """
        copyable = _checked() | {"system_prompt"}
        for name in changes:
            if name not in copyable:
                raise InvalidSettingError(name, f"cannot be changed by with_settings; allowed: {sorted(copyable)}")
        current = {name: getattr(self, name) for name in type(self).model_fields if name != "core"}
        return type(self)(self.core, **{**current, **changes})

    def __setattr__(self, name: str, value: Any) -> None:
        """Check a setting as it is assigned; a bad value raises and leaves the old one in place."""
        if name not in _checked():
            super().__setattr__(name, value)
            return
        previous = getattr(self, name)
        try:
            super().__setattr__(name, value)
        except ValidationError as error:
            raise setting_error(error) from error
        try:
            self._check()
        except InvalidSettingError:
            super().__setattr__(name, previous)
            raise

    def _check(self) -> None:
        """Check the settings together with this model, bound the window cap and the answer, and keep the metadata."""
        reserved = reserved_tokens(self.core, self.settings)
        window = self.core.context_window
        if self.context_window is not None and not 0 < self.context_window <= window:
            raise InvalidSettingError(
                "context_window", f"must be None or in [1, {window}] (the model's), got {self.context_window!r}"
            )
        window = self.context_window or window
        check_answer_fits(self.max_new_tokens, window, reserved)
        self._metadata = LLMMetadata(
            context_window=window - reserved,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=self.core.name,
        )

    @property
    def metadata(self) -> LLMMetadata:
        """The model's context window less what LlamaIndex cannot count, and the answer length.

        ``context_window`` is the model's (or the ``context_window`` cap) minus the chat
        template's markup and the principle/profile the core renders into the prompt, so
        LlamaIndex never packs a prompt that overflows. Computed when the settings are set.
        """
        if self._metadata is None:
            self._check()
        return self._metadata

    def to_payload(self) -> dict[str, Any]:
        """Metadata plus the settings given, for instrumentation events and callbacks."""
        given = {name: value for name, value in self.settings.items() if value is not None}
        return {**super().to_payload(), "settings": given}

    def _call_kwargs(self, overrides: dict[str, Any]) -> dict[str, Any]:
        return core_kwargs(merge_overrides(self.settings, overrides))

    # --- function calling: translation in tools.py ---

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``chat`` keywords for a turn with ``tools``: their OpenAI-style specs, the choice, ``kwargs`` settings."""
        return chat_kwargs_with_tools(
            tools, user_msg, chat_history, allow_parallel_tool_calls, tool_required, tool_choice, kwargs
        )

    def _validate_chat_with_tools_response(
        self, response: ChatResponse, tools: Sequence[BaseTool], allow_parallel_tool_calls: bool = False, **kwargs: Any
    ) -> ChatResponse:
        """Keep one tool call unless parallel calls were allowed."""
        return response if allow_parallel_tool_calls else first_call_only(response)

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The response's tool calls (``ToolSelection(tool_id, tool_name, tool_kwargs)``)."""
        return tool_selections(response, error_on_no_tool_call)

    def _structured_stream_call(
        self, output_cls: type[Model], prompt: PromptTemplate, llm_kwargs: dict[str, Any] | None = None, **args: Any
    ) -> Generator[Any, None, None]:
        """``stream_structured_predict``'s program, made to call the schema's tool (see ``structured``)."""
        program = forced_program(self, output_cls, prompt)
        if program is None:
            return super()._structured_stream_call(output_cls, prompt, llm_kwargs, **args)
        return program.stream_call(llm_kwargs=llm_kwargs, **args)

    async def _structured_astream_call(
        self, output_cls: type[Model], prompt: PromptTemplate, llm_kwargs: dict[str, Any] | None = None, **args: Any
    ) -> AsyncGenerator[Any, None]:
        """The async variant of :meth:`_structured_stream_call`."""
        program = forced_program(self, output_cls, prompt)
        if program is None:
            return await super()._structured_astream_call(output_cls, prompt, llm_kwargs, **args)
        return await program.astream_call(llm_kwargs=llm_kwargs, **args)

    def _completion_prompt(self, prompt: str, formatted: bool) -> str:
        return prompt if formatted else self.completion_to_prompt(prompt)

    # complete/stream_complete/acomplete/astream_complete are the chat methods with the prompt as one user turn,
    # through LlamaIndex's decorators; each public method fires its own events once (never a nested chat's too).

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Answer ``prompt`` as one user turn of the chat template; ``kwargs`` override settings."""
        return chat_to_completion_decorator(self._chat)(self._completion_prompt(prompt, formatted), **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Like :meth:`complete`, one response per text delta."""
        stream = stream_chat_to_completion_decorator(self._stream_chat)
        return stream(self._completion_prompt(prompt, formatted), **kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """:meth:`complete` through the core's ``agenerate``: the event loop keeps running."""
        return await achat_to_completion_decorator(self._achat)(self._completion_prompt(prompt, formatted), **kwargs)

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        """:meth:`stream_complete` over the core's async stream."""
        stream = astream_chat_to_completion_decorator(self._astream_chat)
        return await stream(self._completion_prompt(prompt, formatted), **kwargs)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Answer the conversation, rendered with the chat template; ``kwargs`` override settings."""
        return self._chat(messages, **kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Like :meth:`chat`, one response per text delta (the prompt and settings are checked before it returns)."""
        return self._stream_chat(messages, **kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """:meth:`chat` through the core's ``agenerate``: the event loop keeps running."""
        return await self._achat(messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """:meth:`stream_chat` as an async generator over the core's async stream."""
        return await self._astream_chat(messages, **kwargs)

    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call = self._call_kwargs(kwargs)
        result = self.core.generate(to_core_messages(messages), **call)
        return chat_response(result, self.core.name, call)

    def _stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        call = self._call_kwargs(kwargs)
        stream = self.core.stream(to_core_messages(messages), **call)
        return chat_chunks(stream, self.core.name, call)

    async def _achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        call = self._call_kwargs(kwargs)
        result = await self.core.agenerate(to_core_messages(messages), **call)
        return chat_response(result, self.core.name, call)

    async def _astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        call = self._call_kwargs(kwargs)
        stream = self.core.stream(to_core_messages(messages), **call)
        return achat_chunks(stream, self.core.name, call)


keep_setting_fields(AlignedHF, decoding_fields)
