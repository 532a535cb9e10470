"""The lockstep decoding engine.

A request expands into the rows its method needs (e.g. OPAD: the conversation with and
without the principle). All rows of all requests that run on the same model go through ONE
batched forward per step, left-padded with explicit position ids and a KV cache; rows that
differ only by a LoRA adapter share that forward (a per-row gate on the adapter, or peft's
``adapter_names`` where the gate does not apply; see ``lora_gate``). The
method turns the rows' fp32 logits into one score per token, one token is chosen per request
and appended to every row of it. Finished requests leave the batch.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from aligned_llm import constraints
from aligned_llm.constraints import Constraint, ConstraintState
from aligned_llm.errors import NonFiniteLogitsError
from aligned_llm.lora_gate import lora_gate
from aligned_llm.methods.base import DecodingMethod, RowSpec, State, StepScores
from aligned_llm.result import FinishReason, GenerationResult, TokenTrace, ToolCallDelta
from aligned_llm.sampling import choose_tokens
from aligned_llm.setup import ADAPTERS_OFF, LOADED_ADAPTER
from aligned_llm.streaming import TextAssembler

Lock = AbstractContextManager[object]


@dataclass
class EngineRequest:
    """One prompt: the token ids of each of its method's rows, and when to stop."""

    row_ids: Sequence[Sequence[int]]
    max_new_tokens: int
    stop_strings: Sequence[str] = ()
    seed: int | None = None
    constraint: Constraint | None = None
    """A grammar over the answer (tool calls, response format); see ``constraints``."""


@dataclass(frozen=True)
class StepEvent:
    """Emitted after every step for each request that produced text or finished."""

    index: int
    delta: str
    generated_tokens: int
    result: GenerationResult | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    """Tool-call pieces decided at this step (set by ``tools.read_answers``; ``delta`` is then prose)."""


@dataclass(frozen=True)
class Sampling:
    """How the final scores become a token: temperature 0 is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0


PREFILL_CHUNK = 512
"""Prompt positions per prefill forward: a long prompt is prefilled in chunks, so cancel() acts between them."""


@dataclass
class _Progress:
    """Decoding state of one request on the host side."""

    request: EngineRequest
    assembler: TextAssembler
    generator: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    trace: list[TokenTrace] | None = None
    finish_reason: FinishReason | None = None
    constraint: ConstraintState | None = None


@dataclass
class _Batch:
    """The running state of one ``Engine.run``: every request's progress, the row groups, who is active."""

    progress: list[_Progress]
    groups: list[_RowGroup]
    active: list[int]
    state: State = field(default_factory=dict)

    def active_progress(self) -> list[_Progress]:
        return [self.progress[index] for index in self.active]


class _RowGroup:
    """The rows of every active request that one model runs, with their KV cache."""

    def __init__(self, model: PreTrainedModel, row_positions: list[int], adapters: list[str | None]) -> None:
        self.model = model
        self.row_positions = row_positions
        self.adapters = adapters
        self.cache = None
        self.attention_mask = torch.empty(0)
        self.next_positions = torch.empty(0)

    @property
    def rows_per_request(self) -> int:
        return len(self.row_positions)

    @contextmanager
    def _adapters(self, requests: int) -> Iterator[dict[str, object]]:
        """Route each row to its adapter for one forward; yield the forward's extra kwargs.

        Rows that ask for none run the model as loaded: its ``default`` adapter if it has
        one, else the base weights. The per-row LoRA gate is used where it applies, else
        peft's ``adapter_names``.
        """
        adapters = getattr(self.model, "peft_config", None)
        if adapters is None:
            if any(adapter is not None for adapter in self.adapters):
                raise ValueError(f"rows ask for adapters {self.adapters} but the model has no peft adapters")
            yield {}
            return
        loaded = LOADED_ADAPTER if LOADED_ADAPTER in adapters else ADAPTERS_OFF
        row_adapters = [adapter or loaded for adapter in self.adapters] * requests
        gate = lora_gate(self.model, row_adapters)
        if gate is None:
            yield {"adapter_names": row_adapters}
            return
        with gate.rows(row_adapters):
            yield {}

    def prefill(
        self, prompts: list[Sequence[int]], pad_id: int, keep_all_logits: bool, cancel: threading.Event, lock: Lock
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Run the left-padded prompts in chunks; return the last-position logits ``[N, V]``.

        With ``keep_all_logits``, also the mean logits over each row's real prompt positions.
        Each chunk of ``PREFILL_CHUNK`` positions is one forward under ``lock``; ``cancel`` is
        checked between chunks, and ``None`` is returned when it is set.
        """
        device = self.model.device
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logit_sum: torch.Tensor | None = None
        last = torch.empty(0)
        for start in range(0, width, PREFILL_CHUNK):
            if cancel.is_set():
                return None
            end = min(start + PREFILL_CHUNK, width)
            with lock, torch.inference_mode(), self._adapters(len(prompts) // self.rows_per_request) as adapter_kwargs:
                output = self.model(
                    input_ids=input_ids[:, start:end],
                    attention_mask=mask[:, :end],
                    position_ids=positions[:, start:end],
                    past_key_values=self.cache,
                    use_cache=True,
                    logits_to_keep=0 if keep_all_logits else 1,
                    **adapter_kwargs,
                )
                self.cache = output.past_key_values
                last = output.logits[:, -1].float()
                if keep_all_logits:
                    weights = mask[:, start:end].unsqueeze(-1).float()
                    chunk_sum = (output.logits.float() * weights).sum(1)
                    logit_sum = chunk_sum if logit_sum is None else logit_sum + chunk_sum
        self.attention_mask = mask
        self.next_positions = mask.sum(-1)
        if logit_sum is None:
            return last, None
        return last, logit_sum / mask.sum(-1, keepdim=True).float()

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per request to each of its rows; return logits ``[N, V]``."""
        input_ids = tokens.repeat_interleave(self.rows_per_request).unsqueeze(-1)
        ones = torch.ones((input_ids.shape[0], 1), dtype=self.attention_mask.dtype, device=input_ids.device)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=-1)
        with self._adapters(tokens.shape[0]) as adapter_kwargs:
            output = self.model(
                input_ids=input_ids,
                attention_mask=self.attention_mask,
                position_ids=self.next_positions.unsqueeze(-1),
                past_key_values=self.cache,
                use_cache=True,
                **adapter_kwargs,
            )
        self.cache = output.past_key_values
        self.next_positions = self.next_positions + 1
        return output.logits[:, -1].float()

    def keep(self, requests: torch.Tensor) -> None:
        """Drop the rows of requests that finished; ``requests`` indexes the survivors."""
        rows = (requests.unsqueeze(-1) * self.rows_per_request + torch.arange(self.rows_per_request)).flatten()
        rows = rows.to(self.attention_mask.device)
        self.cache.batch_select_indices(rows)
        self.attention_mask = self.attention_mask[rows]
        self.next_positions = self.next_positions[rows]


class Engine:
    """Runs a batch of requests of one method in lockstep; yields text as it is decided."""

    def __init__(
        self,
        models: Mapping[str, PreTrainedModel],
        tokenizer: PreTrainedTokenizerBase,
        stop_token_ids: Sequence[int],
        pad_token_id: int,
    ) -> None:
        self.models = dict(models)
        self.tokenizer = tokenizer
        self.stop_token_ids = frozenset(stop_token_ids)
        self.pad_token_id = pad_token_id
        self.lock = threading.Lock()
        """Held for each forward (never across a yield): peft's per-row adapter routing patches
        modules for the duration of a call, so two forwards must not overlap."""

    def run(
        self,
        requests: Sequence[EngineRequest],
        method: DecodingMethod,
        sampling: Sampling = Sampling(),
        *,
        trace: bool = False,
        cancel: threading.Event | None = None,
    ) -> Iterator[StepEvent]:
        """Decode every request to completion: prefill, then score → choose → record → drop, per step.

        Yields a ``StepEvent`` per request and step that produced text, and a final one
        (with ``result``) when a request finishes.
        """
        cancel = cancel or threading.Event()
        batch = _Batch(
            progress=[self._start(request, trace) for request in requests],
            groups=self._groups(method.rows),
            active=list(range(len(requests))),
        )
        prefilled = self._prefill(batch.groups, requests, method, cancel)
        if prefilled is None:
            yield from self._cancel_all(batch, method)
            return
        logits, batch.state = prefilled
        step = 0
        while True:
            if cancel.is_set():
                yield from self._cancel_all(batch, method)
                return
            scores = self._score(logits, batch.state, step, method, batch)
            tokens = self._choose(scores, sampling, batch)
            finished = yield from self._record(tokens, logits, scores, method, batch)
            if finished:
                yield from self._finish(batch.progress, finished, method)
                tokens = self._drop(finished, tokens, batch)
                if not batch.active:
                    return
            step += 1
            logits = self._forward(batch.groups, tokens, len(method.rows))

    def _start(self, request: EngineRequest, trace: bool) -> _Progress:
        constraint = request.constraint
        return _Progress(
            request=request,
            assembler=TextAssembler(self.tokenizer, request.stop_strings, constraint and constraint.protect),
            generator=None if request.seed is None else torch.Generator().manual_seed(request.seed),
            trace=[] if trace else None,
            constraint=constraint and constraint.start(),
        )

    @torch.inference_mode()
    def _score(
        self, logits: torch.Tensor, state: State, step: int, method: DecodingMethod, batch: _Batch
    ) -> StepScores:
        """The method's scores for this step (checked: the model and the method gave numbers), grammars applied."""
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteLogitsError(
                f"the model returned NaN or infinite logits at step {step}; "
                "check the model weights and dtype (fp16 overflow is a common cause)"
            )
        scored = method.score(logits, state, step)
        batch.state = scored.state
        scores = scored.scores
        if bool(torch.isnan(scores).any() | torch.isposinf(scores).any()) or not bool(
            torch.isfinite(scores).any(dim=-1).all()
        ):
            raise NonFiniteLogitsError(
                f"method {method!r} produced NaN, +inf or no finite score at step {step}: its parameters "
                "overflow fp32 scores; use a milder setting"
            )
        grammars = [item.constraint for item in batch.active_progress()]
        masked, signal = constraints.constrain_scores(scores, scored.signal, logits, grammars)
        return scored._replace(scores=masked, signal=signal)

    @torch.inference_mode()
    def _choose(self, scored: StepScores, sampling: Sampling, batch: _Batch) -> torch.Tensor:
        """One token per active request: greedy (with the method's tie-break) or seeded sampling."""
        items = batch.active_progress()
        generators = [item.generator for item in items] if any(item.generator for item in items) else None
        tokens = choose_tokens(
            scored.scores,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            generators=generators,
            tie_break=scored.tie_break,
        )
        constraints.advance([item.constraint for item in items], tokens)
        return tokens

    def _record(
        self, tokens: torch.Tensor, logits: torch.Tensor, scored: StepScores, method: DecodingMethod, batch: _Batch
    ) -> Generator[StepEvent, None, list[int]]:
        """Append each request's token, yield its new text, and return the requests that finished."""
        traces = None
        if batch.progress[batch.active[0]].trace is not None:
            traces = self._trace(logits, scored.scores, scored.signal, tokens, method.rows)
        finished: list[int] = []
        for slot, (index, token) in enumerate(zip(batch.active, tokens.tolist(), strict=True)):
            item = batch.progress[index]
            item.token_ids.append(token)
            if traces is not None:
                item.trace.append(traces[slot])
            if token in self.stop_token_ids:
                item.finish_reason = "stop"
            else:
                delta = item.assembler.add(token)
                if item.assembler.stopped_by is not None or (item.constraint and item.constraint.finished):
                    item.finish_reason = "stop"
                elif len(item.token_ids) >= item.request.max_new_tokens:
                    item.finish_reason = "length"
                if delta:
                    yield StepEvent(index, delta, len(item.token_ids))
            if item.finish_reason is not None:
                finished.append(index)
        return finished

    def _drop(self, finished: list[int], tokens: torch.Tensor, batch: _Batch) -> torch.Tensor:
        """Remove finished requests from the caches and the method state; return the survivors' tokens."""
        survivors = [slot for slot, index in enumerate(batch.active) if index not in finished]
        batch.active = [batch.active[slot] for slot in survivors]
        if not survivors:
            return tokens[:0]
        keep = torch.tensor(survivors, dtype=torch.long)
        for group in batch.groups:
            group.keep(keep)
        keep = keep.to(tokens.device)
        batch.state = {name: value[keep] for name, value in batch.state.items()}
        return tokens[keep]

    def _cancel_all(self, batch: _Batch, method: DecodingMethod) -> Iterator[StepEvent]:
        for index in batch.active:
            batch.progress[index].finish_reason = "cancelled"
        yield from self._finish(batch.progress, batch.active, method)

    def _groups(self, rows: Sequence[RowSpec]) -> list[_RowGroup]:
        by_model: dict[str, list[int]] = {}
        for position, row in enumerate(rows):
            by_model.setdefault(row.model, []).append(position)
        return [
            _RowGroup(self.models[name], positions, [rows[p].adapter for p in positions])
            for name, positions in by_model.items()
        ]

    def _prefill(
        self,
        groups: list[_RowGroup],
        requests: Sequence[EngineRequest],
        method: DecodingMethod,
        cancel: threading.Event,
    ) -> tuple[torch.Tensor, State] | None:
        """Prefill every group; the first step's logits ``[B, R, V]`` and the method's initial state.

        ``None`` when ``cancel`` was set before or during the prefill.
        """
        batch, row_count = len(requests), len(method.rows)
        logits: torch.Tensor | None = None
        prompt_logits: torch.Tensor | None = None
        for group in groups:
            prompts = [request.row_ids[p] for request in requests for p in group.row_positions]
            prefilled = group.prefill(prompts, self.pad_token_id, method.needs_prompt_logits, cancel, self.lock)
            if prefilled is None:
                return None
            last, mean = prefilled
            if logits is None:
                logits = last.new_empty((batch, row_count, last.shape[-1]))
                if mean is not None:
                    prompt_logits = torch.empty_like(logits)
            logits[:, group.row_positions] = last.view(batch, group.rows_per_request, -1)
            if mean is not None:
                prompt_logits[:, group.row_positions] = mean.view(batch, group.rows_per_request, -1)
        with torch.inference_mode():
            return logits, method.initial_state(prompt_logits)

    def _forward(self, groups: list[_RowGroup], tokens: torch.Tensor, row_count: int) -> torch.Tensor:
        with self.lock, torch.inference_mode():
            return self._forward_locked(groups, tokens, row_count)

    def _forward_locked(self, groups: list[_RowGroup], tokens: torch.Tensor, row_count: int) -> torch.Tensor:
        if len(groups) == 1:
            return groups[0].step(tokens).view(tokens.shape[0], row_count, -1)
        logits: torch.Tensor | None = None
        for group in groups:
            group_logits = group.step(tokens.to(group.model.device)).to(tokens.device)
            if logits is None:
                logits = group_logits.new_empty((tokens.shape[0], row_count, group_logits.shape[-1]))
            logits[:, group.row_positions] = group_logits.view(tokens.shape[0], group.rows_per_request, -1)
        return logits

    def _trace(
        self,
        logits: torch.Tensor,
        scores: torch.Tensor,
        signal: torch.Tensor,
        tokens: torch.Tensor,
        rows: Sequence[RowSpec],
    ) -> list[TokenTrace]:
        logprobs = torch.log_softmax(logits, dim=-1)
        index = tokens.view(-1, 1)
        chosen_logprobs = logprobs.gather(-1, index.unsqueeze(1).expand(-1, len(rows), 1)).squeeze(-1).tolist()
        chosen_scores = scores.gather(-1, index).squeeze(-1).tolist()
        chosen_signal = signal.gather(-1, index).squeeze(-1).tolist()
        if len(rows) > 1:
            first, second = logprobs[:, 0], logprobs[:, 1]
            kls: list[float | None] = (first.exp() * (first - second)).sum(-1).tolist()
        else:
            kls = [None] * tokens.shape[0]
        return [
            TokenTrace(
                token_id=token,
                text=self.tokenizer.decode([token]),
                logprobs={row.name: value for row, value in zip(rows, chosen_logprobs[slot], strict=True)},
                score=chosen_scores[slot],
                signal=chosen_signal[slot],
                kl=kls[slot],
            )
            for slot, token in enumerate(tokens.tolist())
        ]

    def _finish(self, progress: list[_Progress], indices: list[int], method: DecodingMethod) -> Iterator[StepEvent]:
        for index in indices:
            item = progress[index]
            delta = item.assembler.finish()
            yield StepEvent(
                index,
                delta,
                len(item.token_ids),
                GenerationResult(
                    text=item.assembler.text,
                    input_tokens=len(item.request.row_ids[0]),
                    output_tokens=len(item.token_ids),
                    finish_reason=item.finish_reason or "cancelled",
                    token_ids=tuple(item.token_ids),
                    method=method.name,
                    trace=item.trace,
                ),
            )
