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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from aligned_llm import constraints
from aligned_llm.constraints import Constraint, ConstraintState
from aligned_llm.errors import NonFiniteLogitsError
from aligned_llm.lora_gate import lora_gate
from aligned_llm.methods.base import DecodingMethod, RowSpec, State
from aligned_llm.result import FinishReason, GenerationResult, TokenTrace, ToolCallDelta
from aligned_llm.sampling import choose_tokens
from aligned_llm.streaming import TextAssembler


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
        loaded = "default" if "default" in adapters else "__base__"
        row_adapters = [adapter or loaded for adapter in self.adapters] * requests
        gate = lora_gate(self.model, row_adapters)
        if gate is None:
            yield {"adapter_names": row_adapters}
            return
        with gate.rows(row_adapters):
            yield {}

    def prefill(
        self, prompts: list[Sequence[int]], pad_id: int, keep_all_logits: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the left-padded prompts; return the last-position logits ``[N, V]``.

        With ``keep_all_logits``, also the mean logits over each row's real prompt positions.
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
        with self._adapters(len(prompts) // self.rows_per_request) as adapter_kwargs:
            output = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=0 if keep_all_logits else 1,
                **adapter_kwargs,
            )
        self.cache = output.past_key_values
        self.attention_mask = mask
        self.next_positions = mask.sum(-1)
        last = output.logits[:, -1].float()
        if not keep_all_logits:
            return last, None
        weights = mask.unsqueeze(-1).float()
        mean = (output.logits.float() * weights).sum(1) / weights.sum(1)
        return last, mean

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
        """Decode every request to completion.

        Yields a ``StepEvent`` per request and step that produced text, and a final one
        (with ``result``) when a request finishes.
        """
        progress = [
            _Progress(
                request=request,
                assembler=TextAssembler(
                    self.tokenizer, request.stop_strings, protect=request.constraint and request.constraint.protect
                ),
                generator=None if request.seed is None else torch.Generator().manual_seed(request.seed),
                trace=[] if trace else None,
                constraint=request.constraint and request.constraint.start(),
            )
            for request in requests
        ]
        groups = self._groups(method.rows)
        logits, state = self._prefill(groups, requests, method)
        active = list(range(len(requests)))
        step = 0
        while True:
            if cancel is not None and cancel.is_set():
                for index in active:
                    progress[index].finish_reason = "cancelled"
                yield from self._finish(progress, active, method)
                return
            tokens, state, token_traces = self._choose(
                logits, state, step, method, sampling, [progress[i] for i in active], trace
            )
            token_list = tokens.tolist()
            finished: list[int] = []
            for slot, index in enumerate(active):
                item = progress[index]
                token = token_list[slot]
                item.token_ids.append(token)
                if token_traces is not None:
                    item.trace.append(token_traces[slot])
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
            if finished:
                yield from self._finish(progress, finished, method)
                survivors = [slot for slot, index in enumerate(active) if index not in finished]
                if not survivors:
                    return
                keep = torch.tensor(survivors, dtype=torch.long)
                for group in groups:
                    group.keep(keep)
                keep = keep.to(tokens.device)
                state = {name: value[keep] for name, value in state.items()}
                tokens = tokens[keep]
                active = [active[slot] for slot in survivors]
            step += 1
            logits = self._forward(groups, tokens, len(method.rows))

    def _groups(self, rows: Sequence[RowSpec]) -> list[_RowGroup]:
        by_model: dict[str, list[int]] = {}
        for position, row in enumerate(rows):
            by_model.setdefault(row.model, []).append(position)
        return [
            _RowGroup(self.models[name], positions, [rows[p].adapter for p in positions])
            for name, positions in by_model.items()
        ]

    def _prefill(
        self, groups: list[_RowGroup], requests: Sequence[EngineRequest], method: DecodingMethod
    ) -> tuple[torch.Tensor, State]:
        with self.lock, torch.inference_mode():
            return self._prefill_locked(groups, requests, method)

    def _prefill_locked(
        self, groups: list[_RowGroup], requests: Sequence[EngineRequest], method: DecodingMethod
    ) -> tuple[torch.Tensor, State]:
        batch, row_count = len(requests), len(method.rows)
        logits: torch.Tensor | None = None
        prompt_logits: torch.Tensor | None = None
        for group in groups:
            prompts = [request.row_ids[p] for request in requests for p in group.row_positions]
            last, mean = group.prefill(prompts, self.pad_token_id, method.needs_prompt_logits)
            if logits is None:
                logits = last.new_empty((batch, row_count, last.shape[-1]))
                if mean is not None:
                    prompt_logits = torch.empty_like(logits)
            logits[:, group.row_positions] = last.view(batch, group.rows_per_request, -1)
            if mean is not None:
                prompt_logits[:, group.row_positions] = mean.view(batch, group.rows_per_request, -1)
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

    @torch.inference_mode()
    def _choose(
        self,
        logits: torch.Tensor,
        state: State,
        step: int,
        method: DecodingMethod,
        sampling: Sampling,
        items: list[_Progress],
        trace: bool,
    ) -> tuple[torch.Tensor, State, list[TokenTrace] | None]:
        non_finite = ~torch.isfinite(logits).all()
        scores, signal, state, tie_break = method.score(logits, state, step)
        grammars = [item.constraint for item in items]
        scores, signal = constraints.constrain_scores(scores, signal, logits, grammars)
        generators = [item.generator for item in items] if any(item.generator for item in items) else None
        tokens = choose_tokens(
            scores, temperature=sampling.temperature, top_p=sampling.top_p, generators=generators, tie_break=tie_break
        )
        constraints.advance(grammars, tokens)
        if bool(non_finite):
            raise NonFiniteLogitsError(
                f"the model returned NaN or infinite logits at step {step}; "
                "check the model weights and dtype (fp16 overflow is a common cause)"
            )
        if not trace:
            return tokens, state, None
        return tokens, state, self._trace(logits, scores, signal, tokens, method.rows)

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
