"""Plain decoding of one context: greedy or sampled from the model's own distribution.

With a principle this is *direct prompting*, the baseline every method is compared with.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from aligned_llm.methods.base import DecodingMethod, RowSpec, State, StepScores
from aligned_llm.registry import register_method
from aligned_llm.setup import POLICY


@register_method
class Vanilla(DecodingMethod):
    """Score = log_softmax of the single row's logits.

    By default the row is the model as loaded; ``adapter=setup.ADAPTERS_OFF`` decodes with
    every adapter off (the SFT side of an adapter pair), ``model=setup.REFERENCE`` decodes the
    loaded reference model.
    """

    name: ClassVar[str] = "vanilla"
    signal_label: ClassVar[str] = "signal (vanilla decoding moves nothing: 0)"

    def __init__(self, model: str = POLICY, adapter: str | None = None) -> None:
        self.rows = (RowSpec(model, guided=True, model=model, adapter=adapter),)

    def score(self, logits: torch.Tensor, state: State, step: int) -> StepScores:
        logprobs = torch.log_softmax(logits[:, 0], dim=-1)
        return StepScores(logprobs, torch.zeros_like(logprobs), state)
