"""The decoding engine: rows on KV caches, chunked prefill, and each step's decisions.

A request expands into the rows its method needs (e.g. OPAD: the conversation with and
without the principle). Rows that run on the same model share one *lane*: left-padded,
right-aligned in one KV cache, one batched forward per step, whatever method or request they
belong to; rows that differ only by a LoRA adapter share that forward (a per-row gate on the
adapter, or peft's ``adapter_names`` where the gate does not apply; see ``lora_gate``). The
requests of one submission admitted together form a *group*: its method turns its rows' fp32
logits into one score per token, one token is chosen per request and fed to every row of it
at the next step. Finished requests leave their lanes.

Two drivers use these parts: :meth:`Engine.run` decodes one fixed batch in lockstep on the
calling thread (each forward under the model's lock, so concurrent calls interleave), and
``scheduler.Scheduler`` keeps one running batch that requests join and leave at step boundaries.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache, DynamicLayer

from aligned_llm.answer import constraint as constraints
from aligned_llm.answer.constraint import Constraint, ConstraintState
from aligned_llm.errors import NonFiniteLogitsError
from aligned_llm.lora_gate import lora_gate
from aligned_llm.methods.base import DecodingMethod, RowSpec, State, StepScores
from aligned_llm.result import FinishReason, GenerationResult, TokenTrace, ToolCallDelta
from aligned_llm.sampling import choose_tokens, penalize_repeats
from aligned_llm.setup import ADAPTERS_OFF, LOADED_ADAPTER
from aligned_llm.streaming import TextAssembler


@dataclass
class EngineRequest:
    """One prompt: the token ids of each of its method's rows, and when to stop."""

    row_ids: Sequence[Sequence[int]]
    max_new_tokens: int
    stop_strings: Sequence[str] = ()
    seed: int | None = None
    constraint: Constraint | None = None
    """A grammar over the answer (tool calls, response format); see ``answer.constraint``."""


@dataclass(frozen=True)
class StepEvent:
    """Emitted after every step for each request that produced text or finished."""

    index: int
    delta: str
    generated_tokens: int
    result: GenerationResult | None = None
    tool_calls: tuple[ToolCallDelta, ...] = ()
    """Tool-call pieces decided at this step (set by ``answer.reader.AnswerReading``; ``delta`` is then prose)."""


@dataclass(frozen=True)
class Sampling:
    """How the final scores become a token: temperature 0 is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @property
    def penalizes(self) -> bool:
        """Whether tokens already generated are penalised (see :func:`sampling.penalize_repeats`)."""
        return self.frequency_penalty != 0.0 or self.presence_penalty != 0.0


PREFILL_CHUNK = 512
"""Prompt positions per prefill forward: a long prompt is prefilled in chunks, so cancel() acts between them
and a running batch keeps stepping while a newcomer prefills."""

_MODEL_LOCKS: weakref.WeakKeyDictionary[torch.nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: torch.nn.Module) -> threading.Lock:
    """The lock held for each forward of ``model``, whoever runs it.

    peft's per-row adapter routing patches modules for the duration of a call, so two
    forwards of one model must not overlap, even from two ``AlignedLLM`` sharing the model.
    """
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.Lock()
        return lock


@dataclass(eq=False)
class Progress:
    """Decoding state of one request on the host side; ``index`` is its place in its submission."""

    index: int
    request: EngineRequest
    assembler: TextAssembler
    generator: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    trace: list[TokenTrace] | None = None
    finish_reason: FinishReason | None = None
    constraint: ConstraintState | None = None


class Group:
    """Requests of one submission admitted together: one method, one state, one token each per step."""

    def __init__(self, method: DecodingMethod, sampling: Sampling, items: list[Progress], owner: object = None) -> None:
        self.method = method
        self.sampling = sampling
        self.items = items
        self.owner = owner
        """Whoever submitted the requests (the scheduler's ticket); the engine never reads it."""
        self.state: State = {}
        self.step = 0
        self.tokens: torch.Tensor | None = None
        """The token each request chose last, fed to its rows at the next forward."""
        self.positions: dict[str, list[int]] = {}
        """Model name → the method's row positions that run on it, in row order."""
        for position, row in enumerate(method.rows):
            self.positions.setdefault(row.model, []).append(position)

    @property
    def row_count(self) -> int:
        return len(self.method.rows)

    def keep(self, slots: list[int]) -> None:
        """Keep only the requests at ``slots`` (their order), with their state and pending tokens."""
        self.items = [self.items[slot] for slot in slots]
        if not slots:
            self.state, self.tokens = {}, None
            return
        index = torch.tensor(slots, dtype=torch.long)
        if self.tokens is not None:
            self.tokens = self.tokens[index.to(self.tokens.device)]
        self.state = {name: value[index.to(value.device)] for name, value in self.state.items()}


def _mergeable(cache: object) -> bool:
    """Whether rows can be added to or removed from ``cache`` along the batch with left-padding alignment."""
    layers = getattr(cache, "layers", None)
    return isinstance(cache, DynamicCache) and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class Lane:
    """The rows one model runs: left-padded and right-aligned in one KV cache, one token each per step."""

    def __init__(
        self,
        model: PreTrainedModel,
        adapters: list[str | None],
        cache: object,
        attention_mask: torch.Tensor,
        next_positions: torch.Tensor,
    ) -> None:
        self.model = model
        self.adapters = adapters
        self.cache = cache
        self.attention_mask = attention_mask
        self.next_positions = next_positions

    @property
    def rows(self) -> int:
        return len(self.adapters)

    @property
    def length(self) -> int:
        """Cache positions per row, padding included."""
        return int(self.attention_mask.shape[1])

    @property
    def mergeable(self) -> bool:
        """Whether rows can join or leave this lane's cache (plain full-attention ``DynamicCache`` layers)."""
        return _mergeable(self.cache)

    def step(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Feed one token to each row (``[rows]``); return the next logits ``[rows, V]`` in fp32."""
        input_ids = input_ids.to(self.model.device).unsqueeze(-1)
        ones = torch.ones((self.rows, 1), dtype=self.attention_mask.dtype, device=self.attention_mask.device)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=-1)
        with model_lock(self.model), torch.inference_mode(), adapter_routing(self.model, self.adapters) as kwargs:
            output = self.model(
                input_ids=input_ids,
                attention_mask=self.attention_mask,
                position_ids=self.next_positions.unsqueeze(-1),
                cache=self.cache,
                use_cache=True,
                **kwargs,
            )
        self.cache = output.cache
        self.next_positions = self.next_positions + 1
        return output.logits[:, -1].float()

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in their order); cut the leading positions that are padding on every row left."""
        index = torch.tensor(rows, dtype=torch.long, device=self.attention_mask.device)
        mask = self.attention_mask[index]
        lead = int(mask.argmax(-1).min()) if rows else 0
        if rows and self.mergeable:
            for layer in self.cache.layers:
                layer.keys = layer.keys[index.to(layer.keys.device), :, lead:]
                layer.values = layer.values[index.to(layer.values.device), :, lead:]
        else:
            self.cache.batch_select_indices(index)
            lead = 0
        self.attention_mask = mask[:, lead:]
        self.next_positions = self.next_positions[index]
        self.adapters = [self.adapters[row] for row in rows]

    def extend(self, other: Lane) -> None:
        """Append ``other``'s rows after this lane's, padding the shorter cache on the left to align them."""
        width = max(self.length, other.length)
        for layer, joining in zip(self.cache.layers, other.cache.layers, strict=True):
            layer.keys = torch.cat([_left_pad(layer.keys, width), _left_pad(joining.keys, width)])
            layer.values = torch.cat([_left_pad(layer.values, width), _left_pad(joining.values, width)])
        self.attention_mask = torch.cat(
            [_left_pad(self.attention_mask, width, dim=1), _left_pad(other.attention_mask, width, dim=1)]
        )
        self.next_positions = torch.cat([self.next_positions, other.next_positions])
        self.adapters = self.adapters + other.adapters


def _left_pad(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    """``tensor`` with zeros prepended along ``dim`` up to ``width`` positions."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


@contextmanager
def adapter_routing(model: PreTrainedModel, adapters: Sequence[str | None]) -> Iterator[dict[str, object]]:
    """Route each row to its adapter for one forward; yield the forward's extra kwargs.

    Rows that ask for none run the model as loaded: its ``default`` adapter if it has one,
    else the base weights. The per-row LoRA gate is used where it applies, else peft's
    ``adapter_names``.
    """
    loaded_adapters = getattr(model, "peft_config", None)
    if loaded_adapters is None:
        if any(adapter is not None for adapter in adapters):
            raise ValueError(f"rows ask for adapters {list(adapters)} but the model has no peft adapters")
        yield {}
        return
    loaded = LOADED_ADAPTER if LOADED_ADAPTER in loaded_adapters else ADAPTERS_OFF
    row_adapters = [adapter or loaded for adapter in adapters]
    gate = lora_gate(model, row_adapters)
    if gate is None:
        yield {"adapter_names": row_adapters}
        return
    with gate.rows(row_adapters):
        yield {}


class Prefill:
    """Some rows' prompts on one model, prefilled ``PREFILL_CHUNK`` positions per forward; ends as a :class:`Lane`."""

    def __init__(
        self,
        model: PreTrainedModel,
        prompts: list[Sequence[int]],
        adapters: list[str | None],
        pad_id: int,
        keep_all_logits: bool,
    ) -> None:
        device = model.device
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[row, width - len(ids) :] = 1
        self.model = model
        self.adapters = adapters
        self.input_ids, self.mask = input_ids.to(device), mask.to(device)
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.keep_all_logits = keep_all_logits
        self.cache: object = None
        self.start = 0
        self.last = torch.empty(0)
        self.logit_sum: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return self.start >= self.input_ids.shape[1]

    def advance(self) -> None:
        """Run the next chunk of the prompts, one forward under the model's lock."""
        start, end = self.start, min(self.start + PREFILL_CHUNK, self.input_ids.shape[1])
        with model_lock(self.model), torch.inference_mode(), adapter_routing(self.model, self.adapters) as kwargs:
            output = self.model(
                input_ids=self.input_ids[:, start:end],
                attention_mask=self.mask[:, :end],
                position_ids=self.positions[:, start:end],
                cache=self.cache,
                use_cache=True,
                logits_to_keep=0 if self.keep_all_logits else 1,
                **kwargs,
            )
            self.cache = output.cache
            self.last = output.logits[:, -1].float()
            if self.keep_all_logits:
                weights = self.mask[:, start:end].unsqueeze(-1).float()
                chunk_sum = (output.logits.float() * weights).sum(1)
                self.logit_sum = chunk_sum if self.logit_sum is None else self.logit_sum + chunk_sum
        self.start = end

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` before the prefill ends (the others' requests were cancelled)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.input_ids, self.mask, self.positions = self.input_ids[index], self.mask[index], self.positions[index]
        self.adapters = [self.adapters[row] for row in rows]
        if self.cache is not None:
            self.cache.batch_select_indices(index)
            self.last = self.last[index]
            if self.logit_sum is not None:
                self.logit_sum = self.logit_sum[index]

    def finish(self) -> tuple[Lane, torch.Tensor, torch.Tensor | None]:
        """The lane holding the prefilled rows, their last-position logits ``[N, V]`` and prompt-mean logits."""
        lane = Lane(self.model, self.adapters, self.cache, self.mask, self.mask.sum(-1))
        mean = None if self.logit_sum is None else self.logit_sum / self.mask.sum(-1, keepdim=True).float()
        return lane, self.last, mean


def _kept_rows(groups: list[Group], name: str, survivors: Mapping[Group, list[int]]) -> list[int]:
    """Indices of the rows on model ``name`` that stay when each group keeps its surviving slots (all if unnamed)."""
    rows, offset = [], 0
    for group in groups:
        width = len(group.positions.get(name, ()))
        slots = survivors.get(group, range(len(group.items)))
        rows.extend(offset + slot * width + row for slot in slots for row in range(width))
        offset += len(group.items) * width
    return rows


class Batch:
    """Groups whose rows share lanes: each lane holds the groups' rows in group order, request by request."""

    def __init__(self, groups: list[Group], lanes: dict[str, Lane], device: torch.device) -> None:
        self.groups = groups
        self.lanes = lanes
        self.device = device

    @property
    def mergeable(self) -> bool:
        return all(lane.mergeable for lane in self.lanes.values())

    def group_logits(self, lane_logits: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """Split each lane's logits ``[rows, V]`` into each group's ``[requests, method rows, V]``."""
        offsets = dict.fromkeys(lane_logits, 0)
        split = []
        for group in self.groups:
            requests = len(group.items)
            if len(group.positions) == 1:
                ((name, positions),) = group.positions.items()
                size = requests * len(positions)
                part = lane_logits[name][offsets[name] : offsets[name] + size].to(self.device)
                split.append(part.view(requests, len(positions), -1))
                offsets[name] += size
                continue
            logits: torch.Tensor | None = None
            for name, positions in group.positions.items():
                size = requests * len(positions)
                part = lane_logits[name][offsets[name] : offsets[name] + size].to(self.device)
                offsets[name] += size
                if logits is None:
                    logits = part.new_empty((requests, group.row_count, part.shape[-1]))
                logits[:, positions] = part.view(requests, len(positions), -1)
            split.append(logits)
        return split

    def forward(self) -> list[torch.Tensor]:
        """One decode step: each group's pending tokens into its rows on every lane; each group's next logits."""
        lane_logits = {}
        for name, lane in self.lanes.items():
            tokens = [
                group.tokens.repeat_interleave(len(group.positions[name]))
                for group in self.groups
                if name in group.positions
            ]
            lane_logits[name] = lane.step(torch.cat(tokens))
        return self.group_logits(lane_logits)

    def keep(self, survivors: Mapping[Group, list[int]]) -> None:
        """Keep, per group, the requests at the given slots (groups not named keep all); drop empty groups and lanes."""
        for name, lane in list(self.lanes.items()):
            rows = _kept_rows(self.groups, name, survivors)
            if len(rows) == lane.rows:
                continue
            if rows:
                lane.keep(rows)
            else:
                del self.lanes[name]
        for group, slots in survivors.items():
            group.keep(list(slots))
        self.groups = [group for group in self.groups if group.items]

    def extend(self, other: Batch) -> None:
        """Add ``other``'s groups and rows after this batch's (their caches must be mergeable)."""
        for name, lane in other.lanes.items():
            if name in self.lanes:
                self.lanes[name].extend(lane)
            else:
                self.lanes[name] = lane
        self.groups = self.groups + other.groups


class Cohort:
    """Groups prefilled together, one chunk per model at a time, before they join a running batch."""

    def __init__(self, engine: Engine, groups: list[Group]) -> None:
        self.engine = engine
        self.groups = groups
        keep_all = any(group.method.needs_prompt_logits for group in groups)
        self.prefills: dict[str, Prefill] = {}
        for name in dict.fromkeys(name for group in groups for name in group.positions):
            prompts, adapters = [], []
            for group in groups:
                for item in group.items:
                    for position in group.positions.get(name, ()):
                        prompts.append(item.request.row_ids[position])
                        adapters.append(group.method.rows[position].adapter)
            self.prefills[name] = Prefill(engine.models[name], prompts, adapters, engine.pad_token_id, keep_all)

    @property
    def done(self) -> bool:
        return all(prefill.done for prefill in self.prefills.values())

    def advance(self) -> None:
        """One chunk forward on each model whose rows are not all prefilled."""
        for prefill in self.prefills.values():
            if not prefill.done:
                prefill.advance()

    def keep(self, survivors: Mapping[Group, list[int]]) -> None:
        """Keep, per group, the requests at the given slots before the prefill ends; drop empty groups."""
        for name, prefill in list(self.prefills.items()):
            rows = _kept_rows(self.groups, name, survivors)
            if not rows:
                del self.prefills[name]
            elif len(rows) < len(prefill.adapters):
                prefill.keep(rows)
        for group, slots in survivors.items():
            group.keep(list(slots))
        self.groups = [group for group in self.groups if group.items]

    def finish(self) -> tuple[Batch, list[torch.Tensor]]:
        """The prefilled rows as a batch, and each group's first logits; each group's method state is initialised."""
        lanes, last, mean = {}, {}, {}
        for name, prefill in self.prefills.items():
            lanes[name], last[name], mean[name] = prefill.finish()
        batch = Batch(self.groups, lanes, self.engine.device)
        logits = batch.group_logits(last)
        prompt_logits = batch.group_logits(mean) if all(value is not None for value in mean.values()) else None
        with torch.inference_mode():
            for slot, group in enumerate(self.groups):
                wanted = prompt_logits is not None and group.method.needs_prompt_logits
                group.state = group.method.initial_state(prompt_logits[slot] if wanted else None)
        return batch, logits


class Engine:
    """The models, tokenizer and stop ids of one ``AlignedLLM``, and the steps every driver runs."""

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

    @property
    def device(self) -> torch.device:
        """Where each group's logits are gathered, scored and chosen: the first model's device."""
        return next(iter(self.models.values())).device

    def group(
        self,
        requests: Sequence[tuple[int, EngineRequest]],
        method: DecodingMethod,
        sampling: Sampling,
        trace: bool,
        owner: object = None,
    ) -> Group:
        """A group of ``(index in its submission, request)`` pairs decoded with ``method``."""
        items = [
            Progress(
                index=index,
                request=request,
                assembler=TextAssembler(
                    self.tokenizer, request.stop_strings, request.constraint and request.constraint.protect
                ),
                generator=None if request.seed is None else torch.Generator().manual_seed(request.seed),
                trace=[] if trace else None,
                constraint=request.constraint and request.constraint.start(),
            )
            for index, request in requests
        ]
        return Group(method, sampling, items, owner)

    def run(
        self,
        requests: Sequence[EngineRequest],
        method: DecodingMethod,
        sampling: Sampling = Sampling(),
        *,
        trace: bool = False,
        cancel: threading.Event | None = None,
    ) -> Iterator[StepEvent]:
        """Decode one fixed batch to completion on this thread: prefill, then score → choose → record → drop.

        Yields a ``StepEvent`` per request and step that produced text, and a final one (with
        ``result``) when a request finishes. Each forward holds its model's lock, so
        concurrent runs interleave step by step, each with its own caches.
        """
        cancel = cancel or threading.Event()
        group = self.group(list(enumerate(requests)), method, sampling, trace)
        cohort = Cohort(self, [group])
        while not cohort.done:
            if cancel.is_set():
                yield from self.cancel(group)
                return
            cohort.advance()
        batch, logits = cohort.finish()
        while True:
            if cancel.is_set():
                yield from self.cancel(group)
                return
            events, finished = self.decide(group, logits[0])
            yield from events
            if finished:
                batch.keep({group: self._drop(group, finished)})
                if not batch.groups:
                    return
            logits = batch.forward()

    def decide(self, group: Group, logits: torch.Tensor) -> tuple[list[StepEvent], list[Progress]]:
        """One step of one group: score → choose → record. The step's events (final ones included) and who finished."""
        scored = self._score(logits, group)
        group.tokens = self._choose(scored, group)
        events, finished = self._record(group.tokens, logits, scored, group)
        group.step += 1
        return events + self.finish(group, finished), finished

    def cancel(self, group: Group) -> list[StepEvent]:
        """Finish every request of ``group`` as cancelled; their final events (the caller removes their rows)."""
        for item in group.items:
            item.finish_reason = "cancelled"
        return self.finish(group, group.items)

    @torch.inference_mode()
    def _score(self, logits: torch.Tensor, group: Group) -> StepScores:
        """The method's scores for this step (checked: the model and the method gave numbers), grammars applied."""
        step, method = group.step, group.method
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteLogitsError(
                f"the model returned NaN or infinite logits at step {step}; "
                "check the model weights and dtype (fp16 overflow is a common cause)"
            )
        scored = method.score(logits, group.state, step)
        group.state = scored.state
        scores = scored.scores
        if bool(torch.isnan(scores).any() | torch.isposinf(scores).any()) or not bool(
            torch.isfinite(scores).any(dim=-1).all()
        ):
            raise NonFiniteLogitsError(
                f"method {method!r} produced NaN, +inf or no finite score at step {step}: its parameters "
                "overflow fp32 scores; use a milder setting"
            )
        grammars = [item.constraint for item in group.items]
        masked, signal = constraints.constrain_scores(scores, scored.signal, logits, grammars)
        if group.sampling.penalizes:
            generated = [item.token_ids for item in group.items]
            masked = penalize_repeats(
                masked, generated, group.sampling.frequency_penalty, group.sampling.presence_penalty
            )
        return scored._replace(scores=masked, signal=signal)

    @torch.inference_mode()
    def _choose(self, scored: StepScores, group: Group) -> torch.Tensor:
        """One token per request: greedy (with the method's tie-break) or seeded sampling."""
        generators = [item.generator for item in group.items] if any(item.generator for item in group.items) else None
        tokens = choose_tokens(
            scored.scores,
            temperature=group.sampling.temperature,
            top_p=group.sampling.top_p,
            generators=generators,
            tie_break=scored.tie_break,
        )
        constraints.advance([item.constraint for item in group.items], tokens)
        return tokens

    def _record(
        self, tokens: torch.Tensor, logits: torch.Tensor, scored: StepScores, group: Group
    ) -> tuple[list[StepEvent], list[Progress]]:
        """Append each request's token; its new text as events; the requests that finished."""
        traces = None
        if group.items[0].trace is not None:
            traces = self._trace(logits, scored.scores, scored.signal, tokens, group.method.rows)
        events: list[StepEvent] = []
        finished: list[Progress] = []
        for slot, (item, token) in enumerate(zip(group.items, tokens.tolist(), strict=True)):
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
                    events.append(StepEvent(item.index, delta, len(item.token_ids)))
            if item.finish_reason is not None:
                finished.append(item)
        return events, finished

    @staticmethod
    def _drop(group: Group, finished: list[Progress]) -> list[int]:
        """The slots of ``group``'s requests that go on after ``finished`` leave."""
        gone = {id(item) for item in finished}
        return [slot for slot, item in enumerate(group.items) if id(item) not in gone]

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

    def finish(self, group: Group, items: Sequence[Progress]) -> list[StepEvent]:
        """The final events (last text delta and result) of ``items``."""
        events = []
        for item in items:
            delta = item.assembler.finish()
            events.append(
                StepEvent(
                    item.index,
                    delta,
                    len(item.token_ids),
                    GenerationResult(
                        text=item.assembler.text,
                        input_tokens=len(item.request.row_ids[0]),
                        output_tokens=len(item.token_ids),
                        finish_reason=item.finish_reason or "cancelled",
                        token_ids=tuple(item.token_ids),
                        method=group.method.name,
                        trace=item.trace,
                        call_log_odds=item.constraint.call_log_odds if item.constraint else None,
                    ),
                )
            )
        return events
