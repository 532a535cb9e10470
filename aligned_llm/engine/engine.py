"""The engine: the models and each step's decisions (score → process → choose → record → stop).

A request expands into the rows its method needs (e.g. OPAD: the conversation with and
without the principle). Rows that run on the same model share one *lane* of the KV store
(``engine.kv``): one batched forward per step, whatever method or request they belong to. The
requests of one submission admitted together form a *group*: its method turns its rows' fp32
logits into one score per token, the score processors (``engine.processors``) constrain them,
one token is chosen per request and fed to every row of it at the next step, and the stopping
criteria (``engine.stopping``) say who finished. Finished requests leave their lanes.

Two drivers use these parts: :meth:`Engine.run` decodes one fixed batch in lockstep on the
calling thread, and ``scheduler.Scheduler`` keeps one running batch that requests join and
leave at step boundaries, as its planner decides.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from aligned_llm.answer import constraint as constraints
from aligned_llm.engine.batch import Batch, Cohort
from aligned_llm.engine.kv import kv_store
from aligned_llm.engine.processors import ScoreProcessor, StepContext, TemperatureTopP, processor_list
from aligned_llm.engine.requests import EngineRequest, Group, Progress, Sampling, StepEvent
from aligned_llm.engine.stopping import StoppingCriterion, stopping_list
from aligned_llm.errors import NonFiniteLogitsError
from aligned_llm.methods.base import DecodingMethod, RowSpec, StepScores
from aligned_llm.result import GenerationResult, TokenTrace
from aligned_llm.sampling import pick_tokens
from aligned_llm.streaming import TextAssembler

_SAMPLING_WARP = TemperatureTopP()
GREEDY = Sampling()


class Engine:
    """The models, tokenizer and stop ids of one ``AlignedLLM``, and the steps every driver runs."""

    def __init__(
        self,
        models: Mapping[str, PreTrainedModel],
        tokenizer: PreTrainedTokenizerBase,
        stop_token_ids: Sequence[int],
        pad_token_id: int,
        *,
        kv_store_name: str = "padded",
        compile_step: bool = False,
        score_processors: Sequence[ScoreProcessor] = (),
        stopping_criteria: Sequence[StoppingCriterion] = (),
    ) -> None:
        self.models = dict(models)
        self.tokenizer = tokenizer
        self.pad_token_id = pad_token_id
        self.store = kv_store(kv_store_name, pad_token_id, compile_step)
        self.processors = processor_list(score_processors)
        self._extra_stopping = tuple(stopping_criteria)
        self.stop_token_ids = frozenset(stop_token_ids)

    @property
    def stop_token_ids(self) -> frozenset[int]:
        """The end-of-turn tokens: a request that chooses one stops (the token is not part of its text)."""
        return self._stop_token_ids

    @stop_token_ids.setter
    def stop_token_ids(self, ids: frozenset[int]) -> None:
        """Benchmarks set none, so that every request decodes exactly ``max_new_tokens``."""
        self._stop_token_ids = frozenset(ids)
        self.stopping = stopping_list(self._stop_token_ids, self._extra_stopping)

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
        sampling: Sampling = GREEDY,
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
        joining, logits = cohort.finish()
        batch = self.empty_batch()
        batch.extend(joining)
        while True:
            if cancel.is_set():
                yield from self.cancel(group)
                batch.keep({group: []})
                return
            events, finished = self.decide(group, logits[0])
            yield from events
            if finished:
                batch.keep({group: group.surviving(finished)})
                if not batch.groups:
                    return
            logits = batch.forward()

    def empty_batch(self) -> Batch:
        """A running batch with no rows yet, on this engine's KV store."""
        return Batch([], {}, self.device, self.store)

    def decide(self, group: Group, logits: torch.Tensor) -> tuple[list[StepEvent], list[Progress]]:
        """One step of one group: score → process → choose → record → stop; its events and who finished."""
        context = StepContext(logits, group.items, group.sampling, group.step)
        scored = self._score(logits, group, context)
        group.tokens = self._choose(scored, group, context)
        events, finished = self._record(group.tokens, logits, scored, group)
        group.step += 1
        return events + self.finish(group, finished), finished

    def cancel(self, group: Group) -> list[StepEvent]:
        """Finish every request of ``group`` as cancelled; their final events (the caller removes their rows)."""
        for item in group.items:
            item.finish_reason = "cancelled"
        return self.finish(group, group.items)

    @torch.inference_mode()
    def _score(self, logits: torch.Tensor, group: Group, context: StepContext) -> StepScores:
        """The method's scores for this step (checked: the model and the method gave numbers), then the processors."""
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
        for processor in self.processors:
            scored = processor(scored, context)
        return scored

    @torch.inference_mode()
    def _choose(self, scored: StepScores, group: Group, context: StepContext) -> torch.Tensor:
        """One token per request: greedy (with the method's tie-break) or a seeded draw after temperature and top-p."""
        sample = group.sampling.temperature != 0.0
        generators = [item.generator for item in group.items] if any(item.generator for item in group.items) else None
        if sample:
            scored = _SAMPLING_WARP(scored, context)
        tokens = pick_tokens(scored.scores, sample=sample, generators=generators, tie_break=scored.tie_break)
        constraints.advance([item.constraint for item in group.items], tokens)
        return tokens

    def _record(
        self, tokens: torch.Tensor, logits: torch.Tensor, scored: StepScores, group: Group
    ) -> tuple[list[StepEvent], list[Progress]]:
        """Append each request's token and its new text (end-of-turn tokens have none); who finished."""
        traces = None
        if group.items[0].trace is not None:
            traces = self._trace(logits, scored.scores, scored.signal, tokens, group.method.rows)
        events: list[StepEvent] = []
        finished: list[Progress] = []
        for slot, (item, token) in enumerate(zip(group.items, tokens.tolist(), strict=True)):
            item.token_ids.append(token)
            if traces is not None:
                item.trace.append(traces[slot])
            delta = "" if token in self.stop_token_ids else item.assembler.add(token)
            item.finish_reason = next(
                (reason for criterion in self.stopping if (reason := criterion(item)) is not None), None
            )
            if delta:
                events.append(StepEvent(item.index, delta, len(item.token_ids)))
            if item.finish_reason is not None:
                finished.append(item)
        return events, finished

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
