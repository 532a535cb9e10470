"""Plain decoding of one context: greedy or sampled from the model's own distribution.

With a principle this is *direct prompting*, the baseline every method is compared with.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from aligned_llm.methods.base import DecodingMethod, RowSpec, State, StepScores


class Vanilla(DecodingMethod):
    """Score = log_softmax of the single row's logits."""

    name: ClassVar[str] = "vanilla"
    rows: ClassVar[tuple[RowSpec, ...]] = (RowSpec("policy", guided=True),)

    def score(self, logits: torch.Tensor, state: State, step: int) -> StepScores:
        logprobs = torch.log_softmax(logits[:, 0], dim=-1)
        return StepScores(logprobs, torch.zeros_like(logprobs), state)
