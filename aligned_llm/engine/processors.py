"""After the method: a list of processors over each step's scores, like transformers' ``LogitsProcessorList``.

The method turns its rows' logits into one score per token (``StepScores``); the processors
then constrain and reshape those scores in order: the answer's grammar, OpenAI's repetition
penalties, then any a third party adds with ``AlignedLLM(..., score_processors=[...])``. Those
are the method's final scores (what ``trace`` records); the choice then applies
:class:`TemperatureTopP` and picks the argmax, or draws from the softmax.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from aligned_llm.answer import constraint as constraints
from aligned_llm.engine.requests import Progress, Sampling
from aligned_llm.methods.base import StepScores
from aligned_llm.sampling import penalize_repeats, sampling_logprobs


@dataclass(frozen=True)
class StepContext:
    """What a processor may read about the step: the rows' fp32 logits ``[B, rows, V]`` and each request's progress."""

    logits: torch.Tensor
    items: Sequence[Progress]
    sampling: Sampling
    step: int


class ScoreProcessor(ABC):
    """One transformation of a step's scores ``[B, V]`` (fp32); returns new scores (never edits in place)."""

    @abstractmethod
    def __call__(self, scored: StepScores, context: StepContext) -> StepScores: ...


class GrammarMask(ScoreProcessor):
    """Each constrained request's scores restricted to what its grammar and rules allow (see ``answer.constraint``)."""

    def __call__(self, scored: StepScores, context: StepContext) -> StepScores:
        states = [item.constraint for item in context.items]
        if not any(states):
            return scored
        masked, signal = constraints.constrain_scores(scored.scores, scored.signal, context.logits, states)
        return scored._replace(scores=masked, signal=signal)


class RepetitionPenalty(ScoreProcessor):
    """OpenAI's ``frequency_penalty`` and ``presence_penalty`` over each request's generated tokens."""

    def __call__(self, scored: StepScores, context: StepContext) -> StepScores:
        sampling = context.sampling
        if not sampling.penalizes:
            return scored
        generated = [item.token_ids for item in context.items]
        penalized = penalize_repeats(scored.scores, generated, sampling.frequency_penalty, sampling.presence_penalty)
        return scored._replace(scores=penalized)


class TemperatureTopP(ScoreProcessor):
    """When sampling: log-probabilities of ``scores / temperature``, everything outside the top-p nucleus at -inf.

    Greedy decoding (temperature 0) leaves the scores as they are.
    """

    def __call__(self, scored: StepScores, context: StepContext) -> StepScores:
        sampling = context.sampling
        if sampling.temperature == 0.0:
            return scored
        return scored._replace(scores=sampling_logprobs(scored.scores, sampling.temperature, sampling.top_p))


def processor_list(extra: Sequence[ScoreProcessor] = ()) -> tuple[ScoreProcessor, ...]:
    """The engine's processors in order: grammar, penalties, then ``extra`` (temperature and top-p: the choice)."""
    return (GrammarMask(), RepetitionPenalty(), *extra)
