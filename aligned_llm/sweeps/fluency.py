"""Fluency of answers under the plain model: perplexity, mean log-probability, and repetition.

The plain model is the policy as loaded, decoding nothing but the user's conversation (no
principle, no profile, no method): the same row vanilla decoding reads. An answer's tokens
(every token the model produced, the end-of-turn one included) are scored by teacher forcing,
in left-padded batches (explicit positions, so padding changes nothing) that compute logits
for the answer positions only, under the model's lock like any decoding forward.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from aligned_llm.engine import adapter_routing, model_lock

if TYPE_CHECKING:
    from aligned_llm.llm import AlignedLLM

SCORING_BATCH = 8
"""Answers per teacher-forcing forward."""


def repetition(text: str, n: int = 3) -> float:
    """Share of word ``n``-grams that repeat an earlier one of the same text (0: none; towards 1: loops)."""
    tokens = re.findall(r"\w+", text.lower())
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


def answer_logprobs(
    llm: AlignedLLM, contexts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]]
) -> list[float]:
    """Mean log-probability per token of each answer after its context, under ``llm``'s model as loaded.

    ``contexts`` are token ids ready for the assistant's first token (a rendered prompt);
    ``answers`` the generated ids. An empty answer gives NaN.
    """
    if len(contexts) != len(answers):
        raise ValueError(f"{len(contexts)} contexts for {len(answers)} answers")
    means = [math.nan] * len(answers)
    scored = [i for i, answer in enumerate(answers) if len(answer) > 0]
    model = llm.model
    for start in range(0, len(scored), SCORING_BATCH):
        chunk = scored[start : start + SCORING_BATCH]
        sequences = [list(contexts[i]) + list(answers[i]) for i in chunk]
        width = max(len(sequence) for sequence in sequences)
        keep = max(len(answers[i]) for i in chunk) + 1  # the positions that predict answer tokens, and one more
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, sequence in enumerate(sequences):  # left-padded: every answer ends at the last position
            ids[row, width - len(sequence) :] = torch.tensor(sequence)
            mask[row, width - len(sequence) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(model.device), mask.to(model.device), positions.to(model.device)
        with model_lock(model), torch.inference_mode(), adapter_routing(model, [None] * len(chunk)) as kwargs:
            logits = _last_logits(model, keep, input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs)
        targets = ids[:, width - keep + 1 :]
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, targets[..., None])[..., 0]
        for row, i in enumerate(chunk):
            count = len(answers[i])
            means[i] = float(logprobs[row, keep - 1 - count :].mean())
    return means


def _last_logits(model: torch.nn.Module, keep: int, **inputs: object) -> torch.Tensor:
    """The logits of the last ``keep`` positions; only those are computed when the model takes ``logits_to_keep``."""
    try:
        return model(**inputs, use_cache=False, logits_to_keep=keep).logits
    except TypeError:  # a model class without logits_to_keep: compute them all
        return model(**inputs, use_cache=False).logits[:, -keep:]


def perplexity(mean_logprob: float) -> float:
    """``exp(−mean log-prob per token)``: 1 for an answer the model is sure of, larger for surprising text."""
    return math.exp(-mean_logprob) if math.isfinite(mean_logprob) else math.nan
